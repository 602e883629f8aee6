"""Rows of columns (processing/_columns.py): the C loop (processing/_speedups.c) against
the Python it accelerates, and the input it leaves to the Python."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from headwater.processing import _columns
from headwater.processing._columns import _take_rows, take_rows

compiled = _columns._c_take_rows
needs_c = pytest.mark.skipif(compiled is None, reason="built without the C speedups")


@st.composite
def columns_and_rows(draw: st.DrawFn) -> tuple[tuple[list[Any], ...], list[int]]:
    length = draw(st.integers(0, 40))
    items = st.one_of(st.integers(), st.binary(max_size=4), st.none(), st.text(max_size=3))
    columns = tuple(
        draw(st.lists(items, min_size=length, max_size=length))
        for _ in range(draw(st.integers(1, 6)))
    )
    rows = draw(st.lists(st.integers(0, length - 1), max_size=60)) if length else []
    return columns, rows


@given(columns_and_rows())
def test_each_column_gives_its_items_at_the_rows_in_order(
    case: tuple[tuple[list[Any], ...], list[int]],
) -> None:
    columns, rows = case
    taken = take_rows(columns, rows)
    assert taken == [[column[i] for i in rows] for column in columns]
    assert all(a is b for got, column in zip(taken, columns, strict=True)
               for a, b in zip(got, [column[i] for i in rows], strict=True))  # fmt: skip


@needs_c
@given(columns_and_rows())
def test_the_c_loop_agrees_with_the_python(case: tuple[tuple[list[Any], ...], list[int]]) -> None:
    columns, rows = case
    assert compiled(columns, rows) == _take_rows(columns, rows)


@needs_c
def test_input_the_c_loop_does_not_take_is_left_to_the_python() -> None:
    assert compiled(([1, 2], [3]), [1]) is None  # past the shorter column
    assert compiled(([1, 2],), [-1]) is None  # counted from the end, in Python
    assert compiled(([1, 2],), [2**70]) is None
    assert compiled(([1, 2],), [True]) is None  # an int, but not exactly
    assert compiled(((1, 2),), [0]) is None  # a tuple, not a list
    assert compiled([[1, 2]], [0]) is None  # columns in a list, not a tuple
    assert take_rows(([1, 2],), [-1]) == [[2]]
    with pytest.raises(IndexError):
        take_rows(([1, 2], [3]), [1])
