"""The log commands' work on a store open in this process.

What ``_local.py`` does once it holds a data directory: append (:class:`StoreWriter`),
look up single records (:class:`StoreLookup`), read a topic from where a read stands
(:class:`StoreReader`) and read or check a consumer group (:func:`drain_group`,
:func:`group_has_news`).

A reader goes partition after partition from its positions up to the high watermarks
seen when it was called, in reads of ``READ_BYTES``, each read one delivery to the sink.
Its positions are a dict the caller may share: when a follower goes on through the
directory's owner instead (``_kafka.py``), it starts from where this one stopped.

Damage does not stop a reader: a read that meets a damaged range gets every valid record
before it, the range goes to the sink once (which offsets, where reading resumes), and
reading goes on after it, in that partition and the next ones. A group member stops at
damage instead: stepping over it would commit past records it never delivered.

A group member here is the group's only live member (nobody else has the directory), so
it reads what the group has not committed and commits each delivery once the sink took
it.
"""

from __future__ import annotations

from collections.abc import Sequence

from headwater.groups import Consumer, GroupConfig, GroupCoordinator, TopicPartition
from headwater.store import (
    CorruptRecordError,
    IsolationLevel,
    NewRecord,
    OffsetOutOfRangeError,
    Partition,
    Record,
    Store,
    parse_batch_header,
    records_from,
)

from ._access import RecordSink
from ._start import Start

READ_BYTES = 1 << 20


def start_position(start: Start, partition: Partition) -> int:
    """Return where ``start`` begins in ``partition``."""
    at_time = partition.offset_for_time(start.value) if start.kind == "time" else None
    return start.position(partition.log_start_offset, partition.high_watermark, at_time)


class StoreWriter:
    """Appends to ``topic`` of an open store (a :class:`~headwater.cli._access.TopicWriter`)."""

    def __init__(self, store: Store, topic: str) -> None:
        self._store = store
        self._topic = topic
        self.partitions = len(store.partitions(topic))
        self.max_message_bytes = store.topic_config(topic).max_message_bytes

    async def append(
        self, records: Sequence[NewRecord], partition: int | None
    ) -> list[tuple[int, int]]:
        return await self._store.append(self._topic, records, partition=partition)


class StoreLookup:
    """Reads single records of an open store (a :class:`~headwater.cli._access.RecordLookup`)."""

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
        f"{start} to {end - 1} (removed by retention, or deleted?)"
    )


def not_found(topic: str, partition: int, offset: int) -> str:
    """Why there is no record at ``offset`` inside the log."""
    return f"no record at {topic}/{partition}/{offset} (removed by compaction, or never written)"


class StoreReader:
    """Reads ``topic`` (one partition, or all) into ``sink``, from ``positions`` on.

    ``positions`` maps each partition to its next offset; empty, it is filled from the
    read's start at the first :meth:`drain`. It is updated as records are delivered.
    ``isolation`` says where each partition ends (high watermark or last stable offset)
    and which transactional records are delivered; markers never are.
    """

    def __init__(
        self,
        topic: str,
        partition: int | None,
        sink: RecordSink,
        positions: dict[int, int],
        isolation: IsolationLevel = IsolationLevel.READ_UNCOMMITTED,
    ) -> None:
        self.topic = topic
        self.isolation = isolation
        self.partition = partition
        self.sink = sink
        self.positions = positions
        #: Damaged ranges stepped over, as (partition, file, position): each told once.
        self._reported: set[tuple[int, str, int]] = set()

    def _partitions(self, store: Store) -> list[Partition]:
        if self.partition is not None:
            return [store.partition(self.topic, self.partition)]
        return store.partitions(self.topic)

    async def drain(self, store: Store, start: Start) -> None:
        """Deliver every record from the positions up to the current high watermarks."""
        partitions = self._partitions(store)
        if not self.positions:
            self.positions.update({p.index: start_position(start, p) for p in partitions})
        for partition in partitions:
            self.positions[partition.index] = await self._drain_one(
                partition, self.positions.get(partition.index, 0)
            )
            if self.sink.done():
                break

    async def _drain_one(self, partition: Partition, position: int) -> int:
        # Retention may have removed what we had not read yet: go on from what is left.
        position = max(position, partition.log_start_offset)
        end = partition.upper_offset(self.isolation)
        while position < end and not self.sink.done():
            try:
                data = await partition.read(position, READ_BYTES, isolation=self.isolation)
            except CorruptRecordError as exc:
                position = self._step_over(partition, exc, position)
                continue
            if not data:
                break
            visible = partition.visible(data, position, self.isolation)
            records = [r for r in records_from(visible, position) if r.offset < end]
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


async def drain_group(
    store: Store,
    topic: str,
    group: str,
    start: Start,
    sink: RecordSink,
    *,
    isolation: IsolationLevel = IsolationLevel.READ_UNCOMMITTED,
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
            isolation_level=isolation,
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


async def group_has_news(store: Store, topic: str, group: str, start: Start) -> bool:
    """Whether ``topic`` has records past ``group``'s committed offsets (or ``start``)."""
    async with GroupCoordinator(store) as coordinator:
        committed = coordinator.committed(group)
    for partition in store.partitions(topic):
        offset = committed.get(TopicPartition(topic, partition.index))
        position = start_position(start, partition) if offset is None else offset.offset
        if position < partition.high_watermark:
            return True
    return False
