"""Throughput and recovery figures for the log (store/).

Prints, for 100-byte JSON values in batches of 1,000 records on one partition:

* append records/s under each durability policy (through the async Partition API, with
  one writer and with several concurrent writers, whose appends share fsyncs under
  ``batch``);
* read records/s (read whole batches and decode them to key/value/timestamp objects);
* consume records/s through the async API with a reader that keeps up with a writer;
* reopen time after ``kill -9`` of a process that appended 10,000,000 records;
* peak RSS of this process and of the killed writer.

Usage: ``python bench/store_bench.py [--records N] [--reopen-records N] [--dir DIR]``.
"""

from __future__ import annotations

import argparse
import os
import random
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import anyio
import orjson

from headwater.store import (
    Durability,
    NewRecord,
    PartitionLog,
    TopicConfig,
    open_store,
    records_from,
)

BATCH = 1_000


def make_values(count: int) -> list[bytes]:
    """Return ``count`` distinct JSON values of exactly 100 bytes."""
    rng = random.Random(7)
    out = []
    for i in range(count):
        event = {"user": f"u{rng.randrange(10_000)}", "page": f"/p/{rng.randrange(100)}", "i": i}
        raw = orjson.dumps(event)
        pad = 100 - len(raw) - len(',"pad":""')
        event["pad"] = "x" * pad
        value = orjson.dumps(event)
        assert len(value) == 100, len(value)
        out.append(value)
    return out


def make_batches(total: int) -> list[list[NewRecord]]:
    """Return ``total // BATCH`` batches; four distinct ones, repeated, to keep memory flat."""
    values = make_values(BATCH * 4)
    distinct = [
        [NewRecord(value=v) for v in values[start : start + BATCH]]
        for start in range(0, BATCH * 4, BATCH)
    ]
    return [distinct[b % 4] for b in range(total // BATCH)]


async def bench_append(root: Path, durability: Durability, total: int, writers: int) -> float:
    batches = make_batches(total)
    folder = root / f"append-{durability}-{writers}"
    async with open_store(folder) as store:
        await store.create_topic("bench", TopicConfig(durability=durability))
        partition = store.partition("bench", 0)
        queue = iter(batches)

        async def writer() -> None:
            for batch in queue:
                await partition.append(batch)

        start = time.perf_counter()
        async with anyio.create_task_group() as tg:
            for _ in range(writers):
                tg.start_soon(writer)
        elapsed = time.perf_counter() - start
        assert partition.high_watermark == total
    shutil.rmtree(folder)
    return total / elapsed


def bench_read(root: Path, total: int) -> tuple[float, float]:
    folder = root / "read"
    log = PartitionLog.open(folder, TopicConfig(durability=Durability.NEVER))
    for batch in make_batches(total):
        log.append(batch)
    log.flush()
    start = time.perf_counter()
    offset = 0
    count = 0
    while offset < log.log_end_offset:
        data = log.read(offset, 1 << 20)
        records = records_from(data, offset)
        count += len(records)
        offset = records[-1].offset + 1
    elapsed = time.perf_counter() - start
    assert count == total
    read_rate = total / elapsed

    start = time.perf_counter()
    offset = 0
    while offset < log.log_end_offset:
        data = log.read(offset, 1 << 20)
        offset += len(data) and _last_offset(data) + 1 - offset
    raw_rate = total / (time.perf_counter() - start)
    log.close()
    shutil.rmtree(folder)
    return read_rate, raw_rate


def _last_offset(data: bytes) -> int:
    position = 0
    last = -1
    while position < len(data):
        base = int.from_bytes(data[position : position + 8], "big")
        length = int.from_bytes(data[position + 8 : position + 12], "big")
        delta = int.from_bytes(data[position + 23 : position + 27], "big")
        last = base + delta
        position += length + 12
    return last


async def bench_consume(root: Path, total: int) -> float:
    batches = make_batches(total)
    folder = root / "consume"
    async with open_store(folder) as store:
        await store.create_topic("bench", TopicConfig(durability=Durability.NEVER))
        partition = store.partition("bench", 0)
        consumed = 0
        start = time.perf_counter()

        async def reader() -> None:
            nonlocal consumed
            offset = 0
            while offset < total:
                await partition.wait_for(offset)
                records = await partition.read_records(offset, 1 << 20)
                consumed += len(records)
                offset = records[-1].offset + 1

        async with anyio.create_task_group() as tg:
            tg.start_soon(reader)
            for batch in batches:
                await partition.append(batch)
                await anyio.lowlevel.checkpoint()
        elapsed = time.perf_counter() - start
        assert consumed == total
    shutil.rmtree(folder)
    return total / elapsed


_WRITER = """
import sys, anyio
from headwater.store import open_store, TopicConfig, Durability, NewRecord
sys.path.insert(0, {bench!r})
from store_bench import make_batches

async def main():
    async with open_store({folder!r}) as store:
        await store.create_topic("bench", TopicConfig(durability=Durability.BATCH))
        partition = store.partition("bench", 0)
        batches = make_batches(4_000)
        written = 0
        queue = iter(range({total} // 1000))

        async def writer():
            nonlocal written
            for i in queue:
                await partition.append(batches[i % len(batches)])
                written += 1000

        async with anyio.create_task_group() as tg:
            for _ in range(4):
                tg.start_soon(writer)
        print(written, flush=True)
        await anyio.sleep(3600)

anyio.run(main, backend="trio")
"""


def bench_reopen(root: Path, total: int) -> tuple[float, int, float]:
    folder = root / "reopen"
    script = _WRITER.format(bench=str(Path(__file__).parent), folder=str(folder), total=total)
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None
    written = int(child.stdout.readline())
    child_rss = _peak_rss_mb(child.pid)
    child.send_signal(signal.SIGKILL)
    child.wait()
    start = time.perf_counter()
    log = PartitionLog.open(folder / "bench" / "0", TopicConfig(durability=Durability.BATCH))
    elapsed = time.perf_counter() - start
    assert log.log_end_offset == written == total, (log.log_end_offset, written)
    log.close()
    shutil.rmtree(folder)
    return elapsed, written, child_rss


def _peak_rss_mb(pid: int) -> float:
    """Peak resident set size of a live process, from /proc (VmHWM)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=2_000_000)
    parser.add_argument("--reopen-records", type=int, default=10_000_000)
    parser.add_argument(
        "--dir", type=Path, default=None, help="where to write (default: a temp dir)"
    )
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="hw-bench-", dir=args.dir))
    try:
        print(
            f"store bench: {args.records:,} records of 100 bytes, batches of {BATCH:,}, in {root}"
        )
        for durability in (Durability.NEVER, Durability.BATCH, Durability.ALWAYS):
            for writers in (1, 16):
                rate = anyio.run(
                    bench_append, root, durability, args.records, writers, backend="trio"
                )
                print(
                    f"append  durability={durability:<6} writers={writers}:"
                    f" {rate:>12,.0f} records/s"
                )
        read_rate, raw_rate = bench_read(root, args.records)
        print(f"read + decode (key/value/timestamp objects):  {read_rate:>12,.0f} records/s")
        print(f"read raw batches (no decode):                 {raw_rate:>12,.0f} records/s")
        consume_rate = anyio.run(bench_consume, root, args.records, backend="trio")
        print(f"consume, async API, caught-up reader:         {consume_rate:>12,.0f} records/s")
        if args.reopen_records:
            elapsed, written, child_rss = bench_reopen(root, args.reopen_records)
            print(f"reopen after kill -9 of a log of {written:,} records: {elapsed * 1000:,.0f} ms")
            print(f"peak RSS of the killed writer:                {child_rss:>8,.0f} MB")
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"peak RSS of this process:                     {rss:>8,.0f} MB")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    main()
