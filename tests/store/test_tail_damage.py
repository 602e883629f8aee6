"""Tail damage: recovery cuts a torn tail exactly, and refuses damage anywhere else.

A torn tail is damage that runs to the end of the last segment (an interrupted write).
Damage with a valid batch after it is no torn write: opening for writing refuses it,
naming the damaged range and the offsets around it, and deletes nothing.

Each case copies a pristine partition folder, damages it (truncation or bit flips), opens
it and checks the result against the records that were written, which are a pure function
of their offset.

The pristine folders are left as a crash leaves them (``abandon()``, no clean-shutdown
marker) with the recovery checkpoint in one of three places, so that recovery verifies
the damaged batches: no checkpoint at all (the whole log is verified), a checkpoint in an
earlier segment, or one inside the last segment before its last three batches. A fourth
folder is closed cleanly, for damage before the checkpoint.

The folders live on a tmpfs (``/dev/shm``) when there is one: these tests are about what
recovery decides, not about fsync, and every open after a crash fsyncs a dozen files, which
on a busy disk would make a thousand cases take minutes. The file operations are the same.

A batch's ``base_offset`` (bytes 0-7) and ``partition_leader_epoch`` (bytes 12-15) lie
outside its CRC, as in Kafka; random flips avoid them and dedicated tests cover them.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import random
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from headwater.store import (
    CorruptRecordError,
    NewRecord,
    PartitionLog,
    Record,
    TopicConfig,
    decode_records,
    parse_batch_header,
)
from headwater.store._checkpoint import RecoveryPoint, read_recovery_point
from headwater.store._files import CLEAN_SHUTDOWN_FILE, RECOVERY_CHECKPOINT_FILE
from headwater.store._fs import OS_FILE_SYSTEM

SEED = int(os.environ.get("HEADWATER_DAMAGE_SEED", "1234"))
CONFIG = TopicConfig(segment_bytes=1024, index_interval_bytes=128)
BASE_TIMESTAMP = 1_700_000_000_000
SEGMENTS = {"none": 4, "earlier-segment": 5, "last-segment": 5}
#: Bytes of a batch header outside the CRC that recovery cannot check.
BASE_OFFSET_BYTES = range(0, 8)
EPOCH_BYTES = range(12, 16)
CHECKPOINTS = ("none", "earlier-segment", "last-segment")


def expected_record(offset: int) -> NewRecord:
    value = b"v%d-" % offset + b"x" * (offset % 13)
    key = b"k%d" % (offset % 7) if offset % 3 else None
    return NewRecord(value=value, key=key, timestamp=BASE_TIMESTAMP + offset)


@dataclass(frozen=True)
class Batch:
    """Where a batch sits in its segment file."""

    path: Path
    position: int
    base_offset: int
    next_offset: int
    size: int

    @property
    def end(self) -> int:
        return self.position + self.size


def batches_in(path: Path) -> list[Batch]:
    data = path.read_bytes()
    out = []
    position = 0
    while position < len(data):
        header = parse_batch_header(data, position)
        out.append(Batch(path, position, header.base_offset, header.next_offset, header.size))
        position += header.size
    return out


def log_files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.iterdir() if p.suffix == ".log")


def build(directory: Path, checkpoint: str) -> None:
    """Write segments of small batches and leave them as a crash would."""
    rng = random.Random(99)
    count = SEGMENTS[checkpoint]
    log = PartitionLog.open(directory, CONFIG)
    flushed = False
    while True:
        end = log.log_end_offset
        log.append([expected_record(o) for o in range(end, end + rng.randint(1, 3))])
        segments = len(log.segments)
        # The first flush after a roll writes the recovery checkpoint at the log end.
        if checkpoint == "earlier-segment" and segments == 3 and not flushed:
            log.flush()
            flushed = True
        active = log.segments[-1]
        batches_in_active = sum(1 for _ in active.iter_batches())
        if checkpoint == "last-segment" and segments == count and batches_in_active == 2:
            log.flush()
            flushed = True
        if segments == count and batches_in_active >= 7:
            break
    log.abandon()
    if checkpoint == "none":
        (directory / RECOVERY_CHECKPOINT_FILE).unlink(missing_ok=True)
        return
    # Recovery must verify the last three batches: the checkpoint lies before them.
    assert flushed
    point = read_checkpoint(directory)
    last = log_files(directory)[-1]
    if checkpoint == "last-segment":
        assert point.segment == int(last.stem), point
        assert 0 < point.position <= batches_in(last)[-3].position, point
    else:
        assert point.segment < int(last.stem), point


def read_checkpoint(directory: Path) -> RecoveryPoint:
    point = read_recovery_point(OS_FILE_SYSTEM, directory)
    assert point is not None
    return point


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A folder on a tmpfs if there is one (see the module docstring), else under tmp."""
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK):
        folder = Path(tempfile.mkdtemp(prefix="headwater-tail-", dir=shm))
        yield folder
        shutil.rmtree(folder, ignore_errors=True)
    else:
        yield tmp_path_factory.mktemp("tail")


@pytest.fixture(scope="module")
def pristine(scratch: Path) -> dict[str, Path]:
    folders = {}
    for checkpoint in CHECKPOINTS:
        folder = scratch / f"pristine-{checkpoint}"
        build(folder, checkpoint)
        folders[checkpoint] = folder
    clean = scratch / "pristine-clean"
    build(clean, "none")
    PartitionLog.open(clean, CONFIG).close()
    assert (clean / CLEAN_SHUTDOWN_FILE).exists()
    folders["clean"] = clean
    return folders


@pytest.fixture
def case_dirs(scratch: Path) -> Iterator[Iterator[Path]]:
    """Fresh folders for one case after another, each removed when the next starts."""
    root = Path(tempfile.mkdtemp(prefix="cases-", dir=scratch))

    def names() -> Iterator[Path]:
        i = 0
        while True:
            folder = root / f"case-{i}"
            yield folder
            shutil.rmtree(folder)
            i += 1

    yield names()
    shutil.rmtree(root, ignore_errors=True)


def copy_of(source: Path, cases: Iterator[Path]) -> Path:
    target = next(cases)
    shutil.copytree(source, target)
    return target


def flip(path: Path, bits: list[tuple[int, int]]) -> None:
    data = bytearray(path.read_bytes())
    for byte, bit in bits:
        data[byte] ^= 1 << bit
    path.write_bytes(data)


def snapshot(directory: Path) -> dict[str, tuple[int, str]]:
    return {
        p.name: (p.stat().st_size, hashlib.sha256(p.read_bytes()).hexdigest())
        for p in sorted(directory.iterdir())
    }


def check_record(offset: int, record: Record) -> None:
    want = expected_record(offset)
    got = (record.offset, record.key, record.value, record.timestamp)
    assert got == (offset, want.key, want.value, want.timestamp), f"record {offset} differs"


def verify_recovered(log: PartitionLog, end: int) -> None:
    """The log holds exactly offsets [0, end), each readable where the index says."""
    assert log.log_start_offset == 0
    assert log.log_end_offset == end
    # One scan: dense offsets, every batch passes its CRC, content as written.
    offset = 0
    while offset < end:
        data = log.read(offset, 1 << 20)
        position = 0
        while position < len(data):
            header = parse_batch_header(data, position)
            assert header.base_offset == offset, f"expected a batch at {offset}: {header}"
            for record in decode_records(data, position, verify=True):
                assert record.offset == offset
                check_record(offset, record)
                offset += 1
            position += header.size
    # Every offset on its own: the rebuilt index finds the batch that holds it.
    for offset in range(end):
        data = log.read(offset, 1)
        header = parse_batch_header(data)
        assert header.base_offset <= offset < header.next_offset, (offset, header)
        (record,) = [r for r in decode_records(data, verify=True) if r.offset == offset]
        check_record(offset, record)
    assert log.read(end, 1 << 20) == b""


def reopen_and_append(directory: Path, end: int, last_size: int | None = None) -> None:
    """Recover ``directory``, expect the log to end at ``end``, and keep appending.

    ``last_size``: the size the last segment's file must have been cut to.
    """
    log = PartitionLog.open(directory, CONFIG)
    try:
        if last_size is not None:
            assert log.segments[-1].size == last_size
            assert log.segments[-1].log_path.stat().st_size == last_size
        verify_recovered(log, end)
        info = log.append([expected_record(o) for o in range(end, end + 2)])
        assert (info.base_offset, info.next_offset) == (end, end + 2)
    finally:
        log.close()
    log = PartitionLog.open(directory, CONFIG)
    try:
        verify_recovered(log, end + 2)
    finally:
        log.close()


# -- (a) truncation at every byte --------------------------------------------------------


@pytest.mark.parametrize("checkpoint", CHECKPOINTS)
def test_truncation_at_every_byte_of_the_last_three_batches(
    pristine: dict[str, Path], case_dirs: Iterator[Path], checkpoint: str
) -> None:
    source = pristine[checkpoint]
    last = log_files(source)[-1]
    tail = batches_in(last)[-3:]
    for cut in range(tail[0].position, tail[-1].end + 1):
        # The log must end at the last batch that is whole before the cut.
        kept = [b for b in tail if b.end <= cut]
        end_position = kept[-1].end if kept else tail[0].position
        end_offset = kept[-1].next_offset if kept else tail[0].base_offset
        folder = copy_of(source, case_dirs)
        os.truncate(folder / last.name, cut)
        try:
            reopen_and_append(folder, end_offset, end_position)
        except AssertionError as exc:
            raise AssertionError(f"checkpoint {checkpoint}, cut at byte {cut}: {exc}") from exc


def test_a_cut_tail_stays_cut_after_a_second_crash(
    pristine: dict[str, Path], case_dirs: Iterator[Path]
) -> None:
    source = pristine["none"]
    last = log_files(source)[-1]
    tail = batches_in(last)[-3:]
    for cut in (tail[1].position + 1, tail[2].position + 61, tail[2].end - 1):
        folder = copy_of(source, case_dirs)
        os.truncate(folder / last.name, cut)
        log = PartitionLog.open(folder, CONFIG)
        expected = max(b.end for b in tail if b.end <= cut)
        assert log.segments[-1].size == expected
        assert (folder / last.name).stat().st_size == expected
        log.abandon()
        # The cut is durable: a second recovery finds nothing more to cut.
        log = PartitionLog.open(folder, CONFIG)
        assert log.segments[-1].size == expected
        log.close()


# -- (b) bit flips in the last three batches ---------------------------------------------


def guarded_bytes(batch: Batch) -> list[int]:
    """Positions in the file of a batch's bytes that its framing or CRC covers."""
    skip = set(BASE_OFFSET_BYTES) | set(EPOCH_BYTES)
    return [batch.position + i for i in range(batch.size) if i not in skip]


def expect_refused(
    folder: Path, damaged: Batch, resume: Batch, *, last_good_offset: int | None = None
) -> None:
    """Opening ``folder`` for writing must refuse damage from ``damaged`` up to ``resume``
    (the first valid batch after it) and change no file."""
    before = snapshot(folder)
    with pytest.raises(CorruptRecordError) as raised:
        PartitionLog.open(folder, CONFIG)
    exc = raised.value
    check_error_names(exc, dataclasses.replace(damaged, path=folder / damaged.path.name))
    assert exc.damage is not None, str(exc)
    expected_last_good = damaged.base_offset - 1 if last_good_offset is None else last_good_offset
    assert exc.damage.last_good_offset == expected_last_good, str(exc)
    assert exc.damage.end_position == resume.position, str(exc)
    assert exc.damage.resume_offset == resume.base_offset, str(exc)
    message = str(exc)
    assert f"reading can resume at offset {resume.base_offset}" in message, message
    assert "headwater repair" in message, message
    assert snapshot(folder) == before, "a refused open changed files"


@pytest.mark.parametrize("checkpoint", CHECKPOINTS)
def test_bit_flips_in_the_tail_cut_a_torn_tail_and_refuse_damage_before_valid_batches(
    pristine: dict[str, Path], case_dirs: Iterator[Path], checkpoint: str
) -> None:
    seed = SEED + CHECKPOINTS.index(checkpoint)
    rng = random.Random(seed)
    source = pristine[checkpoint]
    last = log_files(source)[-1]
    tail = batches_in(last)[-3:]
    candidates = [p for b in tail for p in guarded_bytes(b)]
    outcomes = {"cut": 0, "refused": 0}
    for case in range(120):
        bits = [(rng.choice(candidates), rng.randrange(8)) for _ in range(rng.randint(1, 3))]
        damaged = [b for b in tail if any(b.position <= p < b.end for p, _ in bits)]
        first_damaged = damaged[0]
        # The first intact batch after the damage, if any: then it is no torn tail.
        resume = next(
            (b for b in tail if b.position > first_damaged.position and b not in damaged), None
        )
        folder = copy_of(source, case_dirs)
        flip(folder / last.name, bits)
        try:
            if resume is None:
                reopen_and_append(folder, first_damaged.base_offset, first_damaged.position)
                outcomes["cut"] += 1
            else:
                expect_refused(folder, first_damaged, resume)
                outcomes["refused"] += 1
        except AssertionError as exc:
            raise AssertionError(f"seed {seed}, case {case}, flipped {bits}: {exc}") from exc
    assert outcomes["cut"] > 10 and outcomes["refused"] > 10, outcomes


def test_flips_in_the_leader_epoch_are_harmless(
    pristine: dict[str, Path], case_dirs: Iterator[Path]
) -> None:
    # The epoch is outside the CRC by design (a broker rewrites it); it carries no record
    # data, so the batch stays valid and every record is intact.
    source = pristine["none"]
    last = log_files(source)[-1]
    tail = batches_in(last)[-3:]
    end = tail[-1].next_offset
    for batch in tail:
        folder = copy_of(source, case_dirs)
        flip(folder / last.name, [(batch.position + 13, 5)])
        reopen_and_append(folder, end)


@pytest.mark.parametrize("last", [False, True], ids=["followed", "last-batch"])
def test_a_lowered_base_offset_in_the_tail(
    pristine: dict[str, Path], case_dirs: Iterator[Path], last: bool
) -> None:
    source = pristine["none"]
    segment = log_files(source)[-1]
    batch, *after = batches_in(segment)[-1 if last else -2 :]
    lowest_set_bit = (batch.base_offset & -batch.base_offset).bit_length() - 1
    folder = copy_of(source, case_dirs)
    flip(folder / segment.name, [(batch.position + 7 - lowest_set_bit // 8, lowest_set_bit % 8)])
    if last:
        reopen_and_append(folder, batch.base_offset)
    else:
        expect_refused(folder, batch, after[0])


@pytest.mark.parametrize("far", [False, True], ids=["small-gap", "plus-2**40"])
@pytest.mark.parametrize("last", [False, True], ids=["followed", "last-batch"])
def test_a_raised_base_offset_in_the_tail(
    pristine: dict[str, Path], case_dirs: Iterator[Path], far: bool, last: bool
) -> None:
    source = pristine["none"]
    segment = log_files(source)[-1]
    batch, *after = batches_in(segment)[-1 if last else -2 :]
    # Set a clear bit: the lowest one (a gap of a few offsets) or bit 40 (far away).
    bit = 40 if far else (~batch.base_offset & (batch.base_offset + 1)).bit_length() - 1
    assert not batch.base_offset & (1 << bit)
    folder = copy_of(source, case_dirs)
    flip(folder / segment.name, [(batch.position + 7 - bit // 8, bit % 8)])
    # A batch that does not start where the previous one ended cannot be trusted in a
    # segment nothing has compacted: it is damage, a torn tail only if nothing follows.
    if last:
        reopen_and_append(folder, batch.base_offset)
    else:
        expect_refused(folder, batch, after[0])


# -- (c) damage in the middle of the log -------------------------------------------------


def expect_reported(folder: Path, damaged: Batch) -> tuple[str, CorruptRecordError]:
    """Open and read ``folder``; a CorruptRecordError must name ``damaged``.

    Returns where it was raised ("open" or "read") and the error.
    """
    try:
        log = PartitionLog.open(folder, CONFIG)
    except CorruptRecordError as exc:
        return "open", exc
    try:
        # Everything before the damaged batch reads back as written.
        for offset in range(damaged.base_offset):
            data = log.read(offset, 1)
            (record,) = [r for r in decode_records(data, verify=True) if r.offset == offset]
            check_record(offset, record)
        with pytest.raises(CorruptRecordError) as raised:
            log.read(damaged.base_offset, 1 << 20)
        return "read", raised.value
    finally:
        log.abandon()


def check_error_names(exc: CorruptRecordError, damaged: Batch) -> None:
    message = str(exc)
    assert exc.path == str(damaged.path), message
    assert exc.position == damaged.position, message
    assert str(damaged.path) in message and f"position {damaged.position}" in message, message


def middle_batches(folder: Path, *, include_last_segment: bool) -> list[Batch]:
    segments = log_files(folder)
    if not include_last_segment:
        segments = segments[:-1]
    return [b for segment in segments for b in batches_in(segment)]


def test_damage_in_an_earlier_segment_after_a_crash_is_refused_and_deletes_nothing(
    pristine: dict[str, Path], case_dirs: Iterator[Path]
) -> None:
    # No checkpoint: recovery verifies every segment, and only the last may be cut.
    rng = random.Random(SEED)
    source = pristine["none"]
    for case in range(60):
        folder = copy_of(source, case_dirs)
        damaged = rng.choice(middle_batches(folder, include_last_segment=False))
        bits = [(rng.choice(guarded_bytes(damaged)), rng.randrange(8))]
        flip(damaged.path, bits)
        before = snapshot(folder)
        context = f"seed {SEED}, case {case}, {damaged}, flipped {bits}"
        with pytest.raises(CorruptRecordError) as raised:
            PartitionLog.open(folder, CONFIG)
        check_error_names(raised.value, damaged)
        assert snapshot(folder) == before, f"{context}: a failed open changed files"
        # And again: the damage is not "repaired" by the first attempt.
        with pytest.raises(CorruptRecordError):
            PartitionLog.open(folder, CONFIG)
        assert snapshot(folder) == before, context


@pytest.mark.parametrize("state", ["clean", "earlier-segment"])
def test_damage_before_the_checkpoint_is_reported_and_deletes_nothing(
    pristine: dict[str, Path], case_dirs: Iterator[Path], state: str
) -> None:
    # Before the checkpoint segments are trusted at open; a read must then catch it. After
    # a clean close the checkpoint is the log end, so the last segment counts too.
    rng = random.Random(SEED + 1)
    source = pristine[state]
    where = {"open": 0, "read": 0}
    for case in range(60):
        folder = copy_of(source, case_dirs)
        if state == "clean":
            candidates = middle_batches(folder, include_last_segment=True)
        else:
            segment = read_checkpoint(folder).segment
            trusted = [p for p in log_files(folder) if int(p.stem) < segment]
            candidates = [b for p in trusted for b in batches_in(p)]
        damaged = rng.choice(candidates)
        bits = [(rng.choice(guarded_bytes(damaged)), rng.randrange(8))]
        flip(damaged.path, bits)
        before = snapshot(folder)
        context = f"seed {SEED + 1}, case {case}, {damaged}, flipped {bits}"
        try:
            stage, exc = expect_reported(folder, damaged)
            check_error_names(exc, damaged)
        except AssertionError as error:
            raise AssertionError(f"{context}: {error}") from error
        where[stage] += 1
        after = snapshot(folder)
        if state == "clean":
            # Opening consumes the clean-shutdown marker; nothing else may change.
            before.pop(CLEAN_SHUTDOWN_FILE)
            after.pop(CLEAN_SHUTDOWN_FILE, None)
            assert after == before, f"{context}: files changed"
        else:
            # Recovery may rewrite derived files (indexes, checkpoint), never a .log.
            logs = {n: v for n, v in before.items() if n.endswith(".log")}
            assert {n: v for n, v in after.items() if n.endswith(".log")} == logs, context
            assert set(before) <= set(after), f"{context}: files deleted"
    assert where["read"] > 0, where


def test_every_offset_of_a_damaged_batch_reads_as_corrupt(
    pristine: dict[str, Path], case_dirs: Iterator[Path]
) -> None:
    folder = copy_of(pristine["clean"], case_dirs)
    segment = log_files(folder)[1]
    damaged = next(b for b in batches_in(segment) if b.next_offset - b.base_offset >= 2)
    # last_offset_delta (bytes 23-26, covered by the CRC) loses its lowest set bit, so the
    # header claims fewer offsets than the batch holds.
    delta = damaged.next_offset - damaged.base_offset - 1
    lowest_set_bit = (delta & -delta).bit_length() - 1
    flip(segment, [(damaged.position + 26, lowest_set_bit)])
    log = PartitionLog.open(folder, CONFIG)
    try:
        for offset in range(damaged.base_offset, damaged.next_offset):
            with pytest.raises(CorruptRecordError):
                log.read(offset, 1 << 20)
    finally:
        log.abandon()
