"""Serdes: how a stream's values become record bytes and back.

A :class:`Serde` is two functions, ``serialize`` and ``deserialize``. The runtime calls
them on whole batches through ``map``, so a serde is a plain object with two methods and
no per-call setup. Values are JSON (orjson) by default; :class:`BytesSerde` passes bytes
through and :class:`StrSerde` is UTF-8 text. JSON integers beyond 64 bits, which orjson
reads as floats and will not write, are read and written exactly (the standard library's
``json`` takes over for the values that hold one: ``headwater.store.exact_loads``). A
record without a value (a tombstone) deserialises to ``None`` with every serde here;
``None`` serialises to no value with the bytes and str serdes, and to ``null`` with JSON.

Keys are bytes in the log, but a key computed by ``key_by`` stays the user's object
while it flows through the steps (so a stateful step sees ``"ada"``, not ``b'"ada"'``)
and is serialised once, at the sink, by the ``key_by``'s key serde: by default
:class:`JsonKeySerde`, canonical JSON (sorted object keys, no whitespace), so that equal
keys always encode to equal bytes (``{"a": 1, "b": 2}`` and ``{"b": 2, "a": 1}`` land
in one partition) and keys of different types never collide (``1`` is ``1``, ``"1"`` is
``"1"`` with its quotes). Give ``key_by`` ``serde=StrSerde()`` for plain UTF-8 text keys
(what a Java producer's StringSerializer writes), or ``BytesSerde()`` for bytes keys.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, TypeVar

import orjson

from headwater.store import canonical_key, exact_dumps, exact_loads, wide_integer_rows

from ._errors import SerdeError
from ._json_columns import dumps_each
from .windows import Windowed

T = TypeVar("T")


class Serde(Protocol[T]):
    """Turns values of type ``T`` into record bytes and back.

    Both methods may raise any exception for bad input; the runtime turns it into the
    stream's error policy (deserialising) or a :class:`SerdeError` (serialising).
    """

    def serialize(self, value: T) -> bytes | None:
        """Return the bytes stored for ``value`` (None: a record without a value)."""
        ...

    def deserialize(self, data: bytes | None) -> T:
        """Return the value stored as ``data`` (None: a record without a value)."""
        ...


class JsonSerde:
    """JSON values through orjson: dicts, lists, str, int, float, bool, None (integers of
    any width: see the module docstring).

    :param option: orjson ``OPT_*`` flags for serialising (``orjson.OPT_SORT_KEYS``, ...).
    """

    def __init__(self, *, option: int = 0) -> None:
        self._option = option

    def __repr__(self) -> str:
        return "json"

    def serialize(self, value: Any) -> bytes | None:
        """Return ``value`` as JSON bytes.

        :raises TypeError: if ``value`` does not encode (see ``exact_dumps``).
        """
        return exact_dumps(value, self._option)

    def serialize_many(self, values: list[Any]) -> list[bytes]:
        """Return :meth:`serialize` of each of ``values``, the same bytes, written in one
        orjson call where that can be done (no ``option``; see ``_json_columns.py``):
        several times faster for many small values.

        :raises TypeError: if a value does not encode.
        """
        if not self._option:
            texts = dumps_each(values)
            if texts is not None:
                return texts  # type: ignore[return-value]
        option = self._option
        return [exact_dumps(value, option) for value in values]

    def deserialize(self, data: bytes | None) -> Any:
        """Return the JSON value in ``data`` (None for no value).

        :raises orjson.JSONDecodeError: (a ValueError) if ``data`` is not JSON.
        """
        return None if data is None else exact_loads(data)


class BytesSerde:
    """Raw bytes, as stored."""

    def __repr__(self) -> str:
        return "bytes"

    def serialize(self, value: object) -> bytes | None:
        """Return ``value`` itself (bytes-like values are copied to bytes).

        :raises TypeError: if ``value`` is not bytes-like.
        """
        if value is None or isinstance(value, bytes):
            return value
        if isinstance(value, bytearray | memoryview):
            return bytes(value)
        raise TypeError(f"BytesSerde serialises bytes, got {type(value).__name__}")

    def deserialize(self, data: bytes | None) -> bytes | None:
        """Return ``data`` itself."""
        return data


class StrSerde:
    """Text, encoded as UTF-8."""

    def __repr__(self) -> str:
        return "str"

    def serialize(self, value: str | None) -> bytes | None:
        """Return ``value`` encoded as UTF-8.

        :raises TypeError: if ``value`` is not a ``str``.
        """
        if value is None:
            return None
        if not isinstance(value, str):
            raise TypeError(f"StrSerde serialises str, got {type(value).__name__}")
        return value.encode()

    def deserialize(self, data: bytes | None) -> str | None:
        """Return ``data`` decoded as UTF-8.

        :raises UnicodeDecodeError: (a ValueError) if ``data`` is not UTF-8.
        """
        return None if data is None else data.decode()


#: The default serde of streams and sinks.
JSON = JsonSerde()


def batch_deserializer(serde: Serde[Any], data: list[bytes | None]) -> Callable[[Any], Any]:
    """Return the function that deserialises each item of ``data`` with ``serde``.

    The runtime's hot path: for a plain :class:`JsonSerde`, no missing or empty values and
    no integer beyond 64 bits (one C call finds them) it is ``orjson.loads`` itself, which
    saves a Python call per record. (``all`` tests each value's length, cheaper than
    comparing each with None.)
    """
    if type(serde) is JsonSerde and not serde._option and all(data) and _read_alike(data):
        return orjson.loads
    return serde.deserialize


def _read_alike(data: list[bytes | None]) -> bool:
    """Return whether ``orjson.loads`` reads each of ``data`` (values, none missing) as
    :meth:`JsonSerde.deserialize` does: no value holds an integer beyond 64 bits."""
    try:
        return not wide_integer_rows(data)  # type: ignore[arg-type]
    except TypeError:  # not a list of bytes: the serde reads each value itself
        return False


def writes_plain_json(serde: Serde[Any]) -> bool:
    """Return whether ``serde`` writes values as ``orjson.dumps`` does (a plain
    :class:`JsonSerde`)."""
    return type(serde) is JsonSerde and not serde._option


def batch_serializer(serde: Serde[Any], values: list[Any]) -> Callable[[Any], bytes | None]:
    """Return the function that serialises each of ``values`` with ``serde``: for a plain
    :class:`JsonSerde`, ``exact_dumps`` itself, or :func:`_dump_windowed` when every
    value is a :class:`Windowed`."""
    if writes_plain_json(serde):
        # The first value rules out most batches without a look at every value's type.
        if values and type(values[0]) is Windowed and set(map(type, values)) == _WINDOWED:
            return _dump_windowed
        return exact_dumps
    return serde.serialize


_WINDOWED = {Windowed}


def serialize_all(serde: Serde[Any], values: list[Any]) -> list[bytes | None] | None:
    """Return each of ``values`` serialised by ``serde``, all in one call, where that
    gives the bytes :func:`batch_serializer`'s function gives value by value (a plain
    :class:`JsonSerde`: see ``_json_columns.py``); else None, and the caller serialises
    value by value (and applies its error policy to each value that fails).
    :class:`Windowed` values are left to :func:`_dump_windowed`, faster than orjson's
    dataclass path."""
    if not values or not writes_plain_json(serde) or type(values[0]) is Windowed:
        return None
    return dumps_each(values)


def _dump_windowed(value: Windowed[Any]) -> bytes:
    """Return ``orjson.dumps(value)`` of a :class:`Windowed`, through a dict of its
    fields: the same bytes (orjson writes a dataclass's fields in order, as a dict's
    keys), in half the time (orjson's dataclass path costs about 800 ns a result here,
    a dict made and dumped 370)."""
    fields = {"key": value.key, "start": value.start, "end": value.end, "value": value.value}
    try:
        return orjson.dumps(fields)
    except TypeError:  # an integer beyond 64 bits (else it raises again)
        return exact_dumps(fields)


def encode_key(key: object) -> bytes | None:
    """Encode a key as ``key_by`` does by default: canonical JSON (sorted object keys, no
    whitespace: :func:`headwater.store.canonical_key`); None means no key.

    :raises SerdeError: for bytes (give ``key_by`` a ``BytesSerde`` to key by bytes as
        they are) or a value JSON cannot encode.
    """
    if isinstance(key, bytes | bytearray | memoryview):
        raise SerdeError(
            f"cannot encode the bytes key {bytes(key)!r} as JSON: key_by(..., serde=BytesSerde())"
            " keys by bytes as they are"
        )
    try:
        return canonical_key(key)  # the store's: `headwater produce --key` writes keys alike
    except TypeError as exc:
        raise SerdeError(f"cannot encode key {key!r}: {exc}") from exc


class JsonKeySerde:
    """The default key serde: :func:`encode_key` one way, JSON back to the object the other."""

    def __repr__(self) -> str:
        return "json-key"

    def serialize(self, value: object) -> bytes | None:
        """Encode ``value`` with :func:`encode_key`."""
        return encode_key(value)

    def deserialize(self, data: bytes | None) -> Any:
        """Return the key object stored as ``data`` (None for no key).

        :raises orjson.JSONDecodeError: (a ValueError) if ``data`` is not JSON.
        """
        return None if data is None else exact_loads(data)


#: The default key serde of ``key_by``.
JSON_KEY = JsonKeySerde()
