"""Transactions with real Kafka clients, against ``headwater broker`` and Apache Kafka alike.

Every scenario runs twice with the same assertions: against a ``headwater broker``
subprocess and against the Apache Kafka fixture (skipped where Kafka cannot run, see
``tests/conftest.py``). confluent-kafka (librdkafka) and aiokafka write transactions;
confluent-kafka and kafka-python read them with ``read_committed`` and
``read_uncommitted``. The crash scenarios (``kill -9`` of the broker mid-transaction) run
against a headwater broker of their own, and against an Apache Kafka of their own (the
session's fixture is shared), with the same assertions.
"""

from __future__ import annotations

import asyncio
import time
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from apache_kafka.running import KafkaProcess, KafkaUnavailableError
from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient, NewTopic

from .conftest import Cluster
from .running import BrokerProcess

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import kafka

TIMEOUT_S = 60.0


def new_topic(bootstrap: str, prefix: str, partitions: int = 1) -> str:
    name = f"{prefix}-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(name, partitions, 1)])[name].result(timeout=30)
    return name


def txn_producer(bootstrap: str, transactional_id: str | None = None, **config: Any) -> Producer:
    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "transactional.id": transactional_id or f"tx-{uuid.uuid4().hex[:8]}",
            "linger.ms": 5,
            **config,
        }
    )
    producer.init_transactions(TIMEOUT_S)
    return producer


def send(producer: Producer, topic: str, values: list[bytes], partition: int = 0) -> None:
    """Produce ``values`` and wait until they are written (still in the transaction)."""
    errors: list[Any] = []
    for value in values:
        producer.produce(
            topic, value=value, partition=partition, on_delivery=lambda e, m: errors.append(e)
        )
    assert producer.flush(TIMEOUT_S) == 0
    assert not [e for e in errors if e is not None], errors


def read_all(
    bootstrap: str, topic: str, isolation: str, partitions: int = 1
) -> list[tuple[int, bytes]]:
    """Every (offset, value) a consumer at ``isolation`` reads up to where it stops (EOF)."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"reader-{uuid.uuid4().hex[:8]}",
            "isolation.level": isolation,
            "enable.partition.eof": True,
            "enable.auto.commit": False,
        }
    )
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)])
    out: list[tuple[int, bytes]] = []
    at_end: set[int] = set()
    deadline = time.monotonic() + TIMEOUT_S
    try:
        while len(at_end) < partitions:
            assert time.monotonic() < deadline, "no end of partition"
            message = consumer.poll(1.0)
            if message is None:
                continue
            if message.error() is not None:
                assert message.error().code() == KafkaError._PARTITION_EOF, message.error()
                at_end.add(message.partition())
                continue
            out.append((message.offset(), message.value()))
    finally:
        consumer.close()
    return out


def values(records: list[tuple[int, bytes]]) -> list[bytes]:
    return [v for _, v in records]


def wait_for_values(bootstrap: str, topic: str, isolation: str, wanted: list[bytes]) -> list[bytes]:
    """Read at ``isolation`` until ``wanted`` values came (in order); return all read."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"waiter-{uuid.uuid4().hex[:8]}",
            "isolation.level": isolation,
            "enable.auto.commit": False,
        }
    )
    consumer.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
    got: list[bytes] = []
    deadline = time.monotonic() + TIMEOUT_S
    try:
        while got[-len(wanted) :] != wanted:
            assert time.monotonic() < deadline, got
            message = consumer.poll(1.0)
            if message is not None and message.error() is None:
                got.append(message.value())
    finally:
        consumer.close()
    return got


# -- commit, abort, isolation ------------------------------------------------------------


def test_commit_abort_commit_as_each_reader_sees_it(cluster: Cluster) -> None:
    topic = new_topic(cluster.bootstrap, "tx-cac")
    producer = txn_producer(cluster.bootstrap)
    for i, commit in enumerate((True, False, True)):
        producer.begin_transaction()
        send(producer, topic, [b"t%d-%d" % (i, j) for j in range(3)])
        if commit:
            producer.commit_transaction(TIMEOUT_S)
        else:
            producer.abort_transaction(TIMEOUT_S)
    committed = read_all(cluster.bootstrap, topic, "read_committed")
    uncommitted = read_all(cluster.bootstrap, topic, "read_uncommitted")
    assert values(committed) == [b"t0-0", b"t0-1", b"t0-2", b"t2-0", b"t2-1", b"t2-2"]
    assert values(uncommitted) == [b"t%d-%d" % (i, j) for i in range(3) for j in range(3)]
    # Markers take offsets, as in Kafka: one after each transaction's records.
    assert [o for o, _ in uncommitted] == [0, 1, 2, 4, 5, 6, 8, 9, 10]
    consumer = Consumer({"bootstrap.servers": cluster.bootstrap, "group.id": "wm"})
    try:
        assert consumer.get_watermark_offsets(TopicPartition(topic, 0), TIMEOUT_S) == (0, 12)
    finally:
        consumer.close()


def test_an_open_transaction_is_invisible_to_read_committed_until_it_commits(
    cluster: Cluster,
) -> None:
    topic = new_topic(cluster.bootstrap, "tx-open")
    plain = Producer({"bootstrap.servers": cluster.bootstrap})
    plain.produce(topic, value=b"before", partition=0)
    assert plain.flush(TIMEOUT_S) == 0
    producer = txn_producer(cluster.bootstrap)
    producer.begin_transaction()
    send(producer, topic, [b"open-1", b"open-2"])
    plain.produce(topic, value=b"after", partition=0)  # past the open transaction
    assert plain.flush(TIMEOUT_S) == 0
    # read_committed stops at the last stable offset: the open transaction's first offset.
    assert values(read_all(cluster.bootstrap, topic, "read_committed")) == [b"before"]
    assert values(read_all(cluster.bootstrap, topic, "read_uncommitted")) == [
        b"before",
        b"open-1",
        b"open-2",
        b"after",
    ]
    producer.commit_transaction(TIMEOUT_S)
    assert values(read_all(cluster.bootstrap, topic, "read_committed")) == [
        b"before",
        b"open-1",
        b"open-2",
        b"after",
    ]


def test_kafka_python_reads_committed_and_uncommitted(cluster: Cluster) -> None:
    topic = new_topic(cluster.bootstrap, "tx-kp")
    producer = txn_producer(cluster.bootstrap)
    producer.begin_transaction()
    send(producer, topic, [b"a1", b"a2"])
    producer.abort_transaction(TIMEOUT_S)
    producer.begin_transaction()
    send(producer, topic, [b"c1"])
    producer.commit_transaction(TIMEOUT_S)
    seen = {}
    for isolation in ("read_committed", "read_uncommitted"):
        consumer = kafka.KafkaConsumer(
            bootstrap_servers=cluster.bootstrap,
            isolation_level=isolation,
            enable_auto_commit=False,
            consumer_timeout_ms=3000,
        )
        tp = kafka.TopicPartition(topic, 0)
        consumer.assign([tp])
        consumer.seek_to_beginning(tp)
        got: list[bytes] = []
        deadline = time.monotonic() + TIMEOUT_S
        # Until the position passes the last marker: everything before it was delivered.
        while consumer.position(tp) < 5 and time.monotonic() < deadline:
            for records in consumer.poll(1000).values():
                got.extend(r.value for r in records)
        consumer.close()
        seen[isolation] = got
    assert seen["read_committed"] == [b"c1"]
    assert seen["read_uncommitted"] == [b"a1", b"a2", b"c1"]


# -- consume, transform, produce ---------------------------------------------------------


def test_send_offsets_to_transaction_commits_offsets_with_the_output(cluster: Cluster) -> None:
    source = new_topic(cluster.bootstrap, "tx-in")
    sink = new_topic(cluster.bootstrap, "tx-out")
    group = f"ctp-{uuid.uuid4().hex[:8]}"
    plain = Producer({"bootstrap.servers": cluster.bootstrap})
    for i in range(6):
        plain.produce(source, value=b"%d" % i, partition=0)
    assert plain.flush(TIMEOUT_S) == 0
    consumer = Consumer(
        {
            "bootstrap.servers": cluster.bootstrap,
            "group.id": group,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "isolation.level": "read_committed",
        }
    )
    consumer.subscribe([source])
    producer = txn_producer(cluster.bootstrap)
    try:
        for commit, count in ((True, 3), (False, 3)):
            got: list[Any] = []
            deadline = time.monotonic() + TIMEOUT_S
            while len(got) < count:
                assert time.monotonic() < deadline
                message = consumer.poll(1.0)
                if message is not None and message.error() is None:
                    got.append(message)
            producer.begin_transaction()
            send(producer, sink, [b"x" + m.value() for m in got])
            positions = [TopicPartition(source, 0, got[-1].offset() + 1)]
            producer.send_offsets_to_transaction(
                positions, consumer.consumer_group_metadata(), TIMEOUT_S
            )
            if commit:
                producer.commit_transaction(TIMEOUT_S)
            else:
                producer.abort_transaction(TIMEOUT_S)
        # Only the committed transaction's offsets reached the group.
        committed = consumer.committed([TopicPartition(source, 0)], TIMEOUT_S)
        assert committed[0].offset == 3
    finally:
        consumer.close()
    assert values(read_all(cluster.bootstrap, sink, "read_committed")) == [b"x0", b"x1", b"x2"]
    assert len(read_all(cluster.bootstrap, sink, "read_uncommitted")) == 6


# -- fencing -----------------------------------------------------------------------------


def test_a_zombie_producer_is_fenced_by_a_newer_epoch(cluster: Cluster) -> None:
    topic = new_topic(cluster.bootstrap, "tx-zombie")
    transactional_id = f"zombie-{uuid.uuid4().hex[:8]}"
    zombie = txn_producer(cluster.bootstrap, transactional_id)
    zombie.begin_transaction()
    send(zombie, topic, [b"zombie-1"])
    successor = txn_producer(cluster.bootstrap, transactional_id)  # aborts the zombie's
    successor.begin_transaction()
    send(successor, topic, [b"new-1"])
    successor.commit_transaction(TIMEOUT_S)
    with pytest.raises(KafkaException) as fenced:
        # The zombie goes on with the transaction it believes open.
        zombie.produce(topic, value=b"zombie-2", partition=0)
        zombie.flush(10)
        zombie.commit_transaction(TIMEOUT_S)
    error = fenced.value.args[0]
    assert error.fatal() or error.code() in (
        KafkaError._FENCED,
        KafkaError.PRODUCER_FENCED,
        KafkaError.INVALID_PRODUCER_EPOCH,
    ), error
    assert values(read_all(cluster.bootstrap, topic, "read_committed")) == [b"new-1"]
    assert values(read_all(cluster.bootstrap, topic, "read_uncommitted")) == [
        b"zombie-1",
        b"new-1",
    ]


# -- aiokafka ----------------------------------------------------------------------------


def test_aiokafka_transactional_producer(cluster: Cluster) -> None:
    import aiokafka

    topic = new_topic(cluster.bootstrap, "tx-aio")

    async def run() -> None:
        producer = aiokafka.AIOKafkaProducer(
            bootstrap_servers=cluster.bootstrap, transactional_id=f"aio-{uuid.uuid4().hex[:8]}"
        )
        await producer.start()
        try:
            async with producer.transaction():
                await producer.send_and_wait(topic, b"aio-1", partition=0)
                await producer.send_and_wait(topic, b"aio-2", partition=0)
            await producer.begin_transaction()
            await producer.send_and_wait(topic, b"aio-aborted", partition=0)
            await producer.abort_transaction()
            async with producer.transaction():
                await producer.send_and_wait(topic, b"aio-3", partition=0)
        finally:
            await producer.stop()

    asyncio.run(run())
    assert values(read_all(cluster.bootstrap, topic, "read_committed")) == [
        b"aio-1",
        b"aio-2",
        b"aio-3",
    ]
    assert values(read_all(cluster.bootstrap, topic, "read_uncommitted")) == [
        b"aio-1",
        b"aio-2",
        b"aio-aborted",
        b"aio-3",
    ]


# -- headwater broker killed mid-transaction ---------------------------------------------


def restart_on_same_port(broker: BrokerProcess) -> BrokerProcess:
    """kill -9 ``broker`` and start it again on its port, so clients reconnect to it."""
    port = broker.port
    broker.kill()
    return BrokerProcess(broker.data, "--listen", f"127.0.0.1:{port}").start()


def begin_open(bootstrap: str, topic: str) -> Producer:
    """A producer with a transaction open on ``topic``, holding k1 and k2."""
    producer = txn_producer(bootstrap)
    producer.begin_transaction()
    send(producer, topic, [b"k1", b"k2"])
    return producer


def begin_gone(bootstrap: str, topic: str) -> Producer:
    """A producer (3 s transaction timeout) with a transaction open on ``topic``, holding
    lost-1 and lost-2, that the test then drops: it never ends its transaction."""
    dead = txn_producer(bootstrap, **{"transaction.timeout.ms": 3000})
    dead.begin_transaction()
    send(dead, topic, [b"lost-1", b"lost-2"])
    return dead


def assert_open_survived_then_committed_whole(
    bootstrap: str, topic: str, producer: Producer
) -> None:
    """After the crash, ``begin_open``'s transaction is still open; its producer then
    commits it with one more record, and all of it shows at once."""
    # The open transaction survived the crash: read_committed still stops before it.
    assert values(read_all(bootstrap, topic, "read_committed")) == []
    assert values(read_all(bootstrap, topic, "read_uncommitted")) == [b"k1", b"k2"]
    send(producer, topic, [b"k3"])
    producer.commit_transaction(TIMEOUT_S)
    assert values(read_all(bootstrap, topic, "read_committed")) == [b"k1", b"k2", b"k3"]


def assert_gone_aborted_whole(bootstrap: str, topic: str) -> None:
    """``begin_gone``'s transaction is aborted at its timeout and never shows."""
    # A transaction after it is readable once the coordinator has aborted the first
    # one (its timeout), and the first one's records never are.
    later = txn_producer(bootstrap)
    later.begin_transaction()
    send(later, topic, [b"later"])
    later.commit_transaction(TIMEOUT_S)
    got = wait_for_values(bootstrap, topic, "read_committed", [b"later"])
    assert got == [b"later"]
    assert values(read_all(bootstrap, topic, "read_uncommitted")) == [
        b"lost-1",
        b"lost-2",
        b"later",
    ]


def test_kill_9_mid_transaction_then_the_producer_commits_it_whole(tmp_path: Path) -> None:
    broker = BrokerProcess(tmp_path / "data").start()
    try:
        topic = new_topic(broker.bootstrap, "tx-kill")
        producer = begin_open(broker.bootstrap, topic)
        broker = restart_on_same_port(broker)
        assert_open_survived_then_committed_whole(broker.bootstrap, topic, producer)
    finally:
        if broker.alive():
            broker.kill()


def test_kill_9_mid_transaction_whose_producer_is_gone_aborts_it_whole(tmp_path: Path) -> None:
    broker = BrokerProcess(tmp_path / "data").start()
    try:
        topic = new_topic(broker.bootstrap, "tx-gone")
        dead = begin_gone(broker.bootstrap, topic)
        broker = restart_on_same_port(broker)
        del dead  # never heard of again
        assert_gone_aborted_whole(broker.bootstrap, topic)
        assert "open past its timeout" in broker.log()
    finally:
        if broker.alive():
            broker.kill()


# -- Apache Kafka killed mid-transaction: the same scenarios, the same results -----------


@pytest.fixture
def killable_kafka(tmp_path: Path) -> Iterator[KafkaProcess]:
    """An Apache Kafka of the test's own, to kill -9 and restart. It looks for timed-out
    transactions every second (Kafka's default: every 10 s), so the abort comes soon; and
    its broker session lasts 2 s (default 9 s), which a restarted broker waits out for its
    killed incarnation: measured, a restart took 12.5 s with the default, 4.3 s with this."""
    process = KafkaProcess(
        tmp_path / "kafka",
        settings={
            "transaction.abort.timed.out.transaction.cleanup.interval.ms": "1000",
            "broker.session.timeout.ms": "2000",
            "broker.heartbeat.interval.ms": "500",
        },
    )
    try:
        process.start()
    except KafkaUnavailableError as exc:
        pytest.skip(f"Apache Kafka cannot run here: {exc}")
    try:
        yield process
    finally:
        process.kill()


def test_kill_9_of_apache_kafka_mid_transaction_gives_what_headwater_gives(
    killable_kafka: KafkaProcess,
) -> None:
    """Both headwater scenarios above at once: one producer outlives the crash and
    commits its transaction whole; the other is gone, and its transaction is aborted
    whole at its timeout."""
    kafka = killable_kafka
    topic = new_topic(kafka.bootstrap, "tx-kill")
    gone_topic = new_topic(kafka.bootstrap, "tx-gone")
    producer = begin_open(kafka.bootstrap, topic)
    dead = begin_gone(kafka.bootstrap, gone_topic)
    kafka.kill()
    kafka.restart()
    del dead  # never heard of again
    assert_open_survived_then_committed_whole(kafka.bootstrap, topic, producer)
    assert_gone_aborted_whole(kafka.bootstrap, gone_topic)
