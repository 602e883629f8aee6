"""Record keys from values: the one canonical encoding of a key object as bytes.

Theory of operation
-------------------
A key is compared, hashed (for placement, see ``_partitioner.py``) and joined on as the
bytes stored, so two writers that mean one key must write the same bytes. The canonical
form is compact JSON with object keys sorted (orjson, ``OPT_SORT_KEYS``): ``{"a": 1, "b":
2}`` and ``{"b": 2, "a": 1}`` are one key, and keys of different types never collide
(``1`` is ``1``, ``"1"`` is ``"1"`` with its quotes); an integer beyond 64 bits, which
orjson cannot write, is written exactly (``_json_numbers.exact_dumps``). The processing
DSL's ``key_by``
writes its keys so by default, and ``headwater produce --key FIELD`` writes the field so:
one encoder for both, here in the package both depend on.
"""

from __future__ import annotations

import orjson

from ._json_numbers import exact_dumps


def canonical_key(key: object) -> bytes | None:
    """Return ``key`` as canonical JSON bytes (None for None: no key).

    :raises TypeError: for bytes (they are a key already, not a value to encode) or a
        value JSON cannot hold.
    """
    if key is None:
        return None
    if isinstance(key, bytes | bytearray | memoryview):
        raise TypeError(f"the bytes {bytes(key)!r} are no value to encode as a JSON key")
    try:
        return exact_dumps(key, orjson.OPT_SORT_KEYS)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"cannot encode key {key!r} as JSON: {exc}") from None
