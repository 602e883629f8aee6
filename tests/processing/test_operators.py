"""Operator semantics, through the test driver (the runtime's own pipelines, in memory)."""

from __future__ import annotations

import random
from collections import defaultdict
from typing import Any

import anyio
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from headwater.processing import (
    App,
    BytesSerde,
    Event,
    OperatorError,
    Retry,
    StrSerde,
    TopologyError,
)
from headwater.processing.testing import TestDriver
from headwater.store import partition_for_key


def test_filter_map_flat_map_peek() -> None:
    app = App("ops")
    seen: list[int] = []
    numbers = app.stream("numbers")
    (
        numbers.filter(lambda n: n % 2 == 0)
        .map(lambda n: n * 10)
        .peek(seen.append)
        .flat_map(lambda n: [n, n + 1])
        .to("out")
    )
    driver = TestDriver(app)
    driver.send_many("numbers", range(6))
    assert driver.values("out") == [0, 1, 20, 21, 40, 41]
    assert seen == [0, 20, 40]


def test_flat_map_to_nothing_and_many_keeps_keys_and_lineage() -> None:
    app = App("ops")
    app.stream("words").key_by(lambda w: w).flat_map(list).to("letters")
    driver = TestDriver(app)
    driver.send_many("words", ["ab", "", "c"])
    out = driver.records("letters")
    assert [(r.key, r.value) for r in out] == [(b'"ab"', "a"), (b'"ab"', "b"), (b'"c"', "c")]
    assert [dict(r.headers)["headwater.source"] for r in out] == [
        b"words/0/0",
        b"words/0/0",
        b"words/0/2",
    ]


def test_peek_runs_without_a_sink() -> None:
    app = App("ops")
    seen: list[str] = []
    app.stream("in").peek(seen.append)
    driver = TestDriver(app)
    driver.send("in", "x")
    assert seen == ["x"]


def test_key_by_places_by_murmur2_and_keeps_value() -> None:
    app = App("ops")
    app.stream("in").key_by(lambda e: e["user"]).to("out", partitions=4)
    driver = TestDriver(app)
    users = [f"u{i}" for i in range(20)]
    driver.send_many("in", [{"user": u} for u in users])
    out = driver.records("out")
    assert sorted(r.value["user"] for r in out) == sorted(users)
    for record in out:
        assert record.key == b'"%s"' % record.value["user"].encode()  # canonical JSON
        assert record.partition == partition_for_key(record.key, 4)


def test_key_by_encodings_and_custom_serde() -> None:
    app = App("ops")
    stream = app.stream("in")
    stream.on_error("skip").key_by(lambda e: e["k"]).to("auto")
    stream.on_error("skip").key_by(lambda e: e["k"], serde=StrSerde()).to("text")
    stream.on_error("skip").key_by(lambda e: e["k"].encode(), serde=BytesSerde()).to("raw")
    driver = TestDriver(app)
    keys = ["s", 7, "7", None, [1, "x"], {"b": 2, "a": [1, 2]}, 1.5]
    driver.send_many("in", [{"k": k} for k in keys])
    assert [r.key for r in driver.records("auto")] == [
        b'"s"',
        b"7",
        b'"7"',  # never the same bytes as 7: keys of different types do not collide
        None,
        b'[1,"x"]',
        b'{"a":[1,2],"b":2}',  # canonical: sorted object keys, no whitespace
        b"1.5",
    ]
    assert [r.key for r in driver.records("text")] == [b"s", b"7", None]  # others: not str
    assert [r.key for r in driver.records("raw")] == [b"s", b"7"]  # others: no .encode


def test_equal_keys_in_any_order_land_in_one_partition() -> None:
    app = App("ops")
    app.stream("in").key_by(lambda e: e["k"]).to("out", partitions=8)
    driver = TestDriver(app)
    driver.send_many("in", [{"k": {"a": 1, "b": 2}}, {"k": {"b": 2, "a": 1}}])
    first, second = driver.records("out")
    assert first.key == second.key == b'{"a":1,"b":2}'
    assert first.partition == second.partition


def test_a_bytes_key_needs_a_bytes_serde() -> None:
    app = App("ops")
    app.stream("in").key_by(lambda e: b"raw").to("out")
    with pytest.raises(OperatorError, match=r"key_by.*BytesSerde"):
        TestDriver(app).send("in", 1)


def test_steps_see_the_key_as_the_user_gave_it() -> None:
    app = App("ops")
    seen: list[object] = []
    (
        app.stream("in")
        .key_by(lambda e: (e["user"], e["n"] % 2))
        .with_metadata()
        .peek(lambda e: seen.append(e.key))
        .map(lambda e: e.value)
        .repartition("by-user")
        .with_metadata()
        .peek(lambda e: seen.append(e.key))
        .map(lambda e: e.value)
        .to("out")
    )
    driver = TestDriver(app)
    driver.send("in", {"user": "ada", "n": 3})
    assert seen == [("ada", 1), ["ada", 1]]  # read back from the repartition topic as JSON
    (record,) = driver.records("out")
    assert record.key == b'["ada",1]'  # serialised once, at the sink


def test_unkeyed_records_keep_their_partition_number() -> None:
    app = App("ops")
    app.stream("in").map(lambda v: v).to("same", partitions=3)
    app.stream("in").to("fewer", partitions=2)
    driver = TestDriver(app, partitions={"in": 3})
    for p in range(3):
        driver.send("in", p, partition=p)
    assert [(r.partition, r.value) for r in driver.records("same")] == [(0, 0), (1, 1), (2, 2)]
    assert sorted((r.partition, r.value) for r in driver.records("fewer")) == [
        (0, 0),
        (0, 2),
        (1, 1),
    ]


def test_sink_partitions_default_to_the_source_count() -> None:
    app = App("ops")
    app.stream("in").to("out")
    assert TestDriver(app, partitions={"in": 5}).partitions("out") == 5


def test_with_metadata() -> None:
    app = App("ops")
    app.stream("in").with_metadata().map(
        lambda e: [e.value, e.key, e.timestamp, e.topic, e.partition, e.offset, list(e.headers)]
    ).to("out", serde=PickleLike())
    driver = TestDriver(app, partitions={"in": 2})
    driver.send("in", "a", key="k", timestamp=123, headers=[("h", b"v")], partition=1)
    driver.send("in", "b", partition=1)
    first, second = driver.values("out")
    assert first == ["a", b'"k"', 123, "in", 1, 0, [("h", b"v")]]
    assert second[4:6] == [1, 1] and second[2] == driver.now_ms


class PickleLike:
    """A custom serde (any object, via repr/eval): values need not be JSON."""

    def serialize(self, value: object) -> bytes:
        return repr(value).encode()

    def deserialize(self, data: bytes | None) -> object:
        return eval(data or b"None")


def test_metadata_event_is_typed() -> None:
    event: Event[int] = Event(1, None, 0, (), "t", 0, 0)
    assert event.value == 1 and event._fields[0] == "value"


def test_user_headers_travel_and_runtime_headers_are_replaced() -> None:
    app = App("ops")
    app.stream("in").to("out")
    driver = TestDriver(app)
    driver.send("in", 1, headers=[("trace-id", b"abc"), ("headwater.source", b"x/0/9")])
    (record,) = driver.records("out")
    assert record.headers == (("headwater.source", b"in/0/0"), ("trace-id", b"abc"))


def test_branch_evaluates_once_and_splits() -> None:
    app = App("ops")
    calls: list[int] = []

    def is_even(n: int) -> bool:
        calls.append(n)
        return n % 2 == 0

    even, odd = app.stream("in").branch(is_even)
    even.to("even")
    odd.to("odd")
    driver = TestDriver(app)
    driver.send_many("in", range(5))
    assert driver.values("even") == [0, 2, 4]
    assert driver.values("odd") == [1, 3]
    assert calls == [0, 1, 2, 3, 4]


def test_split_first_match_wins_and_rest() -> None:
    app = App("ops")
    routes = app.stream("in").split(
        {"small": lambda n: n < 3, "even": lambda n: n % 2 == 0}, rest="others"
    )
    assert set(routes) == {"small", "even", "others"}
    for name, stream in routes.items():
        stream.to(name)
    driver = TestDriver(app)
    driver.send_many("in", range(8))
    assert driver.values("small") == [0, 1, 2]
    assert driver.values("even") == [4, 6]
    assert driver.values("others") == [3, 5, 7]


def test_split_validation() -> None:
    stream = App("ops").stream("in")
    with pytest.raises(TopologyError, match="mapping"):
        stream.split({})
    with pytest.raises(TopologyError, match="default route"):
        stream.split({"rest": lambda v: True})
    with pytest.raises(TopologyError, match="needs a function"):
        stream.split({"a": 3})  # type: ignore[dict-item]


def test_merge_keeps_per_partition_order() -> None:
    app = App("ops")
    numbers = app.stream("numbers")
    small, big = numbers.branch(lambda n: n < 5)
    letters = app.stream("letters", serde=StrSerde())
    small.map(str).merge(big.map(lambda n: f"big{n}"), letters).to("out", serde=StrSerde())
    driver = TestDriver(app)
    driver.send_many("numbers", [1, 7, 2, 8])
    driver.send_many("letters", ["a", "b"])
    assert driver.values("out") == ["1", "2", "big7", "big8", "a", "b"]


def test_merge_needs_streams_of_the_same_app() -> None:
    stream = App("a").stream("in")
    with pytest.raises(TopologyError, match="same App"):
        stream.merge(App("b").stream("in"))
    with pytest.raises(TopologyError, match="at least one"):
        stream.merge()


def test_two_streams_of_one_topic_with_their_own_serdes() -> None:
    app = App("ops")
    app.stream("in", serde=BytesSerde()).to("raw", serde=BytesSerde())
    app.stream("in").map(lambda v: v["n"]).to("parsed")
    driver = TestDriver(app)
    driver.send("in", b'{"n":1}')  # serialised by the first stream's serde
    assert driver.values("raw") == [b'{"n":1}']
    assert driver.values("parsed") == [1]


def test_repartition_puts_equal_keys_in_one_partition() -> None:
    app = App("ops")
    (
        app.stream("clicks")
        .key_by(lambda e: e["user"])
        .repartition("by-user")
        .with_metadata()
        .map(lambda e: {"user": e.value["user"], "partition": e.partition})
        .to("located")
    )
    driver = TestDriver(app, partitions={"clicks": 3})
    rng = random.Random(3)
    for i in range(60):  # users scattered over the input partitions
        driver.send("clicks", {"user": f"u{rng.randrange(8)}", "i": i}, partition=i % 3)
    internal = driver.records("ops-by-user-repartition")
    assert len(internal) == 60
    where: dict[str, set[int]] = defaultdict(set)
    for record in driver.values("located"):
        where[record["user"]].add(record["partition"])
    assert all(len(partitions) == 1 for partitions in where.values())
    for record in internal:
        assert record.partition == partition_for_key(record.key, 3)


def test_repartition_lineage_points_at_the_internal_topic() -> None:
    app = App("ops")
    app.stream("in").key_by(lambda v: v).repartition("k").to("out")
    driver = TestDriver(app)
    driver.send("in", "x")
    (out,) = driver.records("out")
    (internal,) = driver.records("ops-k-repartition")
    assert dict(out.headers)["headwater.source"] == b"ops-k-repartition/0/0"
    assert dict(internal.headers)["headwater.source"] == b"in/0/0"


def test_copartitioned_hook_repartitions_only_rekeyed_streams() -> None:
    app = App("ops")
    stream = app.stream("in")
    assert stream._copartitioned("agg") is stream
    rekeyed = stream.key_by(lambda v: v)._copartitioned("agg")
    assert rekeyed.node.kind == "internal"
    assert rekeyed.node.topic == "ops-agg-repartition"
    assert rekeyed._copartitioned("again") is rekeyed


def test_repartition_names_are_unique() -> None:
    stream = App("ops").stream("in")
    stream.repartition("x")
    with pytest.raises(TopologyError, match="used twice"):
        stream.repartition("x")


# -- async operators ---------------------------------------------------------------------


@settings(max_examples=25, deadline=None)
@given(
    delays=st.lists(st.integers(min_value=0, max_value=50), min_size=1, max_size=60),
    concurrency=st.integers(min_value=1, max_value=16),
)
def test_map_async_keeps_input_order_under_random_delays(
    delays: list[int], concurrency: int
) -> None:
    app = App("ops")
    running = 0
    most = 0

    async def slow_double(item: dict[str, Any]) -> dict[str, Any]:
        nonlocal running, most
        running += 1
        most = max(most, running)
        await anyio.sleep(item["delay"] / 1000)
        running -= 1
        return {**item, "double": item["i"] * 2}

    app.stream("in").key_by(lambda e: e["key"]).map_async(slow_double, concurrency=concurrency).to(
        "out"
    )
    driver = TestDriver(app)
    items = [{"i": i, "key": f"k{i % 3}", "delay": d} for i, d in enumerate(delays)]
    driver.send_many("in", items)
    out = driver.records("out")
    assert [r.value["i"] for r in out] == list(range(len(delays)))  # total order kept
    for key in ("k0", "k1", "k2"):  # so, in particular, order per key
        mine = [r.value["i"] for r in out if r.key == key.encode()]
        assert mine == sorted(mine)
    assert most <= concurrency


def test_map_async_runs_calls_concurrently() -> None:
    app = App("ops")
    running = 0
    most = 0

    async def wait(n: int) -> int:
        nonlocal running, most
        running += 1
        most = max(most, running)
        await anyio.sleep(1)
        running -= 1
        return n

    app.stream("in").map_async(wait, concurrency=8).to("out")
    driver = TestDriver(app)
    driver.send_many("in", range(20))
    assert driver.values("out") == list(range(20))
    assert most == 8


def test_filter_async() -> None:
    app = App("ops")

    async def is_odd(n: int) -> bool:
        await anyio.sleep(random.random() / 100)
        return n % 2 == 1

    app.stream("in").filter_async(is_odd, concurrency=4).to("out")
    driver = TestDriver(app)
    driver.send_many("in", range(10))
    assert driver.values("out") == [1, 3, 5, 7, 9]


def test_map_async_retries_with_backoff() -> None:
    app = App("ops")
    attempts: dict[int, int] = defaultdict(int)
    times: list[float] = []

    async def flaky(n: int) -> int:
        attempts[n] += 1
        times.append(anyio.current_time())
        if attempts[n] < 3:
            raise ConnectionError(f"try again ({attempts[n]})")
        return n

    retry = Retry(attempts=3, backoff_s=1.0, jitter_s=0.0)
    app.stream("in").map_async(flaky, retry=retry).to("out")
    driver = TestDriver(app)
    driver.send("in", 5)
    assert driver.values("out") == [5]
    assert attempts[5] == 3
    assert times[1] - times[0] == pytest.approx(1.0, abs=0.01)  # virtual time: no waiting
    assert times[2] - times[1] == pytest.approx(2.0, abs=0.01)


def test_retry_validation_and_sync_async_mismatch() -> None:
    with pytest.raises(TopologyError, match="attempts"):
        Retry(attempts=0)
    with pytest.raises(TopologyError, match="backoff_s"):
        Retry(backoff_s=-1)
    stream = App("ops").stream("in")

    async def coro(v: object) -> object:
        return v

    with pytest.raises(TopologyError, match="map_async"):
        stream.map(coro)
    with pytest.raises(TopologyError, match="needs an async function"):
        stream.map_async(lambda v: v)  # type: ignore[arg-type, return-value]
    with pytest.raises(TopologyError, match="concurrency"):
        stream.map_async(coro, concurrency=0)
    with pytest.raises(TopologyError, match="needs a function"):
        stream.filter(3)  # type: ignore[arg-type]


def test_streams_are_immutable_descriptions() -> None:
    app = App("ops")
    stream = app.stream("in")
    stream.filter(lambda v: v > 1).to("filtered")
    stream.to("all")  # the stream the filter was applied to is unchanged
    driver = TestDriver(app)
    driver.send_many("in", [1, 2])
    assert driver.values("filtered") == [2]
    assert driver.values("all") == [1, 2]


def test_text_and_integer_keys_are_written_as_encode_key_writes_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from headwater.processing import _pipeline, encode_key

    monkeypatch.setattr(_pipeline, "_KEY_CACHE_LIMIT", 3)  # forgotten and found again
    app = App("keys")
    app.stream("in").key_by(lambda e: e["k"]).repartition("by-k").to("out")
    driver = TestDriver(app, partitions={"in": 2})
    keys: list[Any] = ["a", 1, "1", 1, 'é\n"', -7, 2**40, "a", "b", "c", "d", 1, "a"]
    for start in range(0, len(keys), 4):
        driver.send_many("in", [{"k": k} for k in keys[start : start + 4]], partition=start % 2)
    written = driver.records("keys-by-k-repartition")
    assert sorted(r.key for r in written) == sorted(encode_key(k) for k in keys)
    assert all(r.key == encode_key(r.value["k"]) for r in written)
