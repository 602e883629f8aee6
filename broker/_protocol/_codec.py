"""Compile message declarations into cached decode and encode plans.

Theory of operation
-------------------
``_messages.py`` declares each struct once for all versions. For one (struct, version)
pair this module resolves every field once -- is it present, tagged, nullable, which
primitive reader -- and returns a closure that only walks a list of *steps*. Plans are
cached (``functools.cache``), so the per-message cost is the walk itself, which matters
for Produce and Fetch on the hot path.

Two speed-ups keep the walk short: consecutive fixed-width fields (``int8`` ... ``int64``,
``bool``, ``float64``) become one ``struct.Struct`` call, and arrays of one fixed-width
type unpack in one call.

Decoded structs are plain dicts holding *every* declared field in declaration order:
fields the version does not carry, and tagged fields the sender left out, hold their
defaults, so a handler can read ``body["isolation_level"]`` whatever the version. Encoding
takes the same dicts and fills the default of any missing key; keys for fields the version
does not carry are ignored.

A tagged field is written only when its value differs from its default, in ascending tag
order; unknown tags are skipped when reading. Each tagged value is read from a view that
ends where its size says, and must fill it exactly.
"""

from __future__ import annotations

import functools
import struct
from collections.abc import Callable, Mapping
from typing import Any

from .._errors import EncodeError, MalformedMessageError
from ._schema import Api, Array, Field, Primitive, Struct
from ._types import (
    DecodeError,
    Output,
    Reader,
    Writer,
    array_reader,
    array_writer,
    bytes_reader,
    bytes_writer,
    fixed_array_reader,
    fixed_array_writer,
    read_uuid,
    read_uvarint,
    string_reader,
    string_writer,
    write_uuid,
    write_uvarint,
)

Message = dict[str, Any]
"""A decoded struct: snake_case field name -> value."""

Step = Callable[[memoryview, int, Message], int]
WriteStep = Callable[[Output, Mapping[str, Any]], None]
Kind = Primitive | Struct | Array

# Exceptions a reader raises on bytes that break the layout; the entry points translate them.
_DECODE_FAILURES = (DecodeError, struct.error, IndexError, ValueError)
# Exceptions a writer raises on values the layout cannot carry.
_ENCODE_FAILURES = (ValueError, TypeError, AttributeError, OverflowError, struct.error)


def decode_body(
    api: Api,
    version: int,
    frame: memoryview,
    pos: int,
    *,
    response: bool,
    error: type[MalformedMessageError],
    allow_trailing_bytes: bool = False,
) -> Message:
    """Decode the body of a request or response that starts at ``pos`` and fills ``frame``.

    :param allow_trailing_bytes: ignore bytes left over after the body, as Kafka does.
    :raises MalformedMessageError: as ``error``, if the bytes do not match the layout or
        (unless allowed) bytes are left over after it.
    """
    read = struct_reader(
        api.response if response else api.request, version, api.is_flexible(version)
    )
    try:
        body, end = read(frame, pos)
        if end != len(frame) and not allow_trailing_bytes:
            raise DecodeError(f"{len(frame) - end} bytes left over after the body")
    except _DECODE_FAILURES as exc:
        kind = "response" if response else "request"
        raise error(f"malformed {api.name} {kind} v{version}: {exc}") from exc
    return body  # type: ignore[no-any-return]


def encode_body(
    api: Api, version: int, body: Mapping[str, Any], out: Output, *, response: bool
) -> None:
    """Append the encoding of ``body`` to ``out``.

    :raises EncodeError: if a value does not fit its field in that version.
    """
    write = struct_writer(
        api.response if response else api.request, version, api.is_flexible(version)
    )
    try:
        write(out, body)
    except _ENCODE_FAILURES as exc:
        kind = "response" if response else "request"
        raise EncodeError(f"cannot encode {api.name} {kind} v{version}: {exc}") from exc


# --- decoding ------------------------------------------------------------------------------


def _is_tagged(f: Field, flexible: bool) -> bool:
    return f.tag is not None and flexible


def _fixed_reader(fmt: str) -> Reader:
    codec = struct.Struct(">" + fmt)
    unpack_from, size = codec.unpack_from, codec.size

    def read(buf: memoryview, pos: int) -> tuple[Any, int]:
        return unpack_from(buf, pos)[0], pos + size

    return read


def _reader(kind: Kind, version: int, flexible: bool, nullable: bool) -> Reader:
    if isinstance(kind, Struct):
        assert not nullable, "nullable structs are not supported"
        return struct_reader(kind, version, flexible)
    if isinstance(kind, Array):
        item = kind.item
        if isinstance(item, Primitive) and item.fixed_format is not None:
            return fixed_array_reader(item.fixed_format, flexible, nullable)
        item_reader = _reader(item, version, flexible, nullable=False)
        return array_reader(item_reader, min_size(item, version, flexible), flexible, nullable)
    if kind.fixed_format is not None:
        return _fixed_reader(kind.fixed_format)
    if kind.name == "string":
        return string_reader(flexible, nullable)
    if kind.name in ("bytes", "records"):
        return bytes_reader(flexible, nullable, zero_copy=kind.name == "records")
    assert kind.name == "uuid", kind
    return read_uuid


def min_size(kind: Kind, version: int, flexible: bool) -> int:
    """Return the fewest bytes a value of ``kind`` takes on the wire in ``version``."""
    if isinstance(kind, Struct):
        fields = [f for f in kind.fields if f.exists(version) and not _is_tagged(f, flexible)]
        return sum(min_size(f.type, version, flexible) for f in fields) + int(flexible)
    if isinstance(kind, Array):
        return 1 if flexible else 4
    if kind.fixed_format is not None:
        return struct.calcsize(">" + kind.fixed_format)
    if kind.name == "uuid":
        return 16
    if flexible:
        return 1
    return 2 if kind.name == "string" else 4


def _field_step(name: str, read: Reader) -> Step:
    def step(buf: memoryview, pos: int, d: Message) -> int:
        d[name], pos = read(buf, pos)
        return pos

    return step


def _fixed_step(names: tuple[str, ...], formats: str) -> Step:
    codec = struct.Struct(">" + formats)
    unpack_from, size = codec.unpack_from, codec.size

    def step(buf: memoryview, pos: int, d: Message) -> int:
        d.update(zip(names, unpack_from(buf, pos), strict=True))
        return pos + size

    return step


def _read_tagged(
    buf: memoryview, pos: int, d: Message, known: dict[int, tuple[str, Reader]]
) -> int:
    if buf[pos] == 0:  # the usual case: no tagged fields
        return pos + 1
    count, pos = read_uvarint(buf, pos)
    for _ in range(count):
        tag, pos = read_uvarint(buf, pos)
        size, pos = read_uvarint(buf, pos)
        end = pos + size
        if end > len(buf):
            raise DecodeError(f"tagged field {tag} runs past the end of the frame")
        entry = known.get(tag)
        if entry is not None:
            name, read = entry
            d[name], used = read(buf[:end], pos)
            if used != end:
                raise DecodeError(f"tagged field {tag} does not fill its {size} bytes")
        pos = end
    return pos


def _factory(default: list[Any] | dict[str, Any]) -> Callable[[], Any]:
    """Return a fast maker of fresh copies of a mutable default."""
    if isinstance(default, list):
        assert not default, "non-empty list defaults are not supported"
        return list
    assert not any(isinstance(v, list | dict) for v in default.values()), "nested default"
    return default.copy


@functools.cache
def struct_reader(struct_: Struct, version: int, flexible: bool) -> Reader:
    """Return the cached reader of ``struct_`` in ``version``; it yields a :data:`Message`."""
    steps: list[Step] = []
    names: list[str] = []
    formats = ""
    known: dict[int, tuple[str, Reader]] = {}
    template: Message = {}
    fresh: list[tuple[str, Callable[[], Any]]] = []

    def flush() -> None:
        nonlocal formats
        if names:
            steps.append(_fixed_step(tuple(names), formats))
            names.clear()
            formats = ""

    for f in struct_.fields:
        default = f.default_value()
        template[f.name] = default  # keeps the declaration order of the keys
        always_read = f.exists(version) and f.tag is None
        if isinstance(default, list | dict) and not always_read:
            fresh.append((f.name, _factory(default)))
        if not f.exists(version) or (f.tag is not None and not flexible):
            continue
        nullable = f.nullable(version)
        if _is_tagged(f, flexible):
            assert f.tag is not None
            known[f.tag] = (f.name, _reader(f.type, version, flexible, nullable))
        elif isinstance(f.type, Primitive) and f.type.fixed_format is not None:
            names.append(f.name)
            formats += f.type.fixed_format
        else:
            flush()
            steps.append(_field_step(f.name, _reader(f.type, version, flexible, nullable)))
    flush()

    def read(buf: memoryview, pos: int) -> tuple[Message, int]:
        d = template.copy()
        for name, make in fresh:
            d[name] = make()
        for step in steps:
            pos = step(buf, pos, d)
        if flexible:
            pos = _read_tagged(buf, pos, d, known)
        return d, pos

    return read


# --- encoding ------------------------------------------------------------------------------


def _fixed_writer(fmt: str) -> Writer:
    pack = struct.Struct(">" + fmt).pack

    def write(out: Output, value: Any) -> None:
        out += pack(value)

    return write


def _writer(kind: Kind, version: int, flexible: bool, nullable: bool) -> Writer:
    if isinstance(kind, Struct):
        assert not nullable, "nullable structs are not supported"
        return struct_writer(kind, version, flexible)
    if isinstance(kind, Array):
        item = kind.item
        if isinstance(item, Primitive) and item.fixed_format is not None:
            return fixed_array_writer(item.fixed_format, flexible, nullable)
        item_writer = _writer(item, version, flexible, nullable=False)
        return array_writer(item_writer, flexible, nullable)
    if kind.fixed_format is not None:
        return _fixed_writer(kind.fixed_format)
    if kind.name == "string":
        return string_writer(flexible, nullable)
    if kind.name in ("bytes", "records"):
        return bytes_writer(flexible, nullable, zero_copy=kind.name == "records")
    assert kind.name == "uuid", kind
    return write_uuid


class _FieldValueError(ValueError):
    """A value that does not fit, with the path of the field that holds it."""

    path: str
    reason: str

    def __init__(self, name: str, exc: Exception) -> None:
        if isinstance(exc, _FieldValueError):
            self.path, self.reason = f"{name}.{exc.path}", exc.reason
        else:
            self.path, self.reason = name, str(exc)
        super().__init__(f"{self.path}: {self.reason}")


def _field_write_step(name: str, default: Any, write: Writer) -> WriteStep:
    def step(out: Output, d: Mapping[str, Any]) -> None:
        try:
            write(out, d.get(name, default))
        except _ENCODE_FAILURES as exc:
            raise _FieldValueError(name, exc) from exc

    return step


def _fixed_write_step(names: tuple[str, ...], defaults: tuple[Any, ...], formats: str) -> WriteStep:
    pack = struct.Struct(">" + formats).pack

    def step(out: Output, d: Mapping[str, Any]) -> None:
        try:
            out += pack(*map(d.get, names, defaults))
        except struct.error:
            # Find the field at fault; only on this error path.
            for name, default, fmt in zip(names, defaults, formats, strict=True):
                try:
                    struct.pack(">" + fmt, d.get(name, default))
                except struct.error as exc:
                    raise _FieldValueError(name, exc) from exc
            raise

    return step


def _write_tagged(
    out: Output, d: Mapping[str, Any], tagged: list[tuple[int, str, Any, Writer]]
) -> None:
    present: list[tuple[int, Output]] = []
    for tag, name, default, write in tagged:
        value = d.get(name, default)
        if value != default:
            data = Output()
            try:
                write(data, value)
            except _ENCODE_FAILURES as exc:
                raise _FieldValueError(name, exc) from exc
            present.append((tag, data))
    write_uvarint(out, len(present))
    for tag, data in present:
        write_uvarint(out, tag)
        write_uvarint(out, len(data))
        out += data


@functools.cache
def struct_writer(struct_: Struct, version: int, flexible: bool) -> Writer:
    """Return the cached writer of ``struct_`` in ``version``; it takes a mapping."""
    steps: list[WriteStep] = []
    names: list[str] = []
    defaults: list[Any] = []
    formats = ""
    tagged: list[tuple[int, str, Any, Writer]] = []

    def flush() -> None:
        nonlocal formats
        if names:
            steps.append(_fixed_write_step(tuple(names), tuple(defaults), formats))
            names.clear()
            defaults.clear()
            formats = ""

    for f in struct_.fields:
        if not f.exists(version) or (f.tag is not None and not flexible):
            continue
        nullable = f.nullable(version)
        if _is_tagged(f, flexible):
            assert f.tag is not None
            assert not isinstance(f.type, Primitive) or f.type.name != "records", f.name
            write = _writer(f.type, version, flexible, nullable)
            tagged.append((f.tag, f.name, f.default_value(), write))
        elif isinstance(f.type, Primitive) and f.type.fixed_format is not None:
            names.append(f.name)
            defaults.append(f.default_value())
            formats += f.type.fixed_format
        else:
            flush()
            write = _writer(f.type, version, flexible, nullable)
            steps.append(_field_write_step(f.name, f.default_value(), write))
    flush()
    tagged.sort(key=lambda entry: entry[0])

    def write_struct(out: Output, d: Mapping[str, Any]) -> None:
        for step in steps:
            step(out, d)
        if flexible:
            if tagged:
                _write_tagged(out, d, tagged)
            else:
                out.append(0)

    return write_struct
