"""``headwater worker APP --processes N`` end to end, as real processes: the supervisor owns
the data directory and serves it, its workers share the app's partitions through the
group; a worker killed with SIGKILL is restarted and loses nothing; a worker added or
removed makes the group rebalance; SIGTERM stops all gracefully; a worker that keeps
failing makes the supervisor give up; the same on ``--bootstrap`` (``headwater broker``,
Apache Kafka). Every wait is on an event: a log line, a record read from the log."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import threading
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path

import anyio
import confluent_kafka as ck
import httpx
import orjson
import pytest
from apache_kafka.running import ApacheKafka
from broker.running import BrokerProcess
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from headwater.groups import GroupCoordinator
from headwater.store import NewRecord, TopicConfig, open_store

from .helpers import HEADWATER, assert_error, run_headwater

PARTITIONS = 4
#: The longest any wait here may take before the test fails (a hang guard, not a timing).
HANG_S = 120.0

APP = """
import time

from headwater.processing import App, AppConfig

config = AppConfig(session_timeout_ms=6000, commit_interval_ms=100, max_batch_bytes=2048)
app = App("{name}", config=config)


def work(event):
    if {crash}:
        raise ValueError("this app always fails")
    time.sleep({delay})  # a little work per event, so that a run can be caught midway
    return event


app.stream("{topic}").map(work).to("{topic}-out")
"""


def write_app(
    folder: Path, name: str, *, topic: str = "in", delay: float = 0.0, crash: bool = False
) -> Path:
    path = folder / f"{name}.py"
    text = APP.replace("{name}", name).replace("{topic}", topic)
    path.write_text(text.replace("{delay}", repr(delay)).replace("{crash}", repr(crash)))
    return path


def environment() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("HEADWATER_")}


class Supervised:
    """``headwater ... worker ...`` as a subprocess whose stderr lines can be waited for."""

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen(
            [HEADWATER, *args],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env=environment(),
        )
        self.lines: list[str] = []
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            with self._changed:
                self.lines.append(line.rstrip("\n"))
                self._changed.notify_all()
        with self._changed:
            self.lines.append("<end>")
            self._changed.notify_all()

    def wait_for(self, pattern: str, count: int = 1) -> list[re.Match[str]]:
        """Return the first ``count`` matches of ``pattern`` (a regex) in the log, once
        there are that many."""
        regex = re.compile(pattern)
        with self._changed:
            while True:
                found = [m for line in self.lines if (m := regex.search(line))]
                if len(found) >= count:
                    return found[:count]
                assert "<end>" not in self.lines, f"exited without {pattern!r}:\n{self.log}"
                assert self._changed.wait(HANG_S), f"no {pattern!r} in time:\n{self.log}"

    @property
    def log(self) -> str:
        with self._changed:
            return "\n".join(self.lines)

    def finish(self, signum: int | None = None) -> int:
        """Send ``signum`` (if any), wait for the exit; return the exit status."""
        if signum is not None and self.proc.poll() is None:
            self.proc.send_signal(signum)
        status: int | None = None
        try:
            status = self.proc.wait(HANG_S)
        except subprocess.TimeoutExpired:
            pass
        finally:
            self.proc.kill()
        self._reader.join(HANG_S)
        assert status is not None, f"still running after {HANG_S} s:\n{self.log}"
        assert "Traceback" not in self.log, self.log
        return status

    def processed(self) -> dict[int, int]:
        """Records processed by each worker number, from their last summary lines."""
        counts: dict[int, int] = {}
        for line in self.lines:
            found = re.search(r"worker (\d+): app '[^']+': processed ([\d,]+) records", line)
            if found:
                number, records = int(found[1]), int(found[2].replace(",", ""))
                counts[number] = counts.get(number, 0) + records
        return counts


def load(data: Path, count: int, topic: str = "in") -> None:
    """Create ``topic`` (4 partitions) in ``data`` and write the numbers below ``count``,
    number i to partition i % 4."""

    async def main() -> None:
        async with open_store(data) as store:
            await store.create_topic(topic, TopicConfig(partitions=PARTITIONS))
            for p in range(PARTITIONS):
                values = [NewRecord(b"%d" % i) for i in range(p, count, PARTITIONS)]
                if values:
                    await store.append(topic, values, partition=p)

    anyio.run(main)


def produce(bootstrap: str, topic: str, numbers: Sequence[int]) -> None:
    """Write ``numbers`` to ``topic`` through a Kafka client, number i to partition i % 4."""
    producer = ck.Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True})
    for i in numbers:
        producer.produce(topic, b"%d" % i, partition=i % PARTITIONS)
    assert producer.flush(HANG_S) == 0


def wait_for_records(bootstrap: str, topic: str, count: int) -> None:
    """Return once ``topic`` holds ``count`` records (a consumer waits on the broker)."""
    consumer = ck.Consumer({
        "bootstrap.servers": bootstrap, "group.id": f"waiter-{uuid.uuid4().hex[:6]}",
        "enable.auto.commit": False, "auto.offset.reset": "earliest",
    })  # fmt: skip
    try:
        consumer.subscribe([topic])
        seen = 0
        while seen < count:
            message = consumer.poll(HANG_S)
            assert message is not None, f"{topic}: {seen} records, waiting for {count}"
            seen += message.error() is None
    finally:
        consumer.close()


def read_back(bootstrap: str | None, data: Path, topic: str) -> list[list[int]]:
    """Return the numbers in ``topic``, per partition, read with ``headwater consume``."""
    args = ["consume", topic, "--format", "json"]
    if bootstrap is None:
        result = run_headwater(data, *args)
    else:
        result = run_headwater(None, *args, "--bootstrap", bootstrap)
    assert result.returncode == 0, result.stderr
    out: list[list[int]] = [[] for _ in range(PARTITIONS)]
    for line in result.stdout.splitlines():
        record = orjson.loads(line)
        out[record["partition"]].append(int(record["value"]))
    return out


def committed(data: Path, group: str) -> dict[int, int]:
    async def main() -> dict[int, int]:
        async with open_store(data) as store, GroupCoordinator(store) as coordinator:
            return {tp.partition: o.offset for tp, o in coordinator.committed(group).items()}

    return anyio.run(main)


def assert_replays_only(out: list[list[int]], count: int) -> None:
    """Check that each output partition holds its input partition's numbers in order,
    where a stretch may be repeated (processed again from the last commit) but none is
    missing."""
    for p, numbers in enumerate(out):
        expected = list(range(p, count, PARTITIONS))
        position = 0  # the next index of `expected` to see
        for n in numbers:
            index = expected.index(n)
            assert index <= position, f"partition {p}: {n} came before {expected[position]}"
            position = max(position, index + 1)
        assert position == len(expected), f"partition {p}: ends at {numbers[-1:]}"


def served_bootstrap(supervisor: Supervised) -> str:
    return supervisor.wait_for(r"^headwater: serving data directory .* at (\S+)$")[0][1]


def test_two_workers_split_the_partitions_and_sigterm_stops_them_committed(
    tmp_path: Path, data: Path
) -> None:
    load(data, 0)
    app = write_app(tmp_path, "split")
    supervisor = Supervised("--data", str(data), "worker", str(app), "--processes", "2", "-v",
                            "--metrics", "127.0.0.1:0")  # fmt: skip
    try:
        bootstrap = served_bootstrap(supervisor)
        # Both workers hold tasks: the group's assignment has both members.
        supervisor.wait_for(r"worker 1: app 'split': task \S+ processing")
        supervisor.wait_for(r"worker 2: app 'split': task \S+ processing")
        produce(bootstrap, "in", range(400))
        wait_for_records(bootstrap, "in-out", 400)
        metrics = supervisor.wait_for(r"^headwater: serving metrics at (\S+)$")[0][1]
        page = httpx.get(metrics, timeout=HANG_S).text
        assert "headwater_workers_running 2.0" in page
        assert 'headwater_worker_restarts_total{worker="1"} 0.0' in page
        assert "headwater_broker_requests_total" in page  # the supervisor's broker
        worker_metrics = supervisor.wait_for(r"worker 1: serving metrics at (\S+)$")[0][1]
        assert "headwater_app_records_in_total" in httpx.get(worker_metrics, timeout=HANG_S).text
    finally:
        status = supervisor.finish(signal.SIGTERM)
    assert status == 0, supervisor.log
    processed = supervisor.processed()
    assert processed == {1: 200, 2: 200}, supervisor.log  # two partitions each
    out = read_back(None, data, "in-out")
    assert out == [list(range(p, 400, PARTITIONS)) for p in range(PARTITIONS)]  # exactly once
    assert committed(data, "split") == dict.fromkeys(range(PARTITIONS), 100)
    assert not (data / ".address").exists()


@pytest.mark.slow
def test_a_killed_worker_is_restarted_and_every_input_has_its_output(
    tmp_path: Path, data: Path
) -> None:
    count = 2400
    load(data, count)
    app = write_app(tmp_path, "killed", delay=0.002)
    supervisor = Supervised("--data", str(data), "worker", str(app), "-n", "2", "-v",
                            "--until-caught-up")  # fmt: skip
    try:
        supervisor.wait_for(r"worker 2: app 'killed': task \S+ processing")
        victim = int(supervisor.wait_for(r"worker 2 started \(pid (\d+)\)")[0][1])
        os.kill(victim, signal.SIGKILL)
        supervisor.wait_for(rf"worker 2 \(pid {victim}\) was killed by SIGKILL after .*: "
                            r"restarting it in")  # fmt: skip
    finally:
        status = supervisor.finish()
    assert status == 0, supervisor.log
    assert len(re.findall(r"worker 2 started", supervisor.log)) == 2
    out = read_back(None, data, "in-out")
    assert_replays_only(out, count)  # duplicates only where the killed worker had not committed
    assert committed(data, "killed") == dict.fromkeys(range(PARTITIONS), count // PARTITIONS)


@pytest.mark.slow
def test_a_worker_added_and_removed_rebalances_the_partitions(tmp_path: Path, data: Path) -> None:
    load(data, 0)
    app = write_app(tmp_path, "grow")
    first = Supervised("--data", str(data), "worker", str(app), "-n", "1", "-v")
    second: Supervised | None = None
    try:
        bootstrap = served_bootstrap(first)
        first.wait_for(r"worker 1: app 'grow': task \S+ processing")
        produce(bootstrap, "in", range(0, 100))
        wait_for_records(bootstrap, "in-out", 100)
        # A second supervisor on the same directory: its worker joins through the first's
        # address, and the group splits the partitions between the two.
        second = Supervised("--data", str(data), "worker", str(app), "-n", "1", "-v")
        second.wait_for(r"worker 1: app 'grow': task \S+ processing")
        produce(bootstrap, "in", range(100, 200))
        wait_for_records(bootstrap, "in-out", 200)
        assert second.finish(signal.SIGINT) == 0, second.log  # as Ctrl-C: passed on once
        assert second.processed() == {1: 50}, second.log  # its two partitions of the second 100
        produce(bootstrap, "in", range(200, 300))  # all back with the first one's worker
        wait_for_records(bootstrap, "in-out", 300)
    finally:
        if second is not None:
            second.finish(signal.SIGTERM)
        status = first.finish(signal.SIGTERM)
    assert status == 0, first.log
    assert first.processed() == {1: 250}, first.log
    out = read_back(None, data, "in-out")
    assert out == [list(range(p, 300, PARTITIONS)) for p in range(PARTITIONS)]
    assert committed(data, "grow") == dict.fromkeys(range(PARTITIONS), 75)


def test_a_worker_that_keeps_failing_makes_the_supervisor_give_up(
    tmp_path: Path, data: Path
) -> None:
    load(data, 8)
    app = write_app(tmp_path, "failing", crash=True)
    supervisor = Supervised("--data", str(data), "worker", str(app), "--max-restarts", "1")
    status = supervisor.finish()
    assert status == 1, supervisor.log
    errors = [line for line in supervisor.lines if line.startswith("headwater: error: ")]
    assert len(errors) == 1, supervisor.log
    assert errors[0].startswith("headwater: error: worker 1 keeps failing: 2 failures within 60 s")
    assert "exited with status 1 (error: " in errors[0]
    assert "this app always fails" in errors[0]
    assert len(re.findall(r"worker 1 \(pid \d+\) exited with status 1 .* restarting it in",
                          supervisor.log)) == 1  # fmt: skip
    assert committed(data, "failing") == {}


@pytest.fixture(params=["headwater-broker", "apache-kafka"])
def cluster(request: pytest.FixtureRequest) -> str:
    """``headwater broker``, then Apache Kafka (skipped where it cannot run)."""
    if request.param == "apache-kafka":
        kafka: ApacheKafka = request.getfixturevalue("apache_kafka")
        return kafka.bootstrap
    broker: BrokerProcess = request.getfixturevalue("broker")
    return broker.bootstrap


def test_workers_on_a_cluster(tmp_path: Path, cluster: str) -> None:
    name = f"cluster-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": cluster})
    for future in admin.create_topics([NewTopic(name, PARTITIONS, 1)]).values():
        future.result(HANG_S)
    produce(cluster, name, range(800))
    app = write_app(tmp_path, name, topic=name)
    supervisor = Supervised("worker", str(app), "-n", "2", "--bootstrap", cluster,
                            "--until-caught-up", "-v")  # fmt: skip
    assert supervisor.finish() == 0, supervisor.log
    assert "serving data directory" not in supervisor.log  # no store of its own
    assert sum(supervisor.processed().values()) == 800, supervisor.log
    out = read_back(cluster, tmp_path, f"{name}-out")
    assert out == [list(range(p, 800, PARTITIONS)) for p in range(PARTITIONS)]


def test_a_source_topic_missing_from_the_cluster_is_refused_before_any_worker_starts(
    tmp_path: Path, cluster: str
) -> None:
    name = f"absent-{uuid.uuid4().hex[:8]}"
    app = write_app(tmp_path, name, topic=name)

    result = run_headwater(None, "worker", str(app), "-n", "2", "--bootstrap", cluster)

    assert_error(  # one line: no worker started, failed and was restarted
        result,
        f"missing source topic {name!r} in the cluster at {cluster}: create it first "
        f"(headwater topics create {name} --partitions N --bootstrap {cluster})",
    )


@pytest.fixture
def refusing_address() -> Iterator[str]:
    with socket.socket() as closed:  # bound, never listening: connections are refused
        closed.bind(("127.0.0.1", 0))
        yield f"127.0.0.1:{closed.getsockname()[1]}"


def test_bad_input_is_one_line_and_a_non_zero_exit(
    tmp_path: Path, data: Path, refusing_address: str
) -> None:
    app = write_app(tmp_path, "bad")
    missing = tmp_path / "missing.py"
    assert_error(run_headwater(data, "worker", str(missing)), f"no such file: {missing}")
    assert_error(
        run_headwater(data, "worker", str(app), "--processes", "0"),
        "Invalid value for '--processes' / '-n': 0 is not in the range x>=1",
        status=2,
    )
    assert_error(
        run_headwater(None, "worker", str(app), "--bootstrap", refusing_address),
        f"cannot reach the Kafka cluster at {refusing_address}",
    )
    assert_error(
        run_headwater(None, "worker", str(app), "--bootstrap", "nohost:99999"),
        "the port must be a number from 1 to 65535",
        status=2,
    )
    assert_error(
        run_headwater(data, "worker", str(app), "--bootstrap", refusing_address),
        "give --data or --bootstrap, not both",
        status=2,
    )
    assert_error(
        run_headwater(data, "worker", str(app), "-n", "3", "--metrics", "127.0.0.1:65534"),
        "leaves no room for 3 worker(s)",
        status=2,
    )
    assert_error(run_headwater(data, "worker", str(app)), f"no data directory at {data}")
    assert not data.exists()
    load(data, 0, topic="other")  # refused before any worker starts (not by each, again and again)
    assert_error(
        run_headwater(data, "worker", str(app), "-n", "2"),
        f"missing source topic 'in' in data directory {data}: create it first",
    )
