"""Consumer groups of a Kafka-protocol cluster, as a :class:`SinkRunner` drives them.

Theory of operation
-------------------
:class:`KafkaGroupConsumer` is a :class:`~headwater.connectors.SinkConsumer` over a
confluent-kafka consumer that subscribes with the classic, eager protocol (``range``),
as the embedded consumer does by default. librdkafka calls its rebalance callbacks in
the thread that polls (a worker thread: every blocking call runs in one); there each
callback starts the runner's own callback on the event loop and waits for it, so that a
sink finishes and commits a partition before librdkafka gives it up, and recovers one
before it is read:

- on assignment the group's committed offsets (with their metadata) are fetched, then
  ``on_assigned`` runs (a seek it makes becomes the partition's starting offset), then
  the partitions are assigned;
- on revocation ``on_revoked`` runs (``on_lost`` when the assignment was lost). Leaving
  the ``async with`` block cleanly gives every partition up the same way before the
  consumer closes; after an error or a cancellation nothing runs and nothing is
  committed (what was not committed is delivered again), as with the embedded consumer.

One thread at a time calls into the consumer. While a callback runs, librdkafka wants
the calls made on its behalf (the commit of the partitions being given up) from the
thread inside the callback: a synchronous commit from another thread then waits for the
callback to end, which waits for the commit, for ever. So a poll (and the close) holds a
gate for as long as its thread is in the consumer; a commit made meanwhile waits for the
gate, unless a callback has started, in which case the commit is a request that the
callback's thread runs while it waits for the runner's callback to finish (and so does a
commit that was already waiting for the gate: it may hold the lock that callback needs).

A poll waits up to ``POLL_S`` for a first message, then takes what else is already
fetched. Records come out one partition at a time; librdkafka's end-of-partition event
comes out as ``None``, which is how a runner waiting to catch up learns that a partition
did. A seek made outside a callback is applied in the polling thread before the next
poll, and records of that partition polled before it are dropped. Commits are
synchronous OffsetCommits with the runner's metadata; the group's refusals become the
groups package's errors, other failures :class:`LogUnavailableError`.
"""

from __future__ import annotations

import functools
import logging
import queue
import threading
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from types import TracebackType
from typing import Any, Literal, TypeVar

import anyio
import anyio.from_thread
from anyio.abc import TaskGroup
from confluent_kafka import OFFSET_STORED, Consumer, KafkaError, KafkaException, Message
from confluent_kafka import TopicPartition as KafkaTopicPartition

from headwater.groups import (
    ConsumerBatch,
    FencedMemberError,
    OffsetAndMetadata,
    RebalanceInProgressError,
    TopicPartition,
)
from headwater.processing.kafka_client import TIMEOUT_S, blocking, to_record
from headwater.store import Record, TopicNotFoundError

from ._kafka_log import KafkaCluster
from ._sink_runner import PartitionsCallback

logger = logging.getLogger("headwater.connectors")

T = TypeVar("T")
#: A call for the thread in a callback: what to run, and whom to tell how it ended.
_Request = tuple[Callable[[], Any], Callable[[BaseException | None, Any], None]]
#: Queued once the runner's callback has finished, for the thread waiting in librdkafka's.
_CALLBACK_DONE = object()

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
            Consumer(self.cluster.consumer_config(**settings)),
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
        # One thread in the consumer at a time (see the module).
        self._gate = anyio.Lock()
        self._callbacks: TaskGroup | None = None  # where a callback's handler runs
        self._in_callback = False
        self._requests: queue.SimpleQueue[_Request | object] = queue.SimpleQueue()
        self._changed = anyio.Event()  # the gate opened, or a callback started

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
            with anyio.CancelScope(shield=True):
                await self._in_consumer(self._consumer.close)
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
            with anyio.CancelScope(shield=True):
                await self._in_consumer(self._consumer.close)

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

    async def _in_consumer(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` (a poll, the close) in a worker thread, holding the gate; the
        rebalance callbacks it makes start their handlers here."""
        try:
            async with self._gate, anyio.create_task_group() as tg:
                self._callbacks = tg
                try:
                    result = await blocking(fn)
                finally:
                    self._callbacks = None
        finally:
            self._wake()  # once the gate is open
        return result

    def _wake(self) -> None:
        self._changed.set()
        self._changed = anyio.Event()

    async def _poll(self) -> None:
        messages = await self._in_consumer(self._poll_blocking)
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
            results = await self._call(functools.partial(self._commit_blocking, parts))
        except KafkaException as exc:
            raise self._commit_failure(exc.args[0]) from None
        for result in results or ():
            if result.error is not None:
                raise self._commit_failure(result.error)
        for tp, o in offsets.items():
            self._committed[TopicPartition(*tp)] = o

    async def _call(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` (a call into the consumer) in whichever thread may (see the module)."""
        while True:
            if self._in_callback:
                return await self._request(fn)
            if not self._gate.locked():
                try:
                    async with self._gate:
                        return await blocking(fn)
                finally:
                    self._wake()  # once the gate is open
            await self._changed.wait()

    async def _request(self, fn: Callable[[], T]) -> T:
        """Have the thread inside a callback run ``fn``; return what it returned."""
        done = anyio.Event()
        outcome: list[Any] = []

        def reply(error: BaseException | None, result: Any) -> None:
            outcome[:] = [error, result]
            done.set()

        self._requests.put((fn, reply))
        with anyio.CancelScope(shield=True):  # the call runs anyway: wait for its end
            await done.wait()
        error, result = outcome
        if error is not None:
            raise error
        return result  # type: ignore[no-any-return]

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

    def _run_handler(self, handler: Callable[..., Awaitable[T]], *args: Any) -> T:
        """In a callback: run ``handler(*args)`` on the event loop and wait for it,
        meanwhile running the calls into the consumer it asks for (see the module)."""
        outcome: list[Any] = [None, None]

        async def run() -> None:
            try:
                # As librdkafka waits for it whatever happens, so does the event loop.
                with anyio.CancelScope(shield=True):
                    outcome[1] = await handler(*args)
            except Exception as exc:  # raised in this thread, out of librdkafka's poll
                outcome[0] = exc
            finally:
                self._in_callback = False
                self._requests.put(_CALLBACK_DONE)

        def start() -> None:
            assert self._callbacks is not None
            self._in_callback = True
            self._wake()
            self._callbacks.start_soon(run)

        anyio.from_thread.run_sync(start)
        while True:
            item = self._requests.get()
            if item is _CALLBACK_DONE:
                break
            assert isinstance(item, tuple)
            fn, reply = item
            try:
                result, error = fn(), None
            except Exception as exc:
                result, error = None, exc
            anyio.from_thread.run_sync(reply, error, result)
        if outcome[0] is not None:
            raise outcome[0]
        return outcome[1]  # type: ignore[no-any-return]

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
        starts = self._run_handler(self._take, tps, found)
        consumer.assign(
            [
                KafkaTopicPartition(tp.topic, tp.partition, starts.get(tp, OFFSET_STORED))
                for tp in tps
            ]
        )

    def _revoke_callback(self, consumer: Consumer, partitions: list[KafkaTopicPartition]) -> None:
        tps = sorted(TopicPartition(p.topic, p.partition) for p in partitions)
        self._run_handler(self._give_up, tps, False)

    def _lost_callback(self, consumer: Consumer, partitions: list[KafkaTopicPartition]) -> None:
        tps = sorted(TopicPartition(p.topic, p.partition) for p in partitions)
        self._run_handler(self._give_up, tps, True)

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
