"""Reading partitions through librdkafka: one consumer, the one thread that calls it, a
buffer per partition.

Theory of operation
-------------------
A :class:`Fetcher` owns one :class:`confluent_kafka.Consumer`, and one thread of ours,
the *pump*, is the only thread that ever calls it. librdkafka runs a group's rebalance
callbacks inside ``poll``, in the polling thread; and confluent-kafka lets one thread at
a time into a consumer: while the pump waits in ``poll`` or runs a callback, a call from
any other thread waits, and one made on behalf of the callback (the commit of partitions
being revoked) would wait forever. So everything the event loop wants of the consumer --
a commit, the committed offsets, assigning, seeking, pausing, resuming -- is a *request*
queued for the pump (:meth:`Fetcher.call`), which runs it and reports the outcome to the
event loop.

The pump waits on librdkafka's queue (``poll``) at most ``WAKE_S`` at a time, then runs
the requests queued meanwhile: that bounds how long a request, or a stop, waits (the
thread sleeps in librdkafka meanwhile; nothing spins, and librdkafka's wait cannot be
interrupted from another thread). When ``poll`` returns a record the pump takes whatever
else is queued (``consume`` with no wait), splits the records by partition into columns
(``_kafka_chunks.py``) and hands them to the event loop in one call. The event loop keeps
them in a :class:`_Buffer` per partition, in offset order; :meth:`Fetcher.fetch` takes
from the front of its partition's buffer, waiting on the buffer's event when it is
empty. Taking is synchronous, so a cancelled fetch loses nothing. Input order per
partition is librdkafka's, which is the log's.

In a consumer group (``subscribe``), a rebalance callback starts the runtime's handler
on the event loop and, until the handler has finished, serves the requests it makes
(committed offsets, the final commit), so a partition is given up only once its task has
finished and committed, and that commit is made from the callback as librdkafka wants.
Assigned partitions start at the group's committed offset, else at the log start
(``OFFSET_BEGINNING``), where the runtime resumes them too. The committed offsets read
at assignment are kept (:attr:`Fetcher.committed`) and updated by this member's commits:
nobody else commits a partition while this member holds it, so the runtime's question
about them needs no second round trip.

The end of a partition: consumers report it (``enable.partition.eof``), at the offset
librdkafka will fetch next, which lies past transaction markers and aborted records that
no record shows. A buffer keeps the last one reported (forgotten when it moves); a fetch
that finds its buffer empty while that end is past its offset returns no records whose
``offsets`` is ``range(end, end)``, so that its reader steps past what it cannot see
instead of waiting for a record that never comes.

Backpressure: a partition whose buffer holds more than ``HIGH_WATER_BATCHES`` of the
batches its reader asks for is paused in librdkafka (fetching stops) and resumed once the
reader has taken it below that; librdkafka's own queue is bounded by its
``queued.max.messages.kbytes``. A request that moves where librdkafka reads a partition
(assigning it outside a group, seeking) marks its buffer *moving* until the pump has
applied it: what arrives for the partition meanwhile may be from before the move, and
is dropped. Outside a group (a store's restore reads its changelog once, then never
again) a partition that no reader has asked for in ``IDLE_RELEASE_S`` is unassigned and
its buffer dropped, so that librdkafka does not go on fetching it for nobody.
"""

from __future__ import annotations

import collections
import logging
import queue
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import anyio
import anyio.from_thread
import anyio.to_thread
import confluent_kafka as ck
from anyio.abc import TaskGroup, TaskStatus
from confluent_kafka import KafkaError, KafkaException

from headwater.groups import OffsetAndMetadata, PartitionNotAssignedError, TopicPartition
from headwater.store import HeadwaterError, OffsetOutOfRangeError, RecordColumns

from ._kafka_chunks import Chunk, columns, split_messages
from ._kafka_errors import cluster_error, describe, log_error

logger = logging.getLogger("headwater.processing")

T = TypeVar("T")

#: Longest single wait of the pump on librdkafka's queue (see the module docstring).
WAKE_S = 0.1
#: Records taken from librdkafka's queue at once, at most.
CONSUME_BATCH = 10_000
#: A partition is paused once its buffer holds this many of its reader's batches.
HIGH_WATER_BATCHES = 4
#: How long reading the committed offsets of partitions just assigned may take.
COMMITTED_TIMEOUT_S = 30.0
#: Outside a group, a partition nobody asked for in this long is let go (module docstring).
IDLE_RELEASE_S = 30.0
_MIN_HIGH_WATER_BYTES = 1 << 20

#: Called with the partitions concerned (sorted).
PartitionsHandler = Callable[[list[TopicPartition]], Awaitable[None]]
#: Told, on the event loop, how a request ended: (error or None, result).
_Reply = Callable[[BaseException | None, Any], None]
_Request = tuple[Callable[[ck.Consumer], Any], _Reply | None]
#: Queued by a handler that has finished, for the pump waiting in its callback.
_HANDLER_DONE = object()


class _Buffer:
    """What the pump read of one partition and its reader has not taken yet."""

    __slots__ = (
        "chunks", "eof", "error", "high_water", "moving", "next", "paused", "ready", "size",
        "used", "waiting",
    )  # fmt: skip

    def __init__(self, start: int | None) -> None:
        self.chunks: collections.deque[Chunk] = collections.deque()
        self.size = 0
        #: The offset the reader takes next (None: wherever the log starts).
        self.next = start
        self.ready = anyio.Event()
        self.error: HeadwaterError | None = None
        self.paused = False
        self.moving = 0  # moves queued for the pump: what arrives meanwhile may be stale
        self.high_water = _MIN_HIGH_WATER_BYTES
        self.used = anyio.current_time()  # when a reader last asked for it
        self.waiting = 0  # readers waiting for records
        #: Where librdkafka last said the partition ends (past markers; -1: not said).
        self.eof = -1

    def wake(self) -> None:
        self.ready.set()
        self.ready = anyio.Event()

    def end(self) -> int:
        """The offset after what the buffer holds (what must come next)."""
        assert self.next is not None
        return self.chunks[-1].offsets[-1] + 1 if self.chunks else self.next


@dataclass(slots=True)
class GroupHandlers:
    """The runtime's membership callbacks (see :class:`~headwater.processing.Backend`)."""

    on_assigned: PartitionsHandler
    on_revoked: PartitionsHandler
    on_lost: PartitionsHandler
    topics: list[str] = field(default_factory=list)


class Fetcher:
    """One consumer and the pump thread that calls it, with a buffer per partition
    (module docstring).

    In a group (``group`` given) the partitions are the group's assignment; otherwise
    :meth:`fetch` assigns a partition the first time it is asked for. Run :meth:`run` in
    a task; :meth:`stop` (or cancelling it) makes it close the consumer, which leaves the
    group, and return.
    """

    def __init__(
        self, config: dict[str, Any], bootstrap: str, group: GroupHandlers | None = None
    ) -> None:
        self._config = config
        self._bootstrap = bootstrap
        self._group = group
        self._consumer: ck.Consumer | None = None
        self._buffers: dict[TopicPartition, _Buffer] = {}
        self._requests: queue.SimpleQueue[_Request | object] = queue.SimpleQueue()
        self._stopping = False
        self._closed = False
        self._failure: HeadwaterError | None = None
        self._handlers: TaskGroup | None = None
        self._joined = anyio.Event()  # also set when the consumer fails for good or closes
        #: The committed offsets of the partitions this member holds (those that have one).
        self.committed: dict[TopicPartition, OffsetAndMetadata] = {}

    async def wait_joined(self) -> None:
        """Wait until the group's first assignment (possibly empty) has been handled.

        :raises ClusterError: if the consumer failed for good meanwhile.
        :raises anyio.ClosedResourceError: if it was closed first.
        """
        await self._joined.wait()
        self._check_failure()

    def holds(self, tp: TopicPartition) -> bool:
        """Return whether this fetcher reads ``tp`` now."""
        return tp in self._buffers

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Create the consumer, then pump until :meth:`stop` or cancelled.

        :raises ClusterError: if librdkafka refuses the configuration or fails for good.
        """
        try:
            consumer = await anyio.to_thread.run_sync(ck.Consumer, self._config)
            if self._group is not None:  # no other thread has the consumer yet
                topics = self._group.topics
                await anyio.to_thread.run_sync(
                    lambda: consumer.subscribe(
                        topics,
                        on_assign=self._on_assign,
                        on_revoke=self._on_revoke,
                        on_lost=self._on_lost,
                    )
                )
        except KafkaException as exc:
            raise cluster_error(exc.args[0], "starting a consumer", self._bootstrap) from None
        self._consumer = consumer
        async with anyio.create_task_group() as tg:
            self._handlers = tg
            tg.start_soon(self._stop_when_cancelled)
            if self._group is None:
                tg.start_soon(self._release_idle_periodically)
            task_status.started()
            try:
                await anyio.to_thread.run_sync(self._pump, limiter=anyio.CapacityLimiter(1))
            finally:
                self._closed = True
                self._refuse_requests()
                # Nothing more will arrive: whoever still waits is told so.
                self._joined.set()
                for buffer in self._buffers.values():
                    buffer.wake()
            tg.cancel_scope.cancel()

    def stop(self) -> None:
        """Ask the pump to close the consumer and return (within about ``WAKE_S``)."""
        self._stopping = True

    async def _release_idle_periodically(self) -> None:
        while True:
            await anyio.sleep(IDLE_RELEASE_S)
            self.release_idle(anyio.current_time() - IDLE_RELEASE_S)

    def release_idle(self, before: float) -> list[TopicPartition]:
        """Outside a group: let go of the partitions no reader waits for or asked for since
        ``before`` (event loop time); return them. A later fetch assigns one again."""
        idle = [tp for tp, b in self._buffers.items() if not b.waiting and b.used < before]
        for tp in idle:
            del self._buffers[tp]
            self._submit(_unassigning(tp))
        return idle

    async def _stop_when_cancelled(self) -> None:
        try:
            await anyio.sleep_forever()
        finally:
            self._stopping = True

    async def call(self, fn: Callable[[ck.Consumer], T]) -> T:
        """Return ``fn(consumer)``, run by the pump (module docstring).

        Cancelling the wait does not cancel the call. :raises: what ``fn`` raised;
        :class:`anyio.ClosedResourceError` if the consumer is closed.
        """
        if self._closed:
            raise anyio.ClosedResourceError
        done = anyio.Event()
        outcome: list[Any] = []

        def reply(error: BaseException | None, result: Any) -> None:
            outcome[:] = [error, result]
            done.set()

        self._requests.put((fn, reply))
        await done.wait()
        error, result = outcome
        if error is not None:
            raise error
        return result  # type: ignore[no-any-return]

    def _submit(self, fn: Callable[[ck.Consumer], Any], reply: _Reply | None = None) -> None:
        if not self._closed:
            self._requests.put((fn, reply))

    def _refuse_requests(self) -> None:
        while True:
            try:
                item = self._requests.get_nowait()
            except queue.Empty:
                return
            if isinstance(item, tuple) and item[1] is not None:
                item[1](anyio.ClosedResourceError(), None)

    # -- the pump (its own thread) -----------------------------------------------------

    def _pump(self) -> None:
        consumer = self._consumer
        assert consumer is not None
        try:
            try:
                while not self._stopping:
                    self._serve_queued(consumer)
                    first = consumer.poll(WAKE_S)
                    if first is None:
                        continue
                    messages = [first, *consumer.consume(CONSUME_BATCH, 0)]
                    chunks, errors = split_messages(messages)
                    anyio.from_thread.run_sync(self._deliver, chunks, errors)
            finally:
                consumer.close()  # leaves the group: a last on_revoke runs in this thread
        except KafkaException as exc:
            raise cluster_error(exc.args[0], "reading", self._bootstrap) from None

    def _serve_queued(self, consumer: ck.Consumer) -> None:
        while True:
            try:
                item = self._requests.get_nowait()
            except queue.Empty:
                return
            assert isinstance(item, tuple), "a handler finished outside its callback"
            self._execute(consumer, item)

    @staticmethod
    def _execute(consumer: ck.Consumer, request: _Request) -> None:
        fn, reply = request
        try:
            result, error = fn(consumer), None
        except Exception as exc:
            result, error = None, exc
        if reply is not None:
            anyio.from_thread.run_sync(reply, error, result)
        elif error is not None:
            logger.warning("a request to the consumer failed: %s", error)

    def _run_handler(self, handler: PartitionsHandler, tps: list[TopicPartition]) -> None:
        """In a rebalance callback: run ``handler(tps)`` on the event loop, serving its
        requests until it has finished."""
        consumer = self._consumer
        assert consumer is not None
        anyio.from_thread.run_sync(self._start_handler, handler, tps)
        while True:
            item = self._requests.get()
            if item is _HANDLER_DONE:
                return
            assert isinstance(item, tuple)
            self._execute(consumer, item)

    def _on_assign(self, consumer: ck.Consumer, partitions: list[ck.TopicPartition]) -> None:
        committed = (
            consumer.committed(partitions, timeout=COMMITTED_TIMEOUT_S) if partitions else []
        )
        beginning = ck.OFFSET_BEGINNING
        starts = [
            ck.TopicPartition(c.topic, c.partition, c.offset if c.offset >= 0 else beginning)
            for c in committed
        ]
        consumer.assign(starts)
        if starts:
            consumer.resume(starts)  # one paused under an earlier assignment reads again
        found = {
            TopicPartition(c.topic, c.partition): OffsetAndMetadata(c.offset, c.metadata or "")
            for c in committed
            if c.offset >= 0
        }
        tps = sorted(TopicPartition(s.topic, s.partition) for s in starts)
        anyio.from_thread.run_sync(self._hold, tps, found)
        assert self._group is not None
        if tps:
            self._run_handler(self._group.on_assigned, tps)
        anyio.from_thread.run_sync(self._joined.set)

    def _on_revoke(self, consumer: ck.Consumer, partitions: list[ck.TopicPartition]) -> None:
        assert self._group is not None
        self._give_up(self._group.on_revoked, partitions)
        consumer.unassign()

    def _on_lost(self, consumer: ck.Consumer, partitions: list[ck.TopicPartition]) -> None:
        assert self._group is not None
        self._give_up(self._group.on_lost, partitions)
        consumer.unassign()

    def _give_up(self, handler: PartitionsHandler, partitions: list[ck.TopicPartition]) -> None:
        tps = sorted(TopicPartition(p.topic, p.partition) for p in partitions)
        held = anyio.from_thread.run_sync(lambda: [tp for tp in tps if tp in self._buffers])
        try:
            if held:
                self._run_handler(handler, held)
        finally:
            anyio.from_thread.run_sync(self._release, held)

    # -- on the event loop -------------------------------------------------------------

    def _start_handler(self, handler: PartitionsHandler, tps: list[TopicPartition]) -> None:
        assert self._handlers is not None

        async def handle() -> None:
            try:
                await handler(tps)
            finally:
                self._requests.put(_HANDLER_DONE)

        self._handlers.start_soon(handle)

    def _hold(
        self, tps: list[TopicPartition], committed: dict[TopicPartition, OffsetAndMetadata]
    ) -> None:
        for tp in tps:
            found = committed.get(tp)
            self._buffers[tp] = _Buffer(None if found is None else found.offset)
        self.committed.update(committed)

    def _release(self, tps: list[TopicPartition]) -> None:
        for tp in tps:
            self.committed.pop(tp, None)
            buffer = self._buffers.pop(tp, None)
            if buffer is not None:
                buffer.error = PartitionNotAssignedError(f"{tp.topic}/{tp.partition} was given up")
                buffer.wake()

    def _deliver(self, chunks: dict[TopicPartition, list[Chunk]], errors: list[ck.Message]) -> None:
        """Buffer what the pump read."""
        for tp, parts in chunks.items():
            buffer = self._buffers.get(tp)
            if buffer is None or buffer.moving:
                continue  # given up, or read from before a move
            for part in parts:
                kept = part if buffer.next is None else part.drop_before(buffer.end())
                if kept is not None:
                    buffer.chunks.append(kept)
                    buffer.size += kept.size
            if buffer.chunks:
                buffer.wake()
                if buffer.size >= buffer.high_water and not buffer.paused:
                    buffer.paused = True
                    self._submit(_pausing(tp, pause=True))
        for message in errors:
            self._event(message)

    def _event(self, message: ck.Message) -> None:
        error: KafkaError = message.error()  # type: ignore[assignment]
        topic, partition = message.topic(), message.partition()
        if error.fatal():
            self._failure = cluster_error(error, "reading", self._bootstrap)
            self._joined.set()
            for held in self._buffers.values():
                held.wake()
            return
        if topic and partition is not None and partition >= 0:
            buffer = self._buffers.get(TopicPartition(topic, partition))
            if error.code() == KafkaError._PARTITION_EOF:
                offset = message.offset()
                if buffer is not None and not buffer.moving and offset is not None:
                    buffer.eof = offset
                    buffer.wake()
                return
            if buffer is not None and error.code() in (
                KafkaError._AUTO_OFFSET_RESET,
                KafkaError.OFFSET_OUT_OF_RANGE,
            ):
                buffer.error = OffsetOutOfRangeError(f"{topic}/{partition}: {describe(error)}")
                buffer.wake()
                return
        logger.warning("reading from %s: %s", self._bootstrap, describe(error))

    # -- the reader's side -------------------------------------------------------------

    async def fetch(self, tp: TopicPartition, offset: int, max_bytes: int) -> RecordColumns:
        """Return records of ``tp`` from ``offset`` on (about ``max_bytes``), waiting for one.

        If librdkafka has said the partition ends past ``offset`` and nothing is buffered
        (what lies between is transaction markers and aborted records), return no
        records, whose ``offsets`` is ``range(end, end)``: read on from ``end``.

        :raises OffsetOutOfRangeError: if ``offset`` is outside the log.
        :raises PartitionNotAssignedError: if the partition is not this member's, or is
            given up meanwhile.
        :raises ClusterError: if the consumer failed for good.
        :raises anyio.ClosedResourceError: if the consumer is closed (or closes meanwhile).
        """
        self._check_failure()
        buffer = self._buffers.get(tp)
        if buffer is None:
            if self._group is not None:
                raise PartitionNotAssignedError(f"{tp.topic}/{tp.partition} is not assigned here")
            buffer = self._buffers[tp] = _Buffer(offset)
            self._move(tp, buffer, offset, first=True)
        elif buffer.next is None:
            buffer.next = offset
            self._trim(buffer, offset)
        elif offset != buffer.next:
            self._move(tp, buffer, offset, first=False)
        buffer.high_water = max(HIGH_WATER_BATCHES * max_bytes, _MIN_HIGH_WATER_BYTES)
        buffer.used = anyio.current_time()
        buffer.waiting += 1
        try:
            while not buffer.chunks:
                self._check_failure()
                error, buffer.error = buffer.error, None
                if error is not None:
                    raise error
                if buffer.next is not None and buffer.eof > buffer.next and not buffer.moving:
                    buffer.next = buffer.eof
                    return RecordColumns(range(buffer.eof, buffer.eof), [], [], [], [])
                await buffer.ready.wait()
        finally:
            buffer.waiting -= 1
        return self._take(tp, buffer, max_bytes)

    def _check_failure(self) -> None:
        if self._failure is not None:
            raise self._failure
        if self._closed:
            raise anyio.ClosedResourceError

    @staticmethod
    def _trim(buffer: _Buffer, offset: int) -> None:
        kept = [c for c in (c.drop_before(offset) for c in buffer.chunks) if c is not None]
        buffer.chunks = collections.deque(kept)
        buffer.size = sum(c.size for c in kept)

    def _move(self, tp: TopicPartition, buffer: _Buffer, offset: int, *, first: bool) -> None:
        """Have librdkafka read ``tp`` from ``offset`` on: assign it (``first``) or seek."""
        buffer.chunks.clear()
        buffer.size = 0
        buffer.next = offset
        buffer.eof = -1
        buffer.error = None
        buffer.moving += 1
        target = ck.TopicPartition(tp.topic, tp.partition, offset)

        def move(consumer: ck.Consumer) -> None:
            if first:
                consumer.incremental_assign([target])
            else:
                consumer.seek(target)
            if buffer.paused:
                consumer.resume([target])

        def moved(error: BaseException | None, _result: object) -> None:
            buffer.moving -= 1
            buffer.paused = False
            if isinstance(error, KafkaException):
                what = f"reading {tp.topic}/{tp.partition} from offset {offset}"
                buffer.error = log_error(error.args[0], what, self._bootstrap)
                buffer.wake()
            elif error is not None:
                buffer.error = cluster_error(
                    KafkaError(KafkaError._FAIL, str(error)), "reading", self._bootstrap
                )
                buffer.wake()

        self._submit(move, moved)

    def _take(self, tp: TopicPartition, buffer: _Buffer, max_bytes: int) -> RecordColumns:
        chunks = buffer.chunks
        taken = [chunks.popleft()]
        size = taken[0].size
        while chunks and size + chunks[0].size <= max_bytes:
            taken.append(chunks.popleft())
            size += taken[-1].size
        if len(taken) == 1 and size > max_bytes:
            first, rest = taken[0].split_at_bytes(max_bytes)
            if rest is not None:
                chunks.appendleft(rest)
                taken, size = [first], first.size
        buffer.size -= size
        records = columns(taken)
        buffer.next = records.offsets[-1] + 1
        if buffer.paused and buffer.size < buffer.high_water:
            buffer.paused = False
            self._submit(_pausing(tp, pause=False))
        return records


def _unassigning(tp: TopicPartition) -> Callable[[ck.Consumer], None]:
    """Return a request that stops reading ``tp`` (outside a group)."""
    partitions = [ck.TopicPartition(tp.topic, tp.partition)]

    def request(consumer: ck.Consumer) -> None:
        consumer.incremental_unassign(partitions)

    return request


def _pausing(tp: TopicPartition, *, pause: bool) -> Callable[[ck.Consumer], None]:
    """Return a request that pauses (or resumes) fetching ``tp``."""
    partitions = [ck.TopicPartition(tp.topic, tp.partition)]

    def request(consumer: ck.Consumer) -> None:
        if pause:
            consumer.pause(partitions)
        else:
            consumer.resume(partitions)

    return request
