"""DeleteRecords, CreatePartitions and OffsetDelete through real clients, against
``headwater broker`` and against Apache Kafka, with the same assertions for both.

confluent-kafka's AdminClient deletes records and adds partitions (it has no call for
OffsetDelete); kafka-python does all three (``delete_group_offsets``); aiokafka deletes
records and adds partitions. Every scenario runs once per cluster: what a client sees
from headwater is what it sees from Kafka.
"""

from __future__ import annotations

import asyncio
import time
import uuid
import warnings
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import (
    OFFSET_BEGINNING,
    OFFSET_END,
    Consumer,
    KafkaError,
    KafkaException,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import (
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    NewPartitions,
    NewTopic,
)

from headwater.store import partition_for_key

from .running import BrokerProcess

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import kafka
    import kafka.admin
    import kafka.errors

TIMEOUT_S = 30


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def create_topic(bootstrap: str, partitions: int) -> str:
    name = unique("admin")
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(name, partitions, 1)])[name].result(TIMEOUT_S)
    return name


def produce(bootstrap: str, topic: str, counts: dict[int, int]) -> None:
    """Produce ``counts[p]`` records ``b"p:i"`` to each partition ``p``."""
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all"})
    for p, count in counts.items():
        for i in range(count):
            producer.produce(topic, value=b"%d:%d" % (p, i), partition=p)
    assert producer.flush(TIMEOUT_S) == 0


def produce_keyed(bootstrap: str, topic: str, keys: list[bytes], value: bytes) -> list[int]:
    """Produce one record per key with Java's partitioner; return each one's partition."""
    producer = Producer(
        {"bootstrap.servers": bootstrap, "acks": "all", "partitioner": "murmur2_random"}
    )
    placed: dict[bytes, int] = {}

    def delivered(error: KafkaError | None, message: Any) -> None:
        assert error is None, error
        placed[message.key()] = message.partition()

    for key in keys:
        producer.produce(topic, key=key, value=value, on_delivery=delivered)
    assert producer.flush(TIMEOUT_S) == 0
    return [placed[key] for key in keys]


def watermarks(bootstrap: str, topic: str, partition: int) -> tuple[int, int]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": unique("wm")})
    try:
        low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), TIMEOUT_S)
        return int(low), int(high)
    finally:
        consumer.close()


def code_of(future: Any) -> int:
    with pytest.raises(KafkaException) as info:
        future.result(TIMEOUT_S)
    return int(info.value.args[0].code())


def partition_count(bootstrap: str, topic: str) -> int:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    return len(admin.list_topics(topic, timeout=TIMEOUT_S).topics[topic].partitions)


# -- DeleteRecords -------------------------------------------------------------------------


def test_delete_records_with_confluent_kafka(bootstrap: str) -> None:
    topic = create_topic(bootstrap, 2)
    produce(bootstrap, topic, {0: 10, 1: 3})
    admin = AdminClient({"bootstrap.servers": bootstrap})
    futures = admin.delete_records(
        [TopicPartition(topic, 0, 4), TopicPartition(topic, 1, OFFSET_END)]
    )
    lows = {tp.partition: f.result(TIMEOUT_S).low_watermark for tp, f in futures.items()}
    assert lows == {0: 4, 1: 3}
    assert watermarks(bootstrap, topic, 0) == (4, 10)
    assert watermarks(bootstrap, topic, 1) == (3, 3)

    # A log start already past the offset stays where it is.
    [(_, again)] = admin.delete_records([TopicPartition(topic, 0, 2)]).items()
    assert again.result(TIMEOUT_S).low_watermark == 4
    [(_, beyond)] = admin.delete_records([TopicPartition(topic, 0, 11)]).items()
    assert code_of(beyond) == KafkaError.OFFSET_OUT_OF_RANGE
    assert watermarks(bootstrap, topic, 0) == (4, 10)

    # A consumer asking for a deleted offset is out of range; from the start it reads 4 on.
    strict = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": unique("dr"), "auto.offset.reset": "error"}
    )
    try:
        strict.assign([TopicPartition(topic, 0, 2)])
        message = strict.poll(TIMEOUT_S)
        assert message is not None and message.error() is not None
        assert message.error().code() == KafkaError._AUTO_OFFSET_RESET
    finally:
        strict.close()
    reader = Consumer({"bootstrap.servers": bootstrap, "group.id": unique("dr")})
    try:
        reader.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
        offsets = []
        while len(offsets) < 6:
            message = reader.poll(TIMEOUT_S)
            assert message is not None and message.error() is None
            offsets.append(message.offset())
        assert offsets == [4, 5, 6, 7, 8, 9]
    finally:
        reader.close()


def test_deleted_records_and_new_partitions_survive_a_broker_kill(tmp_path: Path) -> None:
    broker = BrokerProcess(tmp_path / "data").start()
    try:
        topic = create_topic(broker.bootstrap, 1)
        produce(broker.bootstrap, topic, {0: 10})
        admin = AdminClient({"bootstrap.servers": broker.bootstrap})
        [(_, moved)] = admin.delete_records([TopicPartition(topic, 0, 7)]).items()
        assert moved.result(TIMEOUT_S).low_watermark == 7
        admin.create_partitions([NewPartitions(topic, 3)])[topic].result(TIMEOUT_S)
    finally:
        broker.kill()  # kill -9: no clean shutdown
    broker.start()
    try:
        assert watermarks(broker.bootstrap, topic, 0) == (7, 10)
        assert partition_count(broker.bootstrap, topic) == 3
    finally:
        assert broker.stop() == 0, broker.log()


def test_delete_records_with_kafka_python(bootstrap: str) -> None:
    topic = create_topic(bootstrap, 1)
    produce(bootstrap, topic, {0: 8})
    client = kafka.KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        result = client.delete_records({kafka.TopicPartition(topic, 0): 5})
        [(tp, outcome)] = result.items()
        assert tp == kafka.TopicPartition(topic, 0)
        assert outcome["low_watermark"] == 5
        with pytest.raises(kafka.errors.OffsetOutOfRangeError):
            client.delete_records({kafka.TopicPartition(topic, 0): 9})
        with pytest.raises(kafka.errors.UnknownTopicOrPartitionError):
            client.delete_records({kafka.TopicPartition(topic, 3): 0})
    finally:
        client.close()
    assert watermarks(bootstrap, topic, 0) == (5, 8)


def test_delete_records_with_aiokafka(bootstrap: str) -> None:
    from aiokafka.admin import AIOKafkaAdminClient, RecordsToDelete
    from aiokafka.structs import TopicPartition as AioTopicPartition

    topic = create_topic(bootstrap, 1)
    produce(bootstrap, topic, {0: 6})

    async def run() -> dict[Any, int]:
        client = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        await client.start()
        try:
            return await client.delete_records(
                {AioTopicPartition(topic, 0): RecordsToDelete(before_offset=3)}
            )
        finally:
            await client.close()

    assert asyncio.run(run()) == {AioTopicPartition(topic, 0): 3}
    assert watermarks(bootstrap, topic, 0) == (3, 6)


# -- CreatePartitions ----------------------------------------------------------------------

KEYS = [f"user-{i}".encode() for i in range(32)]


def test_create_partitions_with_confluent_kafka(bootstrap: str) -> None:
    topic = create_topic(bootstrap, 2)
    before = produce_keyed(bootstrap, topic, KEYS, b"before")
    assert before == [partition_for_key(k, 2) for k in KEYS]
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for count in (1, 2):  # never shrink, and the same count is no growth
        [(_, refused)] = admin.create_partitions([NewPartitions(topic, count)]).items()
        assert code_of(refused) == KafkaError.INVALID_PARTITIONS
    [(_, checked)] = admin.create_partitions([NewPartitions(topic, 4)], validate_only=True).items()
    checked.result(TIMEOUT_S)
    assert partition_count(bootstrap, topic) == 2
    [(_, grown)] = admin.create_partitions([NewPartitions(topic, 4)]).items()
    grown.result(TIMEOUT_S)
    assert partition_count(bootstrap, topic) == 4
    missing = unique("missing")
    [(_, unknown)] = admin.create_partitions([NewPartitions(missing, 4)]).items()
    assert code_of(unknown) == KafkaError.UNKNOWN_TOPIC_OR_PART

    # Keyed records already written stay; new ones go by murmur2 over the new count.
    after = produce_keyed(bootstrap, topic, KEYS, b"after")
    assert after == [partition_for_key(k, 4) for k in KEYS]
    assert set(after) - {0, 1}
    assert [watermarks(bootstrap, topic, p)[1] for p in range(4)] == [
        before.count(p) + after.count(p) for p in range(4)
    ]


def test_create_partitions_with_kafka_python_and_aiokafka(bootstrap: str) -> None:
    from aiokafka.admin import AIOKafkaAdminClient
    from aiokafka.admin import NewPartitions as AioNewPartitions

    topic = create_topic(bootstrap, 1)
    client = kafka.KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        client.create_partitions({topic: 3})
        with pytest.raises(kafka.errors.InvalidPartitionsError):
            client.create_partitions({topic: 2})
        with pytest.raises(kafka.errors.InvalidReplicationAssignmentError):
            client.create_partitions({topic: {"count": 4, "assignments": [[999]]}})
        with pytest.raises(kafka.errors.UnknownTopicOrPartitionError):
            client.create_partitions({unique("missing"): 2})
    finally:
        client.close()
    assert partition_count(bootstrap, topic) == 3

    async def run() -> None:
        aio = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        await aio.start()
        try:
            await aio.create_partitions({topic: AioNewPartitions(total_count=5)})
        finally:
            await aio.close()

    asyncio.run(run())
    assert partition_count(bootstrap, topic) == 5


def test_a_consumer_group_picks_up_new_partitions(bootstrap: str) -> None:
    topic = create_topic(bootstrap, 2)
    produce(bootstrap, topic, {0: 1, 1: 1})
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": unique("grow"),
            "auto.offset.reset": "earliest",
            "topic.metadata.refresh.interval.ms": 500,
            "session.timeout.ms": 6000,
            "heartbeat.interval.ms": 300,
        }
    )
    try:
        consumer.subscribe([topic])
        seen = poll_until(consumer, lambda values: len(values) == 2)
        assert sorted(seen) == [b"0:0", b"1:0"]
        admin = AdminClient({"bootstrap.servers": bootstrap})
        admin.create_partitions([NewPartitions(topic, 4)])[topic].result(TIMEOUT_S)
        produce(bootstrap, topic, {3: 1})
        seen = poll_until(consumer, lambda values: b"3:0" in values)
        assert seen == [b"3:0"]
        assert sorted(tp.partition for tp in consumer.assignment()) == [0, 1, 2, 3]
    finally:
        consumer.close()


def poll_until(consumer: Consumer, done: Any, timeout_s: float = 60.0) -> list[bytes]:
    """Poll (each poll waits for a message) until ``done(values)``; return the values."""
    values: list[bytes] = []
    deadline = time.monotonic() + timeout_s
    while not done(values):
        assert time.monotonic() < deadline, f"gave up waiting; got {values}"
        message = consumer.poll(1.0)
        if message is None:
            continue
        assert message.error() is None, message.error()
        values.append(message.value())
    return values


# -- OffsetDelete --------------------------------------------------------------------------


def commit(bootstrap: str, group: str, offsets: list[TopicPartition]) -> None:
    """Commit ``offsets`` for ``group`` without joining it (a plain commit)."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        consumer.commit(offsets=offsets, asynchronous=False)
    finally:
        consumer.close()


def committed(bootstrap: str, group: str, partitions: list[TopicPartition]) -> list[int]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        return [tp.offset for tp in consumer.committed(partitions, timeout=TIMEOUT_S)]
    finally:
        consumer.close()


def test_delete_group_offsets_with_kafka_python(bootstrap: str) -> None:
    kept, dropped = create_topic(bootstrap, 1), create_topic(bootstrap, 2)
    produce(bootstrap, kept, {0: 5})
    produce(bootstrap, dropped, {0: 5, 1: 5})
    group = unique("od")
    commit(
        bootstrap,
        group,
        [TopicPartition(kept, 0, 3), TopicPartition(dropped, 0, 2), TopicPartition(dropped, 1, 4)],
    )
    client = kafka.KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        result = client.delete_group_offsets(
            group, [kafka.TopicPartition(dropped, 0), kafka.TopicPartition(dropped, 1)]
        )
        assert result == {
            kafka.TopicPartition(dropped, 0): kafka.errors.NoError,
            kafka.TopicPartition(dropped, 1): kafka.errors.NoError,
        }
        everything = [
            TopicPartition(kept, 0),
            TopicPartition(dropped, 0),
            TopicPartition(dropped, 1),
        ]
        assert committed(bootstrap, group, everything) == [3, -1001, -1001]

        with pytest.raises(kafka.errors.GroupIdNotFoundError):
            client.delete_group_offsets(unique("nobody"), [kafka.TopicPartition(kept, 0)])
        missing = kafka.TopicPartition(unique("missing"), 0)
        assert client.delete_group_offsets(group, [missing]) == {
            missing: kafka.errors.UnknownTopicOrPartitionError
        }

        # An active member subscribed to the topic keeps its offsets.
        member = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": group,
                "auto.offset.reset": "earliest",
                "enable.auto.commit": False,
            }
        )
        try:
            member.subscribe([kept])
            poll_until(member, lambda values: len(values) == 2)  # from the committed 3
            result = client.delete_group_offsets(
                group, [kafka.TopicPartition(kept, 0), kafka.TopicPartition(dropped, 0)]
            )
            assert result == {
                kafka.TopicPartition(kept, 0): kafka.errors.GroupSubscribedToTopicError,
                kafka.TopicPartition(dropped, 0): kafka.errors.NoError,
            }
        finally:
            member.close()
        assert committed(bootstrap, group, [TopicPartition(kept, 0)]) == [3]
        # Once the member has left, they can go.
        result = client.delete_group_offsets(group, [kafka.TopicPartition(kept, 0)])
        assert result == {kafka.TopicPartition(kept, 0): kafka.errors.NoError}
        assert committed(bootstrap, group, [TopicPartition(kept, 0)]) == [-1001]
    finally:
        client.close()


# -- IncrementalAlterConfigs ---------------------------------------------------------------


def retention_of(admin: AdminClient, topic: str) -> tuple[str, bool]:
    """Return the topic's ``retention.ms`` and whether it is the default."""
    resource = ConfigResource(ConfigResource.Type.TOPIC, topic)
    entry = admin.describe_configs([resource])[resource].result(TIMEOUT_S)["retention.ms"]
    return entry.value, bool(entry.is_default)


def assert_retention_becomes(admin: AdminClient, topic: str, expected: tuple[str, bool]) -> None:
    """Describe the topic until it shows ``expected`` (or fail after ``TIMEOUT_S``): Apache
    Kafka answers an alter once its controller has recorded it, and the broker describing
    the topic applies it from the metadata log a moment later."""
    deadline = time.monotonic() + TIMEOUT_S
    while (found := retention_of(admin, topic)) != expected:
        assert time.monotonic() < deadline, f"retention.ms stayed {found}, not {expected}"
        time.sleep(0.05)  # no event to wait on: the metadata log is the broker's own


def test_incremental_alter_configs_on_a_live_topic(bootstrap: str) -> None:
    topic = create_topic(bootstrap, 1)
    produce(bootstrap, topic, {0: 3})
    admin = AdminClient({"bootstrap.servers": bootstrap})
    default, is_default = retention_of(admin, topic)
    assert is_default

    def alter(operation: AlterConfigOpType, value: str | None) -> None:
        entry = ConfigEntry("retention.ms", value, incremental_operation=operation)
        resource = ConfigResource(ConfigResource.Type.TOPIC, topic, incremental_configs=[entry])
        admin.incremental_alter_configs([resource])[resource].result(TIMEOUT_S)

    alter(AlterConfigOpType.SET, "3600000")
    assert_retention_becomes(admin, topic, ("3600000", False))
    alter(AlterConfigOpType.DELETE, None)
    assert_retention_becomes(admin, topic, (default, True))

    client = kafka.KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        resource = kafka.admin.ConfigResource("TOPIC", topic, {"retention.ms": "7200000"})
        response = client.alter_configs([resource], incremental=True)
        assert response == {"topic": {topic: "OK"}}
    finally:
        client.close()
    assert_retention_becomes(admin, topic, ("7200000", False))
    assert watermarks(bootstrap, topic, 0) == (0, 3)  # records stay as they were
