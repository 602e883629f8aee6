"""The recovery checkpoint advances with every flush, so acknowledged data is never a torn tail."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from headwater.store import CorruptRecordError, NewRecord, PartitionLog, TopicConfig
from headwater.store._checkpoint import (
    SLOT_SIZE,
    RecoveryPoint,
    decode_checkpoint,
    read_recovery_point,
)
from headwater.store._files import RECOVERY_CHECKPOINT_FILE
from headwater.store._fs import OS_FILE_SYSTEM

FS = OS_FILE_SYSTEM


def records(base: int, count: int) -> list[NewRecord]:
    return [
        NewRecord(value=b"value-%d" % o, key=b"k%d" % (o % 3)) for o in range(base, base + count)
    ]


def test_every_flush_records_the_checkpoint_before_it_returns(tmp_path: Path) -> None:
    log = PartitionLog.open(tmp_path, TopicConfig(segment_bytes=4096))
    for i in range(100):
        log.append(records(i * 3, 3))
        log.flush()
        point = read_recovery_point(FS, tmp_path)
        active = log.segments[-1]
        assert point == RecoveryPoint(log.log_end_offset, active.base_offset, active.size), i
    assert len(log.segments) > 2
    log.abandon()


def test_a_damaged_last_acknowledged_batch_is_never_cut_as_a_torn_tail(tmp_path: Path) -> None:
    log = PartitionLog.open(tmp_path, TopicConfig())
    for i in range(20):
        log.append(records(i * 5, 5))
        log.flush()  # acknowledged: its fsync is done
    last = log.segments[-1]
    position = last.find_batch(95)
    assert position is not None
    log.abandon()  # a crash right after the acknowledgement
    path = tmp_path / "00000000000000000000.log"
    data = bytearray(path.read_bytes())
    data[position.position + 40] ^= 0x04  # inside the CRC: max_timestamp
    path.write_bytes(data)

    log = PartitionLog.open(tmp_path, TopicConfig())
    try:
        # Nothing was cut: the damage lies before the checkpoint, so it is no torn tail.
        assert log.log_end_offset == 100
        assert path.stat().st_size == len(data)
        data_before = log.read(90, 1 << 20)
        assert data_before, "the batches before the damage read back"
        with pytest.raises(CorruptRecordError) as raised:
            log.read(95, 1 << 20)
        assert raised.value.damage is not None
        assert raised.value.damage.last_good_offset == 94
        assert raised.value.damage.resume_offset == 100
    finally:
        log.abandon()


def test_a_torn_slot_leaves_the_previous_checkpoint(tmp_path: Path) -> None:
    log = PartitionLog.open(tmp_path, TopicConfig())
    log.append(records(0, 2))
    log.flush()
    first = read_recovery_point(FS, tmp_path)
    log.append(records(2, 2))
    log.flush()
    second = read_recovery_point(FS, tmp_path)
    log.abandon()
    assert first is not None and second is not None and second.offset == 4
    path = tmp_path / RECOVERY_CHECKPOINT_FILE
    data = bytearray(path.read_bytes())
    decoded = decode_checkpoint(bytes(data))
    assert decoded is not None
    newest_slot = decoded[0] % 2
    data[newest_slot * SLOT_SIZE + 20] ^= 0xFF  # a torn write of the newest slot
    path.write_bytes(data)
    assert read_recovery_point(FS, tmp_path) == first


def test_a_checkpoint_in_the_earlier_format_is_read_and_replaced(tmp_path: Path) -> None:
    log = PartitionLog.open(tmp_path, TopicConfig())
    log.append(records(0, 3))
    log.flush()
    point = read_recovery_point(FS, tmp_path)
    log.abandon()
    assert point is not None
    (tmp_path / RECOVERY_CHECKPOINT_FILE).write_bytes(point.to_json())
    assert read_recovery_point(FS, tmp_path) == point
    log = PartitionLog.open(tmp_path, TopicConfig())
    log.append(records(3, 1))
    log.flush()
    assert os.path.getsize(tmp_path / RECOVERY_CHECKPOINT_FILE) == 2 * SLOT_SIZE
    new = read_recovery_point(FS, tmp_path)
    assert new is not None and new.offset == 4
    log.close()
