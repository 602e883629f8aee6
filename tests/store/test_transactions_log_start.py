"""Retention deleting the segment where an open transaction began.

As in Kafka, moving the log start past a transaction's first offset changes nothing of
the transaction: it stays open from where it began (so the last stable offset lies below
the new log start until a marker ends it), an abort is indexed from that first offset and
hides the transaction's records that remain, and read_committed readers from the log start
see exactly what they saw before. All of it holds through a clean reopen and through a
reopen after a crash (the log abandoned as ``kill -9`` leaves it), and, with the producer
snapshots gone, readers still see the same records. Retention also never moves the log
start past the high watermark (Kafka's rule), so the log start cannot pass records that
are written but not yet acknowledged.
"""

from __future__ import annotations

from pathlib import Path

import pytest

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
    open_store,
)
from headwater.store._producer_snapshots import SNAPSHOT_SUFFIX

RC = IsolationLevel.READ_COMMITTED
RU = IsolationLevel.READ_UNCOMMITTED
NOW_MS = 1_800_000_000_000
DAY_MS = 24 * 3600 * 1000
CONFIG = TopicConfig(durability=Durability.NEVER, retention_ms=DAY_MS)
TXN, PLAIN = 7, 8  # producer ids


class Writer:
    """Batches of one producer, numbered, with record timestamps of our choosing."""

    def __init__(self, producer_id: int, *, transactional: bool) -> None:
        self.producer_id = producer_id
        self.transactional = transactional
        self.sequence = 0

    def batch(self, value: bytes, timestamp_ms: int) -> bytes:
        records = [NewRecord(value=value, timestamp=timestamp_ms)]
        stamp = {
            "producer_id": self.producer_id,
            "producer_epoch": 0,
            "base_sequence": self.sequence,
            "now_ms": timestamp_ms,
        }
        self.sequence += 1
        if self.transactional:
            return bytes(encode_transactional_batch(records, **stamp))  # type: ignore[arg-type]
        return encode_batch(records, **stamp)  # type: ignore[arg-type]


async def values(partition: Partition, isolation: IsolationLevel) -> list[bytes]:
    out: list[bytes] = []
    offset = partition.log_start_offset
    while records := await partition.read_records(offset, 1 << 20, isolation=isolation):
        out.extend(r.value for r in records if r.value is not None)
        offset = records[-1].offset + 1
    return out


def reopen(partition: Partition, how: str) -> Partition:
    directory = partition.log.directory
    if how == "clean":
        partition.close()
    else:
        partition.log.abandon()  # as kill -9 leaves the folder: no clean close
        if how == "crash-without-snapshots":
            for path in directory.iterdir():
                if path.name.endswith(SNAPSHOT_SUFFIX):
                    path.unlink()
    return Partition("t", 0, PartitionLog.open(directory, CONFIG, clock=lambda: NOW_MS))


async def retention_cut_open_transaction(directory: Path) -> Partition:
    """Segment 0: the open transaction's first record (0) and a plain one (1), both a
    week old; segment 1: its second record (2) and a plain one (3); the active segment:
    a plain record (4). Retention then deletes segment 0."""
    log = PartitionLog.open(directory, CONFIG, clock=lambda: NOW_MS)
    partition = Partition("t", 0, log)
    txn, plain = Writer(TXN, transactional=True), Writer(PLAIN, transactional=False)
    old = NOW_MS - 7 * DAY_MS
    await partition.append_batch(txn.batch(b"t0", old))
    await partition.append_batch(plain.batch(b"p1", old))
    log.roll()
    await partition.append_batch(txn.batch(b"t2", NOW_MS))
    await partition.append_batch(plain.batch(b"p3", NOW_MS))
    log.roll()
    await partition.append_batch(plain.batch(b"p4", NOW_MS))
    assert log.enforce_retention(NOW_MS) == [0]
    return partition


async def check_open(partition: Partition, *, exact: bool = True) -> None:
    assert partition.log_start_offset == 2
    assert partition.high_watermark == 5
    if exact:
        # The transaction still begins where it began, below the log start (as in Kafka).
        assert partition.last_stable_offset == 0
        assert partition.log.producer_state.ongoing() == {TXN: 0}
    else:
        # Rebuilt from the log alone, it begins at its first record still stored.
        assert partition.last_stable_offset <= partition.log_start_offset
        assert list(partition.log.producer_state.ongoing()) == [TXN]
    assert await values(partition, RC) == []
    assert await values(partition, RU) == [b"t2", b"p3", b"p4"]
    assert await partition.skip_hidden(2, isolation=RC) == 2


async def check_aborted(partition: Partition, *, exact: bool = True) -> None:
    assert partition.last_stable_offset == partition.high_watermark == 6
    aborted = partition.aborted_transactions(partition.log_start_offset, 6)
    first = 0 if exact else aborted[0].first_offset
    assert aborted == [AbortedTransaction(TXN, first, 5)]
    assert await values(partition, RC) == [b"p3", b"p4"]
    assert await values(partition, RU) == [b"t2", b"p3", b"p4"]


@pytest.mark.parametrize("how", ["clean", "crash", "crash-without-snapshots"])
async def test_retention_past_an_open_transactions_first_offset(tmp_path: Path, how: str) -> None:
    partition = await retention_cut_open_transaction(tmp_path)
    exact = how != "crash-without-snapshots"
    try:
        await check_open(partition)
        partition = reopen(partition, how)
        await check_open(partition, exact=exact)
        await partition.write_marker(
            ControlType.ABORT, producer_id=TXN, producer_epoch=0, coordinator_epoch=0
        )  # 5
        await check_aborted(partition, exact=exact)
        partition = reopen(partition, how)
        await check_aborted(partition, exact=exact)
    finally:
        partition.close()


@pytest.mark.parametrize("how", ["clean", "crash"])
async def test_retention_past_a_transaction_that_then_commits(tmp_path: Path, how: str) -> None:
    partition = await retention_cut_open_transaction(tmp_path)
    try:
        partition = reopen(partition, how)
        await partition.write_marker(
            ControlType.COMMIT, producer_id=TXN, producer_epoch=0, coordinator_epoch=0
        )
        for _ in range(2):
            assert partition.last_stable_offset == partition.high_watermark == 6
            assert partition.aborted_transactions(2, 6) == []
            assert await values(partition, RC) == [b"t2", b"p3", b"p4"]
            partition = reopen(partition, how)
    finally:
        partition.close()


async def test_retention_never_moves_the_log_start_past_the_high_watermark(
    tmp_path: Path,
) -> None:
    """A segment that rolled holds records written but not yet acknowledged (their
    group-commit fsync has not answered): retention keeps it until they are, so that the
    log start never passes the high watermark, and with it the LSO of a transaction."""
    config = TopicConfig(durability=Durability.BATCH, retention_bytes=1)
    async with open_store(tmp_path, clock=lambda: NOW_MS) as store:
        await store.create_topic("t", config)
        partition = store.partition("t", 0)
        txn = Writer(TXN, transactional=True)
        written = partition.append_batch_nowait(txn.batch(b"t0", NOW_MS))
        partition.log.roll()
        partition.append_batch_nowait(txn.batch(b"t1", NOW_MS))
        assert partition.high_watermark == 0
        assert store.enforce_retention() == 0
        assert partition.log_start_offset == 0
        assert partition.last_stable_offset == 0
        await partition.wait_durable(written.next_offset + 1)
        assert store.enforce_retention() == 1
        assert partition.log_start_offset == 1 <= partition.high_watermark == 2
        # The transaction stays open from offset 0, below the log start, as in Kafka.
        assert partition.last_stable_offset == 0
