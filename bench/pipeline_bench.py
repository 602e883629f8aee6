"""End-to-end throughput of the processing runtime on the standard workload W1.

W1: N JSON events ``{"user": "u<0..9999>", "page": "/p/<0..99>", "ts": <epoch ms, ~1 ms
apart>, "ms": <0..1000>}`` generated with a fixed seed and pre-loaded (unkeyed, spread
evenly, timestamped when loaded, as a producer would) into a 4-partition topic; W1 filters
``ms > 100``, adds ``"slow": ms > 500`` and writes an output topic. The figure is events/s
end to end for one worker process: from ``App.run_async(until_caught_up=True)``
starting (store opened, topics created, group joined) until every input record is
processed, its output durable and its offset committed. Loading is not timed.

Each of ``--runs`` runs (5 by default) is a new worker process and a new consumer group
reading the whole input; the median is the figure, since a shared machine's speed drifts
from run to run.

Usage: ``python bench/pipeline_bench.py [--events N] [--runs R] [--dir DIR] [--profile]``;
with ``--profile`` one more run is profiled and its top entries printed.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import anyio
import orjson

from headwater.processing import App, RunStatistics
from headwater.store import NewRecord, TopicConfig, open_store

PARTITIONS = 4
SEED = 20240601
LOAD_BATCH = 5_000
START_MS = 1_717_200_000_000


def events(count: int) -> list[tuple[int, bytes]]:
    """Return ``count`` W1 events as (timestamp, JSON bytes), from the fixed seed."""
    rng = random.Random(SEED)
    out = []
    ts = START_MS
    for _ in range(count):
        ts += rng.choice((0, 1, 1, 2))
        event = {
            "user": f"u{rng.randrange(10_000)}",
            "page": f"/p/{rng.randrange(100)}",
            "ts": ts,
            "ms": rng.randrange(1001),
        }
        out.append((ts, orjson.dumps(event)))
    return out


async def load(data: Path, count: int) -> None:
    """Create the input topic and append ``count`` events, spread over its partitions."""
    generated = events(count)
    async with open_store(data) as store:
        await store.create_topic("clicks", TopicConfig(partitions=PARTITIONS))
        for p in range(PARTITIONS):
            mine = generated[p::PARTITIONS]
            for start in range(0, len(mine), LOAD_BATCH):
                # As a producer sends them: no key, timestamped when sent.
                chunk = [NewRecord(v) for _, v in mine[start : start + LOAD_BATCH]]
                await store.append("clicks", chunk, partition=p)


def w1(data: Path, name: str) -> App:
    """Return the W1 app on ``data``."""
    app = App(name, data_dir=data)
    clicks = app.stream("clicks")
    (
        clicks.filter(lambda e: e["ms"] > 100)
        .map(lambda e: {**e, "slow": e["ms"] > 500})
        .to(f"{name}-out")
    )
    return app


def run_once(data: Path, name: str) -> tuple[float, int, int]:
    """Run W1 as app ``name`` until caught up; return (seconds, records in, records out).

    The clock starts when ``App.run_async`` is called, inside the event loop (whose own
    start-up is not the pipeline's work), and stops when it returns.
    """
    app = w1(data, name)

    async def timed() -> tuple[float, RunStatistics]:
        started = time.perf_counter()
        stats = await app.run_async(until_caught_up=True)
        return time.perf_counter() - started, stats

    elapsed, stats = anyio.run(timed, backend="trio")
    return elapsed, stats.records_in, stats.records_out


def run_in_worker(data: Path, name: str) -> tuple[float, int, int]:
    """Run W1 in a new worker process, as ``headwater run`` would; return its figures."""
    worker = subprocess.run(
        [sys.executable, __file__, "--worker", str(data), name],
        check=True,
        capture_output=True,
        text=True,
    )
    elapsed, records_in, records_out = orjson.loads(worker.stdout)
    return elapsed, records_in, records_out


def main() -> None:
    if sys.argv[1:2] == ["--worker"]:  # run_in_worker's child: one timed run, as JSON
        print(orjson.dumps(run_once(Path(sys.argv[2]), sys.argv[3])).decode())
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=5, help="timed runs (each a new group)")
    parser.add_argument("--dir", type=Path, default=None, help="where to put the data dir")
    parser.add_argument("--profile", action="store_true", help="also profile one more run")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="pipeline-bench-", dir=args.dir))
    data = root / "data"
    try:
        started = time.perf_counter()
        anyio.run(load, data, args.events, backend="trio")
        loaded_s = time.perf_counter() - started
        print(f"loaded {args.events:,} events into 4 partitions in {loaded_s:.1f} s")
        rates = []
        for run in range(1, args.runs + 1):
            elapsed, records_in, records_out = run_in_worker(data, f"w1-{run}")
            assert records_in == args.events, (records_in, args.events)
            rates.append(records_in / elapsed)
            print(
                f"W1 run {run} (filter ms > 100, map slow, to): {records_in:,} events in "
                f"{elapsed:.2f} s = {rates[-1]:,.0f} events/s end to end "
                f"({records_out:,} written)"
            )
        print(
            f"W1 median of {len(rates)} runs: {statistics.median(rates):,.0f} events/s "
            "(target >= 300,000)"
        )
        if args.profile:
            profiler = cProfile.Profile()
            profiler.enable()
            elapsed, records_in, _ = run_once(data, "w1-profiled")
            profiler.disable()
            print(
                f"\nprofiled run (slower under the profiler): {records_in / elapsed:,.0f} events/s"
            )
            pstats.Stats(profiler).sort_stats("tottime").print_stats(15)
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
