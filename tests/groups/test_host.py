"""The in-process coordinator: async requests, the timer task, and the admin operations."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import anyio
import pytest

from headwater.groups import (
    CoordinatorNotAvailableError,
    GroupConfig,
    GroupCoordinator,
    GroupIdNotFoundError,
    GroupNotEmptyError,
    GroupProtocol,
    InvalidGroupConfigError,
    InvalidGroupIdError,
    JoinRequest,
    JoinResult,
    MemberIdRequiredError,
    RebalanceInProgressError,
    Subscription,
    SyncRequest,
    TopicPartition,
    UnknownMemberError,
    assign_partitions,
    decode_assignment,
    encode_subscription,
)
from headwater.store import NewRecord, Store, TopicNotFoundError

from .helpers import FAST, NEVER, fill, loop_clock_ms

SUBSCRIPTION = encode_subscription(Subscription(topics=("t",)))


def join_request(member_id: str = "", session: int = 10_000) -> JoinRequest:
    return JoinRequest(
        client_id="c",
        session_timeout_ms=session,
        rebalance_timeout_ms=5_000,
        protocol_type="consumer",
        protocols=(GroupProtocol("range", SUBSCRIPTION),),
        member_id=member_id,
    )


async def new_member(coordinator: GroupCoordinator, session: int = 10_000) -> str:
    with pytest.raises(MemberIdRequiredError) as info:
        await coordinator.join("g", join_request(session=session))
    return info.value.member_id


async def test_members_join_sync_heartbeat_and_leave(store: Store, autojump_clock: object) -> None:
    await fill(store, "t", 4, 1)
    # On the loop's virtual clock the initial delay cannot end between the two joins,
    # however slowly the machine runs them.
    async with GroupCoordinator(store, config=FAST, clock=loop_clock_ms) as coordinator:
        a, b = await new_member(coordinator), await new_member(coordinator)
        results: dict[str, JoinResult] = {}

        async def join(member_id: str) -> None:
            results[member_id] = await coordinator.join("g", join_request(member_id))

        async with anyio.create_task_group() as tg:  # both wait for the initial delay
            tg.start_soon(join, a)
            tg.start_soon(join, b)
        leader = results[a] if results[a].is_leader else results[b]
        assert {r.generation_id for r in results.values()} == {1}
        assignments = assign_partitions("range", leader.members, {"t": 4})
        synced = {}

        async def sync(member_id: str) -> None:
            request = SyncRequest(
                member_id=member_id,
                generation_id=1,
                assignments=assignments if member_id == leader.member_id else {},
            )
            synced[member_id] = (await coordinator.sync("g", request)).assignment

        async with anyio.create_task_group() as tg:  # the follower waits for the leader
            follower = b if leader.member_id == a else a
            tg.start_soon(sync, follower)
            await anyio.wait_all_tasks_blocked()
            tg.start_soon(sync, leader.member_id)
        owned = [decode_assignment(synced[m]).partitions for m in (a, b)]
        assert sorted(owned[0] + owned[1]) == [TopicPartition("t", p) for p in range(4)]
        description = coordinator.describe_group("g")
        assert description.state == "Stable" and len(description.members) == 2
        await coordinator.heartbeat("g", a, 1)
        await coordinator.leave("g", b)
        with pytest.raises(RebalanceInProgressError):
            await coordinator.heartbeat("g", a, 1)
        with pytest.raises(UnknownMemberError):
            await coordinator.heartbeat("g", b, 1)
        with pytest.raises(UnknownMemberError):
            await coordinator.heartbeat("nope", a, 1)


async def test_the_timer_task_expires_a_silent_member(store: Store, autojump_clock: object) -> None:
    def clock() -> int:
        return int(anyio.current_time() * 1000)

    await fill(store, "t", 1, 1)
    async with GroupCoordinator(store, config=FAST, clock=clock) as coordinator:
        member = await new_member(coordinator, session=10_000)
        result = await coordinator.join("g", join_request(member, session=10_000))
        await coordinator.sync(
            "g", SyncRequest(member_id=member, generation_id=result.generation_id)
        )
        await anyio.sleep(9.9)  # virtual seconds; nobody calls the coordinator meanwhile
        assert coordinator.describe_group("g").state == "Stable"
        await anyio.sleep(0.2)
        # Expired by the timer task; with no members and no offsets, forgotten.
        assert coordinator.list_groups() == []


async def test_a_waiting_join_completes_when_the_rebalance_times_out(
    store: Store, autojump_clock: object
) -> None:
    def clock() -> int:
        return int(anyio.current_time() * 1000)

    await fill(store, "t", 1, 1)
    async with GroupCoordinator(store, config=FAST, clock=clock) as coordinator:
        a = await new_member(coordinator)
        first = await coordinator.join("g", join_request(a))
        await coordinator.sync(
            "g", SyncRequest(member_id=a, generation_id=first.generation_id, assignments={a: b""})
        )
        b = await new_member(coordinator)
        # a never rejoins: after the rebalance timeout (5 s) it is dropped and b leads alone.
        with anyio.fail_after(6):
            result = await coordinator.join("g", join_request(b))
        assert result.is_leader and [m.member_id for m in result.members] == [b]


async def test_a_cancelled_join_leaves_nothing_behind(store: Store, autojump_clock: object) -> None:
    await fill(store, "t", 1, 1)
    async with GroupCoordinator(store, config=FAST, clock=loop_clock_ms) as coordinator:
        a = await new_member(coordinator)
        # Virtual time: cancelled after 1 ms, within the initial rebalance delay (10 ms).
        with anyio.move_on_after(0.001):
            await coordinator.join("g", join_request(a))
        assert not coordinator._waiters
        result = await coordinator.join("g", join_request(a))  # the member rejoins
        assert result.member_id == a


async def test_closing_answers_waiting_requests(store: Store) -> None:
    await fill(store, "t", 1, 1)
    config = GroupConfig(initial_rebalance_delay_ms=60_000)
    errors = []
    async with (
        anyio.create_task_group() as tg,
        GroupCoordinator(store, config=config) as coordinator,
    ):
        a = await new_member(coordinator)

        async def join() -> None:
            try:
                await coordinator.join("g", join_request(a))
            except CoordinatorNotAvailableError as exc:
                errors.append(exc)

        tg.start_soon(join)
        await anyio.wait_all_tasks_blocked()
    assert len(errors) == 1
    with pytest.raises(CoordinatorNotAvailableError):
        await coordinator.join("g", join_request(a))


async def test_bad_group_ids_and_options_are_refused(store: Store) -> None:
    await fill(store, "t", 1, 1)
    async with GroupCoordinator(store) as coordinator:
        with pytest.raises(InvalidGroupIdError):
            await coordinator.join("", join_request())
        with pytest.raises(InvalidGroupIdError):
            await coordinator.commit("", {TopicPartition("t", 0): 1})
        with pytest.raises(InvalidGroupConfigError, match="unknown consumer option"):
            coordinator.consumer("g", ["t"], auto_offset_rest="earliest")
        with pytest.raises(InvalidGroupConfigError, match="auto_offset_reset"):
            coordinator.consumer("g", ["t"], auto_offset_reset="smallest")
        with pytest.raises(InvalidGroupConfigError, match="assignment_strategy"):
            coordinator.consumer("g", ["t"], partition_assignment_strategy="sticky")
        with pytest.raises(InvalidGroupConfigError, match="heartbeat"):
            coordinator.consumer("g", ["t"], heartbeat_interval_ms=10_000, session_timeout_ms=100)


# -- admin ---------------------------------------------------------------------------


async def test_reset_offsets_plans_and_applies_each_kind_of_target(store: Store) -> None:
    await fill(store, "t", 2, 0)
    p0, p1 = store.partition("t", 0), store.partition("t", 1)
    for i in range(10):
        await p0.append([NewRecord(b"x", timestamp=1_000 + i)])
    await p1.append([NewRecord(b"y", timestamp=5_000)])
    t0, t1 = TopicPartition("t", 0), TopicPartition("t", 1)
    async with GroupCoordinator(store) as coordinator:
        assert coordinator.plan_offset_reset("g", "t", "earliest") == {t0: 0, t1: 0}
        assert coordinator.plan_offset_reset("g", "t", "latest") == {t0: 10, t1: 1}
        assert coordinator.plan_offset_reset("g", "t", 7) == {t0: 7, t1: 1}  # clamped
        assert coordinator.plan_offset_reset("g", "t", -3) == {t0: 0, t1: 0}
        when = datetime.fromtimestamp(1.004, UTC)
        assert coordinator.plan_offset_reset("g", "t", when) == {t0: 4, t1: 0}
        naive = datetime(1970, 1, 1, 0, 0, 1, 4000)  # UTC
        assert coordinator.plan_offset_reset("g", "t", naive) == {t0: 4, t1: 0}
        later = when + timedelta(days=1)
        assert coordinator.plan_offset_reset("g", "t", later) == {t0: 10, t1: 1}
        assert coordinator.committed("g") == {}  # planning commits nothing
        assert await coordinator.reset_offsets("g", "t", 3) == {t0: 3, t1: 1}
        assert {tp: o.offset for tp, o in coordinator.committed("g").items()} == {t0: 3, t1: 1}
        with pytest.raises(TopicNotFoundError):
            coordinator.plan_offset_reset("g", "nope", "earliest")


async def test_resetting_or_deleting_a_group_with_members_is_refused(store: Store) -> None:
    await fill(store, "t", 2, 5)
    async with GroupCoordinator(store, config=FAST) as coordinator:
        async with coordinator.consumer("g", ["t"], auto_offset_reset="earliest") as consumer:
            await consumer.commit()
            for attempt in (
                lambda: coordinator.plan_offset_reset("g", "t", "earliest"),
                lambda: coordinator.reset_offsets("g", "t", "earliest"),
                lambda: coordinator.delete_group("g"),
            ):
                with pytest.raises(GroupNotEmptyError, match=r"active members.*stop its"):
                    await _maybe_await(attempt())
            assert len(coordinator.committed("g")) == 2
            [member] = coordinator.describe_group("g").members
            assert member.member_id == consumer.member_id
        # Closed: the member left; the group is Empty and may be reset and deleted.
        assert coordinator.describe_group("g").state == "Empty"
        await coordinator.reset_offsets("g", "t", "latest")
        assert {o.offset for o in coordinator.committed("g").values()} == {5}
        await coordinator.delete_group("g")
        assert coordinator.committed("g") == {} and coordinator.list_groups() == []
        with pytest.raises(GroupIdNotFoundError):
            await coordinator.delete_group("g")
        with pytest.raises(GroupIdNotFoundError):
            coordinator.describe_group("g")


async def _maybe_await(value: object) -> object:
    if hasattr(value, "__await__"):
        return await value  # type: ignore[misc]
    return value


async def test_list_groups_shows_members_and_offset_only_groups(store: Store) -> None:
    await fill(store, "t", 1, 5)
    async with GroupCoordinator(store, config=FAST) as coordinator:
        await coordinator.commit("offsets-only", {TopicPartition("t", 0): 2})
        async with coordinator.consumer("live", ["t"]):
            overview = {g.group_id: (g.state, g.protocol_type) for g in coordinator.list_groups()}
            assert overview == {"live": ("Stable", "consumer"), "offsets-only": ("Empty", "")}
        assert [g.group_id for g in coordinator.list_groups()] == ["offsets-only"]


async def test_the_coordinator_runs_on_asyncio_too(tmp_path: object) -> None:
    from headwater.store import open_store

    async def main() -> int:
        async with open_store(tmp_path, default_config=NEVER) as store:  # type: ignore[arg-type]
            await fill(store, "t", 2, 3)
            async with (
                GroupCoordinator(store, config=FAST) as coordinator,
                coordinator.consumer("g", ["t"], auto_offset_reset="earliest") as consumer,
            ):
                seen = 0
                async for batch in consumer:
                    seen += len(batch.records)
                    await consumer.commit()
                    if seen == 6:
                        break
                return sum(o.offset for o in coordinator.committed("g").values())

    assert await anyio.to_thread.run_sync(lambda: anyio.run(main, backend="asyncio")) == 6


async def test_statistics_count_rebalances_across_a_forgotten_group(store: Store) -> None:
    await fill(store, "t", 2, 3)
    async with GroupCoordinator(store, config=FAST) as coordinator:
        for expected_generation in (1, 1):  # the group is forgotten in between: 1 again
            member = await new_member(coordinator)
            result = await coordinator.join("g", join_request(member))
            assert result.generation_id == expected_generation
            [stats] = coordinator.statistics()
            assert (stats.group_id, stats.members, stats.generation_id) == ("g", 1, 1)
            await coordinator.leave("g", member)  # the last member: a rebalance to Empty
        assert coordinator.statistics() == []  # no members, no offsets: forgotten
        await coordinator.commit("g", {TopicPartition("t", 1): 2})
        [stats] = coordinator.statistics()
        assert stats.members == 0
        assert stats.rebalances == 4  # join and leave, twice
        assert stats.committed == {TopicPartition("t", 1): 2}
