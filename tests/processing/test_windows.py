"""Window arithmetic (processing/windows.py) against simple models."""

from __future__ import annotations

import itertools
from datetime import timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from headwater.processing import TopologyError, windows

timestamps = st.integers(min_value=0, max_value=10**13)
sizes = st.integers(min_value=1, max_value=10**6)


@given(timestamps, sizes, st.data())
def test_hopping_starts_are_every_window_that_holds_the_timestamp(
    ts: int, size: int, data: st.DataObject
) -> None:
    advance = data.draw(st.integers(min_value=1, max_value=size))
    spec = windows.hopping(size, advance)
    # The model: every multiple of the advance, from 0, whose window holds ts.
    first = max(0, (ts - size) // advance * advance)
    model = [s for s in range(first, ts + 1, advance) if s <= ts < s + size]
    assert list(spec.starts(ts)) == model
    assert all(spec.close_at(s + size, 7) == s + size + 7 for s in model)


@given(timestamps, sizes)
def test_tumbling_puts_each_timestamp_in_one_window(ts: int, size: int) -> None:
    spec = windows.tumbling(ms=size)
    (start,) = spec.starts(ts)
    assert spec.start(ts) == start and start <= ts < start + size and start % size == 0


def test_specs_are_validated() -> None:
    assert windows.tumbling(seconds=10) == windows.tumbling(ms=10_000)
    assert (
        windows.hopping(timedelta(seconds=10), 5_000).describe() == "hopping 10000ms every 5000ms"
    )
    assert isinstance(windows.hopping(100, 100), windows.TumblingWindows)
    for bad in (
        windows.tumbling,
        lambda: windows.tumbling(seconds=1, ms=1000),
        lambda: windows.tumbling(ms=0),
        lambda: windows.tumbling(seconds=0.0001),
        lambda: windows.hopping(10, 20),
        lambda: windows.session(-1),
        lambda: windows.sliding("5s"),  # type: ignore[arg-type]
        lambda: windows.tumbling(ms=True),
    ):
        with pytest.raises(TopologyError):
            bad()
    with pytest.raises(ValueError, match="timestamp >= 0"):
        windows.tumbling(ms=10).start(-1)


@given(
    st.lists(st.integers(min_value=0, max_value=200), min_size=1, max_size=30), st.integers(0, 50)
)
def test_sliding_windows_cover_every_pair_once(stamps: list[int], d: int) -> None:
    spec = windows.sliding(d) if d else windows.SlidingWindows(0)
    stamps.sort()
    found = spec.windows(stamps)
    contents = [tuple(t for t in stamps if s <= t < e) for s, e in found]
    assert all(e - s == d + 1 for s, e in found)  # [t - d, t] with both ends in
    assert all(contents), "every window holds a record"
    assert len(set(contents)) == len(contents), "no two windows hold the same records"
    for a in stamps:  # records that fit together share a window
        for b in stamps:
            if 0 <= b - a <= d:
                assert any(s <= a and b < e for s, e in found)


@given(
    st.lists(st.integers(min_value=0, max_value=500), min_size=1, max_size=40), st.integers(1, 30)
)
def test_sessions_merged_in_any_order_equal_the_offline_split(stamps: list[int], gap: int) -> None:
    spec = windows.session(gap)
    sessions: set[tuple[int, int]] = set()
    for ts in stamps:  # in arrival order, out of order included
        merged, absorbed = spec.merge(sessions, ts)
        sessions.difference_update(absorbed)
        sessions.add(merged)
    # The model: sort, and cut wherever two neighbours are more than gap apart.
    ordered = sorted(stamps)
    model, start = [], ordered[0]
    for prev, nxt in itertools.pairwise(ordered):
        if nxt - prev > gap:
            model.append((start, prev + 1))
            start = nxt
    model.append((start, ordered[-1] + 1))
    assert sorted(sessions) == model
    assert all(spec.close_at(e, 0) == e + gap for _, e in model)
