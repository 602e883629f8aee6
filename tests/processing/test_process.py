"""``stream.process``: a processor with per-task stores and timers on wall and stream time
(Kafka Streams' Processor API), in the test driver."""

from __future__ import annotations

from typing import Any

from headwater.processing import App, ProcessorContext
from headwater.processing.testing import TestDriver


class Dedupe:
    """Forwards the first record of each key; every minute of wall time, how many it saw;
    at stream time 1000, a marker."""

    def init(self, ctx: ProcessorContext) -> None:
        ctx.schedule_wall(ctx.wall_time_ms + 60_000, self.report)
        ctx.schedule_stream(1000, lambda c, now: c.forward({"stream_time": now}, key="marker"))

    def report(self, ctx: ProcessorContext, now: int) -> None:
        seen = ctx.store("seen")
        ctx.forward({"keys": len(seen)}, key="report")
        ctx.schedule_wall(now + 60_000, self.report)

    def process(self, value: Any, ctx: ProcessorContext) -> None:
        seen = ctx.store("seen")
        if ctx.key not in seen:
            seen.put(ctx.key, ctx.timestamp)
            ctx.forward(value)


def app() -> App:
    built = App("proc")
    built.stream("in").key_by(lambda e: e["k"]).process(Dedupe, stores=["seen"]).to("out")
    return built


def test_a_processor_keeps_state_and_forwards() -> None:
    driver = TestDriver(app())
    for k, t in [("a", 1), ("b", 2), ("a", 3)]:
        driver.send("in", {"k": k}, timestamp=t)
    assert driver.values("out") == [{"k": "a"}, {"k": "b"}]
    assert [r.key for r in driver.records("out")] == [b'"a"', b'"b"']
    assert driver.state("seen") == {"a": 1, "b": 2}


def test_timers_fire_on_wall_time_and_on_stream_time() -> None:
    driver = TestDriver(app())
    driver.send("in", {"k": "a"}, timestamp=5)
    driver.advance(59_999)
    assert driver.values("out") == [{"k": "a"}]
    driver.advance(1)  # the wall timer, without a record
    assert driver.values("out")[-1] == {"keys": 1}
    driver.send("in", {"k": "b"}, timestamp=1000)  # stream time reaches 1000
    assert driver.values("out")[-2:] == [{"k": "b"}, {"stream_time": 1000}]
    driver.advance(60_000)
    assert driver.values("out")[-1] == {"keys": 2}
    assert driver.records("out")[-1].key == b'"report"'


def test_a_restarted_processor_finds_its_store_and_schedules_again() -> None:
    driver = TestDriver(app())
    driver.send("in", {"k": "a"}, timestamp=1)
    driver.commit()
    driver.send("in", {"k": "b"}, timestamp=2)  # not committed
    driver.restart(clean=False)
    assert driver.state("seen") == {"a": 1, "b": 2}  # b re-processed, applied once
    driver.send("in", {"k": "a"}, timestamp=3)
    assert [v for v in driver.values("out") if "k" in v] == [{"k": "a"}, {"k": "b"}, {"k": "b"}]
    driver.advance(60_000)  # init ran again after the restore: the timer is back
    assert driver.values("out")[-1] == {"keys": 2}
