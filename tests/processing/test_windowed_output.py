"""The windowed aggregation's output, byte for byte, on a fixed sample of W2's workload.

The tumbling fold is a hot path that is tuned for speed; these digests were taken before
it was, so any change to what it writes (values, keys, timestamps, lineage, order, the
late stream, the store's final state) fails here.
"""

from __future__ import annotations

import hashlib
import random
from typing import Any

import orjson

from headwater.processing import App, windows
from headwater.processing.testing import TestDriver

PARTITIONS = 4


def sample(count: int) -> list[dict[str, Any]]:
    """W2-like events: 300 users, mostly in order, some out of order and some late."""
    rng = random.Random(20240601)
    out = []
    ts = 1_717_200_000_000
    for _ in range(count):
        ts += rng.choice((0, 1, 3, 7, 40))
        jitter = rng.choice((0,) * 20 + (-900, -4_000, -15_000))
        out.append(
            {
                "user": f"u{rng.randrange(300)}",
                "page": f"/p/{rng.randrange(100)}",
                "ts": ts + jitter,
                "ms": rng.randrange(1001),
            }
        )
    return out


def w2(updates: bool) -> App:
    app = App("w2-sample")
    windowed = (
        app.stream("clicks")
        .filter(lambda e: e["ms"] > 100)
        .key_by(lambda e: e["user"])
        .window(windows.tumbling(seconds=10), timestamp=lambda e: e["ts"], grace_ms=0)
        .aggregate(
            initial=lambda: {"count": 0, "sum": 0},
            add=lambda acc, e: {"count": acc["count"] + 1, "sum": acc["sum"] + e["ms"]},
            name="per-user-10s",
        )
    )
    windowed.final().to("final")
    windowed.late().to("late")
    if updates:
        windowed.updates().to("updates")
    return app


def digest(driver: TestDriver, topic: str) -> str:
    """Return a digest of every record of ``topic``: partition, offset, key, value bytes,
    timestamp and headers, in order."""
    h = hashlib.sha256()
    for p in range(driver.partitions(topic)):
        for r in driver.backend.records(topic, p):
            h.update(orjson.dumps([p, r.offset, r.key, r.value, r.timestamp, r.headers],
                                  default=lambda b: b.hex()))  # fmt: skip
    return h.hexdigest()


def run(updates: bool) -> tuple[TestDriver, list[str]]:
    driver = TestDriver(w2(updates), partitions={"clicks": PARTITIONS})
    events = sample(12_000)
    for start in range(0, len(events), 400):  # batches from each partition in turn
        chunk = events[start : start + 400]
        for p in range(PARTITIONS):
            driver.send_many("clicks", chunk[p::PARTITIONS], partition=p, timestamp=chunk[0]["ts"])
    driver.advance(60_000)  # idle: the last windows close by timer
    topics = ["final", "late", *(["updates"] if updates else [])]
    return driver, [digest(driver, t) for t in topics]


def test_w2_final_results_are_unchanged_byte_for_byte() -> None:
    driver, digests = run(updates=False)
    assert len(driver.records("final")) > 1000 and driver.records("late")
    assert digests == [FINAL, LATE]
    assert driver.state("per-user-10s") == {}  # every window closed and was removed


def test_w2_updates_are_unchanged_byte_for_byte() -> None:
    driver, digests = run(updates=True)
    assert len(driver.records("updates")) > len(driver.records("final"))
    assert digests == [FINAL, LATE, UPDATES]


FINAL = "74dbf417db30109f50d7e0a98a0546615b244e368faf7a4345ef2a0e378ea0b1"
LATE = "cf70b8eced680d2a8c68011697e2390b7e6054f44a062d14e99d7755e94b6b37"
UPDATES = "383166c856650f95611ec5e45d11bc8ebb3fe9fd5123a11c0eb355eefa9a874b"
