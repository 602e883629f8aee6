"""Crash test: ``kill -9`` a process that appends and deletes records; the low watermark holds.

A child process appends batches to a partition and, after each, deletes the records
before an offset a little behind the end, saying on stdout which move it asks for
(``R``) and, once ``Store.delete_records`` has returned, the low watermark it got
(``A``). The parent kills it with SIGKILL after a random number of lines (the child runs
on meanwhile, so the kill lands anywhere: in an append, an fsync, the write or rename of
the log start file, a retention pass), reopens the data directory and checks that the
log starts at the last acknowledged low watermark or at the move under way, never
earlier and never elsewhere; that reads below it are out of range and reads from it
return dense offsets; and then the next child goes on from there.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from headwater.store import OffsetOutOfRangeError, open_store

SEED = int(os.environ.get("HEADWATER_CRASH_SEED", "20261206"))
CYCLES = 12

CHILD = """
import sys
import trio
from headwater.store import Durability, NewRecord, TopicConfig, open_store

async def main(path):
    config = TopicConfig(durability=Durability.BATCH, segment_bytes=2048, retention_ms=-1)
    async with open_store(path) as store:
        if not store.has_topic("t"):
            await store.create_topic("t", config)
        partition = store.partition("t", 0)
        i = 0
        while True:
            end = partition.log_end_offset
            await store.append("t", [NewRecord(value=b"%d" % (end + k)) for k in range(5)])
            target = partition.high_watermark - 2
            print("R", target, flush=True)
            low = (await store.delete_records("t", {0: target}))[0]
            print("A", low, flush=True)
            i += 1
            if i % 7 == 0:
                store.enforce_retention()

trio.run(main, sys.argv[1])
"""


def run_child(path: Path, lines: int) -> tuple[int, int | None]:
    """Run a child until it printed ``lines`` lines, kill -9 it; return the last low
    watermark it acknowledged (-1: none) and the move it asked for after that, if any."""
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None and child.stderr is not None
    seen = []
    try:
        for _ in range(lines):
            line = child.stdout.readline()
            if not line:
                raise AssertionError(f"the child stopped: {child.stderr.read()}")
            seen.append(line)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    # What it printed before the kill landed, read or not, is all it acknowledged.
    rest = child.stdout.read()
    seen.extend(rest.split("\n")[:-1])  # a last piece without its newline was cut
    child.stdout.close()
    child.stderr.close()
    acknowledged, requested = -1, None
    for line in seen:
        parts = line.split()
        if parts[0] == "R":
            requested = int(parts[1])
        else:
            acknowledged, requested = int(parts[1]), None
    return acknowledged, requested


@pytest.mark.slow
async def test_low_watermark_survives_kill_9(tmp_path: Path) -> None:
    rng = random.Random(SEED)
    path = tmp_path / "data"
    floor = 0
    for _ in range(CYCLES):
        acknowledged, requested = run_child(path, rng.randint(2, 40))
        async with open_store(path) as store:
            partition = store.partition("t", 0)
            start = partition.log_start_offset
            # The last acknowledged move, or the one under way when the kill landed
            # (never lower than where the previous cycle found it).
            allowed = {max(acknowledged, floor)}
            if requested is not None:
                allowed.add(max(requested, acknowledged, floor))
            assert start in allowed, (start, acknowledged, requested, floor)
            assert start <= partition.log_end_offset
            if start > 0:
                with pytest.raises(OffsetOutOfRangeError):
                    await partition.read_records(start - 1, 1000)
            records = await partition.read_records(start, 1 << 20)
            assert [r.offset for r in records] == list(range(start, start + len(records)))
            assert all(r.value == b"%d" % r.offset for r in records)
            floor = start
