"""``headwater transactions list`` and ``describe``: on ``headwater broker`` (by
``--bootstrap`` and through the data directory it serves), on the data directory alone
once the broker is stopped, and on Apache Kafka, with the same answers."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from apache_kafka.running import ApacheKafka
from broker.running import BrokerProcess
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

from .helpers import run_headwater

TIMEOUT_S = 60.0


def make_topic(bootstrap: str) -> str:
    name = f"t-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(name, 2, 1)])[name].result(timeout=30)
    return name


def transactional(bootstrap: str, transactional_id: str) -> Producer:
    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "transactional.id": transactional_id,
            "transaction.timeout.ms": 300_000,
        }
    )
    producer.init_transactions(TIMEOUT_S)
    return producer


def write(producer: Producer, topic: str, partition: int) -> None:
    producer.produce(topic, value=b"v", partition=partition)
    assert producer.flush(TIMEOUT_S) == 0


class Scenario:
    """A committed transaction of one id and an open one of another, on ``bootstrap``."""

    def __init__(self, bootstrap: str) -> None:
        run = uuid.uuid4().hex[:8]
        self.topic = make_topic(bootstrap)
        self.done_id, self.open_id = f"done-{run}", f"open-{run}"
        done = transactional(bootstrap, self.done_id)
        done.begin_transaction()
        write(done, self.topic, 0)
        done.commit_transaction(TIMEOUT_S)
        self.open = transactional(bootstrap, self.open_id)
        self.open.begin_transaction()
        write(self.open, self.topic, 1)

    def check(self, data: Path | None, *where: str, done_state: str = "CompleteCommit") -> None:
        listed = run_headwater(data, "transactions", "list", *where)
        assert listed.returncode == 0, listed.stderr
        rows = {line.split()[1]: line.split() for line in listed.stdout.splitlines()[3:-1]}
        assert rows[self.done_id][5] == done_state
        assert rows[self.open_id][5] == "Ongoing"

        described = run_headwater(data, "transactions", "describe", self.open_id, *where)
        assert described.returncode == 0, described.stderr
        fields = {line.split()[1]: line.split()[3] for line in described.stdout.splitlines()[3:-1]}
        assert fields["transactional_id"] == self.open_id
        assert fields["state"] == "Ongoing"
        assert fields["producer_id"] == rows[self.open_id][3]
        assert (fields["producer_epoch"], fields["timeout_ms"]) == ("0", "300000")
        assert fields["partitions"] == f"{self.topic}-1"
        assert fields["start_time"] != "-"

        unknown = run_headwater(data, "transactions", "describe", "never-seen", *where)
        assert unknown.returncode == 1
        assert unknown.stderr.startswith("headwater: error: no transactional id 'never-seen'")


@pytest.fixture
def served(tmp_path: Path) -> Iterator[BrokerProcess]:
    process = BrokerProcess(tmp_path / "data").start()
    yield process
    if process.alive():
        assert process.stop() == 0, process.log()


def test_on_a_broker_through_its_directory_and_on_the_directory_alone(
    served: BrokerProcess,
) -> None:
    scenario = Scenario(served.bootstrap)
    scenario.check(None, "--bootstrap", served.bootstrap)
    scenario.check(served.data)  # through the broker that serves it
    assert served.stop() == 0, served.log()
    # Read from __transaction_state as the broker left it: the open one is still open.
    scenario.check(served.data)


def test_on_apache_kafka(apache_kafka: ApacheKafka) -> None:
    where = ("--bootstrap", apache_kafka.bootstrap)
    scenario = Scenario(apache_kafka.bootstrap)
    # Kafka answers EndTxn before its markers are written: PrepareCommit for a moment.
    deadline = time.monotonic() + TIMEOUT_S
    while (
        "PrepareCommit"
        in (
            shown := run_headwater(None, "transactions", "describe", scenario.done_id, *where)
        ).stdout
    ):
        assert time.monotonic() < deadline, shown.stdout
        time.sleep(0.05)
    assert "CompleteCommit" in shown.stdout, shown.stdout
    scenario.check(None, *where)
