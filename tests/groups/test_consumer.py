"""The embedded consumer: reading, positions, callbacks, commits and sharing a group.

Membership runs on virtual time (pytest-trio's ``autojump_clock``; the coordinator reads
the same clock, see ``helpers.loop_clock_ms``) with short sessions (``helpers.QUICK``).
Time moves only when every task waits, so heartbeats are never late on a busy machine and
the callback histories below are exact; a wait for an expired session costs no real time.
"""

from __future__ import annotations

from collections.abc import Callable

import anyio
import pytest
from trio.testing import MockClock

from headwater.groups import (
    Consumer,
    ConsumerBatch,
    FencedMemberError,
    GroupCoordinator,
    OffsetAndMetadata,
    PartitionNotAssignedError,
    TopicPartition,
)
from headwater.store import (
    CorruptRecordError,
    NewRecord,
    OffsetOutOfRangeError,
    Store,
    TopicConfig,
    TopicNotFoundError,
)

from .helpers import FAST, QUICK, fill, loop_clock_ms


def tp(partition: int, topic: str = "t") -> TopicPartition:
    return TopicPartition(topic, partition)


async def eventually(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    """Wait until ``condition()`` holds (tests only: the library never polls)."""
    with anyio.fail_after(timeout):
        while not condition():
            await anyio.sleep(0.005)


async def take(consumer: Consumer, records: int) -> list[ConsumerBatch]:
    """Iterate ``consumer`` until ``records`` records came; return the batches."""
    batches: list[ConsumerBatch] = []
    with anyio.fail_after(5):
        async for batch in consumer:
            batches.append(batch)
            if sum(len(b.records) for b in batches) >= records:
                break
    return batches


# -- reading -------------------------------------------------------------------------


async def test_every_record_comes_in_per_partition_batches(
    store: Store, autojump_clock: MockClock
) -> None:
    await fill(store, "t", 3, 50)
    async with (
        GroupCoordinator(store, config=FAST, clock=loop_clock_ms) as coordinator,
        coordinator.consumer("g", ["t"], **QUICK) as consumer,
    ):
        assert consumer.assignment() == {tp(0), tp(1), tp(2)}
        assert consumer.lag() == {tp(0): 50, tp(1): 50, tp(2): 50}
        batches = await take(consumer, 150)
        for p in range(3):
            records = [r for b in batches if b.partition == p for r in b.records]
            assert [r.offset for r in records] == list(range(50))
            assert [r.value for r in records] == [b"%d:%d" % (p, i) for i in range(50)]
        assert all(b.topic == "t" and b.next_offset == b.records[-1].offset + 1 for b in batches)
        assert {consumer.position(tp(p)) for p in range(3)} == {50}
        assert consumer.lag() == {tp(0): 0, tp(1): 0, tp(2): 0}
        assert consumer.committed() == {}
        await consumer.commit()
        assert {o.offset for o in consumer.committed().values()} == {50}


async def test_latest_starts_at_the_end_and_new_records_wake_the_consumer(
    store: Store, autojump_clock: MockClock
) -> None:
    await fill(store, "t", 2, 10)
    async with (
        GroupCoordinator(store, config=FAST, clock=loop_clock_ms) as coordinator,
        coordinator.consumer("g", ["t"], **(QUICK | {"auto_offset_reset": "latest"})) as consumer,
    ):
        assert consumer.position(tp(0)) == consumer.position(tp(1)) == 10
        got: list[ConsumerBatch] = []
        async with anyio.create_task_group() as tg:

            async def read() -> None:
                got.extend(await take(consumer, 3))

            tg.start_soon(read)
            await anyio.wait_all_tasks_blocked()  # caught up: it waits on the partitions
            assert got == []
            await store.partition("t", 1).append([NewRecord(b"a"), NewRecord(b"b")])
            await store.partition("t", 0).append([NewRecord(b"c")])
        assert sorted((b.partition, r.offset, r.value) for b in got for r in b.records) == [
            (0, 10, b"c"),
            (1, 10, b"a"),
            (1, 11, b"b"),
        ]


async def test_start_at_the_committed_offset_or_reset_below_the_log_start(
    store: Store, autojump_clock: MockClock
) -> None:
    small = TopicConfig(partitions=2, durability="never", segment_bytes=1024)
    await store.create_topic("t", small)
    for p in range(2):
        for i in range(100):
            await store.partition("t", p).append([NewRecord(b"x" * 40, b"%d" % i)])
    log = store.partition("t", 1).log
    log.delete_segments_before(50)  # as retention would
    start = log.log_start_offset
    assert 0 < start <= 50
    async with GroupCoordinator(store, config=FAST, clock=loop_clock_ms) as coordinator:
        await coordinator.commit("g", {tp(0): 30, tp(1): 5})  # 5 is gone now
        async with coordinator.consumer("g", ["t"], **QUICK) as consumer:
            assert consumer.position(tp(0)) == 30
            assert consumer.position(tp(1)) == start  # earliest
            # An offset beyond the log end resets too, when it is next read.
            consumer.pause([tp(0)])
            consumer.seek(tp(1), 1_000)
            [batch, *_] = await take(consumer, 1)
            assert (batch.partition, batch.records[0].offset) == (1, start)
        late = QUICK | {"auto_offset_reset": "latest"}
        async with coordinator.consumer("g", ["t"], **late) as consumer:
            assert consumer.position(tp(0)) == 30
            assert consumer.position(tp(1)) == 100  # latest


async def test_seek_pause_resume_position_and_lag(store: Store, autojump_clock: MockClock) -> None:
    await fill(store, "t", 2, 20)
    async with (
        GroupCoordinator(store, config=FAST, clock=loop_clock_ms) as coordinator,
        coordinator.consumer("g", ["t"], **QUICK) as consumer,
    ):
        consumer.pause([tp(0)])
        assert consumer.paused() == {tp(0)}
        batches = await take(consumer, 20)
        assert {b.partition for b in batches} == {1}
        assert consumer.lag() == {tp(0): 20, tp(1): 0}
        consumer.seek(("t", 1), 15)
        assert consumer.position(tp(1)) == 15 and consumer.lag()[tp(1)] == 5
        [batch] = await take(consumer, 5)
        assert (batch.partition, [r.offset for r in batch.records]) == (1, [15, 16, 17, 18, 19])
        consumer.resume([tp(0)])
        assert consumer.paused() == frozenset()
        batches = await take(consumer, 20)
        assert {b.partition for b in batches} == {0}
        with pytest.raises(PartitionNotAssignedError):
            consumer.seek(tp(7), 0)
        with pytest.raises(PartitionNotAssignedError):
            consumer.pause([tp(0), tp(0, "other")])
        assert consumer.paused() == frozenset()
        with pytest.raises(PartitionNotAssignedError):
            consumer.position(tp(3))
        with pytest.raises(OffsetOutOfRangeError):
            consumer.seek(tp(0), -1)


async def test_a_paused_consumer_waits_until_resumed(
    store: Store, autojump_clock: MockClock
) -> None:
    await fill(store, "t", 1, 5)
    async with (
        GroupCoordinator(store, config=FAST, clock=loop_clock_ms) as coordinator,
        coordinator.consumer("g", ["t"], **QUICK) as consumer,
    ):
        consumer.pause([tp(0)])
        got: list[ConsumerBatch] = []
        async with anyio.create_task_group() as tg:

            async def read() -> None:
                got.extend(await take(consumer, 5))

            tg.start_soon(read)
            await anyio.wait_all_tasks_blocked()
            assert got == []
            consumer.resume([tp(0)])
        assert [r.offset for r in got[0].records] == [0, 1, 2, 3, 4]


async def test_explicit_offsets_are_committed_as_given(
    store: Store, autojump_clock: MockClock
) -> None:
    await fill(store, "t", 2, 10)
    async with (
        GroupCoordinator(store, config=FAST, clock=loop_clock_ms) as coordinator,
        coordinator.consumer("g", ["t"], **QUICK) as consumer,
    ):
        await consumer.commit({tp(0): 3, ("t", 1): OffsetAndMetadata(4, "note")})
        committed = consumer.committed()
        assert committed[tp(0)].offset == 3
        assert (committed[tp(1)].offset, committed[tp(1)].metadata) == (4, "note")
        await consumer.commit()  # positions (0) differ from what was committed: stored
        assert {o.offset for o in consumer.committed().values()} == {0}


async def test_a_missing_topic_is_refused(store: Store, autojump_clock: MockClock) -> None:
    async with GroupCoordinator(store, config=FAST, clock=loop_clock_ms) as coordinator:
        with pytest.raises(TopicNotFoundError):
            async with coordinator.consumer("g", ["nope"], **QUICK):
                pass
        assert coordinator.list_groups() == []


# -- callbacks and rebalances ----------------------------------------------------------


class Log:
    """Records callbacks as (consumer, event, partitions)."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str, list[int]]] = []

    def callbacks(self, name: str) -> dict[str, object]:
        def assigned(partitions: list[TopicPartition]) -> None:
            self.events.append((name, "assigned", [p.partition for p in partitions]))

        async def revoked(partitions: list[TopicPartition]) -> None:  # async works too
            await anyio.lowlevel.checkpoint()
            self.events.append((name, "revoked", [p.partition for p in partitions]))

        return {"on_assigned": assigned, "on_revoked": revoked}

    def of(self, name: str) -> list[tuple[str, list[int]]]:
        return [(event, parts) for who, event, parts in self.events if who == name]


async def test_cooperative_rebalances_revoke_only_what_moves(
    store: Store, autojump_clock: MockClock
) -> None:
    await fill(store, "t", 4, 5)
    log = Log()
    async with GroupCoordinator(store, config=FAST, clock=loop_clock_ms) as coordinator:
        async with coordinator.consumer("g", ["t"], **QUICK, **log.callbacks("a")) as a:
            assert log.of("a") == [("assigned", [0, 1, 2, 3])]
            async with coordinator.consumer("g", ["t"], **QUICK, **log.callbacks("b")) as b:
                await eventually(lambda: len(b.assignment()) == 2)
                assert len(a.assignment()) == 2
                moved = sorted(p.partition for p in b.assignment())
                assert log.of("a")[1:] == [("revoked", moved)]
                assert log.of("b") == [("assigned", moved)]
            # b left: a gets its partitions back, nothing else is revoked.
            await eventually(lambda: len(a.assignment()) == 4)
            assert log.of("a")[2:] == [("assigned", moved)]
        assert log.of("a")[3:] == [("revoked", [0, 1, 2, 3])]  # closing revokes


async def test_eager_rebalances_revoke_everything_first(
    store: Store, autojump_clock: MockClock
) -> None:
    await fill(store, "t", 4, 5)
    log = Log()
    eager = QUICK | {"partition_assignment_strategy": "range"}
    async with (
        GroupCoordinator(store, config=FAST, clock=loop_clock_ms) as coordinator,
        coordinator.consumer("g", ["t"], **eager, **log.callbacks("a")) as a,
        coordinator.consumer("g", ["t"], **eager, **log.callbacks("b")) as b,
    ):
        await eventually(lambda: len(b.assignment()) == 2 and len(a.assignment()) == 2)
        assert log.of("a") == [
            ("assigned", [0, 1, 2, 3]),
            ("revoked", [0, 1, 2, 3]),
            ("assigned", sorted(p.partition for p in a.assignment())),
        ]


async def test_a_rebalance_waits_until_the_batch_in_hand_is_done(
    store: Store, autojump_clock: MockClock
) -> None:
    await fill(store, "t", 4, 5)
    log = Log()
    joined: list[Consumer] = []
    async with (
        GroupCoordinator(store, config=FAST, clock=loop_clock_ms) as coordinator,
        coordinator.consumer("g", ["t"], **QUICK, **log.callbacks("a")) as a,
    ):
        iterator = aiter(a)
        await anext(iterator)  # a holds a batch: nothing may be revoked under it
        async with anyio.create_task_group() as tg:

            async def run_b() -> None:
                async with coordinator.consumer("g", ["t"], **QUICK) as b:
                    joined.append(b)
                    await eventually(lambda: len(b.assignment()) == 2)

            tg.start_soon(run_b)
            # Virtual time: a few heartbeats (every 40 ms) ask a to rejoin; it holds on.
            await anyio.sleep(0.3)
            assert coordinator.describe_group("g").state == "PreparingRebalance"
            assert log.of("a") == [("assigned", [0, 1, 2, 3])]
            assert joined == []  # b's join waits for a
            await anext(iterator)  # done with it: the rebalance goes on
        assert log.of("a")[1][0] == "revoked"
        assert len(log.of("a")[1][1]) == 2


async def test_auto_commit_commits_processed_batches_and_on_close(
    store: Store, autojump_clock: MockClock
) -> None:
    await fill(store, "t", 1, 0)
    for i in range(30):  # one record per record batch, so that reads return few
        await store.partition("t", 0).append([NewRecord(b"%d" % i)])
    auto = QUICK | {"enable_auto_commit": True, "auto_commit_interval_ms": 1, "max_bytes": 64}
    async with GroupCoordinator(store, config=FAST, clock=loop_clock_ms) as coordinator:
        async with coordinator.consumer("g", ["t"], **auto) as consumer:
            iterator = aiter(consumer)
            first = await anext(iterator)
            await anyio.sleep(0.01)
            assert consumer.committed() == {}  # the batch in hand is not processed yet
            second = await anext(iterator)  # the first is done: committed now
            assert consumer.committed()[tp(0)].offset == first.next_offset
            assert second.next_offset > first.next_offset
        # A clean close commits what was delivered.
        assert coordinator.committed("g")[tp(0)].offset == second.next_offset
        with pytest.raises(RuntimeError):
            async with coordinator.consumer("g", ["t"], **auto) as consumer:
                batch = await anext(aiter(consumer))
                raise RuntimeError("processing failed")
        # Failed: the batch in hand was not processed, so it was not committed.
        assert coordinator.committed("g")[tp(0)].offset == second.next_offset < batch.next_offset


async def test_without_auto_commit_nothing_is_committed(
    store: Store, autojump_clock: MockClock
) -> None:
    await fill(store, "t", 1, 10)
    async with GroupCoordinator(store, config=FAST, clock=loop_clock_ms) as coordinator:
        async with coordinator.consumer("g", ["t"], **QUICK) as consumer:
            await take(consumer, 10)
        assert coordinator.committed("g") == {}


# -- sharing a group -------------------------------------------------------------------


async def test_consumers_split_partitions_and_take_over_when_one_leaves(
    store: Store, autojump_clock: MockClock
) -> None:
    await fill(store, "t", 6, 5)
    async with (
        GroupCoordinator(store, config=FAST, clock=loop_clock_ms) as coordinator,
        coordinator.consumer("g", ["t"], **QUICK) as a,
        coordinator.consumer("g", ["t"], **QUICK) as b,
    ):
        async with coordinator.consumer("g", ["t"], **QUICK) as c:
            members = (a, b, c)
            await eventually(lambda: all(len(m.assignment()) == 2 for m in members))
            owned = [m.assignment() for m in members]
            assert frozenset().union(*owned) == {tp(p) for p in range(6)}
        await eventually(lambda: len(a.assignment()) == len(b.assignment()) == 3)
        assert a.assignment() | b.assignment() == {tp(p) for p in range(6)}
        assert owned[0] <= a.assignment() and owned[1] <= b.assignment()  # sticky


async def test_others_take_over_when_a_member_stops_heartbeating(
    store: Store, autojump_clock: MockClock
) -> None:
    """c hangs after committing part of what it read; a and b resume at c's commits."""
    await fill(store, "t", 4, 40)
    async with GroupCoordinator(store, config=FAST, clock=loop_clock_ms) as coordinator:
        deliveries: list[tuple[str, int, int]] = []  # (member, partition, first offset)

        async def consume(name: str, consumer: Consumer) -> None:
            async for batch in consumer:
                deliveries.append((name, batch.partition, batch.records[0].offset))
                await consumer.commit()

        small = QUICK | {"max_bytes": 64}  # one record batch (of one record) per batch
        for p in range(4):  # small record batches, so reads stop mid-partition
            for i in range(20):
                await store.partition("t", p).append([NewRecord(b"more-%d" % i)])
        async with (
            coordinator.consumer("g", ["t"], **small) as a,
            coordinator.consumer("g", ["t"], **small) as b,
            coordinator.consumer("g", ["t"], **small) as c,
        ):
            everything = {tp(p) for p in range(4)}
            await eventually(lambda: a.assignment() | b.assignment() | c.assignment() == everything)
            mine = c.assignment()
            assert mine
            iterator = aiter(c)
            for _ in range(3):
                batch = await anext(iterator)
                deliveries.append(("c", batch.partition, batch.records[0].offset))
                await c.commit()
            uncommitted = await anext(iterator)  # read, never committed: read again later
            committed = c.committed()
            c._heartbeat_scope.cancel()  # c hangs: no heartbeat, no leave
            async with anyio.create_task_group() as tg:
                tg.start_soon(consume, "a", a)
                tg.start_soon(consume, "b", b)
                await eventually(lambda: a.assignment() | b.assignment() == everything)
                await eventually(lambda: sum((a.lag() | b.lag()).values()) == 0)
                tg.cancel_scope.cancel()
            # a and b started c's partitions exactly at c's commits.
            for partition in mine:
                firsts = [o for who, p, o in deliveries if who != "c" and p == partition.partition]
                assert firsts[0] == committed[partition].offset
            again = uncommitted.topic_partition
            assert committed[again].offset <= uncommitted.records[0].offset
            # The hung member's commit is refused: it is no longer in the group.
            with pytest.raises(FencedMemberError):
                await c.commit({again: uncommitted.next_offset})


async def test_a_static_member_comes_back_to_its_partitions_without_a_rebalance(
    store: Store, autojump_clock: MockClock
) -> None:
    await fill(store, "t", 4, 5)
    static = QUICK | {"group_instance_id": "worker-1", "session_timeout_ms": 5_000}
    async with (
        GroupCoordinator(store, config=FAST, clock=loop_clock_ms) as coordinator,
        coordinator.consumer("g", ["t"], **QUICK) as other,
    ):
        async with coordinator.consumer("g", ["t"], **static) as first:
            await eventually(lambda: len(first.assignment()) == len(other.assignment()) == 2)
            owned, generation = first.assignment(), first.generation_id
        # Closed without leaving: its place is kept for its session timeout.
        assert len(coordinator.describe_group("g").members) == 2
        async with coordinator.consumer("g", ["t"], **static) as second:
            assert second.assignment() == owned
            assert second.generation_id == generation == other.generation_id


async def test_a_failing_callback_stops_the_member_and_is_raised(
    store: Store, autojump_clock: MockClock
) -> None:
    await fill(store, "t", 2, 5)

    def fail(partitions: list[TopicPartition]) -> None:
        raise ValueError("could not flush")

    async with GroupCoordinator(store, config=FAST, clock=loop_clock_ms) as coordinator:
        async with coordinator.consumer("g", ["t"], on_revoked=fail, **QUICK) as a:
            # b's arrival makes a revoke a partition in the background: that fails, so a
            # stops and leaves, and b gets everything at once.
            async with coordinator.consumer("g", ["t"], **QUICK) as b:
                await eventually(lambda: len(b.assignment()) == 2)
            with pytest.raises(ValueError, match="could not flush"):
                await a.commit()
            with pytest.raises(ValueError, match="could not flush"):
                await anext(aiter(a))
        # Had nothing raised it, leaving the block would have.
        with pytest.raises(ValueError, match="could not flush"):
            async with (
                coordinator.consumer("g", ["t"], on_revoked=fail, **QUICK),
                coordinator.consumer("g", ["t"], **QUICK) as b,
            ):
                await eventually(lambda: len(b.assignment()) == 2)


def test_the_new_errors_carry_their_codes() -> None:
    from headwater.groups import GroupError, OffsetMetadataTooLargeError

    assert OffsetMetadataTooLargeError.code == 12  # OFFSET_METADATA_TOO_LARGE
    assert issubclass(PartitionNotAssignedError, GroupError)
    assert PartitionNotAssignedError.code == -1  # client side: never on the wire


async def test_damage_stops_the_consumer_with_an_error_that_names_it(
    store: Store, autojump_clock: MockClock
) -> None:
    # A group member does not step over damage (it would commit past records it never
    # delivered): it gets every record before it, then an error naming the damaged range.
    await store.create_topic("t", TopicConfig(partitions=1))
    for i in range(10):
        await store.partition("t", 0).append([NewRecord(b"v%d" % i)])
    segment = store.partition("t", 0).log.segments[-1]
    damaged = segment.find_batch(6)
    assert damaged is not None
    with segment.log_path.open("r+b") as f:  # the page cache serves the open log this
        f.seek(damaged.position + 40)
        byte = f.read(1)
        f.seek(damaged.position + 40)
        f.write(bytes([byte[0] ^ 1]))
    async with (
        GroupCoordinator(store, config=FAST, clock=loop_clock_ms) as coordinator,
        coordinator.consumer("g", ["t"], **QUICK) as consumer,
    ):
        batches = await take(consumer, 6)
        assert [r.offset for b in batches for r in b.records] == list(range(6))
        with pytest.raises(CorruptRecordError) as raised:
            await anext(aiter(consumer))
        assert raised.value.damage is not None
        assert raised.value.damage.last_good_offset == 5
        assert raised.value.damage.resume_offset == 7
        assert consumer.position(tp(0)) == 6
