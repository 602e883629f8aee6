"""Embedded consumers when their topics change: partitions added, records deleted."""

from __future__ import annotations

import anyio
from trio.testing import MockClock

from headwater.groups import Consumer, ConsumerBatch, GroupCoordinator, TopicPartition
from headwater.store import NewRecord, Store

from .helpers import FAST, QUICK, fill, loop_clock_ms


async def take(consumer: Consumer, records: int) -> list[ConsumerBatch]:
    batches: list[ConsumerBatch] = []
    with anyio.fail_after(30):
        async for batch in consumer:
            batches.append(batch)
            if sum(len(b.records) for b in batches) >= records:
                break
    return batches


async def test_the_group_rebalances_onto_new_partitions(
    store: Store, autojump_clock: MockClock
) -> None:
    await fill(store, "t", 2, 1)
    async with (
        GroupCoordinator(store, config=FAST, clock=loop_clock_ms) as coordinator,
        coordinator.consumer("g", ["t"], **(QUICK | {"auto_offset_reset": "earliest"})) as a,
        coordinator.consumer("g", ["t"], **(QUICK | {"auto_offset_reset": "earliest"})) as b,
    ):
        got: list[ConsumerBatch] = []
        async with anyio.create_task_group() as tg:

            async def read(consumer: Consumer) -> None:
                async for batch in consumer:
                    got.append(batch)

            tg.start_soon(read, a)
            tg.start_soon(read, b)
            with anyio.fail_after(30):
                while len(got) < 2:
                    await anyio.sleep(0.01)
            await store.create_partitions("t", 4)
            await store.partition("t", 3).append([NewRecord(b"new")])
            with anyio.fail_after(30):
                while not any(batch.partition == 3 for batch in got):
                    await anyio.sleep(0.01)
            assert a.assignment() | b.assignment() == {TopicPartition("t", p) for p in range(4)}
            assert not a.assignment() & b.assignment()
            tg.cancel_scope.cancel()
        records = sorted((batch.partition, r.value) for batch in got for r in batch.records)
        assert records == [(0, b"0:0"), (1, b"1:0"), (3, b"new")]


async def test_records_deleted_under_a_consumer_reset_it(
    store: Store, autojump_clock: MockClock
) -> None:
    await fill(store, "t", 1, 10)
    async with GroupCoordinator(store, config=FAST, clock=loop_clock_ms) as coordinator:
        await coordinator.commit("g", {TopicPartition("t", 0): 2})
        async with coordinator.consumer("g", ["t"], **QUICK) as consumer:
            assert consumer.position(TopicPartition("t", 0)) == 2
            await store.delete_records("t", {0: 6})
            [batch, *_] = await take(consumer, 1)
            assert batch.records[0].offset == 6  # earliest: the new log start
