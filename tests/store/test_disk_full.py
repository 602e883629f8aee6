"""Disk full: an append the file system refuses fails cleanly, and appends resume later.

The "full disk" is ``RLIMIT_FSIZE`` with ``SIGXFSZ`` ignored: a write past the limit then
fails with ``EFBIG`` (a write that crosses it first writes what fits, and the next write
fails), exactly the path a full disk takes through the log. The limit applies to the whole
process, so each scenario runs in a forked child that reports back through a pipe and its
exit status; raising the soft limit again stands for freeing space.
"""

from __future__ import annotations

import errno
import os
import random
import resource
import signal
import traceback
from collections.abc import Callable
from pathlib import Path

import forking
import pytest
import trio

from headwater.store import (
    Durability,
    NewRecord,
    Partition,
    PartitionLog,
    StorageFullError,
    StoreError,
    TopicConfig,
    decode_records,
    encode_batch,
    open_store,
    parse_batch_header,
)
from headwater.store._partition import records_from

SEED = int(os.environ.get("HEADWATER_DISK_FULL_SEED", "4242"))
LIMIT_BYTES = 60_000
BASE_TIMESTAMP = 1_700_000_000_000
#: One segment holds everything, so the limit is hit inside it rather than dodged by rolling.
CONFIG = TopicConfig(durability=Durability.ALWAYS, segment_bytes=1 << 20)


def expected_record(offset: int) -> NewRecord:
    value = b"%d:" % offset + bytes([65 + offset % 26]) * (offset * 7919 % 400)
    return NewRecord(value=value, key=b"k%d" % (offset % 10), timestamp=BASE_TIMESTAMP + offset)


def records_for(base: int, count: int) -> list[NewRecord]:
    return [expected_record(o) for o in range(base, base + count)]


def set_file_size_limit(soft: int | None) -> None:
    """Lower the soft limit to ``soft`` bytes, or restore it to the hard limit (``None``)."""
    _, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (hard if soft is None else soft, hard))


def run_forked(scenario: Callable[[], None]) -> None:
    """Run ``scenario`` in a forked child; fail with its traceback if it fails."""
    read_fd, write_fd = os.pipe()
    pid = forking.fork()
    if pid == 0:  # pragma: no cover - the child
        os.close(read_fd)
        code = 0
        report = b""
        try:
            signal.alarm(60)  # a hung child dies rather than hanging the suite
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
            scenario()
        except BaseException:
            code = 1
            report = traceback.format_exc().encode()
        finally:
            try:
                view = memoryview(report)
                while view:
                    view = view[os.write(write_fd, view) :]
            finally:
                os._exit(code)
    os.close(write_fd)
    chunks = []
    while chunk := os.read(read_fd, 65536):
        chunks.append(chunk)
    os.close(read_fd)
    _, status = os.waitpid(pid, 0)
    report = b"".join(chunks).decode(errors="replace")
    if os.WIFSIGNALED(status):
        pytest.fail(f"the child died of signal {os.WTERMSIG(status)}\n{report}")
    if os.WEXITSTATUS(status) != 0:
        pytest.fail(f"the child failed (seed {SEED}):\n{report}")


def check_full_error(exc: StoreError, log_path: Path) -> None:
    """The error says which file, that the disk refused, and that nothing was lost."""
    assert isinstance(exc, StorageFullError), repr(exc)
    message = str(exc)
    assert str(log_path) in message, message
    assert os.strerror(errno.EFBIG) in message, message
    assert "nothing acknowledged was lost" in message, message
    assert isinstance(exc.__cause__, OSError) and exc.__cause__.errno == errno.EFBIG


def check_segment_file(log_path: Path, sizes: list[int]) -> None:
    """The file holds exactly the acknowledged batches, each valid: no partial batch."""
    data = log_path.read_bytes()
    assert len(data) == sum(sizes), f"file is {len(data)} bytes, acknowledged {sum(sizes)}"
    position = 0
    found = []
    while position < len(data):
        header = parse_batch_header(data, position)
        decode_records(data, position, verify=True)
        found.append(header.size)
        position += header.size
    assert found == sizes


def check_log(log: PartitionLog, end: int) -> None:
    """The log holds offsets [0, end), dense and as written, every batch CRC-checked."""
    assert (log.log_start_offset, log.log_end_offset) == (0, end)
    offset = 0
    while offset < end:
        data = log.read(offset, 1 << 16)
        position = 0
        while position < len(data):
            for record in decode_records(data, position, verify=True):
                want = expected_record(offset)
                assert record.offset == offset
                assert (record.key, record.value, record.timestamp) == (
                    want.key,
                    want.value,
                    want.timestamp,
                ), f"record {offset} differs"
                offset += 1
            position += parse_batch_header(data, position).size


# -- PartitionLog --------------------------------------------------------------------------


def fill_log_until_full(log: PartitionLog, rng: random.Random, *, at_limit: bool) -> list[int]:
    """Append and flush until the disk refuses; return the acknowledged batch sizes."""
    sizes: list[int] = []
    while True:
        end = log.log_end_offset
        before = log.segments[-1].size
        if at_limit and before > LIMIT_BYTES // 2:
            set_file_size_limit(before)  # the next write finds no room at all
        records = records_for(end, rng.randint(1, 20))
        try:
            info = log.append(records)
        except StoreError as exc:
            check_full_error(exc, log.segments[-1].log_path)
            if not at_limit:
                # This append crossed the limit: part of it was written, then cut away.
                assert before < LIMIT_BYTES
            assert log.log_end_offset == end
            assert log.segments[-1].size == before
            return sizes
        log.flush()
        assert info.base_offset == end
        sizes.append(log.segments[-1].size - before)


def log_scenario(directory: Path, at_limit: bool) -> None:
    rng = random.Random(SEED)
    log = PartitionLog.open(directory, CONFIG)
    set_file_size_limit(LIMIT_BYTES)
    sizes = fill_log_until_full(log, rng, at_limit=at_limit)
    end = log.log_end_offset
    log_path = log.segments[-1].log_path
    assert len(sizes) > 5 and end > 20, "the limit was hit too early to prove much"
    check_segment_file(log_path, sizes)
    check_log(log, end)
    # Still full: the same append fails the same way and changes nothing.
    with pytest.raises(StorageFullError):
        log.append(records_for(end, 25))
    check_segment_file(log_path, sizes)
    # Space is freed: appends resume at the next dense offset.
    set_file_size_limit(None)
    for _ in range(5):
        before = log.log_end_offset
        info = log.append(records_for(before, 25))
        log.flush()
        assert info.base_offset == before
    end = log.log_end_offset
    check_log(log, end)
    log.close()
    log = PartitionLog.open(directory, CONFIG)
    check_log(log, end)
    log.close()


@pytest.mark.parametrize("at_limit", [False, True], ids=["write-crosses-limit", "at-limit"])
def test_partition_log_append_fails_cleanly_when_full_and_resumes(
    tmp_path: Path, at_limit: bool
) -> None:
    run_forked(lambda: log_scenario(tmp_path / "0", at_limit))


# -- Partition (async, acknowledged after fsync) ------------------------------------------


def partition_scenario(directory: Path) -> None:
    rng = random.Random(SEED + 1)

    async def main() -> None:
        log = PartitionLog.open(directory, CONFIG)
        partition = Partition("full", 0, log)
        set_file_size_limit(LIMIT_BYTES)
        acked = 0
        while True:
            end = partition.log_end_offset
            try:
                info = await partition.append(records_for(end, rng.randint(1, 20)))
            except StoreError as exc:
                check_full_error(exc, log.segments[-1].log_path)
                break
            assert info.base_offset == end
            acked = info.next_offset
            assert partition.high_watermark == acked
        # The refused append is neither visible to readers nor acknowledged.
        assert partition.log_end_offset == partition.high_watermark == acked > 20
        records = await partition.read_records(0, 1 << 20)
        assert [r.offset for r in records] == list(range(acked))
        check_log(log, acked)
        assert log.segments[-1].log_path.stat().st_size == log.segments[-1].size
        set_file_size_limit(None)
        info = await partition.append(records_for(acked, 30))
        assert (info.base_offset, partition.high_watermark) == (acked, acked + 30)
        partition.close()
        log = PartitionLog.open(directory, CONFIG)
        check_log(log, acked + 30)
        log.close()

    trio.run(main)


def test_partition_append_fails_cleanly_when_full_and_resumes(tmp_path: Path) -> None:
    run_forked(lambda: partition_scenario(tmp_path / "0"))


# -- Store ---------------------------------------------------------------------------------


def store_scenario(data_dir: Path) -> None:
    rng = random.Random(SEED + 2)

    async def read_all(store_path: Path) -> list[tuple[int, bytes | None]]:
        async with open_store(store_path) as store:
            partition = store.partition("events", 0)
            out = []
            while len(out) < partition.high_watermark:
                records = await partition.read_records(len(out), 1 << 16)
                out.extend((r.offset, r.value) for r in records)
            return out

    async def main() -> None:
        async with open_store(data_dir) as store:
            await store.create_topic("events", CONFIG)
            set_file_size_limit(LIMIT_BYTES)
            acked = 0
            while True:
                records = records_for(acked, rng.randint(1, 20))
                try:
                    placed = await store.append("events", records, partition=0)
                except StoreError as exc:
                    check_full_error(exc, store.partition("events", 0).log.segments[-1].log_path)
                    break
                assert placed == [(0, o) for o in range(acked, acked + len(records))]
                acked += len(records)
            assert store.partition("events", 0).high_watermark == acked > 20
            set_file_size_limit(None)
            placed = await store.append("events", records_for(acked, 10), partition=0)
            assert placed[0] == (0, acked)
            acked += 10
        stored = await read_all(data_dir)
        assert stored == [(o, expected_record(o).value) for o in range(acked)]

    trio.run(main)


def test_store_append_fails_cleanly_when_full_and_resumes(tmp_path: Path) -> None:
    run_forked(lambda: store_scenario(tmp_path / "data"))


# -- a full disk while a roll's index files are written -----------------------------------


def roll_scenario(directory: Path) -> None:
    # Tiny batches, an index entry for each, 1 KB segments: a rolled segment's .index is
    # larger than one batch, so a limit can let the batch in and refuse the index.
    config = TopicConfig(durability=Durability.ALWAYS, segment_bytes=1024, index_interval_bytes=0)

    async def main() -> None:
        log = PartitionLog.open(directory, config)
        partition = Partition("full", 0, log)
        while True:
            end = partition.log_end_offset
            records = [NewRecord(value=b"v", timestamp=BASE_TIMESTAMP + end)]
            size = len(encode_batch(records, base_offset=end))
            active = log.segments[-1]
            if active.size + size > config.segment_bytes:
                break  # this append rolls the segment
            await partition.append(records)
        assert len(active.index) * 8 > size + 8, "the rolled index would fit under the limit"
        set_file_size_limit(size + 8)
        # The disk refuses the rolled segment's index file but takes the batch: index
        # files are derived data, so the append is acknowledged (its data is fsynced)
        # and the index files are written by a later flush.
        rolled = log.segments[-1]
        await partition.append(records)
        assert log.segments[-1] is not rolled
        assert partition.high_watermark == partition.log_end_offset
        set_file_size_limit(None)
        resumed = partition.log_end_offset
        info = await partition.append([NewRecord(value=b"after", timestamp=BASE_TIMESTAMP)])
        assert info.base_offset == resumed
        partition.close()
        log = PartitionLog.open(directory, config)
        assert log.log_end_offset == resumed + 1
        values = [records_from(log.read(o, 1), o)[0].value for o in range(resumed + 1)]
        assert values == [b"v"] * resumed + [b"after"]
        log.close()

    trio.run(main)


def test_a_full_disk_while_rolling_is_storage_full_and_appends_resume(tmp_path: Path) -> None:
    run_forked(lambda: roll_scenario(tmp_path / "0"))
