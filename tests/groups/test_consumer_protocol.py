"""ConsumerProtocol codec: known answers against kafka-python, round trips, hostile bytes."""

from __future__ import annotations

import contextlib
import struct
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from kafka.protocol.consumer.metadata import (
    ConsumerProtocolAssignment as KafkaAssignment,
)
from kafka.protocol.consumer.metadata import (
    ConsumerProtocolSubscription as KafkaSubscription,
)

from headwater.groups import (
    Assignment,
    InvalidProtocolMetadataError,
    Subscription,
    TopicPartition,
    decode_assignment,
    decode_subscription,
    encode_assignment,
    encode_subscription,
)

names = st.text(min_size=0, max_size=12)
partitions = st.integers(min_value=-(2**31), max_value=2**31 - 1)
topic_partitions = st.lists(st.builds(TopicPartition, names, partitions), max_size=8).map(tuple)
user_data = st.none() | st.binary(max_size=16)
versions = st.integers(min_value=0, max_value=3)


def grouped(tps: tuple[TopicPartition, ...]) -> dict[str, list[int]]:
    by_topic: dict[str, list[int]] = {}
    for topic, partition in tps:
        by_topic.setdefault(topic, []).append(partition)
    return by_topic


def canonical(tps: tuple[TopicPartition, ...]) -> tuple[TopicPartition, ...]:
    """The order the wire keeps: grouped by topic, topics in order of first appearance."""
    return tuple(TopicPartition(t, p) for t, ps in grouped(tps).items() for p in ps)


def as_tps(kafka_groups: list[Any]) -> tuple[TopicPartition, ...]:
    return tuple(TopicPartition(g.topic, p) for g in kafka_groups for p in g.partitions)


@st.composite
def subscriptions(draw: st.DrawFn) -> Subscription:
    return Subscription(
        topics=tuple(draw(st.lists(names, max_size=5))),
        user_data=draw(user_data),
        owned_partitions=draw(topic_partitions),
        generation_id=draw(partitions),
        rack_id=draw(st.none() | names),
    )


assignments = st.builds(Assignment, topic_partitions, user_data)


def kafka_subscription(sub: Subscription, version: int) -> Any:
    tp = KafkaSubscription.TopicPartition
    return KafkaSubscription(
        version=version,
        topics=list(sub.topics),
        user_data=sub.user_data,
        owned_partitions=[
            tp(topic=t, partitions=ps) for t, ps in grouped(sub.owned_partitions).items()
        ],
        generation_id=sub.generation_id,
        rack_id=sub.rack_id,
    )


def at_version(sub: Subscription, version: int) -> Subscription:
    """What survives encoding at ``version``: newer fields take their defaults."""
    return Subscription(
        topics=sub.topics,
        user_data=sub.user_data,
        owned_partitions=canonical(sub.owned_partitions) if version >= 1 else (),
        generation_id=sub.generation_id if version >= 2 else -1,
        rack_id=sub.rack_id if version >= 3 else None,
    )


@given(subscriptions(), versions)
def test_subscription_bytes_match_kafka_python(sub: Subscription, version: int) -> None:
    assert encode_subscription(sub, version) == kafka_subscription(sub, version).encode()


@given(subscriptions(), versions)
def test_subscription_decodes_what_kafka_python_encodes(sub: Subscription, version: int) -> None:
    data = kafka_subscription(sub, version).encode()
    assert decode_subscription(data) == at_version(sub, version)


@given(subscriptions(), versions)
def test_kafka_python_decodes_our_subscription(sub: Subscription, version: int) -> None:
    theirs = KafkaSubscription.decode(encode_subscription(sub, version))
    assert theirs.version == version
    assert list(theirs.topics) == list(sub.topics)
    assert theirs.user_data == sub.user_data
    if version >= 1:
        assert as_tps(theirs.owned_partitions) == canonical(sub.owned_partitions)
    if version >= 2:
        assert theirs.generation_id == sub.generation_id
    if version >= 3:
        assert theirs.rack_id == sub.rack_id


def kafka_assignment(assignment: Assignment, version: int) -> Any:
    tp = KafkaAssignment.TopicPartition
    return KafkaAssignment(
        version=version,
        assigned_partitions=[
            tp(topic=t, partitions=ps) for t, ps in grouped(assignment.partitions).items()
        ],
        user_data=assignment.user_data,
    )


@given(assignments, versions)
def test_assignment_matches_kafka_python_both_ways(assignment: Assignment, version: int) -> None:
    ours = encode_assignment(assignment, version)
    assert ours == kafka_assignment(assignment, version).encode()
    expected = Assignment(canonical(assignment.partitions), assignment.user_data)
    assert decode_assignment(kafka_assignment(assignment, version).encode()) == expected
    theirs = KafkaAssignment.decode(ours)
    assert as_tps(theirs.assigned_partitions) == expected.partitions
    assert theirs.user_data == assignment.user_data


def test_known_subscription_bytes() -> None:
    sub = Subscription(
        topics=("a", "b"),
        user_data=b"xy",
        owned_partitions=(TopicPartition("a", 0), TopicPartition("a", 1)),
        generation_id=5,
        rack_id="r1",
    )
    v0 = b"\x00\x00" + b"\x00\x00\x00\x02\x00\x01a\x00\x01b" + b"\x00\x00\x00\x02xy"
    owned = b"\x00\x00\x00\x01\x00\x01a\x00\x00\x00\x02\x00\x00\x00\x00\x00\x00\x00\x01"
    assert encode_subscription(sub, 0) == v0
    v3 = b"\x00\x03" + v0[2:] + owned + b"\x00\x00\x00\x05" + b"\x00\x02r1"
    assert encode_subscription(sub, 3) == v3
    assert decode_subscription(encode_subscription(sub)) == sub


def test_empty_assignment_bytes_are_no_partitions() -> None:
    assert decode_assignment(b"") == Assignment(())


def test_topic_listed_twice_is_flattened_in_order() -> None:
    data = (
        b"\x00\x00\x00\x00\x00\x02"
        + b"\x00\x01a\x00\x00\x00\x01\x00\x00\x00\x03"
        + b"\x00\x01a\x00\x00\x00\x01\x00\x00\x00\x01"
        + b"\xff\xff\xff\xff"
    )
    assert decode_assignment(data).partitions == (TopicPartition("a", 3), TopicPartition("a", 1))


def test_newer_version_reads_as_version_3_ignoring_what_follows() -> None:
    sub = Subscription(("t",), None, (TopicPartition("t", 0),), 7, "rack")
    data = b"\x00\x09" + encode_subscription(sub, 3)[2:] + b"future fields"
    assert decode_subscription(data) == sub


@given(subscriptions(), versions)
def test_every_truncation_of_a_subscription_is_an_error(sub: Subscription, version: int) -> None:
    data = encode_subscription(sub, version)
    for cut in range(len(data)):
        with pytest.raises(InvalidProtocolMetadataError):
            decode_subscription(data[:cut])


@given(assignments)
def test_every_truncation_of_an_assignment_is_an_error(assignment: Assignment) -> None:
    data = encode_assignment(assignment)
    for cut in range(1, len(data)):  # zero bytes is the coordinator's "no assignment"
        with pytest.raises(InvalidProtocolMetadataError):
            decode_assignment(data[:cut])


@given(st.binary(max_size=64))
def test_arbitrary_bytes_decode_or_raise_our_error(data: bytes) -> None:
    for decode in (decode_subscription, decode_assignment):
        with contextlib.suppress(InvalidProtocolMetadataError):
            decode(data)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\xff\xff", "negative consumer protocol version"),
        (b"\x00\x00\x7f\xff\xff\xff", "exceeds the bytes that remain"),
        (b"\x00\x00\xff\xff\xff\xfe", "null or negative count"),
        (b"\x00\x00\x00\x00\x00\x01\xff\xff", "null where required"),
        (b"\x00\x00\x00\x00\x00\x01\xff\xfe", "negative length"),
        (b"\x00\x00\x00\x00\x00\x01\x00\x02\xff\xfe", "not UTF-8"),
        (b"\x00\x00\x00\x00\x00\x00\x7f\x00\x00\x00", "truncated user_data"),
        (b"\x00\x00\x00\x00\x00\x00\xff\xff\xff\xf0", "negative length"),
    ],
)
def test_malformed_subscription_names_the_problem(data: bytes, message: str) -> None:
    with pytest.raises(InvalidProtocolMetadataError, match=message):
        decode_subscription(data)


def test_huge_count_is_refused_before_allocating() -> None:
    data = b"\x00\x00" + struct.pack(">i", 2**31 - 1) + b"\x00\x00\x00\x00"
    with pytest.raises(InvalidProtocolMetadataError, match="exceeds"):
        decode_assignment(data)


@pytest.mark.parametrize(
    "value",
    [
        Subscription(("x" * 40_000,)),
        Subscription((), owned_partitions=(TopicPartition("t", 2**31),)),
        Subscription((), generation_id=-(2**31) - 1),
    ],
)
def test_values_that_do_not_fit_the_wire_are_refused(value: Subscription) -> None:
    with pytest.raises(InvalidProtocolMetadataError):
        encode_subscription(value)


@pytest.mark.parametrize("version", [-1, 4])
def test_unknown_versions_cannot_be_encoded(version: int) -> None:
    with pytest.raises(InvalidProtocolMetadataError):
        encode_subscription(Subscription(()), version)
    with pytest.raises(InvalidProtocolMetadataError):
        encode_assignment(Assignment(()), version)
