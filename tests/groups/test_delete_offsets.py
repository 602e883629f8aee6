"""OffsetDelete in the coordinator: refused for topics the active members consume."""

from __future__ import annotations

import dataclasses

import pytest

from headwater.groups import (
    GroupCoordinator,
    GroupIdNotFoundError,
    GroupNotEmptyError,
    GroupProtocol,
    GroupSubscribedToTopicError,
    JoinRequest,
    MemberIdRequiredError,
    TopicPartition,
)
from headwater.store import Store, TopicNotFoundError

from .helpers import FAST, fill


async def test_an_empty_group_loses_the_named_offsets(store: Store) -> None:
    await fill(store, "a", 2, 3)
    await fill(store, "b", 1, 3)
    a0, a1, b0 = TopicPartition("a", 0), TopicPartition("a", 1), TopicPartition("b", 0)
    async with GroupCoordinator(store) as coordinator:
        await coordinator.commit("g", {a0: 1, a1: 2, b0: 3})
        outcome = await coordinator.delete_offsets("g", [a0, ("b", 0), ("a", 5), ("zz", 0)])
        assert outcome[a0] is None and outcome[b0] is None
        assert isinstance(outcome[TopicPartition("a", 5)], TopicNotFoundError)
        assert isinstance(outcome[TopicPartition("zz", 0)], TopicNotFoundError)
        assert {tp: o.offset for tp, o in coordinator.committed("g").items()} == {a1: 2}
        # Nothing committed there: nothing to delete, no error.
        assert await coordinator.delete_offsets("g", [a0]) == {a0: None}
        await coordinator.delete_offsets("g", [a1])
        # A group without offsets or members is gone, as after DeleteGroups.
        assert coordinator.list_groups() == []
        with pytest.raises(GroupIdNotFoundError):
            await coordinator.delete_offsets("g", [a1])
    # The tombstones are durable: a new coordinator over the same store sees none.
    async with GroupCoordinator(store) as coordinator:
        assert coordinator.committed("g") == {}


async def test_unknown_group_is_not_found(store: Store) -> None:
    await fill(store, "a", 1, 1)
    async with GroupCoordinator(store) as coordinator:
        with pytest.raises(GroupIdNotFoundError):
            await coordinator.delete_offsets("nobody", [TopicPartition("a", 0)])


async def test_topics_the_members_subscribe_to_keep_their_offsets(store: Store) -> None:
    await fill(store, "a", 1, 3)
    await fill(store, "b", 1, 3)
    a0, b0 = TopicPartition("a", 0), TopicPartition("b", 0)
    async with GroupCoordinator(store, config=FAST) as coordinator:
        await coordinator.commit("g", {a0: 1, b0: 2})
        async with coordinator.consumer("g", ["a"], auto_offset_reset="earliest"):
            outcome = await coordinator.delete_offsets("g", [a0, b0])
            assert isinstance(outcome[a0], GroupSubscribedToTopicError)
            assert outcome[b0] is None
            assert {tp: o.offset for tp, o in coordinator.committed("g").items()} == {a0: 1}
        # The member left: now the offsets of "a" can go too.
        assert await coordinator.delete_offsets("g", [a0]) == {a0: None}
        assert coordinator.committed("g") == {}


async def test_members_of_another_protocol_type_make_it_refused(store: Store) -> None:
    await fill(store, "a", 1, 1)
    a0 = TopicPartition("a", 0)
    async with GroupCoordinator(store, config=FAST) as coordinator:
        await coordinator.commit("g", {a0: 1})
        request = JoinRequest(
            client_id="c",
            session_timeout_ms=10_000,
            rebalance_timeout_ms=5_000,
            protocol_type="connect",
            protocols=(GroupProtocol("x", b"opaque"),),
        )
        with pytest.raises(MemberIdRequiredError) as info:
            await coordinator.join("g", request)
        member_id = info.value.member_id
        await coordinator.join("g", dataclasses.replace(request, member_id=member_id))
        assert coordinator.describe_group("g").state == "CompletingRebalance"
        with pytest.raises(GroupNotEmptyError):
            await coordinator.delete_offsets("g", [a0])
