"""DeleteRecords into a transaction that is still open, against ``headwater broker`` and
Apache Kafka, with the same assertions for both.

Kafka 4.1 deletes records up to the high watermark even inside an open transaction, and
keeps the transaction's state as it was: its first offset stays where the transaction
began, so the last stable offset (Fetch's ``last_stable_offset`` and a read_committed
ListOffsets latest) lies *below* the new log start until the transaction ends, and a
read_committed fetch from the log start returns nothing meanwhile. After an abort the
aborted transaction is reported with its first offset (below the log start) and its
records stay hidden; after a commit its records from the log start on are readable.
The scenarios write with confluent-kafka (a transactional producer, AdminClient's
``delete_records``) and read the offsets and fetch answers with the test's own protocol
client, so that the numbers compared are exactly the ones each broker sends. The crash
case (``kill -9`` of the broker while the log start lies inside the open transaction)
runs against headwater only: the Kafka fixture is shared by the session.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import tenacity
from confluent_kafka import Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from headwater.broker import ApiKey

from .conftest import Cluster
from .running import BrokerProcess, Connection
from .test_transactions import (
    TIMEOUT_S,
    new_topic,
    read_all,
    restart_on_same_port,
    send,
    txn_producer,
    values,
)

RU, RC = 0, 1
_LATEST, _EARLIEST = -1, -2


def port_of(bootstrap: str) -> int:
    return int(bootstrap.rsplit(":", 1)[1])


def list_offset(bootstrap: str, topic: str, timestamp: int, isolation: int) -> int:
    """ListOffsets (v5) of partition 0 for ``timestamp`` (-1 latest, -2 earliest)."""
    with Connection(port_of(bootstrap)) as connection:
        response = connection.request(
            ApiKey.LIST_OFFSETS,
            5,
            {
                "replica_id": -1,
                "isolation_level": isolation,
                "topics": [
                    {
                        "name": topic,
                        "partitions": [
                            {
                                "partition_index": 0,
                                "current_leader_epoch": -1,
                                "timestamp": timestamp,
                            }
                        ],
                    }
                ],
            },
        )
    [partition] = response["topics"][0]["partitions"]
    assert partition["error_code"] == 0, partition
    return int(partition["offset"])


def fetch(bootstrap: str, topic: str, offset: int, isolation: int) -> dict[str, Any]:
    """One Fetch (v11) of partition 0 at ``offset``: the offsets it reports, the aborted
    transactions and how many bytes of batches came."""
    with Connection(port_of(bootstrap)) as connection:
        response = connection.request(
            ApiKey.FETCH,
            11,
            {
                "replica_id": -1,
                "max_wait_ms": 0,
                "min_bytes": 1,
                "max_bytes": 1 << 20,
                "isolation_level": isolation,
                "session_id": 0,
                "session_epoch": -1,
                "topics": [
                    {
                        "topic": topic,
                        "partitions": [
                            {
                                "partition": 0,
                                "current_leader_epoch": -1,
                                "fetch_offset": offset,
                                "log_start_offset": -1,
                                "partition_max_bytes": 1 << 20,
                            }
                        ],
                    }
                ],
                "forgotten_topics_data": [],
                "rack_id": "",
            },
        )
    [partition] = response["responses"][0]["partitions"]
    assert partition["error_code"] == 0, partition
    return {
        "high_watermark": partition["high_watermark"],
        "last_stable_offset": partition["last_stable_offset"],
        "log_start_offset": partition["log_start_offset"],
        "aborted": [t["first_offset"] for t in partition["aborted_transactions"] or ()],
        "has_records": len(partition["records"] or b"") > 0,
    }


def wait_for_high_watermark(bootstrap: str, topic: str, offset: int) -> None:
    """Return once the high watermark reached ``offset``: Kafka answers EndTxn before its
    markers are written, so the marker's offset shows up a little later there."""
    for attempt in tenacity.Retrying(
        stop=tenacity.stop_after_delay(TIMEOUT_S), wait=tenacity.wait_fixed(0.05), reraise=True
    ):
        with attempt:
            assert list_offset(bootstrap, topic, _LATEST, RU) >= offset


def delete_records(bootstrap: str, topic: str, before_offset: int) -> int:
    """Delete the records of partition 0 before ``before_offset``; return the low watermark."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    [(_, future)] = admin.delete_records([TopicPartition(topic, 0, before_offset)]).items()
    return int(future.result(TIMEOUT_S).low_watermark)


def open_transaction_cut_by_delete_records(bootstrap: str) -> tuple[str, Producer]:
    """Two plain records (offsets 0-1), then an open transaction (2-4), then the records
    before offset 3 deleted: the log starts inside the open transaction."""
    topic = new_topic(bootstrap, "tx-cut")
    plain = Producer({"bootstrap.servers": bootstrap, "acks": "all"})
    for value in (b"p0", b"p1"):
        plain.produce(topic, value=value, partition=0)
    assert plain.flush(TIMEOUT_S) == 0
    producer = txn_producer(bootstrap)
    producer.begin_transaction()
    send(producer, topic, [b"t0", b"t1", b"t2"])
    assert delete_records(bootstrap, topic, 3) == 3
    return topic, producer


def check_cut_open_transaction(bootstrap: str, topic: str) -> None:
    """What readers are told while the log starts inside the open transaction (offset 2)."""
    assert list_offset(bootstrap, topic, _EARLIEST, RU) == 3
    assert list_offset(bootstrap, topic, _EARLIEST, RC) == 3
    assert list_offset(bootstrap, topic, _LATEST, RU) == 5
    # The transaction still begins at 2, below the log start: so does the LSO.
    assert list_offset(bootstrap, topic, _LATEST, RC) == 2
    committed = fetch(bootstrap, topic, 3, RC)
    assert committed == {
        "high_watermark": 5,
        "last_stable_offset": 2,
        "log_start_offset": 3,
        "aborted": [],
        "has_records": False,
    }
    uncommitted = fetch(bootstrap, topic, 3, RU)
    assert uncommitted["has_records"] and uncommitted["last_stable_offset"] == 2
    # Below the log start is out of range at either isolation level.
    assert read_all(bootstrap, topic, "read_uncommitted") == [(3, b"t1"), (4, b"t2")]


def test_delete_records_into_an_open_transaction_that_commits(cluster: Cluster) -> None:
    topic, producer = open_transaction_cut_by_delete_records(cluster.bootstrap)
    check_cut_open_transaction(cluster.bootstrap, topic)
    producer.commit_transaction(TIMEOUT_S)
    wait_for_high_watermark(cluster.bootstrap, topic, 6)  # the commit marker is offset 5
    assert list_offset(cluster.bootstrap, topic, _LATEST, RC) == 6
    assert fetch(cluster.bootstrap, topic, 3, RC)["aborted"] == []
    assert read_all(cluster.bootstrap, topic, "read_committed") == [(3, b"t1"), (4, b"t2")]
    assert read_all(cluster.bootstrap, topic, "read_uncommitted") == [(3, b"t1"), (4, b"t2")]


def check_cut_transaction_aborted(bootstrap: str, topic: str) -> None:
    """After the abort (marker at 5) and a committed transaction (6, marker 7)."""
    assert list_offset(bootstrap, topic, _LATEST, RC) == 8
    answer = fetch(bootstrap, topic, 3, RC)
    # The aborted transaction is reported from where it began, below the log start.
    assert answer["aborted"] == [2]
    assert answer["last_stable_offset"] == 8 and answer["log_start_offset"] == 3
    assert read_all(bootstrap, topic, "read_committed") == [(6, b"after")]
    assert values(read_all(bootstrap, topic, "read_uncommitted")) == [b"t1", b"t2", b"after"]


def abort_then_commit_another(bootstrap: str, topic: str, producer: Producer) -> None:
    producer.abort_transaction(TIMEOUT_S)
    wait_for_high_watermark(bootstrap, topic, 6)
    assert list_offset(bootstrap, topic, _LATEST, RC) == 6
    producer.begin_transaction()
    send(producer, topic, [b"after"])
    producer.commit_transaction(TIMEOUT_S)
    wait_for_high_watermark(bootstrap, topic, 8)


def test_delete_records_into_an_open_transaction_that_aborts(cluster: Cluster) -> None:
    topic, producer = open_transaction_cut_by_delete_records(cluster.bootstrap)
    check_cut_open_transaction(cluster.bootstrap, topic)
    abort_then_commit_another(cluster.bootstrap, topic, producer)
    check_cut_transaction_aborted(cluster.bootstrap, topic)


def test_delete_records_into_an_open_transaction_survives_a_broker_kill(tmp_path: Path) -> None:
    broker = BrokerProcess(tmp_path / "data").start()
    try:
        topic, producer = open_transaction_cut_by_delete_records(broker.bootstrap)
        broker = restart_on_same_port(broker)
        check_cut_open_transaction(broker.bootstrap, topic)
        abort_then_commit_another(broker.bootstrap, topic, producer)
        broker = restart_on_same_port(broker)
        check_cut_transaction_aborted(broker.bootstrap, topic)
    finally:
        if broker.alive():
            broker.kill()
