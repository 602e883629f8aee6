"""Kafka record batch v2 records: encode and decode a batch's records. Pure, no I/O.

Theory of operation
-------------------
A batch is a 61-byte header (``_batch.py``) followed by the records section. A record is
``length varint | attributes int8 | timestamp_delta varlong | offset_delta varint | key |
value | header_count varint | headers``, where key, value and a header's value are a varint
length and that many bytes (-1: null) and a header's key is a varint length and UTF-8.
Every record integer is a zigzag varint (protobuf's encoding of signed values).

Invariants:

- Under log-append time every record's timestamp is the batch's ``max_timestamp`` (the
  broker's clock), as Kafka's readers do; the stored deltas are ignored.
- Decoding trusts no length or count: a varint may not run past its bound, every record must
  end exactly where its length says, the section must end after exactly ``records_count``
  records, and a compressed section is bounded before it is produced. Anything else is a
  :class:`CorruptRecordError` saying what was wrong and where: the absolute position of the
  record, or for a compressed batch the batch's position and the byte within its records.
- ``base_timestamp`` is the first record's timestamp (as Kafka's producers write it), so
  deltas may be negative; record attributes are written as 0 and ignored when read.

Encoding and decoding are the store's hot path. Where the package was built with a C
compiler, ``_speedups.c`` runs the decoder's loop and :func:`encode_columns`; the
Python code here is then the reference they are tested against and the one that words
every error. It trades some elegance for speed too: the encoder builds a common batch
(no headers, short keys and values) column by column with ``map`` over precomputed varint
tables and joins the pieces once; the decoder inlines one- and two-byte varints and calls
a helper only for longer ones or for headers.

Everything here is a pure function of its arguments: safe to call from any thread.
"""

from __future__ import annotations

import struct
import time
from bisect import bisect_left
from collections.abc import Callable, Iterable, Sequence
from itertools import repeat
from operator import add
from typing import Any, NamedTuple, cast

from crc32c import crc32c

from ._batch import (
    BATCH_HEADER_SIZE,
    BATCH_OVERHEAD,
    CODEC_MASK,
    LOG_APPEND_TIME_BIT,
    MAGIC,
    MIN_BATCH_LENGTH,
    PREFIX,
    TAIL,
    TRANSACTIONAL_BIT,
    BatchHeader,
    Buffer,
    TimestampType,
    parse_batch_header,
    set_base_offset,
    stamp_log_append_time,
    verify_batch,
)
from ._compression import Compression, compress, decompress
from ._errors import CorruptRecordError

# The C builds of the hot loops (store/_speedups.c), when a compiler was there to build them.
_compiled_decode_section: Callable[..., list[Record] | None] | None
_compiled_decode_columns: Callable[..., bool | None] | None
_compiled_encode_section: Callable[..., bytes | None] | None
try:
    from ._speedups import decode_columns as _compiled_decode_columns
    from ._speedups import decode_section as _compiled_decode_section
    from ._speedups import encode_section as _compiled_encode_section
except ImportError:  # pragma: no cover - installed without a C compiler
    _compiled_decode_section = _compiled_decode_columns = _compiled_encode_section = None

__all__ = (
    "BATCH_HEADER_SIZE",
    "BATCH_OVERHEAD",
    "BatchHeader",
    "Compression",
    "DecimalColumn",
    "NewRecord",
    "Record",
    "RecordColumns",
    "TimestampType",
    "decode_columns",
    "decode_records",
    "encode_batch",
    "encode_columns",
    "parse_batch_header",
    "set_base_offset",
    "stamp_log_append_time",
    "verify_batch",
)


class NewRecord(NamedTuple):
    """A record as a producer supplies it to :func:`encode_batch`."""

    value: bytes | None
    key: bytes | None = None
    timestamp: int | None = None  # epoch ms; None: encode_batch's now_ms
    headers: Sequence[tuple[str, bytes | None]] = ()


class DecimalColumn(NamedTuple):
    """A header column for :func:`encode_columns` whose value for record ``i`` is ``prefix``
    followed by the decimal digits of ``base + numbers[i]`` (``b"clicks/0/" + b"42"``):
    positions or counters, written without building a bytes object (or, with ``base``,
    an int) per record."""

    prefix: bytes
    numbers: Sequence[int]
    base: int = 0

    def expand(self) -> list[bytes]:
        """Return the column's values as bytes."""
        # One format per column, applied in C: one bytes object per record, not three.
        fill = (self.prefix.replace(b"%", b"%%") + b"%d").__mod__
        numbers = self.numbers if not self.base else map(self.base.__add__, self.numbers)
        return list(map(fill, numbers))


class Record(NamedTuple):
    """A record as :func:`decode_records` returns it: absolute offset and timestamp."""

    offset: int
    timestamp: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes | None], ...]


class RecordColumns:
    """Records as columns of equal length, in offset order: what
    :meth:`~headwater.store.Partition.read_columns` returns.

    For a reader that works on whole columns (a stream processor), decoding into columns
    saves a tuple and an offset object per record: ``offsets`` is a ``range`` when the
    offsets are consecutive, as they are unless compaction removed records. Indexing
    gives a :class:`Record`, built on demand.
    """

    __slots__ = ("headers", "keys", "offsets", "timestamps", "values")

    def __init__(
        self,
        offsets: Sequence[int],
        timestamps: list[int],
        keys: list[bytes | None],
        values: list[bytes | None],
        headers: list[tuple[tuple[str, bytes | None], ...]],
    ) -> None:
        self.offsets = offsets
        self.timestamps = timestamps
        self.keys = keys
        self.values = values
        self.headers = headers

    @classmethod
    def of(cls, records: Sequence[Record]) -> RecordColumns:
        """Return ``records`` as columns."""
        if not records:
            return cls(range(0), [], [], [], [])
        offsets, timestamps, keys, values, headers = map(list, zip(*records, strict=True))
        return cls(_compact(offsets), timestamps, keys, values, headers)

    def __len__(self) -> int:
        return len(self.values)

    def __getitem__(self, index: int) -> Record:
        return Record(
            self.offsets[index],
            self.timestamps[index],
            self.keys[index],
            self.values[index],
            self.headers[index],
        )

    def __repr__(self) -> str:
        return f"RecordColumns({len(self)} records, offsets {self.offsets!r})"


def _zigzag_varint(value: int) -> bytes:
    zigzag = (value << 1) ^ (value >> 63)
    out = bytearray()
    while zigzag > 0x7F:
        out.append(zigzag & 0x7F | 0x80)
        zigzag >>= 7
    out.append(zigzag)
    return bytes(out)


# Encoding tables. The extra last entry of the nullable ones makes index -1 (a null key or
# value) map to the encoding of -1, so a column of lengths needs no special case for null.
_TABLE_SIZE = 8192  # also the most records a batch may have for the fast layouts
_FAST_FIELD_MAX = 1024  # keeps a whole record's length inside the tables
_VARINT = tuple(  # zigzag(i) = 2i: one byte below 64, two below 8192
    bytes((z,)) if z < 0x80 else bytes((z & 0x7F | 0x80, z >> 7))
    for z in range(0, 2 * _TABLE_SIZE, 2)
)
_NULLABLE_VARINT = (*_VARINT, _zigzag_varint(-1))
_VARINT_SIZE = tuple(map(len, _VARINT))
_FIELD_SIZE = (*(len(v) + i for i, v in enumerate(_VARINT[:_FAST_FIELD_MAX])), 1)  # + bytes
_ATTR_AND_DELTA = tuple(b"\x00" + v for v in _VARINT[:_FAST_FIELD_MAX])  # attributes, ts delta
# The value-only layout: a record is HEAD[value length] MIDDLE[offset delta] VARINT[value
# length] value, where HEAD holds the previous record's header count (0) and this record's
# length, which depends on the value length and on the size of the offset delta varint.
_VALUE_ONLY_MAX = 4096 - 16
_RECORD_MIDDLE = tuple(b"\x00\x00" + v + b"\x01" for v in _VARINT)  # null key
_RECORD_HEAD = {
    delta_size: tuple(
        b"\x00" + _VARINT[n + _VARINT_SIZE[n] + 4 + delta_size] for n in range(_VALUE_ONLY_MAX)
    )
    for delta_size in (1, 2)
}
_ONE_BYTE_DELTAS = 64  # offset deltas below this take one varint byte, below 8192 two
# Decoding tables: the value of a one-byte varint b, and of a two-byte varint b c (b >= 0x80,
# c < 0x80) at [b][c]. Two tuple lookups cost less than computing (c << 7 | b & 0x7F), which
# allocates an int.
_ZIGZAG_BYTE = tuple((b >> 1) ^ -(b & 1) for b in range(0x80))
_two_bytes = [0] * (1 << 14)  # by u = c << 7 | b & 0x7F
_two_bytes[0::2] = range(1 << 13)  # even u: u >> 1
_two_bytes[1::2] = range(-1, -(1 << 13) - 1, -1)  # odd u: -(u >> 1) - 1
_ZIGZAG_TWO_BYTES = ((),) * 0x80 + tuple(tuple(_two_bytes[low::0x80]) for low in range(0x80))
del _two_bytes


def _varint(value: int) -> bytes:
    return _VARINT[value] if 0 <= value < _TABLE_SIZE else _zigzag_varint(value)


class _MalformedError(Exception):
    """A record section inconsistency, turned into CorruptRecordError with its position."""


def _read_varint(data: bytes, pos: int, max_bytes: int) -> tuple[int, int]:
    """Read a zigzag varint of at most ``max_bytes``; return (value, next position)."""
    result = 0
    shift = 0
    for i in range(pos, pos + max_bytes):
        byte = data[i]
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return (result >> 1) ^ -(result & 1), i + 1
        shift += 7
    raise _MalformedError(f"a varint is longer than {max_bytes} bytes")


# --------------------------------------------------------------------------------------
# Encoding


def encode_batch(
    records: Sequence[NewRecord],
    *,
    base_offset: int = 0,
    now_ms: int | None = None,
    compression: Compression = Compression.NONE,
    timestamp_type: TimestampType = TimestampType.CREATE_TIME,
    producer_id: int = -1,
    producer_epoch: int = -1,
    base_sequence: int = -1,
    partition_leader_epoch: int = -1,
    transactional: bool = False,
) -> bytes:
    """Encode records as one batch, offset deltas 0 to ``len(records) - 1``.

    :param records: at least one record; a record without a timestamp gets ``now_ms``.
    :param now_ms: the current time in epoch ms (default: the system clock); under
        ``LOG_APPEND_TIME`` it is also the batch's ``max_timestamp``.
    :param compression: the codec for the records section.
    :param transactional: the batch belongs to its producer's open transaction
        (attributes bit 4; give ``producer_id``, ``producer_epoch`` and ``base_sequence``).
    :returns: the batch bytes, CRC included.
    :raises ValueError: if ``records`` is empty or a field does not fit its wire type.
    :raises UnsupportedCompressionError: if the codec needs cramjam and it is missing.
    """
    count = len(records)
    if not count:
        raise ValueError("a record batch holds at least one record")
    if now_ms is None:
        now_ms = time.time_ns() // 1_000_000
    values, keys, stamps, headers = zip(*records, strict=True)
    deltas: list[int] | None = None  # None: every delta is 0
    if stamps.count(None) == count:
        base_timestamp = max_timestamp = now_ms
    else:
        filled = [now_ms if t is None else t for t in stamps]
        base_timestamp, max_timestamp = filled[0], max(filled)
        if filled.count(base_timestamp) != count:
            deltas = [t - base_timestamp for t in filled]
            if min(deltas) < -(1 << 63) or max(deltas) >= 1 << 63:
                raise ValueError("timestamps in one batch must lie within 2**63 ms")
    if timestamp_type == TimestampType.LOG_APPEND_TIME:
        max_timestamp = now_ms
    parts = None
    if deltas is None and keys.count(None) == count and not any(headers):
        parts = _value_only_parts(values, count)
    if parts is None:
        parts = _column_parts(values, keys, deltas, headers, count)
    if parts is None:
        parts = _general_parts(values, keys, deltas, headers)
    return _framed(
        b"".join(parts), count, base_timestamp, max_timestamp, base_offset, compression,
        timestamp_type, producer_id, producer_epoch, base_sequence, partition_leader_epoch,
        transactional,
    )  # fmt: skip


def encode_columns(
    values: Sequence[bytes | None],
    *,
    keys: Sequence[bytes | None] | None = None,
    timestamps: Sequence[int] | None = None,
    header_columns: Sequence[tuple[str, Sequence[bytes | None] | DecimalColumn]] = (),
    headers: Sequence[Sequence[tuple[str, bytes | None]]] | None = None,
    base_offset: int = 0,
    now_ms: int | None = None,
    compression: Compression = Compression.NONE,
    producer_id: int = -1,
    producer_epoch: int = -1,
    base_sequence: int = -1,
    transactional: bool = False,
) -> bytes:
    """Encode records given column by column as one batch (create-time timestamps).

    The bulk form of :func:`encode_batch`, for many records at once: record ``i`` has
    value ``values[i]``, key ``keys[i]`` (None: every key null), timestamp
    ``timestamps[i]`` (None: every record ``now_ms``) and, as its headers, ``(name,
    column[i])`` for each of ``header_columns`` (a sequence of values or a
    :class:`DecimalColumn`) followed by ``headers[i]``. Every column has one item per
    value. Columns given as lists take the fastest path. A producer's batch carries its
    ``producer_id``, ``producer_epoch`` and ``base_sequence`` (the sequence of its first
    record) and, with ``transactional``, belongs to the producer's open transaction
    (attributes bit 4).

    :returns: the batch bytes, CRC included.
    :raises ValueError: if there are no values, a column's length differs, or a field does
        not fit its wire type.
    """
    count = len(values)
    if not count:
        raise ValueError("a record batch holds at least one record")
    columns = [c.numbers if isinstance(c, DecimalColumn) else c for _, c in header_columns]
    for column in (keys, timestamps, headers, *columns):
        if column is not None and len(column) != count:
            raise ValueError(f"a column has {len(column)} items for {count} values")
    if timestamps is None:
        base_timestamp = max_timestamp = time.time_ns() // 1_000_000 if now_ms is None else now_ms
    else:
        base_timestamp, max_timestamp = timestamps[0], max(timestamps)
    section = None
    if _compiled_encode_section is not None:
        named = tuple(
            (name.encode(), tuple(column) if isinstance(column, DecimalColumn) else column)
            for name, column in header_columns
        )
        section = _compiled_encode_section(values, keys, timestamps, base_timestamp, named, headers)
    if section is None:  # no C build, or unusual input: the record-by-record encoder
        expanded = [
            (name, column.expand() if isinstance(column, DecimalColumn) else column)
            for name, column in header_columns
        ]
        return encode_batch(
            [
                NewRecord(
                    values[i],
                    None if keys is None else keys[i],
                    base_timestamp if timestamps is None else timestamps[i],
                    [(name, column[i]) for name, column in expanded]
                    + list(() if headers is None else headers[i]),
                )
                for i in range(count)
            ],
            base_offset=base_offset,
            compression=compression,
            producer_id=producer_id,
            producer_epoch=producer_epoch,
            base_sequence=base_sequence,
            transactional=transactional,
        )
    return _framed(
        section, count, base_timestamp, max_timestamp, base_offset, compression,
        TimestampType.CREATE_TIME, producer_id, producer_epoch, base_sequence, -1,
        transactional,
    )  # fmt: skip


def _framed(  # noqa: PLR0917 - every field of the batch header, in wire order
    payload: bytes,
    count: int,
    base_timestamp: int,
    max_timestamp: int,
    base_offset: int,
    compression: Compression,
    timestamp_type: TimestampType,
    producer_id: int,
    producer_epoch: int,
    base_sequence: int,
    partition_leader_epoch: int,
    transactional: bool = False,
) -> bytes:
    """Return the batch of a records section: compressed if asked, header and CRC first."""
    if compression:
        payload = compress(compression, payload)
    attributes = compression | (LOG_APPEND_TIME_BIT if timestamp_type else 0)
    if transactional:
        attributes |= TRANSACTIONAL_BIT
    try:
        tail = TAIL.pack(
            attributes, count - 1, base_timestamp, max_timestamp,
            producer_id, producer_epoch, base_sequence, count,
        )  # fmt: skip
        crc = crc32c(payload, crc32c(tail))
        prefix = PREFIX.pack(
            base_offset, MIN_BATCH_LENGTH + len(payload), partition_leader_epoch, MAGIC, crc
        )
    except struct.error as exc:
        raise ValueError(f"a batch header field is out of range: {exc}") from exc
    return b"".join((prefix, tail, payload))


def _value_only_parts(values: tuple[bytes | None, ...], count: int) -> list[Any] | None:
    """Lay out records that have only a value (no key, headers or timestamp delta).

    The commonest batch and the hot path: four pieces per record, three of them looked up in
    tables by C-level ``map``, interleaved into one list by slice assignment. Returns None
    (use another layout) for null or long values and for more than _TABLE_SIZE records.
    """
    if count > _TABLE_SIZE or None in values:
        return None
    lengths = list(map(len, cast("tuple[bytes, ...]", values)))
    if max(lengths) >= _VALUE_ONLY_MAX:
        return None
    small = min(count, _ONE_BYTE_DELTAS)
    if lengths.count(lengths[0]) == count:  # fixed-size values: no per-record lookups
        size = lengths[0]
        heads = [_RECORD_HEAD[1][size]] * small + [_RECORD_HEAD[2][size]] * (count - small)
        value_sizes: Any = repeat(_VARINT[size], count)
    else:
        heads = list(map(_RECORD_HEAD[1].__getitem__, lengths[:small]))
        heads += map(_RECORD_HEAD[2].__getitem__, lengths[small:])
        value_sizes = map(_VARINT.__getitem__, lengths)
    heads[0] = heads[0][1:]  # the first record has no previous header count
    end = 4 * count
    parts: list[Any] = [b"\x00"] * (end + 1)  # the last record's header count stays
    parts[0:end:4] = heads
    parts[1:end:4] = _RECORD_MIDDLE[:count]
    parts[2:end:4] = value_sizes
    parts[3:end:4] = values
    return parts


def _column_parts(
    values: tuple[bytes | None, ...],
    keys: tuple[bytes | None, ...],
    deltas: list[int] | None,
    headers: tuple[Sequence[tuple[str, bytes | None]], ...],
    count: int,
) -> list[Any] | None:
    """Lay out the records section column by column, or return None if a record is too big.

    Covers records without headers whose key, value and timestamp delta are below
    _FAST_FIELD_MAX: every per-record step is a C-level ``map`` over a table, and the pieces
    of all records are interleaved into one list by slice assignment.
    """
    if count > _TABLE_SIZE or any(headers):
        return None
    columns: list[Any] = []  # the pieces of a record, in wire order, after its length
    sizes: list[Iterable[int]] = [_VARINT_SIZE[:count]]  # offset delta
    fixed = 3  # record attributes, timestamp delta 0, header count
    if deltas is None:
        columns.append(b"\x00\x00")
    else:
        if min(deltas) < 0 or max(deltas) >= _FAST_FIELD_MAX:
            return None
        columns.append(list(map(_ATTR_AND_DELTA.__getitem__, deltas)))
        sizes.append(map(_VARINT_SIZE.__getitem__, deltas))
        fixed -= 1
    columns.append(_VARINT[:count])
    for field in (keys, values):
        nulls = field.count(None)
        if nulls == count:
            columns.append(b"\x01")
            fixed += 1
            continue
        if nulls:  # b"".join cannot take None: a null field is its length (-1) and b""
            lengths = [-1 if f is None else len(f) for f in field]
            field = tuple(b"" if f is None else f for f in field)
        else:
            lengths = list(map(len, cast("tuple[bytes, ...]", field)))
        if max(lengths) >= _FAST_FIELD_MAX:
            return None
        columns.append(list(map(_NULLABLE_VARINT.__getitem__, lengths)))
        columns.append(field)
        sizes.append(map(_FIELD_SIZE.__getitem__, lengths))
    columns.append(b"\x00")  # header count
    body_sizes: Iterable[int] = map(add, sizes[0], repeat(fixed))
    for column in sizes[1:]:
        body_sizes = map(add, body_sizes, column)
    columns.insert(0, list(map(_VARINT.__getitem__, body_sizes)))
    stride = len(columns)
    parts: list[Any] = [b""] * (stride * count)
    for i, column in enumerate(columns):
        parts[i::stride] = repeat(column, count) if isinstance(column, bytes) else column
    return parts


def _general_parts(
    values: tuple[bytes | None, ...],
    keys: tuple[bytes | None, ...],
    deltas: list[int] | None,
    headers: tuple[Sequence[tuple[str, bytes | None]], ...],
) -> list[bytes]:
    """Encode records one at a time: any sizes, headers, negative timestamp deltas."""
    parts = []
    for offset_delta, (value, key, header_list) in enumerate(
        zip(values, keys, headers, strict=True)
    ):
        delta = 0 if deltas is None else deltas[offset_delta]
        fields = [b"\x00", _varint(delta), _varint(offset_delta)]
        for data in (key, value):
            fields.extend((b"\x01",) if data is None else (_varint(len(data)), data))
        fields.append(_varint(len(header_list)))
        for header_key, header_value in header_list:
            name = header_key.encode()
            fields.extend((_varint(len(name)), name))
            if header_value is None:
                fields.append(b"\x01")
            else:
                fields.extend((_varint(len(header_value)), header_value))
        body = b"".join(fields)
        parts.append(_varint(len(body)))
        parts.append(body)
    return parts


# --------------------------------------------------------------------------------------
# Parsing and verifying


def decode_records(buf: Buffer, pos: int = 0, *, verify: bool = True) -> list[Record]:
    """Decode every record of the batch at ``pos``, with absolute offsets and timestamps.

    :param verify: check the CRC first (:func:`verify_batch`); the structure of every
        record is checked either way.
    :raises CorruptRecordError: if the header, CRC, compressed payload or any record is
        inconsistent, or the batch does not hold exactly ``records_count`` records.
    :raises UnsupportedCompressionError: if the codec is unknown or cramjam is missing.
    """
    header = verify_batch(buf, pos) if verify else parse_batch_header(buf, pos)
    start, end = pos + BATCH_HEADER_SIZE, pos + header.batch_length + BATCH_OVERHEAD
    if header.attributes & LOG_APPEND_TIME_BIT:
        # timestamp = base + (delta & mask): mask 0 makes every record's timestamp the
        # batch's max_timestamp without a branch per record.
        timestamp_base, delta_mask = header.max_timestamp, 0
    else:
        timestamp_base, delta_mask = header.base_timestamp, -1
    count, base_offset = header.records_count, header.base_offset
    codec = header.attributes & CODEC_MASK
    section: Buffer = buf
    origin: int | None = start
    if codec:
        section = data = decompress(codec, memoryview(buf)[start:end], position=pos)
        start, end, origin = 0, len(data), None
    if _compiled_decode_section is not None:
        records = _compiled_decode_section(
            section, start, end, count, base_offset, timestamp_base, delta_mask, Record, ()
        )
        if records is not None:
            return records
        # Inconsistent: the Python decoder below finds what is wrong, and where.
    if not codec:  # a copy: slices of it are bytes, and an IndexError means the section ended
        data = bytes(memoryview(buf)[start:end])
    try:
        return _decode_section(data, count, base_offset, timestamp_base, delta_mask)
    except _SectionError as exc:
        if origin is None:
            raise CorruptRecordError(
                f"{exc.reason} (at byte {exc.at} of the decompressed records)", position=pos
            ) from None
        raise CorruptRecordError(exc.reason, position=origin + exc.at) from None


def decode_columns(data: Buffer, start_offset: int = 0) -> RecordColumns:
    """Decode the records of the whole batches in ``data`` (as read from a log, already
    checked) at or after ``start_offset``, as columns.

    :raises CorruptRecordError: if a batch is inconsistent (see :func:`decode_records`).
    """
    timestamps: list[int] = []
    keys: list[bytes | None] = []
    values: list[bytes | None] = []
    headers: list[tuple[tuple[str, bytes | None], ...]] = []
    offsets: list[int] | None = None  # None: consecutive from `first`
    first = -1
    position, end = 0, len(data)
    while position < end:
        header = parse_batch_header(data, position)
        size = header.batch_length + BATCH_OVERHEAD
        # Still consecutive if this batch carries on where the last one ended.
        follows = offsets is None and (first < 0 or header.base_offset == first + len(values))
        appended = False
        if follows and _compiled_decode_columns is not None and not header.attributes & CODEC_MASK:
            if header.attributes & LOG_APPEND_TIME_BIT:
                timestamp_base, delta_mask = header.max_timestamp, 0
            else:
                timestamp_base, delta_mask = header.base_timestamp, -1
            appended = _compiled_decode_columns(
                data, position + BATCH_HEADER_SIZE, position + size, header.records_count,
                header.base_offset, timestamp_base, delta_mask, (),
                timestamps, keys, values, headers,
            ) is True  # fmt: skip
            if appended and first < 0 and values:
                first = header.base_offset
        if not appended:  # compressed, or not consecutive, or to say what is wrong
            records = decode_records(data, position, verify=False)
            if records:
                more_offsets, more_timestamps, more_keys, more_values, more_headers = zip(
                    *records, strict=True
                )
                if follows and _consecutive(more_offsets):
                    first = records[0].offset if first < 0 else first
                else:
                    if offsets is None:
                        offsets = list(range(first, first + len(values))) if values else []
                    offsets.extend(more_offsets)
                timestamps.extend(more_timestamps)
                keys.extend(more_keys)
                values.extend(more_values)
                headers.extend(more_headers)
        position += size
    all_offsets: Sequence[int] = range(first, first + len(values)) if offsets is None else offsets
    skip = bisect_left(all_offsets, start_offset)  # the first batch may start before it
    if skip:
        all_offsets = all_offsets[skip:]
        timestamps, keys, values = timestamps[skip:], keys[skip:], values[skip:]
        headers = headers[skip:]
    if isinstance(all_offsets, list):  # a gap, maybe only before start_offset
        all_offsets = _compact(all_offsets)
    return RecordColumns(all_offsets, timestamps, keys, values, headers)


def _consecutive(offsets: Sequence[int]) -> bool:
    """Whether rising ``offsets`` (at least one) have no gap."""
    return offsets[-1] - offsets[0] == len(offsets) - 1


def _compact(offsets: list[int]) -> Sequence[int]:
    """Return rising ``offsets`` as a ``range`` when they have no gap, else as they are."""
    if offsets and _consecutive(offsets):
        return range(offsets[0], offsets[-1] + 1)
    return offsets


class _SectionError(Exception):
    def __init__(self, reason: str, at: int) -> None:
        super().__init__(reason)
        self.reason = reason
        self.at = at


def _decode_section(
    data: bytes, count: int, base_offset: int, timestamp_base: int, delta_mask: int
) -> list[Record]:
    """Decode ``count`` records that fill ``data`` exactly."""
    if count < 0:
        raise _SectionError(f"negative records count {count}", 0)
    records: list[Record] = []
    key: bytes | None
    value: bytes | None
    append = records.append
    new = tuple.__new__
    zigzag, zigzag2 = _ZIGZAG_BYTE, _ZIGZAG_TWO_BYTES
    read = _read_varint
    pos = index = 0
    # Varints of one byte (b < 0x80) and two bytes (zigzag2[b][c]) are decoded inline,
    # longer ones by read(). A field that runs past the data raises IndexError; a length that
    # lies shows up as a record whose fields do not end where its length says.
    try:
        for index in range(count):  # noqa: B007 - the handlers below name the record
            b = data[pos]
            if b < 0x80:
                pos += 1
                end = pos + zigzag[b]
            elif (c := data[pos + 1]) < 0x80:
                pos += 2
                end = pos + zigzag2[b][c]
            else:
                length, pos = read(data, pos, 5)
                end = pos + length
            b = data[pos + 1]  # skip the record attributes: no bits are defined
            if b < 0x80:
                timestamp = timestamp_base + (zigzag[b] & delta_mask)
                pos += 2
            elif (c := data[pos + 2]) < 0x80:
                # Records a few ms apart: two-byte deltas are the common case.
                timestamp = timestamp_base + (zigzag2[b][c] & delta_mask)
                pos += 3
            else:
                delta, pos = read(data, pos + 1, 10)
                timestamp = timestamp_base + (delta & delta_mask)
            b = data[pos]
            if b < 0x80:
                offset = base_offset + zigzag[b]
                pos += 1
            elif (c := data[pos + 1]) < 0x80:
                offset = base_offset + zigzag2[b][c]
                pos += 2
            else:
                delta, pos = read(data, pos, 5)
                offset = base_offset + delta
            b = data[pos]
            if b == 0x01:
                key = None
                pos += 1
            elif b < 0x80 and not b & 1:
                pos += 1
                key = data[pos : pos + (b >> 1)]
                pos += b >> 1
            else:
                key, pos = _read_nullable_bytes(data, pos, "key")
            b = data[pos]
            if b >= 0x80:
                if (c := data[pos + 1]) < 0x80 and (size := zigzag2[b][c]) >= 0:
                    pos += 2
                    value = data[pos : pos + size]
                    pos += size
                else:
                    value, pos = _read_nullable_bytes(data, pos, "value")
            elif not b & 1:
                pos += 1
                value = data[pos : pos + (b >> 1)]
                pos += b >> 1
            else:
                value, pos = _read_nullable_bytes(data, pos, "value")
            if pos >= end:  # the header count is still to come
                raise _MalformedError(f"key or value runs {pos - end + 1} bytes past the record")
            if data[pos]:
                headers, pos = _read_headers(data, pos, end)
            else:
                headers = ()
                pos += 1
            if pos != end:
                raise _MalformedError(
                    f"its fields end {pos - end:+} bytes from where its length says"
                )
            append(new(Record, (offset, timestamp, key, value, headers)))
    except IndexError:
        start = _record_start(data, index)
        if start >= len(data):
            raise _SectionError(f"batch claims {count} records but holds {index}", start) from None
        raise _SectionError(f"record {index} is truncated", start) from None
    except _MalformedError as exc:
        raise _SectionError(f"record {index}: {exc}", _record_start(data, index)) from None
    if pos != len(data):
        raise _SectionError(f"{len(data) - pos} bytes follow the last of {count} records", pos)
    return records


def _record_start(data: bytes, index: int) -> int:
    """Return where record ``index`` starts; records before it decoded successfully."""
    pos = 0
    for _ in range(index):
        length, pos = _read_varint(data, pos, 5)
        pos += length
    return pos


def _read_nullable_bytes(data: bytes, pos: int, what: str) -> tuple[bytes | None, int]:
    size, pos = _read_varint(data, pos, 5)
    if size < 0:
        if size == -1:
            return None, pos
        raise _MalformedError(f"{what} length {size}")
    return data[pos : pos + size], pos + size


def _read_headers(
    data: bytes, pos: int, end: int
) -> tuple[tuple[tuple[str, bytes | None], ...], int]:
    count, pos = _read_varint(data, pos, 5)
    if count < 0 or count > (end - pos) // 2:  # a header takes at least two bytes
        raise _MalformedError(f"header count {count}")
    headers: list[tuple[str, bytes | None]] = []
    for _ in range(count):
        b = data[pos]  # short lengths (one even byte) inline, as in _decode_section
        if b < 0x80 and not b & 1:
            size = b >> 1
            pos += 1
        else:
            size, pos = _read_varint(data, pos, 5)
            if size < 0:
                raise _MalformedError(f"header key length {size}")
        if size > end - pos:
            raise _MalformedError(f"header key length {size}")
        try:
            name = str(data[pos : pos + size], "utf-8")
        except UnicodeDecodeError as exc:
            raise _MalformedError(f"header key is not UTF-8: {exc}") from None
        pos += size
        b = data[pos]
        if b < 0x80 and not b & 1:
            size = b >> 1
            pos += 1
        else:
            size, pos = _read_varint(data, pos, 5)
            if size == -1:
                headers.append((name, None))
                continue
            if size < 0:
                raise _MalformedError(f"header value length {size}")
        if size > end - pos:
            raise _MalformedError(f"header value length {size}")
        headers.append((name, data[pos : pos + size]))
        pos += size
    return tuple(headers), pos
