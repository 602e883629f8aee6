"""Event times handed from the task that writes a repartition topic to the window reading it.

The handoff itself (``_handoff.py``) against what it promises, then whole apps: a window
given the event times writes exactly what it writes decoding every record (final
results, late records, dead letters), and the times are handed over only where no other
step can see the values.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import orjson
import pytest

from headwater.processing import App, open_in_process, windows
from headwater.processing._handoff import Handoff, event_times
from headwater.processing.testing import TestDriver
from headwater.store import NewRecord, TopicConfig, open_store

# -- the handoff -------------------------------------------------------------------------


def test_a_read_takes_the_times_of_its_offsets_across_batches_and_leaves_the_rest() -> None:
    handoff = Handoff()
    handoff.put("t", 0, 10, [1, 2, 3])
    handoff.put("t", 0, 13, [4, 5])
    handoff.put("t", 1, 10, [9])
    assert handoff.take("t", 0, range(10, 14)) == [1, 2, 3, 4]
    assert handoff.take("t", 0, range(14, 15)) == [5]
    assert handoff.take("t", 1, range(10, 11)) == [9]
    assert handoff.statistics().held == 0
    assert handoff.statistics().taken == 6


def test_a_read_not_wholly_held_gets_nothing() -> None:
    handoff = Handoff()
    handoff.put("t", 0, 10, [1, 2])
    assert handoff.take("t", 0, range(10, 13)) is None  # offset 12 was not put
    assert handoff.take("t", 0, range(5, 7)) is None
    assert handoff.take("t", 0, [10, 11]) is None  # not consecutive offsets: no range


def test_times_put_after_their_reader_read_past_them_are_not_kept() -> None:
    handoff = Handoff()
    assert handoff.take("t", 0, range(0, 20)) is None  # read before the writer put them
    handoff.put("t", 0, 10, [1, 2])
    assert handoff.statistics().held == 0
    handoff.put("t", 0, 20, [3])
    assert handoff.take("t", 0, range(20, 21)) == [3]


def test_the_oldest_batches_go_once_more_than_the_limit_are_held() -> None:
    handoff = Handoff(limit=4)
    handoff.put("t", 0, 0, [1, 2])
    handoff.put("t", 0, 2, [3, 4])
    handoff.put("t", 0, 4, [5])
    assert handoff.statistics().held == 3
    assert handoff.take("t", 0, range(0, 2)) is None
    assert handoff.take("t", 0, range(2, 5)) == [3, 4, 5]


def test_only_plain_non_negative_ints_are_event_times() -> None:
    assert event_times([0, 5, 2**70]) == [0, 5, 2**70]
    assert event_times([1, -1]) is None
    assert event_times([1, 2.0]) is None
    assert event_times([1, True]) is None
    assert event_times([]) is None


# -- apps --------------------------------------------------------------------------------


def sample(count: int) -> list[dict[str, Any]]:
    """Click events, mostly in order, some late."""
    rng = random.Random(7)
    ts = 1_000_000
    out = []
    for i in range(count):
        ts += rng.choice((0, 1, 3, 40))
        jitter = rng.choice((0,) * 10 + (-4_000, -15_000))
        out.append({"user": f"u{rng.randrange(50)}", "ts": ts + jitter, "ms": rng.randrange(1001),
                    "n": i})  # fmt: skip
    return out


def clicks_app(timestamp: Any = None, *, policy: str = "raise") -> App:
    app = App("handoff")
    windowed = (
        app.stream("clicks")
        .on_error(policy, dead_letter_topic="bad")
        .filter(lambda e: e["ms"] > 100)
        .key_by(lambda e: e["user"])
        .window(windows.tumbling(seconds=10), timestamp=timestamp or (lambda e: e["ts"]))
        .aggregate(
            initial=lambda: {"count": 0, "sum": 0},
            add=lambda acc, e: {"count": acc["count"] + 1, "sum": acc["sum"] + e["ms"]},
            name="per-user",
        )
    )
    windowed.final().to("final")
    windowed.late().to("late")
    return app


def drive(app: App, *, handoff: bool) -> tuple[TestDriver, dict[str, list[Any]]]:
    """Run ``sample`` through ``app`` in 4 partitions, batch by batch; return the driver
    and what each output topic holds (key, value, timestamp and headers of each record)."""
    driver = TestDriver(app, partitions={"clicks": 4})
    if not handoff:
        driver.backend.handoff = None
    events = sample(4_000)
    for start in range(0, len(events), 200):
        chunk = events[start : start + 200]
        for p in range(4):
            driver.send_many("clicks", chunk[p::4], partition=p, timestamp=chunk[0]["ts"])
    driver.advance(60_000)
    outputs = {
        topic: [(r.key, r.value, r.timestamp, r.headers) for r in driver.records(topic)]
        for topic in ("final", "late", "bad")
        if topic in driver.backend.topics()
    }
    return driver, outputs


def test_a_window_given_event_times_writes_what_decoding_every_record_writes() -> None:
    given, with_times = drive(clicks_app(), handoff=True)
    _, decoding = drive(clicks_app(), handoff=False)
    assert with_times == decoding
    assert with_times["late"] and with_times["final"]
    stats = given.backend.handoff.statistics()  # type: ignore[union-attr]
    assert stats.taken > 3_000 and stats.held == 0


def failing_time(e: dict[str, Any]) -> int:
    if e["n"] % 97 == 0:
        raise ValueError(f"no time for {e['n']}")
    return int(e["ts"])


def float_time(e: dict[str, Any]) -> float:
    return float(e["ts"])


@pytest.mark.parametrize("timestamp", [failing_time, float_time])
def test_a_timestamp_function_the_writer_cannot_use_is_left_to_the_window(timestamp: Any) -> None:
    # A batch whose times fail or are not plain ints is decoded and timed by the window
    # itself: its policy applies to each failing record once, as without the handoff.
    _, with_times = drive(clicks_app(timestamp, policy="dead_letter"), handoff=True)
    _, decoding = drive(clicks_app(timestamp, policy="dead_letter"), handoff=False)
    assert with_times == decoding
    if timestamp is failing_time:
        failed = sorted(orjson.loads(value)["n"] for _, value, _, _ in with_times["bad"])
        assert failed == sorted(
            {e["n"] for e in sample(4_000) if e["n"] % 97 == 0 and e["ms"] > 100}
        )


def test_no_times_are_handed_over_where_another_step_sees_the_values() -> None:
    app = App("shared")
    clicks = app.stream("clicks").filter(lambda e: e["ms"] > 100)
    clicks.map(lambda e: {**e, "seen": True}).to("seen")  # a second child of the filter
    (
        clicks.key_by(lambda e: e["user"])
        .window(windows.tumbling(seconds=10), timestamp=lambda e: e["ts"])
        .count(name="count")
        .final()
        .to("final")
    )
    driver = TestDriver(app, partitions={"clicks": 2})
    driver.send_many("clicks", sample(500), partition=0)
    assert driver.records("seen")
    assert driver.backend.handoff.statistics().put == 0  # type: ignore[union-attr]


# -- on the embedded log -------------------------------------------------------------------


async def load(data: Path, events: list[dict[str, Any]]) -> None:
    async with open_store(data) as store:
        await store.create_topic("clicks", TopicConfig(partitions=4))
        for p in range(4):
            mine = events[p::4]
            for start in range(0, len(mine), 250):
                chunk = mine[start : start + 250]
                await store.append(
                    "clicks", [NewRecord(orjson.dumps(e)) for e in chunk], partition=p
                )


async def test_the_embedded_log_hands_event_times_over_and_counts_every_late_record(
    data: Path,
) -> None:
    events = sample(8_000)
    await load(data, events)
    async with open_in_process(data, serve=False) as backend:
        stats = await clicks_app().run_async(until_caught_up=True, backend=backend)
        assert backend.handoff.statistics().taken > 0
    # Every late record is counted and written to late(); the others are folded (into
    # final results, or windows still open at the end).
    kept = sum(1 for e in events if e["ms"] > 100)
    finals: list[Any] = []
    late = 0
    async with open_store(data, read_only=True) as store:
        for p in store.partitions("final"):
            finals += [orjson.loads(r.value) for r in await p.read_records(0, 1 << 26)]
        for p in store.partitions("late"):
            late += len(await p.read_records(0, 1 << 26))
    assert stats.late == late > 0
    assert sum(f["value"]["count"] for f in finals) + late <= kept
