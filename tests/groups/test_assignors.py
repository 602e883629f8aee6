"""Assignors: Kafka's documented examples, kafka-python as an oracle, balance, stickiness."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from kafka.coordinator.assignors.range import RangePartitionAssignor
from kafka.coordinator.assignors.roundrobin import RoundRobinPartitionAssignor

from headwater.groups import (
    ASSIGNORS,
    Assignor,
    InconsistentGroupProtocolError,
    Subscription,
    TopicPartition,
    assign_partitions,
    cooperative_sticky_assign,
    decode_assignment,
    encode_subscription,
    range_assign,
    round_robin_assign,
)

TP = TopicPartition
ALL = [range_assign, round_robin_assign, cooperative_sticky_assign]


def subs(**topics: tuple[str, ...]) -> dict[str, Subscription]:
    return {member: Subscription(ts) for member, ts in topics.items()}


def test_range_matches_kafka_documentation() -> None:
    result = range_assign(subs(C0=("t0", "t1"), C1=("t0", "t1")), {"t0": 3, "t1": 3})
    assert result == {
        "C0": [TP("t0", 0), TP("t0", 1), TP("t1", 0), TP("t1", 1)],
        "C1": [TP("t0", 2), TP("t1", 2)],
    }


def test_round_robin_matches_kafka_documentation() -> None:
    result = round_robin_assign(subs(C0=("t0", "t1"), C1=("t0", "t1")), {"t0": 3, "t1": 3})
    assert result == {
        "C0": [TP("t0", 0), TP("t0", 2), TP("t1", 1)],
        "C1": [TP("t0", 1), TP("t1", 0), TP("t1", 2)],
    }
    uneven = round_robin_assign(
        subs(C0=("t0",), C1=("t0", "t1"), C2=("t0", "t1", "t2")), {"t0": 1, "t1": 2, "t2": 3}
    )
    assert uneven == {
        "C0": [TP("t0", 0)],
        "C1": [TP("t1", 0)],
        "C2": [TP("t1", 1), TP("t2", 0), TP("t2", 1), TP("t2", 2)],
    }


@pytest.mark.parametrize("assign", ALL)
def test_missing_topics_and_members_without_topics(assign: Assignor) -> None:
    result = assign(subs(a=("t", "gone"), b=()), {"t": 2, "empty": 0})
    assert result == {"a": [TP("t", 0), TP("t", 1)], "b": []}
    assert assign({}, {"t": 3}) == {}


# -- kafka-python as an oracle for range and round-robin ---------------------------------


@dataclass
class _KafkaMember:
    member_id: str
    group_instance_id: str | None
    metadata: Any


class _Cluster:
    def __init__(self, partitions_per_topic: Mapping[str, int]) -> None:
        self._counts = partitions_per_topic

    def partitions_for_topic(self, topic: str) -> set[int] | None:
        count = self._counts.get(topic)
        return None if count is None else set(range(count))


@st.composite
def groups(draw: st.DrawFn, static: bool = False) -> tuple[dict[str, Subscription], dict[str, int]]:
    topics = draw(st.lists(st.sampled_from("abcdef"), min_size=1, max_size=4, unique=True))
    counts = {t: draw(st.integers(1, 9)) for t in topics}
    members = draw(st.lists(st.text("mnopq", min_size=1, max_size=3), max_size=7, unique=True))
    subscriptions = {
        m: Subscription(tuple(draw(st.lists(st.sampled_from(topics), min_size=1, unique=True))))
        for m in members
    }
    return subscriptions, counts


@st.composite
def uniform_groups(draw: st.DrawFn) -> tuple[dict[str, Subscription], dict[str, int]]:
    topics = tuple(draw(st.lists(st.sampled_from("abcd"), min_size=1, max_size=4, unique=True)))
    counts = {t: draw(st.integers(0, 12)) for t in topics}
    members = draw(st.lists(st.text("mnop", min_size=1, max_size=3), min_size=1, unique=True))
    return {m: Subscription(topics) for m in members}, counts


def _kafka(
    assignor: Any,
    subscriptions: Mapping[str, Subscription],
    counts: Mapping[str, int],
    instance_ids: Mapping[str, str],
) -> dict[str, list[TopicPartition]]:
    members = [
        _KafkaMember(m, instance_ids.get(m), assignor.metadata(s.topics))
        for m, s in subscriptions.items()
    ]
    result = assignor.assign(_Cluster(counts), members)
    return {m: [TP(t, p) for t, ps in a.assigned_partitions for p in ps] for m, a in result.items()}


@pytest.mark.parametrize(
    ("ours", "theirs", "uniform"),
    [
        (range_assign, RangePartitionAssignor, False),
        # kafka-python's round robin raises KeyError when subscriptions differ.
        (round_robin_assign, RoundRobinPartitionAssignor, True),
    ],
)
@given(data=st.data(), static=st.booleans())
@settings(max_examples=50)
def test_agrees_with_kafka_python(
    ours: Assignor, theirs: Any, uniform: bool, data: st.DataObject, static: bool
) -> None:
    subscriptions, counts = data.draw(uniform_groups() if uniform else groups())
    # Static members sort by instance id, which here runs opposite to the member ids.
    instance_ids = {m: m[::-1] + "-instance" for m in subscriptions} if static else {}
    expected = _kafka(theirs, subscriptions, counts, instance_ids)
    assert ours(subscriptions, counts, group_instance_ids=instance_ids) == expected


# -- properties every assignor has -------------------------------------------------------


@pytest.mark.parametrize("assign", ALL)
@given(group=groups())
@settings(max_examples=50)
def test_each_subscribed_partition_goes_to_exactly_one_subscriber(
    assign: Assignor, group: tuple[dict[str, Subscription], dict[str, int]]
) -> None:
    subscriptions, counts = group
    result = assign(subscriptions, counts)
    assert set(result) == set(subscriptions)
    owners = Counter(p for partitions in result.values() for p in partitions)
    wanted = {t for s in subscriptions.values() for t in s.topics}
    assert set(owners) == {TP(t, p) for t in wanted for p in range(counts[t])}
    assert set(owners.values()) <= {1}
    for member, partitions in result.items():
        assert partitions == sorted(partitions)
        assert {p.topic for p in partitions} <= set(subscriptions[member].topics)


@pytest.mark.parametrize("assign", ALL)
@given(group=uniform_groups())
@settings(max_examples=50)
def test_identical_subscriptions_are_balanced(
    assign: Assignor, group: tuple[dict[str, Subscription], dict[str, int]]
) -> None:
    subscriptions, counts = group
    result = assign(subscriptions, counts)
    if assign is not range_assign:  # range balances each topic, not the totals
        sizes = [len(partitions) for partitions in result.values()]
        assert max(sizes) - min(sizes) <= 1
    if assign is not cooperative_sticky_assign:  # sticky balances totals, not each topic
        for topic in counts:
            per_topic = [sum(p.topic == topic for p in ps) for ps in result.values()]
            assert max(per_topic) - min(per_topic) <= 1


@pytest.mark.parametrize("assign", ALL)
@given(group=groups(), seed=st.randoms(use_true_random=False))
@settings(max_examples=50)
def test_output_does_not_depend_on_input_order(
    assign: Assignor, group: tuple[dict[str, Subscription], dict[str, int]], seed: random.Random
) -> None:
    subscriptions, counts = group
    items = list(subscriptions.items())
    seed.shuffle(items)
    shuffled = {m: Subscription(tuple(seed.sample(s.topics, len(s.topics)))) for m, s in items}
    assert assign(shuffled, counts) == assign(subscriptions, counts)


# -- cooperative-sticky ------------------------------------------------------------------


def owning(
    topics: tuple[str, ...], owned: list[TopicPartition], generation: int = 1
) -> Subscription:
    return Subscription(topics, owned_partitions=tuple(owned), generation_id=generation)


def test_a_new_member_waits_for_revoked_partitions() -> None:
    t = ("t",)
    first = cooperative_sticky_assign(
        {"a": owning(t, [TP("t", p) for p in range(4)]), "b": owning(t, [])}, {"t": 4}
    )
    # a keeps two and must revoke the others before b may have them.
    assert first == {"a": [TP("t", 0), TP("t", 1)], "b": []}
    second = cooperative_sticky_assign(
        {"a": owning(t, first["a"], 2), "b": owning(t, first["b"], 2)}, {"t": 4}
    )
    assert second == {"a": [TP("t", 0), TP("t", 1)], "b": [TP("t", 2), TP("t", 3)]}


def test_departed_members_partitions_go_straight_to_the_others() -> None:
    t = ("t",)
    result = cooperative_sticky_assign(
        {"a": owning(t, [TP("t", 0), TP("t", 1)]), "c": owning(t, [TP("t", 4), TP("t", 5)])},
        {"t": 6},
    )
    assert result == {
        "a": [TP("t", 0), TP("t", 1), TP("t", 2)],
        "c": [TP("t", 3), TP("t", 4), TP("t", 5)],
    }


def test_stale_generation_claims_do_not_stick_but_still_block_handover() -> None:
    t = ("t",)
    result = cooperative_sticky_assign(
        {"a": owning(t, [TP("t", 0), TP("t", 1)], 3), "z": owning(t, [TP("t", 2), TP("t", 3)], 1)},
        {"t": 4},
    )
    # z's claims are stale, so the balanced target is a: 0,1 / z: 2,3 anyway: it keeps them.
    assert result == {"a": [TP("t", 0), TP("t", 1)], "z": [TP("t", 2), TP("t", 3)]}
    lopsided = cooperative_sticky_assign(
        {"a": owning(t, [], 3), "z": owning(t, [TP("t", p) for p in range(4)], 1)}, {"t": 4}
    )
    # No stickiness for z (the target is a: 0, 2 / z: 1, 3), but what z still claims is
    # not handed to a in this round.
    assert lopsided == {"a": [], "z": [TP("t", 1), TP("t", 3)]}


def test_contested_claims_belong_to_neither() -> None:
    t = ("t",)
    result = cooperative_sticky_assign(
        {"a": owning(t, [TP("t", 0)]), "b": owning(t, [TP("t", 0), TP("t", 1)])}, {"t": 2}
    )
    # t-0 is claimed twice in one generation, so it sticks to neither; it goes to a (the
    # least loaded), which claims it too, so it is not withheld (Kafka's rule: withhold
    # only what a member gets without claiming it).
    assert result == {"a": [TP("t", 0)], "b": [TP("t", 1)]}


@st.composite
def owned_groups(draw: st.DrawFn) -> tuple[dict[str, Subscription], dict[str, int]]:
    """Identical subscriptions with disjoint, current ownership (a previous assignment)."""
    subscriptions, counts = draw(uniform_groups())
    everything = [TP(t, p) for t in sorted(counts) for p in range(counts[t])]
    owner_of = {p: draw(st.sampled_from([None, *sorted(subscriptions)])) for p in everything}
    return {
        m: owning(s.topics, [p for p, o in owner_of.items() if o == m])
        for m, s in subscriptions.items()
    }, counts


def _rounds(
    subscriptions: dict[str, Subscription], counts: dict[str, int], rounds: int
) -> list[dict[str, list[TopicPartition]]]:
    """Run the cooperative protocol: each member then owns exactly what it was given."""
    results = []
    for generation in range(2, 2 + rounds):
        result = cooperative_sticky_assign(subscriptions, counts)
        results.append(result)
        subscriptions = {
            m: owning(s.topics, result[m], generation) for m, s in subscriptions.items()
        }
    return results


@given(group=owned_groups())
@settings(max_examples=50)
def test_cooperative_rounds_keep_owners_and_converge(
    group: tuple[dict[str, Subscription], dict[str, int]],
) -> None:
    subscriptions, counts = group
    first, second, third = _rounds(subscriptions, counts, 3)
    total = sum(counts.values())
    quota = total // len(subscriptions)
    for member, sub in subscriptions.items():
        owned = set(sub.owned_partitions)
        # Sticky: a member keeps what it owns, up to its fair share.
        assert len(owned & set(first[member])) >= min(len(owned), quota)
        # Cooperative: nothing it is given in round one was another member's.
        for other, other_sub in subscriptions.items():
            if other != member:
                assert not set(first[member]) & set(other_sub.owned_partitions)
        # Round two only adds to round one; round three changes nothing.
        assert set(first[member]) <= set(second[member])
        assert third[member] == second[member]
    sizes = [len(ps) for ps in second.values()]
    assert sum(sizes) == total and max(sizes) - min(sizes) <= 1


@given(group=groups())
@settings(max_examples=50)
def test_uneven_subscriptions_leave_no_improving_move(
    group: tuple[dict[str, Subscription], dict[str, int]],
) -> None:
    subscriptions, counts = group
    result = cooperative_sticky_assign(subscriptions, counts)
    for partitions in result.values():
        for partition in partitions:
            for other, sub in subscriptions.items():
                if partition.topic in sub.topics:
                    assert len(result[other]) >= len(partitions) - 1


# -- the leader's helper -----------------------------------------------------------------


def test_assign_partitions_decodes_assigns_and_encodes() -> None:
    members = [
        ("m-2", None, encode_subscription(Subscription(("t",)))),
        ("m-1", "z-instance", encode_subscription(Subscription(("t",)))),
        ("m-3", "a-instance", encode_subscription(Subscription(("t",)), version=0)),
    ]
    encoded = assign_partitions("range", members, {"t": 3})
    decoded = {m: decode_assignment(data).partitions for m, data in encoded.items()}
    # Static members first, by instance id; then dynamic members by member id.
    assert decoded == {"m-3": (TP("t", 0),), "m-1": (TP("t", 1),), "m-2": (TP("t", 2),)}


def test_assign_partitions_refuses_an_unknown_assignor() -> None:
    with pytest.raises(InconsistentGroupProtocolError):
        assign_partitions("sticky-ish", [], {})


def test_assignors_are_registered_by_kafka_names() -> None:
    assert dict(ASSIGNORS) == {
        "range": range_assign,
        "roundrobin": round_robin_assign,
        "cooperative-sticky": cooperative_sticky_assign,
    }
