"""The file sink under ``kill -9`` at each step of a roll: no final file is ever partial,
and after a restart the final files hold every input record exactly once.

The sink runs in a subprocess over a file system that stops at a chosen step of its
N-th roll (before the fsync of the file, before the rename, before the directory's
fsync, after it and before the commit) and says so; the test kills it there.
"""

from __future__ import annotations

import signal
from pathlib import Path

import anyio
import orjson
import pytest

from headwater.connectors import FileSink, FileSinkConfig, SinkRunner, StoreLog, parse_final_name
from headwater.groups import GroupCoordinator
from headwater.store import NewRecord, TopicConfig, open_store

from .helpers import HANG_S, python, wait_for_line

RECORDS = 300
PARTITIONS = 2

SINK = """
import os
import stat
import sys
import time

import anyio
from headwater.connectors import FileSink, FileSinkConfig, SinkRunner, StoreLog
from headwater.groups import GroupCoordinator
from headwater.store import OsFileSystem, open_store

STEP, NTH, ROLL_BYTES = sys.argv[3], int(sys.argv[4]), int(sys.argv[5])


class StopAt(OsFileSystem):
    rolls = 0

    def stop(self, step):
        if step == STEP and self.rolls == NTH:
            print("stopped", step, flush=True)
            time.sleep(3600)

    def fsync(self, fd):
        if stat.S_ISDIR(os.fstat(fd).st_mode):
            self.stop("before-directory-fsync")
            os.fsync(fd)
            self.stop("before-commit")
        else:
            self.rolls += 1
            self.stop("before-file-fsync")
            os.fsync(fd)

    def rename(self, src, dst):
        self.stop("before-rename")
        os.rename(src, dst)


async def main(data, out):
    async with open_store(data) as store, GroupCoordinator(store) as groups:
        config = FileSinkConfig(topic="t", directory=out, roll_bytes=ROLL_BYTES)
        sink = FileSink(StoreLog(store), config, fs=StopAt())
        await SinkRunner(groups, "t", "files", sink).run(until_caught_up=True)
    print("done", flush=True)

anyio.run(main, sys.argv[1], sys.argv[2], backend="trio")
"""


def value(i: int) -> bytes:
    return orjson.dumps({"i": i, "pad": "x" * 20})


def check_final_files(out: Path, values: dict[int, list[int]]) -> list[int]:
    """Check that each final file holds exactly its offsets' records; return them all."""
    seen = []
    for path in sorted(out.iterdir()):
        parsed = parse_final_name(path.name)
        if parsed is None:
            assert path.name.endswith(".tmp"), path.name
            continue
        _, partition, first, last = parsed
        lines = [orjson.loads(line)["i"] for line in path.read_bytes().splitlines()]
        assert lines == values[partition][first : last + 1], path.name
        seen.extend(lines)
    return seen


@pytest.mark.parametrize(
    "step", ["before-file-fsync", "before-rename", "before-directory-fsync", "before-commit"]
)
async def test_kill_9_during_a_roll(tmp_path: Path, step: str) -> None:
    data, out = tmp_path / "data", tmp_path / "out"
    values: dict[int, list[int]] = {p: [] for p in range(PARTITIONS)}
    async with open_store(data) as store:
        await store.create_topic("t", TopicConfig(partitions=PARTITIONS))
        for p in range(PARTITIONS):
            values[p] = list(range(p, RECORDS, PARTITIONS))
            for start in range(0, len(values[p]), 40):
                batch = values[p][start : start + 40]
                await store.append("t", [NewRecord(value(i)) for i in batch], partition=p)

    sink = python(SINK, str(data), str(out), step, "3", "700")
    wait_for_line(sink, b"stopped")
    sink.send_signal(signal.SIGKILL)
    sink.communicate()
    before = check_final_files(out, values)  # no final file is partial
    assert len(before) < RECORDS

    # Restarted (here), with files of another size: a record already in a final file must
    # not be written again, even where the new files' bounds differ from the old ones.
    async with open_store(data) as store, GroupCoordinator(store) as groups:
        config = FileSinkConfig(topic="t", directory=str(out), roll_bytes=1100)
        sink = FileSink(StoreLog(store), config)
        with anyio.fail_after(HANG_S):
            await SinkRunner(groups, "t", "files", sink).run(until_caught_up=True)
    after = check_final_files(out, values)
    assert sorted(after) == list(range(RECORDS))  # every record, once
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]
