"""Writing partitions through librdkafka, returning once the records are acknowledged.

Theory of operation
-------------------
:meth:`Writer.produce` hands one partition's records to librdkafka's queue (a non-blocking
call per record: librdkafka batches, sends and retries in threads of its own) and waits
until the cluster has acknowledged them. Only the *last* record of a call asks for a
delivery report. That is enough because the producer is idempotent with the gapless
guarantee (``enable.idempotence``, ``enable.gapless.guarantee``): records of one
partition are written in the order given, and if any of them fails for good the producer
fails fatally, failing every record after it too. So the last record's success is the
success of all before it, and the per-record cost stays librdkafka's. With ``acks=all``
an acknowledged record is as durable as the cluster makes it (for ``headwater broker``,
the topic's durability policy), which is what lets the runtime commit after it.

Delivery reports are served by a thread of ours that waits on librdkafka's queue
(``poll``, at most ``WAKE_S`` at a time so that it notices a stop); a report sets the
waiting call's event on the event loop. When librdkafka's queue is full
(``BufferError``), the call waits, in a worker thread, for what is queued to drain
(``flush``) and goes on.
"""

from __future__ import annotations

import logging
from typing import Any

import anyio
import anyio.from_thread
import anyio.to_thread
import confluent_kafka as ck
from confluent_kafka import KafkaError

from headwater.store import HeadwaterError

from .._encoding import OutRecords
from .._lineage import SOURCE_HEADER
from ._kafka_errors import cluster_error, log_error

logger = logging.getLogger("headwater.processing")

#: Longest single wait of the delivery thread on librdkafka's queue.
WAKE_S = 0.1
#: How long a full queue is given to drain before trying again.
_DRAIN_S = 1.0


class _Delivery:
    """The outcome of one produce call, set from the delivery thread."""

    __slots__ = ("done", "error")

    def __init__(self) -> None:
        self.done = anyio.Event()
        self.error: KafkaError | None = None

    def report(self, error: KafkaError | None, _message: ck.Message) -> None:
        """librdkafka's delivery report (in the delivery thread)."""
        anyio.from_thread.run_sync(self._set, error)

    def _set(self, error: KafkaError | None) -> None:
        self.error = error
        self.done.set()


class Writer:
    """An idempotent librdkafka producer and its delivery thread (module docstring).

    Run :meth:`run` in a task; :meth:`stop` makes it flush what is queued and return.
    """

    def __init__(self, config: dict[str, Any], bootstrap: str) -> None:
        self._config = {
            **config,
            "acks": "all",
            "enable.idempotence": True,
            "enable.gapless.guarantee": True,
        }
        self._bootstrap = bootstrap
        self._producer: ck.Producer | None = None
        self._stopping = False

    async def run(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Create the producer, then serve delivery reports until :meth:`stop`."""
        self._producer = await anyio.to_thread.run_sync(ck.Producer, self._config)
        task_status.started()
        await anyio.to_thread.run_sync(self._serve, limiter=anyio.CapacityLimiter(1))

    def stop(self) -> None:
        """Ask the delivery thread to flush and return."""
        self._stopping = True

    def _serve(self) -> None:
        producer = self._producer
        assert producer is not None
        while not self._stopping:
            producer.poll(WAKE_S)
        left = producer.flush(30)
        if left:
            logger.warning("%d records were not acknowledged by %s at exit", left, self._bootstrap)

    async def produce(self, topic: str, partition: int, records: OutRecords) -> None:
        """Write ``records`` to one partition, in order; return once acknowledged.

        :raises HeadwaterError: what Kafka's error becomes (``_kafka_errors.py``).
        """
        producer = self._producer
        assert producer is not None
        count = records.count()
        if not count:
            return
        delivery = _Delivery()
        values, keys, timestamps = records.values, records.keys, records.timestamps
        lineage = records.lineage()
        extra = records.headers
        last = count - 1
        produce = producer.produce
        index = 0
        while index < count:
            try:
                for index in range(index, count):  # noqa: B020 - resumes where it stopped
                    headers: list[tuple[str, str | bytes | None]] = [
                        (SOURCE_HEADER, lineage[index])
                    ]
                    if extra is not None and extra[index]:
                        headers += extra[index]
                    produce(  # positional: keywords cost twice as much per record
                        topic,
                        values[index],
                        keys[index],
                        partition,
                        delivery.report if index == last else None,  # callback
                        None,  # on_delivery (the same, under its other name)
                        timestamps[index],
                        headers,
                    )
                index = count
            except BufferError:
                await anyio.to_thread.run_sync(producer.flush, _DRAIN_S)
            except ck.KafkaException as exc:
                raise self._error(exc.args[0], topic, partition) from None
        await delivery.done.wait()
        if delivery.error is not None:
            raise self._error(delivery.error, topic, partition)

    def _error(self, error: KafkaError, topic: str, partition: int) -> HeadwaterError:
        what = f"writing to {topic}/{partition}"
        if error.fatal():
            return cluster_error(error, what, self._bootstrap)
        return log_error(error, what, self._bootstrap)
