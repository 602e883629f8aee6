"""Entry point of the ``headwater`` command, and the one place errors become exit codes.

Every failure a user can cause or meet — a usage mistake, a :class:`HeadwaterError`, an
``OSError`` such as a permission denied — ends as one line ``headwater: error: ...`` on
stderr: exit status 2 for usage, 1 otherwise. Never a traceback, except for a bug in
headwater itself when ``HEADWATER_DEBUG`` is set.
"""

from __future__ import annotations

import os
import sys
import traceback
from collections.abc import Sequence

import click

from headwater.store import HeadwaterError

from ._app_commands import describe_app, run_app, trace
from ._broker import broker
from ._connect import connect
from ._consume import consume
from ._datadir import data_option
from ._groups import groups
from ._produce import produce
from ._repair import repair
from ._topics import topics

#: Exit status for a stop by SIGINT, as a shell reports it.
SIGINT_STATUS = 130


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@data_option
@click.version_option(package_name="headwater", prog_name="headwater")
def cli(data: object) -> None:
    """headwater: durable, partitioned event streams."""


cli.add_command(topics)
cli.add_command(produce)
cli.add_command(consume)
cli.add_command(groups)
cli.add_command(broker)
cli.add_command(connect)
cli.add_command(run_app)
cli.add_command(describe_app)
cli.add_command(trace)
cli.add_command(repair)


def main() -> None:
    """Run the ``headwater`` command line and exit with its status."""
    sys.exit(run(sys.argv[1:]))


def run(args: Sequence[str]) -> int:
    """Run the command line with ``args``; return the exit status (errors are reported)."""
    try:
        result = cli.main(list(args), prog_name="headwater", standalone_mode=False)
    except BaseException as exc:
        return _report(exc)
    return result if isinstance(result, int) else 0


def _report(exc: BaseException) -> int:
    exc = _leaf(exc)
    if isinstance(exc, click.exceptions.NoArgsIsHelpError):
        exc.show()
        return exc.exit_code
    if isinstance(exc, click.UsageError):
        hint = f" (see '{exc.ctx.command_path} --help')" if exc.ctx is not None else ""
        _error(exc.format_message() + hint)
        return exc.exit_code
    if isinstance(exc, click.ClickException):
        _error(exc.format_message())
        return exc.exit_code
    if isinstance(exc, click.exceptions.Exit):
        return exc.exit_code
    if isinstance(exc, click.Abort | KeyboardInterrupt):
        return SIGINT_STATUS
    if isinstance(exc, HeadwaterError):
        _error(str(exc))
        return 1
    if isinstance(exc, OSError):
        _error(_os_error_message(exc))
        return 1
    if isinstance(exc, SystemExit):
        return exc.code if isinstance(exc.code, int) else 1
    if os.environ.get("HEADWATER_DEBUG"):
        traceback.print_exception(exc)
    _error(
        f"internal error: {type(exc).__name__}: {exc} "
        "(this is a bug in headwater; set HEADWATER_DEBUG=1 to see where)"
    )
    return 1


def _leaf(exc: BaseException) -> BaseException:
    """Pick the exception to report out of (nested) exception groups from task groups."""
    while isinstance(exc, BaseExceptionGroup):
        exceptions = exc.exceptions
        exc = next(
            (
                e
                for e in exceptions
                if isinstance(e, HeadwaterError | OSError | click.ClickException)
            ),
            exceptions[0],
        )
    return exc


def _os_error_message(exc: OSError) -> str:
    if exc.strerror and exc.filename is not None:
        return f"{exc.strerror}: {os.fsdecode(exc.filename)}"
    return exc.strerror or str(exc)


def _error(message: str) -> None:
    line = " ".join(message.split("\n")).strip()
    try:
        sys.stderr.write(f"headwater: error: {line}\n")
        sys.stderr.flush()
    except OSError:
        pass  # stderr is gone too: the exit status is all that is left
