"""Tests for store/_partitioner.py: Kafka's murmur2, key partitioning, sticky batches."""

from __future__ import annotations

import random
import warnings
from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

from headwater.store._partitioner import (
    StickyPartitioner,
    _murmur2,
    murmur2,
    partition_for_key,
    partition_rows,
)

with warnings.catch_warnings():
    # Importing kafka-python loads its protocol schemas with a deprecated importlib API.
    warnings.simplefilter("ignore", DeprecationWarning)
    from kafka.partitioner.default import murmur2 as kafka_python_murmur2


def reference_murmur2(data: bytes) -> int:
    """kafka-python's murmur2, as the signed int Java's Utils.murmur2 returns."""
    h: int = kafka_python_murmur2(data)
    return h - (1 << 32) if h >= 1 << 31 else h


# From Kafka's UtilsTest.testMurmur2 (clients/src/test/java/.../common/utils/UtilsTest.java).
KAFKA_KNOWN_ANSWERS = [
    ("21", -973932308),
    ("foobar", -790332482),
    ("a-little-bit-long-string", -985981536),
    ("a-little-bit-longer-string", -1486304829),
    ("lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8", -58897971),
    ("abc", 479470107),
]


@pytest.mark.parametrize(("text", "expected"), KAFKA_KNOWN_ANSWERS)
def test_murmur2_matches_kafka_java_known_answers(text: str, expected: int) -> None:
    data = text.encode()
    assert murmur2(data) == expected
    assert _murmur2(data) == expected  # the Python build, where no C compiler was found
    assert reference_murmur2(data) == expected  # the oracle agrees with Java too


def test_murmur2_of_empty_input() -> None:
    assert murmur2(b"") == _murmur2(b"") == reference_murmur2(b"")


@given(st.binary(max_size=600))  # past 255 bytes the uncached unpack path runs
def test_murmur2_equals_kafka_python(data: bytes) -> None:
    assert murmur2(data) == _murmur2(data) == reference_murmur2(data)


@given(st.binary(max_size=40))
def test_murmur2_is_a_signed_32_bit_int(data: bytes) -> None:
    assert -(1 << 31) <= murmur2(data) < 1 << 31


def test_murmur2_accepts_every_length_mod_4() -> None:
    data = bytes(range(256)) * 2
    for length in range(len(data) + 1):
        expected = reference_murmur2(data[:length])
        assert murmur2(data[:length]) == _murmur2(data[:length]) == expected, length


def test_murmur2_takes_any_bytes_like_object() -> None:
    assert murmur2(bytearray(b"foobar")) == murmur2(memoryview(b"foobar")) == -790332482


@given(st.binary(max_size=64), st.integers(1, 10_000))
def test_partition_for_key_is_kafkas_formula(key: bytes, num_partitions: int) -> None:
    # Kafka: Utils.toPositive(Utils.murmur2(key)) % numPartitions.
    expected = (kafka_python_murmur2(key) & 0x7FFFFFFF) % num_partitions
    assert partition_for_key(key, num_partitions) == expected


def test_partition_for_key_clears_the_sign_bit_rather_than_taking_abs() -> None:
    key = b"foobar"  # murmur2 is negative: -790332482
    assert partition_for_key(key, 1000) == (-790332482 & 0x7FFFFFFF) % 1000
    assert partition_for_key(key, 1000) != abs(-790332482) % 1000


def test_partition_for_key_single_partition() -> None:
    assert {partition_for_key(bytes([i]), 1) for i in range(256)} == {0}


@pytest.mark.parametrize("num_partitions", [0, -1])
def test_partition_for_key_rejects_no_partitions(num_partitions: int) -> None:
    with pytest.raises(ValueError, match="num_partitions"):
        partition_for_key(b"k", num_partitions)


@given(
    st.lists(st.none() | st.binary(max_size=40), max_size=50),
    st.integers(min_value=1, max_value=4096),
    st.data(),
)
def test_partition_rows_sorts_each_key_where_partition_for_key_puts_it(
    keys: list[bytes | None], num_partitions: int, data: st.DataObject
) -> None:
    default = data.draw(st.integers(0, num_partitions - 1))
    # Against the Python murmur2, so the C loop is checked against the reference.
    expected: dict[int, list[int]] = {}
    for i, k in enumerate(keys):
        p = default if k is None else (_murmur2(k) & 0x7FFFFFFF) % num_partitions
        expected.setdefault(p, []).append(i)
    found = partition_rows(keys, num_partitions, default)
    assert found == expected
    assert list(found) == list(expected)  # partitions in the order first met
    # Not a list of bytes (a tuple, bytearray keys): key by key, with the same answer.
    assert partition_rows(tuple(keys), num_partitions, default) == expected
    mixed = [bytearray(k) if k is not None else None for k in keys]
    assert partition_rows(mixed, num_partitions, default) == expected  # type: ignore[arg-type]


def test_partition_rows_rejects_no_partitions() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        partition_rows([b"a"], 0, 0)


def test_keys_spread_evenly_over_partitions() -> None:
    num_partitions = 12
    keys = 12_000
    counts = Counter(partition_for_key(f"user-{i}".encode(), num_partitions) for i in range(keys))
    assert set(counts) == set(range(num_partitions))
    mean = keys / num_partitions
    assert all(abs(count - mean) < 0.1 * mean for count in counts.values()), counts


# StickyPartitioner


def test_sticky_keeps_one_partition_until_the_batch_is_complete() -> None:
    sticky = StickyPartitioner(random.Random(1))
    first = sticky.partition("t", 8)
    assert all(sticky.partition("t", 8) == first for _ in range(100))
    second = sticky.batch_complete("t", first, 8)
    assert second != first
    assert all(sticky.partition("t", 8) == second for _ in range(100))


def test_sticky_ignores_a_late_report_for_an_earlier_batch() -> None:
    sticky = StickyPartitioner(random.Random(2))
    first = sticky.partition("t", 8)
    second = sticky.batch_complete("t", first, 8)
    # A second report about `first` must not move the topic off `second`.
    assert sticky.batch_complete("t", first, 8) == second
    assert sticky.partition("t", 8) == second


def test_sticky_with_one_partition_stays_on_it() -> None:
    sticky = StickyPartitioner(random.Random(3))
    assert sticky.partition("t", 1) == 0
    assert sticky.batch_complete("t", 0, 1) == 0
    assert sticky.partition("t", 1) == 0


def test_sticky_topics_are_independent() -> None:
    sticky = StickyPartitioner(random.Random(4))
    a = sticky.partition("a", 100)
    b = sticky.partition("b", 100)
    sticky.batch_complete("b", b, 100)
    assert sticky.partition("a", 100) == a


def test_sticky_is_deterministic_with_a_seeded_rng() -> None:
    def run(seed: int) -> list[int]:
        sticky = StickyPartitioner(random.Random(seed))
        chosen = [sticky.partition("t", 16)]
        for _ in range(50):
            chosen.append(sticky.batch_complete("t", chosen[-1], 16))
        return chosen

    assert run(7) == run(7)
    assert run(7) != run(8)


def test_sticky_moves_uniformly_to_the_other_partitions() -> None:
    sticky = StickyPartitioner(random.Random(5))
    num_partitions = 5
    current = sticky.partition("t", num_partitions)
    moves: Counter[tuple[int, int]] = Counter()
    for _ in range(10_000):
        following = sticky.batch_complete("t", current, num_partitions)
        assert following != current
        moves[current, following] += 1
        current = following
    # Every move to another partition happens, none back to the same one, all about as often.
    assert len(moves) == num_partitions * (num_partitions - 1)
    mean = 10_000 / len(moves)
    assert all(abs(count - mean) < 0.3 * mean for count in moves.values()), moves


def test_sticky_chooses_among_available_partitions() -> None:
    sticky = StickyPartitioner(random.Random(6))
    available = [2, 5]
    current = sticky.partition("t", 8, available)
    assert current in available
    for _ in range(20):
        following = sticky.batch_complete("t", current, 8, available)
        assert following in available
        assert following != current
        current = following


def test_sticky_with_one_available_partition_uses_it() -> None:
    sticky = StickyPartitioner(random.Random(7))
    current = sticky.partition("t", 8, [3])
    assert current == 3
    assert sticky.batch_complete("t", 3, 8, [3]) == 3


def test_sticky_leaves_a_partition_that_became_unavailable() -> None:
    sticky = StickyPartitioner(random.Random(8))
    current = sticky.partition("t", 8)
    others = [p for p in range(8) if p != current]
    assert sticky.batch_complete("t", current, 8, others) in others


def test_sticky_rechooses_when_the_partition_count_shrinks() -> None:
    sticky = StickyPartitioner(random.Random(9))
    current = sticky.partition("t", 1000)
    while current < 10:  # make sure the current partition is out of the smaller range
        current = sticky.batch_complete("t", current, 1000)
    assert sticky.partition("t", 10) in range(10)


@pytest.mark.parametrize("num_partitions", [0, -3])
def test_sticky_rejects_no_partitions(num_partitions: int) -> None:
    sticky = StickyPartitioner(random.Random(10))
    with pytest.raises(ValueError, match="num_partitions"):
        sticky.partition("t", num_partitions)
    with pytest.raises(ValueError, match="num_partitions"):
        sticky.batch_complete("t", 0, num_partitions)


def test_sticky_default_rng() -> None:
    sticky = StickyPartitioner()
    assert sticky.partition("t", 4) in range(4)
