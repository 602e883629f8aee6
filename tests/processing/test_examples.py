"""The examples run end to end, and say what they should."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).parents[2] / "examples"


def run_example(name: str, data: Path) -> str:
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / name), str(data)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    return result.stdout


@pytest.mark.slow
def test_clickstream(data: Path) -> None:
    out = run_example("clickstream.py", data)
    assert "stored 300 sample events in 'clicks' (2 partitions)" in out
    assert "processed 300 events" in out
    assert "clicks-enriched: 201 records" in out
    assert "slow-clicks: 44 records" in out
    assert "clicks-dlq: 3 records" in out
    assert "JSONDecodeError" in out and "KeyError: 'ms'" in out
    assert "its lineage header: clicks/0/0" in out


@pytest.mark.slow
def test_log_router(data: Path) -> None:
    out = run_example("log_router.py", data)
    assert "routed 300 lines (2 dead letters)" in out
    assert "logs-error: 49 lines" in out
    assert "logs-warning: 52 lines" in out
    assert "logs-other: 197 lines" in out
    assert "logs-audit: 101 lines" in out
    assert "logs/0/17 b'garbage'" in out
    assert "unknown level 'TRACE'" in out


def test_example_apps_build_and_test_in_memory() -> None:
    sys.path.insert(0, str(EXAMPLES))
    try:
        import clickstream
        import log_router
    finally:
        sys.path.pop(0)
    from headwater.processing.testing import TestDriver

    driver = TestDriver(log_router.app)
    driver.send("logs", "2024-06-01T00:00:00Z ERROR api boom user=1")
    assert [r["level"] for r in driver.values("logs-error")] == ["ERROR"]
    assert len(driver.values("logs-audit")) == 1
    clicks = TestDriver(clickstream.app)
    clicks.send("clicks", {"user": "user-3", "page": "/products/7", "ms": 900})
    (enriched,) = clicks.values("clicks-enriched")
    assert enriched["section"] == "products" and enriched["slow"] and enriched["country"]
    assert [r.key for r in clicks.records("slow-clicks")] == [b'"user-3"']
