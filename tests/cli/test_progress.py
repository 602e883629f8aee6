"""Progress bars where a person waits, seen on a terminal (a tmux pane), and not elsewhere."""

from __future__ import annotations

import functools
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import anyio
import orjson
import pytest
from processing.helpers import load
from rich.console import Console

from headwater.cli._progress import counting_progress

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
