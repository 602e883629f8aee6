"""Talking to a Kafka-protocol cluster through confluent-kafka: the commands' pieces, over
:mod:`headwater.processing.kafka_client` (shared with the connectors).

librdkafka's calls block, and its delivery and rebalance callbacks run in the thread that
polls; every call runs in a worker thread (the shared module's ``blocking``), so callbacks
only record what happened and the event loop reads it once the call returns. A poll
(:func:`poll_batch`) blocks until the first message or ``POLL_S``, then takes whatever
else is already fetched without waiting: batches with no added latency, and a cancelled
command (SIGINT) stops within ``POLL_S``.

A topic is looked up through a consumer's metadata request, which never creates it (a
producer's would, where the broker auto-creates topics). librdkafka's own log lines go to
the ``headwater.kafka`` logger, silent unless ``HEADWATER_DEBUG`` is set.
"""

from __future__ import annotations

from typing import Any, cast

import click
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition
from confluent_kafka.admin import ClusterMetadata  # type: ignore[attr-defined]  # not in __all__

from headwater.broker import BrokerResponseError, parse_address
from headwater.processing.kafka_client import PROBE_S, TIMEOUT_S, ClusterClient, to_record
from headwater.store import Record, TopicNotFoundError

from ._start import Start

POLL_S = PROBE_S
BATCH_MESSAGES = 1000
#: The group id of readers that only assign (librdkafka wants one; nothing is committed).
READER_GROUP = "headwater-cli"


def kafka_failure(action: str, error: KafkaError | KafkaException) -> BrokerResponseError:
    """Turn a librdkafka error into headwater's, naming what was being done."""
    err: KafkaError = error.args[0] if isinstance(error, KafkaException) else error
    return BrokerResponseError(f"{action} failed with {err.name()}: {err.str()}", err.code())


def poll_batch(consumer: Consumer) -> list[Message]:
    """Wait up to ``POLL_S`` for a message, then take what else is fetched (blocking)."""
    first = consumer.poll(POLL_S)
    if first is None:
        return []
    return [first, *consumer.consume(BATCH_MESSAGES, 0)]


def runs(messages: list[Message], topic: str) -> list[tuple[int, list[Record], bool]]:
    """Split ``messages`` into runs of one partition: ``(partition, records, at_end)``.

    ``at_end`` marks a partition EOF (a run without records); any other error is raised.
    """
    out: list[tuple[int, list[Record], bool]] = []
    for message in messages:
        error = message.error()
        p = cast(int, message.partition())
        if error is not None:
            if error.code() != KafkaError._PARTITION_EOF:
                raise kafka_failure(f"reading topic {topic!r}", error)
            out.append((p, [], True))
            continue
        if out and out[-1][0] == p and not out[-1][2]:
            out[-1][1].append(to_record(message))
        else:
            out.append((p, [to_record(message)], False))
    return out


class Cluster(ClusterClient):
    """The cluster behind ``bootstrap``: client configurations and topic lookups, failing
    with :class:`~headwater.broker.BrokerResponseError`.

    :param bootstrap: ``HOST:PORT`` of a broker of the cluster.
    :param description: what to call it in messages (default: ``the broker at HOST:PORT``).
    :raises click.BadParameter: if it is not ``HOST:PORT``.
    """

    def __init__(self, bootstrap: str, description: str | None = None) -> None:
        try:
            parse_address(bootstrap)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--bootstrap") from None
        super().__init__(bootstrap, description=description)

    def failure(self, action: str, error: KafkaError | KafkaException) -> BrokerResponseError:
        """Say that ``action`` failed, as :func:`kafka_failure` does."""
        return kafka_failure(action, error)

    def unreachable(self, reason: str, code: int) -> BrokerResponseError:
        """Say that no broker of the cluster can be reached, and why."""
        return BrokerResponseError(f"cannot reach {self.description}: {reason}", code)

    def metadata(self, consumer: Consumer, topic: str | None = None) -> ClusterMetadata:
        """Return the cluster's metadata (``topic``'s only, when given), blocking.

        Fails within about ``POLL_S`` once librdkafka has found no broker reachable,
        instead of waiting out ``TIMEOUT_S``.

        :raises BrokerResponseError: if the cluster cannot be reached.
        """
        return self.list_metadata(consumer, topic, f"reaching {self.description}")

    def reader_consumer(self, **settings: Any) -> Consumer:
        """Return a consumer that assigns partitions itself and never commits."""
        return Consumer(
            self.consumer_config(
                **{
                    "group.id": READER_GROUP,
                    "client.id": "headwater-cli",
                    "enable.auto.commit": False,
                    "enable.auto.offset.store": False,
                    "enable.partition.eof": True,
                    "auto.offset.reset": "earliest",
                    "fetch.wait.max.ms": 100,
                    **settings,
                }
            )
        )

    def partition_count(self, consumer: Consumer, topic: str) -> int:
        """Return ``topic``'s partition count (blocking).

        :raises TopicNotFoundError: if there is no such topic.
        """
        found = self.metadata(consumer, topic).topics.get(topic)
        unknown = (KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError._UNKNOWN_TOPIC)
        if found is None or (found.error is not None and found.error.code() in unknown):
            raise TopicNotFoundError(f"unknown topic {topic!r}")
        if found.error is not None:
            raise kafka_failure(f"looking up topic {topic!r}", found.error)
        return len(found.partitions)

    def bounds(
        self, consumer: Consumer, topic: str, indexes: list[int], start: Start
    ) -> dict[int, tuple[int, int]]:
        """Return ``{partition: (where start begins, end)}`` for ``indexes`` (blocking)."""
        action = f"listing the offsets of topic {topic!r}"
        times: dict[int, int | None] = {}
        try:
            if start.kind == "time":
                asked = [TopicPartition(topic, p, start.value) for p in indexes]
                found = consumer.offsets_for_times(asked, timeout=TIMEOUT_S)
                times = {tp.partition: (tp.offset if tp.offset >= 0 else None) for tp in found}
            bounds = {}
            for p in indexes:
                low, high = consumer.get_watermark_offsets(
                    TopicPartition(topic, p), timeout=TIMEOUT_S
                )
                bounds[p] = (start.position(low, high, times.get(p)), high)
        except KafkaException as exc:
            raise kafka_failure(action, exc) from None
        return bounds
