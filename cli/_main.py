"""Entry point of the ``headwater`` command, and the one place errors become exit codes.

Every failure a user can cause or meet — a usage mistake, a :class:`HeadwaterError`, an
``OSError`` such as a permission denied — ends as one line ``headwater: error: ...`` on
stderr: exit status 2 for usage, 1 otherwise. Never a traceback, except for a bug in
headwater itself when ``HEADWATER_DEBUG`` is set.
"""

from __future__ import annotations

import importlib
import os
import sys
import traceback
from collections.abc import Sequence

import click

from headwater.store import HeadwaterError

from ._datadir import data_option

#: Exit status for a stop by SIGINT, as a shell reports it.
SIGINT_STATUS = 130

#: Each command, as ``module:attribute`` in this package, in the order ``--help`` lists them.
#: A command's module is imported only when that command runs (or help lists them all), so
#: ``headwater consume`` does not pay for importing the processing runtime and the broker.
COMMANDS = {
    "topics": "_topics:topics",
    "produce": "_produce:produce",
    "consume": "_consume:consume",
    "groups": "_groups:groups",
    "transactions": "_transactions:transactions",
    "broker": "_broker:broker",
    "connect": "_connect:connect",
    "run": "_app_commands:run_app",
    "worker": "_worker:worker",
    "describe": "_app_commands:describe_app",
    "trace": "_app_commands:trace",
    "repair": "_repair:repair",
    "top": "_top:top",
    "ui": "_ui:ui",
}


class _LazyGroup(click.Group):
    """A group whose subcommands are imported from :data:`COMMANDS` when first asked for."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = COMMANDS.get(cmd_name)
        if target is None:
            return None
        module_name, attribute = target.split(":")
        command = getattr(importlib.import_module(f".{module_name}", __package__), attribute)
        assert isinstance(command, click.Command)
        return command


@click.group(cls=_LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@data_option
@click.version_option(package_name="headwater", prog_name="headwater")
def cli(data: object) -> None:
    """headwater: durable, partitioned event streams."""


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
