"""A transaction's marker follows every batch of it that was accepted before the marker.

Under ``durability="always"`` an append waits for the partition's write lock (held by
the append before it through that one's fsync) before its batch is in the log, so a
transaction's batch and its marker can both be waiting at once. The lock hands itself
over in arrival order, so the batch that came first is written first, and the marker
ends a transaction that holds it. Under ``batch`` and ``never`` both are written when
called. In every mode, after a crash (the log abandoned as ``kill -9`` leaves it) the
reopened log has the same order, the same aborted index and the same readers' view.
"""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest
from trio.testing import wait_all_tasks_blocked

from headwater.store import (
    AbortedTransaction,
    ControlType,
    Durability,
    IsolationLevel,
    NewRecord,
    Partition,
    PartitionLog,
    TopicConfig,
    encode_batch,
    encode_transactional_batch,
    parse_batch_header,
)

RC = IsolationLevel.READ_COMMITTED
RU = IsolationLevel.READ_UNCOMMITTED
TXN, OTHER = 5, 6


def txn_batch(value: bytes, sequence: int) -> bytes:
    records = [NewRecord(value=value)]
    return bytes(
        encode_transactional_batch(
            records, producer_id=TXN, producer_epoch=0, base_sequence=sequence
        )
    )


async def stored(partition: Partition) -> list[tuple[int, int, bool]]:
    """(base offset, producer id, is a marker) of every batch in the log."""
    raw = await partition.read(partition.log_start_offset, 1 << 20)
    out = []
    position = 0
    while position < len(raw):
        header = parse_batch_header(raw, position)
        out.append((header.base_offset, header.producer_id, header.is_control))
        position += header.size
    return out


async def values(partition: Partition, isolation: IsolationLevel) -> list[bytes]:
    records = await partition.read_records(0, 1 << 20, isolation=isolation)
    return [r.value for r in records if r.value is not None]


async def check(partition: Partition) -> None:
    assert await stored(partition) == [
        (0, TXN, False),
        (1, OTHER, False),
        (2, TXN, False),
        (3, TXN, True),
    ]
    assert partition.aborted_transactions(0, 4) == [AbortedTransaction(TXN, 0, 3)]
    assert partition.last_stable_offset == partition.high_watermark == 4
    assert await values(partition, RC) == [b"other"]
    assert await values(partition, RU) == [b"t0", b"other", b"t1"]


async def abort(partition: Partition) -> None:
    await partition.write_marker(
        ControlType.ABORT, producer_id=TXN, producer_epoch=0, coordinator_epoch=0
    )


@pytest.mark.parametrize("durability", list(Durability))
async def test_a_marker_follows_the_batches_that_arrived_before_it(
    tmp_path: Path, durability: Durability
) -> None:
    config = TopicConfig(durability=durability)
    partition = Partition("t", 0, PartitionLog.open(tmp_path, config))
    try:
        await partition.append_batch(txn_batch(b"t0", 0))
        other = encode_batch(
            [NewRecord(value=b"other")], producer_id=OTHER, producer_epoch=0, base_sequence=0
        )
        async with anyio.create_task_group() as tg:
            # Another producer's append, then the transaction's second batch, then its
            # abort, each called once the one before has got as far as it can: under
            # `always` the second and third wait while the first holds the partition's
            # lock through its fsync.
            tg.start_soon(partition.append_batch, other)
            await wait_all_tasks_blocked()
            tg.start_soon(partition.append_batch, txn_batch(b"t1", 1))
            await wait_all_tasks_blocked()
            tg.start_soon(abort, partition)
        await check(partition)
        partition.log.abandon()
        partition = Partition("t", 0, PartitionLog.open(tmp_path, config))
        await check(partition)
    finally:
        partition.close()


async def test_under_always_both_wait_for_the_lock_and_keep_their_order(tmp_path: Path) -> None:
    partition = Partition(
        "t", 0, PartitionLog.open(tmp_path, TopicConfig(durability=Durability.ALWAYS))
    )
    try:
        await partition.append_batch(txn_batch(b"t0", 0))
        lock = partition._lock()
        await lock.acquire()  # the append before them, still in its fsync
        done: list[str] = []

        async def append() -> None:
            await partition.append_batch(txn_batch(b"t1", 1))
            done.append("batch")

        async def abort() -> None:
            await partition.write_marker(
                ControlType.ABORT, producer_id=TXN, producer_epoch=0, coordinator_epoch=0
            )
            done.append("marker")

        async with anyio.create_task_group() as tg:
            tg.start_soon(append)
            await wait_all_tasks_blocked()
            tg.start_soon(abort)
            await wait_all_tasks_blocked()
            assert lock.statistics().tasks_waiting == 2 and partition.log_end_offset == 1
            lock.release()
        assert done == ["batch", "marker"]
        assert [(o, m) for o, _, m in await stored(partition)] == [
            (0, False),
            (1, False),
            (2, True),
        ]
        assert partition.aborted_transactions(0, 3) == [AbortedTransaction(TXN, 0, 2)]
        assert await values(partition, RC) == []
    finally:
        partition.close()
