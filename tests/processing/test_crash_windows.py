"""Exactly-once state under kill -9: a windowed count in a real worker process
(``headwater run``) is killed mid-run and restarted; every window's count is then the
number of its input records that were not late, whatever the kill interrupted (a batch,
a repartition write, a changelog flush, a commit). Outputs may repeat (at-least-once),
but every copy of a window's result holds the same value.

The worker holds the inputs from ``HOLD_FROM`` on and writes a marker once it has
committed (as in ``test_crash.py``); the test kills it then. Every window is accounted
for by its final result or, for a window still open at the end, by the latest value in
the store's changelog; records its window had closed for go to ``late``.
"""

from __future__ import annotations

import signal
from collections import Counter, defaultdict
from pathlib import Path

import orjson
import pytest

from headwater.processing._stores import CHECKPOINT_KEY, decode_window_key

from .helpers import load, read
from .test_crash import start_worker, wait_for_marker

EVENTS = 3_000
PARTITIONS = 2
SIZE_MS = 1_000

APP = """
import os
import sys
from pathlib import Path

import anyio
import trio

from headwater.processing import App, AppConfig, windows

MARKER = Path(os.environ["HW_TEST_MARKER"])
HOLD_FROM = int(os.environ.get("HW_TEST_HOLD", "-1"))
app = App("windowed", config=AppConfig(max_batch_bytes=1024, commit_interval_ms=20))
released = None


async def hold():
    global released
    if released is not None:
        await released.wait()
        return
    released = anyio.Event()
    while app.statistics().commits == 0:
        await anyio.sleep(0.01)
    MARKER.write_text("held")
    await trio.lowlevel.wait_readable(sys.stdin.fileno())
    released.set()


async def gate(event):
    if 0 <= HOLD_FROM <= event["i"]:
        await hold()
    return event


counted = (
    app.stream("clicks")
    .map_async(gate, concurrency=4)
    .key_by(lambda e: e["k"])
    .window(windows.tumbling(ms=1000), timestamp=lambda e: e["t"], grace_ms=2000)
    .count(name="counts")
)
counted.final().to("out")
counted.late().to("late")
"""


def event(i: int) -> dict[str, object]:
    return {"i": i, "k": f"k{i % 7}", "t": i * 7}


async def check_windows(data: Path) -> int:
    """Check every window against the inputs; return how many results were repeated."""
    model: Counter[tuple[str, int]] = Counter()
    for i in range(EVENTS):
        e = event(i)
        model[(str(e["k"]), int(e["t"]) // SIZE_MS * SIZE_MS)] += 1
    late: dict[tuple[str, int], set[int]] = defaultdict(set)
    for part in await read(data, "late"):
        for record in part:
            e = orjson.loads(record.value)
            late[(e["k"], e["t"] // SIZE_MS * SIZE_MS)].add(e["i"])
    finals: dict[tuple[str, int], set[int]] = defaultdict(set)
    repeated = 0
    for part in await read(data, "out"):
        for record in part:
            result = orjson.loads(record.value)
            window = (result["key"], result["start"])
            repeated += window in finals
            finals[window].add(result["value"])
    still_open: dict[tuple[str, int], int] = {}
    for part in await read(data, "windowed-counts-changelog"):
        for record in part:
            if record.key == CHECKPOINT_KEY:
                continue
            assert record.key is not None
            key, start = decode_window_key(record.key)
            window = (orjson.loads(key), start)
            if record.value is None:
                still_open.pop(window, None)
            else:
                still_open[window] = orjson.loads(record.value)[0]
    for window, total in model.items():
        values = finals.get(window)
        if values is not None:
            assert len(values) == 1, f"window {window}: results differ: {values}"
            (counted,) = values
        else:
            counted = still_open.get(window, 0)
        assert counted + len(late.get(window, ())) == total, (window, counted, late.get(window))
    return repeated


@pytest.mark.slow
@pytest.mark.parametrize("hold_from", [400, 1_700])
async def test_kill_9_never_counts_an_input_twice(
    tmp_path: Path, data: Path, hold_from: int
) -> None:
    (tmp_path / "app.py").write_text(APP)
    await load(data, "clicks", [event(i) for i in range(EVENTS)], partitions=PARTITIONS, batch=50)
    worker = start_worker(tmp_path, data, hold=True, hold_from=hold_from)
    wait_for_marker(tmp_path, worker)
    worker.send_signal(signal.SIGKILL)
    worker.communicate(timeout=60)
    restarted = start_worker(tmp_path, data, "--until-caught-up")
    _, err = restarted.communicate(timeout=120)
    assert restarted.returncode == 0, err
    await check_windows(data)
