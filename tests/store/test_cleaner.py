"""Compaction: the latest record per key survives, offsets never change, swaps are atomic."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from headwater.store import CleanupPolicy, NewRecord, PartitionLog, StoreError, TopicConfig
from headwater.store._cleaner import apply_cleaning, clean_partition, plan_cleaning, write_swap_file
from headwater.store._partition import records_from

CONFIG = TopicConfig(
    cleanup_policy=CleanupPolicy.COMPACT,
    segment_bytes=1024,
    delete_retention_ms=1000,
    index_interval_bytes=128,
)
NOW = 10_000_000


def read_all(log: PartitionLog) -> list[tuple[int, bytes | None, bytes | None]]:
    out = []
    offset = log.log_start_offset
    while offset < log.log_end_offset:
        data = log.read(offset, 1 << 20)
        assert data
        out.extend((r.offset, r.key, r.value) for r in records_from(data, offset))
        offset = _next_offset(data)
    return out


def _next_offset(data: bytes) -> int:
    position = 0
    end = 0
    while position < len(data):
        base = int.from_bytes(data[position : position + 8], "big")
        length = int.from_bytes(data[position + 8 : position + 12], "big")
        delta = int.from_bytes(data[position + 23 : position + 27], "big")
        end = base + delta + 1
        position += length + 12
    return end


def expected_after_compaction(
    written: list[tuple[int, bytes | None, bytes | None, int]],
    active_base: int,
    horizon: int,
    durable_end: int,
) -> list[tuple[int, bytes | None, bytes | None]]:
    # Only a durable record (below durable_end) supersedes an older one of its key.
    latest: dict[bytes, int] = {}
    for offset, key, _value, _ts in written:
        if key is not None and offset < durable_end:
            latest[key] = offset
    out = []
    for offset, key, value, ts in written:
        keep_tombstone = value is not None or ts >= horizon
        if offset >= active_base or key is None or (latest[key] == offset and keep_tombstone):
            out.append((offset, key, value))
    return out


@settings(max_examples=40, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from([b"a", b"b", b"c", b"d", None]),
            st.one_of(st.none(), st.binary(min_size=1, max_size=60)),
            st.integers(min_value=NOW - 5000, max_value=NOW),
        ),
        min_size=1,
        max_size=120,
    ),
    st.integers(min_value=1, max_value=6),
    st.booleans(),
)
def test_compaction_keeps_latest_per_key(
    tmp_path_factory: object,
    entries: list[tuple[bytes | None, bytes | None, int]],
    per_batch: int,
    flushed: bool,
) -> None:
    directory = Path(tmp_path_factory.mktemp("clean"))  # type: ignore[attr-defined]
    log = PartitionLog.open(directory, CONFIG, clock=lambda: NOW)
    written = []
    for i in range(0, len(entries), per_batch):
        chunk = entries[i : i + per_batch]
        info = log.append([NewRecord(value=v, key=k, timestamp=t) for k, v, t in chunk])
        written.extend((info.base_offset + j, k, v, t) for j, (k, v, t) in enumerate(chunk))
    active_base = log.segments[-1].base_offset
    end = log.log_end_offset
    if flushed:
        log.flush()
    clean_partition(log, NOW)
    assert log.log_end_offset == end
    durable_end = end if flushed else active_base  # inactive segments were fsynced at roll
    expected = expected_after_compaction(
        written, active_base, NOW - CONFIG.delete_retention_ms, durable_end
    )
    assert read_all(log) == expected
    log.close()
    reopened = PartitionLog.open(directory, CONFIG, clock=lambda: NOW)
    assert reopened.log_end_offset == end
    assert read_all(reopened) == expected
    # appending continues densely after compaction
    info = reopened.append([NewRecord(value=b"z", key=b"a")])
    assert info.base_offset == end
    reopened.close()


def test_cleaning_twice_changes_nothing_more(tmp_path: Path) -> None:
    log = PartitionLog.open(tmp_path, CONFIG, clock=lambda: NOW)
    for i in range(200):
        log.append([NewRecord(value=b"x" * 20, key=f"k{i % 5}".encode(), timestamp=NOW)])
    first = clean_partition(log, NOW)
    assert first is not None and first.records_removed > 0
    assert first.segments_after < first.segments_before
    snapshot = read_all(log)
    assert clean_partition(log, NOW) is None
    assert read_all(log) == snapshot
    log.close()


def test_a_crash_after_the_swap_commit_is_finished_on_open(tmp_path: Path) -> None:
    log = PartitionLog.open(tmp_path, CONFIG, clock=lambda: NOW)
    for i in range(200):
        log.append([NewRecord(value=b"x" * 20, key=f"k{i % 5}".encode(), timestamp=NOW)])
    plan = plan_cleaning(log, NOW)
    assert plan is not None
    # Write the swap files (the commit point) but crash before swapping them in.
    for group in plan.groups:
        write_swap_file(log, group)
    log.abandon()
    assert any(name.endswith(".swap") for name in os.listdir(tmp_path))
    reopened = PartitionLog.open(tmp_path, CONFIG, clock=lambda: NOW)
    assert not any(name.endswith(".swap") for name in os.listdir(tmp_path))
    keys_seen = [k for _o, k, _v in read_all(reopened)]
    active_base = reopened.segments[-1].base_offset
    compacted = [k for o, k, _v in read_all(reopened) if o < active_base]
    assert len(compacted) == len(set(compacted))
    assert set(keys_seen) == {f"k{i}".encode() for i in range(5)}
    reopened.close()


def test_a_crash_before_the_commit_discards_the_cleaned_file(tmp_path: Path) -> None:
    log = PartitionLog.open(tmp_path, CONFIG, clock=lambda: NOW)
    for i in range(100):
        log.append([NewRecord(value=b"x" * 20, key=f"k{i % 5}".encode(), timestamp=NOW)])
    before = read_all(log)
    log.abandon()
    (tmp_path / "00000000000000000000.log.cleaned").write_bytes(b"partial")
    reopened = PartitionLog.open(tmp_path, CONFIG, clock=lambda: NOW)
    assert read_all(reopened) == before
    assert not (tmp_path / "00000000000000000000.log.cleaned").exists()
    reopened.close()


def test_apply_cleaning_refuses_segments_removed_meanwhile(tmp_path: Path) -> None:
    config = TopicConfig(cleanup_policy=CleanupPolicy.COMPACT, segment_bytes=1024)
    log = PartitionLog.open(tmp_path, config, clock=lambda: NOW)
    for i in range(100):
        log.append([NewRecord(value=b"x" * 20, key=f"k{i % 5}".encode(), timestamp=NOW)])
    plan = plan_cleaning(log, NOW)
    assert plan is not None
    log.delete_segments_before(log.segments[1].base_offset)  # as retention would, meanwhile
    before = read_all(log)
    with pytest.raises(StoreError, match="segments changed while compacting"):
        apply_cleaning(log, plan)
    assert not any(name.endswith((".swap", ".cleaned")) for name in os.listdir(tmp_path))
    assert read_all(log) == before  # nothing was swapped in
    log.close()
    reopened = PartitionLog.open(tmp_path, config, clock=lambda: NOW)
    assert read_all(reopened) == before
    reopened.close()


def test_retention_never_deletes_a_compacted_topic(tmp_path: Path) -> None:
    config = TopicConfig(
        cleanup_policy=CleanupPolicy.COMPACT, segment_bytes=1024, retention_bytes=1, retention_ms=1
    )
    log = PartitionLog.open(tmp_path, config, clock=lambda: NOW)
    for i in range(100):
        log.append([NewRecord(value=b"x" * 20, key=f"k{i}".encode(), timestamp=0)])
    assert log.enforce_retention(NOW) == []
    assert log.log_start_offset == 0
    log.close()


def _checkpoint_in_a_segment_compaction_rewrites(
    directory: Path, roll: bool = True
) -> PartitionLog:
    """A log whose recovery checkpoint names a byte position in an inactive segment that
    compaction will rewrite on its own (too big to merge with the one before it)."""
    config = TopicConfig(
        cleanup_policy=CleanupPolicy.COMPACT, segment_bytes=4096, delete_retention_ms=0
    )
    log = PartitionLog.open(directory, config, clock=lambda: NOW)
    i = 0
    while log.segments[-1].size < 4070:  # distinct keys: nothing to drop
        log.append([NewRecord(key=b"unique%d" % i, value=b"x")])
        i += 1
    log.roll()
    for i in range(6):
        log.append([NewRecord(key=b"k", value=b"v%d" % i)])
    log.flush()  # the checkpoint: this segment, at its end
    if roll:
        log.roll()
    return log


def test_a_crash_after_compacting_the_checkpoints_segment_recovers(tmp_path: Path) -> None:
    log = _checkpoint_in_a_segment_compaction_rewrites(tmp_path)
    before = read_all(log)
    assert clean_partition(log, NOW) is not None
    after = read_all(log)
    assert len(after) < len(before)
    log.abandon()  # as kill -9 leaves it
    reopened = PartitionLog.open(tmp_path, log.config, clock=lambda: NOW)
    assert read_all(reopened) == after
    reopened.close()


def test_a_crash_after_the_swap_commit_over_the_checkpoints_segment_recovers(
    tmp_path: Path,
) -> None:
    log = _checkpoint_in_a_segment_compaction_rewrites(tmp_path)
    plan = plan_cleaning(log, NOW)
    assert plan is not None
    for group in plan.groups:
        write_swap_file(log, group)  # committed, never swapped in
    log.abandon()
    reopened = PartitionLog.open(tmp_path, log.config, clock=lambda: NOW)
    assert [k for _o, k, _v in read_all(reopened)].count(b"k") == 1
    assert not any(name.endswith(".swap") for name in os.listdir(tmp_path))
    reopened.close()


def test_compaction_waits_for_a_flush_that_checkpoints_into_its_segments(
    tmp_path: Path,
) -> None:
    log = _checkpoint_in_a_segment_compaction_rewrites(tmp_path, roll=False)
    log.append([NewRecord(key=b"k", value=b"v6")])
    flushing = log.prepare_flush()  # its checkpoint will name the active segment
    assert flushing is not None
    log.roll()  # which compaction may now rewrite
    with pytest.raises(StoreError, match="retry"):
        clean_partition(log, NOW)
    assert not any(name.endswith(".swap") for name in os.listdir(tmp_path))
    flushing.execute()
    log.complete_flush(flushing)
    log.flush()
    assert clean_partition(log, NOW) is not None
    log.abandon()
    reopened = PartitionLog.open(tmp_path, log.config, clock=lambda: NOW)
    assert [k for _o, k, _v in read_all(reopened)].count(b"k") == 1
    reopened.close()
