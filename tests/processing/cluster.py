"""Helpers of the tests that run apps on a Kafka-protocol cluster: plain confluent-kafka
clients that set topics up and read back what an app wrote, independently of the
backend under test. Every call blocks (run it in a thread while an app runs)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

import confluent_kafka as ck
from confluent_kafka.admin import (  # type: ignore[attr-defined]  # not in __all__
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    NewTopic,
)

TIMEOUT_S = 30.0


def unique(prefix: str) -> str:
    """Return a name of the test's own (the clusters are shared by the session)."""
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def create_topic(
    bootstrap: str, topic: str, partitions: int, config: Mapping[str, str] | None = None
) -> None:
    """Create ``topic``."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    new = NewTopic(topic, num_partitions=partitions, replication_factor=1, config=config or {})
    for future in admin.create_topics([new], operation_timeout=TIMEOUT_S).values():
        future.result()
    # The controller acknowledges before the brokers list the topic: wait for them.
    deadline = time.monotonic() + TIMEOUT_S
    while not _has_leaders(admin, topic):
        if time.monotonic() > deadline:
            raise TimeoutError(f"topic {topic!r} was not listed {TIMEOUT_S} s after creating it")
        time.sleep(0.01)


def _has_leaders(admin: AdminClient, topic: str) -> bool:
    found = admin.list_topics(timeout=TIMEOUT_S).topics.get(topic)
    return (
        found is not None
        and found.error is None
        and bool(found.partitions)
        and all(p.leader >= 0 for p in found.partitions.values())
    )


def clear(bootstrap: str, topics: Sequence[str], app: str) -> None:
    """Delete ``topics`` and app ``app``'s internal topics and consumer group, where a
    cluster kept from an earlier session (``$HEADWATER_TEST_KAFKA``) still has them: for
    a test of an example, whose names are its own and fixed. Returns once they are gone.
    """
    admin = AdminClient({"bootstrap.servers": bootstrap})

    def left() -> list[str]:
        names = admin.list_topics(timeout=TIMEOUT_S).topics
        return [t for t in names if t in topics or t.startswith(f"{app}-")]

    doomed = left()
    if doomed:
        for future in admin.delete_topics(doomed, operation_timeout=TIMEOUT_S).values():
            future.result()
    groups = admin.list_consumer_groups().result(TIMEOUT_S).valid
    if any(group.group_id == app for group in groups):
        for future in admin.delete_consumer_groups([app], request_timeout=TIMEOUT_S).values():
            future.result()
    # Deleting is asynchronous on Kafka: the names are free once metadata stops naming them.
    deadline = time.monotonic() + TIMEOUT_S
    while doomed and time.monotonic() < deadline:
        doomed = left()
        if doomed:
            time.sleep(0.1)
    if doomed:
        raise TimeoutError(f"topics {doomed} were still there {TIMEOUT_S} s after deleting them")


def topic_exists(bootstrap: str, topic: str) -> bool:
    """Return whether ``topic`` exists (asking for every topic's metadata creates none)."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    return topic in admin.list_topics(timeout=TIMEOUT_S).topics


def topic_config(bootstrap: str, topic: str) -> dict[str, str]:
    """Return ``topic``'s configs as the cluster describes them."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    resource = ConfigResource(ConfigResource.Type.TOPIC, topic)
    (future,) = admin.describe_configs([resource]).values()
    return {name: entry.value for name, entry in future.result(TIMEOUT_S).items()}


def alter_topic(bootstrap: str, topic: str, changes: Mapping[str, str]) -> None:
    """Set ``changes`` on ``topic``'s configs; return once the cluster describes them."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    entries = [
        ConfigEntry(name, value, incremental_operation=AlterConfigOpType.SET)
        for name, value in changes.items()
    ]
    resource = ConfigResource(ConfigResource.Type.TOPIC, topic, incremental_configs=entries)
    admin.incremental_alter_configs([resource])[resource].result(TIMEOUT_S)
    # Brokers apply a change after the controller acknowledges it: wait for them.
    deadline = time.monotonic() + TIMEOUT_S
    while any(topic_config(bootstrap, topic).get(k) != v for k, v in changes.items()):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{topic!r} did not show {dict(changes)} after {TIMEOUT_S} s")
        time.sleep(0.01)


def produce(
    bootstrap: str,
    topic: str,
    values: Sequence[bytes],
    *,
    partitions: int,
    keys: Sequence[bytes] | None = None,
) -> None:
    """Write ``values`` to ``topic``: round-robin over its partitions, or by ``keys``
    (librdkafka's partitioner) if given; return once all are acknowledged."""
    producer = ck.Producer({
        "bootstrap.servers": bootstrap, "linger.ms": 5, "enable.idempotence": True,
    })  # fmt: skip  # idempotent: a retried request neither repeats nor reorders records
    failures: list[Any] = []

    def report(error: Any, _message: Any) -> None:
        if error is not None:
            failures.append(error)

    for index, value in enumerate(values):
        options: dict[str, Any] = {"on_delivery": report}
        if keys is None:
            options["partition"] = index % partitions
        else:
            options["key"] = keys[index]
        while True:
            try:
                producer.produce(topic, value, **options)
                break
            except BufferError:
                producer.poll(0.1)
    assert producer.flush(TIMEOUT_S) == 0
    assert not failures, failures


def read_topic(bootstrap: str, topic: str) -> list[list[ck.Message]]:
    """Return every record of ``topic`` up to its high watermarks, per partition."""
    consumer = ck.Consumer({
        "bootstrap.servers": bootstrap,
        "group.id": unique("reader"),
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
    })  # fmt: skip
    try:
        metadata = consumer.list_topics(topic, timeout=TIMEOUT_S).topics[topic]
        count = len(metadata.partitions)
        ends = {
            p: consumer.get_watermark_offsets(ck.TopicPartition(topic, p), timeout=TIMEOUT_S)[1]
            for p in range(count)
        }
        out: list[list[ck.Message]] = [[] for _ in range(count)]
        wanted = [ck.TopicPartition(topic, p, ck.OFFSET_BEGINNING) for p in range(count) if ends[p]]
        consumer.assign(wanted)
        left = {p for p in range(count) if ends[p]}
        while left:
            message = consumer.poll(TIMEOUT_S)
            assert message is not None, f"{topic}: nothing more to read, yet {left} not done"
            assert message.error() is None, message.error()
            p = message.partition()
            assert p is not None
            out[p].append(message)
            if (message.offset() or 0) + 1 >= ends[p]:
                left.discard(p)
                consumer.pause([ck.TopicPartition(topic, p)])
        return out
    finally:
        consumer.close()


def wait_for_records(bootstrap: str, topic: str, count: int) -> None:
    """Block until ``topic`` (which exists) holds at least ``count`` records: a consumer
    reads it from the start, waiting on the cluster for each record."""
    consumer = ck.Consumer({
        "bootstrap.servers": bootstrap,
        "group.id": unique("waiter"),
        "enable.auto.commit": False,
    })  # fmt: skip
    try:
        partitions = consumer.list_topics(topic, timeout=TIMEOUT_S).topics[topic].partitions
        consumer.assign([ck.TopicPartition(topic, p, ck.OFFSET_BEGINNING) for p in partitions])
        seen = 0
        while seen < count:
            message = consumer.poll(TIMEOUT_S)
            assert message is not None, f"{topic}: {seen} records, still waiting for {count}"
            seen += message.error() is None
    finally:
        consumer.close()


def count_records(bootstrap: str, topic: str) -> int:
    """Return how many records ``topic`` holds (its high watermarks, summed)."""
    consumer = ck.Consumer({"bootstrap.servers": bootstrap, "group.id": unique("counter")})
    try:
        metadata = consumer.list_topics(topic, timeout=TIMEOUT_S).topics[topic]
        return sum(
            consumer.get_watermark_offsets(ck.TopicPartition(topic, p), timeout=TIMEOUT_S)[1]
            for p in metadata.partitions
        )
    finally:
        consumer.close()


def committed(
    bootstrap: str, group: str, topic: str, partitions: int
) -> dict[int, tuple[int, str]]:
    """Return ``group``'s committed offset and metadata of each partition of ``topic``
    that has one."""
    consumer = ck.Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        asked = [ck.TopicPartition(topic, p) for p in range(partitions)]
        return {
            c.partition: (c.offset, c.metadata or "")
            for c in consumer.committed(asked, timeout=TIMEOUT_S)
            if c.offset >= 0
        }
    finally:
        consumer.close()


def headers(message: ck.Message) -> dict[str, bytes | None]:
    """Return a message's headers as a dict."""
    return dict(message.headers() or [])  # type: ignore[arg-type]
