"""Fixtures of the connector tests: a data directory, and a store open on it; a
Kafka-protocol cluster (``headwater broker``, then Apache Kafka) and a topic name."""

from __future__ import annotations

import math
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from apache_kafka.running import ApacheKafka
from broker.running import BrokerProcess

from headwater.store import Store, open_store


@pytest.fixture
def data(tmp_path: Path) -> Path:
    """A data directory that does not exist yet."""
    return tmp_path / "data"


@pytest.fixture
async def store(data: Path) -> AsyncIterator[Store]:
    """An open store (real files, real fsyncs), without background maintenance."""
    async with open_store(data, maintenance_interval_s=math.inf) as opened:
        yield opened


@pytest.fixture(scope="module")
def headwater_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    """A ``headwater broker`` subprocess, shared by a module's tests."""
    process = BrokerProcess(tmp_path_factory.mktemp("connectors-broker") / "data").start()
    yield process
    assert process.stop() == 0, process.log()


@pytest.fixture(scope="module", params=["headwater", "kafka"])
def bootstrap(request: pytest.FixtureRequest) -> str:
    """A ``headwater broker``; then Apache Kafka (skipped where it cannot run: see
    ``tests/conftest.py``)."""
    if request.param == "kafka":
        kafka: ApacheKafka = request.getfixturevalue("apache_kafka")
        return kafka.bootstrap
    broker: BrokerProcess = request.getfixturevalue("headwater_broker")
    return broker.bootstrap


@pytest.fixture
def topic() -> str:
    """A topic name of the test's own: the broker is shared."""
    return f"t-{uuid.uuid4().hex[:8]}"
