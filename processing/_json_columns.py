"""JSON text of a whole column of values, from one orjson call.

Pure logic, no I/O. ``orjson.dumps`` value by value pays, for every value, a call and an
output buffer of its own: orjson starts each at about a kilobyte and shrinks it to the
text's size, and under glibc's default heap settings that allocation costs several times
the encoding itself (about 1.5 us a value against 0.2 here, for the events of the
standard workloads). One ``orjson.dumps`` of the whole list writes every value's text
into one buffer, and it is the same text each value's own ``dumps`` gives: orjson writes
an array's elements as it writes them alone, with a comma between them and no
whitespace. :func:`split_array` cuts it into the elements again. Memory: while it does,
the list's text is held once more, as much again as the values' texts (which the record
batch that carries them holds too).

:func:`split_array` runs in C (``_speedups``, built where a compiler is present at
install time), one pass over the text with no Python call per element; the Python here
is its reference, which the tests hold it to. Without the C build, :func:`dumps_each`
declines and the caller encodes value by value, which is faster than splitting in
Python.
"""

from __future__ import annotations

from typing import Any, cast

import orjson

__all__ = ["dumps_each", "split_array"]


def _split_array(text: bytes) -> list[bytes] | None:
    """Return the text of each element of ``text``, a JSON array without whitespace
    between its tokens (as orjson writes one), or None if ``text`` is not such an array:
    its brackets, strings or nesting do not close, or an element is empty."""
    if len(text) < 2 or text[:1] != b"[" or text[-1:] != b"]":
        return None
    if len(text) == 2:
        return []
    elements: list[bytes] = []
    depth, start, at, end = 0, 1, 1, len(text) - 1
    while at < end:
        char = text[at]
        if char == 0x22:  # '"': skip the string, escapes and all
            at += 1
            while at < end and text[at] != 0x22:
                at += 2 if text[at] == 0x5C else 1  # a backslash escapes what follows
            if at >= end:
                return None
        elif char in b"{[":
            depth += 1
        elif char in b"}]":
            depth -= 1
            if depth < 0:
                return None
        elif char == 0x2C and depth == 0:  # ',' between two elements
            if at == start:
                return None
            elements.append(text[start:at])
            start = at + 1
        at += 1
    if depth or start == end:
        return None
    elements.append(text[start:end])
    return elements


try:
    from ._speedups import split_array as _c_split_array
except ImportError:  # built without a C compiler
    _c_split_array = None  # type: ignore[assignment]

split_array = _split_array if _c_split_array is None else _c_split_array


def _dumps_each(values: list[Any]) -> list[bytes | None] | None:
    """Return ``orjson.dumps(value)`` for each of ``values``, from one ``orjson.dumps``
    of the list (see the module docstring); or None when orjson refuses the list (a
    value it cannot encode, or one nested to its depth limit, which the list's own level
    takes it past). The caller then encodes value by value, and applies its error policy
    to each value that fails."""
    assert _c_split_array is not None
    try:
        text = orjson.dumps(values)
    except orjson.JSONEncodeError:
        return None
    elements = _c_split_array(text)
    if elements is None or len(elements) != len(values):  # cannot happen: orjson's text
        return None
    return cast("list[bytes | None]", elements)


def _declined(values: list[Any]) -> None:
    """Without the C build: None, and the caller encodes value by value (faster than
    splitting in Python)."""
    return None


dumps_each = _declined if _c_split_array is None else _dumps_each
