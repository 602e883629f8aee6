"""The embedded log as a backend: a store and a group coordinator in this process.

Theory of operation. Produce encodes each partition's records as one v2 batch with the
store's column encoder (``_encoding.py``; several when they exceed the topic's
``max_message_bytes``) and appends it with ``Partition.append_batch``, which returns
once the batch is durable under the topic's policy; the event times the pipeline knows
of a repartition topic's records (``OutRecords.event_times``) then go to the backend's
:class:`~headwater.processing._handoff.Handoff`, for the task here that reads them (not
under exactly-once, whose transactional producer writes them). Fetch reads the partition straight
from the store, committed records only (``read_committed``, as every Kafka consumer of
the Kafka backend reads), and, when caught up, waits on its notification (a cancelled
wait loses nothing: nothing was read); when all that lies before the partition's last
stable offset is hidden (transaction markers, aborted records), it returns no records
and where to read on, as ``Backend.fetch`` says. A partition's end offset is its last
stable offset, which is its high watermark unless a transaction is open. Group
membership is an embedded :class:`~headwater.groups.Consumer` that the runtime never
iterates: it joins, heartbeats and rebalances in its own tasks, and tells the runtime
through its callbacks; the runtime reads each assigned partition itself (one task
each), so one slow partition never holds up another. The consumer uses the range
assignor, eagerly (see ``_tasks.py`` for why). Offsets are only ever read from and
committed to the group's committed offsets (``__consumer_offsets``), with their metadata.

Exactly-once (a ``transactional_id`` given to :func:`open_in_process`): every write goes
into the open transaction of one transactional producer on the store
(``_store_txn.py``), and the group membership commits through it
(:meth:`_TransactionalMembership.commit_transaction`): the offsets go into the
transaction with the member's id and generation, so outputs, changelog records and
input positions become visible together. The directory's transaction coordinator is
opened with the store, whether or not the app runs exactly-once, and is the one the
served broker uses: there is one per directory.

The app owns its data directory while it runs, and serves it (``_serve.py``): a
Kafka-protocol broker over the same store and the same group coordinator, on 127.0.0.1 at
a port the OS picks, announced in the directory, started when the first client connects.
Other processes -- the ``headwater`` commands, any Kafka client -- then read, write and
join groups while the app runs instead of waiting for it to end. This is the one place
processing reaches into ``headwater.broker``, and only once a client has come.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path

from headwater.groups import (
    Consumer,
    GroupConfig,
    GroupCoordinator,
    OffsetAndMetadata,
    ProducerIds,
    TopicPartition,
    TransactionCoordinator,
)
from headwater.store import (
    InvalidConfigError,
    IsolationLevel,
    RecordColumns,
    Store,
    TopicConfig,
    TopicExistsError,
    kafka_config_entries,
    open_store,
)

from .._encoding import OutRecords, encode_within
from .._handoff import Handoff
from . import LOCAL_BATCH_BYTES, Membership, PartitionsHandler
from ._serve import serving
from ._store_txn import StoreTransactions

_COMMITTED = IsolationLevel.READ_COMMITTED


class _ConsumerMembership:
    """A :class:`Membership` over an embedded consumer that is never iterated."""

    def __init__(self, consumer: Consumer, coordinator: GroupCoordinator) -> None:
        self._consumer = consumer
        self._coordinator = coordinator

    async def committed(
        self, partitions: Sequence[TopicPartition]
    ) -> dict[TopicPartition, OffsetAndMetadata]:
        """Return the group's committed offsets of ``partitions`` that have one."""
        offsets = self._coordinator.committed(self._consumer.group_id)
        return {tp: offsets[tp] for tp in partitions if tp in offsets}

    async def commit(
        self, offsets: Mapping[TopicPartition, int], metadata: Mapping[TopicPartition, str]
    ) -> None:
        """Commit ``offsets`` with their metadata; return once durable."""
        await self._consumer.commit(
            {tp: OffsetAndMetadata(offset, metadata.get(tp, "")) for tp, offset in offsets.items()}
        )


class _TransactionalMembership(_ConsumerMembership):
    """A :class:`Membership` whose commits are transactions (see the module docstring)."""

    def __init__(
        self, consumer: Consumer, coordinator: GroupCoordinator, writer: StoreTransactions
    ) -> None:
        super().__init__(consumer, coordinator)
        self._writer = writer

    async def commit_transaction(
        self, offsets: Mapping[TopicPartition, int], metadata: Mapping[TopicPartition, str]
    ) -> None:
        """Commit the open transaction (every write since the last) with ``offsets`` and
        their metadata as the group's offsets; begin the next.

        :raises TransactionAbortedError: if the group refused the offsets (it was aborted).
        :raises ProducerFencedError: if another producer took the transactional id over.
        """
        consumer = self._consumer
        await self._writer.commit(
            consumer.group_id,
            offsets,
            metadata,
            member_id=consumer.member_id,
            generation_id=consumer.generation_id,
        )

    async def abort_transaction(self) -> None:
        """Abort the open transaction; begin the next.

        :raises ProducerFencedError: if another producer took the transactional id over.
        """
        await self._writer.abort()


class InProcessBackend:
    """The embedded log: a store and a group coordinator in this process.

    Build it with :func:`open_in_process`. Concurrency: one event loop.
    """

    def __init__(
        self,
        store: Store,
        coordinator: GroupCoordinator,
        transactions: StoreTransactions | None = None,
    ) -> None:
        self.store = store
        self.coordinator = coordinator
        #: The transactional producer every write goes through, if the run is exactly-once.
        self.transactions = transactions
        #: The event times of the repartition records this process appended, for their
        #: reader here (see ``_handoff.py``).
        self.handoff: Handoff | None = Handoff()
        self.batch_bytes = LOCAL_BATCH_BYTES

    async def partition_count(self, topic: str) -> int | None:
        """Return how many partitions ``topic`` has, or None if it does not exist."""
        if not self.store.has_topic(topic):
            return None
        return self.store.topic_config(topic).partitions

    async def topic_config(self, topic: str) -> Mapping[str, str] | None:
        """Return ``topic``'s configs as Kafka spells them (None: no such topic)."""
        if not self.store.has_topic(topic):
            return None
        return kafka_config_entries(self.store.topic_config(topic))

    async def create_topic(
        self, topic: str, partitions: int, config: Mapping[str, str] | None = None
    ) -> None:
        """Create ``topic`` with ``partitions`` partitions and ``config`` over the store's
        default settings (nothing if it exists).

        :raises InvalidConfigError: for an unknown config or a bad value.
        """
        if self.store.has_topic(topic):
            return
        base = dataclasses.replace(self.store.default_config, partitions=partitions)
        settings = TopicConfig.from_strings(config or {}, base)
        if settings.partitions != partitions:
            raise InvalidConfigError(f"topic {topic!r}: give partitions as such, not as a config")
        with contextlib.suppress(TopicExistsError):
            await self.store.create_topic(topic, settings)

    async def produce(self, topic: str, partition: int, records: OutRecords) -> None:
        """Append ``records`` as one batch, or several if they exceed max_message_bytes
        (in the open transaction, if the backend has a transactional producer)."""
        if self.transactions is not None:
            await self.transactions.produce(topic, partition, records)
            return
        target = self.store.partition(topic, partition)
        times, handoff = records.event_times, self.handoff
        done = 0
        for batch in encode_within(records, target.config.max_message_bytes):
            info = await target.append_batch(batch)
            if times is not None and handoff is not None:  # for the reader here, now durable
                count = info.next_offset - info.base_offset
                part = times if count == len(times) else times[done : done + count]
                handoff.put(topic, partition, info.base_offset, part)
                done += count

    async def fetch(self, topic: str, partition: int, offset: int, max_bytes: int) -> RecordColumns:
        """Read committed records at or after ``offset``; wait for the first one if there
        is none. No records, with ``offsets`` ``range(end, end)``, if all up to ``end``
        is hidden (transaction markers, aborted records)."""
        source = self.store.partition(topic, partition)
        while True:
            records = await source.read_columns(offset, max_bytes, isolation=_COMMITTED)
            if len(records):
                return records
            past = await source.skip_hidden(offset, isolation=_COMMITTED)
            if past != offset:
                return RecordColumns(range(past, past), [], [], [], [])
            await source.wait_for(offset, isolation=_COMMITTED)

    async def start_offset(self, topic: str, partition: int) -> int:
        """Return the partition's log start offset."""
        return self.store.partition(topic, partition).log_start_offset

    async def delete_records(self, topic: str, partition: int, before_offset: int) -> None:
        """Delete the partition's records before ``before_offset``, durably (the store's
        ``Partition.delete_records``; retention then deletes the segments left behind).

        :raises OffsetOutOfRangeError: if ``before_offset`` is past the high watermark.
        :raises PolicyViolationError: if the topic is compacted.
        """
        await self.store.partition(topic, partition).delete_records(before_offset)

    async def end_offset(self, topic: str, partition: int) -> int:
        """Return the partition's last stable offset (its high watermark unless a
        transaction is open): the end of what :meth:`fetch` reads."""
        return self.store.partition(topic, partition).last_stable_offset

    @contextlib.asynccontextmanager
    async def join(
        self,
        group_id: str,
        topics: Sequence[str],
        *,
        on_assigned: PartitionsHandler,
        on_revoked: PartitionsHandler,
        on_lost: PartitionsHandler,
    ) -> AsyncIterator[Membership]:
        """Join the group through an embedded consumer (see the module docstring)."""
        consumer = self.coordinator.consumer(
            group_id,
            topics,
            on_assigned=on_assigned,
            on_revoked=on_revoked,
            on_lost=on_lost,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            partition_assignment_strategy="range",
            client_id=f"headwater-app-{group_id}",
        )
        async with consumer:
            if self.transactions is not None:
                yield _TransactionalMembership(consumer, self.coordinator, self.transactions)
            else:
                yield _ConsumerMembership(consumer, self.coordinator)


def default_data_dir() -> Path:
    """Return the data directory of an app given none: $HEADWATER_DATA, else ./headwater-data."""
    return Path(os.environ.get("HEADWATER_DATA") or "headwater-data")


@contextlib.asynccontextmanager
async def open_in_process(
    data_dir: str | os.PathLike[str],
    *,
    serve: bool = True,
    transactional_id: str | None = None,
    transaction_timeout_ms: int = 60_000,
) -> AsyncIterator[InProcessBackend]:
    """Open the store at ``data_dir``, a group coordinator and a transaction coordinator
    over it, for a block; with ``serve``, also serve them to other processes (see
    ``_serve.py``).

    The app's own group starts without waiting for other members (its first assignment is
    at once); members that join through the served address later make it rebalance.
    With ``transactional_id``, writes are transactional and group commits are
    transactions (see the module docstring): the id's previous producer is fenced and
    its open transaction aborted first, and the coordinator aborts a transaction left
    open longer than ``transaction_timeout_ms``.

    :raises DataDirectoryLockedError: if another process has the directory open.
    :raises ProducerFencedError: if the transaction coordinator refuses the id.
    """
    async with open_store(data_dir) as store:
        config = GroupConfig(initial_rebalance_delay_ms=0)
        async with (
            GroupCoordinator(store, config=config) as coordinator,
            TransactionCoordinator(store, coordinator, ProducerIds.starting_now()) as txns,
        ):
            writer = None
            if transactional_id is not None:
                writer = StoreTransactions(
                    store, txns, transactional_id, timeout_ms=transaction_timeout_ms
                )
                await writer.start()
            backend = InProcessBackend(store, coordinator, writer)
            if not serve:
                yield backend
                return
            async with serving(store, coordinator, txns):
                yield backend
