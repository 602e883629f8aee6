"""Real Kafka clients against ``headwater broker``: confluent-kafka, kafka-python, aiokafka, kcat.

One broker subprocess on a free port serves the module. Consumers use manual assignment
(``assign()``); the consumer-group scenarios are in ``test_groups.py``. Each test works on
topics of its own; the scenarios are the issue's list, for every client where it applies.
"""

from __future__ import annotations

import asyncio
import shutil
import struct
import subprocess
import time
import uuid
import warnings
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic

from headwater.broker import ApiKey
from headwater.store import partition_for_key

from .running import BrokerProcess, Connection, fetch_body

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import kafka
    import kafka.admin

RECORDS = 20_000
KEYS = 100
CODECS = ["gzip", "snappy", "lz4", "zstd"]
CODEC_IDS = {"gzip": 1, "snappy": 2, "lz4": 3, "zstd": 4}
BIG = 1_000_000  # a ~1 MB record
BIG_TOPIC_CONFIG = {"max.message.bytes": "2000000"}


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    process = BrokerProcess(tmp_path_factory.mktemp("clients") / "data").start()
    yield process
    assert process.stop() == 0, process.log()


def topic_name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def create_topic(
    broker: BrokerProcess, prefix: str, partitions: int = 1, config: dict[str, str] | None = None
) -> str:
    name = topic_name(prefix)
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    futures = admin.create_topics([NewTopic(name, partitions, 1, config=config or {})])
    futures[name].result(timeout=30)
    return name


def keyed_values(count: int = RECORDS) -> list[tuple[bytes, bytes]]:
    """(key, value) pairs: KEYS keys, each value naming its key and its place among them."""
    seen: dict[int, int] = defaultdict(int)
    pairs = []
    for i in range(count):
        k = i % KEYS
        pairs.append((b"key-%d" % k, b"key-%d:%d" % (k, seen[k])))
        seen[k] += 1
    return pairs


def check_keyed(
    consumed: list[tuple[int, int, bytes, bytes]], partitions: int, count: int = RECORDS
) -> None:
    """Check (partition, offset, key, value) records: all there, per-key order, dense offsets.

    Keys must sit where Kafka's murmur2 partitioner puts them.
    """
    assert len(consumed) == count
    by_key: dict[bytes, list[int]] = defaultdict(list)
    by_partition: dict[int, list[int]] = defaultdict(list)
    for partition, offset, key, value in consumed:
        assert value.startswith(key + b":")
        by_key[key].append(int(value.split(b":")[1]))
        by_partition[partition].append(offset)
        assert partition == partition_for_key(key, partitions)
    for key, places in by_key.items():
        assert places == list(range(len(places))), key
    for offsets in by_partition.values():
        assert offsets == list(range(len(offsets)))  # dense, from 0, in order


def assert_stored_with(broker: BrokerProcess, topic: str, codec: str) -> None:
    """Check that partition 0 holds the client's compressed batches, as they were sent.

    A client may send a batch uncompressed when compressing would not shrink it
    (kafka-python does), so batches without a codec may be there too.
    """
    codecs = stored_codecs(broker, topic)
    assert CODEC_IDS[codec] in codecs and codecs <= {0, CODEC_IDS[codec]}, codecs


def stored_codecs(broker: BrokerProcess, topic: str) -> set[int]:
    """The codec bits of the batches stored in partition 0, read with our own codec."""
    with Connection(broker.port) as conn:
        body = conn.request(ApiKey.FETCH, 12, fetch_body(topic, {0: 0}))
    data = bytes(body["responses"][0]["partitions"][0]["records"])
    codecs = set()
    position = 0
    while position + 61 <= len(data):
        length = struct.unpack_from(">i", data, position + 8)[0]
        if position + 12 + length > len(data):
            break
        codecs.add(struct.unpack_from(">h", data, position + 21)[0] & 7)
        position += 12 + length
    return codecs


# -- confluent-kafka (librdkafka) ----------------------------------------------------------


def confluent_producer(broker: BrokerProcess, **config: Any) -> Producer:
    return Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 5, **config})


def confluent_produce(
    producer: Producer, topic: str, items: list[dict[str, Any]], timeout_s: float = 60
) -> list[Any]:
    """Produce; return the delivered messages in delivery order, failing on any error."""
    delivered: list[Any] = []
    errors: list[Any] = []

    def report(err: KafkaError | None, msg: Any) -> None:
        (errors if err is not None else delivered).append(err or msg)

    for item in items:
        while True:
            try:
                producer.produce(topic, on_delivery=report, **item)
                break
            except BufferError:
                producer.poll(0.05)
    assert producer.flush(timeout_s) == 0
    assert not errors, errors[:3]
    return delivered


def confluent_consume(
    broker: BrokerProcess, topic: str, partitions: int, count: int, **config: Any
) -> list[Any]:
    consumer = Consumer(
        {
            "bootstrap.servers": broker.bootstrap,
            "group.id": topic_name("assign-only"),
            "enable.auto.commit": False,
            **config,
        }
    )
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)])
    messages: list[Any] = []
    deadline = time.monotonic() + 60
    try:
        while len(messages) < count and time.monotonic() < deadline:
            for message in consumer.consume(5000, 0.5):
                if message.error() is not None:
                    raise KafkaException(message.error())
                messages.append(message)
    finally:
        consumer.close()
    return messages


def test_confluent_metadata_create_and_delete_topics(broker: BrokerProcess) -> None:
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    name = topic_name("cf-admin")
    futures = admin.create_topics(
        [NewTopic(name, 3, 1, config={"retention.ms": "3600000"})], operation_timeout=10
    )
    futures[name].result(10)
    metadata = admin.list_topics(timeout=10)
    assert metadata.controller_id == 0
    assert [b.port for b in metadata.brokers.values()] == [broker.port]
    assert sorted(metadata.topics[name].partitions) == [0, 1, 2]
    assert all(p.leader == 0 for p in metadata.topics[name].partitions.values())
    resource = ConfigResource(ConfigResource.Type.TOPIC, name)
    configs = admin.describe_configs([resource])[resource].result(10)
    assert configs["retention.ms"].value == "3600000"
    with pytest.raises(KafkaException) as exists:
        admin.create_topics([NewTopic(name, 1, 1)])[name].result(10)
    assert exists.value.args[0].code() == KafkaError.TOPIC_ALREADY_EXISTS
    admin.delete_topics([name], operation_timeout=10)[name].result(10)
    assert name not in admin.list_topics(timeout=10).topics


def test_confluent_keyed_records_keep_per_key_order(broker: BrokerProcess) -> None:
    topic = create_topic(broker, "cf-keyed", partitions=4)
    pairs = keyed_values()
    producer = confluent_producer(broker, acks="all", partitioner="murmur2_random")
    confluent_produce(producer, topic, [{"key": k, "value": v} for k, v in pairs])
    messages = confluent_consume(broker, topic, 4, len(pairs))
    check_keyed([(m.partition(), m.offset(), m.key(), m.value()) for m in messages], 4)


def test_confluent_idempotent_producer(broker: BrokerProcess) -> None:
    topic = create_topic(broker, "cf-idem", partitions=2)
    producer = confluent_producer(broker, **{"enable.idempotence": True, "linger.ms": 1})
    values = [b"%d" % i for i in range(5000)]
    delivered = confluent_produce(producer, topic, [{"value": v} for v in values])
    assert sorted(m.value() for m in delivered) == sorted(values)
    messages = confluent_consume(broker, topic, 2, len(values))
    assert sorted(m.value() for m in messages) == sorted(values)  # no duplicates
    for partition in (0, 1):
        offsets = [m.offset() for m in messages if m.partition() == partition]
        assert offsets == list(range(len(offsets)))


@pytest.mark.parametrize("codec", CODECS)
def test_confluent_compression(broker: BrokerProcess, codec: str) -> None:
    topic = create_topic(broker, f"cf-{codec}")
    values = [b'{"n": %d, "pad": "%s"}' % (i, b"x" * (i % 50)) for i in range(3000)]
    producer = confluent_producer(broker, **{"compression.type": codec})
    confluent_produce(producer, topic, [{"value": v} for v in values])
    assert_stored_with(broker, topic, codec)
    messages = confluent_consume(broker, topic, 1, len(values))
    assert [m.value() for m in messages] == values


def test_confluent_headers_and_timestamps(broker: BrokerProcess) -> None:
    topic = create_topic(broker, "cf-headers")
    items = [
        {"value": b"a", "headers": [("h1", b"x"), ("h2", None)], "timestamp": 1_600_000_000_000},
        {"value": b"b", "key": b"k", "headers": [("h1", b"y")], "timestamp": 1_600_000_001_000},
    ]
    confluent_produce(confluent_producer(broker), topic, items)
    first, second = confluent_consume(broker, topic, 1, 2)
    assert first.headers() == [("h1", b"x"), ("h2", None)]
    assert second.headers() == [("h1", b"y")] and second.key() == b"k"
    assert first.timestamp() == (1, 1_600_000_000_000)  # TIMESTAMP_CREATE_TIME
    assert second.timestamp() == (1, 1_600_000_001_000)


def test_confluent_one_megabyte_record(broker: BrokerProcess) -> None:
    topic = create_topic(broker, "cf-big", config=BIG_TOPIC_CONFIG)
    value = bytes(range(256)) * (BIG // 256)
    producer = confluent_producer(broker, **{"message.max.bytes": 2_000_000})
    confluent_produce(producer, topic, [{"value": value}, {"value": b"small"}])
    messages = confluent_consume(broker, topic, 1, 2)
    assert [m.value() for m in messages] == [value, b"small"]


def test_confluent_watermarks_and_offsets_for_times(broker: BrokerProcess) -> None:
    topic = create_topic(broker, "cf-offsets")
    items = [{"value": b"%d" % i, "timestamp": 1_000_000 + i * 1000} for i in range(10)]
    confluent_produce(confluent_producer(broker), topic, items)
    consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "w"})
    try:
        assert consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=10) == (0, 10)
        found = consumer.offsets_for_times([TopicPartition(topic, 0, 1_004_500)], timeout=10)
        assert found[0].offset == 5
        beyond = consumer.offsets_for_times([TopicPartition(topic, 0, 9_000_000)], timeout=10)
        assert beyond[0].offset == -1  # OFFSET_END: nothing that late
    finally:
        consumer.close()


# -- kafka-python --------------------------------------------------------------------------


def kp_consume(broker: BrokerProcess, topic: str, partitions: int, count: int) -> list[Any]:
    consumer = kafka.KafkaConsumer(
        bootstrap_servers=broker.bootstrap,
        enable_auto_commit=False,
        consumer_timeout_ms=10_000,
        fetch_max_bytes=4 << 20,
        max_partition_fetch_bytes=2 << 20,
    )
    try:
        consumer.assign([kafka.TopicPartition(topic, p) for p in range(partitions)])
        consumer.seek_to_beginning()
        records = []
        for record in consumer:
            records.append(record)
            if len(records) == count:
                break
        return records
    finally:
        consumer.close()


def test_kafka_python_metadata_create_and_delete_topics(broker: BrokerProcess) -> None:
    admin = kafka.admin.KafkaAdminClient(bootstrap_servers=broker.bootstrap)
    try:
        name = topic_name("kp-admin")
        admin.create_topics([kafka.admin.NewTopic(name, 2, 1)])
        assert name in admin.list_topics()
        (described,) = admin.describe_topics([name])
        assert len(described["partitions"]) == 2
        admin.delete_topics([name])
        assert name not in admin.list_topics()
    finally:
        admin.close()


def test_kafka_python_keyed_records_idempotent_and_headers(broker: BrokerProcess) -> None:
    topic = create_topic(broker, "kp-keyed", partitions=4)
    producer = kafka.KafkaProducer(
        bootstrap_servers=broker.bootstrap, acks="all", enable_idempotence=True, linger_ms=5
    )
    pairs = keyed_values()
    for key, value in pairs:
        producer.send(topic, key=key, value=value)
    stamped = producer.send(
        topic, key=b"key-0", value=b"key-0:%d" % (RECORDS // KEYS), headers=[("h", b"1")],
        timestamp_ms=1_600_000_000_000,
    )  # fmt: skip
    producer.flush()
    assert stamped.get(timeout=10).partition == partition_for_key(b"key-0", 4)
    producer.close()
    records = kp_consume(broker, topic, 4, RECORDS + 1)
    check_keyed([(r.partition, r.offset, r.key, r.value) for r in records], 4, RECORDS + 1)
    (last,) = [r for r in records if r.headers]
    assert (last.headers, last.timestamp) == ([("h", b"1")], 1_600_000_000_000)


@pytest.mark.parametrize("codec", CODECS)
def test_kafka_python_compression(broker: BrokerProcess, codec: str) -> None:
    topic = create_topic(broker, f"kp-{codec}")
    producer = kafka.KafkaProducer(bootstrap_servers=broker.bootstrap, compression_type=codec)
    values = [b"value %d %s" % (i, b"y" * (i % 30)) for i in range(1000)]
    for value in values:
        producer.send(topic, value=value)
    producer.flush()
    producer.close()
    assert_stored_with(broker, topic, codec)
    assert [r.value for r in kp_consume(broker, topic, 1, len(values))] == values


def test_kafka_python_big_record_watermarks_and_offsets_for_times(broker: BrokerProcess) -> None:
    topic = create_topic(broker, "kp-big", config=BIG_TOPIC_CONFIG)
    producer = kafka.KafkaProducer(bootstrap_servers=broker.bootstrap, max_request_size=2_000_000)
    value = b"z" * BIG
    producer.send(topic, value=value, timestamp_ms=2_000_000).get(timeout=30)
    producer.send(topic, value=b"small", timestamp_ms=3_000_000).get(timeout=30)
    producer.close()
    assert [r.value for r in kp_consume(broker, topic, 1, 2)] == [value, b"small"]
    consumer = kafka.KafkaConsumer(bootstrap_servers=broker.bootstrap)
    try:
        tp = kafka.TopicPartition(topic, 0)
        assert consumer.beginning_offsets([tp]) == {tp: 0}
        assert consumer.end_offsets([tp]) == {tp: 2}
        found = consumer.offsets_for_times({tp: 2_500_000})[tp]
        assert (found.offset, found.timestamp) == (1, 3_000_000)
    finally:
        consumer.close()


# -- aiokafka ------------------------------------------------------------------------------


def run_asyncio(coroutine: Any) -> Any:
    return asyncio.run(coroutine)


async def aio_consume(broker: BrokerProcess, topic: str, partitions: int, count: int) -> list[Any]:
    from aiokafka import AIOKafkaConsumer
    from aiokafka.structs import TopicPartition as AioTopicPartition

    consumer = AIOKafkaConsumer(
        bootstrap_servers=broker.bootstrap,
        enable_auto_commit=False,
        max_partition_fetch_bytes=2 << 20,
        fetch_max_bytes=4 << 20,
    )
    await consumer.start()
    try:
        consumer.assign([AioTopicPartition(topic, p) for p in range(partitions)])
        await consumer.seek_to_beginning()
        records: list[Any] = []
        deadline = time.monotonic() + 60
        while len(records) < count and time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=500, max_records=5000)
            for batch in batches.values():
                records.extend(batch)
        return records
    finally:
        await consumer.stop()


def test_aiokafka_metadata_create_and_delete_topics(broker: BrokerProcess) -> None:
    from aiokafka.admin import AIOKafkaAdminClient
    from aiokafka.admin import NewTopic as AioNewTopic

    async def scenario() -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=broker.bootstrap)
        await admin.start()
        try:
            name = topic_name("aio-admin")
            await admin.create_topics([AioNewTopic(name, 2, 1)])
            assert name in await admin.list_topics()
            await admin.delete_topics([name])
            assert name not in await admin.list_topics()
        finally:
            await admin.close()

    run_asyncio(scenario())


def test_aiokafka_keyed_idempotent_records_headers_and_offsets(broker: BrokerProcess) -> None:
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
    from aiokafka.structs import TopicPartition as AioTopicPartition

    topic = create_topic(broker, "aio-keyed", partitions=4)
    pairs = keyed_values()
    tomorrow = int(time.time() * 1000) + 86_400_000  # later than every other record

    async def scenario() -> None:
        producer = AIOKafkaProducer(
            bootstrap_servers=broker.bootstrap, enable_idempotence=True, linger_ms=5
        )
        await producer.start()
        try:
            futures = [await producer.send(topic, key=k, value=v) for k, v in pairs]
            last = await producer.send_and_wait(
                topic, key=b"key-1", value=b"key-1:%d" % (RECORDS // KEYS), headers=[("h", b"2")],
                timestamp_ms=tomorrow,
            )  # fmt: skip
            await asyncio.gather(*futures)
        finally:
            await producer.stop()
        records = await aio_consume(broker, topic, 4, RECORDS + 1)
        check_keyed([(r.partition, r.offset, r.key, r.value) for r in records], 4, RECORDS + 1)
        (stamped,) = [r for r in records if r.headers]
        assert stamped.headers == (("h", b"2"),) or list(stamped.headers) == [("h", b"2")]
        assert stamped.timestamp == tomorrow
        consumer = AIOKafkaConsumer(bootstrap_servers=broker.bootstrap)
        await consumer.start()
        try:
            tp = AioTopicPartition(topic, last.partition)
            assert (await consumer.end_offsets([tp]))[tp] == last.offset + 1
            assert (await consumer.beginning_offsets([tp]))[tp] == 0
            found = (await consumer.offsets_for_times({tp: tomorrow}))[tp]
            assert found is not None and found.offset == last.offset
        finally:
            await consumer.stop()

    run_asyncio(scenario())


@pytest.mark.parametrize("codec", CODECS)
def test_aiokafka_compression_and_big_record(broker: BrokerProcess, codec: str) -> None:
    from aiokafka import AIOKafkaProducer

    topic = create_topic(broker, f"aio-{codec}", config=BIG_TOPIC_CONFIG)
    values = [b"aio %d %s" % (i, b"q" * (i % 40)) for i in range(1000)]
    big = b"b" * BIG if codec == "zstd" else None

    async def scenario() -> list[Any]:
        producer = AIOKafkaProducer(
            bootstrap_servers=broker.bootstrap, compression_type=codec, max_request_size=2_000_000
        )
        await producer.start()
        try:
            for value in values:
                await producer.send(topic, value=value)
            if big is not None:
                await producer.send_and_wait(topic, value=big)
            await producer.flush()
        finally:
            await producer.stop()
        return await aio_consume(broker, topic, 1, len(values) + (big is not None))

    records = run_asyncio(scenario())
    assert_stored_with(broker, topic, codec)
    expected = values + ([big] if big is not None else [])
    assert [r.value for r in records] == expected


# -- kcat ----------------------------------------------------------------------------------


def kcat(*args: str, input: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    path = shutil.which("kcat")
    if path is None:
        pytest.fail(
            "kcat is not installed: `make test` installs it (apt-get install kcat); "
            "install Debian's kcat package to run the kcat tests"
        )
    return subprocess.run([path, *args], input=input, capture_output=True, timeout=60, check=False)


def test_kcat_lists_produces_and_consumes(broker: BrokerProcess) -> None:
    topic = create_topic(broker, "kcat", partitions=2)
    listed = kcat("-b", broker.bootstrap, "-L")
    assert listed.returncode == 0, listed.stderr
    assert b"1 brokers:" in listed.stdout and b"(controller)" in listed.stdout
    assert f'topic "{topic}" with 2 partitions'.encode() in listed.stdout
    lines = b"".join(b"k%d:value %d\n" % (i % 5, i) for i in range(500))
    produced = kcat("-b", broker.bootstrap, "-P", "-t", topic, "-K:", "-z", "lz4", input=lines)
    assert produced.returncode == 0, produced.stderr
    consumed = kcat(
        "-b", broker.bootstrap, "-C", "-t", topic, "-o", "beginning", "-e", "-f", "%p %o %k %s\n"
    )
    assert consumed.returncode == 0, consumed.stderr
    rows = [line.split(b" ", 3) for line in consumed.stdout.splitlines()]
    assert len(rows) == 500
    assert sorted(int(r[3].split()[1]) for r in rows) == list(range(500))
    by_key: dict[bytes, list[int]] = defaultdict(list)
    for partition in (b"0", b"1"):
        in_partition = [r for r in rows if r[0] == partition]
        assert [int(r[1]) for r in in_partition] == list(range(len(in_partition)))
        for r in in_partition:
            by_key[r[2]].append(int(r[3].split()[1]))
    for key, numbers in by_key.items():
        assert numbers == sorted(numbers), key  # per-key order kept


# -- crash ---------------------------------------------------------------------------------


def test_every_acknowledged_record_survives_kill_9(tmp_path: Path) -> None:
    broker = BrokerProcess(tmp_path / "data").start()
    try:
        topic = create_topic(broker, "crash", partitions=2)
        producer = confluent_producer(broker, acks="all", **{"enable.idempotence": True})
        values = [b"record %d" % i for i in range(20_000)]
        delivered = confluent_produce(producer, topic, [{"value": v} for v in values])
        acknowledged = {(m.partition(), m.offset()): m.value() for m in delivered}
        assert len(acknowledged) == len(values)
        broker.kill()
        broker.start()
        messages = confluent_consume(broker, topic, 2, len(values))
        found = {(m.partition(), m.offset()): m.value() for m in messages}
        assert found == acknowledged
    finally:
        if broker.alive():
            broker.stop()
