"""Committed offsets: the record format, the table, storing, loading, rejecting and expiring.

The crash test at the end commits from a subprocess, kills it with SIGKILL and checks
that the offsets are there when the store is reopened and that a consumer restarts
exactly at them.
"""

from __future__ import annotations

import ast
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import anyio
import orjson
import pytest

from headwater.groups import (
    OFFSETS_TOPIC,
    FencedInstanceIdError,
    GroupConfig,
    GroupCoordinator,
    GroupProtocol,
    GroupState,
    IllegalGenerationError,
    JoinRequest,
    MemberIdRequiredError,
    OffsetAndMetadata,
    OffsetMetadataTooLargeError,
    RebalanceInProgressError,
    Subscription,
    SyncRequest,
    TopicPartition,
    UnknownMemberError,
    encode_subscription,
)
from headwater.groups._offsets import (
    OffsetTable,
    decode_offset_record,
    encode_offset_key,
    encode_offset_value,
    expired_offsets,
)
from headwater.store import (
    CleanupPolicy,
    Durability,
    NewRecord,
    OffsetOutOfRangeError,
    Store,
    StoreError,
    TopicConfig,
    TopicNotFoundError,
    open_store,
)

from .helpers import FAST, NEVER, FakeClock, fill

T0, T1, T2 = TopicPartition("t", 0), TopicPartition("t", 1), TopicPartition("t", 2)
DAY = 24 * 3600 * 1000
RETENTION = 7 * DAY

# -- the record format -----------------------------------------------------------------


def test_records_are_orjson_keys_and_values() -> None:
    assert encode_offset_key("g", T1) == b'["offset","g","t",1]'
    value = encode_offset_value(OffsetAndMetadata(42, "meta", 1234, 7))
    assert value is not None
    assert orjson.loads(value) == {
        "offset": 42,
        "metadata": "meta",
        "commit_timestamp": 1234,
        "leader_epoch": 7,
    }
    assert encode_offset_value(None) is None
    decoded = decode_offset_record(encode_offset_key("g", T1), value)
    assert decoded == ("g", T1, OffsetAndMetadata(42, "meta", 1234, 7))
    no_epoch = encode_offset_value(OffsetAndMetadata(1))
    assert decode_offset_record(b'["offset","g","t",0]', no_epoch) == (
        "g",
        T0,
        OffsetAndMetadata(1, "", -1, None),
    )
    assert decode_offset_record(b'["offset","g","t",0]', None) == ("g", T0, None)


def test_other_record_kinds_are_skipped() -> None:
    assert decode_offset_record(b'["group","g"]', b"{}") is None
    assert decode_offset_record(b'{"a": 1}', b"{}") is None


@pytest.mark.parametrize(
    ("key", "value"),
    [
        (None, b"{}"),
        (b"not json", None),
        (b'["offset","g","t"]', None),
        (b'["offset","g","t",true]', None),
        (b'["offset","g",3,0]', None),
        (b'["offset","g","t",0]', b"[]"),
        (
            b'["offset","g","t",0]',
            b'{"offset":"1","metadata":"","commit_timestamp":0,"leader_epoch":null}',
        ),
        (
            b'["offset","g","t",0]',
            b'{"offset":1,"metadata":"","commit_timestamp":false,"leader_epoch":null}',
        ),
        (b'["offset","g","t",0]', b'{"offset":1,"metadata":""}'),
    ],
)
def test_malformed_records_are_refused(key: bytes | None, value: bytes | None) -> None:
    with pytest.raises(ValueError):
        decode_offset_record(key, value)


# -- the table ---------------------------------------------------------------------------


def test_table_latest_wins_and_tombstones_remove() -> None:
    table = OffsetTable()
    assert table.apply("g", T0, OffsetAndMetadata(5), 10)
    assert not table.apply("g", T0, OffsetAndMetadata(3), 9)  # an older record
    assert table.offsets("g") == {T0: OffsetAndMetadata(5)}
    assert table.apply("g", T0, OffsetAndMetadata(3), 11)  # later in the log: wins
    assert table.offsets("g")[T0].offset == 3
    assert table.apply("g", T0, None, 12)
    assert table.offsets("g") == {} and table.group_ids() == [] and not table.has_offsets("g")


def test_table_remembers_tombstones_while_writes_are_in_flight() -> None:
    table = OffsetTable()
    table.apply("g", T0, OffsetAndMetadata(5), 1)
    table.begin_write()
    table.apply("g", T0, None, 3)  # deleted at log offset 3
    assert not table.apply("g", T0, OffsetAndMetadata(6), 2)  # an older write returns late
    assert table.offsets("g") == {}
    table.end_write()
    assert table.apply("g", T0, OffsetAndMetadata(7), 4)


def test_expiry_counts_from_emptiness_or_a_later_commit() -> None:
    offsets = {T0: OffsetAndMetadata(1, commit_timestamp=0), T1: OffsetAndMetadata(1, "", 50)}
    assert expired_offsets(offsets, None, 99, 100) == []
    assert expired_offsets(offsets, None, 100, 100) == [T0]
    assert expired_offsets(offsets, 30, 129, 100) == []  # empty since 30
    assert expired_offsets(offsets, 30, 130, 100) == [T0]
    assert expired_offsets(offsets, 30, 150, 100) == [T0, T1]


# -- storing and loading -----------------------------------------------------------------


async def test_commits_are_stored_and_loaded_at_start_up(data: Path) -> None:
    clock = FakeClock()
    async with open_store(data, default_config=NEVER) as store:
        await fill(store, "t", 3, 10)
        async with GroupCoordinator(store, clock=clock) as coordinator:
            assert store.has_topic(OFFSETS_TOPIC)
            config = store.topic_config(OFFSETS_TOPIC)
            assert config.cleanup_policy is CleanupPolicy.COMPACT
            assert config.durability is Durability.NEVER  # the store's default
            assert config.retention_ms == -1  # only compaction removes committed offsets
            await coordinator.commit("g", {T0: 4, ("t", 1): OffsetAndMetadata(6, "m", 1, 3)})
            clock.advance(10)
            await coordinator.commit("g", {T0: 5})  # the latest wins
            await coordinator.commit("h", {T2: 1})
            expected = {
                T0: OffsetAndMetadata(5, "", clock.now, None),
                T1: OffsetAndMetadata(6, "m", clock.now - 10, 3),  # the timestamp is ours
            }
            assert coordinator.committed("g") == expected
    async with open_store(data, default_config=NEVER) as store:
        records = await store.partition(OFFSETS_TOPIC, 0).read_records(0, 1 << 20)
        assert [r.key for r in records] == [
            b'["offset","g","t",0]',
            b'["offset","g","t",1]',
            b'["offset","g","t",0]',
            b'["offset","h","t",2]',
        ]
        async with GroupCoordinator(store, clock=clock) as coordinator:
            assert coordinator.committed("g") == expected
            assert coordinator.committed("h") == {T2: OffsetAndMetadata(1, "", clock.now)}
            assert coordinator.committed("nobody") == {}
            overview = {g.group_id: g.state for g in coordinator.list_groups()}
            assert overview == {"g": "Empty", "h": "Empty"}


async def test_deleting_a_group_tombstones_its_offsets(data: Path) -> None:
    async with open_store(data, default_config=NEVER) as store:
        await fill(store, "t", 3, 10)
        async with GroupCoordinator(store) as coordinator:
            await coordinator.commit("g", {T0: 1, T1: 2})
            await coordinator.commit("keep", {T0: 3})
            await coordinator.delete_group("g")
            assert coordinator.committed("g") == {}
            assert [g.group_id for g in coordinator.list_groups()] == ["keep"]
    async with open_store(data, default_config=NEVER) as store:
        records = await store.partition(OFFSETS_TOPIC, 0).read_records(0, 1 << 20)
        assert [(r.key, r.value) for r in records[-2:]] == [
            (b'["offset","g","t",0]', None),
            (b'["offset","g","t",1]', None),
        ]
        async with GroupCoordinator(store) as coordinator:
            assert coordinator.committed("g") == {}
            assert coordinator.committed("keep")[T0].offset == 3


async def test_records_that_do_not_decode_are_skipped_at_load(data: Path) -> None:
    async with open_store(data, default_config=NEVER) as store:
        await fill(store, "t", 1, 10)
        async with GroupCoordinator(store) as coordinator:
            await coordinator.commit("g", {T0: 4})
        await store.partition(OFFSETS_TOPIC, 0).append(
            [NewRecord(b"garbage", b'["offset","g","t",0]'), NewRecord(b"{}", b'["later"]')],
            internal=True,
        )
        async with GroupCoordinator(store) as coordinator:
            assert coordinator.committed("g")[T0].offset == 4


async def test_offsets_topic_with_another_durability_follows_the_store_default(
    tmp_path: Path,
) -> None:
    always = TopicConfig(durability="always")
    async with open_store(tmp_path, default_config=always) as store:
        await fill(store, "t", 1, 1)
        async with GroupCoordinator(store) as coordinator:
            await coordinator.commit("g", {T0: 1})
        assert store.topic_config(OFFSETS_TOPIC).durability is Durability.ALWAYS


async def test_a_read_only_store_loads_offsets_and_refuses_commits(data: Path) -> None:
    async with open_store(data, default_config=NEVER) as store:
        await fill(store, "t", 1, 5)
        async with GroupCoordinator(store) as coordinator:
            await coordinator.commit("g", {T0: 2})
    async with open_store(data, read_only=True) as store, GroupCoordinator(store) as coordinator:
        assert coordinator.committed("g")[T0].offset == 2
        with pytest.raises(StoreError, match="read-only"):
            await coordinator.commit("g", {T0: 3})
        assert await coordinator.expire_offsets() == 0
    async with open_store(data, default_config=NEVER) as store, GroupCoordinator(store) as c:
        assert c.committed("g")[T0].offset == 2


# -- rejected commits --------------------------------------------------------------------


def join_request(
    client: str, member_id: str = "", instance: str | None = None, session: int = 10_000
) -> JoinRequest:
    subscription = encode_subscription(Subscription(topics=("t",)))
    return JoinRequest(
        client_id=client,
        session_timeout_ms=session,
        protocol_type="consumer",
        protocols=(GroupProtocol("range", subscription),),
        member_id=member_id,
        group_instance_id=instance,
    )


async def join_one(
    coordinator: GroupCoordinator, client: str, session: int = 10_000
) -> tuple[str, int]:
    """Join a dynamic member and sync it; return its member id and generation."""
    try:
        await coordinator.join("g", join_request(client, session=session))
    except MemberIdRequiredError as exc:
        member_id = exc.member_id
    result = await coordinator.join("g", join_request(client, member_id, session=session))
    await coordinator.sync(
        "g",
        SyncRequest(
            member_id=member_id,
            generation_id=result.generation_id,
            assignments={member_id: b""} if result.is_leader else {},
        ),
    )
    return member_id, result.generation_id


async def test_stale_and_fenced_commits_are_rejected(store: Store) -> None:
    await fill(store, "t", 3, 10)
    async with GroupCoordinator(store, config=FAST) as coordinator:
        a, generation = await join_one(coordinator, "a")
        await coordinator.commit("g", {T0: 3}, member_id=a, generation_id=generation)
        with pytest.raises(UnknownMemberError):  # a plain commit while the group has members
            await coordinator.commit("g", {T0: 9})
        with pytest.raises(UnknownMemberError):
            await coordinator.commit("g", {T0: 9}, member_id="nobody", generation_id=generation)
        with pytest.raises(IllegalGenerationError):
            await coordinator.commit("g", {T0: 9}, member_id=a, generation_id=generation + 1)
        # b joins: the group prepares a rebalance and waits for a to rejoin.
        with pytest.raises(MemberIdRequiredError) as info:
            await coordinator.join("g", join_request("b"))
        b = info.value.member_id
        async with anyio.create_task_group() as tg:
            tg.start_soon(coordinator.join, "g", join_request("b", b))
            await anyio.wait_all_tasks_blocked()
            assert coordinator.describe_group("g").state == GroupState.PREPARING_REBALANCE
            with pytest.raises(IllegalGenerationError):
                await coordinator.commit("g", {T0: 9}, member_id=a, generation_id=generation - 1)
            # Until it rejoins, a member of the current generation may commit what it read.
            await coordinator.commit("g", {T0: 4}, member_id=a, generation_id=generation)
            rejoined = await coordinator.join("g", join_request("a", a))
        # Completing the rebalance (joined, not synced): commits wait for the assignment.
        assert rejoined.generation_id == generation + 1
        assert coordinator.describe_group("g").state == GroupState.COMPLETING_REBALANCE
        with pytest.raises(RebalanceInProgressError):
            await coordinator.commit("g", {T0: 9}, member_id=a, generation_id=generation + 1)
        with pytest.raises(IllegalGenerationError):
            await coordinator.commit("g", {T0: 9}, member_id=a, generation_id=generation)
        with pytest.raises(UnknownMemberError):  # no such group, and not a plain commit
            await coordinator.commit("other", {T0: 1}, member_id=a, generation_id=1)
        assert coordinator.committed("g")[T0].offset == 4
        assert coordinator.committed("other") == {}


async def test_a_replaced_static_member_is_fenced(store: Store) -> None:
    await fill(store, "t", 1, 10)
    async with GroupCoordinator(store, config=FAST) as coordinator:
        first = await coordinator.join("g", join_request("a", instance="app-1"))
        await coordinator.sync(
            "g",
            SyncRequest(
                member_id=first.member_id,
                generation_id=first.generation_id,
                group_instance_id="app-1",
                assignments={first.member_id: b""},
            ),
        )
        second = await coordinator.join("g", join_request("a", instance="app-1"))  # restarted
        assert second.member_id != first.member_id
        with pytest.raises(FencedInstanceIdError):
            await coordinator.commit(
                "g",
                {T0: 5},
                member_id=first.member_id,
                generation_id=first.generation_id,
                group_instance_id="app-1",
            )
        await coordinator.commit(
            "g",
            {T0: 6},
            member_id=second.member_id,
            generation_id=second.generation_id,
            group_instance_id="app-1",
        )
        assert coordinator.committed("g")[T0].offset == 6


async def test_bad_commits_write_nothing(store: Store) -> None:
    await fill(store, "t", 1, 10)
    async with GroupCoordinator(store) as coordinator:
        with pytest.raises(OffsetMetadataTooLargeError):
            await coordinator.commit("g", {T0: OffsetAndMetadata(1, "x" * 4097)})
        with pytest.raises(OffsetOutOfRangeError):
            await coordinator.commit("g", {T0: -1})
        with pytest.raises(TopicNotFoundError):
            await coordinator.commit("g", {TopicPartition("nope", 0): 1})
        with pytest.raises(TopicNotFoundError):
            await coordinator.commit("g", {T0: 1, TopicPartition("t", 5): 1})
        assert coordinator.committed("g") == {}
        assert store.partition(OFFSETS_TOPIC, 0).log_end_offset == 0


# -- expiry ------------------------------------------------------------------------------


async def test_offsets_of_an_empty_group_expire_after_retention(data: Path) -> None:
    clock = FakeClock()
    async with open_store(data, default_config=NEVER) as store:
        await fill(store, "t", 3, 10)
        async with GroupCoordinator(store, clock=clock) as coordinator:
            await coordinator.commit("g", {T0: 1})
            clock.advance(DAY)
            await coordinator.commit("g", {T1: 1})
            clock.advance(RETENTION - DAY - 1)
            assert await coordinator.expire_offsets() == 0
            clock.advance(1)
            assert await coordinator.expire_offsets() == 1  # T0's commit is a week old
            assert coordinator.committed("g").keys() == {T1}
            clock.advance(DAY)
            assert await coordinator.expire_offsets() == 1
            assert coordinator.list_groups() == []  # no members, no offsets: forgotten
    async with open_store(data, default_config=NEVER) as store, GroupCoordinator(store) as c:
        assert c.committed("g") == {}


async def test_expiry_counts_from_when_the_group_became_empty(store: Store) -> None:
    clock = FakeClock()
    await fill(store, "t", 1, 10)
    config = GroupConfig(initial_rebalance_delay_ms=0)  # the fake clock stands still
    session = 30 * 60 * 1000
    async with GroupCoordinator(store, clock=clock, config=config) as coordinator:
        member, generation = await join_one(coordinator, "a", session)
        await coordinator.commit("g", {T0: 2}, member_id=member, generation_id=generation)
        for _ in range(10 * 48):  # a member that heartbeats keeps its offsets however old
            clock.advance(session // 2)
            await coordinator.heartbeat("g", member, generation)
        assert await coordinator.expire_offsets() == 0
        await coordinator.leave("g", member)
        assert coordinator.describe_group("g").state == GroupState.EMPTY
        clock.advance(RETENTION - 1)
        assert await coordinator.expire_offsets() == 0
        clock.advance(1)
        assert await coordinator.expire_offsets() == 1
        assert coordinator.committed("g") == {}


async def test_the_timer_task_expires_offsets_when_they_are_due(
    data: Path, autojump_clock: object
) -> None:
    base = 1_700_000_000_000

    def clock() -> int:
        return base + int(anyio.current_time() * 1000)

    # Virtual time: a week passes at once. No store maintenance meanwhile.
    store = Store(data, default_config=NEVER, maintenance_interval_s=1e9)
    async with store, GroupCoordinator(store, clock=clock) as coordinator:
        await fill(store, "t", 1, 10)
        await coordinator.commit("g", {T0: 2})
        await anyio.sleep(RETENTION / 1000 - 1)
        assert coordinator.committed("g") != {}
        await anyio.sleep(2)
        assert coordinator.committed("g") == {}


# -- durability: kill -9 -------------------------------------------------------------------

CHILD = textwrap.dedent(
    """
    import sys, anyio
    from headwater.groups import GroupCoordinator, GroupConfig
    from headwater.store import NewRecord, TopicConfig, open_store

    async def main(path):
        async with open_store(path) as store:  # durability batch, the default
            await store.create_topic("t", TopicConfig(partitions=3))
            for p in range(3):
                for start in range(0, 1000, 20):
                    await store.partition("t", p).append(
                        [NewRecord(b"%d" % i) for i in range(start, start + 20)])
            config = GroupConfig(initial_rebalance_delay_ms=0)
            async with GroupCoordinator(store, config=config) as groups:
                async with groups.consumer("g", ["t"], auto_offset_reset="earliest",
                                           max_bytes=200) as consumer:
                    batches = 0
                    async for batch in consumer:
                        await consumer.commit()
                        batches += 1
                        if batches == 7:
                            break
                    positions = sorted((tp.partition, consumer.position(tp))
                                       for tp in consumer.assignment())
                    print(positions, flush=True)
                    await anyio.sleep(3600)

    anyio.run(main, sys.argv[1], backend="trio")
    """
)


async def test_committed_offsets_survive_kill_9_and_a_consumer_restarts_at_them(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(data)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout is not None
        line = await anyio.to_thread.run_sync(child.stdout.readline)
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
    positions = dict(ast.literal_eval(line))  # [(partition, position), ...]
    assert sum(positions.values()) == 7 * 20 and len(positions) == 3
    async with open_store(data) as store, GroupCoordinator(store, config=FAST) as coordinator:
        committed = coordinator.committed("g")
        assert {tp.partition: o.offset for tp, o in committed.items()} == positions
        # "latest" would start elsewhere: the consumer must start at the commits.
        async with coordinator.consumer("g", ["t"], auto_offset_reset="latest") as consumer:
            assert {tp.partition: consumer.position(tp) for tp in consumer.assignment()} == (
                positions
            )
            firsts: dict[int, int] = {}
            async for batch in consumer:
                firsts.setdefault(batch.partition, batch.records[0].offset)
                if len(firsts) == 3:
                    break
            assert firsts == positions
