"""Repair moves damaged bytes aside into quarantine files and keeps every valid batch.

Each case builds a partition whose records are a pure function of their offset, damages
it, and checks what opening refuses, what repair reports and moves (byte for byte), and
that afterwards every record outside the damaged ranges reads back as written, appends
resume, and a second repair finds nothing. A crash at every step of a repair (an
exception out of the file system at its Nth change, where ``kill -9`` could stop it)
leaves a folder that recovery and a second repair bring to the same result.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

from headwater.store import (
    CorruptRecordError,
    NewRecord,
    PartitionLog,
    TopicConfig,
    decode_records,
    parse_batch_header,
    repair_partition,
)
from headwater.store._files import RECOVERY_CHECKPOINT_FILE
from headwater.store._fs import OsFileSystem

CONFIG = TopicConfig(segment_bytes=2048, index_interval_bytes=256)


def expected(offset: int) -> bytes:
    return b"record-%d-" % offset + b"y" * (offset % 17)


@dataclass(frozen=True)
class Batch:
    path: Path
    position: int
    base_offset: int
    next_offset: int
    size: int

    @property
    def end(self) -> int:
        return self.position + self.size

    @property
    def offsets(self) -> set[int]:
        return set(range(self.base_offset, self.next_offset))


def batches_in(path: Path) -> list[Batch]:
    data = path.read_bytes()
    out, position = [], 0
    while position < len(data):
        header = parse_batch_header(data, position)
        out.append(Batch(path, position, header.base_offset, header.next_offset, header.size))
        position += header.size
    return out


def log_files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.iterdir() if p.suffix == ".log")


def build(directory: Path, batches: int = 60) -> int:
    """Write ``batches`` batches and leave the folder as a crash would, with no checkpoint
    (so that recovery checks every batch). Returns the log end offset."""
    log = PartitionLog.open(directory, CONFIG)
    for i in range(batches):
        end = log.log_end_offset
        log.append([NewRecord(value=expected(o)) for o in range(end, end + 1 + i % 3)])
    end = log.log_end_offset
    log.flush()
    log.abandon()
    (directory / RECOVERY_CHECKPOINT_FILE).unlink()
    assert len(log_files(directory)) >= 4
    return end


def flip(batch: Batch, at: int = 30) -> None:
    data = bytearray(batch.path.read_bytes())
    data[batch.position + at] ^= 0x20  # inside the CRC (attributes .. records)
    batch.path.write_bytes(data)


def snapshot(directory: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in directory.iterdir()}


def read_back(directory: Path, end: int, lost: set[int]) -> None:
    """Open for writing: every offset below ``end`` but ``lost`` reads back as written."""
    log = PartitionLog.open(directory, CONFIG)
    try:
        assert log.log_end_offset == end
        seen: list[int] = []
        offset = log.log_start_offset
        while offset < end:
            data = log.read(offset, 1 << 16)
            assert data, offset
            position = 0
            while position < len(data):
                header = parse_batch_header(data, position)
                for record in decode_records(data, position, verify=True):
                    if record.offset >= offset:
                        assert record.value == expected(record.offset), record.offset
                        seen.append(record.offset)
                position += header.size
                offset = header.next_offset
        assert seen == [o for o in range(end) if o not in lost]
        info = log.append([NewRecord(value=expected(end))])
        assert info.base_offset == end
    finally:
        log.close()


def test_damage_before_valid_batches_is_refused_then_moved_aside(tmp_path: Path) -> None:
    end = build(tmp_path)
    last = log_files(tmp_path)[-1]
    damaged, resume = batches_in(last)[2:4]
    flip(damaged)
    original = last.read_bytes()
    before = snapshot(tmp_path)

    with pytest.raises(CorruptRecordError) as raised:
        PartitionLog.open(tmp_path, CONFIG)
    damage = raised.value.damage
    assert damage is not None
    assert (damage.path, damage.position, damage.end_position) == (
        str(last),
        damaged.position,
        resume.position,
    )
    assert (damage.last_good_offset, damage.resume_offset) == (
        damaged.base_offset - 1,
        resume.base_offset,
    )

    report = repair_partition(tmp_path, CONFIG, apply=False)
    assert not report.applied and len(report.actions) == 1
    assert report.actions[0].damage == damage
    assert snapshot(tmp_path) == before, "a report changed files"

    report = repair_partition(tmp_path, CONFIG, apply=True)
    (action,) = report.actions
    assert action.quarantine.read_bytes() == original[damaged.position : resume.position]
    assert action.new_segment == tmp_path / f"{resume.base_offset:020d}.log"
    assert action.new_segment.read_bytes() == original[resume.position :]
    assert last.read_bytes() == original[: damaged.position]
    read_back(tmp_path, end, damaged.offsets)
    # Idempotent: nothing is left to repair, and the repaired log stays as it is.
    after = snapshot(tmp_path)
    assert not repair_partition(tmp_path, CONFIG, apply=True).actions
    assert snapshot(tmp_path) == after


def test_damage_at_the_end_of_an_earlier_segment_is_cut_off_into_quarantine(
    tmp_path: Path,
) -> None:
    end = build(tmp_path)
    segment = log_files(tmp_path)[1]
    damaged = batches_in(segment)[-1]
    flip(damaged)
    original = segment.read_bytes()
    with pytest.raises(CorruptRecordError) as raised:
        PartitionLog.open(tmp_path, CONFIG)
    assert raised.value.damage is not None
    assert raised.value.damage.resume_offset == int(log_files(tmp_path)[2].stem)

    (action,) = repair_partition(tmp_path, CONFIG, apply=True).actions
    assert action.quarantine.read_bytes() == original[damaged.position :]
    assert segment.read_bytes() == original[: damaged.position]
    # An empty batch at the damaged batch's last offset keeps the segment's range, as
    # compaction does, so that the log never ends in a gap.
    assert not action.keeps_batches
    assert action.new_segment == tmp_path / f"{damaged.next_offset - 1:020d}.log"
    (filler,) = batches_in(action.new_segment)
    assert (filler.base_offset, filler.next_offset) == (
        damaged.next_offset - 1,
        damaged.next_offset,
    )
    read_back(tmp_path, end, damaged.offsets)


def test_damage_at_the_end_of_the_log_keeps_acknowledged_offsets_from_reuse(
    tmp_path: Path,
) -> None:
    log = PartitionLog.open(tmp_path, CONFIG)
    for offset in range(30):
        log.append([NewRecord(value=expected(offset))])
        log.flush()  # acknowledged, and the checkpoint says so
    log.abandon()
    last = batches_in(log_files(tmp_path)[-1])[-1]
    flip(last)
    (action,) = repair_partition(tmp_path, CONFIG, apply=True).actions
    assert action.damage.resume_offset is None
    assert action.new_segment == tmp_path / f"{29:020d}.log"
    read_back(tmp_path, 30, {29})


def test_several_damaged_ranges_in_one_segment_and_a_torn_tail(tmp_path: Path) -> None:
    build(tmp_path)
    first = log_files(tmp_path)[0]
    batches = batches_in(first)
    for batch in (batches[1], batches[2], batches[5]):
        flip(batch)
    last = log_files(tmp_path)[-1]
    tail = batches_in(last)[-1]
    with last.open("r+b") as f:
        f.truncate(tail.end - 10)  # a torn tail: opening would cut it; repair keeps it
    report = repair_partition(tmp_path, CONFIG, apply=True)
    ranges = [(Path(a.damage.path).name, a.damage.position) for a in report.actions]
    assert ranges == [
        (first.name, batches[1].position),
        (first.name, batches[5].position),
        (last.name, tail.position),
    ]
    assert report.actions[-1].damage.resume_offset is None
    assert len(report.actions[-1].quarantine.read_bytes()) == tail.size - 10
    lost = batches[1].offsets | batches[2].offsets | batches[5].offsets
    read_back(tmp_path, tail.base_offset, lost)


class Crash(BaseException):
    """Stands for kill -9: raised out of the file system, never caught by the store."""


class CrashingFileSystem(OsFileSystem):
    """The operating system's file system, which "dies" before its Nth change."""

    def __init__(self, crash_at: int | None) -> None:
        self.crash_at = crash_at
        self.changes = 0

    def _change(self) -> None:
        self.changes += 1
        if self.crash_at is not None and self.changes >= self.crash_at:
            raise Crash

    def open(self, path: Path, flags: int, mode: int = 0o777) -> int:  # type: ignore[override]
        if flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
            self._change()
        return os.open(path, flags, mode)

    def write(self, fd: int, data: bytes | bytearray | memoryview) -> int:  # type: ignore[override]
        self._change()
        return os.write(fd, data)

    def fsync(self, fd: int) -> None:  # type: ignore[override]
        self._change()
        os.fsync(fd)

    def ftruncate(self, fd: int, length: int) -> None:  # type: ignore[override]
        self._change()
        os.ftruncate(fd, length)

    def replace(self, src: Path, dst: Path) -> None:  # type: ignore[override]
        self._change()
        os.replace(src, dst)

    def unlink(self, path: Path) -> None:  # type: ignore[override]
        self._change()
        os.unlink(path)


def test_a_crash_at_any_step_of_a_repair_is_finished_by_recovery_or_a_rerun(
    tmp_path: Path,
) -> None:
    pristine = tmp_path / "pristine"
    end = build(pristine)
    segments = log_files(pristine)
    middle = batches_in(segments[-1])[1]
    tail_of_earlier = batches_in(segments[1])[-1]
    flip(middle)
    flip(tail_of_earlier)
    lost = middle.offsets | tail_of_earlier.offsets

    counting = CrashingFileSystem(None)
    probe = tmp_path / "probe"
    shutil.copytree(pristine, probe)
    assert len(repair_partition(probe, CONFIG, apply=True, fs=counting).actions) == 2
    steps = counting.changes
    assert steps > 10
    for crash_at in range(1, steps + 1):
        case = tmp_path / f"crash-{crash_at}"
        shutil.copytree(pristine, case)
        with pytest.raises(Crash):
            repair_partition(case, CONFIG, apply=True, fs=CrashingFileSystem(crash_at))
        context = f"crash before change {crash_at} of {steps}"
        # Either recovery finishes what was committed or opening still refuses the
        # damage; a second repair then finishes the job.
        with contextlib.suppress(CorruptRecordError):
            PartitionLog.open(case, CONFIG).close()
        repair_partition(case, CONFIG, apply=True)
        try:
            read_back(case, end, lost)
        except AssertionError as exc:
            raise AssertionError(f"{context}: {exc}") from exc
        quarantined = sorted(p.name for p in case.iterdir() if p.suffix == ".quarantine")
        assert len(quarantined) == 2, (context, quarantined)
        assert not [p for p in case.iterdir() if p.name.endswith((".tmp", ".cleaned", ".split"))]
        shutil.rmtree(case)
