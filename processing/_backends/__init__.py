"""Where the log lives, as the runtime sees it: the backend interface and its implementations.

The runtime needs a few things from a log: topics (their partition counts, creating them
with configs), produce (and know the records are durable), fetch a partition's records
(waiting when there are none yet), its first and end offsets, membership of a consumer
group (learning which partitions are this worker's, and when they move), commits of
offsets with a little metadata, and deleting records that were consumed (a repartition
topic's, see ``_runtime.py``). :class:`Backend` and :class:`Membership` say exactly that,
so a pipeline never knows where it runs. Every call that may cross a network is
``async``, so a Kafka-protocol backend can implement them with a client.

Implementations: :class:`InProcessBackend` (``in_process.py``), a store and its group and
transaction coordinators in this process; :class:`MemoryBackend` (``memory.py``), the test driver's
topics and group in memory; :class:`KafkaBackend` (``kafka.py``), a Kafka-protocol
cluster (``headwater broker`` or Apache Kafka) through confluent-kafka.

Choices made for the backends to come. Offsets are committed per partition with a
metadata string (Kafka's OffsetCommit carries one; the runtime stores the task's stream
time in it, see ``_tasks.py``). A topic's configs are Kafka's strings
(``{"cleanup.policy": "compact"}``), which an admin client passes on as they are.
``fetch`` is cancelled whenever a task stops or a timer is due: an implementation must
lose nothing when cancelled (records it had buffered are returned by the next fetch).
Membership callbacks are awaited, so a partition is given up only once its task has
finished its batch and committed; ``on_lost`` is told instead of ``on_revoked`` when the
partitions were already taken away (commits would be rejected).
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Protocol, runtime_checkable

from headwater.groups import OffsetAndMetadata, TopicPartition
from headwater.store import RecordColumns

from .._encoding import OutRecords
from .._handoff import Handoff

#: Called with the partitions concerned (sorted).
PartitionsHandler = Callable[[list[TopicPartition]], Awaitable[None]]


#: The batch size of a log in this process (a data directory, memory): a batch's objects
#: then stay in the processor's caches from decoding to writing. Measured against 512
#: KiB, interleaved: W1 3-8% and W2 6-14% more events/s at 64-128 KiB (equal there).
LOCAL_BATCH_BYTES = 128 << 10
#: The batch size on a Kafka cluster, where each batch's writes wait a round trip for
#: their acknowledgement: at 128 KiB, W1 under ``headwater worker`` made 0.7x the events/s
#: with 1 worker, 0.5x with 2.
CLUSTER_BATCH_BYTES = 512 << 10


class Membership(Protocol):
    """This worker's place in its consumer group."""

    async def committed(
        self, partitions: Sequence[TopicPartition]
    ) -> dict[TopicPartition, OffsetAndMetadata]:
        """Return the group's committed offset and metadata of each of ``partitions``
        that has one."""
        ...

    async def commit(
        self, offsets: Mapping[TopicPartition, int], metadata: Mapping[TopicPartition, str]
    ) -> None:
        """Commit ``offsets`` (the next offset to read, per partition), each with its
        ``metadata`` string (none: ""); return once they are durable.

        :raises GroupError: if the group is rebalancing or this member was fenced.
        :raises StoreError: if the offsets could not be written.
        """
        ...


@runtime_checkable
class Transactions(Protocol):
    """A :class:`Membership` whose commits are transactions (an exactly-once run's): every
    write since the last commit becomes visible together with the offsets, or never.

    The embedded backend's (``open_in_process(..., transactional_id=...)``: the store's
    transactions, ``_store_txn.py``) and the Kafka backend's (``open_kafka(...,
    transactional_id=...)``: librdkafka's transactional producer) memberships are."""

    async def commit_transaction(
        self, offsets: Mapping[TopicPartition, int], metadata: Mapping[TopicPartition, str]
    ) -> None:
        """Commit the open transaction with ``offsets`` (and their ``metadata``) as the
        group's offsets; begin the next.

        :raises TransactionAbortedError: if it could not commit (it was aborted).
        :raises ProducerFencedError: if another worker took over (nothing more can commit).
        """
        ...

    async def abort_transaction(self) -> None:
        """Abort the open transaction; begin the next.

        :raises ProducerFencedError: if another worker took over.
        """
        ...


class Backend(Protocol):
    """The log as the runtime uses it. Implementations are used from one event loop."""

    #: The event times of repartition records this process appended, for the reader
    #: here (``_handoff.py``); None where the log is in another process.
    handoff: Handoff | None
    #: How many bytes a partition loop reads at a time unless the app's config says
    #: (``AppConfig.max_batch_bytes``): :data:`LOCAL_BATCH_BYTES` or :data:`CLUSTER_BATCH_BYTES`.
    batch_bytes: int

    async def partition_count(self, topic: str) -> int | None:
        """Return how many partitions ``topic`` has, or None if it does not exist."""
        ...

    async def topic_config(self, topic: str) -> Mapping[str, str] | None:
        """Return ``topic``'s configs as Kafka names and spells them (``cleanup.policy``:
        ``"delete"``, ``"compact"`` or ``"compact,delete"``; ``retention.ms``: ``"-1"``
        for none, ...), defaults included, or None if it does not exist."""
        ...

    async def create_topic(
        self, topic: str, partitions: int, config: Mapping[str, str] | None = None
    ) -> None:
        """Create ``topic`` with ``partitions`` partitions and ``config`` (Kafka's names and
        values as strings, e.g. ``{"cleanup.policy": "compact"}``); nothing if it exists.

        :raises InvalidConfigError: for an unknown config or a bad value.
        """
        ...

    async def produce(self, topic: str, partition: int, records: OutRecords) -> None:
        """Append ``records`` to one partition, in order; return once they are durable."""
        ...

    async def fetch(self, topic: str, partition: int, offset: int, max_bytes: int) -> RecordColumns:
        """Return records from ``offset`` on (about ``max_bytes``), waiting until there is one.

        A backend that reads committed records only may return none, with ``offsets``
        ``range(end, end)``, when what lies from ``offset`` to the partition's end ``end``
        is hidden (transaction markers, aborted records): the reader reads on from ``end``.
        Cancelling it loses nothing.

        :raises OffsetOutOfRangeError: if ``offset`` is outside the log (retention).
        """
        ...

    async def start_offset(self, topic: str, partition: int) -> int:
        """Return the first offset still stored in a partition."""
        ...

    async def delete_records(self, topic: str, partition: int, before_offset: int) -> None:
        """Delete a partition's records before ``before_offset`` (Kafka's DeleteRecords):
        its start offset moves there, unless it is there or later already.

        :raises OffsetOutOfRangeError: if ``before_offset`` is past the partition's end.
        :raises PolicyViolationError: if the topic is compacted.
        """
        ...

    async def end_offset(self, topic: str, partition: int) -> int:
        """Return the end of what can be read from a partition (its high watermark)."""
        ...

    def join(
        self,
        group_id: str,
        topics: Sequence[str],
        *,
        on_assigned: PartitionsHandler,
        on_revoked: PartitionsHandler,
        on_lost: PartitionsHandler,
    ) -> contextlib.AbstractAsyncContextManager[Membership]:
        """Join consumer group ``group_id`` reading ``topics`` for the duration of a block.

        Partitions are assigned with Kafka's range assignor, which keeps a task's
        partitions on one member (see ``_tasks.py``). ``on_assigned`` is awaited when
        partitions become this worker's, ``on_revoked`` before they are given up (it
        should finish and commit them), ``on_lost`` when they were taken away already
        (its session expired; it must not commit them). Leaving the block leaves the group.
        """
        ...
