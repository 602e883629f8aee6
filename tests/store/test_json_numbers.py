"""Integers of a JSON text that do not fit 64 bits (store/_json_numbers.py): the scan in C
(store/_speedups.c) against its Python reference and against what orjson does."""

from __future__ import annotations

import json
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from headwater.store import (
    _json_numbers,
    canonical_key,
    exact_dumps,
    exact_json,
    exact_loads,
    exact_loads_each,
    has_wide_integer,
    wide_integer_rows,
)
from headwater.store._json_numbers import _has_wide_integer, _wide_integer_rows

compiled = _json_numbers._c_wide_integers
compiled_rows = _json_numbers._c_wide_integer_rows
needs_c = pytest.mark.skipif(compiled is None, reason="built without the C speedups")

#: Integers around the edges of what orjson keeps, and far beyond.
integers = st.one_of(
    st.integers(-(2**63) - 3, -(2**63) + 3),
    st.integers(2**64 - 3, 2**64 + 3),
    st.integers(-(10**30), 10**30),
    st.integers(-(2**63), 2**64 - 1),
)
#: Text with digits, signs and quotes in it, to tell strings from numbers.
tricky_text = st.text(alphabet=st.sampled_from('0123456789-."\\e, '), max_size=30)
json_values = st.recursive(
    st.none() | st.booleans() | integers | st.floats(allow_nan=False, allow_infinity=False)
    | tricky_text,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(tricky_text, inner, max_size=4),
    max_leaves=10,
)  # fmt: skip


def text_of(value: Any) -> bytes:
    """``value`` as JSON the standard library writes (it keeps integers of any width)."""
    return json.dumps(value, ensure_ascii=False).encode()


def holds_wide(value: Any) -> bool:
    """Whether ``value`` holds an int outside what orjson keeps (the model)."""
    if isinstance(value, dict):
        return any(map(holds_wide, value.values()))
    if isinstance(value, list):
        return any(map(holds_wide, value))
    return type(value) is int and not -(2**63) <= value <= 2**64 - 1


@given(json_values)
def test_a_wide_integer_is_found_exactly_when_orjson_would_round_it(value: Any) -> None:
    text = text_of(value)
    wide = holds_wide(json.loads(text))
    assert _has_wide_integer(text) == wide
    assert has_wide_integer(text) == wide
    if not wide:  # orjson keeps every number as it is written: nothing to find
        assert orjson.dumps(orjson.loads(text)) == orjson.dumps(json.loads(text))


@needs_c
@given(json_values)
def test_the_c_scan_agrees_with_the_python(value: Any) -> None:
    text = text_of(value)
    assert compiled(text) == _has_wide_integer(text)


@pytest.mark.parametrize(
    ("text", "wide"),
    [
        (b"18446744073709551615", False),
        (b"18446744073709551616", True),
        (b"-9223372036854775808", False),
        (b"-9223372036854775809", True),
        (b"1" * 5000, True),  # past the interpreter's own limit on an int's digits
        (b"18446744073709551616.5", False),
        (b"18446744073709551616e0", False),
        (b'"18446744073709551616"', False),
        (b'["\\\\", 18446744073709551616]', True),
        (b'["\\"18446744073709551616"]', False),
        (b"", False),
    ],
)
def test_the_edges(text: bytes, wide: bool) -> None:
    assert _has_wide_integer(text) is wide
    assert has_wide_integer(text) is wide


def test_only_bytes_are_taken() -> None:
    with pytest.raises(TypeError):
        has_wide_integer("1")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        _has_wide_integer("1")  # type: ignore[arg-type]


def test_exact_json_is_compact_and_keeps_wide_integers() -> None:
    value = json.loads(b'{"id": 123456789012345678901, "n": [-1, 2.5, "\\u00e9"]}')
    assert exact_json(value) == '{"id":123456789012345678901,"n":[-1,2.5,"é"]}'.encode()


@given(st.lists(json_values, max_size=8))
def test_the_rows_with_a_wide_integer_are_found_in_one_call(values: list[Any]) -> None:
    texts = [text_of(value) for value in values]
    expected = [i for i, text in enumerate(texts) if holds_wide(json.loads(text))]
    assert _wide_integer_rows(texts) == expected
    assert wide_integer_rows(texts) == expected


#: JSON arrays of long numbers and digit strings, padded so that runs of digits fall on
#: every position the C scan looks at.
digit_arrays = st.builds(
    lambda pad, items: b"[" + b" " * pad + b",".join(items) + b"]",
    st.integers(0, 40),
    st.lists(
        st.integers(-(10**25), 10**25).map(lambda n: str(n).encode())
        | st.from_regex(rb"\A[0-9]{15,25}\Z").map(lambda d: b'"' + d + b'"'),
        max_size=4,
    ),
)


@needs_c
@given(st.lists(json_values.map(text_of) | digit_arrays, max_size=8))
def test_the_c_rows_agree_with_the_python(texts: list[bytes]) -> None:
    assert compiled_rows(texts) == _wide_integer_rows(texts)


@pytest.mark.parametrize("rows", [_wide_integer_rows, wide_integer_rows])
def test_rows_take_a_list_of_bytes(rows: Any) -> None:
    with pytest.raises(TypeError):
        rows([b"1", "18446744073709551616"])
    assert rows([]) == []


@given(json_values)
def test_exact_loads_reads_every_integer_as_written(value: Any) -> None:
    text = text_of(value)
    loaded = exact_loads(text)
    assert loaded == json.loads(text)
    assert exact_loads(bytearray(text)) == exact_loads(text.decode()) == loaded
    if not holds_wide(loaded):  # orjson's own value: no second parse
        assert orjson.dumps(loaded) == orjson.dumps(orjson.loads(text))


@given(json_values)
def test_exact_dumps_writes_what_orjson_writes_and_wide_integers_exactly(value: Any) -> None:
    text = exact_dumps(value)
    assert exact_loads(text) == value
    if holds_wide(value):
        assert text == exact_json(value)
    else:
        assert text == orjson.dumps(value)
    assert exact_dumps(value, orjson.OPT_SORT_KEYS) == (
        exact_json(value, sort_keys=True)
        if holds_wide(value)
        else orjson.dumps(value, option=orjson.OPT_SORT_KEYS)
    )


def test_exact_dumps_refuses_what_orjson_refuses_for_other_reasons() -> None:
    with pytest.raises(TypeError, match="Dict key must be str"):
        exact_dumps({1: 2**70})
    with pytest.raises(TypeError, match="64-bit"):  # an option json cannot follow
        exact_dumps([2**70], orjson.OPT_INDENT_2)
    with pytest.raises(TypeError):  # a value only orjson writes, beside a wide integer
        exact_dumps([2**70, object()])


def test_exact_loads_refuses_what_orjson_refuses() -> None:
    with pytest.raises(orjson.JSONDecodeError):
        exact_loads(b"[18446744073709551616")
    with pytest.raises(orjson.JSONDecodeError):
        exact_loads(b"1" * 400)  # infinite as a double: orjson says so first


def test_keys_beyond_64_bits_are_canonical_and_exact() -> None:
    assert canonical_key(2**70) == b"1180591620717411303424"
    assert canonical_key({"b": -(2**64), "a": 1}) == b'{"a":1,"b":-18446744073709551616}'
    assert canonical_key(float(2**70)) == b"1.1805916207174113e+21"  # a float stays one


def test_nesting_past_what_json_reads_or_writes_does_not_crash() -> None:
    deep = b"[" * 1023 + b"18446744073709551616" + b"]" * 1023  # orjson reads 1,024 levels
    inner: Any = exact_loads(deep)  # past json's depth: orjson's value, its number a float
    while isinstance(inner, list):
        (inner,) = inner
    assert inner == float(2**64)
    value: list[Any] = [2**70]
    inner = value
    for _ in range(2000):
        inner.append([])
        inner = inner[-1]
    with pytest.raises(TypeError, match="Recursion limit"):  # as orjson says of depth
        exact_dumps(value)


@given(st.lists(json_values, max_size=6))
def test_exact_loads_each_is_exact_loads_of_each(values: list[Any]) -> None:
    texts = [text_of(value) for value in values]
    assert exact_loads_each(texts) == [exact_loads(text) for text in texts]
    with pytest.raises(orjson.JSONDecodeError):
        exact_loads_each([*texts, b"[1"])
