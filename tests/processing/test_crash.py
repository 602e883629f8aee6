"""At-least-once under kill -9, and graceful shutdown on SIGTERM, of a real worker process.

The worker is ``headwater run app.py`` in a subprocess, over a data directory loaded
beforehand. Lineage headers say which input each output came from, so the checks are
exact: every input has an output after a restart, and an input has two outputs only if
it lies in the tail that was not committed when the worker died.

The worker the test stops holds the inputs from ``HOLD_FROM`` on, so it cannot finish
first, and says when it holds them and has committed (a marker file): the test stops it
then, instead of after a guessed delay.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from headwater.groups import TopicPartition
from headwater.processing import source_of

from .helpers import committed, load, read

HEADWATER = str(Path(sys.executable).with_name("headwater"))
EVENTS = 12_000
PARTITIONS = 2

#: Inputs from this one on are held in the runs the test stops (``HW_TEST_HOLD``), so
#: such a run can never finish before the test stops it.
HOLD_FROM = 1_500

APP = """
import os
import sys
from pathlib import Path

import anyio
import trio

from headwater.processing import App, AppConfig

MARKER = Path(os.environ["HW_TEST_MARKER"])
HOLD_FROM = int(os.environ.get("HW_TEST_HOLD", "-1"))
app = App("crashy", config=AppConfig(max_batch_bytes=2048, commit_interval_ms=50))
released = None


async def hold():
    # The first input held writes the marker once the run has committed, then waits for
    # stdin to close; the others wait for it.
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


async def slow(event):
    await anyio.sleep(0.0002)
    if 0 <= HOLD_FROM <= event["i"]:
        await hold()
    return {**event, "done": True}


app.stream("clicks").map_async(slow, concurrency=16).to("out")
"""


@pytest.fixture
async def worker_dir(tmp_path: Path, data: Path) -> Path:
    (tmp_path / "app.py").write_text(APP)
    await load(data, "clicks", [{"i": i} for i in range(EVENTS)], partitions=PARTITIONS, batch=200)
    return tmp_path


def start_worker(
    directory: Path, data: Path, *args: str, hold: bool = False, hold_from: int = HOLD_FROM
) -> subprocess.Popen[str]:
    env = {**os.environ, "HW_TEST_MARKER": str(directory / "marker")}
    if hold:
        env["HW_TEST_HOLD"] = str(hold_from)
    return subprocess.Popen(
        [HEADWATER, "--data", str(data), "run", str(directory / "app.py"), *args],
        env=env,
        stdin=subprocess.PIPE,  # held inputs go on once it closes (communicate() closes it)
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for_marker(directory: Path, worker: subprocess.Popen[str]) -> None:
    """Wait until the worker holds its inputs from HOLD_FROM on, having committed."""
    deadline = time.monotonic() + 120  # a stuck worker fails the test; a slow one does not
    while not (directory / "marker").exists():
        assert worker.poll() is None, worker.communicate()
        assert time.monotonic() < deadline, "the worker made no progress"
        time.sleep(0.02)


def wait_for_stderr(worker: subprocess.Popen[str], text: str) -> str:
    """Read the worker's stderr until ``text`` appears; return what was read."""
    assert worker.stderr is not None
    seen = b""
    deadline = time.monotonic() + 120
    while text.encode() not in seen:
        left = deadline - time.monotonic()
        assert left > 0, seen.decode()
        ready, _, _ = select.select([worker.stderr.fileno()], [], [], left)
        if ready:
            chunk = os.read(worker.stderr.fileno(), 65536)
            assert chunk, f"the worker closed its stderr: {seen.decode()}"
            seen += chunk
    return seen.decode()


async def output_sources(data: Path) -> Counter[tuple[int, int]]:
    """Count the outputs per input (partition, offset), from their lineage headers."""
    found: Counter[tuple[int, int]] = Counter()
    for part in await read(data, "out"):
        for record in part:
            source = source_of(record.headers)
            assert source is not None and source.topic == "clicks"
            found[(source.partition, source.offset)] += 1
    return found


@pytest.mark.slow
async def test_kill_9_loses_nothing_and_duplicates_only_the_uncommitted_tail(
    worker_dir: Path, data: Path
) -> None:
    worker = start_worker(worker_dir, data, hold=True)
    wait_for_marker(worker_dir, worker)  # it has committed, and holds the rest
    worker.send_signal(signal.SIGKILL)
    worker.communicate(timeout=60)
    at_kill = await committed(data, "crashy")
    assert 0 < sum(at_kill.values()) <= HOLD_FROM

    restarted = start_worker(worker_dir, data, "--until-caught-up")
    _, err = restarted.communicate(timeout=60)
    assert restarted.returncode == 0, err
    assert "app 'crashy': processed" in err

    outputs = await output_sources(data)
    per_partition = EVENTS // PARTITIONS
    for p in range(PARTITIONS):
        tail_start = at_kill.get(TopicPartition("clicks", p), 0)
        for offset in range(per_partition):
            count = outputs[(p, offset)]
            assert count >= 1, f"input clicks/{p}/{offset} has no output"
            if count > 1:
                assert offset >= tail_start, f"clicks/{p}/{offset} was committed, yet redone"
    assert len(outputs) == EVENTS
    final = await committed(data, "crashy")
    assert final == {TopicPartition("clicks", p): per_partition for p in range(PARTITIONS)}


@pytest.mark.slow
async def test_sigterm_stops_gracefully(worker_dir: Path, data: Path) -> None:
    worker = start_worker(worker_dir, data, "--verbose", hold=True)
    wait_for_marker(worker_dir, worker)
    worker.send_signal(signal.SIGTERM)
    # Released only once the worker is stopping: it finishes the batches in hand, no more.
    err = wait_for_stderr(worker, "SIGTERM: finishing the batches in hand")
    err += worker.communicate(timeout=60)[1]
    assert worker.returncode == 0, err
    assert "Traceback" not in err
    offsets = await committed(data, "crashy")
    done = sum(offsets.values())
    assert HOLD_FROM // PARTITIONS < done < EVENTS  # past the first held input, not all
    outputs = await output_sources(data)
    # Graceful: every output's input is committed, each exactly once, none beyond.
    assert all(count == 1 for count in outputs.values())
    expected = {
        (p, o) for p in range(PARTITIONS) for o in range(offsets[TopicPartition("clicks", p)])
    }
    assert set(outputs) == expected
