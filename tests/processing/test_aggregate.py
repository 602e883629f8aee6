"""Windowed and table aggregations in the test driver, against simple models: window
assignment and closing, lateness, session merging, sliding windows, updates, idle
closing, restore and exactly-once state, and a rebalance that moves state."""

from __future__ import annotations

from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from headwater.processing import App, windows
from headwater.processing.testing import TestDriver

KEYS = ("a", "b", "c")


def count_app(spec: windows.WindowSpec, grace_ms: int, **kw: Any) -> App:
    app = App("agg")
    counted = (
        app.stream("in")
        .key_by(lambda e: e["k"])
        .window(spec, timestamp=lambda e: e["t"], grace_ms=grace_ms, **kw)
        .aggregate(lambda: 0, lambda acc, e: acc + 1, lambda a, b: a + b, name="counts")
    )
    counted.final().to("final")
    counted.late().to("late")
    return app


def run(app: App, records: list[tuple[str, int]]) -> TestDriver:
    driver = TestDriver(app)
    for k, t in records:
        driver.send("in", {"k": k, "t": t})
    return driver


def closed_and_open(driver: TestDriver) -> tuple[Counter[Any], dict[Any, int], Counter[Any]]:
    final = Counter((v["key"], v["start"], v["end"], v["value"]) for v in driver.values("final"))
    late = Counter((v["k"], v["t"]) for v in driver.values("late"))
    return final, driver.state("counts"), late


records_strategy = st.lists(
    st.tuples(st.sampled_from(KEYS), st.integers(min_value=0, max_value=400)),
    min_size=1,
    max_size=40,
)


@settings(max_examples=40)
@given(records_strategy, st.integers(1, 80), st.data())
def test_time_windows_close_and_drop_late_records_as_the_model_says(
    records: list[tuple[str, int]], size: int, data: st.DataObject
) -> None:
    advance = data.draw(st.integers(1, size))
    grace = data.draw(st.integers(0, 60))
    spec = windows.hopping(size, advance)
    # The model: records in order of arrival; a window accepts a record while the
    # stream time (including the record) is below its end + grace.
    stream_time = -1
    windows_open: dict[tuple[str, int], int] = defaultdict(int)
    closed: Counter[Any] = Counter()
    late: Counter[Any] = Counter()
    for k, t in records:
        stream_time = max(stream_time, t)
        live = [s for s in spec.starts(t) if s + size + grace > stream_time]
        if not live:
            late[(k, t)] += 1
        for s in live:
            windows_open[(k, s)] += 1
        for (key, s), n in list(windows_open.items()):
            if s + size + grace <= stream_time:
                closed[(key, s, s + size, n)] += 1
                del windows_open[(key, s)]
    final, state, dropped = closed_and_open(run(count_app(spec, grace), records))
    assert final == closed
    assert state == dict(windows_open)
    assert dropped == late


@settings(max_examples=40)
@given(records_strategy, st.integers(1, 40), st.integers(0, 40))
def test_sessions_merge_close_and_drop_late_records_as_the_model_says(
    records: list[tuple[str, int]], gap: int, grace: int
) -> None:
    spec = windows.session(gap)
    stream_time = -1
    sessions: dict[str, dict[tuple[int, int], int]] = defaultdict(dict)
    closed: Counter[Any] = Counter()
    late: Counter[Any] = Counter()
    for k, t in records:
        stream_time = max(stream_time, t)
        (start, end), absorbed = spec.merge(sessions[k], t)
        if end + gap + grace <= stream_time:
            late[(k, t)] += 1
        else:
            total = 1 + sum(sessions[k].pop(s) for s in absorbed)
            sessions[k][(start, end)] = total
        for key, held in sessions.items():
            for (s, e), n in list(held.items()):
                if e + gap + grace <= stream_time:
                    closed[(key, s, e, n)] += 1
                    del held[(s, e)]
    final, state, dropped = closed_and_open(run(count_app(spec, grace), records))
    assert final == closed
    assert state == {(k, s, e): n for k, held in sessions.items() for (s, e), n in held.items()}
    assert dropped == late


@settings(max_examples=30)
@given(
    st.lists(st.tuples(st.sampled_from(KEYS), st.integers(0, 300)), min_size=1, max_size=25),
    st.integers(0, 30),
)
def test_sliding_windows_hold_what_the_definition_says(
    records: list[tuple[str, int]], d: int
) -> None:
    records.sort(key=lambda r: r[1])  # in order, so nothing is late
    spec = windows.SlidingWindows(d)
    app = count_app(spec, grace_ms=10_000)
    driver = run(app, records)
    by_key: dict[str, list[int]] = defaultdict(list)
    for k, t in records:
        by_key[k].append(t)
    model = {
        (k, s): sum(s <= t < e for t in stamps)
        for k, stamps in by_key.items()
        for s, e in spec.windows(sorted(stamps))
    }
    assert driver.state("counts") == model


def test_final_updates_late_and_the_written_record() -> None:
    app = App("clicks-stats")
    agg = (
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
    agg.final().to("final")
    agg.updates().to("updates")
    agg.late().to("late")
    driver = TestDriver(app)
    for user, ms, ts in [("ada", 200, 1_000), ("ada", 300, 9_000), ("bob", 150, 5_000)]:
        driver.send("clicks", {"user": user, "ms": ms, "ts": ts})
    assert [u["value"]["count"] for u in driver.values("updates")] == [1, 2, 1]
    assert driver.values("final") == []
    driver.send("clicks", {"user": "ada", "ms": 500, "ts": 10_000})  # closes [0, 10000)
    driver.send("clicks", {"user": "bob", "ms": 900, "ts": 3_000})  # late
    (ada, bob) = driver.records("final")
    assert ada.key == b'"ada"' and ada.timestamp == 9_999
    assert ada.value == {"key": "ada", "start": 0, "end": 10_000, "value": {"count": 2, "sum": 500}}
    assert bob.value["value"] == {"count": 1, "sum": 150}
    assert driver.values("late") == [{"user": "bob", "ms": 900, "ts": 3_000}]
    assert driver.state("per-user-10s") == {("ada", 10_000): {"count": 1, "sum": 500}}


def test_an_idle_task_closes_its_windows_with_the_values_an_event_would_give() -> None:
    def final_values(close_by_event: bool) -> list[Any]:
        driver = TestDriver(count_app(windows.tumbling(ms=1000), 0, idle_ms=5_000))
        for k, t in [("a", 100), ("a", 900), ("b", 950)]:
            driver.send("in", {"k": k, "t": t})
        if close_by_event:
            driver.send("in", {"k": "z", "t": 1_000})
        else:
            driver.advance(4_999)
            assert driver.values("final") == []  # not idle long enough yet
            driver.advance(1)
        return driver.values("final")

    by_event, by_timer = final_values(True), final_values(False)
    assert (
        by_timer
        == by_event
        == [
            {"key": "a", "start": 0, "end": 1000, "value": 2},
            {"key": "b", "start": 0, "end": 1000, "value": 1},
        ]
    )


def test_idle_closing_can_be_turned_off() -> None:
    driver = TestDriver(count_app(windows.tumbling(ms=1000), 0, idle_ms=None))
    driver.send("in", {"k": "a", "t": 5})
    driver.advance(3_600_000)
    assert driver.values("final") == [] and driver.state("counts") == {("a", 0): 1}


def test_count_sum_min_max_reduce_make_tables() -> None:
    app = App("tables")
    keyed = app.stream("in").key_by(lambda e: e["k"])
    keyed.count(name="n").to_stream().to("n")
    keyed.sum(lambda e: e["x"], name="s").to_stream().to("s")
    keyed.min(lambda e: e["x"], name="lo").to_stream().to("lo")
    keyed.max(lambda e: e["x"], name="hi").to_stream().to("hi")
    keyed.reduce(lambda a, b: {"x": a["x"] * b["x"], "k": a["k"]}, name="r").to("r")
    driver = TestDriver(app)
    for k, x in [("a", 3), ("b", 5), ("a", -1), ("a", 4)]:
        driver.send("in", {"k": k, "x": x})
    assert driver.values("n") == [1, 1, 2, 3]
    assert driver.state("n") == {"a": 3, "b": 1}
    assert driver.state("s") == {"a": 6, "b": 5}
    assert driver.state("lo") == {"a": -1, "b": 5} and driver.state("hi") == {"a": 4, "b": 5}
    assert driver.state("r")["a"] == {"x": -12, "k": "a"}
    assert [r.key for r in driver.records("r")] == [b'"a"', b'"b"', b'"a"', b'"a"']


def test_changes_go_to_the_changelog_once_per_flush_and_restore_after_a_crash() -> None:
    app = count_app(windows.tumbling(ms=1000), 0)
    driver = TestDriver(app)
    for t in (1, 2, 3):
        driver.send("in", {"k": "a", "t": t})
    driver.commit()
    changelog = driver.changelog("counts")
    # One record for the changed key (its latest value), then the checkpoint.
    assert len(changelog) == 2 and changelog[0].value == b'[3,"agg-counts-repartition/0",2]'
    assert changelog[1].key == b"\x00headwater.checkpoint"
    driver.send("in", {"k": "a", "t": 4})  # not committed: processed again after the crash
    driver.restart(clean=False)
    assert driver.state("counts") == {("a", 0): 4}
    driver.send("in", {"k": "a", "t": 1000})
    assert driver.values("final")[-1] == {"key": "a", "start": 0, "end": 1000, "value": 4}


def test_a_state_ahead_of_the_commit_is_not_applied_twice() -> None:
    """The changelog covers inputs the crash kept from being committed: a restarted task
    re-reads them but does not fold them in again."""
    app = count_app(windows.tumbling(ms=1000), 0)
    driver = TestDriver(app)
    for t in (1, 2):
        driver.send("in", {"k": "a", "t": t})
    driver.commit()
    driver.send("in", {"k": "a", "t": 3})
    driver.backend.commit_errors.append(RuntimeError("the commit is lost"))
    with pytest.raises(RuntimeError, match="the commit is lost"):
        driver.commit()  # the changelog (covering t=3) is durable, the offsets are not
    driver.restart(clean=False)  # re-reads t=3 from the last commit
    driver.send("in", {"k": "a", "t": 1000})
    finals = [v for v in driver.values("final") if v["start"] == 0]
    assert finals == [{"key": "a", "start": 0, "end": 1000, "value": 3}]


def test_a_rebalance_moves_a_task_with_its_state() -> None:
    def run_with(members_joining: bool) -> list[Any]:
        app = count_app(windows.tumbling(ms=1000), 0)
        driver = TestDriver(app, partitions={"in": 2, "agg-counts-repartition": 2})
        for i, k in enumerate("abcabcab"):
            driver.send("in", {"k": k, "t": i}, partition=i % 2)
        if members_joining:
            second = driver.add_member()
            assert driver.tasks(second)  # it took tasks, and their state
            assert len(driver.state("counts")) == 3
        for k in "abc":
            driver.send("in", {"k": k, "t": 1_000}, partition=0)
            driver.send("in", {"k": k, "t": 1_000}, partition=1)
        return sorted(driver.values("final"), key=lambda v: v["key"])

    assert (
        run_with(True)
        == run_with(False)
        == [
            {"key": "a", "start": 0, "end": 1000, "value": 3},
            {"key": "b", "start": 0, "end": 1000, "value": 3},
            {"key": "c", "start": 0, "end": 1000, "value": 2},
        ]
    )


def test_a_disk_store_restores_from_its_local_copy(tmp_path: Path) -> None:
    app = App("disk")
    (app.stream("in").key_by(lambda e: e["k"]).count(name="n", store="disk").to_stream().to("out"))
    driver = TestDriver(app, state_dir=tmp_path)
    for k in "abcab":
        driver.send("in", {"k": k})
    driver.restart()  # clean: flushed, and the local copy reflects the whole changelog
    assert driver.state("n") == {"a": 2, "b": 2, "c": 1}
    assert driver.restored("n") == (0, 0)  # nothing read from the changelog
    assert (tmp_path / "disk" / "1_0" / "n").is_dir()  # task 1_0 reads the repartition topic
    driver.send("in", {"k": "c"})
    assert driver.values("out")[-1] == 2


def test_copies_a_crashed_upstream_wrote_again_are_not_applied_twice() -> None:
    """An input record that made several records of the repartition topic (a flat_map,
    and a fan-out merged again) is re-processed after a crash: its copies change no
    state, however the batches fall."""

    def run_with(crash: bool) -> dict[Any, Any]:
        app = App("fan")
        events = app.stream("in")
        doubled = events.flat_map(lambda e: [e, {**e, "k": e["k"] + "2"}])
        doubled.merge(events.filter(lambda e: e["t"] % 2 == 0)).key_by(lambda e: e["k"]).count(
            name="n"
        ).to_stream().to("out")
        driver = TestDriver(app)
        for t in range(4):
            driver.send("in", {"k": "a", "t": t})
        driver.commit()
        driver.send_many("in", [{"k": "a", "t": t} for t in range(4, 7)])
        if crash:
            driver.restart(clean=False)
        driver.send("in", {"k": "a", "t": 7})
        return driver.state("n")

    assert run_with(True) == run_with(False) == {"a": 12, "a2": 8}


def test_copies_of_records_a_crashed_upstream_wrote_again_are_not_applied_twice() -> None:
    """As above, for records that each made one record of the repartition topic (no
    numbers): the copies come after the originals, in one batch or in the next."""

    def run_with(crash: bool, batched: bool) -> dict[Any, Any]:
        app = App("single")
        app.stream("in").key_by(lambda e: e["k"]).count(name="n").to_stream().to("out")
        driver = TestDriver(app)
        driver.send_many("in", [{"k": "a", "t": t} for t in range(4)])
        driver.commit()
        later = [{"k": k, "t": t} for t in range(4, 9) for k in "ab"]
        if batched:
            driver.send_many("in", later)
        else:
            for event in later:
                driver.send("in", event)
        if crash:
            driver.restart(clean=False)
        driver.send("in", {"k": "a", "t": 9})
        return driver.state("n")

    for batched in (False, True):
        assert run_with(True, batched) == run_with(False, batched) == {"a": 10, "b": 5}


def test_a_repartition_topic_numbers_the_records_of_one_source_record() -> None:
    app = App("seq")
    app.stream("in").flat_map(lambda e: [e, e, e]).key_by(lambda e: e["k"]).count(
        name="n"
    ).to_stream().to("out")
    driver = TestDriver(app)
    driver.send("in", {"k": "a"})
    headers = [dict(r.headers) for r in driver.records("seq-n-repartition")]
    assert [h["headwater.source"] for h in headers] == [b"in/0/0"] * 3
    assert [h.get("headwater.seq") for h in headers] == [b"0", b"1", b"2"]


class KeyOnly:
    """A serde that reads a result's attributes (so it must get :class:`Windowed`)."""

    def serialize(self, value: Any) -> bytes:
        return f"{value.key}@{value.start}-{value.end}={value.value}".encode()

    def deserialize(self, data: bytes | None) -> Any:
        return None if data is None else data.decode()


def test_results_are_windowed_objects_to_every_step_but_a_plain_json_sink() -> None:
    # Results that only JSON sinks see are made as the dicts JSON writes (the same
    # bytes); a step or serde that reads them gets the objects.
    def results_app(*, reader: str | None) -> App:
        app = App("results")
        counted = (
            app.stream("in")
            .key_by(lambda e: e["k"])
            .window(windows.tumbling(ms=10), timestamp=lambda e: e["t"])
            .aggregate(lambda: 0, lambda acc, e: acc + 1, name="counts")
        )
        counted.final().to("json")
        counted.updates().to("json-updates")
        if reader == "map":
            counted.final().map(lambda w: [type(w).__name__, w.key, w.end]).to("seen")
        elif reader == "serde":
            counted.updates().to("seen", serde=KeyOnly())
        return app

    records = [("a", 1), ("b", 2), ("a", 5), ("a", 12), ("b", 25)]
    plain = run(results_app(reader=None), records)
    for reader in ("map", "serde"):
        driver = run(results_app(reader=reader), records)
        assert driver.records("json") == plain.records("json")
        assert driver.records("json-updates") == plain.records("json-updates")
    assert plain.values("json") == [
        {"key": "a", "start": 0, "end": 10, "value": 2},
        {"key": "b", "start": 0, "end": 10, "value": 1},
        {"key": "a", "start": 10, "end": 20, "value": 1},
    ]
    assert run(results_app(reader="map"), records).values("seen") == [
        ["Windowed", "a", 10], ["Windowed", "b", 10], ["Windowed", "a", 20],
    ]  # fmt: skip
    assert run(results_app(reader="serde"), records).values("seen")[:2] == ["a@0-10=1", "b@0-10=1"]
