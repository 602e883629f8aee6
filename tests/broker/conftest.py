"""Where the broker tests run a scenario: ``headwater broker`` in a subprocess (one per
test module), or Apache Kafka (the session's, from ``tests/conftest.py``).

A module asks for ``cluster`` (or ``bootstrap``, its address) to run each test against
both; the same assertions then say that headwater answers as Kafka does.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from apache_kafka.running import ApacheKafka

from .running import BrokerProcess


@dataclass(frozen=True)
class Cluster:
    """A cluster under test: its bootstrap address, and the headwater broker we may kill
    and restart (None on Apache Kafka)."""

    bootstrap: str
    broker: BrokerProcess | None = None


@pytest.fixture(scope="module")
def headwater(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[BrokerProcess]:
    """A ``headwater broker`` for the test module, stopped cleanly at its end."""
    name = request.module.__name__.rpartition(".")[2]
    process = BrokerProcess(tmp_path_factory.mktemp(name) / "data").start()
    yield process
    assert process.stop() == 0, process.log()


@pytest.fixture(params=["headwater", "kafka"])
def cluster(request: pytest.FixtureRequest) -> Cluster:
    """Each cluster in turn: the module's ``headwater broker``, then Apache Kafka."""
    if request.param == "kafka":
        kafka: ApacheKafka = request.getfixturevalue("apache_kafka")
        return Cluster(kafka.bootstrap)
    broker: BrokerProcess = request.getfixturevalue("headwater")
    return Cluster(broker.bootstrap, broker)


@pytest.fixture
def bootstrap(cluster: Cluster) -> str:
    """The address of each cluster in turn (see ``cluster``)."""
    return cluster.bootstrap
