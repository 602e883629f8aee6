"""At-least-once across a repartition below a step that emits its own rows, under kill -9.

A windowed count's results (rows the window step emits, not rows it read) are re-keyed
and repartitioned, and a table downstream collects each key's window starts. The worker
(``headwater run``) is killed while it holds inputs upstream of the window, or results
downstream of the repartition, having committed; a restart runs until caught up. The
input offsets a commit covers must have their window results durable in the
repartition topic, so none is lost: each key's collected starts equal the windows its
results name in ``out`` (written beside the repartition topic, by the same batches).
Results may be written twice (the step's rows are not checked for copies): the
collected set does not mind.
"""

from __future__ import annotations

import signal
from collections import defaultdict
from pathlib import Path

import orjson
import pytest

from .helpers import load, read
from .test_crash import start_worker, wait_for_marker

EVENTS = 3_000
PARTITIONS = 2

APP = """
import os
import sys
from pathlib import Path

import anyio
import trio

from headwater.processing import App, AppConfig, windows

MARKER = Path(os.environ["HW_TEST_MARKER"])
HOLD_FROM = int(os.environ.get("HW_TEST_HOLD", "-1"))
WHERE = os.environ.get("HW_TEST_WHERE", "input")
app = App("emitting", config=AppConfig(max_batch_bytes=1024, commit_interval_ms=20))
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


async def gate_input(event):
    if WHERE == "input" and 0 <= HOLD_FROM <= event["i"]:
        await hold()
    return event


async def gate_result(result):
    if WHERE == "result" and 0 <= HOLD_FROM <= result["start"]:
        await hold()
    return result


results = (
    app.stream("clicks")
    .map_async(gate_input, concurrency=4)
    .key_by(lambda e: e["k"])
    .window(windows.tumbling(ms=1000), timestamp=lambda e: e["t"], grace_ms=0, idle_ms=None)
    .count(name="counts")
    .final()
)
results.to("out")
(
    results.map(lambda w: {"k": w.key, "start": w.start})
    .key_by(lambda r: r["k"])
    .repartition("results")
    .map_async(gate_result, concurrency=4)
    .aggregate(
        initial=lambda: [],
        add=lambda starts, r: sorted({*starts, r["start"]}),
        name="starts",
    )
    .to_stream()
    .to("starts")
)
"""


def event(i: int) -> dict[str, object]:
    return {"i": i, "k": f"k{i % 7}", "t": i * 7}


@pytest.mark.slow
@pytest.mark.parametrize(("where", "hold_from"), [("input", 1_200), ("result", 9_000)])
async def test_kill_9_loses_no_result_of_a_step_that_emits_before_a_repartition(
    tmp_path: Path, data: Path, where: str, hold_from: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "app.py").write_text(APP)
    await load(data, "clicks", [event(i) for i in range(EVENTS)], partitions=PARTITIONS, batch=50)
    monkeypatch.setenv("HW_TEST_WHERE", where)
    worker = start_worker(tmp_path, data, hold=True, hold_from=hold_from)
    wait_for_marker(tmp_path, worker)
    worker.send_signal(signal.SIGKILL)
    worker.communicate(timeout=60)
    restarted = start_worker(tmp_path, data, "--until-caught-up")
    _, err = restarted.communicate(timeout=120)
    assert restarted.returncode == 0, err

    written: dict[str, set[int]] = defaultdict(set)  # the windows each key's results name
    for part in await read(data, "out"):
        for record in part:
            result = orjson.loads(record.value)
            written[result["key"]].add(result["start"])
    collected: dict[str, list[int]] = {}  # each key's latest collected starts
    for part in await read(data, "starts"):
        for record in part:
            assert record.key is not None
            collected[orjson.loads(record.key)] = orjson.loads(record.value)
    assert sorted(written) == [f"k{i}" for i in range(7)]
    assert all(len(starts) >= 15 for starts in written.values())  # most windows closed
    assert {k: sorted(s) for k, s in written.items()} == collected
