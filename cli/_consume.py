"""``headwater consume``: print a topic's records (JSON lines, all metadata, or a template).

The log is a data directory or a broker (``--bootstrap``), through
:class:`~headwater.cli._access.LogAccess`, which delivers the records partition by
partition, each in offset order, up to where each partition ended when the command
started; with ``--follow`` it then waits for more. Each delivery becomes one write to
stdout (formatted by ``_formats.py``), flushed before the next, so that a group member
(``--group``) commits only what was printed.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

import click

from headwater.store import IsolationLevel, Record

from ._datadir import data_option
from ._formats import Formatter, formatter
from ._output import OutputClosedError, StdoutWriter, info
from ._run import run_until_signal
from ._start import Start, parse_start
from ._target import log_access, log_option


class Printer:
    """The sink that prints deliveries, and stops after ``--max`` records.

    :param topic: the topic read, for reports.
    :param render: formats one delivery.
    :param out: where to write.
    :param remaining: how many records may still be printed (``None``: no limit).
    """

    def __init__(
        self, topic: str, render: Formatter, out: StdoutWriter, remaining: int | None
    ) -> None:
        self._topic = topic
        self._render = render
        self._out = out
        self.remaining = remaining
        #: How many damaged ranges were stepped over (each reported on stderr).
        self.damaged_ranges = 0

    def done(self) -> bool:
        """Whether ``--max`` records have been printed."""
        return self.remaining == 0

    def write(self, partition: int, records: Sequence[Record]) -> int:
        """Print ``records`` (as many as ``--max`` allows); return how many."""
        if self.remaining is not None:
            records = records[: self.remaining]
            self.remaining -= len(records)
        if records:
            self._out.write(self._render(partition, records))
            self._out.flush()
        return len(records)

    def damaged(self, partition: int, report: str) -> None:
        """Report a damaged range stepped over on stderr, after what came before it."""
        self.damaged_ranges += 1
        self._out.flush()
        info(f"headwater: {self._topic}/{partition}: skipping damaged records: {report}")


@click.command()
@click.argument("topic")
@click.option(
    "--from",
    "start",
    metavar="earliest|latest|OFFSET|TIME",
    default="earliest",
    callback=parse_start,
    show_default=True,
    help="Where to start in each partition: earliest, latest, an offset, or an ISO-8601 time "
    "(UTC unless it has a timezone).",
)
@click.option("--partition", "-p", type=click.IntRange(min=0), help="Read only this partition.")
@click.option(
    "--follow",
    "-f",
    is_flag=True,
    help="Keep waiting for new records until interrupted. In a data directory that an app or "
    "a broker serves, records show as they are written; records that another headwater "
    "command writes show once it has finished with the directory.",
)
@click.option("--max", "max_records", type=click.IntRange(min=0), help="Stop after N records.")
@click.option(
    "--group",
    "-g",
    metavar="GROUP",
    help="Read as a member of consumer group GROUP: start from its committed offsets (--from "
    "only where it has none) and commit what was printed, so the next run resumes there.",
)
@click.option(
    "--format",
    "spec",
    metavar="value|json|TEMPLATE",
    default="value",
    show_default=True,
    help="value: each value as a JSON line; json: a JSON object per record with all its "
    "metadata (topic, partition, offset, timestamp, key, value, headers); or a template as "
    "kcat -f: %t topic, %p partition, %o offset, %k key, %s value, %h headers, %T timestamp, "
    "%K/%S key/value length, \\n \\t escapes.",
)
@click.option("--show-meta", is_flag=True, help="The same as --format json.")
@click.option(
    "--isolation",
    type=click.Choice(["read_uncommitted", "read_committed"]),
    default="read_uncommitted",
    show_default=True,
    help="read_committed: only records of committed transactions (and plain records), up to "
    "the last stable offset; read_uncommitted: every record up to the high watermark. "
    "Transaction markers are never printed.",
)
@data_option
@log_option
@click.pass_context
def consume(
    ctx: click.Context,
    *,
    topic: str,
    start: Start,
    partition: int | None,
    follow: bool,
    max_records: int | None,
    group: str | None,
    spec: str,
    show_meta: bool,
    isolation: str,
    data: object,
    bootstrap: str | None,
) -> None:
    """Print the records of TOPIC, by default each value as a JSON line.

    A value that is JSON is printed as stored; any other value as a JSON string. Records
    come partition by partition, each in offset order. Without --follow the command stops
    at the end of what was stored when it started.
    """
    if group is not None and partition is not None:
        raise click.UsageError("--partition cannot be used with --group (the group assigns them)")
    if group is not None and not group:
        raise click.BadParameter("the group name is empty", param_hint="--group")
    if show_meta and spec != "value":
        raise click.UsageError("give --show-meta or --format, not both")
    level = IsolationLevel[isolation.upper()]
    render = formatter(topic, "json" if show_meta else spec)
    access = log_access(ctx)
    printer = Printer(topic, render, StdoutWriter(), max_records)

    async def body() -> None:
        # When the reader of our output goes away (`| head`), that is the end.
        with contextlib.suppress(OutputClosedError):
            if printer.done():
                return
            if group is None:
                await access.read(
                    topic,
                    partition=partition,
                    start=start,
                    follow=follow,
                    sink=printer,
                    isolation=level,
                )
            else:
                await access.read_group(
                    topic, group, start=start, follow=follow, sink=printer, isolation=level
                )

    signum = run_until_signal(body)
    if printer.damaged_ranges:
        raise click.ClickException(
            f"{printer.damaged_ranges} damaged range(s) of {topic} were skipped (see above); "
            f"`headwater repair {topic}` shows how to move them aside"
        )
    if signum is not None and not follow:
        ctx.exit(128 + signum)
