"""JSON text of a column of values from one orjson call (processing/_json_columns.py):
the splitter in C (processing/_speedups.c) against its Python reference, and
``dumps_each`` against ``orjson.dumps`` value by value, including what it declines."""

from __future__ import annotations

import dataclasses
import importlib
import sys
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from headwater.processing import _json_columns
from headwater.processing._json_columns import _split_array, dumps_each

compiled = _json_columns._c_split_array
needs_c = pytest.mark.skipif(compiled is None, reason="built without the C speedups")

#: Text with what a splitter could trip on: quotes, backslashes, commas, brackets.
tricky_text = st.text(alphabet=st.sampled_from('a",\\[]{}:\u00e9\U0001f600\x00\n '), max_size=8)
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | tricky_text,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(tricky_text, inner, max_size=4),
    max_leaves=12,
)


@given(st.lists(json_values, max_size=12))
def test_each_element_is_the_text_orjson_gives_the_value_alone(values: list[Any]) -> None:
    text = orjson.dumps(values)
    assert _split_array(text) == [orjson.dumps(v) for v in values]


@needs_c
@given(st.lists(json_values, max_size=12))
def test_the_c_splitter_agrees_with_the_python(values: list[Any]) -> None:
    text = orjson.dumps(values)
    assert compiled(text) == _split_array(text)


@needs_c
@given(st.lists(json_values, min_size=1, max_size=12))
def test_dumps_each_gives_what_dumps_gives_value_by_value(values: list[Any]) -> None:
    assert dumps_each(values) == [orjson.dumps(v) for v in values]


@pytest.mark.parametrize(
    "text",
    [
        b"",
        b"[",
        b"]",
        b"{}",
        b"[1,]",
        b"[,1]",
        b"[1,,2]",
        b'["a]',
        b'["a\\"]',
        b"[1]]",
        b"[[1]",
        b"[{]",
        b"1",
    ],
)
def test_text_that_is_not_such_an_array_is_refused(text: bytes) -> None:
    assert _split_array(text) is None
    if compiled is not None:
        assert compiled(text) is None


@needs_c
def test_the_c_splitter_refuses_what_is_not_bytes() -> None:
    assert compiled(bytearray(b"[1]")) is None
    assert compiled("[1]") is None


@needs_c
def test_escaped_backslashes_before_a_quote_end_the_string() -> None:
    values = ["\\", "\\\\", 'a\\"b', '"', ",", "]", "}"]
    assert compiled(orjson.dumps(values)) == [orjson.dumps(v) for v in values]


@dataclasses.dataclass
class Point:
    x: int
    y: str


@needs_c
def test_what_orjson_encodes_by_type_comes_out_as_it_does_alone() -> None:
    values = [Point(1, "a,b"), {"p": Point(2, "]")}, 3]
    assert dumps_each(values) == [orjson.dumps(v) for v in values]


def test_a_value_orjson_refuses_leaves_the_column_to_the_caller() -> None:
    assert dumps_each([{"a": 1}, {1, 2}, {"b": 2}]) is None
    assert dumps_each([{"ok": 1}, b"bytes"]) is None


def test_a_value_nested_to_orjsons_limit_alone_is_left_to_the_caller() -> None:
    deep: Any = 1
    for _ in range(254):
        deep = [deep]
    orjson.dumps(deep)  # encodes alone; inside the list it is one level too deep
    assert dumps_each([deep]) is None


def test_without_the_c_build_the_column_is_left_to_the_caller(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "headwater.processing._speedups", None)  # no C build
    try:
        plain = importlib.reload(_json_columns)
        assert plain.dumps_each([{"a": 1}]) is None
        assert plain.split_array is plain._split_array
    finally:
        monkeypatch.undo()
        importlib.reload(_json_columns)
