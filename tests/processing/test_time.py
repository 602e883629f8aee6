"""Time: wall-time timers that fire on an idle partition, stream time per task, stream-time
timers, and outputs with their own timestamp and lineage; in the test driver and in the
runtime on the embedded log."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import pytest

from headwater.processing import App, open_in_process, source_of
from headwater.processing.testing import TestDriver

from .helpers import load, read
from .kinds import derive, register
from .test_runtime import CountingBackend


def tick_app(**params: Any) -> App:
    app = App("ticks")
    derive(app.stream("in"), "tick", period_ms=1000, **params).to("out")
    return app


def test_wall_timers_fire_on_time_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    register(monkeypatch)
    fired: list[int] = []
    driver = TestDriver(tick_app(fired=fired), start_ms=10_000)
    driver.send_many("in", [1, 2, 3])
    assert driver.values("out") == []  # nothing due yet
    driver.advance(999)
    assert driver.values("out") == []
    driver.advance(1)  # 11_000: the first tick, with no new input
    assert driver.values("out") == [{"task": "0_0", "count": 3, "at": 11_000}]
    driver.send("in", 4)
    driver.advance(5_500)  # ticks at 12_000 ... 16_000, each at its own time
    assert fired == [11_000, 12_000]  # only ticks with something to say emit
    (first, second) = driver.records("out")
    assert (first.timestamp, second.timestamp) == (11_000, 12_000)  # their own timestamps
    # Lineage: the last input each covers, read in an earlier batch than the tick.
    assert source_of(first.headers) == ("in", 0, 2)
    assert source_of(second.headers) == ("in", 0, 3)


def test_stream_time_is_per_task_and_drives_stream_timers(monkeypatch: pytest.MonkeyPatch) -> None:
    register(monkeypatch)
    app = App("st")
    derive(app.stream("in"), "stream_time", period_ms=100).to("out")
    driver = TestDriver(app, partitions={"in": 2})
    driver.send("in", "a", timestamp=1_000, partition=0)
    driver.send("in", "b", timestamp=5_000, partition=1)
    driver.send("in", "c", timestamp=1_050, partition=0)
    assert (driver.stream_time("0_0"), driver.stream_time("0_1")) == (1_050, 5_000)
    assert driver.values("out") == []
    driver.send("in", "late", timestamp=900, partition=0)  # out of order: time stays
    assert driver.stream_time("0_0") == 1_050
    driver.send("in", "d", timestamp=1_250, partition=0)  # passes 1_100 and 1_200
    assert driver.values("out") == [
        {"closed": 1_100, "stream_time": 1_250},
        {"closed": 1_200, "stream_time": 1_250},
    ]
    assert [r.timestamp for r in driver.records("out")] == [1_100, 1_200]


def test_stream_time_survives_a_restart_through_the_commit_metadata(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    register(monkeypatch)
    app = App("st")
    derive(app.stream("in"), "stream_time", period_ms=100).to("out")
    driver = TestDriver(app)
    driver.send("in", "a", timestamp=7_000)
    driver.restart()  # a clean restart commits first
    (committed,) = driver.committed().values()
    assert committed.offset == 1 and committed.metadata == '{"v":1,"stream_time_ms":7000}'
    assert driver.stream_time("0_0") == 7_000


def test_a_stateless_task_does_not_track_stream_time() -> None:
    app = App("plain")
    app.stream("in").to("out")
    driver = TestDriver(app)
    driver.send("in", 1, timestamp=5)
    assert driver.stream_time("0_0") is None
    driver.commit()
    assert [c.metadata for c in driver.committed().values()] == [""]


async def test_a_timer_fires_on_an_idle_partition_without_polling(
    data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    register(monkeypatch)
    await load(data, "in", [{"n": 1}, {"n": 2}])
    fired: list[int] = []
    event = anyio.Event()
    app = App("ticks")
    derive(app.stream("in"), "tick", period_ms=50, fired=fired, event=event).to("out")
    stop = anyio.Event()
    async with open_in_process(data) as local:
        backend = CountingBackend(local)
        async with anyio.create_task_group() as tg:
            tg.start_soon(lambda: app.run_async(stop=stop, backend=backend))
            with anyio.fail_after(60):  # a guard against a hang, not a timing check
                await event.wait()  # the partition had nothing new: the timer fired
            stop.set()
    (out,) = await read(data, "out")
    assert [r.value for r in out] == [b'{"task":"0_0","count":2,"at":%d}' % fired[0]]
    assert out[0].timestamp == fired[0]
    assert source_of(out[0].headers) == ("in", 0, 1)
    # One fetch returned the records; the waits that followed were cut by the timer's
    # deadline and by the stop, never retried in a loop.
    assert backend.fetch_calls <= 4
