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

``--metrics-cost`` measures what metrics cost instead: ``--runs`` pairs of runs, one with
the process's metrics on (``enable_metrics``, as ``headwater run --metrics`` does; each
such run then renders the registry once, as a scrape would, outside the timing) and one
with them off, interleaved (on-off, then off-on, ...) so that the machine's drift weighs
on both alike; it prints both medians and their ratio (target: on at most 3% slower).
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
from typing import NamedTuple

import anyio
import orjson
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from headwater.processing import App, RunStatistics
from headwater.store import NewRecord, TopicConfig, enable_metrics, metrics_registry, open_store

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


class Measured(NamedTuple):
    """One timed run: wall seconds, CPU seconds of the process (all its threads), records."""

    elapsed_s: float
    cpu_s: float
    records_in: int
    records_out: int


def run_once(data: Path, name: str, *, metrics: bool = False) -> Measured:
    """Run W1 as app ``name`` until caught up; return what it took and did.

    The clocks start when ``App.run_async`` is called, inside the event loop (whose own
    start-up is not the pipeline's work), and stop when it returns.
    """
    if metrics:
        enable_metrics()
    app = w1(data, name)

    async def timed() -> tuple[float, float, RunStatistics]:
        started, cpu = time.perf_counter(), time.process_time()
        stats = await app.run_async(until_caught_up=True)
        return time.perf_counter() - started, time.process_time() - cpu, stats

    elapsed, cpu_s, stats = anyio.run(timed, backend="trio")
    registry = metrics_registry()
    if registry is not None:  # what a scrape renders: the run's counts must be there
        counted = [
            sample.value
            for family in text_string_to_metric_families(generate_latest(registry).decode())
            for sample in family.samples
            if sample.name == "headwater_app_records_in_total"
        ]
        assert counted == [stats.records_in], counted
    return Measured(elapsed, cpu_s, stats.records_in, stats.records_out)


def run_in_worker(data: Path, name: str, *, metrics: bool = False) -> Measured:
    """Run W1 in a new worker process, as ``headwater run`` would; return its figures."""
    worker = subprocess.run(
        [sys.executable, __file__, "--worker", str(data), name, *(["--metrics"] * metrics)],
        check=True,
        capture_output=True,
        text=True,
    )
    return Measured(*orjson.loads(worker.stdout))


def main() -> None:
    if sys.argv[1:2] == ["--worker"]:  # run_in_worker's child: one timed run, as JSON
        measured = run_once(Path(sys.argv[2]), sys.argv[3], metrics="--metrics" in sys.argv[4:])
        print(orjson.dumps(tuple(measured)).decode())
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=5, help="timed runs (each a new group)")
    parser.add_argument("--dir", type=Path, default=None, help="where to put the data dir")
    parser.add_argument("--profile", action="store_true", help="also profile one more run")
    parser.add_argument(
        "--metrics-cost", action="store_true", help="compare runs with metrics on and off"
    )
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="pipeline-bench-", dir=args.dir))
    data = root / "data"
    try:
        started = time.perf_counter()
        anyio.run(load, data, args.events, backend="trio")
        loaded_s = time.perf_counter() - started
        print(f"loaded {args.events:,} events into 4 partitions in {loaded_s:.1f} s")
        if args.metrics_cost:
            compare_metrics(data, args.events, args.runs)
            return
        rates = []
        for run in range(1, args.runs + 1):
            elapsed, _, records_in, records_out = run_in_worker(data, f"w1-{run}")
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
            elapsed, _, records_in, _ = run_once(data, "w1-profiled")
            profiler.disable()
            print(
                f"\nprofiled run (slower under the profiler): {records_in / elapsed:,.0f} events/s"
            )
            pstats.Stats(profiler).sort_stats("tottime").print_stats(15)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def compare_metrics(data: Path, events: int, runs: int) -> None:
    """Run W1 ``runs`` times with metrics on and as many with them off, interleaved."""
    rates: dict[bool, list[float]] = {True: [], False: []}
    cpu: dict[bool, list[float]] = {True: [], False: []}  # CPU µs per event
    for run in range(1, runs + 1):
        order = (True, False) if run % 2 else (False, True)
        for metrics in order:
            measured = run_in_worker(data, f"w1-{run}-{metrics}", metrics=metrics)
            assert measured.records_in == events, (measured.records_in, events)
            rates[metrics].append(events / measured.elapsed_s)
            cpu[metrics].append(measured.cpu_s / events * 1e6)
            print(
                f"W1 run {run}, metrics {'on ' if metrics else 'off'}: "
                f"{rates[metrics][-1]:,.0f} events/s, {cpu[metrics][-1]:.2f} CPU µs/event"
            )
    on, off = statistics.median(rates[True]), statistics.median(rates[False])
    cpu_on, cpu_off = statistics.median(cpu[True]), statistics.median(cpu[False])
    paired = statistics.median(a / b for a, b in zip(rates[True], rates[False], strict=True))
    paired_cpu = statistics.median(a / b for a, b in zip(cpu[True], cpu[False], strict=True))
    print(
        f"W1 median of {runs} runs each: metrics on {on:,.0f} events/s, off {off:,.0f} "
        f"events/s, on/off = {on / off:.3f}, median of the runs' pairs {paired:.3f} (target "
        f">= 0.97); CPU per event on {cpu_on:.2f} µs, off {cpu_off:.2f} µs, on/off = "
        f"{cpu_on / cpu_off:.3f}, median of the pairs {paired_cpu:.3f}"
    )


if __name__ == "__main__":
    main()
