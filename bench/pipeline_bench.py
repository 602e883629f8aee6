"""End-to-end throughput of the processing runtime on the standard workloads W1 and W2.

W1: N JSON events ``{"user": "u<0..9999>", "page": "/p/<0..99>", "ts": <epoch ms, ~1 ms
apart>, "ms": <0..1000>}`` generated with a fixed seed and pre-loaded (unkeyed, spread
evenly, timestamped when loaded, as a producer would) into a 4-partition topic; W1 filters
``ms > 100``, adds ``"slow": ms > 500`` and writes an output topic. W2 reads the same
events, filters ``ms > 100``, keys by user, and counts and sums ``ms`` per user in
10-second tumbling event-time windows on ``ts`` (grace 0), emitting each window's final
result to an output topic: a repartition topic, a state store with its changelog, and
about one result per two events. The figure is events/s
end to end for one worker process: from ``App.run_async(until_caught_up=True)``
starting (store opened, topics created, group joined) until every input record is
processed, its output durable and its offset committed. Loading is not timed.

Each of ``--runs`` runs (5 by default) of each workload is a new worker process and a new
consumer group reading the whole input, W1 and W2 interleaved; the medians are the
figures, since a shared machine's speed drifts from run to run. Each worker reports its
peak RSS. Then the restore of a 1,000,000-key store is timed: from its changelog into
a memory store, into a disk store (an empty local copy), and from the disk store's
local copy (current, so only the changelog's empty tail is read).

Usage: ``python bench/pipeline_bench.py [--events N] [--runs R] [--dir DIR] [--profile W]
[--only W1|W2] [--restore-keys N] [--workers 1,2] [--broker] [--apache-kafka]
[--bootstrap HOST:PORT] [--baseline] [--default-malloc] [--before DIR]``; with
``--profile W1`` (or ``W2``) one more run of that workload is profiled and its top entries
printed (``pipeline_parts.py`` sorts a sampled profile into parts, in ns per event).

Each run also prints what its process spent meanwhile: CPU time per event, in user and
kernel mode, and page faults per event (a shared machine's load moves the CPU time less
than the wall-clock time; on a virtual machine that hands freed memory back to its host,
page faults are dear and the kernel time shows them).

``--baseline`` adds each workload's plain loop, in a process of its own, interleaved with
the pipelines: the same events as lines in a Python list, in batches of 10,000, the
workload's own functions, ``orjson.loads`` and ``orjson.dumps`` per record, each batch's
outputs joined and dropped (W2's: a dict of open windows, each window's result dumped
when the stream time reaches its end); then each pipeline's ratio to its loop, by
events/s and by CPU time per event (targets: W1 >= 0.6, W2 >= 0.5). Every worker
process, pipeline and plain loop alike, runs with glibc's heap trimming off
(``MALLOC_TRIM_THRESHOLD_``, ``MALLOC_TOP_PAD_``): the plain loop frees each batch's
outputs whole, glibc hands that memory back, and on a virtual machine that returns
freed pages to its host, touching it again costs a page fault per event, which
measured the loop at a third of its speed; ``--default-malloc`` keeps glibc's
defaults. ``--before DIR``
runs each workload a second time per run with an earlier version's packages (a tree
``DIR/headwater/store``, ``DIR/headwater/processing``, ...: first on the worker's
``PYTHONPATH``), in alternating order, and prints the ratios now / before.

Under ``headwater worker`` (the supervisor path): ``--workers 1,2`` adds W1 run by
``headwater --data DIR worker APP --processes N --until-caught-up`` on the loaded data
directory, for each worker count: the supervisor owns the directory and serves it, its
N workers run W1 through the Kafka-protocol backend against that broker and share the
app's consumer group. On a Kafka-protocol cluster too: ``--bootstrap HOST:PORT`` (a
running cluster), ``--broker`` (a ``headwater broker`` started here on a temporary data
directory) and ``--apache-kafka`` (Apache Kafka started here, as the tests start it, with
the JIT's full optimisation; where it cannot run, that is said and the rest goes on) each
add W1 by ``headwater worker APP --bootstrap HOST:PORT --processes N --until-caught-up``
(worker counts from ``--workers``, ``1,2`` by default), on a fresh 4-partition topic the
input is produced into (not timed). Each worker process times its own
``App.run_async`` (the app file is W1 as an App subclass that writes its start, end,
records and CPU time when its run ends); the figure is all the workers' input records
over the time from the first one's start to the last one's end (their group joins and
rebalances included, the interpreters' start-up not), and each worker count's ratio to
one worker's is printed. Each run also prints the CPU time its workers used per event
(all their threads), and that of all the command's processes from start to exit (the
supervisor, with its broker on a data directory, and the workers, their start-up
included): on a shared machine these vary less than the wall-clock figure. The embedded
figures follow in the same run, for comparison.

``--exactly-once`` measures what the exactly-once guarantee costs instead, on the clusters
asked for (``--broker``, ``--apache-kafka``, ``--bootstrap``), else on the data directory
(embedded: the store's own transactions): ``--runs`` pairs of runs of W1 and of W2 in
this process's children (``App.run_async`` until caught up, at the default commit
interval), one with ``guarantee="exactly_once"``, one with ``"at_least_once"``,
interleaved; it prints each workload's medians, their ratio (target >= 0.8) and the
median time a commit took with each (exactly-once: the changelog flush, the offsets sent
into the transaction and its commit).

``--metrics-cost`` measures what metrics cost instead: ``--runs`` pairs of W1 runs, one
with the process's metrics on (``enable_metrics``, as ``headwater run --metrics`` does;
each such run then renders the registry once, as a scrape would, outside the timing) and
one with them off, interleaved (on-off, then off-on, ...) so that the machine's drift weighs
on both alike. It prints both medians, their ratio and the median of each pair's ratio,
for the rate and for the worker's CPU time per event (target: on at most 3% slower).
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import dataclasses
import os
import pstats
import random
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import anyio
import orjson
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from headwater.processing import App, RunStatistics, open_in_process, windows
from headwater.processing._pipeline import Pipeline
from headwater.processing._stores import BYTES_KEYS, StoreKind, StoreSpec
from headwater.processing._stores._changelog import StoreRegistry, restore
from headwater.processing._tasks import TaskId, TopicGroup
from headwater.processing._windowed import store_spec
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


# The workloads' functions, shared by the apps and the plain loops they are compared with.
def keep(e: Any) -> Any:
    """W1's and W2's filter."""
    return e["ms"] > 100


def enrich(e: Any) -> Any:
    """W1's map."""
    return {**e, "slow": e["ms"] > 500}


def user(e: Any) -> Any:
    """W2's key."""
    return e["user"]


def event_time(e: Any) -> Any:
    """W2's event time."""
    return e["ts"]


def initial() -> Any:
    """W2's empty aggregate."""
    return {"count": 0, "sum": 0}


def add(acc: Any, e: Any) -> Any:
    """W2's fold."""
    return {"count": acc["count"] + 1, "sum": acc["sum"] + e["ms"]}


WINDOW_MS = 10_000


def w1(data: Path | None, name: str, *, bootstrap: str | None = None, topic: str = "clicks") -> App:
    """Return the W1 app on ``data`` (or the cluster at ``bootstrap``), reading ``topic``."""
    app = App(name, data_dir=data, bootstrap=bootstrap)
    clicks = app.stream(topic)
    clicks.filter(keep).map(enrich).to(f"{name}-out")
    return app


def w2(data: Path | None, name: str, *, bootstrap: str | None = None, topic: str = "clicks") -> App:
    """Return the W2 app on ``data`` (or the cluster at ``bootstrap``), reading ``topic``."""
    app = App(name, data_dir=data, bootstrap=bootstrap)
    clicks = app.stream(topic)
    (
        clicks.filter(keep)
        .key_by(user)
        .window(windows.tumbling(ms=WINDOW_MS), timestamp=event_time, grace_ms=0)
        .aggregate(initial=initial, add=add, name="per-user-10s")
        .final()
        .to(f"{name}-out")
    )
    return app


WORKLOADS = {"W1": w1, "W2": w2}


# -- the plain loops -------------------------------------------------------------------

#: The plain loops' batch size.
PLAIN_BATCH = 10_000


def plain_w1(lines: list[bytes]) -> int:
    """W1 by hand over ``lines`` in memory: per batch, each line decoded, filtered, mapped
    and encoded; the batch's outputs joined and dropped. Return how many were written."""
    written = 0
    for start in range(0, len(lines), PLAIN_BATCH):
        outputs = []
        for line in lines[start : start + PLAIN_BATCH]:
            event = orjson.loads(line)
            if keep(event):
                outputs.append(orjson.dumps(enrich(event)))
        b"\n".join(outputs)
        written += len(outputs)
    return written


def plain_w2(lines: list[bytes]) -> int:
    """W2 by hand over ``lines`` in memory: a dict of open windows (start -> key ->
    aggregate); each window's result dumped when the stream time reaches its end (grace
    0), records of a closed window dropped; per batch, the outputs joined and dropped.
    Return how many were written."""
    open_windows: dict[int, dict[Any, Any]] = {}
    stream_time = -1
    next_close: float = float("inf")  # the end of the oldest open window
    written = 0
    for start in range(0, len(lines), PLAIN_BATCH):
        outputs = []
        for line in lines[start : start + PLAIN_BATCH]:
            event = orjson.loads(line)
            if not keep(event):
                continue
            ts = event_time(event)
            window = ts - ts % WINDOW_MS
            if window + WINDOW_MS <= stream_time:
                continue  # late: its window has closed
            key = user(event)
            accs = open_windows.get(window)
            if accs is None:
                accs = open_windows[window] = {}
                next_close = min(next_close, window + WINDOW_MS)
            acc = accs.get(key)
            accs[key] = add(initial() if acc is None else acc, event)
            if ts > stream_time:
                stream_time = ts
                while stream_time >= next_close:  # close (and dump) what the time reached
                    first = next_close - WINDOW_MS
                    for key, acc in open_windows.pop(first).items():
                        result = {"key": key, "start": first, "end": next_close, "value": acc}
                        outputs.append(orjson.dumps(result))
                    next_close = min(open_windows, default=float("inf")) + WINDOW_MS
        b"\n".join(outputs)
        written += len(outputs)
    return written


PLAIN = {"W1": plain_w1, "W2": plain_w2}


class Timed(NamedTuple):
    """One timed run: wall seconds, records, and what the process spent meanwhile (CPU
    seconds in user and kernel mode over all its threads, page faults), then its peak
    RSS in bytes. On a shared machine the CPU time varies less than the wall-clock time;
    on a virtual machine that returns freed memory to its host, page faults are dear
    (the kernel time shows them)."""

    elapsed_s: float
    records_in: int
    records_out: int
    user_s: float
    sys_s: float
    faults: int
    rss: int = 0

    @property
    def cpu_s(self) -> float:
        """The CPU seconds, user and kernel."""
        return self.user_s + self.sys_s


class _Meter:
    """Measures a stretch of the process's life (see :class:`Timed`)."""

    def __init__(self) -> None:
        self.started = time.perf_counter()
        self.usage = resource.getrusage(resource.RUSAGE_SELF)

    def stop(self, records_in: int, records_out: int) -> Timed:
        elapsed = time.perf_counter() - self.started
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return Timed(
            elapsed,
            records_in,
            records_out,
            usage.ru_utime - self.usage.ru_utime,
            usage.ru_stime - self.usage.ru_stime,
            usage.ru_minflt + usage.ru_majflt - self.usage.ru_minflt - self.usage.ru_majflt,
        )


def run_plain(count: int, workload: str) -> Timed:
    """Run ``workload``'s plain loop over ``count`` events as lines in a list."""
    lines = [value for _, value in events(count)]
    loop = PLAIN[workload]
    meter = _Meter()
    written = loop(lines)
    return meter.stop(len(lines), written)


def run_once(data: Path, name: str, workload: str = "W1") -> Timed:
    """Run ``workload`` as app ``name`` until caught up.

    The clock starts when ``App.run_async`` is called, inside the event loop (whose own
    start-up is not the pipeline's work), and stops when it returns.
    """
    app = WORKLOADS[workload](data, name)

    async def timed() -> Timed:
        meter = _Meter()
        stats = await app.run_async(until_caught_up=True)
        return meter.stop(stats.records_in, stats.records_out)

    return anyio.run(timed, backend="trio")


class Measured(NamedTuple):
    """One timed run: wall seconds, CPU seconds of the process (all its threads), records."""

    elapsed_s: float
    cpu_s: float
    records_in: int
    records_out: int


def run_metered(data: Path, name: str, *, metrics: bool) -> Measured:
    """Run W1 as app ``name`` until caught up, with the process's metrics on or off."""
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


def compare_metrics(data: Path, events: int, runs: int) -> None:
    """Run W1 ``runs`` times with metrics on and as many with them off, interleaved."""
    rates: dict[bool, list[float]] = {True: [], False: []}
    cpu: dict[bool, list[float]] = {True: [], False: []}  # CPU µs per event
    for run in range(1, runs + 1):
        for metrics in (True, False) if run % 2 else (False, True):
            worker = subprocess.run(
                [sys.executable, __file__, "--metrics-worker", str(data),
                 f"w1-{run}-{'on' if metrics else 'off'}", *(["--metrics"] * metrics)],
                check=True,
                capture_output=True,
                text=True,
            )  # fmt: skip
            measured = Measured(*orjson.loads(worker.stdout))
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


#: How compare_guarantees tells its child a data directory from a cluster's bootstrap.
DATA_PREFIX = "data:"


def run_guarantee(where: str, topic: str, name: str, workload: str, guarantee: str) -> Any:
    """Run ``workload`` as app ``name`` on the cluster at ``where`` (or the data directory
    ``data:DIR``) until caught up with ``guarantee``; return [seconds, records in,
    commits, seconds the commits took]."""
    if where.startswith(DATA_PREFIX):
        app = WORKLOADS[workload](Path(where.removeprefix(DATA_PREFIX)), name, topic=topic)
    else:
        app = WORKLOADS[workload](None, name, bootstrap=where, topic=topic)
    app.config = dataclasses.replace(app.config, guarantee=guarantee)

    async def timed() -> tuple[float, RunStatistics]:
        started = time.perf_counter()
        stats = await app.run_async(until_caught_up=True)
        return time.perf_counter() - started, stats

    elapsed, stats = anyio.run(timed, backend="trio")
    return [elapsed, stats.records_in, stats.commits, stats.commit_seconds]


def compare_guarantees(
    label: str, where: str, args: argparse.Namespace, topic: str | None = None
) -> None:
    """Run W1 and W2 on the cluster at ``where`` (loaded with a new topic), or on the data
    directory ``data:DIR`` (reading ``topic``), ``args.runs`` times with each guarantee,
    interleaved (exactly-once first, then at-least-once first, ...); print the medians,
    their ratio and what a commit costs with each (the changelog flush and, exactly-once,
    the transaction's commit)."""
    if topic is None:
        topic = load_cluster(where, args.events)
    workloads = [args.only] if args.only else ["W1", "W2"]
    guarantees = ("exactly_once", "at_least_once")
    for workload in workloads:
        rates: dict[str, list[float]] = {g: [] for g in guarantees}
        per_commit: dict[str, list[float]] = {g: [] for g in guarantees}
        for run in range(1, args.runs + 1):
            for guarantee in guarantees if run % 2 else guarantees[::-1]:
                name = f"{workload.lower()}-{guarantee[:2]}-{uuid.uuid4().hex[:6]}"
                worker = subprocess.run(
                    [sys.executable, __file__, "--guarantee-worker", where, topic, name,
                     workload, guarantee],
                    check=False, capture_output=True, text=True,
                )  # fmt: skip
                if worker.returncode != 0:
                    sys.exit(f"{label}: {workload} {guarantee} failed:\n{worker.stderr}")
                elapsed, records_in, commits, commit_s = orjson.loads(worker.stdout)
                if records_in < args.events:
                    sys.exit(f"{label}: {workload} read {records_in:,} of {args.events:,}")
                rates[guarantee].append(args.events / elapsed)
                per_commit[guarantee].append(commit_s / max(commits, 1) * 1000)
                print(
                    f"{label}, {workload} {guarantee} run {run}: {args.events / elapsed:,.0f} "
                    f"events/s, {commits} commits of {per_commit[guarantee][-1]:.1f} ms each"
                )
        eos, alo = (statistics.median(rates[g]) for g in guarantees)
        paired = statistics.median(
            a / b for a, b in zip(rates["exactly_once"], rates["at_least_once"], strict=True)
        )
        eos_ms, alo_ms = (statistics.median(per_commit[g]) for g in guarantees)
        print(
            f"{label}, {workload}: exactly_once {eos:,.0f} events/s, at_least_once "
            f"{alo:,.0f} events/s, ratio {eos / alo:.2f} (median of pairs {paired:.2f}, "
            f"target >= 0.80); a commit takes {eos_ms:.1f} ms exactly-once, {alo_ms:.1f} ms "
            "at-least-once"
        )


def peak_rss() -> int:
    """Return this process's peak resident set size in bytes (``VmHWM``: its own, where
    ``ru_maxrss`` would report the larger parent's, carried over the fork and exec)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


#: The environment of the timed worker processes (see ``--default-malloc``).
WORKER_ENV: dict[str, str] = {
    "MALLOC_TRIM_THRESHOLD_": str(1 << 40),  # never hand the heap's top back
    "MALLOC_TOP_PAD_": str(64 << 20),  # grow it 64 MiB at a time
}


def run_in_worker(data: Path, name: str, workload: str, packages: Path | None = None) -> Timed:
    """Run ``workload`` in a new worker process, as ``headwater run`` would (with the
    headwater packages found under ``packages``, if given: see ``--before``)."""
    env = {**os.environ, **WORKER_ENV}
    if packages is not None:
        env["PYTHONPATH"] = str(packages)
    worker = subprocess.run(
        [sys.executable, __file__, "--worker", str(data), name, workload],
        check=True,
        capture_output=True,
        text=True,
        env=env,
    )
    return Timed(*orjson.loads(worker.stdout))


def run_plain_in_worker(count: int, workload: str) -> Timed:
    """Run ``workload``'s plain loop in a new process."""
    worker = subprocess.run(
        [sys.executable, __file__, "--plain-worker", str(count), workload],
        check=True,
        capture_output=True,
        text=True,
        env={**os.environ, **WORKER_ENV},
    )
    return Timed(*orjson.loads(worker.stdout))


def describe_usage(timed: Timed, events: int) -> str:
    """Return a run's CPU time and page faults per input event, as printed."""
    per = 1e6 / events
    return (
        f"CPU {timed.cpu_s * per:.2f} us/event (user {timed.user_s * per:.2f}, "
        f"kernel {timed.sys_s * per:.2f}), {timed.faults / events:.3f} page faults/event"
    )


async def restore_times(root: Path, keys: int) -> tuple[float, float, float]:
    """Write a changelog of ``keys`` keys; return the seconds to restore it into a memory
    store, into a disk store (an empty local copy), and from that disk store's local copy."""
    data = root / "restore-data"
    state = root / "restore-state"
    app = App("restore", data_dir=data)
    spec = store_spec(app, "counts", keys=BYTES_KEYS)
    changelog = spec.changelog
    async with open_in_process(data) as backend:
        await backend.create_topic(changelog, 1, {"cleanup.policy": "compact"})
        partition = backend.store.partition(changelog, 0)
        rng = random.Random(SEED)
        for start in range(0, keys, 20_000):
            batch = [
                NewRecord(
                    orjson.dumps({"count": rng.randrange(100), "sum": rng.randrange(10**6)}),
                    b'"u%d"' % i,
                )
                for i in range(start, min(start + 20_000, keys))
            ]
            await partition.append(batch)
        group = TopicGroup(0, ("in",), 1, ())
        pipeline = Pipeline(app.graph, group, {"in": 1})
        figures = []
        for kind in (StoreKind.MEMORY, StoreKind.DISK, StoreKind.DISK):
            registry = StoreRegistry(state, "restore")
            task = pipeline.task(TaskId(0, 0), WallClockLike(), registry)
            task.open_store(StoreSpec(spec.name, changelog, kind, BYTES_KEYS))
            started = time.perf_counter()
            await restore(task, backend)
            figures.append(time.perf_counter() - started)
            store = task.stores[spec.name]
            assert len(store) == keys, (kind, len(store))
            registry.drop(task)
        return figures[0], figures[1], figures[2]


class WallClockLike:
    """The machine's clock (what a task needs of a clock here)."""

    def now_ms(self) -> int:
        """Return the time in epoch ms."""
        return time.time_ns() // 1_000_000

    def seconds_until(self, deadline_ms: int) -> float:
        """Return the seconds until ``deadline_ms``."""
        return max(deadline_ms - self.now_ms(), 0) / 1000


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


#: W1 as an app file for ``headwater worker``: each worker process writes, when its run
#: ends, [start, end, records in, records out, CPU seconds, seconds its partition loops
#: waited for their writes] to RESULTS/<pid>.json (times on the system-wide monotonic
#: clock, so the parent can compare the workers').
TIMED_W1 = """
import os
import time
from pathlib import Path

import orjson

from headwater.processing import App


class TimedApp(App):
    async def run_async(self, **options):
        started, cpu = time.monotonic(), time.process_time()
        stats = await super().run_async(**options)
        figures = [started, time.monotonic(), stats.records_in, stats.records_out,
                   time.process_time() - cpu, stats.write_seconds]
        Path({results!r}, f"{{os.getpid()}}.json").write_bytes(orjson.dumps(figures))
        return stats


app = TimedApp({name!r})
clicks = app.stream({topic!r})
clicks.filter(lambda e: e["ms"] > 100).map(lambda e: {{**e, "slow": e["ms"] > 500}}).to(
    {output!r}
)
"""


def run_supervised(root: Path, where: list[str], topic: str, name: str, workers: int) -> Supervised:
    """Run W1 as app ``name`` with ``headwater worker --processes N --until-caught-up``
    (``where``: ``--data DIR`` before the command, or ``--bootstrap HOST:PORT`` after it);
    return the seconds from the first worker's start of the app to the last one's end,
    records and CPU seconds over all of them."""
    results = root / f"results-{name}"
    results.mkdir()
    app = root / f"{name}.py"
    text = TIMED_W1.format(results=str(results), name=name, topic=topic, output=f"{name}-out")
    app.write_text(text)
    before, after = (where, []) if where[0] == "--data" else ([], where)
    command = [str(Path(sys.executable).with_name("headwater")), *before, "worker", str(app),
               "--processes", str(workers), "--until-caught-up", *after]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith("HEADWATER_")}
    before_cpu = _children_cpu()
    supervisor = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    all_cpu = _children_cpu() - before_cpu
    if supervisor.returncode != 0:
        sys.exit(f"headwater worker failed ({supervisor.returncode}):\n{supervisor.stderr}")
    figures = [orjson.loads(path.read_bytes()) for path in sorted(results.glob("*.json"))]
    if len(figures) != workers:
        sys.exit(f"expected {workers} worker run(s), found {len(figures)}:\n{supervisor.stderr}")
    elapsed = max(f[1] for f in figures) - min(f[0] for f in figures)
    records_in, records_out = sum(int(f[2]) for f in figures), sum(int(f[3]) for f in figures)
    workers_cpu, write_wait = sum(f[4] for f in figures), sum(f[5] for f in figures)
    return Supervised(elapsed, records_in, records_out, workers_cpu, all_cpu, write_wait)


class Supervised(NamedTuple):
    """One run under ``headwater worker``: wall seconds, records, the workers' CPU seconds
    during their runs, the CPU seconds of every process of the command (supervisor, its
    broker on a data directory, the workers from start to exit), and the seconds the
    workers' partition loops waited for their writes to be acknowledged (summed)."""

    elapsed_s: float
    records_in: int
    records_out: int
    workers_cpu_s: float
    all_cpu_s: float
    write_wait_s: float


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


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
def apache_kafka(root: Path) -> Iterator[str | None]:
    """Run Apache Kafka as the tests do (``tests/apache_kafka``); yield its address, or
    None (having said why) where it cannot run."""
    sys.path.insert(0, str(Path(__file__).parents[1] / "tests"))
    from apache_kafka.running import (  # noqa: PLC0415 - found on the path above
        KafkaProcess,
        KafkaUnavailableError,
    )

    kafka = KafkaProcess(root / "apache-kafka", heap="1g", quick_start=False)
    try:
        kafka.start()
    except KafkaUnavailableError as exc:
        print(f"Apache Kafka: not measured, it cannot run here: {exc}")
        yield None
        return
    try:
        yield kafka.bootstrap
    finally:
        kafka.stop()


def bench_cluster(label: str, bootstrap: str, args: argparse.Namespace, root: Path) -> None:
    """Print W1's figures on the cluster at ``bootstrap`` for each worker count (with
    ``--exactly-once``, W1's and W2's with each guarantee instead)."""
    if args.exactly_once:
        compare_guarantees(label, bootstrap, args)
        return
    started = time.perf_counter()
    topic = load_cluster(bootstrap, args.events)
    loaded_s = time.perf_counter() - started
    print(f"{label}: loaded {args.events:,} events into {topic} in {loaded_s:.1f} s")
    where = ["--bootstrap", bootstrap]
    bench_workers(label, root, where, topic, counts=args.workers or [1, 2], args=args)


def bench_workers(
    label: str,
    root: Path,
    where: list[str],
    topic: str,
    *,
    counts: list[int],
    args: argparse.Namespace,
) -> None:
    """Print W1's figures under ``headwater worker`` for each worker count in ``counts``,
    the counts interleaved run by run (in turn forwards and backwards, so that the
    machine's drift weighs on each alike), and each count's ratio to one worker's: the
    median of the runs' ratios, and the ratio of the medians."""
    rates: dict[int, list[float]] = {workers: [] for workers in counts}
    for run in range(1, args.runs + 1):
        for workers in counts if run % 2 else reversed(counts):
            name = f"w1-{uuid.uuid4().hex[:6]}"
            measured = run_supervised(root, where, topic, name, workers)
            records_in = measured.records_in
            if records_in < args.events:
                sys.exit(f"{label}: the workers read {records_in:,} of {args.events:,} events")
            rates[workers].append(args.events / measured.elapsed_s)
            print(
                f"{label}, {workers} worker(s), run {run}: {records_in:,} events read "
                f"({measured.records_out:,} written) in {measured.elapsed_s:.2f} s = "
                f"{rates[workers][-1]:,.0f} events/s; workers' CPU "
                f"{measured.workers_cpu_s / records_in * 1e6:.1f} us per event, all its "
                f"processes' {measured.all_cpu_s / records_in * 1e6:.1f} us; the partition "
                f"loops waited {measured.write_wait_s:.1f} s in all for acknowledgements"
            )
    medians = {workers: statistics.median(runs) for workers, runs in rates.items()}
    for workers, median in medians.items():
        print(f"{label}, {workers} worker(s): median {median:,.0f} events/s")
    if 1 in medians:
        for workers, median in medians.items():
            if workers != 1:
                ratios = [n / one for n, one in zip(rates[workers], rates[1], strict=True)]
                print(
                    f"{label}: {workers} workers / 1 worker = median of the runs' ratios "
                    f"{statistics.median(ratios):.2f}x ({', '.join(f'{r:.2f}' for r in ratios)}), "
                    f"of the medians {median / medians[1]:.2f}x (target >= 1.5x)"
                )


def main() -> None:
    if sys.argv[1:2] == ["--worker"]:  # run_in_worker's child: one timed run, as JSON
        timed = run_once(Path(sys.argv[2]), sys.argv[3], sys.argv[4])
        print(orjson.dumps(tuple(timed._replace(rss=peak_rss()))).decode())
        return
    if sys.argv[1:2] == ["--plain-worker"]:  # run_plain_in_worker's child
        timed = run_plain(int(sys.argv[2]), sys.argv[3])
        print(orjson.dumps(tuple(timed._replace(rss=peak_rss()))).decode())
        return
    if sys.argv[1:2] == ["--guarantee-worker"]:  # compare_guarantees's child
        print(orjson.dumps(run_guarantee(*sys.argv[2:7])).decode())
        return
    if sys.argv[1:2] == ["--metrics-worker"]:  # compare_metrics's child
        measured = run_metered(Path(sys.argv[2]), sys.argv[3], metrics="--metrics" in sys.argv)
        print(orjson.dumps(tuple(measured)).decode())
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=5, help="timed runs (each a new group)")
    parser.add_argument("--dir", type=Path, default=None, help="where to put the data dir")
    parser.add_argument("--only", choices=sorted(WORKLOADS), default=None)
    parser.add_argument("--profile", choices=sorted(WORKLOADS), default=None)
    parser.add_argument("--restore-keys", type=int, default=1_000_000)
    parser.add_argument("--bootstrap", metavar="HOST:PORT", help="also W1 on this cluster")
    parser.add_argument("--broker", action="store_true", help="also W1 on headwater broker")
    parser.add_argument("--apache-kafka", action="store_true", help="also W1 on Apache Kafka")
    parser.add_argument(
        "--workers",
        type=lambda text: [int(n) for n in text.split(",")],
        default=None,
        help="also W1 under headwater worker with these worker counts (e.g. 1,2) over the "
        "supervisor's broker; the worker counts on a cluster too (default there: 1,2)",
    )
    parser.add_argument(
        "--metrics-cost", action="store_true", help="compare W1 with metrics on and off"
    )
    parser.add_argument(
        "--exactly-once",
        action="store_true",
        help="compare W1 and W2 with exactly_once and at_least_once (interleaved) on the "
        "clusters asked for (instead of the worker counts), else on the data directory",
    )
    parser.add_argument(
        "--before",
        type=Path,
        default=None,
        metavar="DIR",
        help="also run each workload with an earlier version's packages, found under DIR "
        "(DIR/headwater/store, ...: put first on the workers' PYTHONPATH), interleaved, "
        "and print the ratios now / before",
    )
    parser.add_argument(
        "--baseline",
        action="store_true",
        help="also run each workload's plain loop, interleaved, and print the ratios to it",
    )
    parser.add_argument(
        "--default-malloc",
        action="store_true",
        help="run the workers with glibc's default heap trimming (see the docstring)",
    )
    args = parser.parse_args()
    if args.default_malloc:
        WORKER_ENV.clear()
    root = Path(tempfile.mkdtemp(prefix="pipeline-bench-", dir=args.dir))
    data = root / "data"
    workloads = [args.only] if args.only else ["W1", "W2"]
    try:
        if args.bootstrap:
            bench_cluster(f"cluster at {args.bootstrap}", args.bootstrap, args, root)
        if args.broker:
            with headwater_broker(root) as bootstrap:
                bench_cluster("headwater broker", bootstrap, args, root)
        if args.apache_kafka:
            with apache_kafka(root) as kafka:
                if kafka is not None:
                    bench_cluster("Apache Kafka", kafka, args, root)
        if args.exactly_once and (args.bootstrap or args.broker or args.apache_kafka):
            return
        started = time.perf_counter()
        anyio.run(load, data, args.events, backend="trio")
        loaded_s = time.perf_counter() - started
        print(f"loaded {args.events:,} events into 4 partitions in {loaded_s:.1f} s")
        if args.exactly_once:
            compare_guarantees("data directory", f"{DATA_PREFIX}{data}", args, topic="clicks")
            return
        if args.workers:
            label = "headwater worker (the supervisor's broker)"
            where = ["--data", str(data)]
            bench_workers(label, root, where, "clicks", counts=args.workers, args=args)
        if args.metrics_cost:
            compare_metrics(data, args.events, args.runs)
            return
        rates: dict[str, list[float]] = {w: [] for w in workloads}
        peaks: dict[str, list[int]] = {w: [] for w in workloads}
        plain: dict[str, list[float]] = {w: [] for w in workloads}
        cpu: dict[str, list[float]] = {w: [] for w in workloads}  # CPU us per event
        plain_cpu: dict[str, list[float]] = {w: [] for w in workloads}
        for run in range(1, args.runs + 1):
            for workload in workloads:  # interleaved: both see the same machine
                if args.baseline:
                    timed = run_plain_in_worker(args.events, workload)
                    plain[workload].append(timed.records_in / timed.elapsed_s)
                    plain_cpu[workload].append(timed.cpu_s / timed.records_in * 1e6)
                    print(
                        f"plain {workload} run {run}: {timed.records_in:,} events in "
                        f"{timed.elapsed_s:.2f} s = {plain[workload][-1]:,.0f} events/s "
                        f"({timed.records_out:,} written); {describe_usage(timed, args.events)}"
                    )
                versions = [None, args.before] if args.before else [None]
                for version in versions if run % 2 else versions[::-1]:
                    label = workload if version is None else f"{workload} before"
                    name = f"{workload.lower()}-{run}{'-before' if version else ''}"
                    timed = run_in_worker(data, name, workload, version)
                    assert timed.records_in >= args.events, (timed.records_in, args.events)
                    rate = args.events / timed.elapsed_s
                    rates[label] = [*rates.get(label, []), rate]
                    peaks[label] = [*peaks.get(label, []), timed.rss]
                    cpu[label] = [*cpu.get(label, []), timed.cpu_s / args.events * 1e6]
                    print(
                        f"{label} run {run}: {args.events:,} events in {timed.elapsed_s:.2f} s "
                        f"= {rate:,.0f} events/s end to end ({timed.records_out:,} written, "
                        f"peak RSS {timed.rss / 2**20:,.0f} MiB); "
                        f"{describe_usage(timed, args.events)}"
                    )
        medians = {w: statistics.median(r) for w, r in rates.items() if r}
        for workload, median in medians.items():
            print(
                f"{workload} median of {len(rates[workload])} runs: {median:,.0f} events/s, "
                f"peak RSS {max(peaks[workload]) / 2**20:,.0f} MiB"
            )
        if "W1" in medians and "W2" in medians:
            print(f"W2 / W1 = {medians['W2'] / medians['W1']:.2f} (target >= 0.70)")
        for workload in workloads if args.before else ():
            now, then = f"{workload}", f"{workload} before"
            paired = statistics.median(a / b for a, b in zip(rates[now], rates[then], strict=True))
            paired_cpu = statistics.median(a / b for a, b in zip(cpu[now], cpu[then], strict=True))
            print(
                f"{workload} now / before: events/s median of the runs' ratios {paired:.2f}, "
                f"medians {medians[now]:,.0f} / {medians[then]:,.0f}; CPU per event median "
                f"of the runs' ratios {paired_cpu:.2f}, medians "
                f"{statistics.median(cpu[now]):.2f} / {statistics.median(cpu[then]):.2f} us"
            )
        targets = {"W1": 0.6, "W2": 0.5}
        for workload in workloads if args.baseline else ():
            mine, theirs = rates[workload], plain[workload]
            paired = statistics.median(a / b for a, b in zip(mine, theirs, strict=True))
            print(
                f"{workload} / plain {workload}: median of the runs' ratios {paired:.2f} "
                f"(target >= {targets[workload]}); medians {medians[workload]:,.0f} / "
                f"{statistics.median(theirs):,.0f} events/s = "
                f"{medians[workload] / statistics.median(theirs):.2f}"
            )
            per_run = zip(plain_cpu[workload], cpu[workload], strict=True)
            cpu_ratio = statistics.median(a / b for a, b in per_run)
            print(
                f"{workload} / plain {workload} by CPU time per event: median of the runs' "
                f"ratios {cpu_ratio:.2f}; medians {statistics.median(cpu[workload]):.2f} / "
                f"{statistics.median(plain_cpu[workload]):.2f} us/event"
            )
        if args.restore_keys:
            memory, disk, local = anyio.run(restore_times, root, args.restore_keys)
            keys = args.restore_keys
            print(
                f"restore of a {keys:,}-key store: from its changelog into memory {memory:.2f} s"
                f" (target <= 3 s), into a disk store {disk:.2f} s; from the disk store's "
                f"local copy {local:.3f} s (target <= 0.5 s)"
            )
        if args.profile:
            profiler = cProfile.Profile()
            profiler.enable()
            timed = run_once(data, f"{args.profile}-profiled", args.profile)
            profiler.disable()
            print(
                f"\nprofiled {args.profile} run (slower under the profiler): "
                f"{timed.records_in / timed.elapsed_s:,.0f} events/s"
            )
            pstats.Stats(profiler).sort_stats("tottime").print_stats(20)
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
