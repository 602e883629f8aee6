"""The declarative model of Kafka message layouts: fields with version ranges.

Theory of operation
-------------------
One :class:`Api` declares a request and a response :class:`Struct` once for every version
it covers. Each :class:`Field` says when it exists (``since``/``until``), from which version
it may be null (``nullable_since``), whether it is a tagged field (``tag``) and the value it
takes when a version does not carry it (``default``). An API's versions from
``flexible_since`` on are *flexible*: compact lengths, and a tagged-field section at the end
of every struct. A tagged field exists only in flexible versions; it is written only when
its value differs from its default, and reads as its default when absent.

Nothing here encodes or decodes: ``_codec.py`` compiles a (struct, version) pair into a
plan once and caches it. The declarations themselves live in ``_messages.py``.

Python values: integers are ``int``, ``float64`` is ``float``, ``bool`` is ``bool``,
strings are ``str``, ``bytes`` fields are ``bytes``, ``records`` fields are buffers
(decoded as a zero-copy ``memoryview``), ``uuid`` is :class:`uuid.UUID`, arrays are lists
and structs are dicts keyed by the fields' snake_case names; null is ``None``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ._types import FIXED_FORMATS, ZERO_UUID

_UNSET: Any = object()


@dataclass(frozen=True, eq=False)
class Primitive:
    """A primitive wire type: fixed-width (with a struct format) or variable-length."""

    name: str

    @property
    def fixed_format(self) -> str | None:
        """Return the struct format character of a fixed-width type, else ``None``."""
        return FIXED_FORMATS.get(self.name)

    def __repr__(self) -> str:
        return self.name.upper()


INT8 = Primitive("int8")
INT16 = Primitive("int16")
UINT16 = Primitive("uint16")
INT32 = Primitive("int32")
UINT32 = Primitive("uint32")
INT64 = Primitive("int64")
FLOAT64 = Primitive("float64")
BOOL = Primitive("bool")
UUID = Primitive("uuid")
STRING = Primitive("string")
BYTES = Primitive("bytes")
RECORDS = Primitive("records")
"""Record batches: bytes kept as a zero-copy buffer, possibly several on encode."""


@dataclass(frozen=True, eq=False)
class Array:
    """An array of ``item`` (a primitive or a struct)."""

    item: Primitive | Struct


@dataclass(frozen=True, eq=False)
class Field:
    """One field of a struct.

    :param name: the snake_case key of the field in decoded dicts.
    :param type: a :class:`Primitive`, :class:`Struct` or :class:`Array`.
    :param since: the first version carrying the field.
    :param until: the last version carrying it (``None``: every later version).
    :param nullable_since: the first version in which it may be null (``None``: never).
    :param tag: the tag of a tagged field (carried only in flexible versions).
    :param default: its value where absent; by default 0, ``False``, ``""``, ``b""``, the
        zero UUID, an empty list, or a dict of the struct's defaults.
    """

    name: str
    type: Primitive | Struct | Array
    since: int = 0
    until: int | None = None
    nullable_since: int | None = None
    tag: int | None = None
    default: Any = _UNSET

    def exists(self, version: int) -> bool:
        """Return whether ``version`` carries this field."""
        return self.since <= version and (self.until is None or version <= self.until)

    def nullable(self, version: int) -> bool:
        """Return whether the field may be null in ``version``."""
        return self.nullable_since is not None and version >= self.nullable_since

    def default_value(self) -> Any:
        """Return a fresh default value (lists and dicts are new objects each call)."""
        if self.default is not _UNSET:
            return self.default
        return default_of(self.type)


def nullable_string(name: str, since: int = 0) -> Field:
    """Return a string field that may be null from ``since`` on and is null by default."""
    return Field(name, STRING, since=since, nullable_since=since, default=None)


def default_of(kind: Primitive | Struct | Array) -> Any:
    """Return the default value of a type that declares none."""
    if isinstance(kind, Array):
        return []
    if isinstance(kind, Struct):
        return {f.name: f.default_value() for f in kind.fields}
    return _PRIMITIVE_DEFAULTS[kind.name]


_PRIMITIVE_DEFAULTS: dict[str, Any] = {
    **dict.fromkeys(("int8", "int16", "uint16", "int32", "uint32", "int64"), 0),
    "float64": 0.0,
    "bool": False,
    "uuid": ZERO_UUID,
    "string": "",
    "bytes": b"",
    "records": b"",  # what a Kafka broker sends for an empty partition
}


@dataclass(frozen=True, eq=False, init=False)
class Struct:
    """An ordered group of fields; the body of a message or an item of an array."""

    fields: tuple[Field, ...]

    def __init__(self, *fields: Field) -> None:
        names = [f.name for f in fields]
        assert len(set(names)) == len(names), f"duplicate field names in {names}"
        tags = [f.tag for f in fields if f.tag is not None]
        assert len(set(tags)) == len(tags), f"duplicate tags in {names}"
        object.__setattr__(self, "fields", fields)


@dataclass(frozen=True, eq=False)
class Api:
    """The declaration of one Kafka API: its key, version ranges and both layouts.

    :param key: the API key.
    :param name: Kafka's name for the API (``"Produce"``).
    :param advertised: the (min, max) versions the broker advertises and can decode.
    :param accepted: the (min, max) versions the broker serves; others in ``advertised``
        decode but are answered with ``UNSUPPORTED_VERSION``.
    :param flexible_since: the first flexible version (every later one is flexible too).
    """

    key: int
    name: str
    advertised: tuple[int, int]
    accepted: tuple[int, int]
    flexible_since: int
    request: Struct
    response: Struct

    def __post_init__(self) -> None:
        low, high = self.advertised
        assert low <= self.accepted[0] <= self.accepted[1] <= high, self.name
        for body in (self.request, self.response):
            _check_tags(body, self.flexible_since, self.name)

    def is_flexible(self, version: int) -> bool:
        """Return whether ``version`` uses the flexible (compact, tagged) encodings."""
        return version >= self.flexible_since

    def versions(self) -> range:
        """Return the advertised versions, all of which the codec can encode and decode."""
        return range(self.advertised[0], self.advertised[1] + 1)


def _check_tags(struct: Struct, flexible_since: int, api: str) -> None:
    for f in struct.fields:
        assert f.tag is None or f.since >= flexible_since, f"{api}.{f.name}: tag before flexible"
        kind = f.type.item if isinstance(f.type, Array) else f.type
        if isinstance(kind, Struct):
            _check_tags(kind, flexible_since, api)
