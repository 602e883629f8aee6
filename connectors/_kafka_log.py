"""The log of a Kafka-protocol cluster (``headwater broker``, or Kafka), as connectors use it.

Theory of operation
-------------------
Everything goes through confluent-kafka (librdkafka). Its calls block, and its delivery
callbacks run in whichever thread polls, so every call runs in a worker thread
(``blocking`` of :mod:`headwater.processing.kafka_client`, which :class:`KafkaCluster`
builds on) and callbacks only record what happened.

:class:`KafkaLog` is a :class:`~headwater.connectors.ConnectorLog`. An append places the
records as :class:`~headwater.connectors.StoreLog` does (unkeyed ones all on one
partition per append, keyed ones on their murmur2 partition, computed here so that both
logs agree), produces them with ``acks=all`` and idempotence (a retry inside librdkafka
never writes a record twice), and returns once the cluster has acknowledged every one,
with the offsets it assigned. A record the cluster refuses for good raises the store's
error for it (no such topic, too large); any other failure, after librdkafka's own
retries for ``TIMEOUT_S``, raises :class:`LogUnavailableError`, which connectors retry
(some records of that append may then be written twice: the at-least-once tail).

:class:`KafkaPositionStore` keeps source positions as :class:`LogPositionStore` does,
in a compacted topic of the cluster, ``headwater-connector-positions`` (Kafka reserves
names starting with ``__`` for itself): one record per save, keyed by the source's name.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any

import anyio
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition
from confluent_kafka.admin import (  # type: ignore[attr-defined]  # not in __all__
    AdminClient,
    ConfigResource,
    NewTopic,
    ResourceType,
)

from headwater.processing.kafka_client import (
    TIMEOUT_S,
    ClusterClient,
    blocking,
    finish,
)
from headwater.store import (
    DecimalColumn,
    InvalidTopicError,
    RecordTooLargeError,
    StickyPartitioner,
    TopicNotFoundError,
    partition_for_key,
)

from ._errors import ConnectorConfigError, LogUnavailableError
from ._log import RECORD_ALLOWANCE_BYTES, Appended, HeaderColumn

_ProducedHeaders = list[tuple[str, str | bytes | None]]

#: The topic that holds source positions on a cluster.
KAFKA_POSITIONS_TOPIC = "headwater-connector-positions"
#: Kafka's default ``max.message.bytes``, for a topic whose config cannot be read.
DEFAULT_MAX_MESSAGE_BYTES = 1048588
_POLL_S = 0.01

_logger = logging.getLogger("headwater.kafka")  # set up by the shared module

_NOT_FOUND = (KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError._UNKNOWN_TOPIC)


class KafkaCluster(ClusterClient):
    """A Kafka-protocol cluster, by the address of one of its brokers (or several);
    failing with :class:`LogUnavailableError`.

    :param bootstrap: ``HOST:PORT[,HOST:PORT...]``.
    :param settings: librdkafka settings for every client (a client's own come after).
    :raises ConnectorConfigError: if it is not ``HOST:PORT[,HOST:PORT...]``.
    """

    def __init__(self, bootstrap: str, settings: Mapping[str, Any] | None = None) -> None:
        for address in bootstrap.split(","):
            host, _, port = address.strip().rpartition(":")
            if not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise ConnectorConfigError(f"expected HOST:PORT for the broker, got {bootstrap!r}")
        super().__init__(bootstrap, settings=settings)

    def metadata(self, client: Consumer, topic: str) -> Any:
        """Return ``topic``'s metadata as ``client`` gets it (blocking); fail within about
        ``PROBE_S`` once librdkafka finds no broker reachable, not after ``TIMEOUT_S``.

        :raises LogUnavailableError: if the cluster cannot be reached.
        """
        return self.list_metadata(client, topic, f"looking up topic {topic!r}")

    def failure(self, action: str, error: KafkaError | KafkaException) -> LogUnavailableError:
        """Say that ``action`` failed on this cluster, and why."""
        err: KafkaError = error.args[0] if isinstance(error, KafkaException) else error
        return LogUnavailableError(f"{action} on {self.description} failed: {err.str()}")

    def unreachable(self, reason: str, code: int) -> LogUnavailableError:
        """Say that no broker of the cluster can be reached, and why."""
        return LogUnavailableError(f"cannot reach {self.description}: {reason}")


class KafkaLog:
    """A :class:`~headwater.connectors.ConnectorLog` over a cluster (see the module).

    An async context manager: leaving it flushes and drops its clients. Topic lookups
    are cached (a topic once found is not looked up again). Concurrency: one event loop;
    appends may run concurrently.
    """

    def __init__(self, cluster: KafkaCluster) -> None:
        self.cluster = cluster
        self.admin = AdminClient(cluster.config(**{"client.id": "headwater-connect"}))
        # Topics are looked up through a consumer: its metadata requests never create a
        # topic (a producer's, and the admin client's, would where the broker auto-creates).
        self.probe = Consumer(
            cluster.config(**{"client.id": "headwater-connect", "group.id": "headwater-probe"})
        )
        self.producer = Producer(
            cluster.config(
                **{
                    "client.id": "headwater-connect",
                    "acks": "all",
                    "enable.idempotence": True,
                    "linger.ms": 2,
                    "message.max.bytes": 64 << 20,  # the topic's limit is the broker's to check
                    "message.timeout.ms": int(TIMEOUT_S * 1000),
                }
            )
        )
        self._partitions: dict[str, int] = {}
        self._max_bytes: dict[str, int] = {}
        self._sticky = StickyPartitioner()

    async def __aenter__(self) -> KafkaLog:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Wait for what is still being sent (up to ``TIMEOUT_S``); close the clients."""
        try:
            await finish(self.producer.flush, TIMEOUT_S)
        finally:
            await finish(self.probe.close)

    # -- topics ----------------------------------------------------------------------

    async def has_topic(self, topic: str) -> bool:
        """Whether ``topic`` exists on the cluster.

        :raises LogUnavailableError: if the cluster does not answer.
        """
        if topic in self._partitions:
            return True
        count = await blocking(self._lookup, topic)
        if count is None:
            return False
        self._partitions[topic] = count
        return True

    async def ensure_topic(
        self, topic: str, config: dict[str, str] | None = None, *, partitions: int = -1
    ) -> None:
        """Create ``topic`` with the cluster's defaults (and ``config``, and ``partitions``
        unless -1) unless it exists.

        :raises InvalidTopicError: if the cluster refuses the name.
        :raises LogUnavailableError: if the cluster does not answer.
        """
        if await self.has_topic(topic):
            return
        await blocking(self._create, topic, config or {}, partitions)
        deadline = time.monotonic() + TIMEOUT_S
        while not await self.has_topic(topic):  # metadata may trail a creation
            if time.monotonic() > deadline:
                raise LogUnavailableError(
                    f"topic {topic!r} was created on {self.cluster.description} but does "
                    "not show in its metadata"
                )
            await anyio.sleep(0.05)

    async def max_record_bytes(self, topic: str) -> int:
        """Return the longest value one record of ``topic`` may have (its
        ``max.message.bytes`` less what a batch adds).

        :raises TopicNotFoundError: if there is no such topic.
        """
        if topic not in self._max_bytes:
            if not await self.has_topic(topic):
                raise TopicNotFoundError(f"topic {topic!r} does not exist")
            self._max_bytes[topic] = await blocking(self._read_max_bytes, topic)
        return self._max_bytes[topic] - RECORD_ALLOWANCE_BYTES

    def _lookup(self, topic: str) -> int | None:
        metadata = self.cluster.metadata(self.probe, topic)
        found = metadata.topics.get(topic)
        if found is None or (found.error is not None and found.error.code() in _NOT_FOUND):
            return None
        if found.error is not None:
            raise self.cluster.failure(f"looking up topic {topic!r}", found.error)
        return len(found.partitions)

    def _create(self, topic: str, config: dict[str, str], partitions: int) -> None:
        new = NewTopic(topic, num_partitions=partitions, replication_factor=-1, config=config)
        future = self.admin.create_topics([new], request_timeout=TIMEOUT_S)[topic]
        try:
            future.result(TIMEOUT_S)
        except KafkaException as exc:
            err: KafkaError = exc.args[0]
            if err.code() == KafkaError.TOPIC_ALREADY_EXISTS:
                return  # a concurrent creation
            if err.code() == KafkaError.TOPIC_EXCEPTION:
                raise InvalidTopicError(f"topic {topic!r} cannot be created: {err.str()}") from None
            raise self.cluster.failure(f"creating topic {topic!r}", exc) from None

    def _read_max_bytes(self, topic: str) -> int:
        resource = ConfigResource(ResourceType.TOPIC, topic)
        try:
            [future] = self.admin.describe_configs([resource], request_timeout=TIMEOUT_S).values()
            entries = future.result(TIMEOUT_S)
            return int(entries["max.message.bytes"].value)
        except (KafkaException, KeyError, ValueError, TypeError) as exc:
            _logger.debug("max.message.bytes of %s not read (%s): the default holds", topic, exc)
            return DEFAULT_MAX_MESSAGE_BYTES

    # -- appending -------------------------------------------------------------------

    async def append(
        self,
        topic: str,
        values: Sequence[bytes | None],
        *,
        keys: Sequence[bytes | None] | None = None,
        header_columns: Sequence[HeaderColumn] = (),
    ) -> Appended:
        """Append records given as columns; return once the cluster acknowledged all.

        :raises TopicNotFoundError: if ``topic`` does not exist.
        :raises RecordTooLargeError: if the cluster refuses a record as too large.
        :raises LogUnavailableError: if the cluster cannot be reached (some records may
            have been appended).
        """
        count = len(values)
        if not count:
            return Appended(0, ())
        if not await self.has_topic(topic):
            raise TopicNotFoundError(f"topic {topic!r} does not exist")
        partitions = self._partitions[topic]
        sticky = self._sticky.partition(topic, partitions)
        self._sticky.batch_complete(topic, sticky, partitions)
        if keys is None:
            targets: Sequence[int] = [sticky] * count
        else:
            targets = [sticky if k is None else partition_for_key(k, partitions) for k in keys]
        headers = _headers(header_columns, count)
        placed = await blocking(self._produce, topic, values, keys, targets, headers)
        return _appended(placed)

    def _produce(
        self,
        topic: str,
        values: Sequence[bytes | None],
        keys: Sequence[bytes | None] | None,
        targets: Sequence[int],
        headers: list[_ProducedHeaders] | None,
    ) -> list[tuple[int, int]]:
        count = len(values)
        placed: list[tuple[int, int]] = [(-1, -1)] * count
        failures: list[KafkaError] = []
        left = [count]
        done = threading.Event()

        def delivered(index: int, error: KafkaError | None, message: Message) -> None:
            if error is not None:
                failures.append(error)
            else:
                placed[index] = (message.partition() or 0, message.offset() or 0)
            left[0] -= 1
            if not left[0]:
                done.set()

        producer = self.producer
        for i in range(count):
            while True:
                try:
                    producer.produce(
                        topic,
                        values[i],
                        None if keys is None else keys[i],
                        partition=targets[i],
                        headers=None if headers is None else headers[i],
                        on_delivery=functools.partial(delivered, i),
                    )
                    break
                except BufferError:  # the local queue is full: let deliveries drain it
                    producer.poll(_POLL_S)
                except KafkaException as exc:
                    raise self._refusal(topic, exc.args[0]) from None
        # Callbacks run in whichever thread polls: this append's may be served by another.
        while not done.is_set():
            producer.poll(_POLL_S)
        if failures:
            raise self._refusal(topic, failures[0])
        return placed

    def _refusal(self, topic: str, error: KafkaError) -> Exception:
        code = error.code()
        if code in _NOT_FOUND or code == KafkaError._UNKNOWN_PARTITION:
            self._partitions.pop(topic, None)
            return TopicNotFoundError(f"topic {topic!r} does not exist")
        if code == KafkaError.MSG_SIZE_TOO_LARGE:
            return RecordTooLargeError(f"a record exceeds the max.message.bytes of {topic!r}")
        if code in (KafkaError.TOPIC_EXCEPTION, KafkaError.TOPIC_AUTHORIZATION_FAILED):
            return InvalidTopicError(f"the cluster takes no records for {topic!r}: {error.str()}")
        return self.cluster.failure(f"appending to topic {topic!r}", error)


def _headers(columns: Sequence[HeaderColumn], count: int) -> list[_ProducedHeaders] | None:
    if not columns:
        return None
    expanded = [
        (name, column.expand() if isinstance(column, DecimalColumn) else column)
        for name, column in columns
    ]
    return [[(name, column[i]) for name, column in expanded] for i in range(count)]


def _appended(placed: list[tuple[int, int]]) -> Appended:
    """Return where records went as runs of consecutive offsets per partition."""
    order = sorted(range(len(placed)), key=placed.__getitem__)
    runs: list[tuple[int, int, Sequence[int] | None]] = []
    start = 0
    for i in range(1, len(order) + 1):
        if i < len(order):
            (p, o), (q, prev) = placed[order[i]], placed[order[i - 1]]
            if p == q and o == prev + 1:
                continue
        run = order[start:i]
        partition, base = placed[run[0]]
        whole = len(run) == len(placed) and run == list(range(len(placed)))
        runs.append((partition, base, None if whole else run))
        start = i
    return Appended(len(placed), tuple(runs))


class KafkaPositionStore:
    """Source positions in the cluster's compacted topic ``headwater-connector-positions``
    (see the module). Concurrency: tasks of one event loop.

    :param log: the cluster's log (its producer writes the positions).
    """

    def __init__(self, log: KafkaLog) -> None:
        self.log = log
        self._table: dict[str, bytes] | None = None

    async def load(self, name: str) -> bytes | None:
        """Return the position last saved under ``name``, or ``None``."""
        if self._table is None:
            await self.log.ensure_topic(
                KAFKA_POSITIONS_TOPIC,
                {"cleanup.policy": "compact", "retention.ms": "-1"},
                partitions=1,
            )
            self._table = await blocking(self._read_all)
        return self._table.get(name)

    async def save(self, name: str, position: bytes) -> None:
        """Save ``position`` under ``name``; return once the cluster acknowledged it.

        :raises LogUnavailableError: if the cluster cannot be reached.
        """
        await self.load(name)
        await self.log.append(KAFKA_POSITIONS_TOPIC, [position], keys=[name.encode()])
        assert self._table is not None
        self._table[name] = position

    def _read_all(self) -> dict[str, bytes]:
        """Read every partition of the topic (one, unless made otherwise) to its end."""
        cluster = self.log.cluster
        consumer = Consumer(
            cluster.consumer_config(
                **{
                    "group.id": "headwater-connect-positions",  # assigned, never committed
                    "enable.auto.commit": False,
                }
            )
        )
        table: dict[str, bytes] = {}
        try:
            metadata = cluster.metadata(consumer, KAFKA_POSITIONS_TOPIC)
            for partition in sorted(metadata.topics[KAFKA_POSITIONS_TOPIC].partitions):
                self._read_partition(consumer, partition, table)
        except KafkaException as exc:
            raise cluster.failure(f"reading {KAFKA_POSITIONS_TOPIC}", exc) from None
        finally:
            consumer.close()
        return table

    def _read_partition(self, consumer: Consumer, partition: int, table: dict[str, bytes]) -> None:
        cluster = self.log.cluster
        tp = TopicPartition(KAFKA_POSITIONS_TOPIC, partition)
        low, high = consumer.get_watermark_offsets(tp, timeout=TIMEOUT_S)
        if high <= low:
            return
        consumer.assign([TopicPartition(KAFKA_POSITIONS_TOPIC, partition, low)])
        deadline = time.monotonic() + TIMEOUT_S
        position = low
        while position < high:
            message = consumer.poll(0.1)
            if message is None:
                if time.monotonic() > deadline:
                    raise LogUnavailableError(
                        f"reading {KAFKA_POSITIONS_TOPIC} on {cluster.description} timed out"
                    )
                continue
            error = message.error()
            if error is not None:
                raise cluster.failure(f"reading {KAFKA_POSITIONS_TOPIC}", error)
            position = (message.offset() or 0) + 1
            key, value = message.key(), message.value()
            if key is None:
                continue
            if value is None:
                table.pop(key.decode(errors="replace"), None)
            else:
                table[key.decode(errors="replace")] = value
