"""Compaction of a topic that holds transactions: what each reader sees is kept.

The cleaner drops markers and aborted records, keeps committed ones as plain records,
never lets a record of an aborted or undecided transaction supersede another, and leaves
everything from the first undecided transaction on alone.
"""

from __future__ import annotations

from pathlib import Path

from headwater.store import (
    CleanupPolicy,
    ControlType,
    Durability,
    IsolationLevel,
    NewRecord,
    Partition,
    PartitionLog,
    TopicConfig,
    encode_batch,
    encode_transactional_batch,
)
from headwater.store._cleaner import clean_partition
from headwater.store._producer_snapshots import SNAPSHOT_SUFFIX

CONFIG = TopicConfig(
    cleanup_policy=CleanupPolicy.COMPACT,
    segment_bytes=1024,
    durability=Durability.NEVER,
    delete_retention_ms=1000,
)
RC = IsolationLevel.READ_COMMITTED
RU = IsolationLevel.READ_UNCOMMITTED


async def view(partition: Partition, isolation: IsolationLevel) -> dict[bytes, bytes]:
    """The table a reader at ``isolation`` builds: latest value per key."""
    table: dict[bytes, bytes] = {}
    offset = partition.log_start_offset
    while records := await partition.read_records(offset, 1 << 20, isolation=isolation):
        for record in records:
            assert record.key is not None and record.value is not None
            table[record.key] = record.value
        offset = records[-1].offset + 1
    return table


async def test_compaction_keeps_what_each_reader_sees(tmp_path: Path) -> None:
    log = PartitionLog.open(tmp_path, CONFIG)
    partition = Partition("t", 0, log)
    sequences = {1: 0, 2: 0, 3: 0}

    async def txn(pid: int, key: bytes, value: bytes) -> None:
        batch = encode_transactional_batch(
            [NewRecord(value=value, key=key)],
            producer_id=pid,
            producer_epoch=0,
            base_sequence=sequences[pid],
        )
        sequences[pid] += 1
        await partition.append_batch(batch)

    async def end(pid: int, kind: ControlType) -> None:
        await partition.write_marker(kind, producer_id=pid, producer_epoch=0, coordinator_epoch=0)

    for round_ in range(20):
        value = b"v%d" % round_
        await partition.append_batch(encode_batch([NewRecord(value=value, key=b"plain")]))
        await txn(1, b"committed", value)
        await end(1, ControlType.COMMIT)
        # An aborted write of a committed key must not take the committed value away.
        await txn(2, b"committed", b"aborted-" + value)
        await txn(2, b"aborted-only", value)
        await end(2, ControlType.ABORT)
    await txn(3, b"open", b"undecided")  # open: the LSO stays before it
    for _ in range(10):  # roll past it
        await partition.append_batch(encode_batch([NewRecord(value=b"x" * 100, key=b"pad")]))
    committed_before = await view(partition, RC)
    assert committed_before == {b"plain": b"v19", b"committed": b"v19"}
    lso_before = partition.last_stable_offset
    assert len(log.segments) > 3

    result = clean_partition(log, 10_000_000_000)
    assert result is not None and result.records_removed > 0
    assert await view(partition, RC) == committed_before
    uncommitted = await view(partition, RU)
    assert uncommitted[b"committed"] == b"v19"  # no aborted value surfaces
    assert uncommitted[b"open"] == b"undecided"  # past the LSO: untouched
    assert partition.last_stable_offset == lso_before

    # Replaying the producer state from the log alone (no snapshot) finds the same.
    log.close()
    for snapshot in [p for p in tmp_path.iterdir() if p.suffix == SNAPSHOT_SUFFIX]:
        snapshot.unlink()
    reopened = Partition("t", 0, PartitionLog.open(tmp_path, CONFIG))
    try:
        assert reopened.last_stable_offset == lso_before
        assert await view(reopened, RC) == committed_before
        assert (await view(reopened, RU))[b"committed"] == b"v19"
    finally:
        reopened.close()
