"""Primitive readers and writers of the Kafka wire protocol.

Theory of operation
-------------------
A *reader* is ``read(buf, pos) -> (value, new_pos)`` over a :class:`memoryview` of one whole
frame; a *writer* is ``write(out, value) -> None`` appending to an :class:`Output`. The
schema compiler (``_codec.py``) picks one reader and one writer per field and version, so
these functions never branch on the version themselves.

Encodings (all big-endian):

* fixed-width integers, ``float64`` and ``bool`` go through :mod:`struct`; runs of
  consecutive fixed-width fields are merged by the compiler into one ``Struct`` call;
* classic strings: int16 length (-1 = null); classic bytes and records: int32 length
  (-1 = null); classic arrays: int32 count (-1 = null);
* compact (flexible-version) strings, bytes, records and arrays: unsigned varint of
  length + 1 (0 = null);
* ``uuid``: 16 raw bytes, decoded to :class:`uuid.UUID`;
* unsigned varints (at most 5 bytes, 32 bits) frame compact lengths and tagged fields;
  zigzag varints/varlongs are the record format's and are provided for it.

Safety: a reader trusts nothing. Lengths are checked against ``len(buf)`` before slicing,
and a negative length other than null raises :class:`DecodeError`. Reading past the end of
``buf`` raises ``IndexError`` or ``struct.error``; the codec's entry points translate all of
these into :class:`~headwater.broker.MalformedRequestError` (or ``...ResponseError``).

Zero copy: ``records`` fields decode to a :class:`memoryview` slice of the frame, and an
:class:`Output` records large buffers as *spills* (position, buffer) instead of copying
them, so an encoded Fetch response can be sent as header parts plus the stored batch bytes.
"""

from __future__ import annotations

import struct
import uuid
from collections.abc import Callable, Sequence
from typing import Any

Buffer = bytes | bytearray | memoryview
"""A C-contiguous byte buffer."""

Reader = Callable[[memoryview, int], tuple[Any, int]]
Writer = Callable[["Output", Any], None]

# A records buffer at least this long is not copied into the output but sent as its own
# part: copying a few hundred bytes is cheaper than one more iovec entry.
SPILL_THRESHOLD = 1024

ZERO_UUID = uuid.UUID(int=0)

_INT16 = struct.Struct(">h")
_INT32 = struct.Struct(">i")


class DecodeError(Exception):
    """Internal: bytes that break the layout. The codec's entry points translate it."""


class Output(bytearray):
    """An encode buffer that can keep large buffers out of line (zero copy).

    ``spills`` lists ``(position, buffer)``: ``buffer`` belongs at ``position`` of the
    encoded stream, before the bytes written to ``self`` after that point.
    """

    __slots__ = ("spills",)

    def __init__(self) -> None:
        super().__init__()
        self.spills: list[tuple[int, Buffer]] = []

    def spill(self, data: Buffer) -> None:
        """Place ``data`` at the current position without copying it."""
        self.spills.append((len(self), data))

    def encoded_size(self) -> int:
        """Return the length of the encoded stream, spilled buffers included."""
        return len(self) + sum(len(data) for _, data in self.spills)

    def parts(self) -> list[Buffer]:
        """Return the encoded stream as a list of buffers, in order, without copying."""
        if not self.spills:
            return [self]
        view = memoryview(self)
        parts: list[Buffer] = []
        start = 0
        for position, data in self.spills:
            if position > start:
                parts.append(view[start:position])
            parts.append(data)
            start = position
        if start < len(self):
            parts.append(view[start:])
        return parts


# --- fixed-width types -------------------------------------------------------------------

FIXED_FORMATS = {
    "int8": "b",
    "int16": "h",
    "uint16": "H",
    "int32": "i",
    "uint32": "I",
    "int64": "q",
    "float64": "d",
    "bool": "?",
}
"""Struct format characters of the fixed-width primitive types."""


# --- varints -----------------------------------------------------------------------------


def read_uvarint(buf: memoryview, pos: int) -> tuple[int, int]:
    """Read an unsigned varint of at most 5 bytes (32 bits)."""
    byte = buf[pos]
    if byte < 0x80:
        return byte, pos + 1
    value = byte & 0x7F
    shift = 7
    while True:
        pos += 1
        byte = buf[pos]
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            if value > 0xFFFFFFFF:
                raise DecodeError("unsigned varint exceeds 32 bits")
            return value, pos + 1
        shift += 7
        if shift > 28:
            raise DecodeError("unsigned varint longer than 5 bytes")


def write_uvarint(out: bytearray, value: int) -> None:
    """Append ``value`` (0 <= value < 2**32) as an unsigned varint."""
    if not 0 <= value <= 0xFFFFFFFF:
        raise ValueError(f"unsigned varint out of range: {value}")
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)


def _read_zigzag(buf: memoryview, pos: int, max_bytes: int) -> tuple[int, int]:
    value = 0
    shift = 0
    for _ in range(max_bytes):
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return (value >> 1) ^ -(value & 1), pos
        shift += 7
    raise DecodeError(f"varint longer than {max_bytes} bytes")


def read_varint(buf: memoryview, pos: int) -> tuple[int, int]:
    """Read a zigzag-encoded signed varint (int32, at most 5 bytes)."""
    return _read_zigzag(buf, pos, 5)


def read_varlong(buf: memoryview, pos: int) -> tuple[int, int]:
    """Read a zigzag-encoded signed varlong (int64, at most 10 bytes)."""
    return _read_zigzag(buf, pos, 10)


def write_varint(out: bytearray, value: int) -> None:
    """Append ``value`` (an int32) zigzag-encoded."""
    if not -(2**31) <= value < 2**31:
        raise ValueError(f"varint out of range: {value}")
    write_uvarint(out, ((value << 1) ^ (value >> 31)) & 0xFFFFFFFF)


def write_varlong(out: bytearray, value: int) -> None:
    """Append ``value`` (an int64) zigzag-encoded."""
    if not -(2**63) <= value < 2**63:
        raise ValueError(f"varlong out of range: {value}")
    zigzag = ((value << 1) ^ (value >> 63)) & 0xFFFFFFFFFFFFFFFF
    while zigzag >= 0x80:
        out.append((zigzag & 0x7F) | 0x80)
        zigzag >>= 7
    out.append(zigzag)


# --- lengths -------------------------------------------------------------------------------


def length_reader(kind: str, compact: bool) -> Reader:
    """Return a reader of a length or count prefix; -1 means null.

    ``kind`` is ``"string"`` (int16), or ``"bytes"``/``"array"`` (int32); compact versions
    use an unsigned varint of length + 1 for all of them.
    """
    if compact:

        def read_compact(buf: memoryview, pos: int) -> tuple[int, int]:
            byte = buf[pos]
            if byte < 0x80:  # lengths under 127: one byte, no loop
                return byte - 1, pos + 1
            value, pos = read_uvarint(buf, pos)
            return value - 1, pos

        return read_compact
    unpack_from = (_INT16 if kind == "string" else _INT32).unpack_from
    size = 2 if kind == "string" else 4

    def read_classic(buf: memoryview, pos: int) -> tuple[int, int]:
        return unpack_from(buf, pos)[0], pos + size

    return read_classic


def length_writer(kind: str, compact: bool) -> Callable[[bytearray, int], None]:
    """Return a writer of a length or count prefix (-1 for null); see :func:`length_reader`."""
    if compact:

        def write_compact(out: bytearray, length: int) -> None:
            write_uvarint(out, length + 1)

        return write_compact
    pack = (_INT16 if kind == "string" else _INT32).pack

    def write_classic(out: bytearray, length: int) -> None:
        out += pack(length)

    return write_classic


# --- strings, bytes, records, uuid ---------------------------------------------------------


def _checked_length(
    length: int, nullable: bool, buf: memoryview, pos: int, item_size: int = 1
) -> int:
    """Return ``length``, or -1 for null; raise if it is invalid or runs past ``buf``."""
    if length < 0:
        if length == -1 and nullable:
            return -1
        raise DecodeError(f"invalid length {length} at position {pos}")
    if pos + length * item_size > len(buf):
        raise DecodeError(f"length {length} at position {pos} runs past the end of the frame")
    return length


def string_reader(compact: bool, nullable: bool) -> Reader:
    """Return a reader of a (nullable) UTF-8 string."""
    read_length = length_reader("string", compact)

    def read(buf: memoryview, pos: int) -> tuple[str | None, int]:
        length, pos = read_length(buf, pos)
        if _checked_length(length, nullable, buf, pos) < 0:
            return None, pos
        end = pos + length
        return str(buf[pos:end], "utf-8"), end

    return read


def string_writer(compact: bool, nullable: bool) -> Writer:
    """Return a writer of a (nullable) UTF-8 string."""
    write_length = length_writer("string", compact)

    def write(out: Output, value: str | None) -> None:
        if value is None:
            if not nullable:
                raise ValueError("null in a field that is not nullable")
            write_length(out, -1)
            return
        if not isinstance(value, str):
            raise TypeError(f"expected a str, not {type(value).__name__}")
        data = value.encode()
        if not compact and len(data) > 0x7FFF:
            raise ValueError("string longer than 32767 bytes")
        write_length(out, len(data))
        out += data

    return write


def bytes_reader(compact: bool, nullable: bool, *, zero_copy: bool) -> Reader:
    """Return a reader of (nullable) bytes: a copy, or with ``zero_copy`` a memoryview slice."""
    read_length = length_reader("bytes", compact)

    def read(buf: memoryview, pos: int) -> tuple[Buffer | None, int]:
        length, pos = read_length(buf, pos)
        if _checked_length(length, nullable, buf, pos) < 0:
            return None, pos
        end = pos + length
        return (buf[pos:end] if zero_copy else buf[pos:end].tobytes()), end

    return read


def bytes_writer(compact: bool, nullable: bool, *, zero_copy: bool) -> Writer:
    """Return a writer of (nullable) bytes.

    With ``zero_copy`` (records fields) the value may also be a sequence of buffers that are
    sent one after the other, and buffers of :data:`SPILL_THRESHOLD` bytes or more are
    spilled rather than copied.
    """
    write_length = length_writer("bytes", compact)

    def write(out: Output, value: Buffer | None) -> None:
        if value is None:
            if not nullable:
                raise ValueError("null in a field that is not nullable")
            write_length(out, -1)
            return
        write_length(out, len(value))
        out += value

    def write_zero_copy(out: Output, value: Buffer | Sequence[Buffer] | None) -> None:
        if value is None:
            write(out, value)
            return
        chunks = (value,) if isinstance(value, bytes | bytearray | memoryview) else value
        write_length(out, sum(len(chunk) for chunk in chunks))
        for chunk in chunks:
            if len(chunk) >= SPILL_THRESHOLD:
                out.spill(chunk)
            else:
                out += chunk

    return write_zero_copy if zero_copy else write


def read_uuid(buf: memoryview, pos: int) -> tuple[uuid.UUID, int]:
    """Read 16 bytes as a :class:`uuid.UUID`."""
    end = pos + 16
    if end > len(buf):
        raise DecodeError(f"uuid at position {pos} runs past the end of the frame")
    return uuid.UUID(bytes=buf[pos:end].tobytes()), end


def write_uuid(out: Output, value: uuid.UUID) -> None:
    """Append a :class:`uuid.UUID` as 16 bytes."""
    out += value.bytes


def fixed_array_reader(fmt: str, compact: bool, nullable: bool) -> Reader:
    """Return a reader of an array of one fixed-width type, unpacked in one call."""
    read_count = length_reader("array", compact)
    item_size = struct.calcsize(">" + fmt)

    def read(buf: memoryview, pos: int) -> tuple[list[Any] | None, int]:
        count, pos = read_count(buf, pos)
        if _checked_length(count, nullable, buf, pos, item_size) < 0:
            return None, pos
        return list(struct.unpack_from(f">{count}{fmt}", buf, pos)), pos + count * item_size

    return read


def fixed_array_writer(fmt: str, compact: bool, nullable: bool) -> Writer:
    """Return a writer of an array of one fixed-width type, packed in one call."""
    write_count = length_writer("array", compact)

    def write(out: Output, value: Sequence[Any] | None) -> None:
        if value is None:
            if not nullable:
                raise ValueError("null in a field that is not nullable")
            write_count(out, -1)
            return
        write_count(out, len(value))
        out += struct.pack(f">{len(value)}{fmt}", *value)

    return write


def array_reader(item: Reader, min_item_size: int, compact: bool, nullable: bool) -> Reader:
    """Return a reader of an array whose items each take at least ``min_item_size`` bytes.

    The count is checked against the bytes left before any item is read, so a forged count
    cannot make the decoder loop or allocate beyond the size of the frame.
    """
    assert min_item_size >= 1, "an array item must take at least one byte"
    read_count = length_reader("array", compact)

    def read(buf: memoryview, pos: int) -> tuple[list[Any] | None, int]:
        count, pos = read_count(buf, pos)
        if _checked_length(count, nullable, buf, pos, min_item_size) < 0:
            return None, pos
        items: list[Any] = []
        append = items.append
        for _ in range(count):
            value, pos = item(buf, pos)
            append(value)
        return items, pos

    return read


def array_writer(item: Writer, compact: bool, nullable: bool) -> Writer:
    """Return a writer of an array of items written by ``item``."""
    write_count = length_writer("array", compact)

    def write(out: Output, value: Sequence[Any] | None) -> None:
        if value is None:
            if not nullable:
                raise ValueError("null in a field that is not nullable")
            write_count(out, -1)
            return
        write_count(out, len(value))
        for element in value:
            item(out, element)

    return write
