"""Writing partitions through librdkafka, returning once the records are acknowledged.

Theory of operation
-------------------
:meth:`Writer.produce` hands one partition's records to librdkafka's queue (a non-blocking
call per record: librdkafka batches, sends and retries in threads of its own) and waits
until the cluster has acknowledged every one of them. The producer is idempotent
(``enable.idempotence``): retries neither reorder nor duplicate records, so a
partition's records are written once, in the order given. With ``acks=all`` an
acknowledged record is as durable as the cluster makes it (for ``headwater broker``, the
topic's durability policy), which is what lets the runtime commit after it.

Every record asks for a delivery report (watching only the last one would not do: a
record that timed out may leave a gap that later records do not show). A call's reports
are counted down in the delivery thread; once they are all in, the call is woken on the
event loop, with the first error if any record failed, together with the other calls
that finished in the same ``poll``: one trip to the event loop per ``poll``, not per
call. The delivery thread is the only one that serves librdkafka's queue (``poll``, at
most ``WAKE_S`` at a time so that it notices a stop), so the counts need no lock. When
librdkafka's queue is full (``BufferError``), the call waits until the delivery thread
has served reports (records left the queue) and goes on.

Transactions (``transactional_id`` given, for an exactly-once run): the producer is
librdkafka's transactional producer, one per process as in Kafka Streams' "eos-v2".
:meth:`Writer.run` fences older producers of the same transactional id (aborting what
they left open) and begins a transaction; every write then belongs to the open
transaction until :meth:`Writer.commit` sends the consumer group's offsets into it
(``send_offsets_to_transaction``, with the group member's metadata, so that a member
fenced by a rebalance cannot commit) and commits it, or :meth:`Writer.abort` aborts it;
either begins the next. The runtime calls them only when no write is in flight (it holds
every task's lock), so librdkafka's flush inside the commit has nothing to wait for but
what was acknowledged already. A retriable failure of a commit is retried (librdkafka
allows calling it again); one that needs an abort aborts, then raises
:class:`TransactionAbortedError`; a fatal one (the producer was fenced) raises
:class:`ProducerFencedError`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import anyio
import anyio.from_thread
import anyio.to_thread
import confluent_kafka as ck
from confluent_kafka import KafkaError

from headwater.store import HeadwaterError

from .._encoding import OutRecords
from .._errors import ProducerFencedError, TransactionAbortedError
from .._lineage import SOURCE_HEADER
from ._kafka_errors import cluster_error, log_error

logger = logging.getLogger("headwater.processing")

#: Longest single wait of the delivery thread on librdkafka's queue.
WAKE_S = 0.1
#: How long closing waits for records still queued (no call waits for them any more).
_CLOSE_FLUSH_S = 5.0


#: How long one transactional call (init, send offsets, commit, abort) may take.
_TXN_TIMEOUT_S = 30.0
#: The codes that say another producer of the transactional id took over (``_FATAL``:
#: a call refused because the producer failed for good earlier, which for a
#: transactional producer is being fenced unless the cluster misbehaves).
_FENCED = (
    KafkaError._FENCED,
    KafkaError.PRODUCER_FENCED,
    KafkaError.INVALID_PRODUCER_EPOCH,
    KafkaError._FATAL,
)


def _retrying(call: Callable[[], None]) -> None:
    """Run a transactional call, again while librdkafka says a retry may succeed (its
    own timeout bounds each attempt; the attempts are bounded here)."""
    for attempt in range(_TXN_ATTEMPTS):
        try:
            call()
            return
        except ck.KafkaException as exc:
            if not exc.args[0].retriable() or attempt == _TXN_ATTEMPTS - 1:
                raise


_TXN_ATTEMPTS = 5


class _Delivery:
    """The outcome of one produce call: its records' reports, counted down in the delivery
    thread."""

    __slots__ = ("done", "error", "last_offset", "left", "writer")

    def __init__(self, count: int, writer: Writer) -> None:
        self.done = anyio.Event()
        self.error: KafkaError | None = None
        self.left = count
        self.writer = writer
        #: The offset of the call's last record (a partition's reports come in order).
        self.last_offset = -1

    def report(self, error: KafkaError | None, message: ck.Message) -> None:
        """librdkafka's delivery report of one record (in the delivery thread)."""
        if error is not None and self.error is None:
            self.error = error
        self.left -= 1
        if self.left == 0:
            offset = message.offset()
            self.last_offset = -1 if offset is None else offset
            self.writer.finished.append(self)


class Writer:
    """An idempotent librdkafka producer and its delivery thread (module docstring).

    Run :meth:`run` in a task; :meth:`stop` makes it flush what is queued and return.
    """

    def __init__(
        self,
        config: dict[str, Any],
        bootstrap: str,
        *,
        transactional_id: str | None = None,
        transaction_timeout_ms: int = 60_000,
    ) -> None:
        self._config = {
            **config,
            "acks": "all",
            "enable.idempotence": True,
        }
        self.transactional = transactional_id is not None
        if transactional_id is not None:
            self._config["transactional.id"] = transactional_id
            self._config["transaction.timeout.ms"] = transaction_timeout_ms
        #: How many transactions were committed, and how long their commits took (s).
        self.commits = 0
        self.commit_seconds = 0.0
        self._bootstrap = bootstrap
        self._producer: ck.Producer | None = None
        self._stopping = False
        self._room = anyio.Event()  # set when librdkafka's queue has room again
        self._room_wanted = False  # a call waits for room (read by the delivery thread)
        #: Calls whose records are all reported, to wake (only the delivery thread uses it).
        self.finished: list[_Delivery] = []
        #: Calls waiting for their reports (event loop only), and why none will come.
        self._waiting: set[_Delivery] = set()
        self._failure: KafkaError | None = None
        #: Per (topic, partition), the offset after the last record this producer wrote
        #: there (event loop only).
        self.written_ends: dict[tuple[str, int], int] = {}

    async def run(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Create the producer, then serve delivery reports until :meth:`stop`."""
        self._producer = await anyio.to_thread.run_sync(ck.Producer, self._config)
        if self.transactional:
            producer = self._producer

            def begin() -> None:
                producer.init_transactions(_TXN_TIMEOUT_S)
                producer.begin_transaction()

            try:
                await anyio.to_thread.run_sync(begin)
            except ck.KafkaException as exc:
                raise self._txn_error(exc.args[0], "starting transactions") from None
        task_status.started()
        await anyio.to_thread.run_sync(self._serve, limiter=anyio.CapacityLimiter(1))

    def stop(self) -> None:
        """Ask the delivery thread to flush and return."""
        self._stopping = True

    def _serve(self) -> None:
        producer = self._producer
        assert producer is not None
        try:
            while not self._stopping:
                if producer.poll(WAKE_S):
                    self._wake()
            # Every call that returned waited for its records: what is left belongs to
            # calls that were cancelled or failed, whose inputs are not committed. A short
            # wait only.
            left = producer.flush(_CLOSE_FLUSH_S)
        except ck.KafkaException as exc:
            # A transactional producer in a fatal state (fenced) raises it from here too:
            # no report will come any more, so the calls still waiting fail with it.
            left = len(producer)
            self._failure = exc.args[0]
            anyio.from_thread.run_sync(self._fail_waiting)
        self._wake()
        if left:
            logger.warning("%d records were not acknowledged by %s at exit", left, self._bootstrap)

    def _wake(self) -> None:
        """Wake, in one trip to the event loop, the calls whose records are all reported,
        and those waiting for room (reports were served: records left the queue)."""
        finished, room = self.finished, self._room_wanted
        if room:
            self._room_wanted = False
        if finished or room:
            self.finished = []
            anyio.from_thread.run_sync(self._woken, finished, room)

    def failure(self) -> KafkaError | None:
        """Why the producer failed for good (its delivery thread stopped), if it did."""
        return self._failure

    def _fail_waiting(self) -> None:
        for delivery in self._waiting:
            if delivery.error is None:
                delivery.error = self._failure
            delivery.done.set()
        self._room.set()

    def _woken(self, finished: list[_Delivery], room: bool) -> None:
        for delivery in finished:
            delivery.done.set()
        if room:  # wake every call waiting for room; later ones wait on a new event
            self._room.set()
            self._room = anyio.Event()

    async def produce(self, topic: str, partition: int, records: OutRecords) -> None:
        """Write ``records`` to one partition, in order; return once acknowledged.

        :raises HeadwaterError: what Kafka's error becomes (``_kafka_errors.py``).
        """
        producer = self._producer
        assert producer is not None
        count = records.count()
        if not count:
            return
        if self._failure is not None:
            raise self._error(self._failure, topic, partition)
        delivery = _Delivery(count, self)
        report = delivery.report
        lineage = records.lineage()
        headers: list[list[tuple[str, str | bytes | None]]]
        if records.headers is None:
            headers = [[(SOURCE_HEADER, source)] for source in lineage]
        else:
            headers = [
                [(SOURCE_HEADER, source), *more]
                for source, more in zip(lineage, records.headers, strict=True)
            ]
        rows = zip(records.values, records.keys, records.timestamps, headers, strict=True)
        produce = producer.produce
        pending: tuple[bytes | None, bytes | None, int, list[Any]] | None = None
        while True:
            try:
                if pending is not None:  # the record that found the queue full
                    produce(topic, pending[0], pending[1], partition, report, None, *pending[2:])
                    pending = None
                for value, key, timestamp, header in rows:
                    # Positional: keywords cost twice as much per record. The 5th is the
                    # callback, the 6th its other name (on_delivery).
                    produce(topic, value, key, partition, report, None, timestamp, header)
                break
            except BufferError:  # librdkafka's queue is full: wait for room
                pending = (value, key, timestamp, header)
                self._room_wanted = True
                await self._room.wait()
                failure = self.failure()
                if failure is not None:
                    raise self._error(failure, topic, partition) from None
            except ck.KafkaException as exc:
                raise self._error(exc.args[0], topic, partition) from None
        self._waiting.add(delivery)
        failure = self.failure()  # read afresh: it may have failed while this call waited
        if failure is not None:  # and then no report comes
            delivery.error = delivery.error or failure
            delivery.done.set()
        try:
            await delivery.done.wait()
        finally:
            self._waiting.discard(delivery)
        if delivery.error is not None:
            raise self._error(delivery.error, topic, partition)
        if delivery.last_offset >= 0:
            written = (topic, partition)
            end = delivery.last_offset + 1
            self.written_ends[written] = max(self.written_ends.get(written, 0), end)

    # -- transactions ------------------------------------------------------------------

    async def commit(self, offsets: list[ck.TopicPartition], group_metadata: object) -> None:
        """Send ``offsets`` (with their metadata) into the open transaction for the group
        whose member gave ``group_metadata``, commit the transaction, begin the next.

        :raises TransactionAbortedError: if it could not commit (it was aborted).
        :raises ProducerFencedError: if another producer of the transactional id took over.
        :raises ClusterError: if the cluster failed otherwise.
        """
        producer = self._producer
        assert producer is not None and self.transactional

        def commit() -> None:
            if offsets:
                _retrying(
                    lambda: producer.send_offsets_to_transaction(
                        offsets, group_metadata, _TXN_TIMEOUT_S
                    )
                )
            _retrying(lambda: producer.commit_transaction(_TXN_TIMEOUT_S))
            producer.begin_transaction()

        started = time.perf_counter()
        try:
            await anyio.to_thread.run_sync(commit)
        except ck.KafkaException as exc:
            error: KafkaError = exc.args[0]
            if error.txn_requires_abort():
                await self.abort()
                raise TransactionAbortedError(
                    f"committing a transaction on {self._bootstrap} failed, so it was "
                    f"aborted: {error.str()}"
                ) from None
            raise self._txn_error(error, "committing a transaction") from None
        self.commits += 1
        self.commit_seconds += time.perf_counter() - started

    async def abort(self) -> None:
        """Abort the open transaction (its writes are never visible to read_committed
        readers) and begin the next.

        :raises ProducerFencedError: if another producer of the transactional id took over.
        :raises ClusterError: if the cluster failed otherwise.
        """
        producer = self._producer
        assert producer is not None and self.transactional

        def abort() -> None:
            _retrying(lambda: producer.abort_transaction(_TXN_TIMEOUT_S))
            producer.begin_transaction()

        try:
            await anyio.to_thread.run_sync(abort)
        except ck.KafkaException as exc:
            raise self._txn_error(exc.args[0], "aborting a transaction") from None

    def _txn_error(self, error: KafkaError, what: str) -> HeadwaterError:
        if error.code() in _FENCED or error.fatal():
            return ProducerFencedError(
                f"{what} on {self._bootstrap}: this worker's transactional producer was "
                f"fenced (another worker with its transactional id took over): {error.str()}"
            )
        return cluster_error(error, what, self._bootstrap)

    def _error(self, error: KafkaError, topic: str, partition: int) -> HeadwaterError:
        what = f"writing to {topic}/{partition}"
        if self.transactional and (error.code() in _FENCED or error.fatal()):
            return self._txn_error(error, what)
        if error.fatal():
            return cluster_error(error, what, self._bootstrap)
        return log_error(error, what, self._bootstrap)
