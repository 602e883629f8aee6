"""A failed fsync fails the log: nothing written after the last good fsync is acknowledged.

Linux reports a writeback error to one fsync and then marks the pages clean whether or
not they reached the disk, so a later fsync that succeeds says nothing about them. The
file system below does the same through the store's ``FileSystem`` seam: it is the
operating system's, except that it fails one fsync of the chosen file with EIO.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from pathlib import Path

import pytest
import trio

from headwater.store import (
    Durability,
    LogFailedError,
    NewRecord,
    PartitionLog,
    StoreError,
    TopicConfig,
    open_store,
)
from headwater.store._files import CLEAN_SHUTDOWN_FILE, RECOVERY_CHECKPOINT_FILE
from headwater.store._fs import OsFileSystem
from headwater.store._partition import records_from


class FailingFsync(OsFileSystem):
    """The operating system, except that the next fsync of a chosen file fails with EIO."""

    def __init__(self) -> None:
        self.target: Callable[[int], bool] | None = None
        self.failed = 0

    def fsync(self, fd: int) -> None:  # type: ignore[override]
        if self.target is not None and self.target(fd):
            self.target = None
            self.failed += 1
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        os.fsync(fd)

    def fail_next_of(self, path: Path) -> None:
        """Fail the next fsync of a descriptor open on ``path``."""
        wanted = os.stat(path)
        self.target = lambda fd: os.path.samestat(os.fstat(fd), wanted)


@pytest.fixture
def fsync() -> FailingFsync:
    return FailingFsync()


def records(base: int, count: int) -> list[NewRecord]:
    return [NewRecord(value=b"r%d" % o, key=b"k") for o in range(base, base + count)]


def test_a_failed_fsync_is_never_followed_by_an_acknowledgement(
    tmp_path: Path, fsync: FailingFsync
) -> None:
    log = PartitionLog.open(tmp_path, TopicConfig(), fs=fsync)
    log.append(records(0, 5))
    log.flush()
    assert log.recovery_point == 5
    checkpoint = (tmp_path / RECOVERY_CHECKPOINT_FILE).read_bytes()

    log.append(records(5, 5))
    fsync.fail_next_of(log.segments[-1].log_path)
    with pytest.raises(LogFailedError) as raised:
        log.flush()
    assert fsync.failed == 1
    message = str(raised.value)
    assert "fsync failed" in message and "offset 5" in message and "reopen" in message
    assert log.recovery_point == 5

    # The next fsync would succeed, but it cannot vouch for pages the kernel dropped.
    with pytest.raises(LogFailedError):
        log.flush()
    assert log.recovery_point == 5
    with pytest.raises(LogFailedError):
        log.append(records(10, 1))
    with pytest.raises(LogFailedError):
        log.roll()
    assert log.log_end_offset == 10

    # Closing leaves the folder as a crash would: no checkpoint past 5, no clean marker.
    log.close()
    assert log.closed
    assert not (tmp_path / CLEAN_SHUTDOWN_FILE).exists()
    assert (tmp_path / RECOVERY_CHECKPOINT_FILE).read_bytes() == checkpoint

    # Reopening recovers what is on disk (here the page cache kept it) and appends again.
    log = PartitionLog.open(tmp_path, TopicConfig(), fs=fsync)
    assert log.log_end_offset == 10
    log.append(records(10, 1))
    log.flush()
    assert log.recovery_point == 11
    log.close()


def test_a_failed_directory_fsync_fails_the_log_too(tmp_path: Path, fsync: FailingFsync) -> None:
    log = PartitionLog.open(tmp_path, TopicConfig(segment_bytes=1024), fs=fsync)
    big = [NewRecord(value=b"x" * 400)]
    log.append(big * 3)
    log.flush()
    log.append(big * 1)
    log.append(big * 1)  # rolls: the new segment's name needs a directory fsync
    assert len(log.segments) == 2
    fsync.fail_next_of(tmp_path)
    with pytest.raises(LogFailedError):
        log.flush()
    assert log.recovery_point == 3
    with pytest.raises(LogFailedError):
        log.append(big)
    log.close()
    assert not (tmp_path / CLEAN_SHUTDOWN_FILE).exists()


def test_a_failed_fsync_while_recovering_fails_the_open(
    tmp_path: Path, fsync: FailingFsync
) -> None:
    log = PartitionLog.open(tmp_path, TopicConfig(), fs=fsync)
    log.append(records(0, 4))
    log.abandon()  # a crash: opening again fsyncs what recovery kept
    fsync.fail_next_of(tmp_path / "00000000000000000000.log")
    with pytest.raises(LogFailedError):
        PartitionLog.open(tmp_path, TopicConfig(), fs=fsync)
    log = PartitionLog.open(tmp_path, TopicConfig(), fs=fsync)
    assert log.log_end_offset == 4
    log.close()


@pytest.mark.parametrize("durability", [Durability.BATCH, Durability.ALWAYS])
async def test_appends_waiting_on_a_failed_fsync_fail_and_later_ones_are_refused(
    tmp_path: Path, fsync: FailingFsync, durability: Durability
) -> None:
    config = TopicConfig(durability=durability)
    async with open_store(tmp_path, fs=fsync) as store:
        await store.create_topic("t", config)
        partition = store.partition("t", 0)
        await partition.append(records(0, 2))
        assert partition.high_watermark == 2
        fsync.fail_next_of(partition.log.segments[-1].log_path)
        outcomes: list[BaseException | None] = []

        async def append(base: int) -> None:
            try:
                await partition.append(records(base, 2))
            except StoreError as exc:
                outcomes.append(exc)
            else:
                outcomes.append(None)

        async with trio.open_nursery() as nursery:
            for base in (2, 4, 6):
                nursery.start_soon(append, base)
        assert fsync.failed == 1
        # Every append that the failed fsync (or any after it) would have covered fails.
        assert all(isinstance(o, LogFailedError) for o in outcomes), outcomes
        assert partition.high_watermark == 2
        with pytest.raises(LogFailedError):
            await partition.append(records(8, 1))
        with pytest.raises(LogFailedError):
            await partition.flush()
        # Readers see only what was acknowledged.
        data = await partition.read(0, 1 << 20)
        assert [r.offset for r in records_from(data)] == [0, 1]
    folder = tmp_path / "t" / "0"
    assert not (folder / CLEAN_SHUTDOWN_FILE).exists()
    async with open_store(tmp_path, fs=fsync) as store:
        partition = store.partition("t", 0)
        # Recovery keeps what reached the disk (all of it here) and appends resume.
        assert partition.log_end_offset >= 2
        info = await partition.append(records(partition.log_end_offset, 1))
        assert partition.high_watermark == info.next_offset
