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

On a Kafka-protocol cluster too: ``--bootstrap HOST:PORT`` (a running cluster),
``--broker`` (a ``headwater broker`` started here on a temporary data directory) and
``--apache-kafka`` (Apache Kafka started here, as the tests start it, with the JIT's
full optimisation) each add W1 through the Kafka backend, with ``--workers`` worker
processes (``1,2`` by default) sharing the app's consumer group: the input is produced
into a fresh 4-partition topic (not timed), the workers are started, import W1 and
wait; then all are told to go at once and each runs ``App.run_async(until_caught_up=True)``.
The figure is all the workers' input records over the time from the first one's start
to the last one's end (their group joins and rebalances included); the ratio of each
worker count's figure to one worker's is printed. Each run also prints the CPU time its
processes used per event (all their threads): on a shared machine it varies less than
the wall-clock figure. The embedded figure is printed in the
same run, for comparison.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import os
import pstats
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import anyio
import orjson
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

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


def w1(data: Path | None, name: str, *, bootstrap: str | None = None, topic: str = "clicks") -> App:
    """Return the W1 app on ``data`` (or the cluster at ``bootstrap``), reading ``topic``."""
    app = App(name, data_dir=data, bootstrap=bootstrap)
    clicks = app.stream(topic)
    (
        clicks.filter(lambda e: e["ms"] > 100)
        .map(lambda e: {**e, "slow": e["ms"] > 500})
        .to(f"{name}-out")
    )
    return app


def run_once(data: Path, name: str) -> tuple[float, int, int, float]:
    """Run W1 as app ``name`` until caught up; return (seconds, records in, records out,
    CPU seconds of the process, all its threads).

    The clock starts when ``App.run_async`` is called, inside the event loop (whose own
    start-up is not the pipeline's work), and stops when it returns.
    """
    app = w1(data, name)

    async def timed() -> tuple[float, RunStatistics, float]:
        started, cpu = time.perf_counter(), time.process_time()
        stats = await app.run_async(until_caught_up=True)
        return time.perf_counter() - started, stats, time.process_time() - cpu

    elapsed, stats, cpu = anyio.run(timed, backend="trio")
    return elapsed, stats.records_in, stats.records_out, cpu


def run_in_worker(data: Path, name: str) -> tuple[float, int, int, float]:
    """Run W1 in a new worker process, as ``headwater run`` would; return its figures."""
    worker = subprocess.run(
        [sys.executable, __file__, "--worker", str(data), name],
        check=True,
        capture_output=True,
        text=True,
    )
    elapsed, records_in, records_out, cpu = orjson.loads(worker.stdout)
    return elapsed, records_in, records_out, cpu


# -- on a cluster --------------------------------------------------------------------


def load_cluster(bootstrap: str, count: int) -> str:
    """Create a fresh 4-partition topic on the cluster and produce ``count`` W1 events into
    it, spread evenly; return its name."""
    topic = f"clicks-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for future in admin.create_topics([NewTopic(topic, PARTITIONS, 1)]).values():
        future.result(timeout=60)
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5, "acks": "all"})
    failures: list[object] = []

    def report(error: object, _message: object) -> None:
        if error is not None:
            failures.append(error)

    for index, (_, value) in enumerate(events(count)):
        while True:
            try:
                producer.produce(topic, value, partition=index % PARTITIONS, on_delivery=report)
                break
            except BufferError:
                producer.poll(0.05)
    if producer.flush(120) or failures:
        sys.exit(f"could not load the events into {bootstrap}: {failures[:3]}")
    return topic


def cluster_worker(bootstrap: str, topic: str, name: str) -> None:
    """A worker on a cluster (a child of :func:`run_workers`): build W1, say ready, wait for
    "go" on stdin, run until caught up, print (start, end, records in, records out)."""
    app = w1(None, name, bootstrap=bootstrap, topic=topic)
    print("ready", flush=True)
    sys.stdin.readline()

    async def timed() -> list[float]:
        started = time.monotonic()  # the system-wide clock: the parent compares the workers'
        cpu = time.process_time()
        stats = await app.run_async(until_caught_up=True)
        cpu = time.process_time() - cpu
        return [started, time.monotonic(), stats.records_in, stats.records_out, cpu]

    print(orjson.dumps(anyio.run(timed, backend="trio")).decode(), flush=True)


def run_workers(
    bootstrap: str, topic: str, name: str, workers: int
) -> tuple[float, int, int, float]:
    """Run W1 as app ``name`` in ``workers`` processes on the cluster; return (seconds from
    the first start to the last end, records in, records out, CPU seconds) over all of
    them."""
    procs = [
        subprocess.Popen(
            [sys.executable, __file__, "--cluster-worker", bootstrap, topic, name],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(workers)
    ]
    try:
        for proc in procs:
            assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()
        results = []
        for proc in procs:
            out, _ = proc.communicate(timeout=600)
            if proc.returncode != 0:
                sys.exit(f"a worker failed ({proc.returncode})")
            results.append(orjson.loads(out.splitlines()[-1]))
    finally:
        for proc in procs:
            proc.kill()
    elapsed = max(r[1] for r in results) - min(r[0] for r in results)
    records_in, records_out = sum(int(r[2]) for r in results), sum(int(r[3]) for r in results)
    return elapsed, records_in, records_out, sum(r[4] for r in results)


@contextlib.contextmanager
def headwater_broker(root: Path) -> Iterator[str]:
    """Run ``headwater broker`` on a temporary data directory; yield its address."""
    log_path = root / "broker.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [str(Path(sys.executable).with_name("headwater")), "broker", "--data",
             str(root / "broker-data"), "--listen", "127.0.0.1:0"],
            stderr=log,
            env={k: v for k, v in os.environ.items() if not k.startswith("HEADWATER_")},
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while True:  # the broker says where it listens once it does
            found = re.search(r"listening on ([\d.]+):(\d+)", log_path.read_text())
            if found:
                break
            if proc.poll() is not None or time.monotonic() > deadline:
                sys.exit(f"headwater broker did not start:\n{log_path.read_text()}")
            time.sleep(0.05)
        yield f"{found[1]}:{found[2]}"
    finally:
        proc.terminate()
        proc.wait(30)


@contextlib.contextmanager
def apache_kafka(root: Path) -> Iterator[str]:
    """Run Apache Kafka as the tests do (``tests/apache_kafka``); yield its address."""
    sys.path.insert(0, str(Path(__file__).parents[1] / "tests"))
    from apache_kafka.running import KafkaProcess  # noqa: PLC0415 - found on the path above

    kafka = KafkaProcess(root / "apache-kafka", heap="1g", quick_start=False).start()
    try:
        yield kafka.bootstrap
    finally:
        kafka.stop()


def bench_cluster(label: str, bootstrap: str, args: argparse.Namespace) -> None:
    """Print W1's figures on the cluster at ``bootstrap`` for each worker count."""
    started = time.perf_counter()
    topic = load_cluster(bootstrap, args.events)
    loaded_s = time.perf_counter() - started
    print(f"{label}: loaded {args.events:,} events into {topic} in {loaded_s:.1f} s")
    medians: dict[int, float] = {}
    for workers in args.workers:
        rates = []
        for run in range(1, args.runs + 1):
            name = f"w1-{uuid.uuid4().hex[:6]}"
            elapsed, records_in, records_out, cpu = run_workers(bootstrap, topic, name, workers)
            if records_in < args.events:
                sys.exit(f"{label}: the workers read {records_in:,} of {args.events:,} events")
            rates.append(args.events / elapsed)
            print(
                f"{label}, {workers} worker(s), run {run}: {records_in:,} events read "
                f"({records_out:,} written) in {elapsed:.2f} s = {rates[-1]:,.0f} events/s; "
                f"workers' CPU {cpu / records_in * 1e6:.1f} us per event"
            )
        medians[workers] = statistics.median(rates)
        print(f"{label}, {workers} worker(s): median {medians[workers]:,.0f} events/s")
    if 1 in medians:
        for workers, rate in medians.items():
            if workers != 1:
                print(f"{label}: {workers} workers / 1 worker = {rate / medians[1]:.2f}x")


def main() -> None:
    if sys.argv[1:2] == ["--worker"]:  # run_in_worker's child: one timed run, as JSON
        print(orjson.dumps(run_once(Path(sys.argv[2]), sys.argv[3])).decode())
        return
    if sys.argv[1:2] == ["--cluster-worker"]:  # run_workers' child
        cluster_worker(*sys.argv[2:5])
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=5, help="timed runs (each a new group)")
    parser.add_argument("--dir", type=Path, default=None, help="where to put the data dir")
    parser.add_argument("--profile", action="store_true", help="also profile one more run")
    parser.add_argument("--bootstrap", metavar="HOST:PORT", help="also W1 on this cluster")
    parser.add_argument("--broker", action="store_true", help="also W1 on headwater broker")
    parser.add_argument("--apache-kafka", action="store_true", help="also W1 on Apache Kafka")
    parser.add_argument(
        "--workers",
        type=lambda text: [int(n) for n in text.split(",")],
        default=[1, 2],
        help="worker processes on a cluster, e.g. 1,2 (default)",
    )
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="pipeline-bench-", dir=args.dir))
    data = root / "data"
    try:
        if args.bootstrap:
            bench_cluster(f"cluster at {args.bootstrap}", args.bootstrap, args)
        if args.broker:
            with headwater_broker(root) as bootstrap:
                bench_cluster("headwater broker", bootstrap, args)
        if args.apache_kafka:
            with apache_kafka(root) as bootstrap:
                bench_cluster("Apache Kafka", bootstrap, args)
        started = time.perf_counter()
        anyio.run(load, data, args.events, backend="trio")
        loaded_s = time.perf_counter() - started
        print(f"loaded {args.events:,} events into 4 partitions in {loaded_s:.1f} s")
        rates = []
        for run in range(1, args.runs + 1):
            elapsed, records_in, records_out, cpu = run_in_worker(data, f"w1-{run}")
            assert records_in == args.events, (records_in, args.events)
            rates.append(records_in / elapsed)
            print(
                f"W1 run {run} (filter ms > 100, map slow, to): {records_in:,} events in "
                f"{elapsed:.2f} s = {rates[-1]:,.0f} events/s end to end "
                f"({records_out:,} written); CPU {cpu / records_in * 1e6:.1f} us per event"
            )
        print(
            f"W1 median of {len(rates)} runs: {statistics.median(rates):,.0f} events/s "
            "(target >= 300,000)"
        )
        if args.profile:
            profiler = cProfile.Profile()
            profiler.enable()
            elapsed, records_in, _, _ = run_once(data, "w1-profiled")
            profiler.disable()
            print(
                f"\nprofiled run (slower under the profiler): {records_in / elapsed:,.0f} events/s"
            )
            pstats.Stats(profiler).sort_stats("tottime").print_stats(15)
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
