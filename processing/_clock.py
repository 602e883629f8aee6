"""Time as the runtime sees it: an injected wall clock, and each task's timers.

Theory of operation
-------------------
Two times matter to a stream processor, as in Kafka Streams. *Wall time* is the
machine's clock; the runtime never reads it directly but asks its :class:`Clock`, so that
the test driver can substitute a :class:`VirtualClock` that moves only when a test says
so. *Stream time* is per task: the largest event timestamp the task has read (kept by
the task, see ``_tasks.py``); it moves only with the data, so a replay gives the same
results as the live run.

A step schedules work on either with the task's :class:`Timers`: a *wall* timer fires
once the wall clock reaches its deadline, even on a partition that receives nothing
(the partition task races its fetch against the earliest wall deadline: a cancel scope
with a deadline, no polling); a *stream* timer fires once the task's stream time reaches
it, right after the batch that moved it. A callback gets the current time (wall, or the
task's stream time), which may be past its deadline; it keeps what it needs (which
window) itself. Timers are one-shot; a periodic one schedules its successor when it
fires, and one scheduled at or before the current time fires in the same pass. Timers
live in memory with the task: a step that needs them after a restart or a rebalance
schedules them again when it is built (from its restored state). Stream time is kept
only by tasks with a step that reads it (``Step.uses_stream_time``): the maximum of
each batch's timestamps is a pass over every record, which a stateless pipeline need
not pay for.

Pure logic, no I/O; timers are a heap, so the next deadline is read in O(1).
"""

from __future__ import annotations

import heapq
import itertools
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from ._batch import Context

#: What a timer runs: ``callback(ctx, time_ms)``, which may emit into ``ctx``.
TimerCallback = Callable[["Context", int], Awaitable[None]]


class Clock(Protocol):
    """Wall time, as the runtime reads it."""

    def now_ms(self) -> int:
        """Return the time, in epoch ms."""
        ...

    def seconds_until(self, deadline_ms: int) -> float:
        """Return how long the event loop should wait for ``deadline_ms`` (0 if past;
        ``math.inf`` if only an explicit move of the clock reaches it)."""
        ...


class WallClock:
    """The machine's clock (``time.time``); what an app runs on."""

    def __repr__(self) -> str:
        return "WallClock()"

    def now_ms(self) -> int:
        """Return the time, in epoch ms."""
        return time.time_ns() // 1_000_000

    def seconds_until(self, deadline_ms: int) -> float:
        """Return the seconds from now to ``deadline_ms`` (0 if past)."""
        return max(deadline_ms - self.now_ms(), 0) / 1000


class VirtualClock:
    """A clock that moves only when told to (the test driver's).

    :param start_ms: the time it shows at first, in epoch ms.
    """

    def __init__(self, start_ms: int) -> None:
        self._now_ms = start_ms

    def __repr__(self) -> str:
        return f"VirtualClock({self._now_ms})"

    def now_ms(self) -> int:
        """Return the time, in epoch ms."""
        return self._now_ms

    def seconds_until(self, deadline_ms: int) -> float:
        """Return 0 for a deadline reached, else ``math.inf`` (only :meth:`advance` reaches it)."""
        return 0.0 if deadline_ms <= self._now_ms else math.inf

    def advance(self, ms: int) -> int:
        """Move the clock forward by ``ms`` and return the new time.

        :raises ValueError: if ``ms`` is negative.
        """
        if ms < 0:
            raise ValueError(f"time only moves forward; got {ms} ms")
        self._now_ms += ms
        return self._now_ms


@dataclass(order=True, slots=True)
class Timer:
    """One scheduled callback; ordered by deadline, then by when it was scheduled."""

    deadline_ms: int
    seq: int
    callback: TimerCallback = field(compare=False)
    cancelled: bool = field(default=False, compare=False)

    def cancel(self) -> None:
        """Make the timer not fire (it is dropped when it comes due)."""
        self.cancelled = True


class Timers:
    """A task's wall-time and stream-time timers (see the module docstring).

    Concurrency: used by one task at a time (the runtime holds the task's lock).
    """

    __slots__ = ("_seq", "_stream", "_wall")

    def __init__(self) -> None:
        self._wall: list[Timer] = []
        self._stream: list[Timer] = []
        self._seq = itertools.count()

    def __len__(self) -> int:
        return sum(not t.cancelled for t in self._wall) + sum(not t.cancelled for t in self._stream)

    def at_wall_time(self, deadline_ms: int, callback: TimerCallback) -> Timer:
        """Run ``callback(ctx, now_ms)`` once the wall clock reaches ``deadline_ms``."""
        timer = Timer(deadline_ms, next(self._seq), callback)
        heapq.heappush(self._wall, timer)
        return timer

    def at_stream_time(self, deadline_ms: int, callback: TimerCallback) -> Timer:
        """Run ``callback(ctx, stream_time_ms)`` once the task's stream time reaches
        ``deadline_ms``."""
        timer = Timer(deadline_ms, next(self._seq), callback)
        heapq.heappush(self._stream, timer)
        return timer

    def next_wall_deadline(self) -> int | None:
        """Return the earliest wall-time deadline, or None when there is none."""
        heap = self._wall
        while heap and heap[0].cancelled:
            heapq.heappop(heap)
        return heap[0].deadline_ms if heap else None

    def has_stream_timers(self) -> bool:
        """Return whether any stream-time timer is pending."""
        heap = self._stream
        while heap and heap[0].cancelled:
            heapq.heappop(heap)
        return bool(heap)

    def due_wall(self, now_ms: int) -> list[Timer]:
        """Remove and return the wall timers due at ``now_ms``, earliest first."""
        return _pop_due(self._wall, now_ms)

    def due_stream(self, stream_time_ms: int) -> list[Timer]:
        """Remove and return the stream timers due at ``stream_time_ms``, earliest first."""
        return _pop_due(self._stream, stream_time_ms)


def _pop_due(heap: list[Timer], now_ms: int) -> list[Timer]:
    due: list[Timer] = []
    while heap and heap[0].deadline_ms <= now_ms:
        timer = heapq.heappop(heap)
        if not timer.cancelled:
            due.append(timer)
    return due
