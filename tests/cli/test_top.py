"""``headwater top``: the view's arithmetic, a snapshot, and the live view in a terminal."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from broker.running import BrokerProcess
from rich.console import Console

from headwater.cli._top_view import AppSample, GroupSample, Sample, lag_trend, render
from headwater.groups import TopicPartition

from .tmux import Terminal

HEADWATER = str(Path(sys.executable).with_name("headwater"))


def text_of(sample: Sample, previous: Sample | None) -> str:
    console = Console(width=160, record=True, force_terminal=False)
    console.print(render(sample, previous, title="the log"))
    return console.export_text()


def test_rates_come_from_two_samples_and_lag_has_a_trend() -> None:
    tp0, tp1 = TopicPartition("clicks", 0), TopicPartition("clicks", 1)
    first = Sample(
        10.0,
        {"clicks": ((0, 100), (0, 50)), "__consumer_offsets": ((0, 9),)},
        {"app": GroupSample("Stable", 2, {tp0: (40, 100), tp1: (10, 50)})},
    )
    # Two seconds later: 200 more records in, the group read 300 more (lag shrinks on
    # partition 0) and none on partition 1 (its lag grows).
    second = Sample(
        12.0,
        {"clicks": ((0, 200), (0, 150)), "__consumer_offsets": ((0, 12),)},
        {"app": GroupSample("Stable", 2, {tp0: (190, 200), tp1: (10, 150)})},
    )
    shown = text_of(second, first)
    [topic] = [line for line in shown.splitlines() if "clicks " in line and "│" in line]
    assert [cell.strip() for cell in topic.split("│")[1:-1]] == ["clicks", "2", "350", "100", "75"]
    assert "__consumer_offsets" not in shown
    rows = [line for line in shown.splitlines() if "clicks/" in line]
    assert [cell.strip() for cell in rows[0].split("│")[1:-1]] == [
        "app", "Stable", "2", "clicks/0", "190", "200", "10", "▼",
    ]  # fmt: skip
    assert [cell.strip() for cell in rows[1].split("│")[5:-1]] == ["10", "150", "140", "▲"]
    first_frame = text_of(first, None)  # no rates yet
    [topic] = [line for line in first_frame.splitlines() if "clicks " in line and "│" in line]
    assert [cell.strip() for cell in topic.split("│")[4:-1]] == ["-", "-"]
    assert (lag_trend(5, 5), lag_trend(None, 3), lag_trend(3, None)) == ("=", "", "")


def test_apps_show_per_operator_rates_and_task_lag() -> None:
    before = AppSample({"#1 source numbers": (100, 100, 0, 0), "#2 map f": (100, 90, 10, 0)}, {})
    after = AppSample(
        {"#1 source numbers": (300, 300, 0, 0), "#2 map f": (300, 280, 20, 0)}, {"0_0": 42}
    )
    first = Sample(0.0, {}, {}, {"app": before})
    second = Sample(4.0, {}, {}, {"app": after}, {"http://x/metrics": "refused"})
    shown = text_of(second, first)
    rows = [
        [cell.strip() for cell in line.split("│")[1:-1]]
        for line in shown.splitlines()
        if "#2 map" in line or "task 0_0" in line or "refused" in line
    ]
    assert rows == [
        ["", "#2 map f", "50", "48", "20", "0", ""],
        ["", "task 0_0", "", "", "", "", "42"],
        ["http://x/metrics", "(metrics not read: refused)", "", "", "", "", ""],
    ]


@pytest.fixture
def filled(tmp_path: Path) -> Path:
    """A data directory with 100 records in clicks/0, and group g committed at 30."""
    data = tmp_path / "data"
    lines = "".join(f'{{"n": {i}}}\n' for i in range(100))

    def hw(*args: str, stdin: str | None = None) -> None:
        subprocess.run(
            [HEADWATER, "--data", str(data), *args],
            input=stdin,
            text=True,
            check=True,
            capture_output=True,
            timeout=60,
        )

    hw("topics", "create", "clicks", "-p", "2")
    hw("produce", "clicks", "-p", "0", "-q", stdin=lines)
    hw("consume", "clicks", "--group", "g", "--max", "30")
    return data


@pytest.mark.parametrize("through", ["bootstrap", "owner"])
def test_once_prints_a_snapshot_of_a_broker(filled: Path, through: str) -> None:
    # "owner": the data directory, which the broker owns, is looked at through it.
    broker = BrokerProcess(filled).start()
    where = ["--bootstrap", broker.bootstrap] if through == "bootstrap" else ["--data", str(filled)]
    try:
        result = subprocess.run(
            [HEADWATER, "top", "--once", "--interval", "0.2", *where],
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        )
    finally:
        assert broker.stop() == 0
    rows = [line for line in result.stdout.splitlines() if "clicks" in line]
    assert [cell.strip() for cell in rows[0].split("│")[1:4]] == ["clicks", "2", "100"]
    assert [cell.strip() for cell in rows[1].split("│")[1:8]] == [
        "g", "Empty", "0", "clicks/0", "30", "100", "70",
    ]  # fmt: skip


@pytest.fixture
def terminal() -> Iterator[Terminal]:
    """A 120 x 40 tmux pane."""
    pane = Terminal(120, 40)
    yield pane
    pane.close()


def test_the_live_view_of_a_data_directory_leaves_on_q(filled: Path, terminal: Terminal) -> None:
    terminal.start([HEADWATER, "--data", str(filled), "top", "--interval", "60"])
    terminal.send_keys("q")  # read once the first frame is drawn
    screen = terminal.wait_done()
    assert "[exit 0]" in screen, screen
    assert f"data directory {filled}" in " ".join(screen.split())
    group = [line for line in screen.splitlines() if "clicks/0" in line]
    assert [cell.strip() for cell in group[-1].split("│")[4:8]] == ["clicks/0", "30", "100", "70"]
    assert "Traceback" not in screen


def test_the_live_view_of_a_broker_leaves_on_ctrl_c(
    filled: Path, terminal: Terminal, tmp_path: Path
) -> None:
    broker = BrokerProcess(filled).start()
    try:
        argv = [HEADWATER, "top", "--interval", "0.2", "--bootstrap", broker.bootstrap]
        terminal.start_watched(argv, tmp_path / "pane")
        # A second frame is drawn: the lag's trend (which needs two looks) is there.
        terminal.wait_for_output(" = │")
        terminal.send_keys("C-c")
        screen = terminal.wait_done()
    finally:
        assert broker.stop() == 0
    assert "[exit 0]" in screen, screen
    assert f"the broker at {broker.bootstrap}" in screen
    assert "Traceback" not in screen
    # Frames are drawn over each other: the screen holds one of them.
    assert (screen.count("topics"), screen.count("┏━")) == (1, 2)
    assert "│ = │" in screen


def test_the_live_view_needs_a_terminal(filled: Path) -> None:
    result = subprocess.run(
        [HEADWATER, "--data", str(filled), "top"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 2
    assert "the live view needs a terminal; use --once" in result.stderr
