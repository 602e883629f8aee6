"""Deleting records: the log start offset inside a segment, persisted, honoured by readers."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from headwater.store import (
    CleanupPolicy,
    CorruptRecordError,
    Durability,
    InvalidTopicError,
    NewRecord,
    OffsetOutOfRangeError,
    PartitionLog,
    PolicyViolationError,
    StoreError,
    TopicConfig,
    TopicNotFoundError,
    open_store,
)
from headwater.store._files import LOG_START_OFFSET_FILE
from headwater.store._log_start import decode_log_start, encode_log_start
from headwater.store._partition import records_from

CONFIG = TopicConfig(segment_bytes=1200, index_interval_bytes=200, retention_ms=-1)


def values(n: int, start: int = 0) -> list[NewRecord]:
    return [NewRecord(value=b"v%d" % i, timestamp=1000 + i) for i in range(start, start + n)]


def test_encoding_round_trips_and_rejects_damage() -> None:
    data = encode_log_start(123456789)
    assert decode_log_start(data) == 123456789
    for i in range(len(data)):
        flipped = bytearray(data)
        flipped[i] ^= 0x01
        assert decode_log_start(bytes(flipped)) is None
    assert decode_log_start(data[:-1]) is None
    assert decode_log_start(b"") is None


def test_log_start_inside_a_segment_survives_close_and_crash(tmp_path: Path) -> None:
    log = PartitionLog.open(tmp_path, CONFIG)
    log.append(values(10))
    assert log.advance_log_start(4) == 4
    assert len(log.segments) == 1  # the log start lies inside the only segment
    with pytest.raises(OffsetOutOfRangeError):
        log.read(3, 1000)
    got = records_from(log.read(4, 1000), 4)
    assert [r.offset for r in got] == list(range(4, 10))
    assert log.advance_log_start(2) == 4  # never moves back
    log.close()
    log = PartitionLog.open(tmp_path, CONFIG)
    assert log.log_start_offset == 4
    log.advance_log_start(7)
    log.abandon()  # as a crash leaves it
    log = PartitionLog.open(tmp_path, CONFIG)
    assert log.log_start_offset == 7
    assert log.statistics().log_start_offset == 7
    log.close()
    read_only = PartitionLog.open(tmp_path, CONFIG, read_only=True)
    assert read_only.log_start_offset == 7
    read_only.close()


def test_log_start_past_the_end_is_refused(tmp_path: Path) -> None:
    log = PartitionLog.open(tmp_path, CONFIG)
    log.append(values(3))
    with pytest.raises(OffsetOutOfRangeError):
        log.advance_log_start(4)
    with pytest.raises(OffsetOutOfRangeError):
        log.advance_log_start(-1)
    assert log.advance_log_start(3) == 3  # the whole log: every record deleted
    assert log.read(3, 100) == b""
    log.close()


def test_retention_deletes_segments_behind_the_log_start(tmp_path: Path) -> None:
    log = PartitionLog.open(tmp_path, CONFIG)
    for i in range(60):
        log.append(values(3, 3 * i))
    assert len(log.segments) > 3
    second, third = log.segments[1].base_offset, log.segments[2].base_offset
    log.advance_log_start(third + 1)
    removed = log.enforce_retention()
    assert removed == [0, second]
    assert log.segments[0].base_offset == third
    assert log.log_start_offset == third + 1
    log.close()


def test_retention_deletes_them_for_a_compacted_topic_too(tmp_path: Path) -> None:
    log = PartitionLog.open(tmp_path, CONFIG)
    for i in range(30):
        log.append(values(3, 3 * i))
    second = log.segments[1].base_offset
    log.advance_log_start(second)
    log.config = TopicConfig(
        segment_bytes=1200,
        index_interval_bytes=200,
        retention_ms=-1,
        cleanup_policy=CleanupPolicy.COMPACT,
    )
    assert log.enforce_retention() == [0]
    log.close()


def test_a_damaged_log_start_file_is_an_error_naming_it(tmp_path: Path) -> None:
    log = PartitionLog.open(tmp_path, CONFIG)
    log.append(values(5))
    log.advance_log_start(2)
    log.close()
    (tmp_path / LOG_START_OFFSET_FILE).write_bytes(b"garbage")
    with pytest.raises(CorruptRecordError, match=LOG_START_OFFSET_FILE):
        PartitionLog.open(tmp_path, CONFIG)


def test_log_start_after_a_lost_tail_is_clamped_to_the_end(tmp_path: Path) -> None:
    log = PartitionLog.open(tmp_path, CONFIG)
    log.append(values(5))
    log.close()
    # As if the log start had been recorded past what a crash kept of the log.
    (tmp_path / LOG_START_OFFSET_FILE).write_bytes(encode_log_start(9))
    log = PartitionLog.open(tmp_path, CONFIG)
    assert log.log_start_offset == log.log_end_offset == 5
    assert log.append(values(1)).base_offset == 5
    log.close()


class LowWatermarkMachine(RuleBasedStateMachine):
    """The log against a model: a list of records and a low watermark that only grows."""

    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="hw-lw-"))
        self.log = PartitionLog.open(self.dir, CONFIG)
        self.records: list[tuple[bytes, int]] = []
        self.low = 0

    def teardown(self) -> None:
        if not self.log.closed:
            self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    @rule(batch=st.lists(st.binary(max_size=150), min_size=1, max_size=6))
    def append(self, batch: list[bytes]) -> None:
        start = len(self.records)
        timestamps = [1000 + start + i for i in range(len(batch))]
        pairs = list(zip(batch, timestamps, strict=True))
        self.log.append([NewRecord(value=v, timestamp=t) for v, t in pairs])
        self.records.extend(pairs)

    @rule(data=st.data())
    def delete_records(self, data: st.DataObject) -> None:
        end = len(self.records)
        offset = data.draw(st.integers(min_value=-2, max_value=end + 2))
        if not 0 <= offset <= end:
            with pytest.raises(OffsetOutOfRangeError):
                self.log.advance_log_start(offset)
            return
        self.low = max(self.low, offset)
        assert self.log.advance_log_start(offset) == self.low

    @rule(data=st.data(), max_bytes=st.integers(min_value=1, max_value=2000))
    def read(self, data: st.DataObject, max_bytes: int) -> None:
        end = len(self.records)
        start = data.draw(st.integers(min_value=max(self.low - 3, 0), max_value=end))
        if start < self.low:
            with pytest.raises(OffsetOutOfRangeError):
                self.log.read(start, max_bytes)
            return
        got = records_from(self.log.read(start, max_bytes), start)
        if start < end:
            assert got
        assert [(r.value, r.timestamp) for r in got] == self.records[start : start + len(got)]
        assert [r.offset for r in got] == list(range(start, start + len(got)))

    @rule(ts=st.integers(min_value=900, max_value=1300))
    def offset_for_time(self, ts: int) -> None:
        expected = next(
            (o for o in range(self.low, len(self.records)) if self.records[o][1] >= ts), None
        )
        assert self.log.offset_for_time(ts) == expected

    @rule()
    def roll(self) -> None:
        self.log.roll()

    @rule()
    def retention(self) -> None:
        self.log.enforce_retention()
        segments = self.log.segments
        # Nothing wholly behind the log start is kept, nothing at or after it is lost.
        assert len(segments) == 1 or segments[1].base_offset > self.low
        assert segments[0].base_offset <= self.low

    @rule()
    def close_and_reopen(self) -> None:
        self.log.close()
        self.log = PartitionLog.open(self.dir, CONFIG)

    @rule()
    def crash_and_reopen(self) -> None:
        self.log.abandon()
        self.log = PartitionLog.open(self.dir, CONFIG)

    @invariant()
    def offsets_match(self) -> None:
        assert self.log.log_start_offset == self.low
        assert self.log.log_end_offset == len(self.records)


LowWatermarkMachine.TestCase.settings = settings(
    max_examples=50, stateful_step_count=30, deadline=None
)
TestLowWatermarkModel = LowWatermarkMachine.TestCase


# -- the store ---------------------------------------------------------------------------


async def test_store_delete_records(tmp_path: Path) -> None:
    async with open_store(tmp_path) as store:
        await store.create_topic("t", TopicConfig(partitions=2, durability=Durability.BATCH))
        await store.append("t", values(10), partition=0)
        await store.append("t", values(4), partition=1)
        assert await store.delete_records("t", {0: 6, 1: -1}) == {0: 6, 1: 4}
        described = store.describe_topic("t").partitions
        assert [p.log_start_offset for p in described] == [6, 4]
        partition = store.partition("t", 0)
        with pytest.raises(OffsetOutOfRangeError):
            await partition.read_records(5, 1000)
        assert [r.offset for r in await partition.read_records(6, 1000)] == [6, 7, 8, 9]
        assert await store.delete_records("t", {0: 3}) == {0: 6}  # never back
        with pytest.raises(OffsetOutOfRangeError):
            await store.delete_records("t", {0: 11})
        with pytest.raises(OffsetOutOfRangeError):
            await store.delete_records("t", {0: -2})
        with pytest.raises(TopicNotFoundError):
            await store.delete_records("t", {2: 0})
        with pytest.raises(TopicNotFoundError):
            await store.delete_records("nope", {0: 0})
        with pytest.raises(InvalidTopicError):
            await store.delete_records("__consumer_offsets", {0: 0})
        # One bad partition changes nothing.
        with pytest.raises(OffsetOutOfRangeError):
            await store.delete_records("t", {0: 8, 1: 99})
        assert store.partition("t", 0).log_start_offset == 6
    async with open_store(tmp_path) as store:
        assert [p.log_start_offset for p in store.describe_topic("t").partitions] == [6, 4]
    async with open_store(tmp_path, read_only=True) as store:
        assert store.partition("t", 0).log_start_offset == 6
        with pytest.raises(StoreError):
            await store.delete_records("t", {0: 7})


async def test_store_delete_records_under_durability_never(tmp_path: Path) -> None:
    async with open_store(tmp_path) as store:
        await store.create_topic("t", TopicConfig(durability=Durability.NEVER))
        await store.append("t", values(5))
        partition = store.partition("t", 0)
        assert partition.log.recovery_point < 5
        assert await store.delete_records("t", {0: -1}) == {0: 5}
        # The records before the new log start were made durable first.
        assert partition.log.recovery_point >= 5


async def test_compacted_topics_refuse_delete_records(tmp_path: Path) -> None:
    async with open_store(tmp_path) as store:
        await store.create_topic("c", TopicConfig(cleanup_policy=CleanupPolicy.COMPACT))
        await store.append("c", [NewRecord(value=b"v", key=b"k")])
        with pytest.raises(PolicyViolationError):
            await store.delete_records("c", {0: 1})


async def test_store_retention_removes_deleted_segments(tmp_path: Path) -> None:
    async with open_store(tmp_path) as store:
        await store.create_topic("t", CONFIG)
        for i in range(60):
            await store.append("t", values(4, 4 * i))
        partition = store.partition("t", 0)
        segments = len(partition.log.segments)
        assert segments > 2
        await store.delete_records("t", {0: partition.log.segments[-1].base_offset})
        assert store.enforce_retention() == segments - 1
        assert store.describe_topic("t").partitions[0].segments == 1
