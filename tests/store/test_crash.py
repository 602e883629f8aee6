"""Crash test: kill -9 a process appending under ``durability=always``, then recover.

A forked child opens the log, appends batches whose records are a pure function of their
offset, and after each acknowledgement (the append returned, so its fsync is done) writes
the batch's next offset down a pipe. The parent SIGKILLs it at a random moment, reopens
the log itself and checks that every acknowledged record is there, byte for byte, that
offsets are dense from 0, that every batch passes its CRC and that the rebuilt index finds
offsets; then the next child appends after the recovered end. Segments are a few KB, so
kills land in appends, fsyncs, rolls, index writes, checkpoint writes and recovery itself.

Forking (instead of starting a fresh interpreter per cycle) keeps a cycle to a few
fsyncs. The seed is fixed so a failure can be replayed; set ``HEADWATER_CRASH_SEED`` to
explore others. Kill timing still depends on the scheduler, which is the point. The suite
runs 60 cycles (about 10 s on a busy 2-core machine); set ``HEADWATER_CRASH_CYCLES`` for a
longer run (``HEADWATER_CRASH_CYCLES=1000 pytest -s tests/store/test_crash.py``).
"""

from __future__ import annotations

import hashlib
import os
import random
import select
import signal
import struct
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import forking
import pytest
import trio

from headwater.store import (
    Compression,
    Durability,
    NewRecord,
    Partition,
    PartitionLog,
    TopicConfig,
    decode_records,
    parse_batch_header,
)

SEED = int(os.environ.get("HEADWATER_CRASH_SEED", "20240607"))
CYCLES = int(os.environ.get("HEADWATER_CRASH_CYCLES", "60"))
#: A child that is never killed stops after this many appends (and fails the test).
CHILD_MAX_APPENDS = 5_000
CYCLE_TIMEOUT_S = 20.0
BATCH_SIZES = (1, 1, 1, 2, 3, 5, 8, 13, 40)
BASE_TIMESTAMP = 1_600_000_000_000

# Pipe messages: a tag byte and an int64. S: log end seen at open; A: acknowledged next
# offset; E: a traceback of the given length follows.
_MESSAGE = struct.Struct("<cq")


def expected_record(offset: int) -> NewRecord:
    """The record every child writes at ``offset``: varied sizes, keys and headers."""
    digest = hashlib.blake2b(offset.to_bytes(8, "big"), digest_size=16).hexdigest().encode()
    repeat = 150 if offset % 211 == 0 else offset % 7  # now and then a batch of ~5 KB
    value = b"%d:" % offset + digest * repeat
    key = None if offset % 5 == 0 else b"k%d" % (offset % 97)
    headers = (("h", str(offset).encode()), ("null", None)) if offset % 11 == 0 else ()
    return NewRecord(value=value, key=key, timestamp=BASE_TIMESTAMP + offset, headers=headers)


def records_for(base: int, count: int) -> list[NewRecord]:
    return [expected_record(o) for o in range(base, base + count)]


def topic_config(rng: random.Random) -> TopicConfig:
    return TopicConfig(
        durability=Durability.ALWAYS,
        segment_bytes=rng.choice((1024, 2048, 4096, 8192)),
        index_interval_bytes=rng.choice((0, 256, 1024, 4096)),
    )


# -- the child ---------------------------------------------------------------------------


def _send(fd: int, tag: bytes, value: int, payload: bytes = b"") -> None:
    data = _MESSAGE.pack(tag, value) + payload
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _child(directory: Path, config: TopicConfig, seed: int, use_partition: bool, fd: int) -> None:
    rng = random.Random(seed)

    def next_batch(end: int) -> tuple[list[NewRecord], Compression]:
        codec = Compression.GZIP if rng.random() < 0.2 else Compression.NONE
        return records_for(end, rng.choice(BATCH_SIZES)), codec

    log = PartitionLog.open(directory, config)
    _send(fd, b"S", log.log_end_offset)
    if not use_partition:
        for _ in range(CHILD_MAX_APPENDS):
            end = log.log_end_offset
            records, codec = next_batch(end)
            info = log.append(records, compression=codec)
            log.flush()
            assert info.base_offset == end, (info, end)
            _send(fd, b"A", info.next_offset)
        return

    async def append_through_partition() -> None:
        # The async face: under `always` an append returns only after its own fsync.
        partition = Partition("crash", 0, log)
        for _ in range(CHILD_MAX_APPENDS):
            end = partition.log_end_offset
            records, codec = next_batch(end)
            info = await partition.append(records, compression=codec)
            assert info.base_offset == end, (info, end)
            assert partition.high_watermark >= info.next_offset
            _send(fd, b"A", info.next_offset)

    trio.run(append_through_partition)


def _run_child(
    directory: Path, config: TopicConfig, seed: int, use_partition: bool, fd: int
) -> None:
    """Body of the forked child: never returns into pytest."""
    code = 3  # appended CHILD_MAX_APPENDS times without being killed
    try:
        _child(directory, config, seed, use_partition, fd)
    except BaseException:
        text = traceback.format_exc().encode()
        try:
            _send(fd, b"E", len(text), text)
        finally:
            os._exit(1)
    os._exit(code)


# -- the parent --------------------------------------------------------------------------


@dataclass
class CycleResult:
    started_at: int | None = None  # the log end the child saw after its recovery
    acked: list[int] = field(default_factory=list)
    error: str | None = None


def _parse(buffer: bytearray, result: CycleResult) -> None:
    while len(buffer) >= _MESSAGE.size:
        tag, value = _MESSAGE.unpack_from(buffer)
        if tag == b"E":
            if len(buffer) < _MESSAGE.size + value:
                return
            result.error = buffer[_MESSAGE.size : _MESSAGE.size + value].decode()
            del buffer[: _MESSAGE.size + value]
            continue
        if tag == b"S":
            result.started_at = value
        elif tag == b"A":
            result.acked.append(value)
        else:
            raise AssertionError(f"garbled message from the child: {bytes(buffer[:9])!r}")
        del buffer[: _MESSAGE.size]


def run_cycle(
    directory: Path,
    config: TopicConfig,
    rng: random.Random,
    *,
    kill_after_acks: int | None,
    kill_delay_s: float,
) -> CycleResult:
    """Fork a child appending to ``directory`` and SIGKILL it as the plan says."""
    read_fd, write_fd = os.pipe()
    child_seed = rng.getrandbits(32)
    use_partition = rng.random() < 0.5
    pid = forking.fork()
    if pid == 0:  # pragma: no cover - the child
        os.close(read_fd)
        _run_child(directory, config, child_seed, use_partition, write_fd)
    os.close(write_fd)
    result = CycleResult()
    buffer = bytearray()
    started = time.monotonic()
    deadline = started + CYCLE_TIMEOUT_S
    exited = False
    try:
        if kill_after_acks is not None:
            while len(result.acked) < kill_after_acks and result.error is None:
                if time.monotonic() > deadline:
                    raise AssertionError(f"no progress from the child in {CYCLE_TIMEOUT_S} s")
                ready, _, _ = select.select([read_fd], [], [], 0.5)
                if ready:
                    chunk = os.read(read_fd, 65536)
                    if not chunk:
                        exited = True
                        break
                    buffer += chunk
                    _parse(buffer, result)
            time.sleep(kill_delay_s)
        else:
            time.sleep(max(0.0, started + kill_delay_s - time.monotonic()))
    finally:
        os.kill(pid, signal.SIGKILL)
        _, status = os.waitpid(pid, 0)
    # The child is gone: whatever it wrote before dying is in the pipe.
    while chunk := os.read(read_fd, 65536):
        buffer += chunk
    os.close(read_fd)
    _parse(buffer, result)
    if result.error is not None:
        raise AssertionError(f"the child failed:\n{result.error}")
    killed = os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
    assert killed, f"the child ended before the kill (closed its pipe: {exited}): {status:#x}"
    assert not buffer, f"a partial message is left in the pipe: {bytes(buffer)!r}"
    return result


def verify_log(
    log: PartitionLog, acked_end: int, rng: random.Random, start_offset: int = 0
) -> None:
    """Check what a reopened log holds against the records every child wrote.

    Records are checked from the batch holding ``start_offset`` to the end; index lookups
    are probed across the whole log.
    """
    assert log.log_start_offset == 0
    end = log.log_end_offset
    assert end >= acked_end, f"acknowledged records lost: log ends at {end}, acked {acked_end}"
    start_offset = min(start_offset, end)
    next_offset = -1
    while next_offset < end:
        data = log.read(max(next_offset, start_offset), rng.choice((1, 4096, 1 << 20)))
        if not data and start_offset == end:
            break
        assert data, f"read({next_offset}) returned nothing below the log end {end}"
        position = 0
        while position < len(data):
            header = parse_batch_header(data, position)
            # verify=True: the CRC is checked again here, independently of read().
            records = decode_records(data, position, verify=True)
            if next_offset < 0:  # the first batch may begin before start_offset
                assert header.base_offset <= start_offset < header.next_offset, header
                next_offset = header.base_offset
            assert header.base_offset == next_offset, (
                f"batch at {header.base_offset}, expected {next_offset}: offsets not dense"
            )
            assert len(records) == header.last_offset_delta + 1
            for record in records:
                assert record.offset == next_offset, (record.offset, next_offset)
                want = expected_record(next_offset)
                got = (record.key, record.value, record.timestamp, record.headers)
                assert got == (want.key, want.value, want.timestamp, tuple(want.headers)), (
                    f"record {next_offset} differs from what was written"
                )
                next_offset += 1
            position += header.size
    assert max(next_offset, start_offset) == end
    # The rebuilt (or adopted) indexes find offsets anywhere in the log.
    for offset in rng.sample(range(end), min(end, 25)):
        data = log.read(offset, 1)
        header = parse_batch_header(data)
        assert header.base_offset <= offset < header.next_offset, (offset, header)
    assert log.read(end, 1 << 20) == b""


@pytest.mark.slow
def test_sigkill_under_always_never_loses_an_acknowledged_record(tmp_path: Path) -> None:
    rng = random.Random(SEED)
    directory = tmp_path / "crash-0"
    acked_end = 0  # every offset below this was acknowledged by some child
    stats = {"kills before any ack": 0, "child recoveries unverified by the parent": 0}
    verified_since_last_child = True
    verified_end = 0  # records below this were checked once; a full pass rechecks them
    for cycle in range(CYCLES):
        config = topic_config(rng)
        # Either a delay from the fork (which may land in the child's own recovery), or
        # a number of acknowledgements and then a delay shorter than one fsync or so.
        kill_after_acks: int | None = None
        if rng.random() < 0.3:
            kill_delay_s = rng.uniform(0.0, 0.02)
        else:
            kill_after_acks, kill_delay_s = rng.randint(0, 10), rng.uniform(0.0, 0.005)
        context = (
            f"seed {SEED}, cycle {cycle}, kill after {kill_after_acks} acks "
            f"+ {kill_delay_s * 1000:.2f} ms, {config}"
        )
        result = run_cycle(
            directory, config, rng, kill_after_acks=kill_after_acks, kill_delay_s=kill_delay_s
        )
        if result.started_at is not None:
            # The child's own recovery kept every acknowledged record too.
            assert result.started_at >= acked_end, (
                f"{context}: the child reopened the log at {result.started_at}, "
                f"but {acked_end} records were acknowledged"
            )
            if not verified_since_last_child:
                stats["child recoveries unverified by the parent"] += 1
        if not result.acked:
            stats["kills before any ack"] += 1
        for earlier, later in zip([acked_end, *result.acked], result.acked, strict=False):
            assert later > earlier, f"{context}: acknowledgements went backwards"
        if result.acked:
            acked_end = result.acked[-1]
        # Now and then leave the crashed folder to the next child's recovery unchecked.
        verified_since_last_child = rng.random() < 0.8 or cycle == CYCLES - 1
        if verified_since_last_child:
            log = PartitionLog.open(directory, config)
            full = cycle % 20 == 0 or cycle == CYCLES - 1
            try:
                verify_log(log, acked_end, rng, 0 if full else verified_end)
                verified_end = log.log_end_offset
            except AssertionError as exc:
                raise AssertionError(f"{context}: {exc}") from exc
            finally:
                # A clean close sometimes, else leave it as a crash would (after the
                # recovery that opening just did).
                if rng.random() < 0.3:
                    log.close()
                else:
                    log.abandon()
    # The test did what it claims: many acknowledged appends, across many rolled segments.
    assert acked_end > 500, stats
    segments = sorted(p for p in directory.iterdir() if p.suffix == ".log")
    assert len(segments) > 20, f"only {len(segments)} segments: rolls were not exercised"
    print(
        f"crash test: seed {SEED}, {acked_end} records acknowledged, {len(segments)} "
        f"segments, {stats}"
    )
