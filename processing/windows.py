"""Windows: the specs a user gives ``Stream.window``, and their arithmetic (pure, no I/O).

Four kinds, with Kafka Streams' definitions:

- :func:`tumbling`: fixed-size, non-overlapping windows ``[k*size, (k+1)*size)``;
- :func:`hopping`: fixed-size windows that start every ``advance`` ms, so a record falls
  into ``size / advance`` of them; no window starts before time 0 (as Kafka's
  ``TimeWindows``);
- :func:`sliding`: windows of ``max_difference`` defined by the records themselves
  (Kafka's ``SlidingWindows``): two records share a window when their timestamps differ
  by at most ``max_difference``. Each record ``t`` makes the window ``[t - d, t]`` and,
  when a later record falls within ``d + 1`` of it, ``[t + 1, t + 1 + d]``, so there is
  one window per distinct set of records that fit together, never one per millisecond;
- :func:`session`: a window per burst of activity of a key; a record within ``gap`` of a
  session extends it (merging sessions it bridges), else starts a new one.

Every window here is half-open, ``[start, end)``, whatever its kind: Kafka's inclusive
ends (sliding windows, sessions) are one less. A session's ``end`` is one past its last
record; a sliding window ``[t - d, t]`` is ``[t - d, t + 1)``. A result's record
timestamp is ``end - 1``.

Time. A window *closes* once the stream time (the largest event time seen) reaches
:meth:`WindowSpec.close_at`: ``end + grace`` (sessions: ``end - 1 + gap + grace + 1``,
since a record up to ``gap`` after a session's last one still extends it). A record
whose window has closed is *late*: it changes nothing, and goes to the ``late()``
stream. This is Kafka Streams' rule (a window ``[start, end)`` accepts records while
``stream time < end + grace``), applied per window, so a hopping record may be late for
its oldest window and on time for the others.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Generic, TypeVar

from ._errors import TopologyError

__all__ = (
    "HoppingWindows",
    "SessionWindows",
    "SlidingWindows",
    "TumblingWindows",
    "WindowSpec",
    "Windowed",
    "hopping",
    "session",
    "sliding",
    "tumbling",
)

V = TypeVar("V")

#: The largest window size or gap: about 292 years, far inside an int64 of ms.
_MAX_MS = 1 << 53


@dataclass(frozen=True, slots=True)
class Windowed(Generic[V]):
    """The result of one window of one key: what ``final()`` and ``updates()`` emit.

    ``start`` and ``end`` are epoch ms, ``[start, end)``; ``value`` is the aggregate.
    Written to a topic with the default serde it is the JSON object
    ``{"key", "start", "end", "value"}``.
    """

    key: object
    start: int
    end: int
    value: V


class WindowSpec:
    """What every window kind answers: its windows of a timestamp and when they close."""

    __slots__ = ()

    #: The kind's name, as ``describe`` shows it.
    kind: str = ""

    def close_at(self, end: int, grace_ms: int) -> int:
        """Return the stream time at which a window ending at ``end`` closes."""
        return end + grace_ms

    def retention_ms(self) -> int:
        """Return how far before the stream time a record may still fall in an open
        window, grace aside."""
        raise NotImplementedError

    def describe(self) -> str:
        """Return the spec as ``describe`` shows it."""
        raise NotImplementedError


def _duration(value: object, what: str) -> int:
    """Return ``value`` (int milliseconds or a timedelta) as a positive int of ms.

    :raises TopologyError: for anything else.
    """
    if isinstance(value, timedelta):
        ms = value // timedelta(milliseconds=1)
    elif isinstance(value, int) and not isinstance(value, bool):
        ms = value
    else:
        raise TopologyError(f"{what} must be milliseconds (an int) or a timedelta, got {value!r}")
    if not 0 < ms <= _MAX_MS:
        raise TopologyError(f"{what} must be from 1 ms to {_MAX_MS} ms, got {ms}")
    return ms


def _check_timestamp(timestamp: int) -> None:
    if timestamp < 0:
        raise ValueError(f"a windowed record needs a timestamp >= 0, got {timestamp}")


@dataclass(frozen=True, slots=True)
class HoppingWindows(WindowSpec):
    """Windows of ``size_ms`` that start every ``advance_ms`` (tumbling: the two are equal)."""

    size_ms: int
    advance_ms: int

    @property
    def kind(self) -> str:  # type: ignore[override]
        """``tumbling`` or ``hopping``."""
        return "tumbling" if self.size_ms == self.advance_ms else "hopping"

    def starts(self, timestamp: int) -> range:
        """Return the starts of the windows ``timestamp`` falls in, earliest first.

        :raises ValueError: for a negative timestamp.
        """
        _check_timestamp(timestamp)
        advance = self.advance_ms
        first = max(0, timestamp - self.size_ms + advance) // advance * advance
        return range(first, timestamp + 1, advance)

    def retention_ms(self) -> int:
        """Return the window size."""
        return self.size_ms

    def describe(self) -> str:
        """``tumbling 10000ms`` or ``hopping 10000ms every 5000ms``."""
        if self.size_ms == self.advance_ms:
            return f"tumbling {self.size_ms}ms"
        return f"hopping {self.size_ms}ms every {self.advance_ms}ms"


class TumblingWindows(HoppingWindows):
    """Hopping windows whose advance is their size: each record is in exactly one."""

    __slots__ = ()

    def __init__(self, size_ms: int) -> None:
        super().__init__(size_ms, size_ms)

    def start(self, timestamp: int) -> int:
        """Return the start of the one window ``timestamp`` falls in.

        :raises ValueError: for a negative timestamp.
        """
        _check_timestamp(timestamp)
        return timestamp - timestamp % self.size_ms


@dataclass(frozen=True, slots=True)
class SlidingWindows(WindowSpec):
    """Kafka Streams' sliding windows of ``max_difference_ms`` (see the module docstring)."""

    max_difference_ms: int
    kind = "sliding"

    def retention_ms(self) -> int:
        """Return the window size (``max_difference + 1`` ms, both ends included)."""
        return self.max_difference_ms + 1

    def describe(self) -> str:
        """``sliding 5000ms``."""
        return f"sliding {self.max_difference_ms}ms"

    def windows(self, timestamps: Sequence[int]) -> list[tuple[int, int]]:
        """Return the windows the records at ``timestamps`` (sorted) make, by start.

        Each record ``t`` makes its left window ``[t - d, t + 1)``; and its right window
        ``[t + 1, t + d + 2)`` when another record falls in it.
        """
        d = self.max_difference_ms
        found: set[tuple[int, int]] = set()
        for i, t in enumerate(timestamps):
            found.add((t - d, t + 1))
            after = bisect.bisect_right(timestamps, t, i)
            if after < len(timestamps) and timestamps[after] <= t + d + 1:
                found.add((t + 1, t + d + 2))
        return sorted(found)


@dataclass(frozen=True, slots=True)
class SessionWindows(WindowSpec):
    """Session windows with inactivity ``gap_ms`` (see the module docstring)."""

    gap_ms: int
    kind = "session"

    def close_at(self, end: int, grace_ms: int) -> int:
        """Return when a session ending at ``end`` closes: ``end + gap + grace``."""
        return end + self.gap_ms + grace_ms

    def retention_ms(self) -> int:
        """Return the gap (a record that far back may still extend a session)."""
        return self.gap_ms

    def describe(self) -> str:
        """``session gap 30000ms``."""
        return f"session gap {self.gap_ms}ms"

    def touches(self, start: int, end: int, timestamp: int) -> bool:
        """Return whether a record at ``timestamp`` joins the session ``[start, end)``."""
        return start - self.gap_ms <= timestamp <= end - 1 + self.gap_ms

    def merge(
        self, sessions: Iterable[tuple[int, int]], timestamp: int
    ) -> tuple[tuple[int, int], list[tuple[int, int]]]:
        """Return the session a record at ``timestamp`` makes, and the ``sessions`` it
        absorbs (those it touches, merged into it).

        :raises ValueError: for a negative timestamp.
        """
        _check_timestamp(timestamp)
        start, end = timestamp, timestamp + 1
        absorbed = [s for s in sessions if self.touches(s[0], s[1], timestamp)]
        for s_start, s_end in absorbed:
            start, end = min(start, s_start), max(end, s_end)
        return (start, end), absorbed


def tumbling(*, seconds: float | None = None, ms: int | None = None) -> TumblingWindows:
    """Return tumbling windows of ``seconds`` (or ``ms`` milliseconds).

    :raises TopologyError: unless exactly one of the two is a positive size.
    """
    if (seconds is None) == (ms is None):
        raise TopologyError("tumbling windows need a size: seconds=... or ms=...")
    if seconds is not None:
        if isinstance(seconds, bool) or not isinstance(seconds, int | float):
            raise TopologyError(f"seconds must be a number, got {seconds!r}")
        size = round(seconds * 1000)
        if size != seconds * 1000:
            raise TopologyError(f"seconds must be a whole number of ms, got {seconds!r}")
        return TumblingWindows(_duration(size, "tumbling window size"))
    return TumblingWindows(_duration(ms, "tumbling window size"))


def hopping(size: int | timedelta, advance: int | timedelta) -> HoppingWindows:
    """Return windows of ``size`` starting every ``advance`` (ms, or timedeltas).

    :raises TopologyError: unless ``0 < advance <= size``.
    """
    size_ms = _duration(size, "hopping window size")
    advance_ms = _duration(advance, "hopping window advance")
    if advance_ms > size_ms:
        raise TopologyError(
            f"a hopping window's advance ({advance_ms} ms) cannot exceed its size ({size_ms} ms)"
        )
    if advance_ms == size_ms:
        return TumblingWindows(size_ms)
    return HoppingWindows(size_ms, advance_ms)


def sliding(max_difference: int | timedelta) -> SlidingWindows:
    """Return sliding windows: records at most ``max_difference`` apart share one.

    :raises TopologyError: for a non-positive difference.
    """
    return SlidingWindows(_duration(max_difference, "sliding window max_difference"))


def session(gap: int | timedelta) -> SessionWindows:
    """Return session windows closed by ``gap`` of inactivity (ms, or a timedelta).

    :raises TopologyError: for a non-positive gap.
    """
    return SessionWindows(_duration(gap, "session gap"))
