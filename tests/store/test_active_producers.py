"""What a partition tells of its producers (DescribeProducers), through writes, markers
and a reopen."""

from __future__ import annotations

from pathlib import Path

from headwater.store import (
    ActiveProducer,
    ControlType,
    NewRecord,
    TopicConfig,
    active_producers,
    encode_batch,
    encode_transactional_batch,
    open_store,
)


def idempotent(pid: int, sequence: int, *values: bytes) -> bytes:
    records = [NewRecord(value=v) for v in values]
    return encode_batch(records, producer_id=pid, producer_epoch=0, base_sequence=sequence)


def transactional(pid: int, epoch: int, sequence: int, *values: bytes) -> bytearray:
    records = [NewRecord(value=v) for v in values]
    return encode_transactional_batch(
        records, producer_id=pid, producer_epoch=epoch, base_sequence=sequence
    )


async def test_producers_of_a_partition(tmp_path: Path) -> None:
    async with open_store(tmp_path) as store:
        await store.create_topic("t", TopicConfig())
        partition = store.partition("t", 0)
        assert active_producers(partition) == []
        await partition.append_batch(idempotent(9, 0, b"a", b"b"))
        await partition.append_batch(idempotent(9, 2, b"c"))
        await partition.append_batch(transactional(4, 2, 0, b"x", b"y"))
        found = {p.producer_id: p for p in active_producers(partition)}
        assert [p.producer_id for p in active_producers(partition)] == [4, 9]
        assert found[9].last_timestamp_ms > 0
        assert found[9] == ActiveProducer(9, 0, 2, found[9].last_timestamp_ms, -1, -1)
        assert found[4] == ActiveProducer(4, 2, 1, found[4].last_timestamp_ms, -1, 3)

        await partition.write_marker(
            ControlType.ABORT, producer_id=4, producer_epoch=2, coordinator_epoch=3
        )
        closed = {p.producer_id: p for p in active_producers(partition)}[4]
        assert (closed.producer_epoch, closed.coordinator_epoch, closed.txn_start_offset) == (
            2,
            3,
            -1,
        )
        await partition.append_batch(transactional(4, 2, 2, b"z"))
    async with open_store(tmp_path) as store:
        reopened = {p.producer_id: p for p in active_producers(store.partition("t", 0))}
        assert (reopened[4].last_sequence, reopened[4].txn_start_offset) == (2, 6)
        assert (reopened[9].last_sequence, reopened[9].txn_start_offset) == (2, -1)
