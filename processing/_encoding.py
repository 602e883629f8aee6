"""Encoding derived records as one Kafka v2 record batch, column by column.

The store's :func:`~headwater.store.encode_batch` takes a fast layout only for records
without headers; every record the runtime writes carries a lineage header, so this module
lays out such batches itself, the same way: each field of all records is computed at once
by a C-level ``map`` over a table of varints, and the columns are interleaved by slice
assignment. Lengths beyond the tables fall back to encoding varints one at a time. The
batch is uncompressed; the in-process backend hands it to ``Partition.append_batch``,
which checks its CRC and framing before storing it as is.

Record layout (Kafka's): ``length | attributes (0) | timestamp delta | offset delta | key
| value | header count | headers``, every integer a zigzag varint; null key or value is
length -1. Pure functions, safe from any thread.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from itertools import repeat
from operator import add, sub
from typing import NamedTuple

from crc32c import crc32c

from ._lineage import SOURCE_HEADER, Headers

_PREFIX = struct.Struct(">qiibI")  # base offset, batch length, leader epoch, magic, crc
_TAIL = struct.Struct(">hiqqqhii")  # attributes .. records count (what the CRC covers)
_MAGIC = 2
_LENGTH_AFTER_PREFIX = 4 + 1 + 4 + _TAIL.size  # leader epoch, magic, crc, tail
_TABLE = 8192  # signed varints 0 .. 8191 come from the table (one or two bytes)
#: The most records a batch may hold for the fastest layout (offset deltas from the table).
FAST_BATCH_RECORDS = _TABLE


def _zigzag_varint(value: int) -> bytes:
    zigzag = (value << 1) ^ (value >> 63)
    out = bytearray()
    while zigzag > 0x7F:
        out.append(zigzag & 0x7F | 0x80)
        zigzag >>= 7
    out.append(zigzag)
    return bytes(out)


_SVARINT = tuple(_zigzag_varint(v) for v in range(_TABLE))
_NULL = _zigzag_varint(-1)
_ATTR_AND = tuple(b"\x00" + v for v in _SVARINT)  # attributes byte, then a timestamp delta
_LINEAGE_START = b"\x02" + _zigzag_varint(len(SOURCE_HEADER)) + SOURCE_HEADER.encode()
_LINEAGE_STARTS = tuple(_LINEAGE_START + v for v in _SVARINT[:300])  # topic + 2 numbers
_OFFSET_AND_NULL = [v + _NULL for v in _SVARINT]  # an offset delta, then a null key
_OFFSET_AND_NULL_SIZE = list(map(len, _OFFSET_AND_NULL))


class OutRecords(NamedTuple):
    """Records to write, as columns of equal length, all derived from one source partition.

    ``source`` is that partition as a ``headwater.source`` prefix (``b"clicks/0/"``, see
    :func:`~headwater.processing._lineage.source_prefix`) and ``source_offsets`` the
    offset each record came from: together they make the lineage header. ``headers``
    holds each record's other headers (None: none has any).
    """

    values: list[bytes | None]
    keys: list[bytes | None]
    timestamps: list[int]
    source: bytes
    source_offsets: list[int]
    headers: list[Headers] | None = None

    def count(self) -> int:  # type: ignore[override]
        """Return how many records there are."""
        return len(self.values)

    def slice(self, start: int, stop: int) -> OutRecords:
        """Return records ``start`` to ``stop`` (exclusive)."""
        return OutRecords(
            self.values[start:stop],
            self.keys[start:stop],
            self.timestamps[start:stop],
            self.source,
            self.source_offsets[start:stop],
            None if self.headers is None else self.headers[start:stop],
        )

    def size_estimate(self) -> int:
        """Return an upper bound of the encoded size of the records section."""
        total = (40 + len(self.source)) * len(self.values)
        for field in (self.values, self.keys):
            if field.count(None):
                total += sum(len(x) for x in field if x is not None)
            else:
                total += sum(map(len, field))  # type: ignore[arg-type]
        for headers in self.headers or ():
            for name, value in headers:
                total += len(name) + (0 if value is None else len(value)) + 10
        return total

    def lineage(self) -> list[bytes]:
        """Return each record's ``headwater.source`` header value."""
        return list(map(self.source.__add__, map(b"%d".__mod__, self.source_offsets)))

    def all_headers(self) -> list[Headers]:
        """Return each record's headers, the lineage header first (for other backends)."""
        extra = self.headers if self.headers is not None else repeat(())
        return [
            ((SOURCE_HEADER, source), *rest)
            for source, rest in zip(self.lineage(), extra, strict=False)
        ]


def _signed(values: Sequence[int]) -> list[bytes]:
    """Return the zigzag varints of ``values``, from the table when they all fit."""
    if values and min(values) >= 0 and max(values) < _TABLE:
        return list(map(_SVARINT.__getitem__, values))
    return [_zigzag_varint(v) for v in values]


def _zigzag_len(data: bytes) -> bytes:
    size = len(data)
    return _SVARINT[size] if size < _TABLE else _zigzag_varint(size)


def _field_columns(data: list[bytes | None]) -> tuple[list[list[bytes] | bytes], list[int] | int]:
    """Return the pieces of a nullable field (length varint, bytes) and their total sizes."""
    nulls = data.count(None)
    if nulls == len(data):
        return [_NULL], 1
    if nulls:
        pieces = [_NULL if d is None else _zigzag_len(d) + d for d in data]
        return [pieces], list(map(len, pieces))
    present: list[bytes] = data  # type: ignore[assignment]
    lengths = list(map(len, present))
    prefixes = _signed(lengths)
    return [prefixes, present], list(map(add, map(len, prefixes), lengths))


def _encode_headers(headers: Sequence[tuple[str, bytes | None]]) -> bytes:
    parts = [_zigzag_varint(len(headers))]
    for name, value in headers:
        raw = name.encode()
        parts.append(_zigzag_len(raw))
        parts.append(raw)
        parts.append(_NULL if value is None else _zigzag_len(value) + value)
    return b"".join(parts)


def _header_columns(records: OutRecords) -> tuple[list[list[bytes] | bytes], list[int] | int]:
    """Return the pieces of each record's header count and headers, and their sizes."""
    if records.headers is not None:
        sections = [_encode_headers(h) for h in records.all_headers()]
        return [sections], list(map(len, sections))
    offsets = records.source_offsets
    low, high = min(offsets), max(offsets)
    if len(str(low)) == len(str(high)):  # one length for every lineage value: one prefix
        start = _lineage_start(len(records.source) + len(str(low))) + records.source
        sections = list(map(start.__add__, map(b"%d".__mod__, offsets)))
        return [sections], len(sections[0])
    lineage = records.lineage()
    sections = list(map(add, map(_LINEAGE_STARTS.__getitem__, map(len, lineage)), lineage))
    return [sections], list(map(len, sections))


def _lineage_start(value_length: int) -> bytes:
    """Return a header section up to a lineage value of ``value_length`` bytes."""
    return _LINEAGE_START + _zigzag_varint(value_length)


def encode_out_records(records: OutRecords, *, base_offset: int = 0) -> bytes:
    """Encode ``records`` (at least one) as one uncompressed v2 batch, CRC included.

    Timestamps are create times; offset deltas run from 0.

    :raises ValueError: if there are no records.
    """
    values, keys, timestamps = records.values, records.keys, records.timestamps
    count = len(values)
    if not count:
        raise ValueError("a record batch holds at least one record")
    base_timestamp = timestamps[0]
    deltas = list(map(sub, timestamps, repeat(base_timestamp)))
    if min(deltas) >= 0 and max(deltas) < _TABLE:
        stamps = list(map(_ATTR_AND.__getitem__, deltas))
    else:
        stamps = [b"\x00" + _zigzag_varint(d) for d in deltas]
    columns: list[list[bytes] | bytes] = [stamps]
    sizes: list[list[int] | int] = [list(map(len, stamps))]
    if count <= _TABLE and keys.count(None) == count:  # the offset delta, then a null key
        columns.append(_OFFSET_AND_NULL[:count])
        sizes.append(_OFFSET_AND_NULL_SIZE[:count])
        fields = [_field_columns(values), _header_columns(records)]
    else:
        offsets = _signed(range(count))
        columns.append(offsets)
        sizes.append(list(map(len, offsets)))
        fields = [_field_columns(keys), _field_columns(values), _header_columns(records)]
    for pieces, size in fields:
        columns.extend(pieces)
        sizes.append(size)
    total: list[int] | None = None
    fixed = 0
    for size in sizes:
        if isinstance(size, int):
            fixed += size
        else:
            total = size if total is None else list(map(add, total, size))
    assert total is not None
    if fixed:
        total = list(map(add, total, repeat(fixed)))
    columns.insert(0, _signed(total))
    stride = len(columns)
    parts: list[bytes] = [b""] * (stride * count)
    for i, column in enumerate(columns):
        parts[i::stride] = repeat(column, count) if isinstance(column, bytes) else column
    payload = b"".join(parts)
    tail = _TAIL.pack(0, count - 1, base_timestamp, max(timestamps), -1, -1, -1, count)
    crc = crc32c(payload, crc32c(tail))
    prefix = _PREFIX.pack(base_offset, _LENGTH_AFTER_PREFIX + len(payload), -1, _MAGIC, crc)
    return b"".join((prefix, tail, payload))
