"""Fixtures of the processing tests: a data directory, and the Kafka-protocol clusters
the apps also run on (``headwater broker`` and Apache Kafka, one each per session)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

# pytest puts tests/ on sys.path (it holds no __init__.py), so its packages import by name.
from apache_kafka.running import ApacheKafka
from broker.running import BrokerProcess


@pytest.fixture
def data(tmp_path: Path) -> Path:
    """A data directory that does not exist yet."""
    return tmp_path / "data"


@pytest.fixture(scope="session")
def headwater_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    """One ``headwater broker`` for the session's processing tests (each test uses topics
    and groups of its own)."""
    process = BrokerProcess(tmp_path_factory.mktemp("processing-broker") / "data").start()
    yield process
    assert process.stop() == 0, process.log()


@pytest.fixture(params=["headwater-broker", "apache-kafka"])
def cluster(request: pytest.FixtureRequest) -> str:
    """The ``HOST:PORT`` of a Kafka-protocol cluster: ``headwater broker``, then Apache
    Kafka (skipped where it cannot run: see ``tests/conftest.py``)."""
    if request.param == "apache-kafka":
        kafka: ApacheKafka = request.getfixturevalue("apache_kafka")
        return kafka.bootstrap
    broker: BrokerProcess = request.getfixturevalue("headwater_broker")
    return broker.bootstrap
