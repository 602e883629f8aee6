"""Apps run by ``headwater run`` on a cluster (``headwater broker`` and Apache Kafka): the
examples, unchanged; a graceful stop; a worker killed with SIGKILL and restarted."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

import orjson
import pytest

from headwater.processing import AppConfig
from headwater.processing._app import member_settings

from .cluster import (
    clear,
    committed,
    create_topic,
    produce,
    read_topic,
    unique,
    wait_for_records,
)

EXAMPLES = Path(__file__).parents[2] / "examples"
HEADWATER = str(Path(sys.executable).with_name("headwater"))


def environment(**extra: str) -> dict[str, str]:
    """This environment without headwater's variables, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HEADWATER_")}
    return {**env, **extra}


def run(*args: str, env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``headwater ARGS...`` to completion."""
    result = subprocess.run(
        [HEADWATER, *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=dict(env or environment()),
        check=False,
    )
    assert "Traceback" not in result.stderr, result.stderr
    return result


def windowed_sums(records: list[bytes]) -> dict[tuple[str, int], tuple[int, int]]:
    """The clickstream example's ``per-user-10s`` aggregate over ``records`` with nothing
    late: (user, window start) -> (clicks, their summed ``ms``)."""
    sums: dict[tuple[str, int], tuple[int, int]] = {}
    for line in records:
        try:
            event = orjson.loads(line)
            user, ts, ms = event["user"], event["ts"], event["ms"]
        except (orjson.JSONDecodeError, KeyError):
            continue  # dead-lettered by the app
        if ms > 100:
            window = (user, ts - ts % 10_000)
            count, total = sums.get(window, (0, 0))
            sums[window] = (count + 1, total + ms)
    return sums


def values(bootstrap: str, topic: str) -> list[list[bytes | None]]:
    return [[m.value() for m in part] for part in read_topic(bootstrap, topic)]


def test_clickstream_example_on_a_cluster(cluster: str) -> None:
    lines = (EXAMPLES / "data" / "clicks.jsonl").read_bytes().splitlines()
    records = [line for line in lines if line.strip()]
    outputs = ("clicks-enriched", "slow-clicks", "clicks-per-user-10s", "clicks-dlq")
    clear(cluster, ["clicks", *outputs], app="clickstream")
    create_topic(cluster, "clicks", 2)
    produce(cluster, "clicks", records, partitions=2)  # records[p::2] to p, as the example

    result = run(
        "run", str(EXAMPLES / "clickstream.py"), "--bootstrap", cluster, "--until-caught-up"
    )

    assert result.returncode == 0, result.stderr
    enriched = read_topic(cluster, "clicks-enriched")
    assert sum(len(part) for part in enriched) == 201
    assert sum(len(part) for part in read_topic(cluster, "slow-clicks")) == 44
    # The windowed sums, through a repartition topic and a state store. Each input
    # partition's task writes the repartition topic on its own, so how their records
    # interleave there depends on timing (as in Kafka Streams), and with a grace of 0 so
    # does which clicks come after their window closed. Whatever the interleaving: each
    # window is written once, holds only its own clicks, and every click over 100 ms is
    # in a closed one or counted late. The last window (from 50 s) never closes: no later
    # click moves the stream time past its end.
    windows = [orjson.loads(m.value() or b"") for p in read_topic(cluster, "clicks-per-user-10s")
               for m in p]  # fmt: skip
    truth = windowed_sums(records)
    last = max(start for _, start in truth)
    assert len({(w["key"], w["start"]) for w in windows}) == len(windows) > 0
    for w in windows:
        count, total = truth[(w["key"], w["start"])]
        assert (w["start"] < last, w["end"]) == (True, w["start"] + 10_000)
        assert 1 <= w["value"]["count"] <= count
        assert w["value"]["count"] < count or w["value"]["sum"] == total
    late = re.search(r"([\d,]+) late\)", result.stderr)
    dropped = int(late.group(1).replace(",", "")) if late else 0
    closed = sum(count for (_, start), (count, _) in truth.items() if start < last)
    assert sum(w["value"]["count"] for w in windows) + dropped == closed
    first = enriched[0][0]
    assert dict(first.headers() or [])["headwater.source"] == b"clicks/0/0"  # type: ignore[arg-type]
    assert orjson.loads(first.value() or b"")["country"]
    dead = [m for part in read_topic(cluster, "clicks-dlq") for m in part]
    assert len(dead) == 3
    messages = [dict(m.headers() or [])["headwater.error.message"] for m in dead]  # type: ignore[arg-type]
    assert any(b"KeyError: 'ms'" in (m or b"") for m in messages)


def test_log_router_example_on_the_cluster_in_the_environment(cluster: str) -> None:
    sys.path.insert(0, str(EXAMPLES))
    try:
        import log_router
    finally:
        sys.path.pop(0)
    create_topic(cluster, "logs", 1)
    produce(cluster, "logs", [line.encode() for line in log_router.sample_lines(300)], partitions=1)

    env = environment(HEADWATER_BOOTSTRAP=cluster)
    result = run("run", str(EXAMPLES / "log_router.py"), "--until-caught-up", env=env)

    assert result.returncode == 0, result.stderr
    assert "processed 300 records" in result.stderr
    counts = {
        topic: sum(len(part) for part in read_topic(cluster, topic))
        for topic in ("logs-error", "logs-warning", "logs-other", "logs-audit", "logs-dlq")
    }
    assert counts == {
        "logs-error": 49,
        "logs-warning": 52,
        "logs-other": 197,
        "logs-audit": 101,
        "logs-dlq": 2,
    }


SLOW_APP = """
import time

from headwater.processing import App, AppConfig

config = AppConfig(session_timeout_ms=6000, commit_interval_ms=100, max_batch_bytes=2048)
app = App("{name}", config=config)


def slowly(event):
    time.sleep(0.0005)  # a little work per event, so that a run can be stopped midway
    return event


app.stream("{name}-in").map(slowly).to("{name}-out")
"""


def start_slow_app(cluster: str, tmp_path: Path, name: str, count: int) -> subprocess.Popen[str]:
    """Load ``count`` events and start the slow app on them (it runs until stopped)."""
    create_topic(cluster, f"{name}-in", 4)
    create_topic(cluster, f"{name}-out", 4)
    produce(cluster, f"{name}-in", [b"%d" % i for i in range(count)], partitions=4)
    app = tmp_path / "slow.py"
    app.write_text(SLOW_APP.replace("{name}", name))
    return subprocess.Popen(
        [HEADWATER, "run", str(app), "--bootstrap", cluster],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
        env=environment(),
    )


@pytest.mark.slow
def test_a_stopped_app_commits_and_the_next_run_goes_on_from_there(
    cluster: str, tmp_path: Path
) -> None:
    name = unique("stop")
    worker = start_slow_app(cluster, tmp_path, name, 4000)
    try:
        wait_for_records(cluster, f"{name}-out", 500)
        worker.send_signal(signal.SIGTERM)
        _, stderr = worker.communicate(timeout=60)
    finally:
        worker.kill()
    assert worker.returncode == 0, stderr
    done = sum(len(part) for part in read_topic(cluster, f"{name}-out"))
    assert f"processed {done:,} records" in stderr  # all of them committed
    commits = committed(cluster, name, f"{name}-in", 4)
    assert sum(offset for offset, _ in commits.values()) == done

    app = tmp_path / "slow.py"
    again = run("run", str(app), "--bootstrap", cluster, "--until-caught-up")

    assert again.returncode == 0, again.stderr
    assert f"processed {4000 - done:,} records" in again.stderr
    out = values(cluster, f"{name}-out")
    assert sorted(int(v or b"") for part in out for v in part) == list(range(4000))


@pytest.mark.slow
def test_a_killed_worker_loses_nothing(cluster: str, tmp_path: Path) -> None:
    name = unique("kill")
    worker = start_slow_app(cluster, tmp_path, name, 4000)
    try:
        wait_for_records(cluster, f"{name}-out", 500)
    finally:
        worker.kill()  # SIGKILL: no commit, no leaving the group
        worker.communicate(timeout=60)

    # The group waits for the dead member's session (6 s) to end, then the new run
    # resumes each partition at its last commit: every input has its output.
    app = tmp_path / "slow.py"
    again = run("run", str(app), "--bootstrap", cluster, "--until-caught-up")

    assert again.returncode == 0, again.stderr
    out = [int(v or b"") for part in values(cluster, f"{name}-out") for v in part]
    assert set(out) == set(range(4000))
    commits = committed(cluster, name, f"{name}-in", 4)
    assert {p: offset for p, (offset, _) in commits.items()} == dict.fromkeys(range(4), 1000)
    # Each output partition holds its own input partition's records (some twice: the
    # killed worker's uncommitted tail was processed again).
    for p, part in enumerate(values(cluster, f"{name}-out")):
        numbers = [int(v or b"") for v in part]
        assert sorted(set(numbers)) == list(range(p, 4000, 4))


@pytest.mark.slow
def test_a_frozen_worker_loses_its_partitions_then_rejoins(cluster: str, tmp_path: Path) -> None:
    name = unique("frozen")
    frozen = start_slow_app(cluster, tmp_path, name, 6000)
    other: subprocess.Popen[str] | None = None
    try:
        wait_for_records(cluster, f"{name}-out", 500)
        frozen.send_signal(signal.SIGSTOP)  # its session expires: the group drops it
        written = sum(len(part) for part in read_topic(cluster, f"{name}-out"))
        other = subprocess.Popen(
            [HEADWATER, "run", str(tmp_path / "slow.py"), "--bootstrap", cluster],
            stderr=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            text=True,
            env=environment(),
        )
        wait_for_records(cluster, f"{name}-out", written + 500)  # the other took over
        frozen.send_signal(signal.SIGCONT)  # it learns that its partitions were lost
        wait_for_records(cluster, f"{name}-out", 6000)
        for worker in (frozen, other):
            worker.send_signal(signal.SIGTERM)
        _, frozen_log = frozen.communicate(timeout=60)
        _, other_log = other.communicate(timeout=60)
    finally:
        for worker in (frozen, other):
            if worker is not None:
                worker.kill()
    assert frozen.returncode == 0 and other.returncode == 0, frozen_log + other_log
    assert "this member's session expired): not committing them" in frozen_log

    finish = run("run", str(tmp_path / "slow.py"), "--bootstrap", cluster, "--until-caught-up")

    assert finish.returncode == 0, finish.stderr
    out = [int(v or b"") for part in values(cluster, f"{name}-out") for v in part]
    assert set(out) == set(range(6000))
    commits = committed(cluster, name, f"{name}-in", 4)
    assert {p: offset for p, (offset, _) in commits.items()} == dict.fromkeys(range(4), 1500)


@pytest.mark.parametrize(
    ("session_ms", "heartbeat_ms"), [(45_000, 1_000), (6_000, 1_000), (1_500, 500)]
)
def test_members_heartbeat_often_enough_to_rebalance_within_a_second(
    session_ms: int, heartbeat_ms: int
) -> None:
    # A joining worker waits for every other member's next heartbeat: with Kafka's
    # default (3 s), a worker of `headwater worker --processes 2` often started 3 s late.
    settings = member_settings(AppConfig(session_timeout_ms=session_ms))
    assert settings == {"session.timeout.ms": session_ms, "heartbeat.interval.ms": heartbeat_ms}
