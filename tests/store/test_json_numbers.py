"""Integers of a JSON text that do not fit 64 bits (store/_json_numbers.py): the scan in C
(store/_speedups.c) against its Python reference and against what orjson does."""

from __future__ import annotations

import json
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from headwater.store import _json_numbers, exact_json, has_wide_integer
from headwater.store._json_numbers import _has_wide_integer

compiled = _json_numbers._c_wide_integers
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
