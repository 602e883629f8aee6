"""The log commands over the Kafka protocol: ``headwater broker`` or a Kafka cluster.

Theory of operation
-------------------
Everything goes through confluent-kafka (librdkafka; see ``_kafka_client.py`` for how its
blocking calls meet the event loop). The results match the data-directory
implementation's (``_local.py``):

* a writer places keyed records with ``murmur2_random``, the Java client's partitioner
  (and the store's), and unkeyed ones on one partition per append (the store's
  :class:`~headwater.store.StickyPartitioner`); it acknowledges a record once the broker
  has (``acks=all``, idempotent, so a retry never duplicates);
* a reader takes one partition after another, each from its start up to the end it had
  when the read began (its high watermark then), then -- to follow -- all at once;
* a group member (``_kafka_groups.py``) subscribes, starts uncommitted partitions where
  ``--from`` says, and commits synchronously what the sink took.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import AsyncIterator, Sequence
from typing import cast

from anyio.from_thread import check_cancelled
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition

from headwater.broker import BrokerResponseError
from headwater.processing.kafka_client import TIMEOUT_S, blocking, finish
from headwater.store import (
    IsolationLevel,
    NewRecord,
    Record,
    StickyPartitioner,
    TopicNotFoundError,
)

from ._access import GroupAdmin, RecordLookup, RecordSink, TopicWriter
from ._kafka_client import (
    POLL_S,
    Cluster,
    kafka_failure,
    poll_batch,
    runs,
)
from ._kafka_groups import KafkaGroups, read_group
from ._start import Start
from ._store_reads import not_found, out_of_range

#: Kafka's default ``max.message.bytes``; the broker checks the topic's own.
DEFAULT_MAX_MESSAGE_BYTES = 1048588


class KafkaAccess:
    """A log behind a Kafka-protocol broker (see the module docstring).

    :param bootstrap: ``HOST:PORT`` of a broker of the cluster.
    :param description: what to call it in messages (default: ``the broker at HOST:PORT``).
    :raises click.BadParameter: if it is not ``HOST:PORT``.
    """

    def __init__(self, bootstrap: str, description: str | None = None) -> None:
        self.cluster = Cluster(bootstrap, description)

    @property
    def description(self) -> str:
        """``the broker at HOST:PORT``, or the description given."""
        return self.cluster.description

    @contextlib.asynccontextmanager
    async def writer(
        self, topic: str, *, delivery_timeout_s: float | None = None
    ) -> AsyncIterator[TopicWriter]:
        """Look ``topic`` up, then produce to it (see :meth:`LogAccess.writer`).

        ``delivery_timeout_s`` bounds how long a record may wait for the broker to take
        it (librdkafka's ``message.timeout.ms``; by default its own, five minutes).
        """
        cluster = self.cluster
        timeout = (
            {}
            if delivery_timeout_s is None
            else {"message.timeout.ms": int(delivery_timeout_s * 1000)}
        )
        probe = cluster.reader_consumer()
        try:
            partitions = await blocking(cluster.partition_count, probe, topic)
        finally:
            await finish(probe.close)
        producer = Producer(
            cluster.config(
                **{
                    "client.id": "headwater-produce",
                    "enable.idempotence": True,
                    "acks": "all",
                    "partitioner": "murmur2_random",
                    "linger.ms": 5,
                    **timeout,
                }
            )
        )
        try:
            yield _KafkaWriter(producer, topic, partitions)
        finally:
            await finish(producer.flush, TIMEOUT_S)

    async def read(
        self,
        topic: str,
        *,
        partition: int | None,
        start: Start,
        follow: bool,
        sink: RecordSink,
        positions: dict[int, int] | None = None,
        isolation: IsolationLevel = IsolationLevel.READ_UNCOMMITTED,
    ) -> None:
        """Deliver ``topic``'s records from ``start`` (see :meth:`LogAccess.read`).

        ``positions`` (each partition's next offset) is updated as records are delivered;
        given filled in, the read goes on from there instead of ``start``, following
        every partition at once (a follower that reached the log another way before).
        """
        positions = {} if positions is None else positions
        cluster = self.cluster
        # librdkafka's own default is read_committed: say which one is meant.
        level = isolation.name.lower()
        consumer = cluster.reader_consumer(**{"isolation.level": level})
        try:
            count = await blocking(cluster.partition_count, consumer, topic)
            if partition is not None and partition >= count:
                raise TopicNotFoundError(
                    f"topic {topic!r} has no partition {partition} (it has {count})"
                )
            if not positions:
                indexes = list(range(count)) if partition is None else [partition]
                bounds = await blocking(cluster.bounds, consumer, topic, indexes, start)
                positions.update({p: position for p, (position, _) in bounds.items()})
                for p in indexes:
                    end = bounds[p][1]
                    if positions[p] < end and not sink.done():
                        await deliver(consumer, topic, positions, [p], ends={p: end}, sink=sink)
            if follow and not sink.done():
                await deliver(consumer, topic, positions, list(positions), ends=None, sink=sink)
        finally:
            await finish(consumer.close)

    async def read_group(
        self,
        topic: str,
        group: str,
        *,
        start: Start,
        follow: bool,
        sink: RecordSink,
        isolation: IsolationLevel = IsolationLevel.READ_UNCOMMITTED,
    ) -> None:
        """Read as a member of ``group`` (see :meth:`LogAccess.read_group`)."""
        await read_group(
            self.cluster,
            topic,
            group,
            start=start,
            follow=follow,
            sink=sink,
            isolation=isolation,
        )

    @contextlib.asynccontextmanager
    async def lookup(self) -> AsyncIterator[RecordLookup]:
        """Read single records with an assigning consumer."""
        consumer = self.cluster.reader_consumer()
        try:
            yield _KafkaLookup(self.cluster, consumer)
        finally:
            await finish(consumer.close)

    @contextlib.asynccontextmanager
    async def groups(self, *, writer: bool) -> AsyncIterator[GroupAdmin]:
        """The cluster's consumer groups, through its admin API."""
        probe = self.cluster.reader_consumer()
        try:  # an unreachable cluster fails here at once, not after each admin call's timeout
            await blocking(self.cluster.metadata, probe)
        finally:
            await finish(probe.close)
        yield KafkaGroups(self.cluster)


class _KafkaWriter:
    def __init__(self, producer: Producer, topic: str, partitions: int) -> None:
        self._producer = producer
        # Unkeyed records stick to one partition per append, as the store places them
        # (librdkafka's own stickiness lasts a time, not a batch).
        self._sticky = StickyPartitioner()
        self._topic = topic
        self.partitions = partitions
        self.max_message_bytes = DEFAULT_MAX_MESSAGE_BYTES

    async def append(
        self, records: Sequence[NewRecord], partition: int | None
    ) -> list[tuple[int, int]]:
        if partition is not None and partition >= self.partitions:
            raise TopicNotFoundError(
                f"topic {self._topic!r} has no partition {partition} (it has {self.partitions})"
            )
        placed: list[tuple[int, int]] = [(-1, -1)] * len(records)
        failures: list[KafkaError] = []
        await blocking(self._produce, records, partition, placed, failures)
        if failures:
            failure = kafka_failure(f"producing to topic {self._topic!r}", failures[0])
            if failures[0].code() == KafkaError.TOPIC_EXCEPTION:
                # librdkafka keeps the broker's words to itself; say what Kafka means.
                raise BrokerResponseError(
                    f"{failure} (the broker takes no records for this topic from clients: "
                    "an internal one, such as __consumer_offsets?)",
                    failure.code,
                )
            raise failure
        return placed

    def _produce(
        self,
        records: Sequence[NewRecord],
        partition: int | None,
        placed: list[tuple[int, int]],
        failures: list[KafkaError],
    ) -> None:
        def delivered(index: int, error: KafkaError | None, message: Message) -> None:
            if error is not None:
                failures.append(error)
            else:
                placed[index] = (cast(int, message.partition()), cast(int, message.offset()))

        producer, topic = self._producer, self._topic
        unkeyed = self._sticky.partition(topic, self.partitions) if partition is None else partition
        try:
            for index, record in enumerate(records):
                # -1: the murmur2 partitioner places the keyed records.
                target = unkeyed if partition is not None or record.key is None else -1
                while True:
                    try:
                        producer.produce(
                            topic,
                            record.value,
                            record.key,
                            partition=target,
                            headers=list(record.headers) or None,
                            timestamp=record.timestamp or 0,
                            on_delivery=functools.partial(delivered, index),
                        )
                        break
                    except BufferError:  # the local queue is full: let deliveries drain it
                        producer.poll(POLL_S)
                        check_cancelled()
            while producer.flush(POLL_S):
                check_cancelled()
        except BaseException:
            # Cancelled (the broker they went to is gone): what is queued will not be
            # taken, and must not hold up closing the producer.
            producer.purge()
            raise
        if partition is None:
            self._sticky.batch_complete(topic, unkeyed, self.partitions)


async def deliver(
    consumer: Consumer,
    topic: str,
    positions: dict[int, int],
    partitions: list[int],
    *,
    ends: dict[int, int] | None,
    sink: RecordSink,
) -> None:
    """Assign ``partitions`` at their ``positions`` and deliver records into ``sink``,
    moving ``positions`` past each delivery.

    With ``ends``, stop once every partition is at its end (or at the end of its log);
    without, go on until the sink is done or the task is cancelled.
    """
    await blocking(consumer.assign, [TopicPartition(topic, p, positions[p]) for p in partitions])
    pending = set(partitions) if ends is None else {p for p in partitions if positions[p] < ends[p]}
    while pending and not sink.done():
        messages = await blocking(poll_batch, consumer)
        for p, records, at_end in runs(messages, topic):
            if ends is not None:
                records = [r for r in records if r.offset < ends[p]]
            if records:
                taken = sink.write(p, records)
                positions[p] = (records[taken].offset if taken < len(records) else
                                records[-1].offset + 1)  # fmt: skip
                if sink.done():
                    break
            if ends is not None and (at_end or positions[p] >= ends[p]):
                pending.discard(p)


class _KafkaLookup:
    def __init__(self, cluster: Cluster, consumer: Consumer) -> None:
        self._cluster = cluster
        self._consumer = consumer

    async def record(self, topic: str, partition: int, offset: int) -> Record | str:
        return await blocking(self._record, topic, partition, offset)

    def _record(self, topic: str, partition: int, offset: int) -> Record | str:
        consumer = self._consumer
        try:
            count = self._cluster.partition_count(consumer, topic)
        except TopicNotFoundError:
            return f"no topic {topic!r} (deleted?)"
        if partition >= count:
            return f"topic {topic!r} has no partition {partition} (it has {count})"
        try:
            low, high = consumer.get_watermark_offsets(
                TopicPartition(topic, partition), timeout=TIMEOUT_S
            )
        except KafkaException as exc:
            raise kafka_failure(f"listing the offsets of {topic}/{partition}", exc) from None
        if not low <= offset < high:
            return out_of_range(topic, partition, offset, low, high)
        consumer.assign([TopicPartition(topic, partition, offset)])
        try:
            for _ in range(int(TIMEOUT_S / POLL_S)):
                for p, records, at_end in runs(poll_batch(consumer), topic):
                    if p != partition:
                        continue
                    if at_end or records[0].offset != offset:
                        return not_found(topic, partition, offset)
                    return records[0]
        finally:
            consumer.unassign()
        raise BrokerResponseError(
            f"reading {topic}/{partition}/{offset} from {self._cluster.description} timed out",
            KafkaError._TIMED_OUT,
        )
