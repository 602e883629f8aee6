"""Transaction markers (control batches) and transactional batches, in Kafka's format. Pure.

Theory of operation
-------------------
A transaction ends, in every partition it wrote, with a *control batch*: attributes bits
4 (transactional) and 5 (control) set, the producer's id and epoch, no base sequence, and
exactly one *control record* whose

* key is ``int16 version`` (0) then ``int16 type``: 0 aborts the transaction, 1 commits it;
* value is ``int16 version`` (0) then ``int32 coordinator_epoch``: the epoch of the
  transaction coordinator that wrote the marker, so that a stale coordinator is fenced.

These are exactly the bytes a Kafka broker writes, so Kafka clients reading a headwater
log skip them as they skip Kafka's own. A control batch takes an offset like any batch;
readers never see its record as data (see ``_isolation.py``).

The records of a transaction are ordinary batches with bit 4 set. The attributes are
inside the CRC, so setting a bit recomputes it (:func:`set_attribute_bits`).
"""

from __future__ import annotations

import enum
import struct
from typing import NamedTuple

from crc32c import crc32c

from ._batch import (
    ATTRIBUTES,
    CONTROL_BIT,
    CRC,
    CRC_START,
    TRANSACTIONAL_BIT,
    BatchHeader,
    verify_batch,
)
from ._errors import CorruptRecordError
from ._records import NewRecord, decode_records, encode_batch

_KEY = struct.Struct(">hh")
_VALUE = struct.Struct(">hi")
CONTROL_VERSION = 0


class ControlType(enum.IntEnum):
    """What a transaction marker does: the type in its control record's key."""

    ABORT = 0
    COMMIT = 1


class Marker(NamedTuple):
    """A decoded transaction marker."""

    control_type: ControlType
    coordinator_epoch: int


def set_attribute_bits(batch: bytearray, bits: int, pos: int = 0) -> None:
    """OR ``bits`` into the attributes of the batch at ``pos`` and recompute its CRC.

    The CRC is verified first, so this never turns a corrupt batch into a valid one.

    :raises CorruptRecordError: if the batch at ``pos`` fails its checks.
    """
    header = verify_batch(batch, pos)
    ATTRIBUTES.pack_into(batch, pos + CRC_START, header.attributes | bits)
    CRC.pack_into(
        batch, pos + CRC_START - 4, crc32c(memoryview(batch)[pos + CRC_START : pos + header.size])
    )


def encode_transactional_batch(
    records: list[NewRecord],
    *,
    producer_id: int,
    producer_epoch: int,
    base_sequence: int,
    now_ms: int | None = None,
) -> bytearray:
    """Encode ``records`` as one batch of a transaction (attributes bit 4)."""
    batch = bytearray(
        encode_batch(
            records,
            now_ms=now_ms,
            producer_id=producer_id,
            producer_epoch=producer_epoch,
            base_sequence=base_sequence,
        )
    )
    set_attribute_bits(batch, TRANSACTIONAL_BIT)
    return batch


def encode_marker(
    control_type: ControlType,
    *,
    producer_id: int,
    producer_epoch: int,
    coordinator_epoch: int,
    now_ms: int,
    base_offset: int = 0,
) -> bytearray:
    """Encode the control batch that commits or aborts a producer's transaction."""
    record = NewRecord(
        value=_VALUE.pack(CONTROL_VERSION, coordinator_epoch),
        key=_KEY.pack(CONTROL_VERSION, int(control_type)),
        timestamp=now_ms,
    )
    batch = bytearray(
        encode_batch(
            [record],
            base_offset=base_offset,
            now_ms=now_ms,
            producer_id=producer_id,
            producer_epoch=producer_epoch,
        )
    )
    set_attribute_bits(batch, TRANSACTIONAL_BIT | CONTROL_BIT)
    return batch


def read_marker(batch: bytes | bytearray | memoryview, header: BatchHeader, pos: int = 0) -> Marker:
    """Decode the marker of the control batch at ``pos`` (whose parsed header is ``header``).

    :raises CorruptRecordError: if the batch is not one control record of a known layout.
    """
    records = decode_records(batch, pos, verify=False)
    if len(records) != 1 or records[0].key is None or len(records[0].key) < _KEY.size:
        raise CorruptRecordError(
            f"control batch at offset {header.base_offset} holds no transaction marker"
        )
    version, kind = _KEY.unpack_from(records[0].key)
    value = records[0].value
    if version != CONTROL_VERSION or kind not in (0, 1) or value is None or len(value) < 6:
        raise CorruptRecordError(
            f"control batch at offset {header.base_offset}: unknown marker "
            f"(version {version}, type {kind})"
        )
    return Marker(ControlType(kind), _VALUE.unpack_from(value)[1])
