"""``headwater consume``: print a topic's records as JSON lines.

Each partition is read from its start position up to the high watermark seen when the
command opened the store, partition after partition, in reads of ``READ_BYTES``; every
read becomes one write to stdout.

With ``--follow`` the command then waits for more. The store allows one process per data
directory, and a ``Partition.wait_for`` only wakes for appends made in this process, so a
follower cannot hold the store open and wait there: other processes could not produce.
Instead it lets go of the directory once caught up, waits (on inotify, see ``_watch.py``)
until a writer has used it, then takes it again and reads on from where it stopped.

With ``--group G`` the command is a member of consumer group G (the only live one: one
process uses the data directory at a time), reads from the group's committed offsets
(``--from`` applies to partitions without one), and commits each chunk once it is written
to stdout; so another ``consume --group G`` resumes where this one stopped. It opens the
store for writing, to commit. A group follower checks for news with a read-only open
before it joins again, so that its own commits do not wake it in a loop.
"""

from __future__ import annotations

import contextlib
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import click
import orjson

from headwater.groups import Consumer, GroupConfig, GroupCoordinator, TopicPartition
from headwater.store import (
    Partition,
    Record,
    Store,
    parse_batch_header,
    records_from,
)

from ._datadir import (
    LOCK_FILE,
    LOCK_WAIT_S,
    check_exists,
    data_dir,
    data_option,
    open_waiting,
)
from ._output import OutputClosedError, StdoutWriter
from ._run import run_until_signal
from ._watch import LockWatcher

READ_BYTES = 1 << 20
_OFFSET = re.compile(r"[0-9]+")


@dataclass(frozen=True, slots=True)
class Start:
    """Where to start reading each partition: ``earliest``, ``latest``, an offset or a time."""

    kind: str
    value: int = 0

    def position(self, partition: Partition) -> int:
        """Return the first offset to read in ``partition``."""
        start, end = partition.log_start_offset, partition.high_watermark
        if self.kind == "earliest":
            return start
        if self.kind == "latest":
            return end
        if self.kind == "offset":
            return min(max(self.value, start), end)
        found = partition.offset_for_time(self.value)
        return end if found is None else found


def parse_start(ctx: click.Context, param: click.Parameter, value: str) -> Start:
    """Read ``--from``: ``earliest``, ``latest``, an offset, or an ISO-8601 time (UTC unless
    it says otherwise).

    :raises click.BadParameter: for anything else.
    """
    text = value.strip()
    if text in ("earliest", "latest"):
        return Start(text)
    if _OFFSET.fullmatch(text):
        return Start("offset", int(text))
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise click.BadParameter(
            f"expected earliest, latest, an offset or an ISO-8601 time, got {text!r}"
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return Start("time", int(when.timestamp() * 1000))


def format_value(value: bytes | None) -> bytes:
    """Return a stored value as one JSON text: as stored when it is JSON, else a JSON string."""
    if value is None:
        return b"null"
    try:
        orjson.loads(value)
    except orjson.JSONDecodeError:
        return orjson.dumps(value.decode("utf-8", "backslashreplace"))
    if b"\n" in value or b"\r" in value:
        return orjson.dumps(orjson.loads(value))  # keep it on one line
    return value


def format_records(partition: int, records: Sequence[Record], show_meta: bool) -> bytes:
    """Return ``records`` as JSON lines (objects with their metadata when ``show_meta``)."""
    if show_meta:
        return b"".join([_meta_line(partition, r) for r in records])
    # The hot path of the command: the common case (a one-line JSON value) stays in C calls.
    loads = orjson.loads
    lines: list[bytes] = []
    append = lines.append
    for r in records:
        value = r.value
        if value is None:
            append(b"null")
            continue
        try:
            loads(value)
        except orjson.JSONDecodeError:
            value = format_value(value)
        else:
            if b"\n" in value or b"\r" in value:
                value = format_value(value)
        append(value)
    append(b"")
    return b"\n".join(lines)


def _meta_line(partition: int, r: Record) -> bytes:
    key = b"null" if r.key is None else orjson.dumps(r.key.decode("utf-8", "backslashreplace"))
    return b'{"partition":%d,"offset":%d,"timestamp":%d,"key":%b,"value":%b}\n' % (
        partition,
        r.offset,
        r.timestamp,
        key,
        format_value(r.value),
    )


def _next_offset(data: bytes) -> int:
    """Return the offset after the last batch in ``data`` (whole batches)."""
    position, next_offset = 0, 0
    while position < len(data):
        header = parse_batch_header(data, position)
        next_offset = header.base_offset + header.last_offset_delta + 1
        position += header.batch_length + 12
    return next_offset


@dataclass(slots=True)
class Reader:
    """What is read and printed so far: the next offset per partition and how many remain."""

    topic: str
    partition: int | None
    show_meta: bool
    out: StdoutWriter
    remaining: int | None  # None: no --max
    positions: dict[int, int] | None = None

    @property
    def done(self) -> bool:
        """Whether --max records have been printed."""
        return self.remaining == 0

    def partitions(self, store: Store) -> list[Partition]:
        """Return the partitions to read (raises TopicNotFoundError if the topic has gone)."""
        if self.partition is not None:
            return [store.partition(self.topic, self.partition)]
        return store.partitions(self.topic)

    async def drain(self, store: Store, start: Start) -> None:
        """Print every record from the positions up to the current high watermarks."""
        partitions = self.partitions(store)
        if self.positions is None:
            self.positions = {p.index: start.position(p) for p in partitions}
        for partition in partitions:
            self.positions[partition.index] = await self._drain_one(
                partition, self.positions.get(partition.index, 0)
            )
            if self.done:
                break
        self.out.flush()

    async def _drain_one(self, partition: Partition, position: int) -> int:
        # Retention may have removed what we had not read yet: go on from what is left.
        position = max(position, partition.log_start_offset)
        end = partition.high_watermark
        while position < end and not self.done:
            data = await partition.read(position, READ_BYTES)
            if not data:
                break
            records = [r for r in records_from(data, position) if r.offset < end]
            if self.remaining is not None:
                records = records[: self.remaining]
                self.remaining -= len(records)
            self.out.write(format_records(partition.index, records, self.show_meta))
            position = records[-1].offset + 1 if self.done else max(_next_offset(data), position)
        return position


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
    help="Keep waiting for new records until interrupted. Records that another headwater "
    "process writes show once it has finished with the data directory.",
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
    "--show-meta",
    is_flag=True,
    help='Print {"partition","offset","timestamp","key","value"} objects.',
)
@data_option
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
    show_meta: bool,
    data: object,
) -> None:
    """Print the records of TOPIC as JSON lines.

    A value that is JSON is printed as stored; any other value as a JSON string. Records
    come partition by partition, each in offset order. Without --follow the command stops
    at the end of what was stored when it started.
    """
    if group is not None and partition is not None:
        raise click.UsageError("--partition cannot be used with --group (the group assigns them)")
    if group is not None and not group:
        raise click.BadParameter("the group name is empty", param_hint="--group")
    directory = data_dir(ctx)
    check_exists(directory)
    reader = Reader(topic, partition, show_meta, StdoutWriter(), max_records)

    async def body() -> None:
        # When the reader of our output goes away (`| head`), that is the end.
        with contextlib.suppress(OutputClosedError):
            await _consume(directory, reader, start, follow, group)

    signum = run_until_signal(body)
    if signum is not None and not follow:
        ctx.exit(128 + signum)


async def _consume(
    directory: Path, reader: Reader, start: Start, follow: bool, group: str | None
) -> None:
    writer = group is not None  # a group member commits
    # The watcher exists before the first read, so no writer that comes after is missed.
    with LockWatcher(directory, LOCK_FILE) as watcher:
        # Every command gives up on a directory that stays taken, a follower too: one that
        # started while another process held the directory would print nothing until
        # that process ended, maybe never. Once following, it waits as long as it takes.
        async with open_waiting(directory, watcher, writer=writer, timeout_s=LOCK_WAIT_S) as store:
            await _drain(store, reader, start, group)
        while follow and not reader.done:
            if not await watcher.wait():
                continue  # a reader let go: nothing new
            if group is not None:
                # Our own commits count as writes: look before joining again.
                async with open_waiting(
                    directory, watcher, writer=False, timeout_s=math.inf, notice=False
                ) as store:
                    news = await group_has_news(store, reader.topic, group, start)
                if not news:
                    continue
            # A writer is done; take the directory (waiting while others hold it) and read on.
            async with open_waiting(
                directory, watcher, writer=writer, timeout_s=math.inf, notice=False
            ) as store:
                await _drain(store, reader, start, group)


async def _drain(store: Store, reader: Reader, start: Start, group: str | None) -> None:
    if group is None:
        await reader.drain(store, start)
    else:
        await drain_group(store, reader, start, group)


async def drain_group(store: Store, reader: Reader, start: Start, group: str) -> None:
    """Print, as a member of ``group``, what the group has not committed; commit as printed.

    Each chunk is written and flushed to stdout before its offsets are committed; when
    ``--max`` cuts a batch, the position goes back to the first record not printed.
    """
    # The only member: no initial rebalance delay is needed to wait for others.
    solo = GroupConfig(initial_rebalance_delay_ms=0)
    async with GroupCoordinator(store, config=solo) as coordinator:
        members: list[Consumer] = []

        def start_uncommitted(partitions: list[TopicPartition]) -> None:
            committed = coordinator.committed(group)
            for tp in partitions:
                if tp not in committed:
                    members[0].seek(tp, start.position(store.partition(tp.topic, tp.partition)))

        consumer = coordinator.consumer(
            group,
            [reader.topic],
            on_assigned=start_uncommitted,
            client_id="headwater-consume",
            max_bytes=READ_BYTES,
        )
        members.append(consumer)
        async with consumer:
            batches = aiter(consumer)
            # This is the group's only live member: nothing arrives while it runs.
            while not reader.done and any(consumer.lag().values()):
                batch = await anext(batches)
                records = batch.records
                if reader.remaining is not None:
                    records = records[: reader.remaining]
                    reader.remaining -= len(records)
                    if len(records) < len(batch.records):
                        consumer.seek(batch.topic_partition, records[-1].offset + 1)
                reader.out.write(format_records(batch.partition, records, reader.show_meta))
                reader.out.flush()
                await consumer.commit()
            await consumer.commit()  # where nothing was printed: the start from --from


async def group_has_news(store: Store, topic: str, group: str, start: Start) -> bool:
    """Whether ``topic`` has records past ``group``'s committed offsets (or ``start``)."""
    async with GroupCoordinator(store) as coordinator:
        committed = coordinator.committed(group)
    for partition in store.partitions(topic):
        offset = committed.get(TopicPartition(topic, partition.index))
        position = start.position(partition) if offset is None else offset.offset
        if position < partition.high_watermark:
            return True
    return False
