"""PartitionLog: appends, reads, rolling, retention, reopening."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from headwater.store import (
    CorruptRecordError,
    NewRecord,
    OffsetOutOfRangeError,
    PartitionLog,
    RecordTooLargeError,
    TimestampType,
    TopicConfig,
)
from headwater.store._files import CLEAN_SHUTDOWN_FILE, RECOVERY_CHECKPOINT_FILE
from headwater.store._partition import records_from
from headwater.store._records import encode_batch


class FakeClock:
    def __init__(self, now: int = 1_700_000_000_000) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now


def values(n: int, start: int = 0) -> list[NewRecord]:
    return [NewRecord(value=f"v{i}".encode(), timestamp=1000 + i) for i in range(start, start + n)]


def read_all(log: PartitionLog, start: int = 0) -> list[tuple[int, bytes | None]]:
    out = []
    offset = start
    while offset < log.log_end_offset:
        data = log.read(offset, 1 << 16)
        records = records_from(data, offset)
        assert records, "a read below the log end must make progress"
        out.extend((r.offset, r.value) for r in records)
        offset = records[-1].offset + 1
    return out


def test_append_assigns_dense_offsets(tmp_path: Path) -> None:
    log = PartitionLog.open(tmp_path, TopicConfig())
    first = log.append(values(3))
    second = log.append(values(2, 3))
    assert (first.base_offset, first.last_offset) == (0, 2)
    assert (second.base_offset, second.last_offset) == (3, 4)
    assert log.log_end_offset == 5
    assert read_all(log) == [(i, f"v{i}".encode()) for i in range(5)]
    log.close()


def test_read_from_the_middle_of_a_batch_skips_earlier_records(tmp_path: Path) -> None:
    log = PartitionLog.open(tmp_path, TopicConfig())
    log.append(values(10))
    assert [o for o, _ in read_all(log, 7)] == [7, 8, 9]
    log.close()


def test_read_returns_at_least_one_whole_batch(tmp_path: Path) -> None:
    log = PartitionLog.open(tmp_path, TopicConfig())
    log.append([NewRecord(value=b"x" * 5000)])
    data = log.read(0, 10)
    assert len(records_from(data)) == 1
    log.close()


def test_read_outside_the_log_raises(tmp_path: Path) -> None:
    log = PartitionLog.open(tmp_path, TopicConfig())
    log.append(values(2))
    assert log.read(2, 100) == b""
    with pytest.raises(OffsetOutOfRangeError):
        log.read(3, 100)
    with pytest.raises(OffsetOutOfRangeError):
        log.read(-1, 100)
    log.close()


def test_segments_roll_by_size_and_reopen(tmp_path: Path) -> None:
    config = TopicConfig(segment_bytes=1024, index_interval_bytes=128)
    log = PartitionLog.open(tmp_path, config)
    for i in range(50):
        log.append(values(3, 3 * i))
    assert len(log.segments) >= 4
    names = sorted(os.listdir(tmp_path))
    assert "00000000000000000000.log" in names
    expected = read_all(log)
    log.close()
    reopened = PartitionLog.open(tmp_path, config)
    assert reopened.log_end_offset == 150
    assert read_all(reopened) == expected
    assert read_all(reopened, 77)[0][0] == 77
    reopened.close()


def test_segments_roll_by_age(tmp_path: Path) -> None:
    clock = FakeClock()
    log = PartitionLog.open(tmp_path, TopicConfig(segment_ms=1000), clock=clock)
    log.append(values(1))
    clock.now += 999
    log.append(values(1))
    assert len(log.segments) == 1
    clock.now += 1
    log.append(values(1))
    assert len(log.segments) == 2
    log.close()


def test_retention_by_size_keeps_the_active_segment(tmp_path: Path) -> None:
    config = TopicConfig(segment_bytes=1024, retention_bytes=2048)
    log = PartitionLog.open(tmp_path, config)
    for i in range(60):
        log.append(values(3, 3 * i))
    removed = log.enforce_retention()
    assert removed
    assert sum(s.size for s in log.segments) < 2048 + 1024
    assert log.log_start_offset == log.segments[0].base_offset > 0
    with pytest.raises(OffsetOutOfRangeError):
        log.read(0, 100)
    assert read_all(log, log.log_start_offset)[-1][0] == 179
    log.close()


def test_retention_by_age(tmp_path: Path) -> None:
    clock = FakeClock(now=5_500)
    config = TopicConfig(segment_bytes=1024, retention_ms=5_000)
    log = PartitionLog.open(tmp_path, config, clock=clock)
    for i in range(30):
        log.append([NewRecord(value=b"x" * 100, timestamp=1_000 + i)])
    log.append([NewRecord(value=b"new", timestamp=9_000)])
    assert log.enforce_retention() == []
    clock.now = 7_000 + 30
    removed = log.enforce_retention()
    assert removed and len(log.segments) >= 1
    assert log.segments[-1].max_timestamp == 9_000
    log.close()


def test_offset_for_time(tmp_path: Path) -> None:
    config = TopicConfig(segment_bytes=2048, index_interval_bytes=64)
    log = PartitionLog.open(tmp_path, config)
    assert log.max_timestamp == -1
    for i in range(100):
        log.append([NewRecord(value=b"v", timestamp=1000 + 10 * i)])
    log.append([NewRecord(value=b"late", timestamp=1200)])  # not every record is newer
    assert len(log.segments) > 1
    assert log.max_timestamp == 1990
    assert log.offset_for_time(0) == 0
    assert log.offset_for_time(1000) == 0
    assert log.offset_for_time(1001) == 1
    assert log.offset_for_time(1500) == 50
    assert log.offset_for_time(1990) == 99
    assert log.offset_for_time(1991) is None
    log.close()
    reopened = PartitionLog.open(tmp_path, config)
    assert reopened.offset_for_time(1500) == 50
    assert reopened.max_timestamp == 1990
    reopened.close()


def test_append_batch_stores_client_bytes_with_new_offsets(tmp_path: Path) -> None:
    log = PartitionLog.open(tmp_path, TopicConfig())
    log.append(values(5))
    batch = encode_batch([NewRecord(value=b"a"), NewRecord(value=b"b")], now_ms=42)
    info = log.append_batch(batch)
    assert (info.base_offset, info.last_offset) == (5, 6)
    stored = log.read(5, 1 << 16)
    assert stored[12:] == batch[12:]  # everything after the base offset is as sent
    log.close()


def test_log_append_time_is_stamped(tmp_path: Path) -> None:
    clock = FakeClock(now=123_456)
    log = PartitionLog.open(
        tmp_path, TopicConfig(timestamp_type=TimestampType.LOG_APPEND_TIME), clock=clock
    )
    info = log.append([NewRecord(value=b"a", timestamp=5)])
    assert info.log_append_time == 123_456
    assert records_from(log.read(0, 1000))[0].timestamp == 123_456
    log.close()


def test_corrupt_and_oversized_batches_are_refused_and_change_nothing(tmp_path: Path) -> None:
    log = PartitionLog.open(tmp_path, TopicConfig(max_message_bytes=1000))
    log.append(values(1))
    batch = bytearray(encode_batch([NewRecord(value=b"abc")]))
    batch[-1] ^= 0xFF
    with pytest.raises(CorruptRecordError):
        log.append_batch(batch)
    with pytest.raises(RecordTooLargeError):
        log.append([NewRecord(value=b"x" * 2000)])
    assert log.log_end_offset == 1
    assert log.segments[-1].size == len(log.read(0, 10_000))
    log.close()


def test_clean_close_writes_marker_and_the_first_change_removes_it(tmp_path: Path) -> None:
    log = PartitionLog.open(tmp_path, TopicConfig())
    log.append(values(3))
    log.close()
    assert (tmp_path / CLEAN_SHUTDOWN_FILE).exists()
    assert (tmp_path / RECOVERY_CHECKPOINT_FILE).exists()
    reopened = PartitionLog.open(tmp_path, TopicConfig())
    assert reopened.log_end_offset == 3
    # A session that only reads changes no file.
    before = {p.name: p.stat().st_mtime_ns for p in tmp_path.iterdir()}
    reopened.read(0, 1000)
    reopened.close()
    assert {p.name: p.stat().st_mtime_ns for p in tmp_path.iterdir()} == before
    writer = PartitionLog.open(tmp_path, TopicConfig())
    writer.append(values(1, 3))
    assert not (tmp_path / CLEAN_SHUTDOWN_FILE).exists()
    writer.close()
    assert (tmp_path / CLEAN_SHUTDOWN_FILE).exists()


def test_reopen_after_abandon_recovers_everything_written(tmp_path: Path) -> None:
    config = TopicConfig(segment_bytes=2048)
    log = PartitionLog.open(tmp_path, config)
    for i in range(40):
        log.append(values(2, 2 * i))
    log.abandon()
    reopened = PartitionLog.open(tmp_path, config)
    assert reopened.log_end_offset == 80
    assert [o for o, _ in read_all(reopened)] == list(range(80))
    reopened.close()


def test_missing_or_damaged_indexes_are_rebuilt(tmp_path: Path) -> None:
    config = TopicConfig(segment_bytes=1024, index_interval_bytes=64)
    log = PartitionLog.open(tmp_path, config)
    for i in range(40):
        log.append(values(2, 2 * i))
    expected = read_all(log)
    log.close()
    indexes = sorted(p for p in tmp_path.iterdir() if p.suffix == ".index")
    indexes[0].unlink()
    indexes[1].write_bytes(b"\x00\x00\x00\x05\x7f\xff\xff\xff")
    timeindexes = sorted(p for p in tmp_path.iterdir() if p.suffix == ".timeindex")
    timeindexes[2].write_bytes(b"garbage")
    reopened = PartitionLog.open(tmp_path, config)
    assert read_all(reopened) == expected
    for offset in range(80):
        assert records_from(reopened.read(offset, 10), offset)[0].offset == offset
    reopened.close()
