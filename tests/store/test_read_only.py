"""A store opened read-only writes nothing, and sees what a writer's open would keep.

The directory is left as a crash leaves it (no clean-shutdown marker, a torn tail in one
partition, damage with valid batches after it in another). A read-only open must change
no name, byte or mtime, read what a writer's recovery keeps (on a copy), and report the
damage to the reader that meets it instead of refusing to open.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest

from headwater.store import (
    CorruptRecordError,
    NewRecord,
    PartitionLog,
    StoreError,
    TopicConfig,
    open_store,
    parse_batch_header,
)
from headwater.store._checkpoint import RecoveryPoint, write_recovery_point
from headwater.store._fs import OS_FILE_SYSTEM

CONFIG = TopicConfig(partitions=2, segment_bytes=4096)


def snapshot(data: Path) -> dict[str, tuple[int, int, str]]:
    out = {}
    for path in [data, *sorted(data.rglob("*"))]:  # the directory's own mtime too
        stat = path.stat()
        digest = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else ""
        out[str(path.relative_to(data))] = (stat.st_size, stat.st_mtime_ns, digest)
    return out


async def read_all(store_path: Path, *, read_only: bool) -> tuple[dict[int, list[int]], list[int]]:
    """Offsets read per partition, and the resume offsets of the damage met."""
    offsets: dict[int, list[int]] = {}
    resumed: list[int] = []
    async with open_store(store_path, read_only=read_only) as store:
        for partition in store.partitions("t"):
            got = offsets.setdefault(partition.index, [])
            position = partition.log_start_offset
            while position < partition.high_watermark:
                try:
                    records = await partition.read_records(position, 1 << 16)
                except CorruptRecordError as exc:
                    assert exc.damage is not None and exc.damage.resume_offset is not None
                    resumed.append(exc.damage.resume_offset)
                    position = exc.damage.resume_offset
                    continue
                if not records:
                    break
                got.extend(r.offset for r in records)
                position = records[-1].offset + 1
    return offsets, resumed


async def test_a_read_only_open_writes_nothing_and_sees_what_recovery_keeps(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    async with open_store(data) as store:
        await store.create_topic("t", CONFIG)
        for p in range(2):
            for i in range(50):
                await store.append("t", [NewRecord(value=b"%d-%d" % (p, i))], partition=p)
    for p in range(2):
        log = PartitionLog.open(data / "t" / str(p), CONFIG)
        log.append([NewRecord(value=b"more")])
        log.flush()
        log.abandon()  # a crash
    torn = data / "t" / "0" / "00000000000000000000.log"
    with torn.open("ab") as f:
        f.write(torn.read_bytes()[:30])
    # Partition 1: damage in batch 10 with valid batches after it, past the checkpoint.
    damaged = data / "t" / "1" / "00000000000000000000.log"
    raw = bytearray(damaged.read_bytes())
    position = 0
    for _ in range(10):
        position += parse_batch_header(raw, position).size
    raw[position + 40] ^= 1
    damaged.write_bytes(raw)
    write_recovery_point(OS_FILE_SYSTEM, damaged.parent, RecoveryPoint(0, 0, 0))

    before = snapshot(data)
    offsets, resumed = await read_all(data, read_only=True)
    assert snapshot(data) == before, "a read-only open changed the directory"
    assert offsets[0] == list(range(51))  # the torn tail is not shown
    assert offsets[1] == [o for o in range(51) if o != 10]
    assert resumed == [11]

    # A writer's open of a copy keeps the same in partition 0, and refuses partition 1.
    copy = tmp_path / "copy"
    shutil.copytree(data, copy)
    with pytest.raises(CorruptRecordError, match="headwater repair t --partition 1"):
        async with open_store(copy):
            pass
    assert PartitionLog.open(copy / "t" / "0", CONFIG).log_end_offset == 51


async def test_a_read_only_open_creates_nothing(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="no data directory"):
        async with open_store(tmp_path / "missing", read_only=True):
            pass
    assert not (tmp_path / "missing").exists()
    # A directory no writer ever opened has no lock file, and gets none.
    (tmp_path / "empty").mkdir()
    async with open_store(tmp_path / "empty", read_only=True) as store:
        assert store.list_topics() == []
    assert list((tmp_path / "empty").iterdir()) == []
