"""JSON integers beyond 64 bits go through a pipeline exactly: read, passed on, folded into
state, restored, keyed on and written, as Python's own integers (orjson alone would read
them as floats and refuse to write them)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson

from headwater.processing import App, windows
from headwater.processing.testing import TestDriver
from headwater.store import canonical_key, partition_for_key

from .helpers import load, read, run_until_caught_up

WIDE = 123456789012345678901234567890
#: Just past what orjson keeps, either way.
EDGES = [2**64, -(2**63) - 1]


def raw_values(driver: TestDriver, topic: str) -> list[bytes]:
    """The stored bytes of ``topic``'s values, partition after partition."""
    return [
        r.value
        for p in range(driver.partitions(topic))
        for r in driver.backend.records(topic, p)
        if r.value is not None
    ]


def test_values_pass_through_exactly_and_the_rest_is_written_by_orjson() -> None:
    app = App("echo")
    app.stream("in").map(lambda e: {**e, "twice": e["n"] * 2}).to("out")
    driver = TestDriver(app)
    sent = [{"n": 1.5}, {"n": WIDE}, {"n": 7}, *({"n": n} for n in EDGES)]
    driver.send_many("in", sent)
    got = driver.values("out")
    assert got == [{**e, "twice": e["n"] * 2} for e in sent]
    assert [type(e["n"]) for e in got] == [float, int, int, int, int]
    raw = raw_values(driver, "out")
    assert raw[0] == orjson.dumps({"n": 1.5, "twice": 3.0})  # no wide integer: orjson's bytes
    assert raw[1] == b'{"n":%d,"twice":%d}' % (WIDE, WIDE * 2)


def test_an_aggregate_beyond_64_bits_is_written_checkpointed_and_restored_exactly() -> None:
    app = App("totals")
    totals = app.stream("in").key_by(lambda e: e["k"]).sum(lambda e: e["n"], name="total")
    totals.to_stream().to("sums")
    driver = TestDriver(app)
    big = 2**63 + 5  # fits; three of them do not
    driver.send_many("in", [{"k": "a", "n": big}] * 3)
    assert driver.values("sums") == [big, 2 * big, 3 * big]
    driver.commit()
    latest = [r for r in driver.changelog("total") if r.key == b'"a"'][-1]
    assert latest.value == str(3 * big).encode()  # the changelog holds it exactly
    driver.restart(clean=False)  # a crash: the state comes back from the changelog
    assert driver.restored("total")[0] > 0
    assert driver.state("total") == {"a": 3 * big}
    driver.send("in", {"k": "a", "n": WIDE})
    assert driver.values("sums")[-1] == 3 * big + WIDE


def test_a_window_result_beyond_64_bits_is_written_exactly() -> None:
    app = App("windows")
    (
        app.stream("in")
        .key_by(lambda e: e["k"])
        .window(windows.tumbling(ms=10), timestamp=lambda e: e["ts"])
        .sum(lambda e: e["n"], name="per-10")
        .final()
        .to("out")
    )
    driver = TestDriver(app)
    driver.send_many("in", [{"k": "a", "ts": 1, "n": WIDE}, {"k": "a", "ts": 2, "n": 1}])
    driver.send("in", {"k": "a", "ts": 25, "n": 0})  # closes the first window
    assert raw_values(driver, "out") == [b'{"key":"a","start":0,"end":10,"value":%d}' % (WIDE + 1)]


def test_a_key_beyond_64_bits_is_written_and_placed_exactly() -> None:
    app = App("keys")
    app.stream("in").key_by(lambda e: e["id"]).to("out")
    driver = TestDriver(app)
    ids = [WIDE, WIDE + 1, *EDGES, 5]
    driver.send_many("in", [{"id": i} for i in ids])
    found = {
        r.key: p for p in range(driver.partitions("out")) for r in driver.backend.records("out", p)
    }
    assert set(found) == {str(i).encode() for i in ids}  # WIDE and WIDE + 1 stay apart
    for key, partition in found.items():
        assert key == canonical_key(int(key))
        assert partition == partition_for_key(key, driver.partitions("out"))


async def test_the_embedded_runtime_keeps_them_too(data: Path) -> None:
    lines = [b'{"id":%d,"ms":%d}' % (n, n % 1000) for n in (WIDE, 7, *EDGES)]
    await load(data, "clicks", lines, partitions=2, raw=True)
    app = App("exact")
    app.stream("clicks").map(lambda e: {**e, "next": e["id"] + 1}).to("out")
    await run_until_caught_up(app, data)
    written = sorted(r.value for part in await read(data, "out") for r in part)
    expected: list[Any] = [(n, n % 1000, n + 1) for n in (WIDE, 7, *EDGES)]
    assert written == sorted(b'{"id":%d,"ms":%d,"next":%d}' % e for e in expected)
