"""Kafka's transaction tooling against ``headwater broker`` and Apache Kafka alike.

kafka-python's admin client lists and describes transactions, describes a partition's
producers, finds a transaction left open and aborts it by hand (ListTransactions,
DescribeTransactions, DescribeProducers, WriteTxnMarkers); every scenario runs against a
``headwater broker`` subprocess and against the Apache Kafka fixture (skipped where Kafka
cannot run, see ``tests/conftest.py``) with the same assertions. confluent-kafka writes
the transactions and reads them back with ``read_committed``. A few requests are sent
as raw frames over the project's codec, to see the codes a client library hides.
"""

from __future__ import annotations

import time
import uuid
import warnings
from collections.abc import Iterator
from typing import Any

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from headwater.broker import ApiKey, KafkaErrorCode

from .running import BrokerProcess, Connection

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import kafka.errors
    from kafka import KafkaAdminClient
    from kafka import TopicPartition as KafkaTopicPartition
    from kafka.admin._transactions import AbortTransactionSpec

TIMEOUT_S = 60.0
#: Long enough that no transaction of a test times out while it runs, even on a busy
#: machine (Kafka's ``transaction.max.timeout.ms`` is 15 minutes).
TXN_TIMEOUT_MS = 300_000
#: kafka-python counts a transaction as hanging once older than this + 5 minutes (the
#: Java tool's margin): -5 minutes makes every open transaction count.
EVERY_OPEN_TRANSACTION = -5 * 60 * 1000


@pytest.fixture
def admin(bootstrap: str) -> Iterator[KafkaAdminClient]:
    client = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=30_000)
    yield client
    client.close()


def new_topic(bootstrap: str, partitions: int = 1) -> str:
    name = f"txadm-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(name, partitions, 1)])[name].result(timeout=30)
    return name


def txn_producer(bootstrap: str, transactional_id: str) -> Producer:
    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "transactional.id": transactional_id,
            "transaction.timeout.ms": TXN_TIMEOUT_MS,
            "linger.ms": 5,
        }
    )
    producer.init_transactions(TIMEOUT_S)
    return producer


def idempotent_producer(bootstrap: str) -> Producer:
    return Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "linger.ms": 5})


def send(producer: Producer, topic: str, *values: bytes, partition: int = 0) -> None:
    """Produce ``values`` and wait until they are written (in a transaction if one is open)."""
    errors: list[Any] = []
    for value in values:
        producer.produce(
            topic, value=value, partition=partition, on_delivery=lambda e, m: errors.append(e)
        )
    assert producer.flush(TIMEOUT_S) == 0
    assert errors == [None] * len(values), errors


def read_committed(bootstrap: str, topic: str) -> list[bytes]:
    """The values a read_committed consumer reads from partition 0, up to where it stops."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"reader-{uuid.uuid4().hex[:8]}",
            "isolation.level": "read_committed",
            "enable.partition.eof": True,
            "enable.auto.commit": False,
        }
    )
    consumer.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
    out: list[bytes] = []
    deadline = time.monotonic() + TIMEOUT_S
    try:
        while True:
            assert time.monotonic() < deadline, "no end of partition"
            message = consumer.poll(1.0)
            if message is None:
                continue
            if message.error() is not None:
                assert message.error().code() == KafkaError._PARTITION_EOF, message.error()
                return out
            out.append(message.value())
    finally:
        consumer.close()


def describe(admin: KafkaAdminClient, transactional_id: str) -> Any:
    return admin.describe_transactions([transactional_id])[transactional_id]


def wait_for_state(admin: KafkaAdminClient, transactional_id: str, state: str) -> Any:
    """Describe the id until it is in ``state``: Kafka answers EndTxn before its markers are
    written, so a transaction shows ``PrepareCommit``/``PrepareAbort`` for a while."""
    deadline = time.monotonic() + TIMEOUT_S
    while True:
        found = describe(admin, transactional_id)
        if found.state.value == state:
            return found
        assert found.state.value in ("PrepareCommit", "PrepareAbort"), found
        assert time.monotonic() < deadline, found
        time.sleep(0.05)


def listed(admin: KafkaAdminClient, **filters: Any) -> dict[str, tuple[int, str]]:
    """transactional id -> (producer id, state), from every broker's ListTransactions."""
    return {
        t.transactional_id: (t.producer_id, t.state.value)
        for listing in admin.list_transactions(**filters).values()
        for t in listing
    }


def producers(admin: KafkaAdminClient, topic: str, **kwargs: Any) -> dict[int, Any]:
    tp = KafkaTopicPartition(topic, 0)
    return {p.producer_id: p for p in admin.describe_producers([tp], **kwargs)[tp].active_producers}


def node_id(admin: KafkaAdminClient) -> int:
    (node,) = admin._manager.cluster.brokers()
    return int(node.node_id)


def port_of(bootstrap: str) -> int:
    host, port = bootstrap.rsplit(":", 1)
    assert host == "127.0.0.1", bootstrap  # what Connection speaks to
    return int(port)


def test_an_ongoing_transaction_is_listed_and_described_then_shown_complete(
    bootstrap: str, admin: KafkaAdminClient
) -> None:
    topic = new_topic(bootstrap, partitions=2)
    tid = f"tx-{uuid.uuid4().hex[:8]}"
    producer = txn_producer(bootstrap, tid)
    fresh = describe(admin, tid)
    assert (fresh.state.value, fresh.producer_epoch, fresh.transaction_timeout_ms) == (
        "Empty",
        0,
        TXN_TIMEOUT_MS,
    )
    assert (fresh.transaction_start_time_ms, fresh.topic_partitions) == (-1, set())

    before_ms = int(time.time() * 1000)
    producer.begin_transaction()
    send(producer, topic, b"a", partition=0)
    send(producer, topic, b"b", partition=1)
    ongoing = describe(admin, tid)
    assert listed(admin)[tid] == (ongoing.producer_id, "Ongoing")
    assert ongoing.state.value == "Ongoing"
    assert ongoing.producer_id == fresh.producer_id and ongoing.producer_epoch == 0
    assert ongoing.topic_partitions == {
        KafkaTopicPartition(topic, 0),
        KafkaTopicPartition(topic, 1),
    }
    # Clocks of one machine; the transaction began when its first partition was added.
    assert before_ms - 1000 <= ongoing.transaction_start_time_ms <= int(time.time() * 1000)

    producer.commit_transaction(TIMEOUT_S)
    done = wait_for_state(admin, tid, "CompleteCommit")
    assert done.topic_partitions == set()
    # Kafka keeps showing when the last transaction began.
    assert done.transaction_start_time_ms == ongoing.transaction_start_time_ms
    assert listed(admin)[tid] == (ongoing.producer_id, "CompleteCommit")

    # A new producer of the id starts over: a new epoch, no transaction yet.
    txn_producer(bootstrap, tid)
    renewed = describe(admin, tid)
    assert (renewed.state.value, renewed.producer_epoch) == ("Empty", 1)
    assert renewed.transaction_start_time_ms == -1


def test_list_transactions_filters_by_state_producer_id_and_duration(
    bootstrap: str, admin: KafkaAdminClient
) -> None:
    topic = new_topic(bootstrap)
    run = uuid.uuid4().hex[:8]
    done_id, open_id, idle_id = f"done-{run}", f"open-{run}", f"idle-{run}"
    done = txn_producer(bootstrap, done_id)
    done.begin_transaction()
    send(done, topic, b"d")
    done.commit_transaction(TIMEOUT_S)
    wait_for_state(admin, done_id, "CompleteCommit")
    opened = txn_producer(bootstrap, open_id)
    opened.begin_transaction()
    send(opened, topic, b"o")
    txn_producer(bootstrap, idle_id)
    ours = {done_id, open_id, idle_id}

    def ids(**filters: Any) -> set[str]:
        return set(listed(admin, **filters)) & ours

    assert ids() == ours
    assert ids(state_filters=["Ongoing"]) == {open_id}
    assert ids(state_filters=["CompleteCommit", "Empty"]) == {done_id, idle_id}
    assert ids(state_filters=["PrepareAbort"]) == set()
    open_pid = describe(admin, open_id).producer_id
    assert ids(producer_id_filters=[open_pid]) == {open_id}
    assert ids(producer_id_filters=[open_pid, describe(admin, done_id).producer_id]) == {
        open_id,
        done_id,
    }
    # "Running longer than": since the last transaction began. Kafka compares the start
    # time of an id whose producer began none (-1) as it is, so such an id passes every
    # duration filter; and the finished transaction began well over 0 ms ago.
    assert ids(duration_filter_ms=10**9) == {idle_id}
    assert {done_id, idle_id} <= ids(duration_filter_ms=0)
    assert ids(state_filters=["Ongoing"], duration_filter_ms=10**9) == set()
    opened.abort_transaction(TIMEOUT_S)


def test_state_filters_no_state_has_are_listed_back(bootstrap: str) -> None:
    with Connection(port_of(bootstrap)) as connection:
        answer = connection.request(
            ApiKey.LIST_TRANSACTIONS,
            1,
            {"state_filters": ["Bogus", "Dead"], "producer_id_filters": [], "duration_filter": -1},
        )
    assert answer["error_code"] == 0
    assert answer["unknown_state_filters"] == ["Bogus"]
    assert answer["transaction_states"] == []  # nothing is Dead, and Bogus names nothing


def test_an_unknown_or_empty_transactional_id(bootstrap: str, admin: KafkaAdminClient) -> None:
    # A fresh Kafka makes its transaction coordinator on first use; a producer waits for it.
    txn_producer(bootstrap, f"tx-{uuid.uuid4().hex[:8]}")
    with pytest.raises(kafka.errors.TransactionalIdNotFoundError):
        admin.describe_transactions([f"never-{uuid.uuid4().hex[:8]}"])
    with Connection(port_of(bootstrap)) as connection:
        answer = connection.request(
            ApiKey.DESCRIBE_TRANSACTIONS, 0, {"transactional_ids": ["", "never-seen"]}
        )
    codes = [(s["transactional_id"], s["error_code"]) for s in answer["transaction_states"]]
    assert codes == [
        ("", KafkaErrorCode.INVALID_REQUEST),
        ("never-seen", KafkaErrorCode.TRANSACTIONAL_ID_NOT_FOUND),
    ]


def test_describe_producers_of_an_idempotent_and_a_transactional_producer(
    bootstrap: str, admin: KafkaAdminClient
) -> None:
    topic = new_topic(bootstrap)
    tid = f"tx-{uuid.uuid4().hex[:8]}"
    idempotent = idempotent_producer(bootstrap)
    send(idempotent, topic, b"i0", b"i1")
    send(idempotent, topic, b"i2")
    transactional = txn_producer(bootstrap, tid)
    transactional.begin_transaction()
    before_ms = int(time.time() * 1000)
    send(transactional, topic, b"t0", b"t1")
    txn_pid = describe(admin, tid).producer_id

    found = producers(admin, topic)
    assert txn_pid in found and len(found) == 2
    (idem_pid,) = set(found) - {txn_pid}
    idem, txn = found[idem_pid], found[txn_pid]
    assert (idem.producer_epoch, idem.last_sequence, idem.coordinator_epoch) == (0, 2, -1)
    assert idem.current_transaction_start_offset == -1
    assert (txn.producer_epoch, txn.last_sequence, txn.coordinator_epoch) == (0, 1, -1)
    assert txn.current_transaction_start_offset == 3  # after i0, i1, i2
    assert before_ms - 1000 <= txn.last_timestamp <= int(time.time() * 1000)

    transactional.commit_transaction(TIMEOUT_S)
    wait_for_state(admin, tid, "CompleteCommit")
    txn = producers(admin, topic)[txn_pid]
    # The commit marker closed it; the partition now knows the coordinator's epoch.
    assert (txn.current_transaction_start_offset, txn.coordinator_epoch) == (-1, 0)
    assert read_committed(bootstrap, topic) == [b"i0", b"i1", b"i2", b"t0", b"t1"]


def test_describe_producers_of_unknown_partitions(bootstrap: str, admin: KafkaAdminClient) -> None:
    topic = new_topic(bootstrap)
    broker = node_id(admin)  # asked directly: the client checks its metadata otherwise
    for tp in (KafkaTopicPartition(topic, 5), KafkaTopicPartition(f"no-{topic}", 0)):
        with pytest.raises(kafka.errors.UnknownTopicOrPartitionError):
            admin.describe_producers([tp], broker_id=broker)
    assert producers(admin, topic, broker_id=broker) == {}


def test_a_hanging_transaction_is_found_and_aborted_so_readers_pass_it(
    bootstrap: str, admin: KafkaAdminClient
) -> None:
    topic = new_topic(bootstrap)
    tid = f"hang-{uuid.uuid4().hex[:8]}"
    other = idempotent_producer(bootstrap)
    send(other, topic, b"before")
    left_open = txn_producer(bootstrap, tid)
    left_open.begin_transaction()
    send(left_open, topic, b"h0", b"h1")
    send(other, topic, b"after")
    assert read_committed(bootstrap, topic) == [b"before"]  # held at the open transaction

    found_hanging = admin.find_hanging_transactions(
        max_transaction_timeout_ms=EVERY_OPEN_TRANSACTION
    )
    hanging = {h["transactional_id"]: h for h in found_hanging}
    found = hanging[tid]
    assert found["state"] == "Ongoing"
    assert found["topic_partitions"] == [KafkaTopicPartition(topic, 0)]
    state = producers(admin, topic)[found["producer_id"]]
    assert state.current_transaction_start_offset == 1
    assert state.producer_epoch == found["producer_epoch"]

    admin.abort_transaction(
        AbortTransactionSpec(
            KafkaTopicPartition(topic, 0),
            found["producer_id"],
            found["producer_epoch"],
            state.coordinator_epoch,
        )
    )
    assert read_committed(bootstrap, topic) == [b"before", b"after"]
    assert producers(admin, topic)[found["producer_id"]].current_transaction_start_offset == -1
    # The coordinator was not told: the transaction stays open there, for its producer
    # (or its timeout) to end, which then changes nothing in the partition.
    assert describe(admin, tid).state.value == "Ongoing"
    left_open.abort_transaction(TIMEOUT_S)
    wait_for_state(admin, tid, "CompleteAbort")
    assert read_committed(bootstrap, topic) == [b"before", b"after"]


def test_an_abort_by_hand_is_refused_for_an_older_epoch_or_coordinator_epoch(
    bootstrap: str, admin: KafkaAdminClient
) -> None:
    topic = new_topic(bootstrap)
    tid = f"tx-{uuid.uuid4().hex[:8]}"
    first = txn_producer(bootstrap, tid)
    first.begin_transaction()
    send(first, topic, b"c")
    first.commit_transaction(TIMEOUT_S)
    wait_for_state(admin, tid, "CompleteCommit")
    second = txn_producer(bootstrap, tid)  # epoch 1
    second.begin_transaction()
    send(second, topic, b"o")
    pid = describe(admin, tid).producer_id
    state = producers(admin, topic)[pid]
    assert (state.producer_epoch, state.coordinator_epoch) == (1, 0)
    assert state.current_transaction_start_offset == 2
    tp = KafkaTopicPartition(topic, 0)

    with pytest.raises(kafka.errors.TransactionCoordinatorFencedError):
        admin.abort_transaction(AbortTransactionSpec(tp, pid, 1, -1))
    with pytest.raises(kafka.errors.InvalidProducerEpochError):
        admin.abort_transaction(AbortTransactionSpec(tp, pid, 0, 0))
    assert producers(admin, topic)[pid].current_transaction_start_offset == 2  # c, marker, o
    second.commit_transaction(TIMEOUT_S)
    assert read_committed(bootstrap, topic) == [b"c", b"o"]


def test_write_txn_markers_to_unknown_partitions(bootstrap: str) -> None:
    topic = new_topic(bootstrap)
    body = {
        "markers": [
            {
                "producer_id": 4242,
                "producer_epoch": 0,
                "transaction_result": False,
                "coordinator_epoch": -1,
                "topics": [
                    {"name": topic, "partition_indexes": [0, 7]},
                    {"name": f"no-{topic}", "partition_indexes": [0]},
                ],
            }
        ]
    }
    with Connection(port_of(bootstrap)) as connection:
        answer = connection.request(ApiKey.WRITE_TXN_MARKERS, 1, body)
    (marker,) = answer["markers"]
    assert marker["producer_id"] == 4242
    codes = {
        (t["name"], p["partition_index"]): p["error_code"]
        for t in marker["topics"]
        for p in t["partitions"]
    }
    assert codes == {
        (topic, 0): 0,  # a producer with nothing open here: the marker changes nothing
        (topic, 7): KafkaErrorCode.UNKNOWN_TOPIC_OR_PARTITION,
        (f"no-{topic}", 0): KafkaErrorCode.UNKNOWN_TOPIC_OR_PARTITION,
    }


def test_write_txn_markers_refuses_a_negative_producer_id_or_epoch(
    headwater: BrokerProcess,
) -> None:
    """Apache Kafka answers these with -1 (UNKNOWN_SERVER_ERROR, its own failure to build
    the marker); headwater says what is wrong with the request, and writes nothing."""
    topic = new_topic(headwater.bootstrap)
    with Connection(headwater.port) as connection:
        for producer_id, epoch in ((-1, 0), (4242, -1)):
            answer = connection.request(
                ApiKey.WRITE_TXN_MARKERS,
                1,
                {
                    "markers": [
                        {
                            "producer_id": producer_id,
                            "producer_epoch": epoch,
                            "transaction_result": True,
                            "coordinator_epoch": 0,
                            "topics": [{"name": topic, "partition_indexes": [0]}],
                        }
                    ]
                },
            )
            (partition,) = answer["markers"][0]["topics"][0]["partitions"]
            assert partition["error_code"] == KafkaErrorCode.INVALID_REQUEST
        end = connection.request(
            ApiKey.LIST_OFFSETS,
            1,
            {
                "replica_id": -1,
                "topics": [
                    {"name": topic, "partitions": [{"partition_index": 0, "timestamp": -1}]}
                ],
            },
        )
    assert end["topics"][0]["partitions"][0]["offset"] == 0
