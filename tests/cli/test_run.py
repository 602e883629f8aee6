"""``headwater run``, ``describe`` and ``trace`` on a real data directory."""

from __future__ import annotations

from pathlib import Path

from .helpers import Headwater, assert_error

APP = """
from headwater.processing import App

app = App("cli-app")
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
    consumed = hw("consume", "by-user", "--partition", "0")
    assert consumed.returncode == 0, consumed.stderr
    trace = hw("trace", "by-user", "0", "0")
    assert trace.returncode == 0, trace.stderr
    lines = trace.stdout.splitlines()
    assert lines[0].startswith("by-user/0/0  ")
    assert any(line.startswith("  <- cli-app-by-user-repartition/0/0") for line in lines)
    assert any(line.startswith("  <- clicks/") for line in lines)
    assert lines[-1].strip() == "(a source event: it carries no lineage header)"


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
