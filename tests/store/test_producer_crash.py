"""Crash test: producer state survives ``kill -9``; a retried batch is still a duplicate.

A forked child appends idempotent batches (producer 42, sequences from where the log left
off) to a partition with tiny segments, so that rolls write producer snapshots, and
reports each batch once it is fsynced. The parent SIGKILLs it at a random moment,
reopens the log and checks, as a producer retrying would: the last batch in the log,
sent again, is refused as a duplicate naming its original offset; the sequences stored
are exactly 0..n with no gap and no repeat; and the next child goes on from there.
"""

from __future__ import annotations

import os
import random
import select
import signal
import struct
import time
import traceback
from pathlib import Path

import forking
import pytest

from headwater.store import (
    DuplicateSequenceError,
    NewRecord,
    OutOfOrderSequenceError,
    PartitionLog,
    TopicConfig,
    decode_records,
    encode_batch,
)

SEED = int(os.environ.get("HEADWATER_CRASH_SEED", "20261206"))
CYCLES = 25
PRODUCER = 42
_ACK = struct.Struct("<q")
TIMEOUT_S = 20.0


def batch_for(sequence: int) -> bytes:
    """The batch every child sends at ``sequence``: its size is a function of it."""
    count = 1 + sequence % 3
    records = [NewRecord(value=b"s%d" % (sequence + i)) for i in range(count)]
    return encode_batch(records, producer_id=PRODUCER, producer_epoch=0, base_sequence=sequence)


def stored_sequences(log: PartitionLog) -> list[int]:
    """The sequence each stored record was sent with (its value says)."""
    sequences: list[int] = []
    offset = log.log_start_offset
    while data := log.read(offset, 1 << 20):
        position = 0
        while position < len(data):
            records = decode_records(data, position)
            sequences.extend(int(r.value[1:]) for r in records if r.value is not None)
            offset = records[-1].offset + 1
            position += int.from_bytes(data[position + 8 : position + 12], "big") + 12
    return sequences


def _child(directory: Path, config: TopicConfig, fd: int) -> None:
    log = PartitionLog.open(directory, config)
    sequence = len(stored_sequences(log))
    while True:
        info = log.append_batch(batch_for(sequence))
        log.flush()
        sequence += 1 + sequence % 3
        os.write(fd, _ACK.pack(info.next_offset))


def _run_child(directory: Path, config: TopicConfig, fd: int) -> None:  # pragma: no cover
    try:
        _child(directory, config, fd)
    except BaseException:
        traceback.print_exc()
    finally:
        os._exit(1)


def _cycle(directory: Path, config: TopicConfig, acks_before_kill: int) -> int:
    read_fd, write_fd = os.pipe()
    pid = forking.fork()
    if pid == 0:  # pragma: no cover - the child
        os.close(read_fd)
        _run_child(directory, config, write_fd)
    os.close(write_fd)
    acked = 0
    buffer = b""
    deadline = time.monotonic() + TIMEOUT_S
    try:
        while len(buffer) // _ACK.size < acks_before_kill:
            assert time.monotonic() < deadline, "no progress from the child"
            ready, _, _ = select.select([read_fd], [], [], 0.5)
            if ready:
                chunk = os.read(read_fd, 4096)
                assert chunk, "the child died"
                buffer += chunk
        os.kill(pid, signal.SIGKILL)
    finally:
        os.waitpid(pid, 0)
        os.close(read_fd)
    if buffer:
        acked = _ACK.unpack_from(buffer, (len(buffer) // _ACK.size - 1) * _ACK.size)[0]
    return acked


@pytest.mark.slow
def test_duplicates_are_detected_after_kill_9(tmp_path: Path) -> None:
    rng = random.Random(SEED)
    config = TopicConfig(segment_bytes=rng.choice((1024, 2048)))
    snapshots_seen = 0
    for _ in range(CYCLES):
        acked = _cycle(tmp_path, config, rng.randint(1, 40))
        log = PartitionLog.open(tmp_path, config)
        try:
            assert log.log_end_offset >= acked
            sequences = stored_sequences(log)
            assert sequences == list(range(len(sequences)))
            snapshots_seen += any(p.suffix == ".snapshot" for p in tmp_path.iterdir())
            # The producer retries its last batch: refused, and named where it lies.
            last = log.read(log.log_end_offset - 1, 1 << 20)
            first_seq = int.from_bytes(last[53:57], "big")
            with pytest.raises(DuplicateSequenceError) as dup:
                log.append_batch(batch_for(first_seq))
            assert dup.value.base_offset == int.from_bytes(last[:8], "big")
            assert dup.value.last_offset == log.log_end_offset - 1
            # A batch that skips a sequence is out of order.
            with pytest.raises(OutOfOrderSequenceError):
                log.append_batch(batch_for(len(sequences) + 1))
        finally:
            log.close() if rng.random() < 0.3 else log.abandon()
    assert snapshots_seen
