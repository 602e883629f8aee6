"""What orjson reads of a JSON text but cannot write again as it was.

Pure logic, no I/O. Whatever stores JSON it re-encodes (``headwater produce``, the
ingest endpoint) or shows it again (``headwater consume``, the file sink, the record
browser) meets two limits of orjson:

- it reads an integer below -2**63 or above 2**64 - 1 as a float, so writing what it
  read rounds it (``123456789012345678901`` comes back as ``1.2345678901234568e+20``),
  and it refuses to write such an integer at all. :func:`exact_loads` and
  :func:`exact_dumps` are orjson's two calls with the standard library's ``json``
  taking over for the texts and values that hold one; :func:`has_wide_integer` tells
  such a text, and :func:`wide_integer_rows` the ones among many, in one call;
- it reads arrays and objects nested up to 1,024 levels, but writes at most
  :data:`MAX_JSON_DEPTH`.

:func:`has_wide_integer` and :func:`wide_integer_rows` run in C (``_speedups``, built where
a compiler is present at install time): a text without 19 digits in a row (every such
integer has them) is ruled out by a look at every 19th byte, and any other is read once
outside its strings. The Python here is their reference, which the tests hold them to.
Text with no such integer, nearly all of it, costs a few nanoseconds more than orjson.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

import orjson

__all__ = [
    "MAX_JSON_DEPTH",
    "exact_dumps",
    "exact_json",
    "exact_loads",
    "exact_loads_each",
    "has_wide_integer",
    "wide_integer_rows",
]

#: The deepest nesting of arrays and objects orjson writes (it reads deeper).
MAX_JSON_DEPTH = 254

#: A string (skipped), or a number: its sign, integer digits, fraction and exponent.
_TOKEN = re.compile(rb'"(?:[^"\\]|\\.)*"|(-?)([0-9]+)(\.[0-9]+)?([eE][+-]?[0-9]+)?')
#: The largest magnitudes orjson keeps as integers, by sign, in digits.
_LIMITS = {b"": b"18446744073709551615", b"-": b"9223372036854775808"}


def _has_wide_integer(text: bytes) -> bool:
    """Return whether ``text`` (bytes of valid JSON) holds an integer below -2**63 or
    above 2**64 - 1.

    :raises TypeError: if ``text`` is not bytes.
    """
    for match in _TOKEN.finditer(text):
        sign, digits, fraction, exponent = match.groups()
        if digits is None or fraction or exponent:
            continue
        limit = _LIMITS[sign]  # compared as digits: JSON integers have no leading zeros
        if len(digits) > len(limit) or (len(digits) == len(limit) and digits > limit):
            return True
    return False


def _wide_integer_rows(texts: Sequence[bytes]) -> list[int]:
    """Return the indexes of ``texts`` (bytes of valid JSON each) that hold an integer
    below -2**63 or above 2**64 - 1, in order.

    :raises TypeError: if a text is not bytes.
    """
    return [i for i, text in enumerate(texts) if has_wide_integer(text)]


try:
    from ._speedups import wide_integer_rows as _c_wide_integer_rows
    from ._speedups import wide_integers as _c_wide_integers
except ImportError:  # built without a C compiler
    _c_wide_integers = _c_wide_integer_rows = None  # type: ignore[assignment]

has_wide_integer = _has_wide_integer if _c_wide_integers is None else _c_wide_integers
wide_integer_rows = _wide_integer_rows if _c_wide_integer_rows is None else _c_wide_integer_rows

#: What orjson says of a value with an integer it cannot write (a ``TypeError``).
_WIDE_INTEGER_MESSAGE = "Integer exceeds 64-bit range"


def exact_loads(text: bytes | bytearray | memoryview | str) -> Any:
    """Return the value of JSON ``text`` as ``orjson.loads`` does, but with its integers
    beyond 64 bits as the integers they are (orjson reads them as floats).

    :raises orjson.JSONDecodeError: (a ValueError) if ``text`` is not JSON.
    """
    value = orjson.loads(text)  # validates it, as orjson would
    if type(text) is not bytes:
        text = text.encode() if isinstance(text, str) else bytes(text)
    if has_wide_integer(text):
        try:
            return json.loads(text)
        except RecursionError:
            # Nested past what json reads (orjson reads 1,024 levels): far past what
            # either writes (orjson 254 levels), so the value cannot be written again.
            return value
    return value


def exact_loads_each(texts: list[bytes]) -> list[Any]:
    """Return :func:`exact_loads` of each of ``texts``: ``orjson.loads`` in one C loop,
    and the standard library's ``json`` for the few with an integer beyond 64 bits.

    :raises orjson.JSONDecodeError: (a ValueError) if a text is not JSON.
    :raises TypeError: if a text is not bytes.
    """
    values = list(map(orjson.loads, texts))
    for row in wide_integer_rows(texts):
        values[row] = exact_loads(texts[row])
    return values


def exact_dumps(value: Any, option: int = 0) -> bytes:
    """Return ``orjson.dumps(value, option=option)``; for a value with an integer beyond
    64 bits, which orjson refuses, the :func:`exact_json` text (with sorted object keys
    under ``orjson.OPT_SORT_KEYS``), the integer kept.

    :raises TypeError: if orjson refuses ``value`` for another reason, or the value also
        holds something only orjson writes (a dataclass, a datetime) or ``option`` asks
        for more than sorted keys.
    :raises ValueError: if such a value also holds a NaN or an infinity.
    """
    try:
        return orjson.dumps(value, option=option)
    except orjson.JSONEncodeError as exc:
        if str(exc) != _WIDE_INTEGER_MESSAGE or option & ~orjson.OPT_SORT_KEYS:
            raise
    try:
        return exact_json(value, sort_keys=bool(option))
    except RecursionError:  # nested past what json writes: orjson would refuse it too
        raise orjson.JSONEncodeError("Recursion limit reached") from None


def exact_json(value: Any, *, sort_keys: bool = False) -> bytes:
    """Return ``value`` (decoded from JSON by the standard library, which keeps integers
    of any width) as compact JSON, UTF-8 as it is: what orjson would write, but for the
    integers it cannot hold (and floats below 1e-4, whose exponent is written with two
    digits here: ``1e-05`` for orjson's ``0.00001``, the same number).

    :raises TypeError: for a value JSON does not hold (tuples are written as arrays).
    :raises ValueError: for a NaN or an infinity.
    """
    return json.dumps(
        value, ensure_ascii=False, separators=(",", ":"), allow_nan=False, sort_keys=sort_keys
    ).encode()
