"""Consumer groups of a Kafka-protocol cluster, as a :class:`SinkRunner` drives them.

Theory of operation
-------------------
:class:`KafkaGroupConsumer` is a :class:`~headwater.connectors.SinkConsumer` over a
confluent-kafka consumer that subscribes with the classic, eager protocol (``range``),
as the embedded consumer does by default. librdkafka calls its rebalance callbacks in
the thread that polls (a worker thread: every blocking call runs in one); there each
callback runs the runner's own callback on the event loop (``anyio.from_thread.run``)
and waits for it, so that a sink finishes and commits a partition before librdkafka
gives it up, and recovers one before it is read:

- on assignment the group's committed offsets (with their metadata) are fetched, then
  ``on_assigned`` runs (a seek it makes becomes the partition's starting offset), then
  the partitions are assigned;
- on revocation ``on_revoked`` runs (``on_lost`` when the assignment was lost). Leaving
  the ``async with`` block cleanly gives every partition up the same way before the
  consumer closes; after an error or a cancellation nothing runs and nothing is
  committed (what was not committed is delivered again), as with the embedded consumer.

A poll waits up to ``POLL_S`` for a first message, then takes what else is already
fetched. Records come out one partition at a time; librdkafka's end-of-partition event
comes out as ``None``, which is how a runner waiting to catch up learns that a partition
did. A seek made outside a callback is applied in the polling thread before the next
poll, and records of that partition polled before it are dropped. Commits are
synchronous OffsetCommits with the runner's metadata; the group's refusals become the
groups package's errors, other failures :class:`LogUnavailableError`.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Literal

import anyio
import anyio.from_thread
from confluent_kafka import OFFSET_STORED, Consumer, KafkaError, KafkaException, Message
from confluent_kafka import TopicPartition as KafkaTopicPartition

from headwater.groups import (
    ConsumerBatch,
    FencedMemberError,
    OffsetAndMetadata,
    RebalanceInProgressError,
    TopicPartition,
)
from headwater.store import Record, TopicNotFoundError

from ._kafka_log import TIMEOUT_S, KafkaCluster, blocking, finish, to_record
from ._sink_runner import PartitionsCallback

logger = logging.getLogger("headwater.connectors")

POLL_S = 0.25
BATCH_MESSAGES = 1000

_FENCED = (
    KafkaError.ILLEGAL_GENERATION,
    KafkaError.UNKNOWN_MEMBER_ID,
    KafkaError.FENCED_INSTANCE_ID,
)


class KafkaGroups:
    """A cluster's consumer groups, where a :class:`SinkRunner` finds its own
    (a :class:`~headwater.connectors.SinkGroups`).

    :param cluster: the cluster.
    :param session_timeout_ms: how long the group waits for a member that stopped
        heartbeating (one killed, say) before giving its partitions to the others.
    """

    def __init__(self, cluster: KafkaCluster, *, session_timeout_ms: int = 10_000) -> None:
        self.cluster = cluster
        self.session_timeout_ms = session_timeout_ms

    def consumer(
        self,
        group_id: str,
        topics: Sequence[str],
        *,
        auto_offset_reset: Literal["earliest", "latest"],
        enable_auto_commit: bool,
        on_assigned: PartitionsCallback,
        on_revoked: PartitionsCallback,
        on_lost: PartitionsCallback,
    ) -> KafkaGroupConsumer:
        """Return a member of ``group_id`` reading ``topics`` (enter it to join)."""
        settings = {
            "group.id": group_id,
            "client.id": "headwater-connect",
            "enable.auto.commit": enable_auto_commit,
            "enable.auto.offset.store": False,
            "enable.partition.eof": True,
            "auto.offset.reset": auto_offset_reset,
            "fetch.wait.max.ms": 100,
            "partition.assignment.strategy": "range",
            "session.timeout.ms": self.session_timeout_ms,
            "heartbeat.interval.ms": max(self.session_timeout_ms // 10, 100),
        }
        return KafkaGroupConsumer(
            self.cluster,
            Consumer(self.cluster.config(**settings)),
            list(topics),
            (on_assigned, on_revoked, on_lost),
        )


class KafkaGroupConsumer:
    """A member of a cluster's consumer group (see the module). One event loop; one
    ``__anext__`` at a time."""

    def __init__(
        self,
        cluster: KafkaCluster,
        consumer: Consumer,
        topics: list[str],
        callbacks: tuple[PartitionsCallback, PartitionsCallback, PartitionsCallback],
    ) -> None:
        self.cluster = cluster
        self._consumer = consumer
        self._topics = topics
        self._on_assigned, self._on_revoked, self._on_lost = callbacks
        self._assignment: set[TopicPartition] = set()
        self._committed: dict[TopicPartition, OffsetAndMetadata] = {}
        self._at_end: set[TopicPartition] = set()
        self._buffer: deque[ConsumerBatch | None] = deque()
        self._starts: dict[TopicPartition, int] | None = None  # seeks inside on_assigned
        self._seeks: dict[TopicPartition, int] = {}
        self._seeks_lock = threading.Lock()
        self._assigned_once = False
        self._closing = False

    # -- joining and leaving -----------------------------------------------------------

    async def __aenter__(self) -> KafkaGroupConsumer:
        try:
            for topic in self._topics:
                await blocking(self._check_topic, topic)
            self._consumer.subscribe(
                self._topics,
                on_assign=self._assign_callback,
                on_revoke=self._revoke_callback,
                on_lost=self._lost_callback,
            )
            while not self._assigned_once:
                await self._poll()
        except BaseException:
            self._closing = True
            await finish(self._consumer.close)
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            if exc_type is None and self._assignment:
                with anyio.CancelScope(shield=True):
                    await self._give_up(sorted(self._assignment), lost=False)
        finally:
            self._closing = True  # the callbacks run during close do nothing more
            await finish(self._consumer.close)

    def _check_topic(self, topic: str) -> None:
        metadata = self.cluster.metadata(self._consumer, topic)
        found = metadata.topics.get(topic)
        if found is None or found.error is not None:
            raise TopicNotFoundError(
                f"topic {topic!r} does not exist on {self.cluster.description}"
            )

    # -- reading -------------------------------------------------------------------------

    def __aiter__(self) -> KafkaGroupConsumer:
        return self

    async def __anext__(self) -> ConsumerBatch | None:
        """Return the next batch of one partition, or ``None`` when one reached its end."""
        while not self._buffer:
            if self._closing:
                raise StopAsyncIteration
            await self._poll()
        return self._buffer.popleft()

    async def _poll(self) -> None:
        messages = await blocking(self._poll_blocking)
        with self._seeks_lock:
            seeking = set(self._seeks)
        batch: ConsumerBatch | None = None
        for message in messages:
            error = message.error()
            tp = TopicPartition(message.topic() or "", message.partition() or 0)
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF:
                    if tp in self._assignment and tp not in seeking:
                        self._at_end.add(tp)
                        self._buffer.append(None)
                    batch = None
                    continue
                if error.fatal():
                    raise self.cluster.failure("consuming", error)
                logger.warning("consumer of %s: %s", self.cluster.description, error.str())
                continue
            if tp not in self._assignment or tp in seeking:
                continue  # given up, or polled before a seek
            self._at_end.discard(tp)
            record: Record = to_record(message)
            if batch is not None and batch.topic_partition == tp:
                batch.records.append(record)
            else:
                batch = ConsumerBatch(tp.topic, tp.partition, [record])
                self._buffer.append(batch)

    def _poll_blocking(self) -> list[Message]:
        consumer = self._consumer
        with self._seeks_lock:
            seeks = list(self._seeks.items())
        for tp, offset in seeks:
            try:
                consumer.seek(KafkaTopicPartition(tp.topic, tp.partition, offset))
            except KafkaException as exc:  # not fetching yet: tried again at the next poll
                logger.debug("seek of %s to %d deferred: %s", tp, offset, exc)
                continue
            with self._seeks_lock:
                if self._seeks.get(tp) == offset:
                    del self._seeks[tp]
        first = consumer.poll(POLL_S)
        if first is None:
            return []
        return [first, *consumer.consume(BATCH_MESSAGES, 0)]

    # -- positions -----------------------------------------------------------------------

    def assignment(self) -> frozenset[TopicPartition]:
        """Return the partitions this member is assigned now."""
        return frozenset(self._assignment)

    def committed(self) -> dict[TopicPartition, OffsetAndMetadata]:
        """Return the group's committed offsets of the assigned partitions (as fetched at
        the assignment, and since committed by this member)."""
        return {tp: o for tp, o in self._committed.items() if tp in self._assignment}

    def seek(self, partition: TopicPartition, offset: int) -> None:
        """Make ``partition``'s next batch start at ``offset`` (see the module)."""
        tp = TopicPartition(*partition)
        if self._starts is not None:  # inside on_assigned: where the assignment starts
            self._starts[tp] = offset
            return
        with self._seeks_lock:
            self._seeks[tp] = max(offset, 0)
        self._at_end.discard(tp)
        self._buffer = deque(b for b in self._buffer if b is None or b.topic_partition != tp)

    def lag(self) -> dict[TopicPartition, int]:
        """Return 0 for each assigned partition known to be at its end, 1 for the others
        (a member of a cluster learns of ends from end-of-partition events)."""
        buffered = {b.topic_partition for b in self._buffer if b is not None}
        with self._seeks_lock:
            seeking = set(self._seeks)
        return {
            tp: 0 if tp in self._at_end and tp not in buffered and tp not in seeking else 1
            for tp in sorted(self._assignment)
        }

    async def commit(self, offsets: Mapping[TopicPartition, OffsetAndMetadata]) -> None:
        """Commit ``offsets`` synchronously (see the module).

        :raises RebalanceInProgressError: while the group rebalances.
        :raises FencedMemberError: if this member is no longer in the group.
        :raises LogUnavailableError: if the cluster does not answer.
        """
        parts = [
            KafkaTopicPartition(tp.topic, tp.partition, o.offset, o.metadata)
            for tp, o in offsets.items()
        ]
        try:
            results = await blocking(self._commit_blocking, parts)
        except KafkaException as exc:
            raise self._commit_failure(exc.args[0]) from None
        for result in results or ():
            if result.error is not None:
                raise self._commit_failure(result.error)
        for tp, o in offsets.items():
            self._committed[TopicPartition(*tp)] = o

    def _commit_blocking(self, parts: list[KafkaTopicPartition]) -> list[KafkaTopicPartition]:
        results: list[KafkaTopicPartition] = self._consumer.commit(
            offsets=parts, asynchronous=False
        )
        return results

    def _commit_failure(self, error: KafkaError) -> Exception:
        code = error.code()
        if code == KafkaError.REBALANCE_IN_PROGRESS:
            return RebalanceInProgressError(f"commit refused: {error.str()}")
        if code in _FENCED:
            return FencedMemberError(f"commit refused: {error.str()}")
        return self.cluster.failure("committing offsets", error)

    # -- rebalance callbacks (in the polling thread) -------------------------------------

    def _assign_callback(self, consumer: Consumer, partitions: list[KafkaTopicPartition]) -> None:
        try:
            committed = consumer.committed(partitions, timeout=TIMEOUT_S)
        except KafkaException as exc:
            logger.warning(
                "consumer of %s: the committed offsets could not be read (%s); the group "
                "goes on from them without their metadata",
                self.cluster.description,
                exc,
            )
            committed = partitions
        found = {
            TopicPartition(p.topic, p.partition): OffsetAndMetadata(p.offset, p.metadata or "")
            for p in committed
            if p.offset >= 0
        }
        tps = sorted(TopicPartition(p.topic, p.partition) for p in partitions)
        starts = anyio.from_thread.run(self._take, tps, found)
        consumer.assign(
            [
                KafkaTopicPartition(tp.topic, tp.partition, starts.get(tp, OFFSET_STORED))
                for tp in tps
            ]
        )

    def _revoke_callback(self, consumer: Consumer, partitions: list[KafkaTopicPartition]) -> None:
        tps = sorted(TopicPartition(p.topic, p.partition) for p in partitions)
        anyio.from_thread.run(self._give_up, tps, False)

    def _lost_callback(self, consumer: Consumer, partitions: list[KafkaTopicPartition]) -> None:
        tps = sorted(TopicPartition(p.topic, p.partition) for p in partitions)
        anyio.from_thread.run(self._give_up, tps, True)

    async def _take(
        self, partitions: list[TopicPartition], committed: dict[TopicPartition, OffsetAndMetadata]
    ) -> dict[TopicPartition, int]:
        """Take ``partitions`` on (on the event loop); return the starts it sought."""
        self._assigned_once = True
        self._assignment.update(partitions)
        self._committed.update(committed)
        self._at_end.difference_update(partitions)
        starts: dict[TopicPartition, int] = {}
        if self._closing or not partitions:
            return starts
        self._starts = starts
        try:
            await self._on_assigned(list(partitions))
        finally:
            self._starts = None
        return starts

    async def _give_up(self, partitions: list[TopicPartition], lost: bool) -> None:
        """Give ``partitions`` up (on the event loop), telling the runner first."""
        try:
            if partitions and not self._closing:
                await (self._on_lost if lost else self._on_revoked)(list(partitions))
        finally:
            gone = set(partitions)
            self._assignment -= gone
            self._at_end -= gone
            for tp in gone:
                self._committed.pop(tp, None)
            with self._seeks_lock:
                for tp in gone:
                    self._seeks.pop(tp, None)
            self._buffer = deque(
                b for b in self._buffer if b is None or b.topic_partition not in gone
            )
