"""Clocks and timers (pure), checked against a sorted-list model."""

from __future__ import annotations

import math
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from headwater.processing import WallClock
from headwater.processing._batch import Context
from headwater.processing._clock import Timers, VirtualClock


async def nothing(ctx: Context, now_ms: int) -> None:
    """A timer callback that does nothing."""


def test_wall_clock() -> None:
    clock = WallClock()
    before = time.time_ns() // 1_000_000
    now = clock.now_ms()
    assert before <= now <= time.time_ns() // 1_000_000
    assert clock.seconds_until(now - 5) == 0
    assert 0 < clock.seconds_until(now + 60_000) <= 60


def test_virtual_clock_moves_only_when_told() -> None:
    clock = VirtualClock(1000)
    assert clock.now_ms() == 1000
    assert clock.seconds_until(1000) == 0 and clock.seconds_until(1001) == math.inf
    assert clock.advance(250) == 1250 == clock.now_ms()
    with pytest.raises(ValueError, match="forward"):
        clock.advance(-1)


@settings(max_examples=200, deadline=None)
@given(
    deadlines=st.lists(st.integers(min_value=0, max_value=100), max_size=30),
    cancel=st.sets(st.integers(min_value=0, max_value=29)),
    now=st.integers(min_value=0, max_value=100),
)
def test_timers_fire_in_deadline_order(deadlines: list[int], cancel: set[int], now: int) -> None:
    timers = Timers()
    made = [timers.at_wall_time(d, nothing) for d in deadlines]
    for i in cancel:
        if i < len(made):
            made[i].cancel()
    alive = sorted(
        (d, i) for i, d in enumerate(deadlines) if i not in cancel
    )  # the model: deadline order, then scheduling order
    expected_next = alive[0][0] if alive else None
    assert timers.next_wall_deadline() == expected_next
    due = timers.due_wall(now)
    assert [(t.deadline_ms, t.seq) for t in due] == [(d, i) for d, i in alive if d <= now]
    rest = [d for d, _ in alive if d > now]
    assert timers.next_wall_deadline() == (rest[0] if rest else None)
    assert len(timers) == len(rest)


def test_stream_timers_are_apart_from_wall_timers() -> None:
    timers = Timers()
    timers.at_stream_time(50, nothing)
    assert timers.next_wall_deadline() is None and timers.has_stream_timers()
    assert timers.due_wall(1000) == []
    assert [t.deadline_ms for t in timers.due_stream(60)] == [50]
    assert not timers.has_stream_timers()
