"""Joins against Kafka Streams' semantics tables, row by row (as its documentation lays
them out, null cases included): each row sends one record and checks exactly what the
join emits after it. One key throughout; ``None`` is a record without a value (for a
table: a delete)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from headwater.processing import App, AppConfig, TopologyError, encode_key
from headwater.processing.testing import TestDriver
from headwater.store import NewRecord, TopicConfig, open_store

KEY = "k"

Row = tuple[int, str, Any, dict[str, list[Any]]]


def pair(left: Any, right: Any) -> list[Any]:
    return [left, right]


def play(app: App, rows: list[Row], topics: dict[str, str]) -> None:
    """Send each row's record; after each, check what each output topic got from it."""
    driver = TestDriver(app)
    seen = {topic: 0 for topic in topics.values()}
    for ts, side, value, expected in rows:
        driver.send(side, value, key=KEY, timestamp=ts)
        for how, topic in topics.items():
            got = driver.values(topic)[seen[topic] :]
            seen[topic] += len(got)
            assert got == expected.get(how, []), (ts, side, value, how)


# KStream-KTable join: only stream records emit; a table update emits nothing.
STREAM_TABLE: list[Row] = [
    (1, "left", None, {}),
    (2, "right", None, {}),
    (3, "left", "A", {"left": [["A", None]]}),
    (4, "right", "a", {}),
    (5, "left", "B", {"inner": [["B", "a"]], "left": [["B", "a"]]}),
    (6, "right", "b", {}),
    (7, "left", None, {}),
    (8, "right", None, {}),
    (9, "left", "C", {"left": [["C", None]]}),
    (10, "right", "c", {}),
    (11, "right", None, {}),
    (12, "left", None, {}),
    (13, "right", None, {}),
    (14, "right", "d", {}),
    (15, "left", "D", {"inner": [["D", "d"]], "left": [["D", "d"]]}),
]


def test_stream_table_join_row_by_row() -> None:
    app = App("st")
    stream, table = app.stream("left"), app.table("right")
    stream.join(table, pair, name="inner").to("inner")
    stream.left_join(table, pair, name="left").to("left-out")
    play(app, STREAM_TABLE, {"inner": "inner", "left": "left-out"})


# KTable-KTable join: an update on either side updates the result; None is a delete of
# the result (emitted only where there was a result to delete).
TABLE_TABLE: list[Row] = [
    (1, "left", None, {}),
    (2, "right", None, {}),
    (3, "left", "A", {"left": [["A", None]], "outer": [["A", None]]}),
    (4, "right", "a", {"inner": [["A", "a"]], "left": [["A", "a"]], "outer": [["A", "a"]]}),
    (5, "left", "B", {"inner": [["B", "a"]], "left": [["B", "a"]], "outer": [["B", "a"]]}),
    (6, "right", "b", {"inner": [["B", "b"]], "left": [["B", "b"]], "outer": [["B", "b"]]}),
    (7, "left", None, {"inner": [None], "left": [None], "outer": [[None, "b"]]}),
    (8, "right", None, {"outer": [None]}),
    (9, "left", "C", {"left": [["C", None]], "outer": [["C", None]]}),
    (10, "right", "c", {"inner": [["C", "c"]], "left": [["C", "c"]], "outer": [["C", "c"]]}),
    (11, "right", None, {"inner": [None], "left": [["C", None]], "outer": [["C", None]]}),
    (12, "left", None, {"left": [None], "outer": [None]}),
    (13, "right", None, {}),
    (14, "right", "d", {"outer": [[None, "d"]]}),
    (15, "left", "D", {"inner": [["D", "d"]], "left": [["D", "d"]], "outer": [["D", "d"]]}),
]


def test_table_table_join_row_by_row() -> None:
    app = App("tt")
    left, right = app.table("left"), app.table("right")
    left.join(right, pair, name="inner").to_stream().to("inner")
    left.left_join(right, pair, name="left").to_stream().to("left-out")
    left.outer_join(right, pair, name="outer").to_stream().to("outer")
    play(app, TABLE_TABLE, {"inner": "inner", "left": "left-out", "outer": "outer"})


def test_a_table_table_join_writes_deletes_as_tombstones() -> None:
    app = App("tt")
    app.table("left").join(app.table("right"), pair, name="j").to("out")
    driver = TestDriver(app)
    driver.send("left", "A", key=KEY)
    driver.send("right", "a", key=KEY)
    driver.send("right", None, key=KEY)
    (joined, deleted) = driver.records("out")
    assert joined.value == ["A", "a"] and joined.key == b'"k"'
    assert deleted.value is None and deleted.key == b'"k"'
    assert driver.backend.records("out", 0)[-1].value is None  # no value: a tombstone


# KStream-KStream join, every record within the window of every other: each record
# joins every buffered record of the other side (in arrival order).
STREAM_STREAM: list[Row] = [
    (1, "left", None, {}),
    (2, "right", None, {}),
    (3, "left", "A", {}),
    (4, "right", "a", {"*": [["A", "a"]]}),
    (5, "left", "B", {"*": [["B", "a"]]}),
    (6, "right", "b", {"*": [["A", "b"], ["B", "b"]]}),
    (7, "left", None, {}),
    (8, "right", None, {}),
    (9, "left", "C", {"*": [["C", "a"], ["C", "b"]]}),
    (10, "right", "c", {"*": [["A", "c"], ["B", "c"], ["C", "c"]]}),
    (11, "right", None, {}),
    (12, "left", None, {}),
    (13, "right", None, {}),
    (14, "right", "d", {"*": [["A", "d"], ["B", "d"], ["C", "d"]]}),
    (15, "left", "D", {"*": [["D", "a"], ["D", "b"], ["D", "c"], ["D", "d"]]}),
]


@pytest.mark.parametrize("how", ["inner", "left", "outer"])
def test_stream_stream_join_row_by_row(how: str) -> None:
    app = App("ss")
    left, right = app.stream("left"), app.stream("right")
    getattr(left, "join" if how == "inner" else f"{how}_join")(
        right, pair, within_ms=100, name="j"
    ).to("out")
    rows = [(ts, side, value, {how: out.get("*", [])}) for ts, side, value, out in STREAM_STREAM]
    play(app, rows, {how: "out"})


def test_stream_stream_records_without_a_partner_when_their_window_closes() -> None:
    """Since Kafka Streams 3.1: no early ``[A, null]``; a left (outer) join emits it once
    the record's window has closed (stream time past its time + within + grace) without a
    partner, stamped with the record's time; a partner that came in time suppresses it."""
    app = App("ss")
    left, right = app.stream("left"), app.stream("right")
    left.join(right, pair, within_ms=10, name="inner").to("inner")
    left.left_join(right, pair, within_ms=10, name="left").to("left-out")
    left.outer_join(right, pair, within_ms=10, grace_ms=5, name="outer").to("outer")
    rows: list[Row] = [
        (100, "left", "A", {}),
        (105, "right", "a", {"inner": [["A", "a"]], "left": [["A", "a"]], "outer": [["A", "a"]]}),
        (130, "left", "B", {}),  # A matched: nothing for it when its window closes
        (141, "right", "b", {"left": [["B", None]]}),  # B's window (to 140) closed: [B, null]
        (146, "right", "x", {"outer": [["B", None]]}),  # grace 5 for the outer join
        (200, "left", "C", {"outer": [[None, "b"], [None, "x"]]}),
        (90, "right", "late", {}),  # before the windows still open: dropped
    ]
    play(app, rows, {"inner": "inner", "left": "left-out", "outer": "outer"})


def test_stream_stream_window_is_symmetric_and_inclusive() -> None:
    app = App("ss")
    app.stream("left").join(app.stream("right"), pair, within_ms=10, name="j").to("out")
    driver = TestDriver(app)
    driver.send("left", "A", key=KEY, timestamp=100)
    for ts, value in [(89, "early"), (90, "edge-"), (110, "edge+"), (111, "far")]:
        driver.send("right", value, key=KEY, timestamp=ts)
    assert driver.values("out") == [["A", "edge-"], ["A", "edge+"]]
    assert [r.timestamp for r in driver.records("out")] == [100, 110]  # the later of the two


def test_joins_refuse_what_cannot_join() -> None:
    app = App("bad")
    stream, table = app.stream("s"), app.table("t")
    with pytest.raises(TopologyError, match="within_ms"):
        stream.join(app.stream("s2"), pair)
    with pytest.raises(TopologyError, match="stream-stream"):
        stream.join(table, pair, within_ms=5)
    with pytest.raises(TopologyError, match="stream-stream"):
        stream.outer_join(table, pair, within_ms=5)  # type: ignore[arg-type]
    with pytest.raises(TopologyError, match="inner or left"):
        stream._join(table, pair, "outer", None, 0, None)
    other = App("other").table("t")
    with pytest.raises(TopologyError, match="same App"):
        stream.join(other, pair)


def test_a_re_keyed_stream_is_repartitioned_to_the_table() -> None:
    app = App("co")
    users = app.table("users")
    clicks = app.stream("clicks")
    clicks.key_by(lambda e: e["user"]).join(users, lambda c, u: {**c, **u}, name="geo").to("geo")
    driver = TestDriver(app, partitions={"clicks": 2, "users": 3})
    assert driver.partitions("co-geo-repartition") == 3
    driver.send("users", {"country": "fr"}, key="ada")
    driver.send("clicks", {"user": "ada"}, partition=1)
    assert driver.values("geo") == [{"user": "ada", "country": "fr"}]


@pytest.mark.parametrize("how", ["join", "left_join"])
def test_a_stream_read_with_another_count_than_the_table_is_repartitioned(how: str) -> None:
    app = App("raw")
    joined = getattr(app.stream("clicks"), how)(app.table("users"), pair, name="j")
    joined.to("out")
    driver = TestDriver(app, partitions={"clicks": 2, "users": 3})
    assert driver.partitions("raw-j-repartition") == 3  # as wide as the table
    for user in ("ada", "bob", "cy", "dee"):
        driver.send("users", {"country": user[0]}, key=user)
    for user in ("ada", "bob", "cy", "dee", "eve"):  # placed by key among 2 partitions
        driver.send("clicks", {"user": user}, key=user)
    got = sorted(map(tuple, driver.values("out")), key=lambda p: p[0]["user"])
    expected = [({"user": u}, {"country": u[0]}) for u in ("ada", "bob", "cy", "dee")]
    if how == "left_join":
        expected.append(({"user": "eve"}, None))
    assert [(a, b) for a, b in got] == expected


@pytest.mark.parametrize("how", ["join", "left_join", "outer_join"])
def test_a_stream_stream_side_with_fewer_partitions_is_repartitioned(how: str) -> None:
    app = App("ss")
    left, right = app.stream("left"), app.stream("right")
    getattr(left, how)(right, pair, within_ms=10, name="j").to("out")
    driver = TestDriver(app, partitions={"left": 2, "right": 4})
    assert driver.partitions("ss-j-left-repartition") == 4
    assert "ss-j-right-repartition" not in driver.backend.topics()
    for i in range(8):
        driver.send("left", f"l{i}", key=f"k{i}", timestamp=1_000 + i)
        driver.send("right", f"r{i}", key=f"k{i}", timestamp=1_005 + i)
    assert sorted(driver.values("out")) == [[f"l{i}", f"r{i}"] for i in range(8)]


def test_a_table_table_join_of_different_counts_is_refused() -> None:
    app = App("tt")
    app.table("a").join(app.table("b"), pair, name="j").to_stream().to("out")
    with pytest.raises(TopologyError, match=r"'a' \(2 partitions\).*a table cannot be"):
        TestDriver(app, partitions={"a": 2, "b": 3})


async def test_a_running_stream_table_join_repartitions_the_stream(tmp_path: Path) -> None:
    """On the embedded log: the stream's 2-partition topic meets the 3-partition table
    through the repartition topic the runtime creates."""
    data = tmp_path / "data"
    users = [f"u{i}" for i in range(30)]
    async with open_store(data) as store:
        await store.create_topic("users", TopicConfig(partitions=3))
        await store.append(
            "users", [NewRecord(orjson.dumps(u.upper()), encode_key(u)) for u in users]
        )
        await store.create_topic("clicks", TopicConfig(partitions=2))
        await store.append("clicks", [NewRecord(orjson.dumps(u), encode_key(u)) for u in users])
    app = App("geo")
    app.stream("clicks").join(app.table("users"), pair, name="j").to("out")
    await app.run_async(until_caught_up=True, data_dir=data)
    async with open_store(data, read_only=True) as store:
        assert len(store.partitions("geo-j-repartition")) == 3
        out = [
            orjson.loads(r.value or b"")
            for p in store.partitions("out")
            for r in await p.read_records(0, 1 << 22)
        ]
    assert sorted(out) == sorted([u, u.upper()] for u in users)


async def test_a_running_join_takes_its_sides_in_timestamp_order(tmp_path: Path) -> None:
    """Both sides stored in full before the run: the task interleaves them by timestamp
    (neither side's batch runs ahead and leaves the other's records late), so every pair
    within the window joins."""
    data = tmp_path / "data"
    async with open_store(data) as store:
        for topic, shift in (("left", 0), ("right", 3)):
            await store.create_topic(topic, TopicConfig(partitions=1))
            await store.append(
                topic,
                [
                    NewRecord(orjson.dumps(i), encode_key(f"k{i % 5}"), 1_000_000 + i * 100 + shift)
                    for i in range(300)
                ],
            )
    app = App("ordered", config=AppConfig(max_batch_bytes=1024))
    app.stream("left").join(app.stream("right"), pair, within_ms=10, name="j").to("out")
    stats = await app.run_async(until_caught_up=True, data_dir=data)
    assert stats.skipped == 0
    async with open_store(data, read_only=True) as store:
        out = await store.partition("out", 0).read_records(0, 1 << 22)
    assert sorted(orjson.loads(r.value or b"") for r in out) == [[i, i] for i in range(300)]
