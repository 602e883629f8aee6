"""Consumer groups through ``headwater broker`` with real clients.

One broker subprocess (short initial rebalance delay) serves the module. Scenarios: commit,
close and resume from the committed offset with nothing committed read twice
(confluent-kafka, kafka-python, kcat); two consumers in one group split four partitions
and one takes over all four when the other leaves (confluent-kafka); list and describe
groups (confluent-kafka's AdminClient).
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
import uuid
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from confluent_kafka import Consumer as ConfluentConsumer
from confluent_kafka import ConsumerGroupState, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from headwater.broker import ApiKey

from .running import BrokerProcess, Connection

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import kafka

RECORDS = 40


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    process = BrokerProcess(tmp_path_factory.mktemp("groups") / "data").start()
    yield process
    assert process.stop() == 0, process.log()


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def topic_with_records(broker: BrokerProcess, partitions: int, count: int = RECORDS) -> str:
    """Create a topic and produce ``count`` records ``b"0"``, ``b"1"``... round the partitions."""
    name = unique("groups")
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    admin.create_topics([NewTopic(name, partitions, 1)])[name].result(timeout=30)
    produce(broker, name, range(count), partitions)
    return name


def produce(broker: BrokerProcess, topic: str, values: range, partitions: int) -> None:
    producer = Producer({"bootstrap.servers": broker.bootstrap, "acks": "all"})
    for i in values:
        producer.produce(topic, value=b"%d" % i, partition=i % partitions)
    assert producer.flush(30) == 0


def confluent_consumer(broker: BrokerProcess, group: str, **config: Any) -> ConfluentConsumer:
    return ConfluentConsumer(
        {
            "bootstrap.servers": broker.bootstrap,
            "group.id": group,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "session.timeout.ms": 6000,
            "heartbeat.interval.ms": 300,
            **config,
        }
    )


def poll_values(consumer: ConfluentConsumer, count: int, timeout_s: float = 20.0) -> list[bytes]:
    """Poll until ``count`` values arrived (then a little longer, to catch extra ones)."""
    values: list[bytes] = []
    deadline = time.monotonic() + timeout_s
    while len(values) < count and time.monotonic() < deadline:
        msg = consumer.poll(0.2)
        if msg is None:
            continue
        assert msg.error() is None, msg.error()
        values.append(msg.value())
    return values


def wait_until(condition: Callable[[], bool], timeout_s: float, *idle: ConfluentConsumer) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        for consumer in idle:
            msg = consumer.poll(0.1)
            assert msg is None or msg.error() is None


def test_confluent_commit_close_and_resume(broker: BrokerProcess) -> None:
    topic = topic_with_records(broker, partitions=2)
    group = unique("cg")
    first = confluent_consumer(broker, group)
    first.subscribe([topic])
    before = poll_values(first, RECORDS // 2)
    assert len(before) == RECORDS // 2
    first.commit(asynchronous=False)
    first.close()

    second = confluent_consumer(broker, group)
    second.subscribe([topic])
    after = poll_values(second, RECORDS - len(before))
    assert second.poll(1.0) is None  # nothing more: no committed record comes again
    second.close()
    assert sorted(before + after, key=int) == [b"%d" % i for i in range(RECORDS)]


def test_confluent_two_consumers_split_then_one_takes_over(broker: BrokerProcess) -> None:
    topic = topic_with_records(broker, partitions=4)
    group = unique("split")
    one = confluent_consumer(broker, group)
    two = confluent_consumer(broker, group)
    one.subscribe([topic])
    two.subscribe([topic])

    def split() -> bool:
        a = {tp.partition for tp in one.assignment()}
        b = {tp.partition for tp in two.assignment()}
        return len(a) == 2 and len(b) == 2 and a | b == {0, 1, 2, 3}

    wait_until(split, 30, one, two)
    two.close()
    wait_until(lambda: len(one.assignment()) == 4, 30, one)
    values = poll_values(one, RECORDS)
    # Nothing was committed: whoever owns a partition reads it from the start.
    assert set(values) == {b"%d" % i for i in range(RECORDS)}
    one.close()


def test_confluent_assign_mode_commits_plainly(broker: BrokerProcess) -> None:
    # assign() without subscribe(): OffsetCommit with generation -1 on an Empty group.
    topic = topic_with_records(broker, partitions=2, count=4)
    group = unique("assigned")
    consumer = confluent_consumer(broker, group)
    consumer.assign([TopicPartition(topic, 0, 0), TopicPartition(topic, 1, 0)])
    assert len(poll_values(consumer, 4)) == 4
    consumer.commit(asynchronous=False)
    committed = consumer.committed([TopicPartition(topic, 0), TopicPartition(topic, 1)], 10)
    assert [tp.offset for tp in committed] == [2, 2]
    consumer.close()
    fresh = confluent_consumer(broker, unique("fresh"))
    [nothing] = fresh.committed([TopicPartition(topic, 0)], 10)
    assert nothing.offset < 0  # OffsetFetch answered -1: nothing committed
    fresh.close()


def test_wire_codes_for_join_commit_and_fetch(broker: BrokerProcess) -> None:
    topic = topic_with_records(broker, partitions=1, count=1)
    group = unique("wire")
    join = {
        "group_id": group,
        "session_timeout_ms": 6000,
        "rebalance_timeout_ms": 6000,
        "member_id": "",
        "group_instance_id": None,
        "protocol_type": "consumer",
        "protocols": [{"name": "range", "metadata": b""}],
    }
    with Connection(broker.port) as conn:
        answer = conn.request(ApiKey.JOIN_GROUP, 5, join)
        assert answer["error_code"] == 79 and answer["member_id"]  # MEMBER_ID_REQUIRED
        joined = conn.request(ApiKey.JOIN_GROUP, 5, {**join, "member_id": answer["member_id"]})
        assert joined["error_code"] == 0 and joined["leader"] == answer["member_id"]
        beat = {"group_id": group, "generation_id": joined["generation_id"] + 1}
        beat |= {"member_id": answer["member_id"], "group_instance_id": None}
        assert conn.request(ApiKey.HEARTBEAT, 3, beat)["error_code"] == 22  # ILLEGAL_GENERATION
        beat |= {"member_id": "nobody"}
        assert conn.request(ApiKey.HEARTBEAT, 3, beat)["error_code"] == 25  # UNKNOWN_MEMBER_ID
        leave = {"group_id": group, "members": [{"member_id": answer["member_id"]}]}
        assert conn.request(ApiKey.LEAVE_GROUP, 3, leave)["error_code"] == 0

        commit = {
            "group_id": unique("plain"),
            "generation_id_or_member_epoch": -1,
            "member_id": "",
            "retention_time_ms": -1,
            "topics": [
                {
                    "name": topic,
                    "partitions": [
                        {"partition_index": 0, "committed_offset": 1, "committed_metadata": "m"},
                        {"partition_index": 7, "committed_offset": 1, "committed_metadata": ""},
                    ],
                }
            ],
        }
        [answered] = conn.request(ApiKey.OFFSET_COMMIT, 2, commit)["topics"]
        assert [p["error_code"] for p in answered["partitions"]] == [0, 3]
        fetch = {"group_id": commit["group_id"], "topics": None}
        [fetched] = conn.request(ApiKey.OFFSET_FETCH, 5, fetch)["topics"]
        [offset] = fetched["partitions"]
        assert (offset["committed_offset"], offset["metadata"]) == (1, "m")
        fetch = {"group_id": commit["group_id"], "topics": [
            {"name": topic, "partition_indexes": [0]}, {"name": "none", "partition_indexes": [0]}
        ]}  # fmt: skip
        answered = conn.request(ApiKey.OFFSET_FETCH, 5, fetch)["topics"]
        assert [t["partitions"][0]["committed_offset"] for t in answered] == [1, -1]


def test_confluent_admin_lists_and_describes_groups(broker: BrokerProcess) -> None:
    topic = topic_with_records(broker, partitions=2, count=4)
    group = unique("admin")
    consumer = confluent_consumer(broker, group)
    consumer.subscribe([topic])
    assert len(poll_values(consumer, 4)) == 4
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    try:
        listed = admin.list_consumer_groups(request_timeout=10).result()
        states = {g.group_id: g.state for g in listed.valid}
        assert states.get(group) == ConsumerGroupState.STABLE, states
        [described] = admin.describe_consumer_groups([group], request_timeout=10).values()
        description = described.result()
        assert description.state == ConsumerGroupState.STABLE
        [member] = description.members
        assert {tp.partition for tp in member.assignment.topic_partitions} == {0, 1}
    finally:
        consumer.close()


def test_kafka_python_commit_close_and_resume(broker: BrokerProcess) -> None:
    topic = topic_with_records(broker, partitions=2)
    group = unique("kp")

    def consumer() -> Any:
        c = kafka.KafkaConsumer(
            bootstrap_servers=broker.bootstrap,
            group_id=group,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            session_timeout_ms=6000,
            heartbeat_interval_ms=300,
        )
        c.subscribe([topic])
        return c

    def take(c: Any, count: int, timeout_s: float = 20.0) -> list[bytes]:
        values: list[bytes] = []
        deadline = time.monotonic() + timeout_s
        while len(values) < count and time.monotonic() < deadline:
            for records in c.poll(200, max_records=count - len(values)).values():
                values.extend(r.value for r in records)
        return values

    first = consumer()
    before = take(first, RECORDS // 2)
    assert len(before) == RECORDS // 2
    first.commit()
    first.close()

    second = consumer()
    after = take(second, RECORDS - len(before))
    assert not any(second.poll(1000).values())
    second.close()
    assert sorted(before + after, key=int) == [b"%d" % i for i in range(RECORDS)]


def test_aiokafka_commit_close_and_resume(broker: BrokerProcess) -> None:
    from aiokafka import AIOKafkaConsumer

    topic = topic_with_records(broker, partitions=2)
    group = unique("aio")

    async def take(count: int, *, commit: bool) -> list[bytes]:
        consumer = AIOKafkaConsumer(
            topic,
            bootstrap_servers=broker.bootstrap,
            group_id=group,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            session_timeout_ms=6000,
            heartbeat_interval_ms=300,
        )
        await consumer.start()
        values: list[bytes] = []
        try:
            deadline = time.monotonic() + 20
            while len(values) < count and time.monotonic() < deadline:
                batches = await consumer.getmany(timeout_ms=200, max_records=count - len(values))
                for records in batches.values():
                    values.extend(r.value for r in records)
            if commit:
                await consumer.commit()
            else:
                extra = await consumer.getmany(timeout_ms=1000)
                assert not any(extra.values()), "records past the committed ones came back"
        finally:
            await consumer.stop()
        return values

    before = asyncio.run(take(RECORDS // 2, commit=True))
    assert len(before) == RECORDS // 2
    after = asyncio.run(take(RECORDS - len(before), commit=False))
    assert sorted(before + after, key=int) == [b"%d" % i for i in range(RECORDS)]


def kcat(*args: str) -> subprocess.CompletedProcess[bytes]:
    path = shutil.which("kcat")
    if path is None:
        pytest.fail(
            "kcat is not installed: `make test` installs it (apt-get install kcat); "
            "install Debian's kcat package to run the kcat tests"
        )
    return subprocess.run([path, *args], capture_output=True, timeout=60, check=True)


def test_kcat_balanced_consumer_resumes_from_commit(broker: BrokerProcess) -> None:
    topic = topic_with_records(broker, partitions=2, count=10)
    group = unique("kcat")
    args = ("-b", broker.bootstrap, "-G", group, "-e", "-f", "%s\\n")
    args += ("-X", "auto.offset.reset=earliest", "-X", "session.timeout.ms=6000", topic)
    first = kcat(*args).stdout.split()
    assert sorted(first, key=int) == [b"%d" % i for i in range(10)]
    produce(broker, topic, range(10, 15), 2)
    second = kcat(*args).stdout.split()
    assert sorted(second, key=int) == [b"%d" % i for i in range(10, 15)]
