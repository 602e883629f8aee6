"""The group coordinator state machine, one transition at a time, on a fake clock."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest

from headwater.groups import (
    CoordinatorNotAvailableError,
    FencedInstanceIdError,
    FencedMemberError,
    Group,
    GroupConfig,
    GroupIdNotFoundError,
    GroupMaxSizeReachedError,
    GroupNotEmptyError,
    GroupProtocol,
    GroupState,
    IllegalGenerationError,
    InconsistentGroupProtocolError,
    InvalidGroupConfigError,
    InvalidGroupIdError,
    InvalidSessionTimeoutError,
    JoinRequest,
    JoinResult,
    MemberIdRequiredError,
    Pending,
    RebalanceInProgressError,
    SyncRequest,
    SyncResult,
    UnknownMemberError,
)

SESSION = 10_000
REBALANCE = 30_000
DELAY = 10  # the initial rebalance delay, so members joining together share generation 1


class Clock:
    def __init__(self) -> None:
        self.now = 1_000

    def __call__(self) -> int:
        return self.now

    def advance(self, ms: int) -> None:
        self.now += ms


def counting_ids() -> Callable[[str], str]:
    counter = itertools.count(1)
    return lambda client_id: f"{client_id}-{next(counter)}"


def make_group(**config: int | None) -> tuple[Group, Clock]:
    clock = Clock()
    settings = {"initial_rebalance_delay_ms": DELAY, "min_session_timeout_ms": 100} | config
    group = Group("g", clock=clock, config=GroupConfig(**settings), new_member_id=counting_ids())  # type: ignore[arg-type]
    return group, clock


def request(
    client_id: str,
    *,
    member_id: str = "",
    instance: str | None = None,
    protocols: tuple[tuple[str, bytes], ...] = (("range", b"meta"),),
    session: int = SESSION,
    rebalance: int = REBALANCE,
    protocol_type: str = "consumer",
    v4: bool = False,
) -> JoinRequest:
    return JoinRequest(
        client_id=client_id,
        client_host=f"/{client_id}-host",
        session_timeout_ms=session,
        rebalance_timeout_ms=rebalance,
        protocol_type=protocol_type,
        protocols=tuple(GroupProtocol(name, meta) for name, meta in protocols),
        member_id=member_id,
        group_instance_id=instance,
        require_known_member_id=v4,
    )


def drain(group: Group) -> dict[object, Any]:
    """The completions waiting in ``group``, by their Pending."""
    outcomes: dict[object, Any] = dict(group.poll())
    assert len(outcomes) == len(set(outcomes))
    return outcomes


def joined(group: Group, pending: JoinResult | Pending) -> JoinResult:
    """The JoinResult for ``pending``, which must have completed by now."""
    if isinstance(pending, JoinResult):
        return pending
    outcome = drain(group)[pending]
    assert isinstance(outcome, JoinResult), outcome
    return outcome


def form(group: Group, clock: Clock, *requests: JoinRequest) -> list[JoinResult]:
    """Join ``requests`` to an Empty group and let the initial delay pass."""
    pendings = [group.join(r) for r in requests]
    clock.advance(DELAY)  # members arrived during the delay: it is extended once
    assert group.state is GroupState.PREPARING_REBALANCE or len(requests) == 1
    clock.advance(DELAY)
    outcomes = drain(group)
    results = [outcomes[p] for p in pendings]
    assert all(isinstance(r, JoinResult) for r in results)
    return results


def stable_group(
    *clients: str, instances: dict[str, str] | None = None, **config: int | None
) -> tuple[Group, Clock]:
    """A Stable generation-1 group of members "a-1", "b-2", ... (client name, join order).

    The leader assigns each member its client name as its assignment bytes.
    """
    group, clock = make_group(**config)
    instances = instances or {}
    joins = form(group, clock, *(request(c, instance=instances.get(c)) for c in clients))
    results = dict(zip(clients, joins, strict=True))
    leader = next(r for r in results.values() if r.is_leader)
    syncs = [
        group.sync(SyncRequest(member_id=r.member_id, generation_id=r.generation_id))
        for r in results.values()
        if not r.is_leader
    ]
    syncs.append(
        group.sync(
            SyncRequest(
                member_id=leader.member_id,
                generation_id=leader.generation_id,
                assignments={r.member_id: client.encode() for client, r in results.items()},
            )
        )
    )
    outcomes = drain(group)
    assert all(isinstance(outcomes[s], SyncResult) for s in syncs)
    assert group.state is GroupState.STABLE
    return group, clock


# -- joining ------------------------------------------------------------------------------


def test_first_join_v4_gets_a_member_id_and_the_rejoin_leads() -> None:
    group, clock = make_group()
    with pytest.raises(MemberIdRequiredError) as info:
        group.join(request("c", v4=True))
    assert info.value.member_id == "c-1" and info.value.code == 79
    assert group.state is GroupState.EMPTY and group.member_ids == ()
    pending = group.join(request("c", member_id="c-1", v4=True))
    clock.advance(DELAY)
    result = joined(group, pending)
    assert result.member_id == result.leader_id == "c-1"
    assert result.generation_id == 1 and result.protocol_name == "range"
    assert result.members == (("c-1", None, b"meta"),)
    assert group.state is GroupState.COMPLETING_REBALANCE


def test_pending_member_expires_after_its_session_timeout() -> None:
    group, clock = make_group()
    with pytest.raises(MemberIdRequiredError):
        group.join(request("c", v4=True, session=500))
    assert group.next_deadline_ms() == clock.now + 500
    clock.advance(500)
    assert group.poll() == [] and group.next_deadline_ms() is None
    with pytest.raises(UnknownMemberError):
        group.join(request("c", member_id="c-1", v4=True))


def test_pending_member_blocks_the_rebalance_until_it_joins() -> None:
    group, _ = stable_group("a")
    with pytest.raises(MemberIdRequiredError):
        group.join(request("b", v4=True))
    a = group.join(request("a", member_id="a-1"))  # the leader forces one
    assert group.state is GroupState.PREPARING_REBALANCE and drain(group) == {}
    b = group.join(request("b", member_id="b-2", v4=True))
    outcomes = drain(group)
    assert {outcomes[a].generation_id, outcomes[b].generation_id} == {2}


def test_leaving_pending_member_unblocks_the_rebalance() -> None:
    group, _ = stable_group("a")
    with pytest.raises(MemberIdRequiredError):
        group.join(request("b", v4=True))
    a = group.join(request("a", member_id="a-1"))
    group.leave("b-2")
    assert joined(group, a).generation_id == 2


def test_initial_delay_collects_members_and_is_bounded_by_the_rebalance_timeout() -> None:
    group, clock = make_group(initial_rebalance_delay_ms=100)
    first = group.join(request("a", rebalance=300))
    assert group.state is GroupState.PREPARING_REBALANCE and drain(group) == {}
    clock.advance(50)
    group.join(request("b", rebalance=300))
    clock.advance(50)  # t=100: b arrived during the delay, so wait another 100 ms
    assert drain(group) == {} and group.next_deadline_ms() == clock.now + 100
    clock.advance(90)
    group.join(request("c", rebalance=300))
    clock.advance(10)  # t=200: c arrived; one more delay is all the timeout allows
    group.join(request("d", rebalance=300))
    clock.advance(99)
    assert drain(group) == {}
    clock.advance(1)  # t=300
    result = joined(group, first)
    assert result.generation_id == 1 and len(result.members) == 4


def test_initial_delay_ends_when_nobody_new_arrives() -> None:
    group, clock = make_group(initial_rebalance_delay_ms=100)
    first = group.join(request("a"))
    clock.advance(99)
    assert drain(group) == {}
    clock.advance(1)
    assert joined(group, first).members == (("a-1", None, b"meta"),)


def test_join_v0_uses_the_session_timeout_as_rebalance_timeout() -> None:
    group, clock = make_group()
    v0 = replace(request("a", session=700), rebalance_timeout_ms=-1)
    form(group, clock, v0)
    group.sync(SyncRequest(member_id="a-1", generation_id=1))
    drain(group)
    b = group.join(replace(v0, client_id="b"))
    clock.advance(699)
    assert drain(group) == {}
    clock.advance(1)  # a never rejoined: removed at the 700 ms rebalance timeout
    assert joined(group, b).members == (("b-2", None, b"meta"),)


@pytest.mark.parametrize(
    ("make", "error"),
    [
        (lambda: request("x", session=99), InvalidSessionTimeoutError),
        (lambda: request("x", session=1_800_001), InvalidSessionTimeoutError),
        (lambda: request("x", protocol_type=""), InconsistentGroupProtocolError),
        (lambda: request("x", protocols=()), InconsistentGroupProtocolError),
        (lambda: request("x", member_id="nobody"), UnknownMemberError),
    ],
)
def test_join_refuses_bad_requests(make: Callable[[], JoinRequest], error: type[Exception]) -> None:
    group, _ = make_group()
    with pytest.raises(error):
        group.join(make())
    assert group.state is GroupState.EMPTY


def test_empty_group_id_is_refused() -> None:
    group = Group("", clock=Clock())
    with pytest.raises(InvalidGroupIdError) as info:
        group.join(request("x"))
    assert info.value.code == 24


def test_protocol_type_and_protocols_must_match_the_group() -> None:
    group, _ = stable_group("a")
    with pytest.raises(InconsistentGroupProtocolError) as info:
        group.join(request("b", protocol_type="connect"))
    assert info.value.code == 23
    with pytest.raises(InconsistentGroupProtocolError):
        group.join(request("b", protocols=(("roundrobin", b""),)))
    # The only member may switch protocols: nobody else has to support them.
    pending = group.join(request("a", member_id="a-1", protocols=(("roundrobin", b"x"),)))
    assert joined(group, pending).protocol_name == "roundrobin"


def test_protocol_is_chosen_by_votes_ties_going_to_the_first_vote() -> None:
    group, clock = make_group()
    both = (("range", b"1"), ("roundrobin", b"2"))
    _a, _b, c = form(
        group,
        clock,
        request("a", protocols=both),
        request("b", protocols=both[::-1]),
        request("c", protocols=(("roundrobin", b"3"), ("sticky", b""))),
    )
    assert c.protocol_name == "roundrobin"
    group2, clock2 = make_group()
    leader, _ = form(
        group2, clock2, request("a", protocols=both), request("b", protocols=both[::-1])
    )
    assert leader.protocol_name == "range"
    assert [m.metadata for m in leader.members] == [b"1", b"1"]


def test_group_max_size() -> None:
    group, _ = stable_group("a", "b", max_size=2)
    with pytest.raises(GroupMaxSizeReachedError) as info:
        group.join(request("c"))
    assert info.value.code == 81
    group.join(request("a", member_id="a-1"))  # members may still rejoin


def test_follower_rejoining_unchanged_gets_the_current_generation() -> None:
    group, _ = stable_group("a", "b")
    result = group.join(request("b", member_id="b-2"))
    assert isinstance(result, JoinResult)
    assert (result.generation_id, result.leader_id, result.members) == (1, "a-1", ())
    assert group.state is GroupState.STABLE


def test_leader_rejoining_or_follower_changing_metadata_rebalances() -> None:
    group, _ = stable_group("a", "b")
    assert isinstance(group.join(request("a", member_id="a-1")), Pending)
    assert group.state is GroupState.PREPARING_REBALANCE
    group2, _ = stable_group("a", "b")
    assert isinstance(
        group2.join(request("b", member_id="b-2", protocols=(("range", b"new"),))), Pending
    )
    assert group2.state is GroupState.PREPARING_REBALANCE


def test_rejoin_while_completing_repeats_the_generation_or_restarts_it() -> None:
    group, clock = make_group()
    form(group, clock, request("a"), request("b"))
    again = group.join(request("a", member_id="a-1"))
    assert isinstance(again, JoinResult) and again.generation_id == 1 and len(again.members) == 2
    sync_b = group.sync(SyncRequest(member_id="b-2", generation_id=1))
    assert isinstance(sync_b, Pending)
    changed = group.join(request("a", member_id="a-1", protocols=(("range", b"v2"),)))
    assert isinstance(changed, Pending) and group.state is GroupState.PREPARING_REBALANCE
    assert isinstance(drain(group)[sync_b], RebalanceInProgressError)


def test_a_repeated_join_answers_the_replaced_one() -> None:
    group, _ = stable_group("a", "b")
    first = group.join(request("a", member_id="a-1"))
    second = group.join(request("a", member_id="a-1"))
    outcomes = drain(group)
    assert isinstance(outcomes[first], RebalanceInProgressError)
    assert second not in outcomes
    group.join(request("b", member_id="b-2"))
    assert joined(group, second).generation_id == 2


# -- syncing ------------------------------------------------------------------------------


def test_followers_wait_for_the_leaders_assignment() -> None:
    group, clock = make_group()
    a, b, _ = form(group, clock, request("a"), request("b"), request("c"))
    assert a.is_leader and not b.is_leader and b.members == ()
    sync_b = group.sync(SyncRequest(member_id="b-2", generation_id=1))
    assert isinstance(sync_b, Pending) and drain(group) == {}
    sync_a = group.sync(
        SyncRequest(
            member_id="a-1",
            generation_id=1,
            assignments={"a-1": b"A", "b-2": b"B", "stranger": b"?"},
            protocol_type="consumer",
            protocol_name="range",
        )
    )
    outcomes = drain(group)
    assert outcomes[sync_a] == SyncResult(
        assignment=b"A", protocol_type="consumer", protocol_name="range"
    )
    assert outcomes[sync_b].assignment == b"B"
    assert group.state is GroupState.STABLE
    late = group.sync(SyncRequest(member_id="c-3", generation_id=1))
    assert late == SyncResult(assignment=b"", protocol_type="consumer", protocol_name="range")


@pytest.mark.parametrize(
    ("sync", "error"),
    [
        (SyncRequest(member_id="zz", generation_id=1), UnknownMemberError),
        (SyncRequest(member_id="b-2", generation_id=0), IllegalGenerationError),
        (SyncRequest(member_id="b-2", generation_id=1, group_instance_id="i"), UnknownMemberError),
        (
            SyncRequest(member_id="b-2", generation_id=1, protocol_type="x"),
            InconsistentGroupProtocolError,
        ),
        (
            SyncRequest(member_id="b-2", generation_id=1, protocol_name="x"),
            InconsistentGroupProtocolError,
        ),
    ],
)
def test_sync_refuses_bad_requests(sync: SyncRequest, error: type[Exception]) -> None:
    group, _ = stable_group("a", "b")
    with pytest.raises(error):
        group.sync(sync)


def test_sync_during_preparing_rebalance_says_rejoin() -> None:
    group, _ = stable_group("a", "b")
    group.join(request("c"))
    with pytest.raises(RebalanceInProgressError) as info:
        group.sync(SyncRequest(member_id="b-2", generation_id=1))
    assert info.value.code == 27


def test_members_that_never_sync_are_removed_after_the_rebalance_timeout() -> None:
    group, clock = make_group()
    form(group, clock, request("a", rebalance=5_000), request("b", rebalance=5_000))
    sync_b = group.sync(SyncRequest(member_id="b-2", generation_id=1))
    clock.advance(4_999)
    assert drain(group) == {}
    clock.advance(1)  # the leader (a) crashed between JoinGroup and SyncGroup
    assert isinstance(drain(group)[sync_b], RebalanceInProgressError)
    assert group.member_ids == ("b-2",) and group.state is GroupState.PREPARING_REBALANCE
    assert joined(group, group.join(request("b", member_id="b-2"))).leader_id == "b-2"


def test_a_member_that_does_not_sync_after_the_leader_is_removed_too() -> None:
    group, clock = make_group()
    form(group, clock, request("a", rebalance=5_000), request("b", rebalance=5_000))
    group.sync(SyncRequest(member_id="a-1", generation_id=1))
    assert group.state is GroupState.STABLE
    clock.advance(5_000)
    group.poll()
    assert group.member_ids == ("a-1",) and group.state is GroupState.PREPARING_REBALANCE


# -- heartbeats and sessions -------------------------------------------------------------


def test_heartbeat_answers() -> None:
    group, clock = make_group()
    with pytest.raises(UnknownMemberError):
        group.heartbeat("a-1", 0)
    form(group, clock, request("a"), request("b"))
    group.heartbeat("a-1", 1)  # CompletingRebalance: fine
    with pytest.raises(IllegalGenerationError) as info:
        group.heartbeat("a-1", 0)
    assert info.value.code == 22 and isinstance(info.value, FencedMemberError)
    with pytest.raises(UnknownMemberError) as unknown:
        group.heartbeat("zz", 1)
    assert unknown.value.code == 25
    group.join(request("c"))
    with pytest.raises(RebalanceInProgressError):
        group.heartbeat("a-1", 1)


def test_session_expiry_removes_the_member_and_rebalances() -> None:
    group, clock = stable_group("a", "b")
    clock.advance(SESSION - 1)
    group.heartbeat("a-1", 1)
    assert group.next_deadline_ms() == clock.now + 1
    clock.advance(1)
    group.poll()
    assert group.member_ids == ("a-1",)
    assert group.state is GroupState.PREPARING_REBALANCE
    with pytest.raises(RebalanceInProgressError):
        group.heartbeat("a-1", 1)
    result = joined(group, group.join(request("a", member_id="a-1")))
    assert result.generation_id == 2 and result.members == (("a-1", None, b"meta"),)
    with pytest.raises(UnknownMemberError):
        group.heartbeat("b-2", 1)


def test_expiry_fires_at_the_deadline_even_if_polled_late() -> None:
    group, clock = stable_group("a", "b", "c")
    expired_at = clock.now + SESSION
    assert group.next_deadline_ms() == expired_at
    clock.advance(10 * SESSION)
    group.poll()
    # Everyone expired at the same instant, the last one leaving an Empty group.
    assert group.state is GroupState.EMPTY and group.generation_id == 2
    assert group.state_since_ms == expired_at


def test_a_new_member_stuck_in_join_gives_up_after_the_join_timeout() -> None:
    group, clock = stable_group("a", new_member_join_timeout_ms=500)
    b = group.join(request("b"))
    for _ in range(5):  # a keeps heartbeating but never rejoins
        clock.advance(100)
        with pytest.raises(RebalanceInProgressError):
            group.heartbeat("a-1", 1)
    assert isinstance(drain(group)[b], UnknownMemberError)
    assert group.member_ids == ("a-1",)


def test_rebalance_timeout_removes_members_that_did_not_rejoin() -> None:
    group, clock = stable_group("a", "b")
    c = group.join(request("c"))
    a = group.join(request("a", member_id="a-1"))
    for _ in range(REBALANCE // 5_000 - 1):  # b heartbeats, is told to rejoin, does not
        clock.advance(5_000)
        with pytest.raises(RebalanceInProgressError):
            group.heartbeat("b-2", 1)
    clock.advance(5_000)
    outcomes = drain(group)
    assert outcomes[a].generation_id == outcomes[c].generation_id == 2
    assert group.member_ids == ("a-1", "c-3")
    with pytest.raises(UnknownMemberError):
        group.heartbeat("b-2", 2)


# -- leaving ------------------------------------------------------------------------------


def test_leader_leaving_mid_rebalance_hands_leadership_on() -> None:
    group, _ = stable_group("a", "b", "c")
    d = group.join(request("d"))
    b = group.join(request("b", member_id="b-2"))
    group.leave("a-1")
    assert group.leader_id == "b-2" and group.state is GroupState.PREPARING_REBALANCE
    c = group.join(request("c", member_id="c-3"))
    outcomes = drain(group)
    assert outcomes[b].is_leader and outcomes[b].generation_id == 2
    assert not outcomes[c].is_leader and not outcomes[d].is_leader
    assert [m.member_id for m in outcomes[b].members] == ["b-2", "c-3", "d-4"]


def test_a_static_leader_missing_the_rebalance_hands_leadership_to_a_joined_member() -> None:
    group, clock = stable_group("a", "b", instances={"a": "i-a"}, min_session_timeout_ms=1)
    c = group.join(request("c"))
    group.join(request("b", member_id="b-2"))
    for _ in range(REBALANCE // 5_000):  # a, static, keeps its session but never rejoins
        clock.advance(5_000)
        with pytest.raises((RebalanceInProgressError, IllegalGenerationError)):
            group.heartbeat("a-1", 1, "i-a")
    result = joined(group, c)
    assert result.leader_id == "b-2" and result.generation_id == 2
    assert group.member_ids == ("a-1", "b-2", "c-3")


def test_leader_leaving_before_sync_restarts_the_rebalance() -> None:
    group, clock = make_group()
    form(group, clock, request("a"), request("b"))
    sync_b = group.sync(SyncRequest(member_id="b-2", generation_id=1))
    group.leave("a-1")
    assert isinstance(drain(group)[sync_b], RebalanceInProgressError)
    assert group.state is GroupState.PREPARING_REBALANCE
    result = joined(group, group.join(request("b", member_id="b-2")))
    assert result.is_leader and result.generation_id == 2


def test_leave_answers_a_waiting_join_and_the_last_leave_empties_the_group() -> None:
    group, _ = stable_group("a", "b")
    a = group.join(request("a", member_id="a-1"))
    group.leave("a-1")
    assert isinstance(drain(group)[a], UnknownMemberError)
    group.leave("b-2")
    assert group.state is GroupState.EMPTY and group.generation_id == 2
    assert group.protocol_name is None and group.leader_id is None
    with pytest.raises(UnknownMemberError):
        group.leave("b-2")


# -- static membership --------------------------------------------------------------------


def test_static_member_restart_gets_its_assignment_back_without_a_rebalance() -> None:
    group, clock = stable_group("a", "b", instances={"a": "i-a"})
    clock.advance(3_000)  # a restarts within its session timeout
    result = group.join(request("a", instance="i-a", v4=True))
    assert isinstance(result, JoinResult)
    assert result.member_id == "a-3" and result.generation_id == 1
    # The old leader id, so the new process does not run a pointless assignment.
    assert result.leader_id == "a-1" and not result.is_leader and result.members == ()
    assert group.state is GroupState.STABLE and group.leader_id == "a-3"
    synced = group.sync(SyncRequest(member_id="a-3", generation_id=1, group_instance_id="i-a"))
    assert synced == SyncResult(assignment=b"a", protocol_type="consumer", protocol_name="range")
    group.heartbeat("b-2", 1)
    with pytest.raises(FencedInstanceIdError) as info:
        group.heartbeat("a-1", 1, "i-a")
    assert info.value.code == 82
    with pytest.raises(UnknownMemberError):
        group.heartbeat("a-1", 1)


def test_static_member_restart_with_other_protocols_rebalances() -> None:
    group, _ = stable_group("a", instances={"a": "i-a"})
    pending = group.join(request("a", instance="i-a", protocols=(("roundrobin", b"x"),)))
    assert isinstance(pending, Pending)
    result = joined(group, pending)
    assert (result.protocol_name, result.generation_id, result.is_leader) == ("roundrobin", 2, True)


def test_static_member_restart_fences_the_old_members_waiting_requests() -> None:
    group, clock = make_group()
    form(group, clock, request("a"), request("b", instance="i-b"))
    sync_b = group.sync(SyncRequest(member_id="b-2", generation_id=1, group_instance_id="i-b"))
    replacement = group.join(request("b", instance="i-b"))
    assert isinstance(replacement, Pending)
    assert isinstance(drain(group)[sync_b], FencedInstanceIdError)
    assert group.state is GroupState.PREPARING_REBALANCE  # it was completing: start over
    newest = group.join(request("b", instance="i-b"))  # and once more while preparing
    assert isinstance(drain(group)[replacement], FencedInstanceIdError)
    with pytest.raises(FencedInstanceIdError):
        group.join(request("b", member_id="b-3", instance="i-b"))
    group.join(request("a", member_id="a-1"))
    result = joined(group, newest)
    assert (result.member_id, result.generation_id) == ("b-4", 2)


def test_static_member_survives_a_rebalance_it_misses_but_must_then_sync() -> None:
    group, clock = make_group()
    long_session = 2 * REBALANCE
    form(group, clock, request("a"), request("s", instance="i-s", session=long_session))
    group.sync(SyncRequest(member_id="a-1", generation_id=1))
    drain(group)
    a = group.join(request("a", member_id="a-1"))  # s is down and does not rejoin
    clock.advance(REBALANCE - 1)
    assert drain(group) == {}
    clock.advance(1)
    result = joined(group, a)
    assert result.members == (("a-1", None, b"meta"), ("s-2", "i-s", b"meta"))
    group.sync(SyncRequest(member_id="a-1", generation_id=2))
    assert group.state is GroupState.STABLE
    # Like every member of the new generation, s must sync within the rebalance timeout.
    for _ in range(REBALANCE // 5_000 - 1):
        clock.advance(5_000)
        group.heartbeat("a-1", 2)
    clock.advance(4_999)
    group.heartbeat("a-1", 2)
    assert "s-2" in group.member_ids
    clock.advance(1)
    with pytest.raises(RebalanceInProgressError):
        group.heartbeat("a-1", 2)
    assert group.member_ids == ("a-1",)


def test_static_member_rejoin_after_expiry_is_a_new_member() -> None:
    group, clock = stable_group("a", "s", instances={"s": "i-s"})
    clock.advance(SESSION)
    group.poll()
    assert group.state is GroupState.EMPTY
    pending = group.join(request("s", instance="i-s"))
    clock.advance(DELAY)
    assert isinstance(pending, Pending) and joined(group, pending).generation_id == 3


def test_admin_leave_by_instance_id() -> None:
    group, _ = stable_group("a", "s", instances={"s": "i-s"})
    with pytest.raises(UnknownMemberError):
        group.leave("", "i-nobody")
    with pytest.raises(FencedInstanceIdError):
        group.leave("a-1", "i-s")
    group.leave("", "i-s")
    assert group.member_ids == ("a-1",)


# -- offset commits -----------------------------------------------------------------------


def test_commit_validation() -> None:
    group, clock = make_group()
    group.validate_commit("", -1)  # a plain commit to an Empty group
    form(group, clock, request("a", instance="i-a"), request("b"))
    with pytest.raises(RebalanceInProgressError):
        group.validate_commit("a-1", 1)  # CompletingRebalance
    group.sync(SyncRequest(member_id="a-1", generation_id=1))
    group.validate_commit("a-1", 1, "i-a")
    group.validate_commit("b-2", 1)
    for member, generation, instance, error in [
        ("", -1, None, UnknownMemberError),  # plain commits only while Empty
        ("b-2", 0, None, IllegalGenerationError),
        ("b-2", -1, None, IllegalGenerationError),
        ("zz", 1, None, UnknownMemberError),
        ("b-2", 1, "i-a", FencedInstanceIdError),
        ("a-1", 1, "i-zz", UnknownMemberError),
    ]:
        with pytest.raises(error):
            group.validate_commit(member, generation, instance)
    group.join(request("c"))
    group.validate_commit("b-2", 1)  # PreparingRebalance: the current generation commits


def test_a_commit_refreshes_the_session() -> None:
    group, clock = stable_group("a")
    for _ in range(4):
        clock.advance(SESSION - 1)
        group.validate_commit("a-1", 1)
    assert group.member_ids == ("a-1",)


def test_stale_member_commit_is_rejected_after_it_was_expired() -> None:
    group, clock = stable_group("a", "b")
    clock.advance(SESSION - 1)
    group.heartbeat("a-1", 1)
    clock.advance(1)  # b expired; a rejoins and leads generation 2 alone
    a = joined(group, group.join(request("a", member_id="a-1")))
    group.sync(SyncRequest(member_id="a-1", generation_id=a.generation_id))
    with pytest.raises(UnknownMemberError):
        group.validate_commit("b-2", 1)
    with pytest.raises(IllegalGenerationError):
        group.validate_commit("a-1", 1)
    group.leave("a-1")
    assert group.state is GroupState.EMPTY
    with pytest.raises(UnknownMemberError):
        group.validate_commit("a-1", 2)
    group.validate_commit("", -1)


# -- describe, list, delete, config -------------------------------------------------------


def test_describe_and_overview() -> None:
    group, clock = make_group()
    assert group.overview().state == "Empty" and group.overview().protocol_type == ""
    form(group, clock, request("a", instance="i-a"), request("b"))
    described = group.describe()
    assert (described.state, described.protocol_name, described.generation_id) == (
        "CompletingRebalance",
        "",
        1,
    )
    assert [m.metadata for m in described.members] == [b"", b""]
    group.sync(SyncRequest(member_id="a-1", generation_id=1, assignments={"a-1": b"A"}))
    described = group.describe()
    assert described.state == "Stable" and described.protocol_type == "consumer"
    assert described.protocol_name == "range" and described.leader_id == "a-1"
    first, second = described.members
    assert (first.member_id, first.group_instance_id, first.client_id, first.client_host) == (
        "a-1",
        "i-a",
        "a",
        "/a-host",
    )
    assert (first.metadata, first.assignment, second.assignment) == (b"meta", b"A", b"")
    assert group.overview().state == "Stable" and group.overview().group_id == "g"


def test_delete() -> None:
    group, _ = stable_group("a")
    with pytest.raises(GroupNotEmptyError) as info:
        group.delete()
    assert info.value.code == 68
    group.leave("a-1")
    group.delete()
    assert group.state is GroupState.DEAD and group.describe().members == ()
    assert group.next_deadline_ms() is None
    with pytest.raises(GroupIdNotFoundError):
        group.delete()
    for call in (
        lambda: group.join(request("a")),
        lambda: group.sync(SyncRequest(member_id="a-1", generation_id=2)),
        lambda: group.heartbeat("a-1", 2),
        lambda: group.leave("a-1"),
        lambda: group.validate_commit("", -1),
    ):
        with pytest.raises(CoordinatorNotAvailableError) as dead:
            call()
        assert dead.value.code == 15


@pytest.mark.parametrize(
    "config",
    [
        {"initial_rebalance_delay_ms": -1},
        {"min_session_timeout_ms": 10, "max_session_timeout_ms": 5},
        {"max_size": 0},
    ],
)
def test_bad_config_is_refused(config: dict[str, int]) -> None:
    with pytest.raises(InvalidGroupConfigError):
        GroupConfig(**config)


def test_a_clock_going_backwards_does_not_undo_time() -> None:
    group, clock = stable_group("a")
    clock.advance(SESSION - 1)
    group.heartbeat("a-1", 1)
    clock.now -= 5_000
    group.heartbeat("a-1", 1)
    clock.now += 5_000 + SESSION - 1
    group.poll()
    assert group.member_ids == ("a-1",)


def test_default_member_ids_are_client_id_and_uuid() -> None:
    group = Group("g", clock=Clock())
    with pytest.raises(MemberIdRequiredError) as info:
        group.join(request("consumer-1", v4=True))
    prefix, _, suffix = info.value.member_id.partition("-1-")
    assert prefix == "consumer" and len(suffix) == 36
