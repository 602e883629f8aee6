"""Partition assignors: pure functions from subscriptions to an assignment.

Theory of operation
-------------------
In Kafka's classic protocol the coordinator never assigns partitions: it elects a leader,
hands it every member's subscription, and distributes whatever the leader sends back. The
leader runs an assignor, named by the protocol the group selected. Each assignor here is a
plain function::

    (subscriptions: Mapping[member_id, Subscription],
     partitions_per_topic: Mapping[topic, int],
     *, group_instance_ids: Mapping[member_id, instance_id] | None = None)
        -> dict[member_id, list[TopicPartition]]

Every member id appears in the result (perhaps with no partitions); topics that are missing
from ``partitions_per_topic`` (or have no partitions) are skipped. Members are ordered as
Kafka orders them (KIP-345): static members first, by ``group_instance_id``, then dynamic
members by member id; so the output depends on nothing but the inputs, and a static member
that restarts under a new member id keeps its place. Each member's list is sorted.

- :func:`range_assign` (``"range"``): per topic, consecutive ranges to the members that
  subscribe to it; counts differ by at most one per topic.
- :func:`round_robin_assign` (``"roundrobin"``): all partitions, sorted, dealt in turn to
  the members, skipping a member not subscribed to the partition's topic.
- :func:`cooperative_sticky_assign` (``"cooperative-sticky"``, KIP-429): keeps each
  partition with the member that owns it unless balance requires a move, and never hands a
  partition straight from one member to another. A partition that must move is left out of
  this round's assignment: its old owner sees it missing, revokes it and rejoins, and the
  next rebalance (where nobody claims it any more) gives it to its new owner.

Ownership claims come from each member's ``Subscription.owned_partitions``. As in Kafka,
only the claims of members at the highest ``generation_id`` count for stickiness, and a
partition claimed by two such members belongs to neither. Any claim, stale or not, still
stops a partition from being handed to someone else in the same round.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from types import MappingProxyType
from typing import Protocol

from ._consumer_protocol import (
    HIGHEST_VERSION,
    Assignment,
    Subscription,
    TopicPartition,
    decode_subscription,
    encode_assignment,
)
from ._errors import InconsistentGroupProtocolError


class Assignor(Protocol):
    """The signature every assignor function has."""

    def __call__(
        self,
        subscriptions: Mapping[str, Subscription],
        partitions_per_topic: Mapping[str, int],
        *,
        group_instance_ids: Mapping[str, str] | None = None,
    ) -> dict[str, list[TopicPartition]]: ...


def range_assign(
    subscriptions: Mapping[str, Subscription],
    partitions_per_topic: Mapping[str, int],
    *,
    group_instance_ids: Mapping[str, str] | None = None,
) -> dict[str, list[TopicPartition]]:
    """Assign each topic's partitions in consecutive ranges to the members subscribing to it.

    With ``n`` partitions and ``k`` subscribers, the first ``n % k`` members (in member
    order) get ``n // k + 1`` partitions and the rest ``n // k``.
    """
    members = _member_order(subscriptions, group_instance_ids)
    topics_of = _topics_of(subscriptions, partitions_per_topic)
    assignment: dict[str, list[TopicPartition]] = {member: [] for member in members}
    for topic in sorted(set().union(*topics_of.values())):
        consumers = [member for member in members if topic in topics_of[member]]
        per_member, extra = divmod(partitions_per_topic[topic], len(consumers))
        start = 0
        for index, member in enumerate(consumers):
            length = per_member + (1 if index < extra else 0)
            assignment[member].extend(
                TopicPartition(topic, partition) for partition in range(start, start + length)
            )
            start += length
    return assignment


def round_robin_assign(
    subscriptions: Mapping[str, Subscription],
    partitions_per_topic: Mapping[str, int],
    *,
    group_instance_ids: Mapping[str, str] | None = None,
) -> dict[str, list[TopicPartition]]:
    """Deal all subscribed partitions, sorted by topic and partition, to members in turn.

    A member not subscribed to a partition's topic is skipped for that partition. When
    every member subscribes to the same topics, counts differ by at most one, per topic and
    overall.
    """
    members = _member_order(subscriptions, group_instance_ids)
    topics_of = _topics_of(subscriptions, partitions_per_topic)
    assignment: dict[str, list[TopicPartition]] = {member: [] for member in members}
    turn = 0
    for partition in _all_partitions(topics_of, partitions_per_topic):
        while partition.topic not in topics_of[members[turn % len(members)]]:
            turn += 1
        assignment[members[turn % len(members)]].append(partition)
        turn += 1
    return assignment


def cooperative_sticky_assign(
    subscriptions: Mapping[str, Subscription],
    partitions_per_topic: Mapping[str, int],
    *,
    group_instance_ids: Mapping[str, str] | None = None,
) -> dict[str, list[TopicPartition]]:
    """Assign partitions stickily and balanced, withholding those that change owner.

    The target assignment keeps every valid owned partition with its owner, gives
    unowned partitions to the least-loaded eligible member, then moves partitions from the
    most- to the least-loaded member while their counts differ by two or more (so with
    identical subscriptions counts differ by at most one, and a member keeps at least
    ``min(owned, partitions // members)`` of what it owned). The result is that target
    minus every partition another member still claims: those are revoked by their owner
    first and handed over in the following rebalance.
    """
    members = _member_order(subscriptions, group_instance_ids)
    topics_of = _topics_of(subscriptions, partitions_per_topic)
    target = _balance(
        members,
        topics_of,
        _valid_claims(members, subscriptions, topics_of, partitions_per_topic),
        _all_partitions(topics_of, partitions_per_topic),
    )
    claimants: dict[TopicPartition, set[str]] = {}
    for member in members:
        for partition in subscriptions[member].owned_partitions:
            claimants.setdefault(partition, set()).add(member)
    return {
        member: sorted(p for p in target[member] if member in claimants.get(p, (member,)))
        for member in members
    }


ASSIGNORS: Mapping[str, Assignor] = MappingProxyType(
    {
        "range": range_assign,
        "roundrobin": round_robin_assign,
        "cooperative-sticky": cooperative_sticky_assign,
    }
)
"""The assignors by the protocol name Kafka's clients advertise for them."""


def assign_partitions(
    protocol_name: str,
    members: Iterable[tuple[str, str | None, bytes]],
    partitions_per_topic: Mapping[str, int],
    *,
    version: int = HIGHEST_VERSION,
) -> dict[str, bytes]:
    """Run the leader's side of a consumer-group rebalance.

    ``members`` are ``(member_id, group_instance_id, metadata)`` triples, exactly what a
    leader's :class:`~headwater.groups.JoinResult` carries; each ``metadata`` is a
    ConsumerProtocolSubscription. Returns each member's encoded ConsumerProtocolAssignment,
    ready for :class:`~headwater.groups.SyncRequest`.

    :raises InconsistentGroupProtocolError: if ``protocol_name`` names no known assignor.
    :raises InvalidProtocolMetadataError: if a member's metadata does not decode.
    """
    assignor = ASSIGNORS.get(protocol_name)
    if assignor is None:
        raise InconsistentGroupProtocolError(f"no assignor named {protocol_name!r}")
    subscriptions: dict[str, Subscription] = {}
    instance_ids: dict[str, str] = {}
    for member_id, group_instance_id, metadata in members:
        subscriptions[member_id] = decode_subscription(metadata)
        if group_instance_id is not None:
            instance_ids[member_id] = group_instance_id
    result = assignor(subscriptions, partitions_per_topic, group_instance_ids=instance_ids)
    return {
        member: encode_assignment(Assignment(tuple(partitions)), version)
        for member, partitions in result.items()
    }


def _member_order(
    subscriptions: Mapping[str, Subscription], group_instance_ids: Mapping[str, str] | None
) -> list[str]:
    instance_ids = group_instance_ids or {}

    def key(member: str) -> tuple[int, str, str]:
        instance_id = instance_ids.get(member)
        return (1, member, "") if instance_id is None else (0, instance_id, member)

    return sorted(subscriptions, key=key)


def _topics_of(
    subscriptions: Mapping[str, Subscription], partitions_per_topic: Mapping[str, int]
) -> dict[str, frozenset[str]]:
    """Each member's subscribed topics that exist and have partitions."""
    return {
        member: frozenset(t for t in sub.topics if partitions_per_topic.get(t, 0) > 0)
        for member, sub in subscriptions.items()
    }


def _all_partitions(
    topics_of: Mapping[str, frozenset[str]], partitions_per_topic: Mapping[str, int]
) -> list[TopicPartition]:
    return [
        TopicPartition(topic, partition)
        for topic in sorted(set().union(*topics_of.values()))
        for partition in range(partitions_per_topic[topic])
    ]


def _valid_claims(
    members: list[str],
    subscriptions: Mapping[str, Subscription],
    topics_of: Mapping[str, frozenset[str]],
    partitions_per_topic: Mapping[str, int],
) -> dict[str, list[TopicPartition]]:
    """The owned partitions each member may keep: current generation, uncontested, valid."""
    newest = max((subscriptions[m].generation_id for m in members), default=-1)
    owner: dict[TopicPartition, str] = {}
    contested: set[TopicPartition] = set()
    for member in members:
        subscription = subscriptions[member]
        if subscription.generation_id < newest:
            continue
        for partition in subscription.owned_partitions:
            topic, index = partition
            if topic not in topics_of[member] or not 0 <= index < partitions_per_topic[topic]:
                continue
            if owner.setdefault(partition, member) != member:
                contested.add(partition)
    kept: dict[str, list[TopicPartition]] = {member: [] for member in members}
    for partition, member in owner.items():
        if partition not in contested:
            kept[member].append(partition)
    return kept


def _balance(
    members: list[str],
    topics_of: Mapping[str, frozenset[str]],
    kept: dict[str, list[TopicPartition]],
    all_partitions: list[TopicPartition],
) -> dict[str, list[TopicPartition]]:
    """Fill in unowned partitions, then even out counts with as few moves as possible."""
    rank = {member: index for index, member in enumerate(members)}
    eligible = {
        topic: [m for m in members if topic in topics_of[m]]
        for topic in {p.topic for p in all_partitions}
    }
    # Kept partitions come first in each list and moves take from the end, so a member
    # gives away partitions it just received before any it already owned.
    assigned = {member: sorted(kept[member]) for member in members}
    taken = {p for partitions in assigned.values() for p in partitions}
    free = [p for p in all_partitions if p not in taken]
    free.sort(key=lambda p: (len(eligible[p.topic]), p))  # most constrained first

    def least_loaded(topic: str) -> str:
        return min(eligible[topic], key=lambda m: (len(assigned[m]), rank[m]))

    for partition in free:
        assigned[least_loaded(partition.topic)].append(partition)
    # Each move lowers the sum of squared counts by at least two, so this terminates.
    while _move_one(members, assigned, rank, least_loaded):
        pass
    return assigned


def _move_one(
    members: list[str],
    assigned: dict[str, list[TopicPartition]],
    rank: Mapping[str, int],
    least_loaded: _LeastLoaded,
) -> bool:
    for donor in sorted(members, key=lambda m: (-len(assigned[m]), rank[m])):
        partitions = assigned[donor]
        for index in range(len(partitions) - 1, -1, -1):
            receiver = least_loaded(partitions[index].topic)
            if len(assigned[receiver]) <= len(partitions) - 2:
                assigned[receiver].append(partitions.pop(index))
                return True
    return False


class _LeastLoaded(Protocol):
    def __call__(self, topic: str) -> str: ...
