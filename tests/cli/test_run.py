"""``headwater run``, ``describe`` and ``trace`` on a real data directory."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from headwater.store import partition_for_key

from .helpers import HEADWATER, Headwater, Log, assert_error, run_headwater

# The app keeps its repartition records, so that trace follows an output back to its input.
APP = """
from headwater.processing import App, AppConfig

app = App("cli-app", config=AppConfig(repartition_purge_interval_ms=None))
clicks = app.stream("clicks")
clicks.filter(lambda e: e["ms"] > 100).map(lambda e: {**e, "slow": e["ms"] > 500}).to("enriched")
clicks.key_by(lambda e: e["user"]).repartition("by-user").to("by-user")
"""

BROKEN = """
from headwater.processing import App

app = App("broken")
app.stream("clicks").map(lambda e: e["missing"]).to("out")
"""

EVENTS = "".join(f'{{"user": "u{i % 3}", "ms": {i * 90}}}\n' for i in range(10))


def write_app(tmp_path: Path, text: str = APP, name: str = "app.py") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_describe(hw: Headwater, tmp_path: Path) -> None:
    result = hw("describe", str(write_app(tmp_path)))
    assert result.returncode == 0, result.stderr
    assert "app 'cli-app' (consumer group 'cli-app')" in result.stdout
    assert "#2 filter <lambda> (app.py:6)" in result.stdout
    assert "internal topics: cli-app-by-user-repartition" in result.stdout


def test_run_until_caught_up_then_trace(hw: Headwater, tmp_path: Path) -> None:
    app = write_app(tmp_path)
    assert hw("topics", "create", "clicks", "--partitions", "2").returncode == 0
    assert hw("produce", "clicks", "--key", "user", input=EVENTS).returncode == 0
    result = hw("run", f"{app}:app", "--until-caught-up")
    assert result.returncode == 0, result.stderr
    assert "app 'cli-app': processed 20 records, wrote 28" in result.stderr
    again = hw("run", str(app), "--until-caught-up")
    assert "processed 0 records" in again.stderr  # committed: nothing to redo
    p = partition_for_key(b'"u0"', 2)  # the key_by key, as canonical JSON
    consumed = hw("consume", "by-user", "--partition", str(p))
    assert consumed.returncode == 0, consumed.stderr
    trace = hw("trace", "by-user", str(p), "0")
    assert trace.returncode == 0, trace.stderr
    lines = trace.stdout.splitlines()
    assert lines[0].startswith(f"by-user/{p}/0  ")
    assert any(line.startswith(f"  <- cli-app-by-user-repartition/{p}/0") for line in lines)
    assert any(line.startswith("  <- clicks/") for line in lines)
    assert lines[-1].strip() == "(a source event: it carries no lineage header)"


def test_run_then_trace_on_every_log(log: Log, name: str, tmp_path: Path) -> None:
    # The same app, unchanged but for its names, on a data directory and on a cluster.
    text = APP.replace("cli-app", name)
    for topic in ('stream("clicks")', 'to("enriched")', 'to("by-user")'):
        text = text.replace(topic, topic.replace('("', f'("{name}-'))
    app = write_app(tmp_path, text)
    assert log("topics", "create", f"{name}-clicks", "--partitions", "2").returncode == 0
    assert log("produce", f"{name}-clicks", "--key", "user", input=EVENTS).returncode == 0
    result = log("run", str(app), "--until-caught-up")
    assert result.returncode == 0, result.stderr
    assert f"app '{name}': processed 20 records, wrote 28" in result.stderr
    again = log("run", str(app), "--until-caught-up")
    assert "processed 0 records" in again.stderr, again.stderr
    p = partition_for_key(b'"u0"', 2)
    trace = log("trace", f"{name}-by-user", str(p), "0")
    assert trace.returncode == 0, trace.stderr
    lines = trace.stdout.splitlines()
    assert any(line.startswith(f"  <- {name}-by-user-repartition/{p}/0") for line in lines)
    assert any(line.startswith(f"  <- {name}-clicks/") for line in lines)


def test_run_takes_a_data_directory_or_a_cluster(hw: Headwater, tmp_path: Path) -> None:
    app = str(write_app(tmp_path))
    both = hw("run", app, "--bootstrap", "127.0.0.1:9092")  # hw gives --data
    assert_error(both, "give --data or --bootstrap, not both", status=2)
    malformed = run_headwater(None, "run", app, "--bootstrap", "localhost:http")
    assert_error(malformed, "invalid bootstrap address 'localhost:http'")


def test_run_reports_operator_errors_in_one_line(hw: Headwater, tmp_path: Path) -> None:
    assert hw("topics", "create", "clicks").returncode == 0
    assert hw("produce", "clicks", input='{"ms": 1}\n').returncode == 0
    result = hw("run", str(write_app(tmp_path, BROKEN)), "--until-caught-up")
    line = assert_error(result, "operator #2 map", "clicks/0 offset 0", "KeyError: 'missing'")
    assert "app.py:5 in <lambda>" in line


def test_bad_targets(hw: Headwater, tmp_path: Path) -> None:
    assert_error(hw("describe", str(tmp_path / "nope.py")), "no such file")
    assert_error(hw("describe", f"{write_app(tmp_path)}:other"), "defines no App named 'other'")
    empty = write_app(tmp_path, "x = 1\n", name="empty.py")
    assert_error(hw("run", str(empty)), "must define exactly one App (found: none)")


def test_trace_of_a_missing_record(hw: Headwater) -> None:
    assert hw("topics", "create", "clicks").returncode == 0
    assert hw("produce", "clicks", input='{"ms": 1}\n').returncode == 0
    assert_error(hw("trace", "clicks", "0", "5"), "no record at clicks/0/5")
    assert_error(hw("trace", "nope", "0", "0"), "no topic 'nope'")


MISSPELT = """
from headwater.processing import App

app = App("typo")
app.stream("clickz").to("out")
"""


def test_a_misspelt_data_directory_is_an_error(hw: Headwater, tmp_path: Path, data: Path) -> None:
    result = hw("run", str(write_app(tmp_path)), "--until-caught-up")
    assert_error(result, "missing source topic 'clicks'", f"{data} (no such data directory)")
    assert not data.exists()


def test_a_misspelt_source_topic_is_an_error(hw: Headwater, tmp_path: Path) -> None:
    assert hw("topics", "create", "clicks").returncode == 0
    result = hw("run", str(write_app(tmp_path, MISSPELT)), "--until-caught-up")
    assert_error(result, "missing source topic 'clickz'", "app.stream('clickz', partitions=N)")
    listed = hw("topics", "list")
    assert "clickz" not in listed.stdout and "out" not in listed.stdout.split()


# A real read-only mount and a real full disk, without root: a user namespace maps this
# user to root inside it, and a mount namespace keeps the mounts to that one command.
NAMESPACE = ["unshare", "--user", "--map-root-user", "--mount"]


def in_namespace(script: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*NAMESPACE, "sh", "-ec", script],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture
def namespaces(tmp_path: Path) -> None:
    if shutil.which("unshare") is None:
        pytest.skip("unshare(1) is not installed")
    probe = in_namespace("true", tmp_path)
    if probe.returncode != 0:
        pytest.skip(f"user namespaces are not available here: {probe.stderr.strip()}")


@pytest.mark.usefixtures("namespaces")
def test_run_on_a_read_only_directory_names_the_cause(
    hw: Headwater, tmp_path: Path, data: Path
) -> None:
    assert hw("topics", "create", "clicks").returncode == 0
    assert hw("produce", "clicks", input=EVENTS).returncode == 0
    app = write_app(tmp_path)
    result = in_namespace(
        f"mount --bind {data} {data}; mount -o remount,bind,ro {data}; "
        f"exec {HEADWATER} --data {data} run {app} --until-caught-up",
        tmp_path,
    )
    assert_error(result, "Read-only file system", str(data))  # was: internal error


@pytest.mark.usefixtures("namespaces")
def test_run_on_a_full_disk_names_the_cause(tmp_path: Path) -> None:
    app = write_app(tmp_path)
    events = tmp_path / "events.jsonl"
    events.write_text(
        "".join(f'{{"user": "u{i}", "ms": 900, "pad": "{"x" * 300}"}}\n' for i in range(2000))
    )
    disk = tmp_path / "disk"
    disk.mkdir()
    hw = f"{HEADWATER} --data {disk}/data"
    result = in_namespace(
        f"mount -t tmpfs -o size=2m tmpfs {disk}; "
        f"{hw} topics create clicks; {hw} produce clicks -q < {events}; "
        f"head -c $(( $(df --output=avail -B1 {disk} | tail -1) - 4096 )) /dev/zero"
        f" > {disk}/filler || true; "
        f"exec {hw} run {app} --until-caught-up",
        tmp_path,
    )
    assert result.returncode == 1, result
    assert "Traceback" not in result.stderr and "internal error" not in result.stderr
    last = result.stderr.splitlines()[-1]
    assert last.startswith("headwater: error: ") and "No space left on device" in last, last
