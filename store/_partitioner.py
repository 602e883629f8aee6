"""Choosing a partition for a record: Kafka's murmur2 for keys, sticky batches without.

Theory of operation
-------------------

A keyed record must land where a Java producer would put it, so that a topic written by
headwater and by Kafka clients keeps each key in one partition. Kafka's default
partitioner computes ``toPositive(murmur2(key)) % num_partitions``, where ``murmur2`` is
``org.apache.kafka.common.utils.Utils.murmur2`` (MurmurHash2, seed ``0x9747b28c``, words
read little-endian, a signed 32-bit result) and ``toPositive`` clears the sign bit rather
than taking an absolute value. :func:`murmur2` and :func:`partition_for_key` reproduce
both bit for bit.

Records without a key have no place to be; spreading them one by one would make many
small batches. Kafka's sticky partitioner (KIP-480) instead sends every unkeyed record of
a topic to one randomly chosen partition until the batch being filled there is complete,
then moves to another partition. :class:`StickyPartitioner` is that choice as a pure
object: the producer tells it when a batch is complete; randomness is injected so tests
are deterministic.

murmur2 runs once per keyed record (:func:`partition_rows` sorts a batch's keys into
partitions in one C loop). Its C build (``store/_speedups.c``) is used when it
was compiled; the Python version here, the reference the tests hold it to, is written for
CPython's speed: words are unpacked by one precompiled ``struct`` call, masks are applied
only where a shift or the result needs the low 32 bits (a product's low bits do not
depend on higher ones), and constants are literals.
"""

from __future__ import annotations

import random
import struct
from collections.abc import Callable, Sequence

__all__ = ["StickyPartitioner", "murmur2", "partition_for_key", "partition_rows"]

# One unpacker per word count for keys up to 255 bytes: building a format per call would
# cost as much as hashing a short key.
_UNPACK_WORDS: tuple[Callable[[bytes], tuple[int, ...]], ...] = tuple(
    struct.Struct(f"<{n}I").unpack_from for n in range(64)
)


def _murmur2(data: bytes) -> int:
    """Hash bytes exactly as Kafka's Java client ``Utils.murmur2`` does.

    :param data: the serialized key.
    :returns: the hash as a signed 32-bit integer, equal to Java's ``int`` result.
    """
    # Constants: m = 0x5BD1E995, r = 24, seed = 0x9747B28C (Kafka's choice).
    length = len(data)
    h = 0x9747B28C ^ length
    words = length >> 2
    unpack = _UNPACK_WORDS[words] if words < 64 else struct.Struct(f"<{words}I").unpack_from
    for k in unpack(data):
        k = (k * 0x5BD1E995) & 0xFFFFFFFF
        h = ((h * 0x5BD1E995) ^ ((k ^ (k >> 24)) * 0x5BD1E995)) & 0xFFFFFFFF
    tail = length & 3
    if tail:
        end = length - tail
        if tail == 3:
            h ^= data[end + 2] << 16 | data[end + 1] << 8 | data[end]
        elif tail == 2:
            h ^= data[end + 1] << 8 | data[end]
        else:
            h ^= data[end]
        h = (h * 0x5BD1E995) & 0xFFFFFFFF
    h = ((h ^ (h >> 13)) * 0x5BD1E995) & 0xFFFFFFFF
    h ^= h >> 15
    # Reinterpret as a signed 32-bit int, as Java holds it.
    return h - ((h & 0x80000000) << 1)


murmur2: Callable[[bytes], int]
try:  # the C build of the same functions (store/_speedups.c), when it was compiled
    from ._speedups import murmur2
    from ._speedups import partition_rows as _partition_rows
except ImportError:  # pragma: no cover - installed without a C compiler
    murmur2 = _murmur2
    _partition_rows = None  # type: ignore[assignment]


def partition_for_key(key: bytes, num_partitions: int) -> int:
    """Return the partition Kafka's default partitioner picks for ``key``.

    :param key: the serialized key.
    :param num_partitions: how many partitions the topic has.
    :returns: a partition in ``range(num_partitions)``.
    :raises ValueError: if ``num_partitions`` is less than 1 (a programmer error: topic
        configs guarantee at least one partition).
    """
    if num_partitions < 1:
        raise ValueError(f"num_partitions must be at least 1, got {num_partitions}")
    return (murmur2(key) & 0x7FFFFFFF) % num_partitions


def partition_rows(
    keys: Sequence[bytes | None], num_partitions: int, default: int
) -> dict[int, list[int]]:
    """Return the indexes of ``keys`` by the partition :func:`partition_for_key` picks for
    each (``default`` for a ``None`` key): each partition's in order, the partitions in
    the order first met. One C loop where the C build is present and the keys are a list
    of ``bytes``.

    :raises ValueError: if ``num_partitions`` is less than 1.
    """
    if num_partitions < 1:
        raise ValueError(f"num_partitions must be at least 1, got {num_partitions}")
    if _partition_rows is not None:
        found = _partition_rows(keys, num_partitions, default)
        if found is not None:
            return found
    rows: dict[int, list[int]] = {}
    for i, key in enumerate(keys):
        partition = default if key is None else partition_for_key(key, num_partitions)
        rows.setdefault(partition, []).append(i)
    return rows


class StickyPartitioner:
    """Choose partitions for unkeyed records: one partition per batch, as Kafka's producer does.

    Each topic has a current partition, chosen at random on first use. :meth:`partition`
    returns it until the producer reports, through :meth:`batch_complete`, that the batch
    it was filling there is complete; the next partition is then chosen at random among
    the others. When the producer knows which partitions are available (their leader is
    reachable) it passes them, and new choices are made among those.

    Not thread-safe: use one instance per producer task.

    :param rng: the source of randomness; pass a seeded :class:`random.Random` for
        reproducible choices.
    """

    __slots__ = ("_current", "_rng")

    def __init__(self, rng: random.Random | None = None) -> None:
        self._rng = rng if rng is not None else random.Random()
        self._current: dict[str, int] = {}

    def partition(
        self, topic: str, num_partitions: int, available: Sequence[int] | None = None
    ) -> int:
        """Return the partition the next unkeyed record of ``topic`` goes to.

        :param topic: the topic name.
        :param num_partitions: how many partitions the topic has.
        :param available: the partitions that can take records now; all of them when
            ``None`` or empty.
        :raises ValueError: if ``num_partitions`` is less than 1.
        """
        current = self._current.get(topic)
        if current is not None and current < num_partitions:
            return current
        _check_count(num_partitions)
        chosen = self._choose(num_partitions, available, avoid=None)
        self._current[topic] = chosen
        return chosen

    def batch_complete(
        self,
        topic: str,
        partition: int,
        num_partitions: int,
        available: Sequence[int] | None = None,
    ) -> int:
        """Record that the batch being filled for ``partition`` of ``topic`` is complete.

        If ``partition`` is the topic's current one, another partition is chosen (the
        same one only when it is the only candidate). If the current partition has
        already moved on (a late report for an earlier batch), nothing changes, so one
        batch never causes two moves.

        :returns: the partition the next unkeyed record of ``topic`` goes to.
        :raises ValueError: if ``num_partitions`` is less than 1.
        """
        _check_count(num_partitions)
        current = self._current.get(topic)
        if current is not None and current != partition and current < num_partitions:
            return current
        chosen = self._choose(num_partitions, available, avoid=partition)
        self._current[topic] = chosen
        return chosen

    def _choose(
        self, num_partitions: int, available: Sequence[int] | None, avoid: int | None
    ) -> int:
        candidates: Sequence[int] = available if available else range(num_partitions)
        if len(candidates) > 1 and avoid in candidates:
            # One draw over the others, rather than Kafka's redraw-until-different loop:
            # the same distribution, and a fixed number of draws per call.
            index = self._rng.randrange(len(candidates) - 1)
            if candidates[index] == avoid:
                index = len(candidates) - 1
            return candidates[index]
        return candidates[self._rng.randrange(len(candidates))]


def _check_count(num_partitions: int) -> None:
    if num_partitions < 1:
        raise ValueError(f"num_partitions must be at least 1, got {num_partitions}")
