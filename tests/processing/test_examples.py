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
    assert "clicks-per-user-10s: 68 records" in out
    assert "5 windows closed, from 1717200000000 to 1717200050000" in out
    assert "busiest: user-19 with 3 clicks (1011 ms) in [1717200020000, 1717200030000)" in out
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


@pytest.mark.slow
def test_sessions(data: Path) -> None:
    out = run_example("sessions.py", data)
    assert "processed 300 events, skipped 1" in out
    assert "user-sessions: 185 sessions closed" in out
    assert "most clicks: user-34, 7 clicks on 6 pages in 8.044 s" in out


@pytest.mark.slow
def test_orders(data: Path) -> None:
    out = run_example("orders.py", data)
    sys.path.insert(0, str(EXAMPLES))
    try:
        import orders
    finally:
        sys.path.pop(0)
    _, placed, paying = orders.sample()
    paid_at = {p["order"]: ts for ts, p in paying}
    paid = sum(
        o["order"] in paid_at and abs(paid_at[o["order"]] - ts) <= orders.WITHIN_MS
        for ts, o in placed
    )
    assert "orders-paid: 240 records" in out
    assert f"paid within 10 minutes: {paid}" in out  # as the data says
    assert f"unpaid when their window closed: {240 - paid}" in out
    assert "unknown customers: 22" in out


def test_windowed_examples_in_memory() -> None:
    sys.path.insert(0, str(EXAMPLES))
    try:
        import clickstream
        import orders
        import sessions
    finally:
        sys.path.pop(0)
    from headwater.processing.testing import TestDriver

    clicks = TestDriver(clickstream.app)
    for ts, user, ms in [(1_000, "u-1", 200), (9_000, "u-1", 300), (12_000, "u-2", 150)]:
        clicks.send("clicks", {"user": user, "page": "/", "ts": ts, "ms": ms})
    assert clicks.values("clicks-per-user-10s") == [
        {"key": "u-1", "start": 0, "end": 10_000, "value": {"count": 2, "sum": 500}}
    ]

    users = TestDriver(sessions.app)
    for ts, page in [(0, "/a"), (2_000, "/b"), (9_000, "/a"), (4_000, "/a"), (20_000, "/c")]:
        users.send("clicks", {"user": "u-1", "page": page, "ts": ts})
    assert users.values("user-sessions") == [  # 4000 came after [0, 2000] closed: late
        {"user": "u-1", "start": 0, "seconds": 2.001, "clicks": 2, "pages": 2},
        {"user": "u-1", "start": 9_000, "seconds": 0.001, "clicks": 1, "pages": 1},
    ]

    shop = TestDriver(orders.app)
    shop.send("customers", {"id": "c1", "name": "Ada", "tier": "gold"}, key="c1")
    shop.send("orders", {"order": "o1", "customer": "c1", "total": 5}, timestamp=0)
    shop.send("orders", {"order": "o2", "customer": "c9", "total": 7}, timestamp=1_000)
    shop.send("payments", {"order": "o1", "method": "card"}, timestamp=60_000)
    shop.send("payments", {"order": "o3", "method": "cash"}, timestamp=700_000)  # closes o2
    assert shop.values("orders-paid") == [
        {"order": "o1", "customer": "c1", "total": 5, "paid": True, "method": "card",
         "name": "Ada", "tier": "gold"},
        {"order": "o2", "customer": "c9", "total": 7, "paid": False, "name": None, "tier": None},
    ]  # fmt: skip


def test_the_stateful_dsl_as_documented() -> None:
    """The public contract's own example, as a user writes it."""
    from headwater.processing import App, windows
    from headwater.processing.testing import TestDriver

    app = App("clicks-stats")
    clicks = app.stream("clicks")
    per_user = (
        clicks.filter(lambda e: e["ms"] > 100)
        .key_by(lambda e: e["user"])
        .window(windows.tumbling(seconds=10), timestamp=lambda e: e["ts"], grace_ms=0)
        .aggregate(
            initial=lambda: {"count": 0, "sum": 0},
            add=lambda acc, e: {"count": acc["count"] + 1, "sum": acc["sum"] + e["ms"]},
            name="per-user-10s",
        )
        .final()
    )
    per_user.to("clicks-per-user-10s")
    users = app.table("users")
    clicks.key_by(lambda e: e["user"]).join(
        users, lambda click, user: {**click, "country": user["country"]}
    ).to("clicks-geo")
    driver = TestDriver(app)
    driver.send("users", {"country": "fr"}, key="ada")
    for ts, ms in [(1_000, 200), (2_000, 50), (10_500, 300)]:
        driver.send("clicks", {"user": "ada", "ms": ms, "ts": ts})
    assert driver.values("clicks-per-user-10s") == [
        {"key": "ada", "start": 0, "end": 10_000, "value": {"count": 1, "sum": 200}}
    ]
    assert [c["country"] for c in driver.values("clicks-geo")] == ["fr", "fr", "fr"]
    assert "state stores:   per-user-10s (memory" in app.describe()
