"""Kafka record batch v2 (magic 2) headers: parse, verify, edit in place. Pure, no I/O.

Theory of operation
-------------------
A batch is a 61-byte big-endian header followed by the records section::

    offset size field
    0      8    base_offset             offset of the first record; outside the CRC
    8      4    batch_length            bytes after this field (batch size = batch_length + 12)
    12     4    partition_leader_epoch  outside the CRC
    16     1    magic                   always 2
    17     4    crc                     CRC-32C (Castagnoli) of bytes 21 to the end
    21     2    attributes              bits 0-2 codec, 3 log-append time, 4 transactional,
                                        5 control
    23     4    last_offset_delta
    27     8    base_timestamp          timestamp of the first record
    35     8    max_timestamp
    43     8    producer_id             -1, -1, -1 when the producer is not idempotent
    51     2    producer_epoch
    53     4    base_sequence
    57     4    records_count
    61     ...  records; with a codec, one compressed payload (see _compression.py)

The CRC covers attributes to the end, so the log may rewrite ``base_offset`` and
``partition_leader_epoch`` in place (:func:`set_base_offset`) without touching it; any other
change (:func:`stamp_log_append_time`) recomputes it. Parsing trusts no length: a header
that claims more bytes than the buffer holds is a :class:`CorruptRecordError` naming the
position. The records themselves are encoded and decoded by ``_records.py``.

Everything here is a pure function of its arguments; the in-place edits need the caller
to own the buffer.
"""

from __future__ import annotations

import enum
import struct
from typing import NamedTuple

from crc32c import crc32c

from ._compression import Compression
from ._errors import CorruptRecordError, UnsupportedCompressionError

BATCH_HEADER_SIZE = 61
BATCH_OVERHEAD = 12

MAGIC = 2
CRC_START = 21  # attributes: the first byte the CRC covers
MIN_BATCH_LENGTH = BATCH_HEADER_SIZE - BATCH_OVERHEAD
CODEC_MASK = 0x07
LOG_APPEND_TIME_BIT = 0x08
TRANSACTIONAL_BIT = 0x10
CONTROL_BIT = 0x20

HEADER = struct.Struct(">qiibIhiqqqhii")
PREFIX = struct.Struct(">qiibI")  # base_offset .. crc
TAIL = struct.Struct(">hiqqqhii")  # attributes .. records_count: the CRC starts here
CRC = struct.Struct(">I")
ATTRIBUTES = struct.Struct(">h")
INT64 = struct.Struct(">q")
MAX_TIMESTAMP_AT = 35

Buffer = bytes | bytearray | memoryview


class TimestampType(enum.IntEnum):
    """Whose clock a batch's timestamps come from: attribute bit 3."""

    CREATE_TIME = 0
    LOG_APPEND_TIME = 1


class BatchHeader(NamedTuple):
    """The 61-byte batch header, fields in wire order."""

    base_offset: int
    batch_length: int
    partition_leader_epoch: int
    magic: int
    crc: int
    attributes: int
    last_offset_delta: int
    base_timestamp: int
    max_timestamp: int
    producer_id: int
    producer_epoch: int
    base_sequence: int
    records_count: int

    @property
    def size(self) -> int:
        """Return the size of the whole batch in bytes."""
        return self.batch_length + BATCH_OVERHEAD

    @property
    def last_offset(self) -> int:
        """Return the offset of the batch's last record."""
        return self.base_offset + self.last_offset_delta

    @property
    def next_offset(self) -> int:
        """Return the offset that follows the batch."""
        return self.base_offset + self.last_offset_delta + 1

    @property
    def compression(self) -> Compression:
        """Return the codec of the records section.

        :raises UnsupportedCompressionError: if bits 0-2 name no known codec.
        """
        codec = self.attributes & CODEC_MASK
        if codec > Compression.ZSTD:
            raise UnsupportedCompressionError(f"unknown compression codec {codec}")
        return Compression(codec)

    @property
    def timestamp_type(self) -> TimestampType:
        """Return whose clock the timestamps come from."""
        return TimestampType(bool(self.attributes & LOG_APPEND_TIME_BIT))

    @property
    def is_transactional(self) -> bool:
        """Return whether the batch belongs to a transaction."""
        return bool(self.attributes & TRANSACTIONAL_BIT)

    @property
    def is_control(self) -> bool:
        """Return whether the batch holds control records (transaction markers)."""
        return bool(self.attributes & CONTROL_BIT)


# --------------------------------------------------------------------------------------
# Varints


def parse_batch_header(buf: Buffer, pos: int = 0) -> BatchHeader:
    """Parse the header of the batch at ``pos``, checking that the batch fits in ``buf``.

    The CRC is not checked (see :func:`verify_batch`).

    :raises CorruptRecordError: if fewer than 61 bytes remain, the magic is not 2, or the
        batch length is too small for a header or runs past the end of ``buf``.
    """
    if pos < 0:
        raise ValueError(f"negative position {pos}")
    remaining = len(buf) - pos
    if remaining < BATCH_HEADER_SIZE:
        raise CorruptRecordError(
            f"batch header needs {BATCH_HEADER_SIZE} bytes, {max(remaining, 0)} remain",
            position=pos,
        )
    fields = HEADER.unpack_from(buf, pos)
    magic, batch_length = fields[3], fields[1]
    if magic != MAGIC:
        raise CorruptRecordError(f"magic is {magic}, expected {MAGIC}", position=pos)
    if batch_length < MIN_BATCH_LENGTH:
        raise CorruptRecordError(
            f"batch length {batch_length} is smaller than a header ({MIN_BATCH_LENGTH})",
            position=pos,
        )
    if batch_length + BATCH_OVERHEAD > remaining:
        raise CorruptRecordError(
            f"batch of {batch_length + BATCH_OVERHEAD} bytes runs past the end of the "
            f"buffer ({remaining} bytes remain)",
            position=pos,
        )
    return tuple.__new__(BatchHeader, fields)


def verify_batch(buf: Buffer, pos: int = 0) -> BatchHeader:
    """Parse the header of the batch at ``pos`` and check its CRC and record count.

    :raises CorruptRecordError: as :func:`parse_batch_header`, or if the CRC-32C differs or
        ``records_count`` is outside ``0 .. last_offset_delta + 1``.
    """
    header = parse_batch_header(buf, pos)
    crc = crc32c(memoryview(buf)[pos + CRC_START : pos + header.batch_length + BATCH_OVERHEAD])
    if crc != header.crc:
        raise CorruptRecordError(
            f"CRC-32C mismatch: stored {header.crc:#010x}, computed {crc:#010x}", position=pos
        )
    if not 0 <= header.records_count <= header.last_offset_delta + 1:
        raise CorruptRecordError(
            f"records count {header.records_count} does not fit last offset delta "
            f"{header.last_offset_delta}",
            position=pos,
        )
    return header


# --------------------------------------------------------------------------------------
# Decoding


# --------------------------------------------------------------------------------------
# In-place edits


def set_base_offset(buf: bytearray | memoryview, pos: int, base_offset: int) -> None:
    """Write the base offset of the batch at ``pos``; the CRC does not cover it.

    :raises CorruptRecordError: if no well-framed batch starts at ``pos``.
    """
    parse_batch_header(buf, pos)
    INT64.pack_into(buf, pos, base_offset)


def stamp_log_append_time(buf: bytearray | memoryview, pos: int, timestamp_ms: int) -> None:
    """Mark the batch at ``pos`` as log-append time ``timestamp_ms`` and recompute its CRC.

    The CRC is verified first, so stamping never turns a corrupt batch into a valid one.

    :raises CorruptRecordError: if the batch at ``pos`` fails :func:`verify_batch`.
    """
    header = verify_batch(buf, pos)
    ATTRIBUTES.pack_into(buf, pos + CRC_START, header.attributes | LOG_APPEND_TIME_BIT)
    INT64.pack_into(buf, pos + MAX_TIMESTAMP_AT, timestamp_ms)
    crc = crc32c(memoryview(buf)[pos + CRC_START : pos + header.size])
    CRC.pack_into(buf, pos + CRC_START - 4, crc)


def encode_empty_batch(base_offset: int, timestamp_ms: int) -> bytes:
    """Return a batch holding no records that covers just ``base_offset``.

    Compaction ends a rewritten range with one, as Kafka's cleaner keeps empty batches, so
    that the range's last offset survives the removal of its last records.
    """
    tail = TAIL.pack(0, 0, timestamp_ms, timestamp_ms, -1, -1, -1, 0)
    return PREFIX.pack(base_offset, MIN_BATCH_LENGTH, -1, MAGIC, crc32c(tail)) + tail
