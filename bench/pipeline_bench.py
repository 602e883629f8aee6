"""End-to-end throughput of the processing runtime on the standard workload W1.

W1: N JSON events ``{"user": "u<0..9999>", "page": "/p/<0..99>", "ts": <epoch ms, ~1 ms
apart>, "ms": <0..1000>}`` generated with a fixed seed and pre-loaded (unkeyed, spread
evenly, timestamped when loaded, as a producer would) into a 4-partition topic; W1 filters
``ms > 100``, adds ``"slow": ms > 500`` and writes an output topic. The figure is events/s
end to end for one worker process (this one): from ``App.run_async(until_caught_up=True)``
starting (store opened, topics created, group joined) until every input record is
processed, its output durable and its offset committed. Loading is not timed.

Usage: ``python bench/pipeline_bench.py [--events N] [--dir DIR] [--profile]``; with
``--profile`` a second run is profiled and its top entries printed.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import random
import shutil
import tempfile
import time
from pathlib import Path

import anyio
import orjson

from headwater.processing import App
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
    """Run W1 as app ``name`` until caught up; return (seconds, records in, records out)."""
    app = w1(data, name)
    started = time.perf_counter()
    stats = anyio.run(lambda: app.run_async(until_caught_up=True), backend="trio")
    elapsed = time.perf_counter() - started
    return elapsed, stats.records_in, stats.records_out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--dir", type=Path, default=None, help="where to put the data dir")
    parser.add_argument("--profile", action="store_true", help="also profile a second run")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="pipeline-bench-", dir=args.dir))
    data = root / "data"
    try:
        started = time.perf_counter()
        anyio.run(load, data, args.events, backend="trio")
        loaded_s = time.perf_counter() - started
        print(f"loaded {args.events:,} events into 4 partitions in {loaded_s:.1f} s")
        elapsed, records_in, records_out = run_once(data, "w1")
        assert records_in == args.events, (records_in, args.events)
        print(
            f"W1 (filter ms > 100, map slow, to): {records_in:,} events in {elapsed:.2f} s = "
            f"{records_in / elapsed:,.0f} events/s end to end ({records_out:,} written;"
            " target >= 300,000)"
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
