"""``headwater produce``: store lines from stdin as records of a topic.

Stdin is read in large chunks (whatever has arrived, up to ``READ_BYTES``) by a worker
thread; :class:`~headwater.cli._lines.LineParser` turns complete lines into batches of
records. One task parses while another appends the previous batch and waits for it to be
acknowledged, so parsing overlaps the fsync (or the broker's answer). The log is a data
directory or a broker (``--bootstrap``), through :class:`~headwater.cli._access.LogAccess`:
keyed records go to their murmur2 partition, unkeyed ones stick to one partition per
batch, and ``--partition`` sends them all to one.

Only batches that were appended in full are acknowledged, in input order. On a bad line
the records before it are stored and acknowledged, the bad line and everything after it
are not, and the command stops with one line naming it; with ``--skip-invalid`` each bad
line is reported (with its number) and left out, the rest is stored, and the command
exits non-zero at the end.

Reading a file (stdin redirected from one) with the records' acknowledgements going
elsewhere than the terminal, a progress bar on the terminal shows the bytes read, the
records stored, the rate and the time left (``--quiet``: none).
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import anyio
import anyio.to_thread
import click
from anyio.abc import ObjectReceiveStream, ObjectSendStream

from headwater.store import HeadwaterError

from ._access import TopicWriter
from ._datadir import data_option
from ._lines import Chunk, LineFormat, LineParser
from ._output import OutputClosedError, StdoutWriter, info
from ._progress import InputProgress, input_progress
from ._run import run_until_signal
from ._target import log_access, log_option

READ_BYTES = 1 << 20


@dataclass(slots=True)
class Outcome:
    """What a run stored, and why it stopped early (if it did)."""

    placed: Counter[int] = field(default_factory=Counter)
    skipped: int = 0
    failure: tuple[str, str] | None = None  # (message, 'input' or 'log')


def parse_headers(
    ctx: click.Context, param: click.Parameter, values: Sequence[str]
) -> tuple[tuple[str, bytes], ...]:
    """Read ``-H NAME=VALUE`` options (repeatable; a name may repeat, as in Kafka).

    :raises click.BadParameter: if one has no ``=`` or an empty name.
    """
    headers = []
    for text in values:
        name, equals, value = text.partition("=")
        if not equals or not name:
            raise click.BadParameter(f"expected NAME=VALUE, got {text!r}")
        headers.append((name, value.encode()))
    return tuple(headers)


@click.command()
@click.argument("topic")
@click.option(
    "--key",
    "key_field",
    metavar="FIELD",
    help="Take each record's key from this field, as JSON (the string ada is the key "
    '"ada"), as the processing DSL\'s key_by writes keys.',
)
@click.option(
    "--key-delimiter",
    "-K",
    metavar="DELIM",
    help="Each line is KEY DELIM VALUE (as kcat -K): the key is the text before the first DELIM.",
)
@click.option(
    "--partition", "-p", type=click.IntRange(min=0), help="Write every record to this partition."
)
@click.option(
    "--header",
    "-H",
    "headers",
    multiple=True,
    metavar="NAME=VALUE",
    callback=parse_headers,
    help="A header for every record (repeatable).",
)
@click.option(
    "--format",
    "line_format",
    type=click.Choice(["json", "raw"]),
    default="json",
    show_default=True,
    help="json: each line (each value, with -K) is JSON, stored compactly; raw: stored as it is.",
)
@click.option(
    "--skip-invalid",
    is_flag=True,
    help="Report each bad line on stderr and go on (exit non-zero at the end if any were "
    "skipped), instead of stopping at the first.",
)
@click.option("--quiet", "-q", is_flag=True, help="Print only a summary, on stderr.")
@data_option
@log_option
@click.pass_context
def produce(
    ctx: click.Context,
    *,
    topic: str,
    key_field: str | None,
    key_delimiter: str | None,
    partition: int | None,
    headers: tuple[tuple[str, bytes], ...],
    line_format: str,
    skip_invalid: bool,
    quiet: bool,
    data: object,
    bootstrap: str | None,
) -> None:
    """Store lines from stdin (JSON unless --format raw) as records of TOPIC.

    Prints PARTITION:OFFSET for each record once it is acknowledged (durable under the
    topic's durability policy). A bad line stops the command (the lines before it stay
    stored), unless --skip-invalid.
    """
    try:
        fmt = LineFormat(
            raw=line_format == "raw",
            key_field=key_field,
            key_delimiter=None if key_delimiter is None else key_delimiter.encode(),
            headers=headers,
        )
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    access = log_access(ctx)
    if sys.stdin.isatty():
        info(f"reading {line_format} lines from the terminal; end with Ctrl-D")
    outcome = Outcome()
    progress = input_progress(sys.stdin.fileno(), f"{topic!r}", quiet=quiet)

    async def body() -> None:
        async with access.writer(topic) as writer:
            if partition is not None and partition >= writer.partitions:
                raise click.ClickException(
                    f"topic {topic!r} has no partition {partition} (it has {writer.partitions})"
                )
            parser = LineParser(fmt, writer.max_message_bytes, skip_invalid=skip_invalid)
            send, receive = anyio.create_memory_object_stream[Chunk](1)
            async with anyio.create_task_group() as tg:
                tg.start_soon(_read_stdin, parser, send, progress)
                out = None if quiet else StdoutWriter()
                await _append(
                    writer, partition, receive, out=out, outcome=outcome, progress=progress
                )
                tg.cancel_scope.cancel()  # after a bad line, stop reading

    with progress or contextlib.nullcontext():
        signum = run_until_signal(body)
    stored = outcome.placed.total()
    if signum is not None:
        info(f"headwater: interrupted; stored {stored} records in {topic!r}")
        ctx.exit(128 + signum)
    if outcome.failure is not None:
        message, cause = outcome.failure
        if cause == "input":
            raise click.ClickException(
                f"{message}; the {stored} records before it are stored, nothing after it"
            )
        raise click.ClickException(f"{message}; {stored} records were acknowledged before it")
    if quiet:
        spread = ", ".join(f"{p}: {n}" for p, n in sorted(outcome.placed.items()))
        info(f"stored {stored} records in {topic!r}" + (f" (partition {spread})" if spread else ""))
    if outcome.skipped:
        raise click.ClickException(
            f"skipped {outcome.skipped} invalid line(s) (reported above); stored {stored} records"
        )


async def _read_stdin(
    parser: LineParser, send: ObjectSendStream[Chunk], progress: InputProgress | None
) -> None:
    fd = sys.stdin.fileno()
    async with send:
        while not parser.failed:
            # Abandoned on cancel: a read from a terminal may never return.
            data = await anyio.to_thread.run_sync(os.read, fd, READ_BYTES, abandon_on_cancel=True)
            if progress is not None:
                progress.read(len(data))
            for chunk in parser.feed(data) if data else parser.end():
                await send.send(chunk)
            if not data:
                return


async def _append(
    writer: TopicWriter,
    partition: int | None,
    receive: ObjectReceiveStream[Chunk],
    *,
    out: StdoutWriter | None,
    outcome: Outcome,
    progress: InputProgress | None = None,
) -> None:
    async for chunk in receive:
        for message in chunk.skipped:
            info(f"headwater: skipped {message}")
        outcome.skipped += len(chunk.skipped)
        if chunk.records:
            # An append under way finishes even when a signal stops the command, so
            # that what it stored is acknowledged.
            try:
                with anyio.CancelScope(shield=True):
                    result = await writer.append(chunk.records, partition)
            except HeadwaterError as exc:
                outcome.failure = (str(exc), "log")
                return
            outcome.placed.update(p for p, _ in result)
            if progress is not None:
                progress.stored(len(result))
            if out is not None:
                out = _acknowledge(out, result)
        if chunk.error is not None:
            outcome.failure = (chunk.error, "input")
            return


def _acknowledge(out: StdoutWriter, result: list[tuple[int, int]]) -> StdoutWriter | None:
    """Print PARTITION:OFFSET lines; if stdout has gone, keep storing but stop printing."""
    try:
        out.write("".join([f"{p}:{o}\n" for p, o in result]).encode())
        out.flush()
    except OutputClosedError:
        return None
    return out
