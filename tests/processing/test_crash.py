"""At-least-once under kill -9, and graceful shutdown on SIGTERM, of a real worker process.

The worker is ``headwater run app.py`` in a subprocess, over a data directory loaded
beforehand. Lineage headers say which input each output came from, so the checks are
exact: every input has an output after a restart, and an input has two outputs only if
it lies in the tail that was not committed when the worker died.
"""

from __future__ import annotations

import os
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

APP = """
import os
from pathlib import Path

import anyio

from headwater.processing import App, AppConfig

MARKER = Path(os.environ["HW_TEST_MARKER"])
app = App("crashy", config=AppConfig(max_batch_bytes=2048, commit_interval_ms=50))
seen = 0


def progress(event):
    global seen
    seen += 1
    if seen == 1500:
        MARKER.write_text("started")


async def slow(event):
    await anyio.sleep(0.0002)
    return {**event, "done": True}


app.stream("clicks").peek(progress).map_async(slow, concurrency=16).to("out")
"""


@pytest.fixture
async def worker_dir(tmp_path: Path, data: Path) -> Path:
    (tmp_path / "app.py").write_text(APP)
    await load(data, "clicks", [{"i": i} for i in range(EVENTS)], partitions=PARTITIONS, batch=200)
    return tmp_path


def start_worker(directory: Path, data: Path, *args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "HW_TEST_MARKER": str(directory / "marker")}
    return subprocess.Popen(
        [HEADWATER, "--data", str(data), "run", str(directory / "app.py"), *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for_marker(directory: Path, worker: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 30
    while not (directory / "marker").exists():
        assert worker.poll() is None, worker.communicate()
        assert time.monotonic() < deadline, "the worker made no progress"
        time.sleep(0.02)


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
    worker = start_worker(worker_dir, data)
    wait_for_marker(worker_dir, worker)
    time.sleep(0.15)  # a few commits (every 50 ms) happen meanwhile
    assert worker.poll() is None, "the worker finished before it could be killed"
    worker.send_signal(signal.SIGKILL)
    worker.communicate(timeout=10)
    at_kill = await committed(data, "crashy")
    assert sum(at_kill.values()) > 0, "nothing was committed before the kill"
    assert sum(at_kill.values()) < EVENTS, "everything was done before the kill"

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
    worker = start_worker(worker_dir, data)
    wait_for_marker(worker_dir, worker)
    worker.send_signal(signal.SIGTERM)
    _, err = worker.communicate(timeout=30)
    assert worker.returncode == 0, err
    assert "Traceback" not in err
    offsets = await committed(data, "crashy")
    done = sum(offsets.values())
    assert 1500 <= done < EVENTS
    outputs = await output_sources(data)
    # Graceful: every output's input is committed, each exactly once, none beyond.
    assert all(count == 1 for count in outputs.values())
    expected = {
        (p, o) for p in range(PARTITIONS) for o in range(offsets[TopicPartition("clicks", p)])
    }
    assert set(outputs) == expected
