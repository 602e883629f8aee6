"""Where the log lives, as the runtime sees it: a small backend interface.

The runtime needs five things from a log: create a topic, produce records (and know they
are durable), fetch records of a partition (waiting when there are none yet), join a
consumer group (learning which partitions are this worker's, and when they move), and
commit offsets. :class:`Backend` and :class:`Membership` say exactly that, so a pipeline
never knows where it runs. :class:`InProcessBackend` implements them over a
:class:`~headwater.store.Store` and a :class:`~headwater.groups.GroupCoordinator` in
this process (the embedded mode); a Kafka-protocol backend will implement them with a
Kafka client, against ``headwater broker`` or a Kafka cluster.

Theory of operation of the in-process backend. Produce encodes each partition's records
as one v2 batch with the store's column encoder (``_encoding.py``; several when they
exceed the topic's ``max_message_bytes``) and appends it with
``Partition.append_batch``, which returns once the batch is durable under the topic's
policy. Fetch reads the partition straight from the store and, when caught up, waits on
its high-watermark notification. Group membership is an embedded
:class:`~headwater.groups.Consumer` that the runtime never iterates: it joins,
heartbeats and rebalances in its own tasks, and tells the runtime through its callbacks;
the runtime reads each assigned partition itself (one task each), so one slow partition
never holds up another. The callbacks are awaited: a partition is given up only after
its task has finished its batch and committed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Protocol

from headwater.groups import Consumer, GroupConfig, GroupCoordinator, TopicPartition
from headwater.store import RecordColumns, Store, TopicExistsError, open_store

from ._encoding import OutRecords, encode_out_records

#: Called with the partitions concerned (sorted).
PartitionsHandler = Callable[[list[TopicPartition]], Awaitable[None]]


class Membership(Protocol):
    """This worker's place in its consumer group."""

    def position(self, partition: TopicPartition) -> int:
        """Return where an assigned partition starts: the committed offset, else its
        log start (a stream app reads from the beginning)."""
        ...

    async def commit(self, offsets: Mapping[TopicPartition, int]) -> None:
        """Commit ``offsets`` (the next offset to read, per partition); return once durable.

        :raises GroupError: if the group is rebalancing or this member was fenced.
        """
        ...


class Backend(Protocol):
    """The log as the runtime uses it. Implementations are used from one event loop."""

    def partition_count(self, topic: str) -> int | None:
        """Return how many partitions ``topic`` has, or None if it does not exist."""
        ...

    async def create_topic(self, topic: str, partitions: int) -> None:
        """Create ``topic`` with ``partitions`` partitions (nothing if it exists already)."""
        ...

    async def produce(self, topic: str, partition: int, records: OutRecords) -> None:
        """Append ``records`` to one partition, in order; return once they are durable."""
        ...

    async def fetch(self, topic: str, partition: int, offset: int, max_bytes: int) -> RecordColumns:
        """Return records from ``offset`` on (about ``max_bytes``), waiting until there is one.

        :raises OffsetOutOfRangeError: if ``offset`` is outside the log (retention).
        """
        ...

    def start_offset(self, topic: str, partition: int) -> int:
        """Return the first offset still stored in a partition."""
        ...

    def end_offset(self, topic: str, partition: int) -> int:
        """Return the end of what can be read from a partition (its high watermark)."""
        ...

    def join(
        self,
        group_id: str,
        topics: Sequence[str],
        *,
        on_assigned: PartitionsHandler,
        on_revoked: PartitionsHandler,
    ) -> contextlib.AbstractAsyncContextManager[Membership]:
        """Join consumer group ``group_id`` reading ``topics`` for the duration of a block.

        ``on_assigned`` is awaited when partitions become this worker's, ``on_revoked``
        before they are given up (it should finish and commit them). Leaving the block
        leaves the group.
        """
        ...


class _ConsumerMembership:
    """A :class:`Membership` over an embedded consumer that is never iterated."""

    def __init__(self, consumer: Consumer) -> None:
        self._consumer = consumer

    def position(self, partition: TopicPartition) -> int:
        return self._consumer.position(partition)

    async def commit(self, offsets: Mapping[TopicPartition, int]) -> None:
        await self._consumer.commit(dict(offsets))


class InProcessBackend:
    """The embedded log: a store and a group coordinator in this process.

    Build it with :func:`open_in_process`. Concurrency: one event loop.
    """

    def __init__(self, store: Store, coordinator: GroupCoordinator) -> None:
        self.store = store
        self.coordinator = coordinator

    def partition_count(self, topic: str) -> int | None:
        """Return how many partitions ``topic`` has, or None if it does not exist."""
        if not self.store.has_topic(topic):
            return None
        return self.store.topic_config(topic).partitions

    async def create_topic(self, topic: str, partitions: int) -> None:
        """Create ``topic`` with the store's default settings and ``partitions`` partitions."""
        if self.store.has_topic(topic):
            return
        config = dataclasses.replace(self.store.default_config, partitions=partitions)
        with contextlib.suppress(TopicExistsError):
            await self.store.create_topic(topic, config)

    async def produce(self, topic: str, partition: int, records: OutRecords) -> None:
        """Append ``records`` as one batch, or several if they exceed max_message_bytes."""
        target = self.store.partition(topic, partition)
        for batch in encode_within(records, target.config.max_message_bytes):
            await target.append_batch(batch)

    async def fetch(self, topic: str, partition: int, offset: int, max_bytes: int) -> RecordColumns:
        """Read records at or after ``offset``; wait for the first one if there is none."""
        source = self.store.partition(topic, partition)
        while True:
            records = await source.read_columns(offset, max_bytes)
            if len(records):
                return records
            await source.wait_for(offset)

    def start_offset(self, topic: str, partition: int) -> int:
        """Return the partition's log start offset."""
        return self.store.partition(topic, partition).log_start_offset

    def end_offset(self, topic: str, partition: int) -> int:
        """Return the partition's high watermark."""
        return self.store.partition(topic, partition).high_watermark

    @contextlib.asynccontextmanager
    async def join(
        self,
        group_id: str,
        topics: Sequence[str],
        *,
        on_assigned: PartitionsHandler,
        on_revoked: PartitionsHandler,
    ) -> AsyncIterator[Membership]:
        """Join the group through an embedded consumer (see the module docstring)."""
        consumer = self.coordinator.consumer(
            group_id,
            topics,
            on_assigned=on_assigned,
            on_revoked=on_revoked,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            client_id=f"headwater-app-{group_id}",
        )
        async with consumer:
            yield _ConsumerMembership(consumer)


def encode_within(records: OutRecords, limit: int) -> list[bytes]:
    """Encode ``records`` as one batch, or as several (in order) if one would exceed
    ``limit`` bytes; a single record larger than ``limit`` stays a batch of its own, for
    the store to refuse. Encoding first and splitting only what turns out too big costs
    nothing in the common case, where a batch's outputs fit one append."""
    batch = encode_out_records(records)
    count = records.count()
    if len(batch) <= limit or count == 1:
        return [batch]
    half = count // 2
    return encode_within(records.slice(0, half), limit) + encode_within(
        records.slice(half, count), limit
    )


def default_data_dir() -> Path:
    """Return the data directory of an app given none: $HEADWATER_DATA, else ./headwater-data."""
    return Path(os.environ.get("HEADWATER_DATA") or "headwater-data")


@contextlib.asynccontextmanager
async def open_in_process(data_dir: str | os.PathLike[str]) -> AsyncIterator[InProcessBackend]:
    """Open the store at ``data_dir`` and a group coordinator over it, for a block.

    Only this process can use the data directory meanwhile, so a group has one member
    here: the coordinator is told not to wait for others before the first assignment.

    :raises DataDirectoryLockedError: if another process has the directory open.
    """
    async with open_store(data_dir) as store:
        config = GroupConfig(initial_rebalance_delay_ms=0)
        async with GroupCoordinator(store, config=config) as coordinator:
            yield InProcessBackend(store, coordinator)
