"""Injected EIO and ENOSPC: errors surface as the store's own, and lose nothing acknowledged.

Every case runs the real store over ``faultfs.FaultFS`` with one fault rule: a write, an
fsync (of a segment or of the directory), a rename, or one of them during compaction
fails. The failing call must raise a :class:`StoreError` (never a bare ``OSError``, never
a misleading subtype), and afterwards a power cut (``FaultFS.power_loss``: whatever was
not fsynced may go) followed by a reopen must find every acknowledged record intact and
a log that accepts appends again.

A failed fsync is special (Linux's "fsyncgate": the kernel reports a writeback error
once, may already have dropped the pages, and a later fsync succeeds regardless), and
FaultFS models it so: the writes it covered never reach the disk. After one, the
partition must refuse writes instead of acknowledging more on top of the hole.
"""

from __future__ import annotations

import errno
import os
import random
from pathlib import Path

import anyio
import pytest
from faultfs import Fault, FaultFS
from test_power_loss import History, check_log, records_for

from headwater.store import (
    CleanupPolicy,
    Durability,
    NewRecord,
    PartitionLog,
    Record,
    StorageFullError,
    Store,
    StoreError,
    TopicConfig,
    TopicExistsError,
    open_store,
)

CONFIG = TopicConfig(segment_bytes=2048, index_interval_bytes=256, retention_ms=-1)


class LogRun:
    """A partition log over FaultFS, with what was acknowledged so far."""

    def __init__(self, root: Path, config: TopicConfig = CONFIG) -> None:
        self.root = root
        self.config = config
        self.fs = FaultFS(root, seed=7)
        self.log = PartitionLog.open(root / "log", config, fs=self.fs)
        self.history = History(compacted=config.cleanup_policy is CleanupPolicy.COMPACT)
        self.rng = random.Random(3)

    def append(self, count: int = 3) -> int:
        """Append and flush: acknowledged once this returns."""
        info = self.log.append(records_for(self.log.log_end_offset, count))
        self.log.flush()
        self.history.acknowledge(info.next_offset)
        return info.next_offset

    def power_cut_and_check(self) -> PartitionLog:
        """Cut the power, reopen, check every acknowledged record, append again."""
        self.fs.power_loss()
        self.fs = FaultFS(self.root, seed=11)
        self.log = PartitionLog.open(self.root / "log", self.config, fs=self.fs)
        check_log(self.log, self.history, self.rng)
        self.append()
        check_log(self.log, self.history, self.rng)
        return self.log


# -- writes ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "partial", "expected"),
    [
        (errno.ENOSPC, True, StorageFullError),
        (errno.ENOSPC, False, StorageFullError),
        (errno.EIO, False, StoreError),
    ],
)
def test_a_failed_segment_write_fails_the_append_and_leaves_nothing(
    tmp_path: Path, code: int, partial: bool, expected: type[StoreError]
) -> None:
    run = LogRun(tmp_path)
    for _ in range(5):
        run.append()
    end = run.log.log_end_offset
    fault = run.fs.inject(Fault("write", code, path_suffix=".log", partial=partial))
    with pytest.raises(expected) as failed:
        run.log.append(records_for(end, 4))
    assert fault.hits == 1
    assert expected is StoreError or isinstance(failed.value, StorageFullError)
    assert run.log.log_end_offset == end
    for segment in run.log.segments:  # no partial batch anywhere
        assert os.path.getsize(segment.log_path) == segment.size
    run.append()  # appends resume once the disk accepts writes again
    run.power_cut_and_check()


# -- fsyncs ----------------------------------------------------------------------------------


@pytest.mark.parametrize("code", [errno.EIO, errno.ENOSPC])
@pytest.mark.parametrize("target", ["segment", "directory"])
def test_a_failed_fsync_raises_a_store_error_and_acknowledges_nothing(
    tmp_path: Path, code: int, target: str
) -> None:
    run = LogRun(tmp_path)
    for _ in range(5):
        run.append()
    suffix = ".log" if target == "segment" else "/log"
    fault = run.fs.inject(Fault("fsync", code, path_suffix=suffix))
    with pytest.raises(StoreError):
        for _ in range(40):  # the directory is fsynced at the first roll
            run.append(5)
    assert fault.hits == 1
    run.power_cut_and_check()


@pytest.mark.parametrize("target", ["segment", "directory"])
def test_after_a_failed_fsync_the_log_refuses_writes(tmp_path: Path, target: str) -> None:
    run = LogRun(tmp_path)
    for _ in range(5):
        run.append()
    suffix = ".log" if target == "segment" else "/log"
    run.fs.inject(Fault("fsync", errno.EIO, path_suffix=suffix))
    with pytest.raises(StoreError):
        for _ in range(40):
            run.append(5)
    end = run.log.log_end_offset
    # A client retrying: were this acknowledged, it would sit on top of dropped pages.
    refused = False
    try:
        run.append()
    except StoreError:
        refused = True
    assert run.log.log_end_offset == end, "the refused append was written"
    run.power_cut_and_check()
    assert refused, "an append after a failed fsync was acknowledged"


# A close must not retry the fsync: its success would write a checkpoint and a
# clean-shutdown marker over the dropped pages.
@pytest.mark.parametrize("durability", [Durability.ALWAYS, Durability.BATCH])
async def test_a_failed_fsync_fails_every_waiting_append(
    tmp_path: Path, durability: Durability
) -> None:
    fs = FaultFS(tmp_path, seed=5)
    acked: dict[int, int] = {}
    failed: list[BaseException] = []
    config = TopicConfig(durability=durability, segment_bytes=4096, retention_ms=-1)
    async with open_store(tmp_path / "data", fs=fs, maintenance_interval_s=3600) as store:
        await store.create_topic("t", config)
        for i in range(10):
            placed = await store.append("t", [NewRecord(value=b"%d" % i)], partition=0)
            acked[placed[0][1]] = i
        fs.inject(Fault("fsync", errno.EIO, path_suffix=".log"))

        async def writer(n: int) -> None:
            try:
                placed = await store.append("t", [NewRecord(value=b"%d" % n)], partition=0)
            except StoreError as exc:
                failed.append(exc)
            else:
                acked[placed[0][1]] = n

        async with anyio.create_task_group() as tg:
            for n in range(10, 16):
                tg.start_soon(writer, n)
        assert failed, "no append saw the failed fsync"
        assert all(isinstance(e, StoreError) for e in failed)
    await _power_cut_and_check(fs, tmp_path, acked)


@pytest.mark.parametrize("durability", [Durability.ALWAYS, Durability.BATCH])
async def test_after_a_failed_fsync_the_partition_refuses_writes(
    tmp_path: Path, durability: Durability
) -> None:
    fs = FaultFS(tmp_path, seed=5)
    config = TopicConfig(durability=durability, segment_bytes=4096, retention_ms=-1)
    acked: dict[int, int] = {}
    async with open_store(tmp_path / "data", fs=fs, maintenance_interval_s=3600) as store:
        await store.create_topic("t", config)
        partition = store.partition("t", 0)
        for i in range(5):
            acked[(await partition.append([NewRecord(value=b"%d" % i)])).base_offset] = i
        fs.inject(Fault("fsync", errno.EIO, path_suffix=".log"))
        with pytest.raises(StoreError):
            await partition.append([NewRecord(value=b"5")])
        end = partition.log_end_offset
        with pytest.raises(StoreError):
            await partition.append([NewRecord(value=b"6")])
        assert partition.log_end_offset == end, "the refused append was written"
    await _power_cut_and_check(fs, tmp_path, acked)


async def read_all(store: Store, topic: str) -> list[Record]:
    """Every record of partition 0 of ``topic`` below its high watermark."""
    partition = store.partition(topic, 0)
    out: list[Record] = []
    offset = partition.log_start_offset
    while offset < partition.high_watermark:
        records = await partition.read_records(offset, 1 << 20)
        assert records, f"nothing at {offset}"
        out.extend(records)
        offset = records[-1].offset + 1
    return out


async def _power_cut_and_check(fs: FaultFS, root: Path, acked: dict[int, int]) -> None:
    fs.power_loss()
    async with open_store(root / "data", fs=FaultFS(root, seed=9)) as store:
        partition = store.partition("t", 0)
        found = {r.offset: int(r.value or b"-1") for r in await read_all(store, "t")}
        lost = {o: v for o, v in acked.items() if found.get(o) != v}
        assert not lost, f"acknowledged records lost: {lost}"
        await partition.append([NewRecord(value=b"again")])


# -- renames of derived files ---------------------------------------------------------------


@pytest.mark.parametrize("code", [errno.EIO, errno.ENOSPC])
@pytest.mark.parametrize(
    ("op", "suffix"),
    [
        ("replace", ".index"),
        ("replace", ".timeindex"),
        ("write", ".index.tmp"),
        # The checkpoint is a slot overwritten in place, fsynced at rolls.
        ("write", "recovery-checkpoint"),
        ("fsync", "recovery-checkpoint"),
    ],
)
def test_index_and_checkpoint_failures_are_retried_and_lose_nothing(
    tmp_path: Path, op: str, suffix: str, code: int
) -> None:
    run = LogRun(tmp_path)
    fault = run.fs.inject(Fault(op, code, path_suffix=suffix, times=3))
    for _ in range(60):  # many rolls: index files and checkpoints at each
        run.append(5)
    assert fault.hits == 3
    run.power_cut_and_check()


async def test_a_failed_clean_shutdown_marker_is_a_store_error(tmp_path: Path) -> None:
    fs = FaultFS(tmp_path, seed=5)
    fs_fault = Fault("replace", errno.EIO, path_suffix=".clean-shutdown")
    acked: dict[int, int] = {}
    with pytest.raises(StoreError):
        async with open_store(tmp_path / "data", fs=fs, maintenance_interval_s=3600) as store:
            await store.create_topic("t", TopicConfig(durability=Durability.ALWAYS))
            for i in range(5):
                acked[(await store.append("t", [NewRecord(value=b"%d" % i)]))[0][1]] = i
            fs.inject(fs_fault)
    assert fs_fault.hits == 1
    await _power_cut_and_check(fs, tmp_path, acked)


# -- topic creation -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("op", "suffix", "code"),
    [
        ("write", "topic.json.tmp", errno.ENOSPC),
        ("fsync", "topic.json.tmp", errno.EIO),
        ("mkdir", "/0", errno.ENOSPC),
        ("rename", "/t", errno.EIO),
        ("fsync", "/data", errno.EIO),
    ],
)
async def test_a_failed_topic_creation_is_a_store_error(
    tmp_path: Path, op: str, suffix: str, code: int
) -> None:
    fs = FaultFS(tmp_path, seed=5)
    async with open_store(tmp_path / "data", fs=fs, maintenance_interval_s=3600) as store:
        fault = fs.inject(Fault(op, code, path_suffix=suffix))
        with pytest.raises(StoreError) as failed:
            await store.create_topic("t")
        assert fault.hits == 1
        assert not isinstance(failed.value, TopicExistsError), failed.value
        assert os.strerror(code) in str(failed.value)
        assert not any(n.endswith(".creating") for n in os.listdir(tmp_path / "data"))
        if not store.has_topic("t") and not (tmp_path / "data" / "t").exists():
            await store.create_topic("t")  # nothing is left in the way of a retry
            await store.append("t", [NewRecord(value=b"x")])


# -- compaction ------------------------------------------------------------------------------

COMPACTED = TopicConfig(
    durability=Durability.ALWAYS,
    cleanup_policy=CleanupPolicy.COMPACT,
    segment_bytes=1024,
    delete_retention_ms=0,
)


def compacted_record(i: int) -> NewRecord:
    """Record ``i``: keys written once at first (they stay in old segments), then 7 keys."""
    key = b"once%d" % i if i < 40 else b"k%d" % (i % 7)
    return NewRecord(key=key, value=b"v%d" % i)


async def _fill_compacted(store: Store, acked: dict[int, int]) -> None:
    await store.create_topic("c", COMPACTED)
    for i in range(150):
        acked[(await store.append("c", [compacted_record(i)]))[0][1]] = i


async def _check_compacted(store: Store, acked: dict[int, int]) -> None:
    found = {r.offset: (r.key, r.value) for r in await read_all(store, "c")}
    written = {o: compacted_record(i) for o, i in acked.items()}
    latest = {record.key: offset for offset, record in sorted(written.items())}
    lost = [o for o in latest.values() if found.get(o) != (written[o].key, written[o].value)]
    assert not lost, f"the latest records of keys were lost: {lost}"
    for offset, (key, value) in found.items():
        want = written.get(offset)
        assert want is None or (key, value) == (want.key, want.value), offset


@pytest.mark.parametrize(
    ("op", "suffix", "code"),
    [
        ("create", ".log.cleaned", errno.ENOSPC),
        ("write", ".log.cleaned", errno.ENOSPC),
        ("write", ".log.cleaned", errno.EIO),
        ("fsync", ".log.cleaned", errno.EIO),
        ("replace", ".log.swap", errno.EIO),
        ("fsync", "/c/0", errno.EIO),  # the directory, at the swap file's commit
    ],
)
async def test_a_failed_compaction_write_is_a_store_error(
    tmp_path: Path, op: str, suffix: str, code: int
) -> None:
    fs = FaultFS(tmp_path, seed=5)
    acked: dict[int, int] = {}
    async with open_store(tmp_path / "data", fs=fs, maintenance_interval_s=3600) as store:
        await _fill_compacted(store, acked)
        fault = fs.inject(Fault(op, code, path_suffix=suffix))
        with pytest.raises(StoreError) as failed:
            await store.compact()
        assert fault.hits == 1
        assert isinstance(failed.value, StorageFullError) == (code == errno.ENOSPC)
        folder = tmp_path / "data" / "c" / "0"
        assert not [n for n in os.listdir(folder) if n.endswith((".cleaned", ".swap"))]
        await _check_compacted(store, acked)
        await store.append("c", [compacted_record(154)])
        acked[store.partition("c", 0).log_end_offset - 1] = 154
        assert await store.compact() > 0  # it works once the disk does
        await _check_compacted(store, acked)
    fs.power_loss()
    async with open_store(tmp_path / "data", fs=FaultFS(tmp_path, seed=9)) as store:
        await _check_compacted(store, acked)


@pytest.mark.parametrize("fault", ["swap-in rename", "directory fsync after the swap"])
async def test_a_failed_swap_in_keeps_the_records_and_recovery_finishes_it(
    tmp_path: Path, fault: str
) -> None:
    fs = FaultFS(tmp_path, seed=5)
    acked: dict[int, int] = {}
    async with open_store(tmp_path / "data", fs=fs, maintenance_interval_s=3600) as store:
        await _fill_compacted(store, acked)
        if fault == "swap-in rename":
            rule = Fault("replace", errno.EIO, path_suffix=".log")  # <base>.log.swap -> .log
        else:
            rule = Fault("fsync", errno.EIO, path_suffix="/c/0", skip=1)
        fs.inject(rule)
        with pytest.raises(StoreError, match="cannot swap in"):
            await store.compact()
        assert rule.hits == 1
        # The partition refuses writes until the store is reopened.
        with pytest.raises(StoreError):
            await store.append("c", [NewRecord(key=b"k0", value=b"late")])
    # Reopened by the same process: the unlinks of the replaced segments are real here.
    async with open_store(tmp_path / "data", fs=fs) as store:
        await _check_compacted(store, acked)
    fs.power_loss()
    async with open_store(tmp_path / "data", fs=FaultFS(tmp_path, seed=9)) as store:
        await _check_compacted(store, acked)
        folder = tmp_path / "data" / "c" / "0"
        assert not [n for n in os.listdir(folder) if n.endswith((".cleaned", ".swap"))]
        await store.append("c", [NewRecord(key=b"k0", value=b"again")])
