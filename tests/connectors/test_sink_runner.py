"""A sink outlives failures of the machine: a file sink on a file system that fails
chosen operations (a full disk, I/O errors) is retried from its checkpoints, and the
final files still hold every record exactly once."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import anyio
import orjson
import pytest

from headwater.connectors import FileSink, FileSinkConfig, SinkRunner, StoreLog, parse_final_name
from headwater.groups import GroupCoordinator, TopicPartition
from headwater.store import NewRecord, OsFileSystem, Store, TopicConfig

from .helpers import HANG_S

GROUP = "files"


class Faults(OsFileSystem):
    """The operating system, except that each named operation fails its first ``n`` calls
    (writes with ENOSPC, the others with EIO)."""

    def __init__(self, **failures: int) -> None:
        self.failures = failures

    def _fail(self, operation: str) -> None:
        if self.failures.get(operation):
            self.failures[operation] -= 1
            code = errno.ENOSPC if operation == "write" else errno.EIO
            raise OSError(code, f"{os.strerror(code)} ({operation}, injected)")

    def write(self, fd: int, data: bytes | bytearray | memoryview) -> int:
        self._fail("write")
        return os.write(fd, data)

    def fsync(self, fd: int) -> None:
        self._fail("fsync")
        os.fsync(fd)

    def rename(self, src: Path, dst: Path) -> None:
        self._fail("rename")
        os.rename(src, dst)

    def listdir(self, path: Path) -> list[str]:
        self._fail("listdir")
        return os.listdir(path)


def objects(start: int, stop: int) -> list[bytes]:
    return [orjson.dumps({"i": i}) for i in range(start, stop)]


async def produce(store: Store) -> None:
    """60 records: 0-39 in partition 0, 40-59 in partition 1, in a few appends."""
    await store.create_topic("t", TopicConfig(partitions=2))
    for start in range(0, 40, 10):
        await store.append("t", [NewRecord(v) for v in objects(start, start + 10)], partition=0)
    await store.append("t", [NewRecord(v) for v in objects(40, 60)], partition=1)


def lines_by_partition(directory: Path) -> dict[int, list[int]]:
    """The ``i`` of every line of every final file, per partition, file after file."""
    out: dict[int, list[int]] = {}
    for path in sorted(directory.iterdir()):
        parsed = parse_final_name(path.name)
        if parsed is None:
            continue
        lines = out.setdefault(parsed[1], [])
        lines.extend(orjson.loads(line)["i"] for line in path.read_bytes().splitlines())
    return out


def check_exactly_once(directory: Path) -> None:
    assert lines_by_partition(directory) == {0: list(range(40)), 1: list(range(40, 60))}
    assert not [p for p in directory.iterdir() if p.name.endswith(".tmp")]


@pytest.mark.parametrize(
    "failures",
    [
        {"write": 3},  # a full disk while appending to a file
        {"fsync": 2},  # a file's fsync at a roll by size
        {"rename": 1},  # the rename that finishes a file
        {"listdir": 2},  # the recovery at an assignment, and again at the repair
        {"write": 1, "listdir": 1},  # the repair after a failed write fails too
    ],
    ids=lambda f: "+".join(f"{op}x{n}" for op, n in f.items()),
)
async def test_failures_are_retried_from_the_checkpoint_losing_and_repeating_nothing(
    store: Store, tmp_path: Path, failures: dict[str, int]
) -> None:
    out = tmp_path / "out"
    await produce(store)
    config = FileSinkConfig(topic="t", directory=str(out), roll_bytes=100)
    faults = Faults(**failures)
    async with GroupCoordinator(store) as groups:
        runner = SinkRunner(
            groups, "t", GROUP, FileSink(StoreLog(store), config, fs=faults), backoff_s=0.001
        )
        with anyio.fail_after(HANG_S):
            await runner.run(until_caught_up=True)
        committed = groups.committed(GROUP)
    assert not any(faults.failures.values())  # every injected failure happened
    assert runner.statistics().retries == sum(failures.values())
    check_exactly_once(out)
    assert committed[TopicPartition("t", 0)].offset == 40
    assert committed[TopicPartition("t", 1)].offset == 20


async def test_a_failed_roll_by_time_is_retried(store: Store, tmp_path: Path) -> None:
    out = tmp_path / "out"
    await produce(store)
    # Files roll by time only; the first two fsyncs of those rolls fail.
    config = FileSinkConfig(topic="t", directory=str(out), roll_s=0.01)
    faults = Faults(fsync=2)
    async with GroupCoordinator(store) as groups, anyio.create_task_group() as tg:
        runner = SinkRunner(
            groups, "t", GROUP, FileSink(StoreLog(store), config, fs=faults), backoff_s=0.001
        )
        await tg.start(runner.run)
        with anyio.fail_after(HANG_S):
            await runner.wait_committed({TopicPartition("t", 0): 40, TopicPartition("t", 1): 20})
        runner.stop()
    assert not faults.failures["fsync"]
    assert runner.statistics().retries >= 2
    check_exactly_once(out)
