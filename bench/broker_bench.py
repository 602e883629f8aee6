"""Kafka-protocol figures for ``headwater broker`` (or any Kafka-protocol broker).

Prints, with confluent-kafka (librdkafka) as the client:

* produce throughput: ``--records`` values of ``--value-bytes`` bytes, acks=all,
  linger.ms=5, to a fresh topic (``--partitions``, default 1);
* consume throughput: the same records read back by a fresh consumer group from the
  earliest offset, timed from the first record (after the group's join and sync;
  ``fetch.queue.backoff.ms`` is lowered so that librdkafka does not idle a second
  whenever the broker gets ahead of the Python loop);
* end-to-end latency p50/p99/max: a producer paced at ``--rate`` records/s (acks=all,
  linger.ms ``--latency-linger-ms``, default 1) and a consumer in another process; a
  record's latency is the consumer's monotonic clock minus the time the producer wrote
  into it; the first second is a warm-up and is not counted;
* the broker's CPU profile top entries: py-spy samples the broker's event-loop thread
  during the produce and consume runs (when the broker is started here and py-spy is
  installed, ``pip install -e '.[bench]'``; else cProfile inside the broker through
  ``HEADWATER_BROKER_PROFILE``).

Usage::

    .venv/bin/python bench/broker_bench.py                         # starts headwater broker
    .venv/bin/python bench/broker_bench.py --bootstrap HOST:PORT   # any broker

Without ``--bootstrap`` the broker runs in a temporary data directory, with topics at
the default durability (``batch``: group commit, acknowledged after fsync).

``--metrics-cost`` measures what metrics cost instead: two brokers, one serving its
metrics (``--metrics``) and one without, each in a data directory of its own; ``--runs``
produce runs against each (a fresh topic every time), interleaved (on-off, then off-on,
...) so that the machine's drift weighs on both alike. It prints both medians and their
ratio (target: on at most 3% slower), and checks that a scrape of the first broker
counted the produce requests.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import multiprocessing
import os
import pstats
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from pipeline_bench import apache_kafka  # Apache Kafka started as the tests start it
from prometheus_client.parser import text_string_to_metric_families

HEADWATER = str(Path(sys.executable).with_name("headwater"))
PY_SPY = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
TARGETS = {"produce": 400_000, "consume": 500_000, "p99_ms": 10.0}


def start_broker(
    data: Path, profile_path: Path | None, *args: str, packages: Path | None = None
) -> tuple[subprocess.Popen[bytes], str]:
    """Start ``headwater broker`` on a free port; return the process and its address.

    :param packages: a folder holding another version's ``headwater/<package>`` folders,
        put first on the broker's ``PYTHONPATH`` (an A/B comparison).
    """
    env = dict(os.environ)
    if packages is not None:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(packages), env.get("PYTHONPATH")]))
    if profile_path is not None:
        env["HEADWATER_BROKER_PROFILE"] = str(profile_path)
    log_path = data.parent / f"{data.name}-broker.log"
    log = open(log_path, "wb")  # noqa: SIM115 - lives as long as the broker
    proc = subprocess.Popen(
        [HEADWATER, "broker", "--data", str(data), "--listen", "127.0.0.1:0", *args],
        stderr=log,
        env=env,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        text = log_path.read_text(errors="replace")
        found = re.search(r"listening on ([\d.]+):(\d+)", text)
        if found:
            return proc, f"{found[1]}:{found[2]}"
        if proc.poll() is not None:
            sys.exit(f"the broker exited early:\n{text}")
        time.sleep(0.05)
    proc.kill()
    sys.exit("the broker did not start listening within 30 s")


def create_topic(bootstrap: str, partitions: int) -> str:
    """Create a fresh topic; return its name."""
    name = f"bench-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for future in admin.create_topics([NewTopic(name, partitions, 1)]).values():
        future.result(timeout=30)
    return name


def produce(bootstrap: str, topic: str, count: int, value_bytes: int) -> float:
    """Produce ``count`` values with acks=all and linger 5 ms; return records/s."""
    failures: list[object] = []

    def report(err: object, msg: object) -> None:
        if err is not None:
            failures.append(err)

    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "acks": "all",
            "linger.ms": 5,
            "queue.buffering.max.messages": 1_000_000,
            "queue.buffering.max.kbytes": 1 << 20,
            "delivery.report.only.error": True,
            "on_delivery": report,  # once, not per call: the loop below is the client's cost
        }
    )
    value = b"v" * value_bytes
    send, poll = producer.produce, producer.poll
    start = time.perf_counter()
    for i in range(count):
        try:
            send(topic, value)
        except BufferError:
            poll(0.001)
            send(topic, value)
        if not i % 50_000:
            poll(0)
    left = producer.flush(120)
    elapsed = time.perf_counter() - start
    if left or failures:
        sys.exit(f"produce failed: {left} records unacknowledged, errors {failures[:3]}")
    return count / elapsed


def partitions_of(bootstrap: str, topic: str) -> int:
    """Return the partition count of ``topic``."""
    metadata = AdminClient({"bootstrap.servers": bootstrap}).list_topics(topic, timeout=10)
    return len(metadata.topics[topic].partitions)


def consume(bootstrap: str, topic: str, count: int) -> float:
    """Read ``count`` records from the earliest offset; return records/s."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"bench-{uuid.uuid4().hex[:8]}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "fetch.wait.max.ms": 100,
            # librdkafka pauses a partition's fetches for fetch.queue.backoff.ms (1 s) when
            # its local queue is full, i.e. when the broker is ahead of this Python loop.
            "fetch.queue.backoff.ms": 10,
        }
    )
    consumer.subscribe([topic])
    seen = 0
    start = None
    deadline = time.perf_counter() + 120
    while seen < count and time.perf_counter() < deadline:
        for message in consumer.consume(10_000, 0.5):
            if message.error() is not None:
                raise KafkaException(message.error())
            if start is None:
                # From the first record on: librdkafka spends its first ~0.5 s on an
                # offset-query timer, whatever the broker.
                start = time.perf_counter()
            seen += 1
    elapsed = time.perf_counter() - (start or 0.0)
    consumer.close()
    if seen < count:
        sys.exit(f"consume read {seen} of {count} records in 120 s")
    return seen / elapsed


def _latency_consumer(bootstrap: str, topic: str, count: int, ready: object, out: object) -> None:
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"bench-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
            "fetch.wait.max.ms": 100,
            "fetch.min.bytes": 1,
        }
    )
    consumer.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
    consumer.consume(1, 1.0)  # connected and fetching
    ready.set()  # type: ignore[attr-defined]
    latencies = []
    deadline = time.monotonic() + 120
    while len(latencies) < count and time.monotonic() < deadline:
        # poll() returns as soon as one record is there (consume(n, t) would wait for n);
        # then consume(n, 0) takes what else has arrived without waiting.
        first = consumer.poll(0.2)
        if first is None:
            continue
        for message in [first, *consumer.consume(1000, 0)]:
            if message.error() is None:
                sent = int(message.value()[:20])
                latencies.append((sent, (time.monotonic_ns() - sent) / 1e6))
    consumer.close()
    out.put(latencies)  # type: ignore[attr-defined]


def latency(
    bootstrap: str,
    topic: str,
    rate: int,
    seconds: float,
    linger_ms: float,
    *,
    warmup_s: float = 1.0,
    stats: list[dict[str, Any]] | None = None,
) -> list[float]:
    """Produce at ``rate`` records/s; return the latency in ms of each record.

    Records sent in the first ``warmup_s`` seconds (connections, metadata, the first
    fetches) are sent but not counted; ``seconds`` of records are measured after them.
    With ``stats``, the producer's librdkafka statistics of each second after the
    warm-up are appended to it (see :func:`producer_stages`).
    """
    count = int(rate * (seconds + warmup_s))
    ctx = multiprocessing.get_context("spawn")
    ready, out = ctx.Event(), ctx.Queue()
    reader = ctx.Process(target=_latency_consumer, args=(bootstrap, topic, count, ready, out))
    reader.start()
    ready.wait(30)
    measured_from = time.monotonic_ns() + int(warmup_s * 1e9)

    def collect(text: str) -> None:
        if stats is not None and time.monotonic_ns() > measured_from + 1e9:  # a whole second
            stats.append(json.loads(text))

    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "acks": "all",
            "linger.ms": linger_ms,
            "delivery.report.only.error": True,
            **({"statistics.interval.ms": 1000, "stats_cb": collect} if stats is not None else {}),
        }
    )
    burst = max(rate // 1000, 1)  # records per millisecond
    start = time.monotonic()
    for i in range(0, count, burst):
        due = start + i / rate
        pause = due - time.monotonic()
        if pause > 0:
            time.sleep(pause)
        for _ in range(burst):
            producer.produce(topic, b"%020d" % time.monotonic_ns() + b"x" * 80, partition=0)
        producer.poll(0)
    producer.flush(60)
    received: list[tuple[int, float]] = out.get(timeout=150)
    reader.join(30)
    return [ms for sent, ms in received if sent >= measured_from]


#: librdkafka's producer windows, per broker (µs): produce() to the record's place in a
#: request (the linger), the request's wait to be written to the socket, and the produce
#: request's round trip (for a broker acknowledging after fsync, the fsync included).
PRODUCER_STAGES = (("linger", "int_latency"), ("send queue", "outbuf_latency"),
                   ("produce round trip", "rtt"))  # fmt: skip


def producer_stages(stats: list[dict[str, Any]]) -> dict[str, tuple[float, float]]:
    """Return each of :data:`PRODUCER_STAGES`' (p50, p99) in ms, the median over the
    one-second windows of ``stats`` of the broker the records went to."""
    found: dict[str, list[tuple[float, float]]] = collections.defaultdict(list)
    for window in stats:
        for broker in window["brokers"].values():
            if broker.get("nodeid", -1) < 0 or not broker["int_latency"]["cnt"]:
                continue  # the bootstrap connection, or a broker the records did not go to
            for name, key in PRODUCER_STAGES:
                found[name].append((broker[key]["p50"] / 1e3, broker[key]["p99"] / 1e3))
    return {
        name: (statistics.median(p[0] for p in pairs), statistics.median(p[1] for p in pairs))
        for name, pairs in found.items()
    }


def scrape_means(url: str) -> dict[str, tuple[float, float]]:
    """Return (count, seconds) so far of the broker's produce requests and its fsyncs,
    and (count, 0) of all its requests."""
    totals: dict[str, list[float]] = collections.defaultdict(lambda: [0.0, 0.0])
    for family in text_string_to_metric_families(httpx.get(url, timeout=10).text):
        for sample in family.samples:
            if sample.name.startswith("headwater_broker_request_seconds"):
                if sample.name.endswith("_count"):
                    totals["request"][0] += sample.value
                if sample.labels.get("api") != "PRODUCE":
                    continue
                name = "produce request"
            elif sample.name.startswith("headwater_store_fsync_seconds"):
                name = "fsync"
            else:
                continue
            if sample.name.endswith("_count"):
                totals[name][0] += sample.value
            elif sample.name.endswith("_sum"):
                totals[name][1] += sample.value
    return {name: (count, total) for name, (count, total) in totals.items()}


def compare_latency(args: argparse.Namespace) -> None:
    """Measure end-to-end latency on headwater broker and, with ``--apache-kafka``, on
    Apache Kafka, in alternating rounds; print each round, the stages, and the medians."""
    temp = Path(tempfile.mkdtemp(prefix="broker-bench-"))
    brokers: list[subprocess.Popen[bytes]] = []
    try:
        clusters: dict[str, str] = {}
        urls: dict[str, str] = {}
        versions = {"headwater": None}
        if args.before is not None:
            versions["before"] = args.before
        for name, packages in versions.items():
            broker, address = start_broker(
                temp / name, None, "--metrics", "127.0.0.1:0", packages=packages
            )
            brokers.append(broker)
            args.broker_pids[name] = broker.pid
            url = re.search(r"serving metrics at (\S+)", (temp / f"{name}-broker.log").read_text())
            assert url is not None, "the broker did not say where it serves its metrics"
            clusters[name], urls[name] = address, url[1]
        with contextlib.ExitStack() as stack:
            if args.apache_kafka:
                kafka = stack.enter_context(apache_kafka(temp))
                if kafka is not None:
                    clusters["apache-kafka"] = kafka
            results: dict[str, list[tuple[float, float]]] = collections.defaultdict(list)
            for round_ in range(1, args.rounds + 1):
                for name, bootstrap in clusters.items():
                    metrics = urls.get(name)
                    results[name].append(latency_round(round_, name, bootstrap, metrics, args))
        for name, pairs in results.items():
            print(f"{name}: median of {len(pairs)} rounds p50 "
                  f"{statistics.median(p for p, _ in pairs):.2f} ms, p99 "
                  f"{statistics.median(p for _, p in pairs):.2f} ms "
                  f"(target p50 <= 2 ms, p99 <= 5 ms)")  # fmt: skip
        if "before" in results:
            pairs = list(zip(results["headwater"], results["before"], strict=True))
            p50 = statistics.median(now[0] / then[0] for now, then in pairs)
            p99 = statistics.median(now[1] / then[1] for now, then in pairs)
            print(f"now / before, median of the rounds' ratios: p50 {p50:.3f}, p99 {p99:.3f}")
    finally:
        for broker in brokers:
            broker.send_signal(signal.SIGTERM)
            broker.wait(30)
        shutil.rmtree(temp, ignore_errors=True)


def latency_round(
    round_: int, name: str, bootstrap: str, metrics: str | None, args: argparse.Namespace
) -> tuple[float, float]:
    """Measure the latency once on ``bootstrap``; print it with the producer's stages
    and, given the broker's ``metrics`` URL, its mean produce request and fsync times;
    return (p50, p99) in ms."""
    before = scrape_means(metrics) if metrics else {}
    pid = args.broker_pids.get(name, 0)
    cpu_before = cpu_seconds(pid) if metrics else 0.0
    stats: list[dict[str, Any]] = []
    topic = create_topic(bootstrap, 1)
    ms = latency(
        bootstrap, topic, args.rate, args.latency_seconds, args.latency_linger_ms, stats=stats
    )
    p50, p99 = percentile(ms, 0.5), percentile(ms, 0.99)
    stages = ", ".join(f"{part} {a:.2f}/{b:.2f}" for part, (a, b) in producer_stages(stats).items())
    print(f"round {round_} {name:12} p50 {p50:5.2f} ms, p99 {p99:5.2f} ms, max {max(ms):6.2f} ms"
          f" | producer p50/p99 ms: {stages}")  # fmt: skip
    if metrics:
        cpu = cpu_seconds(pid) - cpu_before
        after = scrape_means(metrics)
        means = []
        for part in ("produce request", "fsync"):
            count, seconds = after.get(part, (0.0, 0.0))
            count_before, seconds_before = before.get(part, (0.0, 0.0))
            if count > count_before:
                mean_ms = (seconds - seconds_before) / (count - count_before) * 1e3
                means.append(f"{part} {mean_ms:.3f} ms (x{count - count_before:,.0f})")
        requests = after["request"][0] - before.get("request", (0.0, 0.0))[0]
        means.append(f"CPU {cpu / requests * 1e6:.0f} us per request (x{requests:,.0f})")
        print(f"{'':21}broker means: {', '.join(means)}")
    return p50, p99


def percentile(values: list[float], fraction: float) -> float:
    """Return the value below which ``fraction`` of ``values`` lie."""
    ordered = sorted(values)
    return ordered[min(int(len(ordered) * fraction), len(ordered) - 1)]


# Frames where the event loop waits for I/O: idle, not CPU.
_IDLE_FRAMES = ("EpollIOManager.get_events", "KqueueIOManager.get_events")


def top_entries(raw_profile: Path, limit: int) -> tuple[float, list[tuple[float, str]]]:
    """Read a py-spy raw profile (``--threads --idle``) of the broker's event-loop thread.

    Returns the share of samples in which the loop was busy, and the functions with the
    most own time as (share of busy samples, function). Worker threads (fsync) and the
    loop's waits in epoll are left out: what is left is the CPU the broker's one thread
    spends.
    """
    own: collections.Counter[str] = collections.Counter()
    total = busy = 0
    for line in raw_profile.read_text(errors="replace").splitlines():
        stack, _, samples = line.rpartition(" ")
        frames = stack.split(";")
        if not samples.isdigit() or "MainThread" not in frames[0]:
            continue
        total += int(samples)
        if frames[-1].startswith(_IDLE_FRAMES):
            continue
        busy += int(samples)
        own[frames[-1]] += int(samples)
    if not busy:
        return 0.0, []
    return busy / total, [(n / busy, frame) for frame, n in own.most_common(limit)]


def start_profiler(pid: int, path: Path, seconds: int) -> subprocess.Popen[bytes] | None:
    """Start py-spy sampling ``pid`` into ``path``; ``None`` when py-spy cannot."""
    if not Path(PY_SPY).exists():
        return None
    return subprocess.Popen(
        [PY_SPY, "record", "--pid", str(pid), "--format", "raw", "--output", str(path),
         "--duration", str(seconds), "--rate", "500", "--nonblocking", "--threads", "--idle"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip


def main() -> None:
    """Run the benchmark and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bootstrap", help="HOST:PORT of a running broker")
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--value-bytes", type=int, default=100)
    parser.add_argument("--partitions", type=int, default=1)
    parser.add_argument("--rate", type=int, default=50_000, help="records/s for latency")
    parser.add_argument("--latency-seconds", type=float, default=10.0)
    parser.add_argument("--latency-linger-ms", type=float, default=1.0)
    parser.add_argument("--top", type=int, default=15, help="profile entries to print")
    parser.add_argument(
        "--metrics-cost", action="store_true", help="compare produce with metrics on and off"
    )
    parser.add_argument("--runs", type=int, default=5, help="produce runs each (--metrics-cost)")
    parser.add_argument(
        "--latency-only",
        action="store_true",
        help="only the latency, in --rounds rounds, with librdkafka's and the broker's stages",
    )
    parser.add_argument(
        "--apache-kafka", action="store_true", help="with --latency-only: Apache Kafka too"
    )
    parser.add_argument("--rounds", type=int, default=3, help="latency rounds (--latency-only)")
    parser.add_argument(
        "--before",
        type=Path,
        metavar="DIR",
        help="with --latency-only: also a broker of an earlier version, its packages found "
        "under DIR (DIR/headwater/store, ...), in alternating rounds, and the ratios now / before",
    )
    args = parser.parse_args()
    args.broker_pids = {}
    if args.latency_only:
        compare_latency(args)
        return
    if args.metrics_cost:
        compare_metrics(args.records, args.value_bytes, args.partitions, args.runs)
        return

    temp = Path(tempfile.mkdtemp(prefix="broker-bench-"))
    broker = None
    profile_raw = temp / "profile.txt"
    cprofile = temp / "broker.prof"
    try:
        bootstrap = args.bootstrap
        if bootstrap is None:
            use_cprofile = not Path(PY_SPY).exists()
            broker, bootstrap = start_broker(temp / "data", cprofile if use_cprofile else None)
            print(f"started headwater broker at {bootstrap} (data in {temp / 'data'})")
        topic = create_topic(bootstrap, args.partitions)
        profiler = None
        if broker is not None:
            profiler = start_profiler(broker.pid, profile_raw, 600)
        produce_rate = produce(bootstrap, topic, args.records, args.value_bytes)
        print(f"produce: {produce_rate:12,.0f} records/s  (target >= {TARGETS['produce']:,})")
        consume_rate = consume(bootstrap, topic, args.records)
        print(f"consume: {consume_rate:12,.0f} records/s  (target >= {TARGETS['consume']:,})")
        if profiler is not None:
            profiler.send_signal(signal.SIGINT)
            profiler.wait(30)
        latency_topic = create_topic(bootstrap, 1)
        latencies = latency(
            bootstrap, latency_topic, args.rate, args.latency_seconds, args.latency_linger_ms
        )
        print(
            f"latency at {args.rate:,} records/s ({len(latencies):,} records): "
            f"p50 {percentile(latencies, 0.5):.2f} ms, p99 {percentile(latencies, 0.99):.2f} ms"
            f", max {max(latencies):.2f} ms, mean {statistics.fmean(latencies):.2f} ms  "
            f"(target p99 <= {TARGETS['p99_ms']:g} ms)"
        )
        if broker is not None:
            broker.send_signal(signal.SIGTERM)
            broker.wait(30)
            broker = None
            print_profile(profile_raw, cprofile, args.top)
    finally:
        if broker is not None:
            broker.kill()
        shutil.rmtree(temp, ignore_errors=True)


def cpu_seconds(pid: int) -> float:
    """Return the CPU time (user + system, every thread) process ``pid`` has used."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def compare_metrics(records: int, value_bytes: int, partitions: int, runs: int) -> None:
    """Produce to a broker with metrics on and one with them off, interleaved."""
    temp = Path(tempfile.mkdtemp(prefix="broker-bench-"))
    brokers: list[subprocess.Popen[bytes]] = []
    try:
        on, on_address = start_broker(temp / "on", None, "--metrics", "127.0.0.1:0")
        brokers.append(on)
        off, off_address = start_broker(temp / "off", None)
        brokers.append(off)
        url = re.search(r"serving metrics at (\S+)", (temp / "on-broker.log").read_text())
        assert url is not None, "the broker did not say where it serves its metrics"
        address = {True: on_address, False: off_address}
        pid = {True: on.pid, False: off.pid}
        rates: dict[bool, list[float]] = {True: [], False: []}
        cpu: dict[bool, list[float]] = {True: [], False: []}  # the broker's CPU µs per record
        for metrics in (True, False):  # warm-up, not counted: first connections, first files
            produce(address[metrics], create_topic(address[metrics], partitions), records // 10,
                    value_bytes)  # fmt: skip
        for run in range(1, runs + 1):
            for metrics in (True, False) if run % 2 else (False, True):
                topic = create_topic(address[metrics], partitions)
                before = cpu_seconds(pid[metrics])
                rates[metrics].append(produce(address[metrics], topic, records, value_bytes))
                cpu[metrics].append((cpu_seconds(pid[metrics]) - before) / records * 1e6)
                print(
                    f"produce run {run}, metrics {'on ' if metrics else 'off'}: "
                    f"{rates[metrics][-1]:12,.0f} records/s, broker CPU "
                    f"{cpu[metrics][-1]:.2f} µs/record"
                )
        median_on, median_off = statistics.median(rates[True]), statistics.median(rates[False])
        cpu_on, cpu_off = statistics.median(cpu[True]), statistics.median(cpu[False])
        paired = statistics.median(a / b for a, b in zip(rates[True], rates[False], strict=True))
        paired_cpu = statistics.median(a / b for a, b in zip(cpu[True], cpu[False], strict=True))
        print(
            f"produce median of {runs} runs each: metrics on {median_on:,.0f} records/s, off "
            f"{median_off:,.0f} records/s, on/off = {median_on / median_off:.3f}, median of "
            f"the runs' pairs {paired:.3f} (target >= 0.97); broker CPU per record on "
            f"{cpu_on:.2f} µs, off {cpu_off:.2f} µs, on/off = {cpu_on / cpu_off:.3f}, median of"
            f" the pairs {paired_cpu:.3f}"
        )
        scraped = httpx.get(url[1], timeout=10).text
        counted = sum(
            sample.value
            for family in text_string_to_metric_families(scraped)
            for sample in family.samples
            if sample.name == "headwater_broker_requests_total"
            and sample.labels["api"] == "PRODUCE"
        )
        assert counted > 0, "the broker with metrics on counted no produce request"
        print(f"the broker with metrics on counted {counted:,.0f} produce requests")
    finally:
        for proc in brokers:
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)
        shutil.rmtree(temp, ignore_errors=True)


def print_profile(profile_raw: Path, cprofile: Path, limit: int) -> None:
    """Print the broker's profile top entries (py-spy's, else cProfile's)."""
    if profile_raw.exists():
        busy, entries = top_entries(profile_raw, limit)
        print(
            f"broker CPU profile during produce + consume (py-spy): the event loop was busy "
            f"{busy:.0%} of the time; top {limit} by own time:"
        )
        for share, frame in entries:
            print(f"  {share:6.1%}  {frame}")
    elif cprofile.exists():
        print(f"broker CPU profile (cProfile, internal time), top {limit}:")
        pstats.Stats(str(cprofile)).sort_stats("tottime").print_stats(limit)
    else:
        print("no broker profile (py-spy is not installed and cProfile left no file)")


if __name__ == "__main__":
    main()
