"""Tumbling windows over a batch's columns: each record's window and whether it is late.

Pure logic, no I/O: the arithmetic of :meth:`TumblingAggregateStep.fold` for a whole
batch at once. A record at event time ``t`` belongs to the window starting at
``t - t % size``; it is late when that window has closed by the stream time it sees,
``start + size + grace <= max(first, t_0, ..., t_i)`` (the records before it in the
batch moved the stream time, as Kafka Streams' record-at-a-time order would).
:func:`tumbling_windows` gives the rows that are not late with their windows, and the
late rows: a late record needs no window.

:func:`tumbling_windows` runs in C (``_speedups``, built where a compiler is present at
install time) in one loop with no list per step, and no new int for a row number below
2**15 or for a late record's window; the column-by-column Python here is its reference,
and what runs for input the C loop does not take (times that are not ints within 64
bits). The tests hold the two to the same results.
"""

from __future__ import annotations

from itertools import compress, repeat
from operator import add, le, not_

from ._batch import indexes

__all__ = ["running_max", "tumbling_windows"]


def running_max(times: list[int], first: int) -> list[int]:
    """Return the stream time each record of a batch sees: the largest of ``first`` and
    the times up to it."""
    top = first  # a comparison per time: four times as fast as accumulate(times, max)
    return [top := t if t > top else top for t in times]


def _tumbling_windows(
    times: list[int], size: int, grace: int, first: int
) -> tuple[list[int], list[int], list[int]]:
    """Return the rows (indexes) of the records that are not late, their window starts,
    and the rows of the late records (event times ``times``, at least one, none
    negative; stream time ``first`` before them)."""
    starts = [t - t % size for t in times]
    rows = indexes(len(times))
    top = max(times)
    if min(starts) + size + grace > (top if top > first else first):
        return rows, starts, []  # no window of the batch closes by its end: none is late
    closed = list(map(add, starts, repeat(size + grace)))
    is_late = list(map(le, closed, running_max(times, first)))
    on_time = list(map(not_, is_late))
    return (
        list(compress(rows, on_time)),
        list(compress(starts, on_time)),
        list(compress(rows, is_late)),
    )


try:
    from ._speedups import tumbling_windows as _c_tumbling_windows
except ImportError:  # built without a C compiler
    _c_tumbling_windows = None  # type: ignore[assignment]


def _accelerated(
    times: list[int], size: int, grace: int, first: int
) -> tuple[list[int], list[int], list[int]]:
    """:func:`_tumbling_windows` in C where it takes the input (see the module docstring)."""
    assert _c_tumbling_windows is not None
    found = _c_tumbling_windows(times, size, grace, first, indexes(len(times)))
    if found is None:
        return _tumbling_windows(times, size, grace, first)
    return found


tumbling_windows = _tumbling_windows if _c_tumbling_windows is None else _accelerated
