"""End to end: three consumers share a 12-partition topic of 100,000 records; one hangs.

Every member commits after each batch. One of them stops mid-way, holding a batch it
never commits, and stops heartbeating; after its session expires the other two take its
partitions. Checked: every record is delivered; no delivery ever starts below the
partition's committed offset at that moment (nothing committed is read again); the
partitions that moved resume exactly at the hung member's last commits.

It runs on virtual time (``autojump_clock``, the coordinator on the same clock): the hung
member's session runs out after 600 virtual ms, and no other member's ever does, however
busy the machine.
"""

from __future__ import annotations

import anyio
from trio.testing import MockClock

from headwater.groups import Consumer, ConsumerBatch, GroupCoordinator
from headwater.store import NewRecord, Store, TopicConfig

from .helpers import FAST, QUICK, loop_clock_ms

PARTITIONS = 12
RECORDS = 100_000
PER_APPEND = 50


async def test_three_consumers_one_hangs_every_record_once_past_commits(
    store: Store, autojump_clock: MockClock
) -> None:
    await store.create_topic("clicks", TopicConfig(partitions=PARTITIONS, durability="never"))
    for start in range(0, RECORDS, PER_APPEND):
        await store.append(
            "clicks",
            [
                NewRecord(b"%d" % n, b"user-%d" % (n % 997))
                for n in range(start, start + PER_APPEND)
            ],
        )
    ends = {p.index: p.high_watermark for p in store.partitions("clicks")}
    assert sum(ends.values()) == RECORDS

    delivered: set[tuple[int, int]] = set()
    duplicates = 0
    committed_high = dict.fromkeys(range(PARTITIONS), 0)  # the group's commits, as they land
    first_after_takeover: dict[int, int] = {}
    late: list[tuple[str, int, int, int]] = []  # deliveries that started below a commit
    hung_commits: dict[int, int] = {}
    hung_batch: list[ConsumerBatch] = []
    done = anyio.Event()

    def deliver(name: str, batch: ConsumerBatch) -> None:
        nonlocal duplicates
        first = batch.records[0].offset
        if first < committed_high[batch.partition]:
            late.append((name, batch.partition, first, committed_high[batch.partition]))
        if name != "c" and batch.partition in hung_commits:
            first_after_takeover.setdefault(batch.partition, first)
        for record in batch.records:
            key = (batch.partition, record.offset)
            duplicates += key in delivered
            delivered.add(key)
        if len(delivered) == RECORDS:
            done.set()

    async def commit(consumer: Consumer, batch: ConsumerBatch) -> None:
        await consumer.commit()
        committed_high[batch.partition] = max(committed_high[batch.partition], batch.next_offset)

    async def steady(name: str, consumer: Consumer) -> None:
        async for batch in consumer:
            deliver(name, batch)
            await commit(consumer, batch)

    async def hangs(consumer: Consumer) -> None:
        batches = 0
        async for batch in consumer:
            deliver("c", batch)
            batches += 1
            # Mid-way through its share, once the group has settled on three even shares
            # and this member has committed in each of its own (a fast reader can get
            # there while a rebalance still moves partitions): hang with this batch in hand.
            mine = consumer.assignment()
            settled = len(mine) == PARTITIONS // 3 and mine <= consumer.committed().keys()
            if batches >= 40 and settled:
                hung_commits.update(
                    {tp.partition: o.offset for tp, o in consumer.committed().items()}
                )
                hung_batch.append(batch)
                consumer._heartbeat_scope.cancel()
                await anyio.sleep_forever()
            await commit(consumer, batch)

    options = QUICK | {"max_bytes": 4 << 10}
    async with GroupCoordinator(store, config=FAST, clock=loop_clock_ms) as coordinator:
        # Virtual time jumps to the next deadline while a worker thread runs, so the
        # deadline starts once the coordinator has created its topic (in a thread).
        with anyio.fail_after(30):
            async with (
                coordinator.consumer("g", ["clicks"], **options) as a,
                coordinator.consumer("g", ["clicks"], **options) as b,
                coordinator.consumer("g", ["clicks"], **options) as c,
            ):
                async with anyio.create_task_group() as tg:
                    tg.start_soon(steady, "a", a)
                    tg.start_soon(steady, "b", b)
                    tg.start_soon(hangs, c)
                    await done.wait()
                    tg.cancel_scope.cancel()
                assert len(a.assignment()) == len(b.assignment()) == 6
                assert {tp.partition for tp in a.assignment() | b.assignment()} == set(range(12))

    assert len(delivered) == RECORDS
    assert late == []
    moved = set(hung_commits)
    assert len(moved) == 4
    # The moved partitions resumed exactly where the hung member had committed.
    assert first_after_takeover == {p: hung_commits[p] for p in moved if hung_commits[p] < ends[p]}
    # Only what the hung member read and never committed was read twice.
    assert duplicates == len(hung_batch[0].records) > 0
