"""The Apache Kafka the tests start: where it cannot run, the reason says why (and the
tests that need it are skipped with that reason, see ``tests/conftest.py``)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from .running import CACHE_ENV_VAR, KafkaUnavailableError, kafka_jars


def test_without_java_the_reason_says_so(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no java, no mvn
    with pytest.raises(KafkaUnavailableError, match="Java is missing"):
        kafka_jars()


@pytest.mark.skipif(shutil.which("mvn") is None, reason="Maven (mvn) is not installed")
def test_without_maven_central_the_reason_says_so(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # An empty cache, and every download through a proxy that refuses connections.
    monkeypatch.setenv(CACHE_ENV_VAR, str(tmp_path / "cache"))
    refused = "127.0.0.1 -D{0}.proxyPort=9"
    monkeypatch.setenv(
        "MAVEN_OPTS", " ".join(f"-D{p}.proxyHost={refused.format(p)}" for p in ("http", "https"))
    )
    with pytest.raises(KafkaUnavailableError, match="Maven Central cannot be reached") as caught:
        kafka_jars(timeout_s=300)
    assert "Connection refused" in str(caught.value)
    assert not (tmp_path / "cache" / "lib").exists()  # nothing half-fetched is kept
