"""Crash test with bit rot: kill -9 a writer, flip bits, reopen; no acknowledged record is
lost and no corrupt record is returned.

Each cycle forks a child that opens the log (recovering it), appends batches whose records
are a pure function of their offset, fsyncs each (``flush``) and then writes the next
offset down a pipe: that is the acknowledgement. The parent SIGKILLs it at a random
moment, copies the folder, and flips one to three random bits in the copy, each in one of
three regions:

* *before* the last fsynced region: batches acknowledged before the last flush;
* *inside* it: the batches the last acknowledged flush made durable;
* *after* it: bytes written but never acknowledged (a torn tail), when there are any.

Where the kill lands is chance, so a cycle may leave no unacknowledged bytes. Every
third cycle therefore ends on purpose with a batch appended (in the page cache, which a
kill -9 keeps) but neither fsynced nor acknowledged, and a cycle's first flip goes to the
regions in turn, so that each run flips bits in all three however the machine's load
shifts the timing.

Flips avoid the twelve bytes of each batch header that the Kafka format leaves outside
the CRC (base offset, leader epoch); the log checks base offsets against their
neighbours, and ``test_tail_damage.py`` flips them on purpose. The parent then opens the
copy as a user would: for writing, and read-only when that refuses the damage. It reads
every offset, stepping past each damaged range the errors name, and counts

* acknowledged records lost: acknowledged offsets neither returned intact nor inside a
  damaged range that was reported (must be 0);
* corrupt records returned: records whose key, value, timestamp or offset differ from
  what was written (must be 0).

Then it repairs the copy, which must reopen for writing with the same result. The
unflipped folder goes to the next cycle's writer, so the log grows over rolled segments
(a fresh log every ``CYCLES_PER_LOG`` cycles keeps a cycle's copying short).

The default run takes a few seconds. The long one runs when ``HEADWATER_FLIP_CYCLES`` is
set (``HEADWATER_FLIP_CYCLES=500 pytest -s -m slow tests/store/test_crash_flips.py``) and
prints the figures.
"""

from __future__ import annotations

import os
import random
import select
import shutil
import signal
import struct
import tempfile
import time
import traceback
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import forking
import pytest

from headwater.store import (
    CorruptRecordError,
    DamagedRange,
    NewRecord,
    PartitionLog,
    TopicConfig,
    decode_records,
    parse_batch_header,
    repair_partition,
)

SEED = int(os.environ.get("HEADWATER_FLIP_SEED", "777"))
QUICK_CYCLES = 12
SLOW_CYCLES = int(os.environ.get("HEADWATER_FLIP_CYCLES", "0"))
CYCLES_PER_LOG = 50
CYCLE_TIMEOUT_S = 20.0
CHILD_MAX_APPENDS = 5_000
BASE_TIMESTAMP = 1_650_000_000_000
#: Bytes of a batch header outside its CRC: base offset and partition leader epoch.
UNGUARDED = frozenset(range(8)) | frozenset(range(12, 16))
_MESSAGE = struct.Struct("<cq")


def expected_record(offset: int) -> NewRecord:
    value = b"%d:" % offset + bytes([97 + offset % 26]) * (offset * 37 % 300)
    key = None if offset % 4 == 0 else b"key-%d" % (offset % 13)
    return NewRecord(value=value, key=key, timestamp=BASE_TIMESTAMP + offset)


def config_for(rng: random.Random) -> TopicConfig:
    return TopicConfig(
        segment_bytes=rng.choice((1024, 4096, 16384)),
        index_interval_bytes=rng.choice((0, 512, 4096)),
    )


# -- the child ---------------------------------------------------------------------------


def _send(fd: int, tag: bytes, value: int, payload: bytes = b"") -> None:
    view = memoryview(_MESSAGE.pack(tag, value) + payload)
    while view:
        view = view[os.write(fd, view) :]


def _child(directory: Path, config: TopicConfig, seed: int, fd: int, torn_after: int) -> None:
    """Append, fsync and acknowledge batches; after ``torn_after`` acknowledgements (when
    positive), append one more batch without fsync or acknowledgement, say so, and wait to
    be killed."""
    rng = random.Random(seed)
    log = PartitionLog.open(directory, config)
    for count in range(1, CHILD_MAX_APPENDS + 1):
        end = log.log_end_offset
        log.append([expected_record(o) for o in range(end, end + rng.choice((1, 2, 3, 8)))])
        log.flush()
        _send(fd, b"A", log.log_end_offset)
        if count == torn_after:
            end = log.log_end_offset
            log.append([expected_record(o) for o in range(end, end + rng.choice((1, 2, 3, 8)))])
            _send(fd, b"T", log.log_end_offset)
            signal.pause()


def _run_child(directory: Path, config: TopicConfig, seed: int, fd: int, torn_after: int) -> None:
    try:
        _child(directory, config, seed, fd, torn_after)
    except BaseException:
        text = traceback.format_exc().encode()
        try:
            _send(fd, b"E", len(text), text)
        finally:
            os._exit(1)
    os._exit(3)


def run_writer(
    directory: Path, config: TopicConfig, rng: random.Random, *, torn: bool = False
) -> list[int]:
    """Fork a writer, SIGKILL it after a few acknowledgements; return what it acknowledged.

    With ``torn``, the writer is killed once it has written an unacknowledged batch after
    them; otherwise at a random moment.
    """
    read_fd, write_fd = os.pipe()
    seed = rng.getrandbits(32)
    want = rng.randint(1, 25)
    pid = forking.fork()
    if pid == 0:  # pragma: no cover - the child
        os.close(read_fd)
        _run_child(directory, config, seed, write_fd, want if torn else 0)
    os.close(write_fd)
    acked: list[int] = []
    tails: list[int] = []
    buffer = bytearray()
    deadline = time.monotonic() + CYCLE_TIMEOUT_S
    try:
        while len(acked) < want or (torn and not tails):
            assert time.monotonic() < deadline, "no progress from the writer"
            ready, _, _ = select.select([read_fd], [], [], 0.5)
            if ready:
                chunk = os.read(read_fd, 65536)
                if not chunk:
                    break
                buffer += chunk
                _parse(buffer, acked, tails)
        if not torn:
            time.sleep(rng.uniform(0.0, 0.003))
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    while chunk := os.read(read_fd, 65536):
        buffer += chunk
    os.close(read_fd)
    _parse(buffer, acked, tails)
    return acked


def _parse(buffer: bytearray, acked: list[int], tails: list[int]) -> None:
    while len(buffer) >= _MESSAGE.size:
        tag, value = _MESSAGE.unpack_from(buffer)
        if tag == b"E":
            raise AssertionError(f"the writer failed:\n{bytes(buffer[_MESSAGE.size :]).decode()}")
        assert tag in (b"A", b"T"), bytes(buffer[:9])
        (acked if tag == b"A" else tails).append(value)
        del buffer[: _MESSAGE.size]


# -- flipping ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Batch:
    path: Path
    position: int
    size: int
    base_offset: int
    next_offset: int


def batches(directory: Path) -> tuple[list[Batch], list[tuple[Path, int, int]]]:
    """Whole batches in log order, and the bytes after the last whole batch of each file."""
    found: list[Batch] = []
    rest: list[tuple[Path, int, int]] = []
    for path in sorted(directory.glob("*.log")):
        data = path.read_bytes()
        position = 0
        while position < len(data):
            try:
                header = parse_batch_header(data, position)
            except CorruptRecordError:
                break
            found.append(Batch(path, position, header.size, header.base_offset, header.next_offset))
            position += header.size
        if position < len(data):
            rest.append((path, position, len(data)))
    return found, rest


@dataclass
class Figures:
    cycles: int = 0
    flips: int = 0
    by_region: dict[str, int] = field(
        default_factory=lambda: {"before": 0, "inside": 0, "after": 0}
    )
    acknowledged: int = 0
    lost: int = 0
    corrupt: int = 0
    refused_opens: int = 0
    damaged_ranges: int = 0
    repairs: int = 0


REGIONS = ("before", "inside", "after")


def choose_flips(
    directory: Path,
    acked_before: int,
    acked_end: int,
    rng: random.Random,
    figures: Figures,
    *,
    first: str,
) -> list[tuple[Path, int, int]]:
    """Pick (file, byte, bit) flips in the regions the module docstring names: the first
    in region ``first`` when it has bytes, the others in any."""
    whole, rest = batches(directory)
    regions: dict[str, list[tuple[Path, int, int]]] = {"before": [], "inside": [], "after": []}
    for batch in whole:
        if batch.next_offset <= acked_before:
            region = "before"
        elif batch.next_offset <= acked_end:
            region = "inside"
        else:
            region = "after"
        regions[region].append((batch.path, batch.position, batch.position + batch.size))
    regions["after"] += rest
    available = [name for name, spans in regions.items() if spans]
    flips = []
    for count in range(rng.randint(1, 3)):
        name = first if count == 0 and first in available else rng.choice(available)
        path, start, end = rng.choice(regions[name])
        whole_batch = name != "after" or (path, start, end) not in rest
        while True:
            byte = rng.randrange(start, end)
            if not (whole_batch and byte - start in UNGUARDED):
                break
        flips.append((path, byte, rng.randrange(8)))
        figures.by_region[name] += 1
    return flips


def apply_flips(copy: Path, flips: list[tuple[Path, int, int]]) -> None:
    for path, byte, bit in flips:
        target = copy / path.name
        data = bytearray(target.read_bytes())
        data[byte] ^= 1 << bit
        target.write_bytes(data)


# -- reading back ------------------------------------------------------------------------


def read_everything(log: PartitionLog) -> tuple[dict[int, bool], list[DamagedRange]]:
    """Read every offset, stepping past damage: {offset: intact?} and the ranges reported."""
    returned: dict[int, bool] = {}
    reported: list[DamagedRange] = []
    offset = log.log_start_offset
    while offset < log.log_end_offset:
        try:
            data = log.read(offset, 1 << 16)
        except CorruptRecordError as exc:
            damage = exc.damage
            assert damage is not None and damage.resume_offset is not None, str(exc)
            assert damage.resume_offset > offset, str(exc)
            reported.append(damage)
            offset = damage.resume_offset
            continue
        assert data, f"nothing read at {offset} below the log end {log.log_end_offset}"
        position = 0
        while position < len(data):
            header = parse_batch_header(data, position)
            for record in decode_records(data, position, verify=True):
                if record.offset < offset:
                    continue
                want = expected_record(record.offset)
                got = (record.key, record.value, record.timestamp)
                returned[record.offset] = got == (want.key, want.value, want.timestamp)
            position += header.size
            offset = max(offset, header.next_offset)
    return returned, reported


def inside(offset: int, ranges: list[DamagedRange]) -> bool:
    return any(
        d.last_good_offset < offset and (d.resume_offset is None or offset < d.resume_offset)
        for d in ranges
    )


def check_copy(copy: Path, config: TopicConfig, acked_end: int, figures: Figures) -> None:
    reported: list[DamagedRange] = []
    try:
        log = PartitionLog.open(copy, config)
    except CorruptRecordError as exc:
        assert exc.damage is not None, f"a refusal names no damaged range: {exc}"
        figures.refused_opens += 1
        reported.append(exc.damage)
        log = PartitionLog.open(copy, config, read_only=True)
    try:
        returned, found = read_everything(log)
    finally:
        log.abandon()
    reported += found
    figures.damaged_ranges += len({(d.path, d.position) for d in reported})
    figures.corrupt += sum(1 for intact in returned.values() if not intact)
    figures.lost += sum(
        1 for o in range(acked_end) if not returned.get(o) and not inside(o, reported)
    )

    # Repair: afterwards the log opens for writing, and what was not moved aside is intact.
    report = repair_partition(copy, config, apply=True)
    figures.repairs += bool(report.actions)
    quarantined = [a.damage for a in report.actions]
    log = PartitionLog.open(copy, config)
    try:
        returned, found = read_everything(log)
    finally:
        log.close()
    assert not found, f"damage left after repair: {found}"
    assert all(returned.values()), "a corrupt record after repair"
    missing = [o for o in range(acked_end) if not returned.get(o) and not inside(o, quarantined)]
    assert not missing, f"lost by repair: {missing[:10]}, moved aside: {quarantined}"


# -- the test ----------------------------------------------------------------------------


def run_cycles(root: Path, cycles: int, seed: int) -> Figures:
    rng = random.Random(seed)
    figures = Figures()
    acked_end = 0
    for cycle in range(cycles):
        directory = root / f"log-{cycle // CYCLES_PER_LOG}"
        if cycle % CYCLES_PER_LOG == 0:
            shutil.rmtree(root / f"log-{cycle // CYCLES_PER_LOG - 1}", ignore_errors=True)
            figures.acknowledged += acked_end
            acked_end = 0
        config = config_for(rng)
        region = REGIONS[cycle % len(REGIONS)]
        acked = run_writer(directory, config, rng, torn=region == "after")
        acked_before = acked[-2] if len(acked) >= 2 else acked_end
        acked_end = acked[-1] if acked else acked_end
        copy = root / f"copy-{cycle}"
        shutil.copytree(directory, copy)
        flips = choose_flips(directory, acked_before, acked_end, rng, figures, first=region)
        apply_flips(copy, flips)
        context = f"seed {seed}, cycle {cycle}, {config}, acked {acked_end}, flips {flips}"
        lost, corrupt = figures.lost, figures.corrupt
        try:
            check_copy(copy, config, acked_end, figures)
        except AssertionError as exc:
            raise AssertionError(f"{context}: {exc}") from exc
        assert (figures.lost, figures.corrupt) == (lost, corrupt), f"{context}: {figures}"
        figures.cycles += 1
        figures.flips += len(flips)
        shutil.rmtree(copy)
    figures.acknowledged += acked_end
    return figures


@pytest.fixture
def scratch(tmp_path: Path) -> Iterator[Path]:
    """A folder on a tmpfs when there is one: this is about what recovery decides after a
    kill -9 (which keeps the page cache), not about fsync, and a cycle does many opens."""
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK):
        folder = Path(tempfile.mkdtemp(prefix="headwater-flips-", dir=shm))
        yield folder
        shutil.rmtree(folder, ignore_errors=True)
    else:
        yield tmp_path


def test_kill_and_bit_flips_lose_no_acknowledged_record(scratch: Path) -> None:
    figures = run_cycles(scratch, QUICK_CYCLES, SEED)
    assert figures.lost == 0 and figures.corrupt == 0, figures
    assert figures.acknowledged > 50 and all(figures.by_region.values()), figures


@pytest.mark.slow
@pytest.mark.skipif(not SLOW_CYCLES, reason="set HEADWATER_FLIP_CYCLES=N for the long run")
def test_many_kill_and_bit_flip_cycles(scratch: Path) -> None:
    figures = run_cycles(scratch, SLOW_CYCLES, SEED + 1)
    print(
        f"crash + flips: seed {SEED + 1}, {figures.cycles} cycles, {figures.flips} flips "
        f"{figures.by_region}, {figures.acknowledged} records acknowledged, "
        f"{figures.refused_opens} opens refused, {figures.damaged_ranges} damaged ranges "
        f"reported, {figures.repairs} repairs; acknowledged records lost: {figures.lost}, "
        f"corrupt records returned: {figures.corrupt}"
    )
    assert figures.lost == 0 and figures.corrupt == 0, figures
