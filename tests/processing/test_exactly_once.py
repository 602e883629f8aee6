"""Exactly-once processing: ``guarantee="exactly_once"``, on a Kafka-protocol cluster and
on a data directory (the store's own transactions).

A worker (``headwater run app.py`` in a subprocess) is killed with SIGKILL at random
moments, restarted each time under the same ``instance_id`` (so it fences its
predecessor's producer and aborts the transaction that one left open), then run until
caught up; what a read_committed reader sees of its output must equal an uninterrupted
run's exactly: the same records, none twice, none missing. W1-like (filter, map, to)
and W2-like (key_by, tumbling window, aggregate, final) apps, on ``headwater broker``
and on a data directory (the app owns it: embedded); the long run
(``HEADWATER_EOS_CYCLES=N pytest -m slow ...``) does N kill cycles per app on both
clusters and on a data directory.

The uninterrupted run is the same app file under another name (its own group and
output topic), on the same input. Inputs are on one partition for W2: its repartition
topic's partitions then each have one writer, so their order, and so the windows'
results, do not depend on timing.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import anyio
import confluent_kafka as ck
import orjson
import pytest

from headwater.processing import App, AppConfig, TopologyError, windows
from headwater.store import IsolationLevel, NewRecord, TopicConfig, open_store

from .cluster import TIMEOUT_S, create_topic, produce, unique

HEADWATER = str(Path(sys.executable).with_name("headwater"))
SEED = int(os.environ.get("HEADWATER_EOS_SEED", "1717"))
QUICK_CYCLES = 2
SLOW_CYCLES = int(os.environ.get("HEADWATER_EOS_CYCLES", "0"))
#: The events' first time: now, to the second (so the windows hold the same events
#: whatever it is). Event times far in the past would be lost on Apache Kafka: a W2
#: app's results carry them as their timestamps, the first transaction marker (stamped
#: with the broker's clock) rolls the output's first segment, and the broker deletes a
#: closed segment whose records are older than its retention (7 days) at its next check
#: (every 5 minutes), so the first window's results went missing from whichever run's
#: output that check found before the test read it.
EPOCH_MS = time.time_ns() // 1_000_000_000 * 1000

APP = """
import time

from headwater.processing import App, AppConfig, windows

config = AppConfig(
    commit_interval_ms=100, max_batch_bytes=4096, session_timeout_ms=6000,
    guarantee="exactly_once", instance_id="worker-1",
)
app = App("{name}", config=config)


def slowly(event):
    time.sleep(0.0002)  # a little work per event, so that a kill lands midway
    return event


clicks = app.stream("{topic}").map(slowly)
if "{workload}" == "W1":
    (
        clicks.filter(lambda e: e["ms"] > 100)
        .map(lambda e: {**e, "slow": e["ms"] > 500})
        .to("{name}-out")
    )
else:
    (
        clicks.filter(lambda e: e["ms"] > 100)
        .key_by(lambda e: e["user"])
        .window(windows.tumbling(seconds=1), timestamp=lambda e: e["ts"], grace_ms=0)
        .aggregate(
            initial=lambda: {"count": 0, "sum": 0},
            add=lambda acc, e: {"count": acc["count"] + 1, "sum": acc["sum"] + e["ms"]},
            name="per-user",
        )
        .final()
        .to("{name}-out")
    )
"""


def events(count: int) -> list[bytes]:
    """Return ``count`` W1 events (JSON), from the fixed seed, from ``EPOCH_MS`` on."""
    rng = random.Random(SEED)
    out, ts = [], EPOCH_MS
    for _ in range(count):
        ts += rng.choice((0, 1, 1, 2))
        event = {"user": f"u{rng.randrange(50)}", "ts": ts, "ms": rng.randrange(1001)}
        out.append(orjson.dumps(event))
    return out


def read_committed(bootstrap: str, topic: str) -> list[list[tuple[bytes | None, bytes | None]]]:
    """Return, per partition, the (key, value) of every record of ``topic`` that a
    read_committed consumer sees, up to the partition's last stable offset (librdkafka
    says when it reached it: the end lies past transaction markers no record shows).
    Every partition must still start at offset 0: records the cluster deleted (retention)
    are not the app's to answer for."""
    consumer = ck.Consumer({
        "bootstrap.servers": bootstrap,
        "group.id": unique("reader"),
        "enable.auto.commit": False,
        "isolation.level": "read_committed",
        "enable.partition.eof": True,
    })  # fmt: skip
    try:
        count = len(consumer.list_topics(topic, timeout=TIMEOUT_S).topics[topic].partitions)
        for p in range(count):
            low, _ = consumer.get_watermark_offsets(ck.TopicPartition(topic, p), TIMEOUT_S)
            assert low == 0, f"{topic}/{p}: the cluster deleted the records before {low}"
        consumer.assign([ck.TopicPartition(topic, p, ck.OFFSET_BEGINNING) for p in range(count)])
        out: list[list[tuple[bytes | None, bytes | None]]] = [[] for _ in range(count)]
        left = set(range(count))
        while left:
            message = consumer.poll(TIMEOUT_S)
            assert message is not None, f"{topic}: no end of {left} within {TIMEOUT_S} s"
            error = message.error()
            p = message.partition()
            assert p is not None
            if error is not None:
                assert error.code() == ck.KafkaError._PARTITION_EOF, error
                left.discard(p)
                continue
            out[p].append((message.key(), message.value()))
        return out
    finally:
        consumer.close()


def read_committed_in(data: Path, topic: str) -> list[list[tuple[bytes | None, bytes | None]]]:
    """Return, per partition, the (key, value) of every record of ``topic`` in the data
    directory ``data`` that a read_committed reader sees."""

    async def read() -> list[list[tuple[bytes | None, bytes | None]]]:
        async with open_store(data) as store:
            out = []
            for p in range(store.topic_config(topic).partitions):
                partition = store.partition(topic, p)
                records = await partition.read_records(
                    0, 1 << 30, isolation=IsolationLevel.READ_COMMITTED
                )
                out.append([(r.key, r.value) for r in records])
            return out

    return anyio.run(read)


def produce_into(data: Path, topic: str, values: list[bytes], partitions: int) -> None:
    """Create ``topic`` in the data directory ``data`` and append ``values`` round-robin."""

    async def write() -> None:
        async with open_store(data) as store:
            await store.create_topic(topic, TopicConfig(partitions=partitions))
            for p in range(partitions):
                records = [NewRecord(value) for value in values[p::partitions]]
                for start in range(0, len(records), 500):
                    await store.partition(topic, p).append(records[start : start + 500])

    anyio.run(write)


def start(app: Path, where: str | Path, *args: str) -> subprocess.Popen[str]:
    """Start ``headwater run app`` on the cluster at ``where`` (a bootstrap), or on the
    data directory ``where`` (a path)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HEADWATER_")}
    place = ["--data", str(where)] if isinstance(where, Path) else ["--bootstrap", where]
    return subprocess.Popen(
        [HEADWATER, "run", str(app), *place, *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def finish(app: Path, where: str | Path) -> str:
    """Run ``app`` until caught up (see :func:`start`); return its stderr (it must succeed)."""
    worker = start(app, where, "--until-caught-up")
    try:
        _, stderr = worker.communicate(timeout=180)
    finally:
        worker.kill()
    assert worker.returncode == 0, stderr
    assert "Traceback" not in stderr, stderr
    return stderr


def write_app(tmp_path: Path, name: str, topic: str, workload: str) -> Path:
    path = tmp_path / f"{name}.py"
    text = APP.replace("{name}", name).replace("{topic}", topic)
    path.write_text(text.replace("{workload}", workload))
    return path


def killed_and_restarted(where: str | Path, tmp_path: Path, workload: str, cycles: int) -> None:
    """Kill a worker ``cycles`` times at random moments, then finish; compare with an
    uninterrupted run. ``where`` is a cluster's bootstrap, or a data directory (a path)."""
    rng = random.Random(f"{SEED}-{workload}-{cycles}")
    topic = unique(f"eos-{workload.lower()}-in")
    partitions = 2 if workload == "W1" else 1
    if isinstance(where, Path):
        produce_into(where, topic, events(6000), partitions)
    else:
        create_topic(where, topic, partitions)
        produce(where, topic, events(6000), partitions=partitions)

    def output(name: str) -> list[list[tuple[bytes | None, bytes | None]]]:
        topic = f"{name}-out"
        if isinstance(where, Path):
            return read_committed_in(where, topic)
        return read_committed(where, topic)

    reference = unique("eos-ref")
    reference_log = finish(write_app(tmp_path, reference, topic, workload), where)
    expected = output(reference)

    name = unique("eos-kill")
    app = write_app(tmp_path, name, topic, workload)
    for _ in range(cycles):
        worker = start(app, where)
        try:
            # A random moment: starting up, restoring, processing, committing.
            with contextlib.suppress(subprocess.TimeoutExpired):
                worker.wait(timeout=rng.uniform(0.5, 3.0))
            assert worker.returncode is None, worker.communicate()[1]
        finally:
            worker.send_signal(signal.SIGKILL)
            worker.communicate(timeout=60)
    log = finish(app, where)
    got = output(name)

    print(f"uninterrupted run:\n{reference_log}\nlast run:\n{log}")  # shown if it fails
    assert sum(map(len, expected)) > 0
    assert Counter(r for part in got for r in part) == Counter(r for part in expected for r in part)
    if workload == "W1":  # per partition, in the same order too (a window's results
        # for different keys come in the order of the keys in the store, which a restore
        # may change)
        assert got == expected


@pytest.mark.parametrize("workload", ["W1", "W2"])
def test_killed_workers_commit_each_output_once(
    headwater_broker: object, tmp_path: Path, workload: str
) -> None:
    bootstrap = headwater_broker.bootstrap  # type: ignore[attr-defined]
    killed_and_restarted(bootstrap, tmp_path, workload, QUICK_CYCLES)


@pytest.mark.parametrize("workload", ["W1", "W2"])
def test_killed_embedded_apps_commit_each_output_once(tmp_path: Path, workload: str) -> None:
    killed_and_restarted(tmp_path / "data", tmp_path, workload, QUICK_CYCLES)


@pytest.mark.slow
@pytest.mark.skipif(not SLOW_CYCLES, reason="set HEADWATER_EOS_CYCLES=N for the long run")
@pytest.mark.parametrize("workload", ["W1", "W2"])
def test_killed_workers_commit_each_output_once_over_many_cycles(
    cluster: str, tmp_path: Path, workload: str
) -> None:
    killed_and_restarted(cluster, tmp_path, workload, SLOW_CYCLES)


@pytest.mark.slow
@pytest.mark.skipif(not SLOW_CYCLES, reason="set HEADWATER_EOS_CYCLES=N for the long run")
@pytest.mark.parametrize("workload", ["W1", "W2"])
def test_killed_embedded_apps_commit_each_output_once_over_many_cycles(
    tmp_path: Path, workload: str
) -> None:
    killed_and_restarted(tmp_path / "data", tmp_path, workload, SLOW_CYCLES)


async def test_exactly_once_needs_a_backend_that_commits_transactions() -> None:
    from headwater.processing._backends.memory import MemoryBackend

    app = App("eos", guarantee="exactly_once")
    app.stream("in", partitions=1).to("out")
    with pytest.raises(TopologyError, match="needs a backend that commits transactions"):
        await app.run_async(backend=MemoryBackend(), until_caught_up=True)


def test_a_bad_guarantee_is_refused() -> None:
    with pytest.raises(TopologyError, match="guarantee must be"):
        App("eos", guarantee="twice")
    with pytest.raises(TopologyError, match="instance_id"):
        AppConfig(instance_id="a b")


def test_a_fenced_worker_stops_and_its_successor_commits_each_output_once(
    headwater_broker: object, tmp_path: Path
) -> None:
    bootstrap = headwater_broker.bootstrap  # type: ignore[attr-defined]
    topic = unique("eos-fence-in")
    create_topic(bootstrap, topic, 2)
    produce(bootstrap, topic, events(6000), partitions=2)
    reference = unique("eos-ref")
    finish(write_app(tmp_path, reference, topic, "W1"), bootstrap)
    name = unique("eos-fence")
    app = write_app(tmp_path, name, topic, "W1")

    first = start(app, bootstrap)
    try:
        # Once the first worker has committed outputs, a second one with the same
        # instance id starts: it fences the first, which stops without committing more.
        wait_for_committed(bootstrap, f"{name}-out", 200)
        second = start(app, bootstrap)
        try:
            _, stderr = first.communicate(timeout=60)
            assert first.returncode == 0, stderr
            assert "Traceback" not in stderr, stderr
            assert "stopping" in stderr and "fenced" in stderr, stderr
        finally:
            second.send_signal(signal.SIGTERM)
            try:
                _, stderr = second.communicate(timeout=60)
            except subprocess.TimeoutExpired:
                second.kill()
                _, stderr = second.communicate()
                pytest.fail(f"the second worker did not stop on SIGTERM:\n{stderr}")
        assert second.returncode == 0, stderr
    finally:
        first.kill()
        first.communicate()
    finish(app, bootstrap)

    assert read_committed(bootstrap, f"{name}-out") == read_committed(bootstrap, f"{reference}-out")


def wait_for_committed(bootstrap: str, topic: str, count: int) -> None:
    """Block until a read_committed reader has seen ``count`` records of ``topic``."""
    consumer = ck.Consumer({
        "bootstrap.servers": bootstrap,
        "group.id": unique("waiter"),
        "enable.auto.commit": False,
        "isolation.level": "read_committed",
        "auto.offset.reset": "earliest",
    })  # fmt: skip
    try:
        consumer.subscribe([topic])
        seen = 0
        while seen < count:
            message = consumer.poll(TIMEOUT_S)
            assert message is not None, f"{topic}: {seen} records, still waiting for {count}"
            seen += message.error() is None
    finally:
        consumer.close()


def w2_app(name: str, bootstrap: str, topic: str, guarantee: str) -> App:
    """A W2-like app (through a repartition topic) that never commits on its own: its
    commit interval is longer than its run."""
    config = AppConfig(commit_interval_ms=600_000, guarantee=guarantee)
    app = App(name, bootstrap=bootstrap, config=config)
    (
        app.stream(topic)
        .key_by(lambda e: e["user"])
        .window(windows.tumbling(seconds=1), timestamp=lambda e: e["ts"], grace_ms=0)
        .aggregate(initial=lambda: 0, add=lambda n, _e: n + 1, name="counts")
        .final()
        .to(f"{name}-out")
    )
    return app


def test_a_run_until_caught_up_commits_what_its_internal_topics_hold(
    headwater_broker: object,
) -> None:
    # Written to the repartition topic in an open transaction, records are not readable
    # yet: the run must commit before deciding it has read the topic to its end.
    bootstrap = headwater_broker.bootstrap  # type: ignore[attr-defined]
    topic = unique("eos-caught-up-in")
    create_topic(bootstrap, topic, 1)
    produce(bootstrap, topic, events(2000), partitions=1)
    outputs = {}
    for guarantee in ("at_least_once", "exactly_once"):
        name = unique(f"eos-{guarantee[:2]}")
        stats = w2_app(name, bootstrap, topic, guarantee).run(until_caught_up=True)
        assert stats.records_in == 4000  # the input, then the repartition topic
        outputs[guarantee] = read_committed(bootstrap, f"{name}-out")
    assert sum(map(len, outputs["exactly_once"])) > 0
    assert Counter(r for p in outputs["exactly_once"] for r in p) == Counter(
        r for p in outputs["at_least_once"] for r in p
    )
