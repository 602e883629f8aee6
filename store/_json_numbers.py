"""What orjson reads of a JSON text but cannot write again as it was.

Pure logic, no I/O. Whatever stores JSON it re-encodes (``headwater produce``, the
ingest endpoint) or shows it again (``headwater consume``, the file sink, the record
browser) meets two limits of orjson:

- it reads an integer below -2**63 or above 2**64 - 1 as a float, so writing what it
  read rounds it (``123456789012345678901`` comes back as ``1.2345678901234568e+20``):
  such code asks :func:`has_wide_integer` first and encodes a text that has one with
  :func:`exact_json`, which keeps its integers;
- it reads arrays and objects nested up to 1,024 levels, but writes at most
  :data:`MAX_JSON_DEPTH`.

:func:`has_wide_integer` runs in C (``_speedups``, built where a compiler is present at
install time), one pass over the text outside its strings; the Python here is its
reference, which the tests hold it to.
"""

from __future__ import annotations

import json
import re
from typing import Any

__all__ = ["MAX_JSON_DEPTH", "exact_json", "has_wide_integer"]

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


try:
    from ._speedups import wide_integers as _c_wide_integers
except ImportError:  # built without a C compiler
    _c_wide_integers = None  # type: ignore[assignment]

has_wide_integer = _has_wide_integer if _c_wide_integers is None else _c_wide_integers


def exact_json(value: Any) -> bytes:
    """Return ``value`` (decoded from JSON by the standard library, which keeps integers
    of any width) as compact JSON, UTF-8 as it is: what orjson would write, but for the
    integers it cannot hold (and floats past 1e16, written ``1e+16`` here)."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()
