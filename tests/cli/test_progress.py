"""Progress bars where a person waits, seen on a terminal (a tmux pane), and not elsewhere."""

from __future__ import annotations

import functools
import shlex
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import anyio
import orjson
import pytest
from broker.running import BrokerProcess
from processing.helpers import load
from rich.console import Console

from headwater.cli._progress import counting_progress
from headwater.store import served_address

from .test_groups import rows
from .tmux import Terminal

HEADWATER = str(Path(sys.executable).with_name("headwater"))

APP = """
from headwater.processing import App

app = App("counter")
app.stream("numbers").filter(lambda v: v["n"] % 2 == 0).to("evens")
"""


@pytest.fixture
def terminal() -> Iterator[Terminal]:
    """A 120 x 40 tmux pane."""
    pane = Terminal(120, 40)
    yield pane
    pane.close()


@pytest.fixture
def app_data(tmp_path: Path) -> tuple[Path, Path]:
    """A data directory holding 3,000 numbers in 3 partitions, and an app reading them."""
    data = tmp_path / "data"
    anyio.run(
        functools.partial(load, data, "numbers", [{"n": i} for i in range(3000)], partitions=3)
    )
    app = tmp_path / "app.py"
    app.write_text(APP)
    return data, app


def test_run_until_caught_up_shows_the_records_to_go(
    terminal: Terminal, app_data: tuple[Path, Path]
) -> None:
    data, app = app_data
    terminal.start([HEADWATER, "--data", str(data), "run", str(app), "--until-caught-up"])
    screen = terminal.wait_done()
    assert "[exit 0]" in screen, screen
    [bar] = [line for line in screen.splitlines() if "app 'counter': 3 partition(s)" in line]
    assert "3000/3000" in bar
    assert "100%" in bar
    assert "records/s" in bar
    assert "processed 3,000 records, wrote 1,500" in screen


@pytest.mark.parametrize("width", [80, 120])
def test_a_bar_with_its_rate_is_one_line_on_a_terminal_of_80_columns_or_more(
    width: int,
) -> None:
    progress = counting_progress("records")
    clock = [0.0]
    progress.get_time = lambda: clock[0]
    bar = progress.add_task("app 'counter': 3 partition(s)", total=3000)
    for done in (1000, 2000, 3000):  # 1,000 records every 0.25 s: 4,000 records/s
        progress.update(bar, completed=done)
        clock[0] += 0.25
    terminal = Console(width=width, force_terminal=True, color_system=None)
    with terminal.capture() as drawn:
        terminal.print(progress.get_renderable())
    [line] = drawn.get().splitlines()
    assert "3000/3000" in line
    assert "4,000 records/s" in line


def test_run_quiet_or_not_on_a_terminal_shows_no_bar(
    terminal: Terminal, app_data: tuple[Path, Path]
) -> None:
    data, app = app_data
    terminal.start([HEADWATER, "--data", str(data), "run", str(app), "--until-caught-up", "-q"])
    screen = terminal.wait_done()
    assert "[exit 0]" in screen, screen
    assert "records/s" not in screen
    assert "processed 3,000 records" in screen

    piped = subprocess.run(
        [HEADWATER, "--data", str(data), "run", str(app), "--until-caught-up"],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    assert "records/s" not in piped.stderr
    assert "processed 0 records" in piped.stderr  # the first run committed everything


def test_produce_from_a_file_shows_what_was_read_and_stored(
    terminal: Terminal, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    lines = tmp_path / "lines.json"
    lines.write_bytes(b"".join(orjson.dumps({"n": i}) + b"\n" for i in range(20_000)))
    subprocess.run([HEADWATER, "--data", str(data), "topics", "create", "t"], check=True)
    produce = f"{HEADWATER} --data {data} produce t < {lines} > {tmp_path / 'acks'}"
    terminal.start(["sh", "-c", produce])
    screen = terminal.wait_done()
    assert "[exit 0]" in screen, screen
    [bar] = [line for line in screen.splitlines() if "'t': " in line]
    assert "'t': 20,000 records" in bar
    size_kb = f"{lines.stat().st_size / 1000:.1f}"
    assert f"{size_kb}/{size_kb} kB" in bar
    assert len((tmp_path / "acks").read_text().splitlines()) == 20_000

    quiet = f"{HEADWATER} --data {data} produce -q t < {lines}"
    terminal.close()
    terminal.start(["sh", "-c", quiet])
    screen = terminal.wait_done()
    assert "[exit 0]" in screen, screen
    assert "kB" not in screen
    assert "stored 20000 records in 't'" in screen


#: Partitions of the topic whose offsets the reset tests move.
WIDE = 600


@pytest.fixture(params=["data", "owner", "bootstrap"])
def reset_target(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ResetTarget]:
    """A data directory with topic ``wide`` (``WIDE`` partitions, 3 records in each) and
    groups ``g1`` and ``g2`` committed at its end, reached directly, through a broker that
    owns the directory, or by that broker's ``--bootstrap``."""
    data = tmp_path / "data"
    values = [{"n": i} for i in range(3 * WIDE)]
    anyio.run(functools.partial(load, data, "wide", values, partitions=WIDE))
    target = ResetTarget(data)
    for group in ("g1", "g2"):
        subprocess.run(target.reset(group, "--to-latest"), check=True, capture_output=True)
    if request.param == "data":
        yield target
        return
    broker = BrokerProcess(data).start()
    try:
        assert served_address(data) is not None  # the broker owns the directory
        yield ResetTarget(data, broker.bootstrap if request.param == "bootstrap" else None)
    finally:
        assert broker.stop() == 0, broker.log()


class ResetTarget:
    """Where the reset commands go: ``--data DIR``, or ``--bootstrap`` when given."""

    def __init__(self, data: Path, bootstrap: str | None = None) -> None:
        self.data = data
        self.bootstrap = bootstrap

    def command(self, *args: str) -> list[str]:
        if self.bootstrap is None:
            return [HEADWATER, "--data", str(self.data), *args]
        return [HEADWATER, *args, "--bootstrap", self.bootstrap]

    def reset(self, group: str, *args: str) -> list[str]:
        return self.command("groups", "reset-offsets", group, "-t", "wide", *args, "--execute")


def test_reset_offsets_shows_the_partitions_committed_on_a_terminal_only(
    terminal: Terminal, reset_target: ResetTarget, tmp_path: Path
) -> None:
    shown = tmp_path / "shown.txt"
    terminal.start(
        ["sh", "-c", f"{shlex.join(reset_target.reset('g1', '--to-earliest'))} > {shown}"]
    )
    screen = terminal.wait_done()
    assert "[exit 0]" in screen, screen
    [bar] = [line for line in screen.splitlines() if "reset group 'g1' on 'wide'" in line]
    assert f"{WIDE}/{WIDE}" in bar
    assert "100%" in bar
    assert "partitions/s" in bar
    assert "reset the offsets of group 'g1' on topic 'wide'" in screen

    piped = subprocess.run(
        reset_target.reset("g2", "--to-earliest"),
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    assert piped.stderr == "reset the offsets of group 'g2' on topic 'wide'\n"
    # The same plan, and the same offsets committed, with the bar as without it.
    assert shown.read_text() == piped.stdout
    assert rows(piped.stdout) == [["wide", str(p), "3", "0"] for p in range(WIDE)]
    described = [
        subprocess.run(
            reset_target.command("groups", "describe", group),
            capture_output=True,
            text=True,
            check=True,
            timeout=120,
        ).stdout.replace(group, "G")
        for group in ("g1", "g2")
    ]
    assert described[0] == described[1]
    assert [row[2] for row in rows(described[0])] == ["0"] * WIDE  # reset to the start


def test_reset_offsets_quiet_shows_no_bar(terminal: Terminal, reset_target: ResetTarget) -> None:
    terminal.start(reset_target.reset("g1", "--to-earliest", "--quiet"))
    screen = terminal.wait_done()
    assert "[exit 0]" in screen, screen
    assert "partitions/s" not in screen
    assert "reset the offsets of group 'g1' on topic 'wide'" in screen
    assert ["wide", "599", "3", "0"] in rows(screen)  # the plan: from the end to the start
