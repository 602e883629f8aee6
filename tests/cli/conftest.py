"""Fixtures for the CLI tests: a fresh data directory, a runner bound to it, and the same
runner against a real ``headwater broker`` subprocess (``--bootstrap``)."""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

# pytest puts tests/ on sys.path (it holds no __init__.py), so its packages import by name.
from broker.running import BrokerProcess

from .helpers import Headwater, Log, run_headwater


@pytest.fixture
def data(tmp_path: Path) -> Path:
    """A data directory that does not exist yet."""
    return tmp_path / "data"


@pytest.fixture
def hw(data: Path) -> Headwater:
    """``hw(*args, input=...)`` runs headwater on the test's data directory."""

    def run(*args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
        return run_headwater(data, *args, input=input)

    return run


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    """One ``headwater broker`` for the session's tests (each uses topics of its own)."""
    process = BrokerProcess(tmp_path_factory.mktemp("cli-broker") / "data").start()
    yield process
    assert process.stop() == 0, process.log()


#: The address of a running Apache Kafka broker, to run the ``log`` tests against it too.
KAFKA_ENV_VAR = "HEADWATER_TEST_KAFKA"


@pytest.fixture(params=["data", "broker", "kafka"])
def log(request: pytest.FixtureRequest, data: Path) -> Log:
    """The test's commands on a data directory, then against ``headwater broker``, then --
    when $HEADWATER_TEST_KAFKA names one -- against an Apache Kafka broker."""
    if request.param == "data":
        return Log(data)
    if request.param == "kafka":
        bootstrap = os.environ.get(KAFKA_ENV_VAR)
        if not bootstrap:
            pytest.skip(f"no Apache Kafka broker named in ${KAFKA_ENV_VAR} (HOST:PORT)")
        return Log(data, bootstrap)
    broker: BrokerProcess = request.getfixturevalue("broker")
    return Log(data, broker.bootstrap)


@pytest.fixture
def name() -> str:
    """A topic (or group) name of the test's own: the broker is shared."""
    return f"t-{uuid.uuid4().hex[:8]}"
