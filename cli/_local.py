"""The log commands over a data directory: the store and the group coordinator, in process.

Theory of operation
-------------------
One process owns a data directory at a time (see ``_datadir.py``), so every call opens
the store, does its work and closes it: a writer for ``produce`` (for its whole run) and
for a group member (to commit), a reader otherwise.

A reader goes partition after partition from its start positions up to the high
watermarks seen when it opened the store, in reads of ``READ_BYTES``, each read one
delivery to the sink. To follow, it cannot hold the store and wait there: a
``Partition.wait_for`` only wakes for appends made in this process, and other processes
could not produce meanwhile. So once caught up it lets go of the directory, waits (on
inotify, see ``_watch.py``) until a writer has used it, then takes it again and reads on
from where it stopped.

Damage does not stop a reader: a read that meets a damaged range gets every valid record
before it, the range goes to the sink once (which offsets, where reading resumes), and
reading goes on after it, in that partition and the next ones. A group member stops at
damage instead: stepping over it would commit past records it never delivered.

A group member is the group's only live member (one process uses the directory), so it
reads what the group has not committed and commits each delivery once the sink took it.
A group follower checks for news with a read-only open before it joins again, so that its
own commits do not wake it in a loop.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path

from headwater.groups import Consumer, GroupConfig, GroupCoordinator, TopicPartition
from headwater.store import (
    CorruptRecordError,
    NewRecord,
    OffsetOutOfRangeError,
    Partition,
    Record,
    Store,
    parse_batch_header,
    records_from,
)

from ._access import GroupAdmin, RecordLookup, RecordSink, TopicWriter
from ._datadir import LOCK_FILE, LOCK_WAIT_S, check_exists, locked_store, open_waiting
from ._local_groups import LocalGroups
from ._start import Start
from ._watch import LockWatcher

READ_BYTES = 1 << 20

_Drain = Callable[[Store], Awaitable[None]]
_News = Callable[[Store], Awaitable[bool]]


def start_position(start: Start, partition: Partition) -> int:
    """Return where ``start`` begins in ``partition``."""
    at_time = partition.offset_for_time(start.value) if start.kind == "time" else None
    return start.position(partition.log_start_offset, partition.high_watermark, at_time)


class LocalAccess:
    """A data directory, reached by opening its store in this process.

    :param directory: the data directory.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    @property
    def description(self) -> str:
        """``data directory DIR``."""
        return f"data directory {self.directory}"

    @contextlib.asynccontextmanager
    async def writer(self, topic: str) -> AsyncIterator[TopicWriter]:
        """Open the store for writing ``topic`` (see :meth:`LogAccess.writer`)."""
        async with locked_store(self.directory, writer=True) as store:
            writer = _StoreWriter(store, topic)
            await store.append(topic, [])  # refuses an internal topic before any input
            yield writer

    async def read(
        self,
        topic: str,
        *,
        partition: int | None,
        start: Start,
        follow: bool,
        sink: RecordSink,
    ) -> None:
        """Deliver ``topic``'s records from ``start`` (see :meth:`LogAccess.read`)."""
        reader = _Reader(topic, partition, sink)

        async def drain(store: Store) -> None:
            await reader.drain(store, start)

        await self._follow(drain, follow, sink, news=None)

    async def read_group(
        self, topic: str, group: str, *, start: Start, follow: bool, sink: RecordSink
    ) -> None:
        """Read as the only live member of ``group`` (see :meth:`LogAccess.read_group`)."""

        async def drain(store: Store) -> None:
            await _drain_group(store, topic, group, start, sink)

        async def news(store: Store) -> bool:
            return await _group_has_news(store, topic, group, start)

        await self._follow(drain, follow, sink, news=news, writer=True)

    async def _follow(
        self,
        drain: _Drain,
        follow: bool,
        sink: RecordSink,
        *,
        news: _News | None,
        writer: bool = False,
    ) -> None:
        directory = self.directory
        check_exists(directory)
        # The watcher exists before the first read, so no writer that comes after is missed.
        with LockWatcher(directory, LOCK_FILE) as watcher:
            # Every command gives up on a directory that stays taken, a follower too: one
            # that started while another process held the directory would print nothing
            # until that process ended, maybe never. Once following, it waits as long as
            # it takes.
            async with open_waiting(directory, watcher, writer=writer, timeout_s=LOCK_WAIT_S) as s:
                await drain(s)
            while follow and not sink.done():
                if not await watcher.wait():
                    continue  # a reader let go: nothing new
                if news is not None:
                    # Our own commits count as writes: look before taking the directory.
                    async with open_waiting(
                        directory, watcher, writer=False, timeout_s=math.inf, notice=False
                    ) as s:
                        if not await news(s):
                            continue
                # A writer is done; take the directory (waiting while others hold it).
                async with open_waiting(
                    directory, watcher, writer=writer, timeout_s=math.inf, notice=False
                ) as s:
                    await drain(s)

    @contextlib.asynccontextmanager
    async def lookup(self) -> AsyncIterator[RecordLookup]:
        """Open the store read-only for single records."""
        async with locked_store(self.directory, writer=False) as store:
            yield _StoreLookup(store)

    @contextlib.asynccontextmanager
    async def groups(self, *, writer: bool) -> AsyncIterator[GroupAdmin]:
        """Open the store and the group coordinator over it."""
        async with (
            locked_store(self.directory, writer=writer) as store,
            GroupCoordinator(store) as coordinator,
        ):
            yield LocalGroups(store, coordinator)


class _StoreWriter:
    def __init__(self, store: Store, topic: str) -> None:
        self._store = store
        self._topic = topic
        self.partitions = len(store.partitions(topic))
        self.max_message_bytes = store.topic_config(topic).max_message_bytes

    async def append(
        self, records: Sequence[NewRecord], partition: int | None
    ) -> list[tuple[int, int]]:
        return await self._store.append(self._topic, records, partition=partition)


class _StoreLookup:
    def __init__(self, store: Store) -> None:
        self._store = store

    async def record(self, topic: str, partition: int, offset: int) -> Record | str:
        store = self._store
        if not store.has_topic(topic):
            return f"no topic {topic!r} (deleted?)"
        partitions = store.partitions(topic)
        if partition >= len(partitions):
            return f"topic {topic!r} has no partition {partition} (it has {len(partitions)})"
        log = partitions[partition]
        try:
            records = await log.read_records(offset, 1 << 16)
        except OffsetOutOfRangeError:
            return out_of_range(topic, partition, offset, log.log_start_offset, log.high_watermark)
        if not records or records[0].offset != offset:
            return not_found(topic, partition, offset)
        return records[0]


def out_of_range(topic: str, partition: int, offset: int, start: int, end: int) -> str:
    """Why there is no record at ``offset``: it is outside ``[start, end)``."""
    return (
        f"no record at {topic}/{partition}/{offset}: the partition holds offsets "
        f"{start} to {end - 1} (removed by retention?)"
    )


def not_found(topic: str, partition: int, offset: int) -> str:
    """Why there is no record at ``offset`` inside the log."""
    return f"no record at {topic}/{partition}/{offset} (removed by compaction, or never written)"


class _Reader:
    """What is delivered so far: the next offset of each partition."""

    def __init__(self, topic: str, partition: int | None, sink: RecordSink) -> None:
        self.topic = topic
        self.partition = partition
        self.sink = sink
        self.positions: dict[int, int] | None = None
        #: Damaged ranges stepped over, as (partition, file, position): each told once.
        self._reported: set[tuple[int, str, int]] = set()

    def _partitions(self, store: Store) -> list[Partition]:
        if self.partition is not None:
            return [store.partition(self.topic, self.partition)]
        return store.partitions(self.topic)

    async def drain(self, store: Store, start: Start) -> None:
        """Deliver every record from the positions up to the current high watermarks."""
        partitions = self._partitions(store)
        if self.positions is None:
            self.positions = {p.index: start_position(start, p) for p in partitions}
        for partition in partitions:
            self.positions[partition.index] = await self._drain_one(
                partition, self.positions.get(partition.index, 0)
            )
            if self.sink.done():
                break

    async def _drain_one(self, partition: Partition, position: int) -> int:
        # Retention may have removed what we had not read yet: go on from what is left.
        position = max(position, partition.log_start_offset)
        end = partition.high_watermark
        while position < end and not self.sink.done():
            try:
                data = await partition.read(position, READ_BYTES)
            except CorruptRecordError as exc:
                position = self._step_over(partition, exc, position)
                continue
            if not data:
                break
            records = [r for r in records_from(data, position) if r.offset < end]
            taken = self.sink.write(partition.index, records)
            if taken < len(records):
                return records[taken].offset
            position = max(_next_offset(data), position)
        return position

    def _step_over(self, partition: Partition, exc: CorruptRecordError, position: int) -> int:
        """Tell the sink of the damaged range ``exc`` names (once); return where to read on.

        :raises CorruptRecordError: if the error does not say where reading can resume.
        """
        damage = exc.damage
        if damage is None or damage.resume_offset is None or damage.resume_offset <= position:
            raise exc
        key = (partition.index, damage.path, damage.position)
        if key not in self._reported:
            self._reported.add(key)
            self.sink.damaged(partition.index, str(exc))
        return damage.resume_offset


def _next_offset(data: bytes) -> int:
    """Return the offset after the last batch in ``data`` (whole batches)."""
    position, next_offset = 0, 0
    while position < len(data):
        header = parse_batch_header(data, position)
        next_offset = header.base_offset + header.last_offset_delta + 1
        position += header.batch_length + 12
    return next_offset


async def _drain_group(
    store: Store, topic: str, group: str, start: Start, sink: RecordSink
) -> None:
    """Deliver, as a member of ``group``, what it has not committed; commit as delivered."""
    # The only member: no initial rebalance delay is needed to wait for others.
    solo = GroupConfig(initial_rebalance_delay_ms=0)
    async with GroupCoordinator(store, config=solo) as coordinator:
        members: list[Consumer] = []

        def start_uncommitted(partitions: list[TopicPartition]) -> None:
            committed = coordinator.committed(group)
            for tp in partitions:
                if tp not in committed:
                    position = start_position(start, store.partition(tp.topic, tp.partition))
                    members[0].seek(tp, position)

        consumer = coordinator.consumer(
            group,
            [topic],
            on_assigned=start_uncommitted,
            client_id="headwater-consume",
            max_bytes=READ_BYTES,
        )
        members.append(consumer)
        async with consumer:
            batches = aiter(consumer)
            # This is the group's only live member: nothing arrives while it runs.
            while not sink.done() and any(consumer.lag().values()):
                batch = await anext(batches)
                records = batch.records
                taken = sink.write(batch.partition, records)
                if taken < len(records):
                    consumer.seek(batch.topic_partition, records[taken].offset)
                await consumer.commit()
            await consumer.commit()  # where nothing was delivered: the start from --from


async def _group_has_news(store: Store, topic: str, group: str, start: Start) -> bool:
    """Whether ``topic`` has records past ``group``'s committed offsets (or ``start``)."""
    async with GroupCoordinator(store) as coordinator:
        committed = coordinator.committed(group)
    for partition in store.partitions(topic):
        offset = committed.get(TopicPartition(topic, partition.index))
        position = start_position(start, partition) if offset is None else offset.offset
        if position < partition.high_watermark:
            return True
    return False
