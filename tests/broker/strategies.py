"""Hypothesis strategies derived from the codec's own message declarations.

A value drawn for (struct, version) holds every declared field, like a decoded message:
random values for the fields that version carries (tagged fields included when the
version is flexible) and defaults for the others, so ``decode(encode(v)) == v``.
"""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

from headwater.broker._protocol._schema import Array, Primitive, Struct

_INT_RANGES = {
    "int8": (-(2**7), 2**7 - 1),
    "int16": (-(2**15), 2**15 - 1),
    "uint16": (0, 2**16 - 1),
    "int32": (-(2**31), 2**31 - 1),
    "uint32": (0, 2**32 - 1),
    "int64": (-(2**63), 2**63 - 1),
}

# Records: mostly small, sometimes past the spill threshold so the zero-copy path runs.
_RECORDS = st.one_of(
    st.binary(max_size=40),
    st.builds(lambda n, b: bytes([b]) * n, st.integers(1024, 2048), st.integers(0, 255)),
)


def primitive(kind: Primitive) -> st.SearchStrategy[Any]:
    """Return a strategy of non-null values of a primitive type."""
    if kind.name in _INT_RANGES:
        low, high = _INT_RANGES[kind.name]
        return st.integers(low, high)
    return {
        "bool": st.booleans(),
        "float64": st.floats(allow_nan=False),
        "uuid": st.uuids(),
        "string": st.text(max_size=6),
        "bytes": st.binary(max_size=8),
        "records": _RECORDS,
    }[kind.name]


def of_kind(
    kind: Primitive | Struct | Array, version: int, flexible: bool, nullable: bool = False
) -> st.SearchStrategy[Any]:
    """Return a strategy of values of ``kind`` as ``version`` carries them."""
    base: st.SearchStrategy[Any]
    if isinstance(kind, Struct):
        base = message(kind, version, flexible)
    elif isinstance(kind, Array):
        base = st.lists(of_kind(kind.item, version, flexible), max_size=3)
    else:
        base = primitive(kind)
    return st.none() | base if nullable else base


def message(struct: Struct, version: int, flexible: bool) -> st.SearchStrategy[dict[str, Any]]:
    """Return a strategy of dicts shaped like ``struct`` decodes in ``version``."""
    fields = {}
    for f in struct.fields:
        carried = f.exists(version) and (f.tag is None or flexible)
        if carried:
            fields[f.name] = of_kind(f.type, version, flexible, f.nullable(version))
        else:
            fields[f.name] = st.builds(f.default_value)
    return st.fixed_dictionaries(fields)
