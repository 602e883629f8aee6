"""fsync off the event loop (``store/_fsync.py``) and the flushes that use it."""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest

from headwater.store import NewRecord, OsFileSystem, PartitionLog, TopicConfig
from headwater.store._fs import OS_FILE_SYSTEM
from headwater.store._fsync import fsync_all, native_fsync


class RecordingFileSystem(OsFileSystem):
    """The operating system's file system, noting every fsync (so not the native path)."""

    def __init__(self) -> None:
        self.synced: list[int] = []

    def fsync(self, fd: int) -> None:  # type: ignore[override]
        self.synced.append(fd)
        os.fsync(fd)


@pytest.fixture
def files(tmp_path: Path) -> Iterator[list[int]]:
    fds = []
    for name in ("a", "b", "c"):
        fd = os.open(tmp_path / name, os.O_CREAT | os.O_WRONLY, 0o644)
        os.write(fd, name.encode() * 1000)
        fds.append(fd)
    yield fds
    for fd in fds:
        os.close(fd)


#: A descriptor number no test opens (a closed one's number would be reused at once).
NOT_OPEN = 1_000_000


def open_descriptors() -> int:
    return len(os.listdir("/proc/self/fd"))


#: Calls to check for leaks with: a leak grows the count by one or two per call, while
#: other threads of the process (clients of earlier tests) open and close a few meanwhile.
CALLS = 50


def test_the_operating_systems_file_system_syncs_natively() -> None:
    assert native_fsync(OS_FILE_SYSTEM)
    assert not native_fsync(RecordingFileSystem())


async def test_fsync_all_syncs_and_leaves_no_descriptor_behind(files: list[int]) -> None:
    before = open_descriptors()
    for _ in range(CALLS):
        await fsync_all(OS_FILE_SYSTEM, files)
    await fsync_all(OS_FILE_SYSTEM, [])
    assert open_descriptors() - before < CALLS // 5


@pytest.mark.parametrize("fs", [OS_FILE_SYSTEM, RecordingFileSystem()], ids=["native", "thread"])
async def test_a_failed_fsync_raises_its_errno_and_stops_there(
    files: list[int], fs: OsFileSystem
) -> None:
    bad = NOT_OPEN
    with pytest.raises(OSError) as raised:
        await fsync_all(fs, [files[0], bad, files[1]])
    assert raised.value.errno == errno.EBADF
    if isinstance(fs, RecordingFileSystem):
        assert fs.synced == [files[0], bad]  # the one after the failure is not tried


async def test_a_file_system_that_intercepts_fsync_sees_each_one(files: list[int]) -> None:
    fs = RecordingFileSystem()
    await fsync_all(fs, files)
    assert fs.synced == files


async def test_a_cancelled_wait_still_lets_the_fsync_finish(files: list[int]) -> None:
    before = open_descriptors()
    for _ in range(CALLS):
        with anyio.CancelScope() as scope:
            scope.cancel()
            await fsync_all(OS_FILE_SYSTEM, files)  # shielded: runs to the end
            await anyio.sleep(0)  # the cancellation lands at the next checkpoint
            pytest.fail("the scope was cancelled")
        assert scope.cancelled_caught
    assert open_descriptors() - before < CALLS // 5


async def test_a_flush_without_a_roll_is_light_and_one_with_a_roll_is_not(
    tmp_path: Path,
) -> None:
    log = PartitionLog.open(tmp_path, TopicConfig())
    try:
        log.append([NewRecord(value=b"first")])
        first = log.prepare_flush()
        assert first is not None
        await first.execute_async()
        log.complete_flush(first)
        log.append([NewRecord(value=b"second")])
        plan = log.prepare_flush()
        assert plan is not None and plan.light
        await plan.execute_async()
        log.complete_flush(plan)
        assert plan.done and plan.error is None
        assert log.recovery_point == log.log_end_offset == 2
        log.roll()
        log.append([NewRecord(value=b"third")])
        rolled = log.prepare_flush()
        assert rolled is not None and not rolled.light
        await rolled.execute_async()
        log.complete_flush(rolled)
        assert log.recovery_point == 3
    finally:
        log.close()
    reopened = PartitionLog.open(tmp_path, TopicConfig())
    try:
        assert reopened.log_end_offset == 3
    finally:
        reopened.close()
