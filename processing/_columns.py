"""Rows of columns: the records of a batch that go to one partition, picked from each column.

Pure logic, no I/O. A batch's outputs are columns (values, keys, timestamps, ...), and
the records of each output partition are a list of row indexes into them
(``headwater.store.partition_rows``); :func:`take_rows` picks those rows out of every
column at once. It runs in C (``_speedups``, built where a compiler is present at
install time), in one loop per column with no Python call per row; the Python here is
its reference, and what runs for input the C loop does not take (a column or an index
list that is not a list, an index that is not an int from 0 to below every column's
length). The tests hold the two to the same results.
"""

from __future__ import annotations

from typing import Any

__all__ = ["take_rows"]


def _take_rows(columns: tuple[list[Any], ...], rows: list[int]) -> list[list[Any]]:
    """Return, for each of ``columns``, its items at ``rows`` (indexes, in the order
    given)."""
    return [list(map(column.__getitem__, rows)) for column in columns]


try:
    from ._speedups import take_rows as _c_take_rows
except ImportError:  # built without a C compiler
    _c_take_rows = None  # type: ignore[assignment]


def _accelerated(columns: tuple[list[Any], ...], rows: list[int]) -> list[list[Any]]:
    """:func:`_take_rows` in C where it takes the input (see the module docstring)."""
    assert _c_take_rows is not None
    found = _c_take_rows(columns, rows)
    if found is None:
        return _take_rows(columns, rows)
    return found


take_rows = _take_rows if _c_take_rows is None else _accelerated
