"""fsync off the event loop (``store/_fsync.py``) and the flushes that use it."""

from __future__ import annotations

import errno
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest
from forking import fork

from headwater.store import (
    Durability,
    LogFailedError,
    NewRecord,
    OsFileSystem,
    PartitionLog,
    TopicConfig,
    encode_batch,
    open_store,
)
from headwater.store._fs import OS_FILE_SYSTEM
from headwater.store._fsync import fsync_all, native_fsync, start_fsync


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


async def test_fsyncs_at_the_same_time_each_get_their_own_outcome(files: list[int]) -> None:
    """Several flushes at once (of several partitions) each have a thread, and each
    hears its own outcome: a failing one among them fails alone."""
    outcomes: dict[int, int] = {}

    async def one(i: int) -> None:
        fds = [files[i % len(files)], NOT_OPEN] if i % 5 == 0 else [files[i % len(files)]]
        try:
            await fsync_all(OS_FILE_SYSTEM, fds)
            outcomes[i] = 0
        except OSError as exc:
            outcomes[i] = exc.errno or -1

    before = open_descriptors()
    for _ in range(3):
        async with anyio.create_task_group() as tg:
            for i in range(20):
                tg.start_soon(one, i)
        assert outcomes == {i: errno.EBADF if i % 5 == 0 else 0 for i in range(20)}
        outcomes.clear()
    assert open_descriptors() - before < 10


def test_a_started_fsync_can_be_waited_for_without_an_event_loop(files: list[int]) -> None:
    started = start_fsync(OS_FILE_SYSTEM, files)
    assert started is not None
    started.wait_blocking()
    failing = start_fsync(OS_FILE_SYSTEM, [NOT_OPEN])
    assert failing is not None
    with pytest.raises(OSError) as raised:
        failing.wait_blocking()
    assert raised.value.errno == errno.EBADF
    assert start_fsync(RecordingFileSystem(), files) is None  # that one syncs itself


async def sync_within(seconds: float, fds: list[int]) -> None:
    with anyio.fail_after(seconds):
        await fsync_all(OS_FILE_SYSTEM, fds)


def test_a_forked_child_syncs_although_its_parents_threads_are_gone(files: list[int]) -> None:
    """The syncing threads wait between flushes; a child forked meanwhile has none of
    them, and must start its own rather than wake one that is not there."""
    anyio.run(fsync_all, OS_FILE_SYSTEM, files)  # leaves a thread waiting for the next
    pid = fork()
    if pid == 0:  # pragma: no cover - the child
        code = 1
        try:
            anyio.run(sync_within, 20.0, files)
            code = 0
        finally:
            os._exit(code)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            assert os.waitstatus_to_exitcode(status) == 0
            return
        time.sleep(0.05)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    pytest.fail("the forked child's fsync never finished")


# -- a flush begun ahead of its wait ---------------------------------------------------


def batch(value: bytes) -> bytes:
    return encode_batch([NewRecord(value=value)])


async def test_a_begun_flush_is_what_the_next_wait_waits_for(tmp_path: Path) -> None:
    fs = RecordingFileSystem()
    async with open_store(tmp_path, fs=fs) as store:
        await store.create_topic("t", TopicConfig(durability=Durability.BATCH))
        partition = store.partition("t", 0)
        first = partition.append_batch_nowait(batch(b"a"))
        partition.begin_flush()
        partition.begin_flush()  # one is under way: nothing more
        second = partition.append_batch_nowait(batch(b"b"))
        assert partition.high_watermark == 0  # begun is not done
        synced = len(fs.synced)
        await partition.wait_durable(first.next_offset)
        assert partition.high_watermark == 1  # the begun flush covered "a" only
        assert len(fs.synced) == synced + 1
        await partition.wait_durable(second.next_offset)
        assert partition.high_watermark == 2
        assert len(fs.synced) == synced + 2
        assert [r.value for r in await partition.read_records(0, 1 << 16)] == [b"a", b"b"]


async def test_only_batch_durability_begins_a_flush(tmp_path: Path) -> None:
    fs = RecordingFileSystem()
    async with open_store(tmp_path, fs=fs) as store:
        await store.create_topic("never", TopicConfig(durability=Durability.NEVER))
        partition = store.partition("never", 0)
        await partition.append([NewRecord(value=b"x")])
        synced = len(fs.synced)
        partition.begin_flush()
        await partition.wait_durable(1)
        assert len(fs.synced) == synced
        assert partition.log.recovery_point == 0


@pytest.mark.parametrize("fs", [OS_FILE_SYSTEM, RecordingFileSystem()], ids=["native", "thread"])
async def test_closing_finishes_a_begun_flush_no_one_waited_for(
    tmp_path: Path, fs: OsFileSystem
) -> None:
    before = open_descriptors()
    rounds = CALLS // 5
    for round_ in range(rounds):
        async with open_store(tmp_path, fs=fs) as store:
            if round_ == 0:
                await store.create_topic("t", TopicConfig(durability=Durability.BATCH))
            partition = store.partition("t", 0)
            # A first flush leaves nothing but the segment to sync: the next is light.
            await partition.wait_durable(
                partition.append_batch_nowait(batch(b"%d" % round_)).next_offset
            )
            for i in range(3):
                partition.append_batch_nowait(batch(b"%d-%d" % (round_, i)))
            partition.begin_flush()
            log = partition.log
        assert log.failure is None  # its fsyncs ran on open descriptors, and were heard
        assert log.recovery_point == log.log_end_offset  # synced before the close
    assert open_descriptors() - before < rounds // 2
    async with open_store(tmp_path) as store:
        values = [r.value for r in await store.partition("t", 0).read_records(0, 1 << 20)]
    assert values == [
        v for r in range(rounds) for v in [b"%d" % r, *(b"%d-%d" % (r, i) for i in range(3))]
    ]


async def test_a_begun_flush_that_fails_fails_the_wait(tmp_path: Path) -> None:
    class FailingFsync(OsFileSystem):
        armed = False

        def fsync(self, fd: int) -> None:  # type: ignore[override]
            if self.armed:
                raise OSError(errno.EIO, os.strerror(errno.EIO))
            os.fsync(fd)

    fs = FailingFsync()
    async with open_store(tmp_path, fs=fs) as store:
        await store.create_topic("t", TopicConfig(durability=Durability.BATCH))
        partition = store.partition("t", 0)
        info = partition.append_batch_nowait(batch(b"lost"))
        fs.armed = True
        partition.begin_flush()
        with pytest.raises(LogFailedError):
            await partition.wait_durable(info.next_offset)
        assert partition.high_watermark == 0
        partition.begin_flush()  # a failed log begins nothing, and says so at the wait
        with pytest.raises(LogFailedError):
            await partition.wait_durable(info.next_offset)
        fs.armed = False
