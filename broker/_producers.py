"""Idempotent producers: producer ids, epochs and sequence checks per partition. Pure.

Theory of operation
-------------------
An idempotent producer gets a producer id and an epoch from InitProducerId and numbers
the records it sends to each partition: a batch carries the sequence number of its first
record (``base_sequence``), and its records take the numbers that follow (wrapping from
2**31 - 1 to 0). The broker keeps, per (topic, partition, producer id), the producer's
epoch and its last :data:`MAX_CACHED_BATCHES` batches (first and last sequence, base
offset). A batch is then, in this order of checks:

* from an older epoch: ``INVALID_PRODUCER_EPOCH`` (47) -- a newer producer fenced it;
* from a newer epoch: the producer started over; its first sequence must be 0, else
  ``OUT_OF_ORDER_SEQUENCE_NUMBER`` (45);
* one of the cached batches again (same first and last sequence): a retry of a batch
  already appended, answered ``DUPLICATE_SEQUENCE_NUMBER`` (46) with the original base
  offset -- clients count that as delivered -- and appended no second time;
* the batch after the last one: appended;
* anything else (a gap, or an old batch no longer cached): ``OUT_OF_ORDER...`` (45).

A producer the partition has no state for (it never wrote there, or the broker restarted
and the state, kept in memory only, is gone) may start at any sequence, as Kafka allows
when it has no entry for a producer.

Checking and recording are split around the append (:meth:`ProducerStates.check` reserves
the batch's place before the append is awaited; :meth:`complete` fills in its offset and
:meth:`abort` takes it back when the append fails), so a batch that follows a batch still
being appended is judged against it. State unused for ``expiry_ms`` is dropped, as Kafka
expires producer ids after ``producer.id.expiration.ms``.

Nothing here does I/O or reads a clock of its own: the clock is injected. One task (the
broker's event loop) owns an instance.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NamedTuple

from ._protocol import KafkaErrorCode

MAX_CACHED_BATCHES = 5
"""Batches remembered per producer and partition (Kafka's and clients' in-flight limit)."""

DEFAULT_EXPIRY_MS = 24 * 3600 * 1000
"""Kafka's ``producer.id.expiration.ms``: one day."""

MAX_EPOCH = 0x7FFF
_SEQUENCE_SPAN = 1 << 31
_PRUNE_INTERVAL_MS = 60_000


class SequenceCheck(NamedTuple):
    """The verdict on one batch: ``NONE`` to append it, else the error to answer.

    ``base_offset`` is the original batch's offset for a ``DUPLICATE_SEQUENCE_NUMBER``
    (-1 while that batch's append is still under way).
    """

    error: KafkaErrorCode
    base_offset: int = -1


def last_sequence(base_sequence: int, last_offset_delta: int) -> int:
    """Return the sequence of a batch's last record, wrapping past 2**31 - 1 to 0."""
    return (base_sequence + last_offset_delta) % _SEQUENCE_SPAN


def _follows(last_seq: int, first_seq: int) -> bool:
    return first_seq == (last_seq + 1) % _SEQUENCE_SPAN


@dataclass(slots=True)
class _Batch:
    first_seq: int
    last_seq: int
    base_offset: int  # -1 while the append is under way


@dataclass(slots=True)
class _Entry:
    epoch: int
    used_ms: int
    batches: deque[_Batch] = field(default_factory=lambda: deque(maxlen=MAX_CACHED_BATCHES))


_Key = tuple[str, int, int]  # topic, partition, producer id


class ProducerStates:
    """Producer ids handed out, and the sequence state of every (producer, partition).

    :param clock: returns wall-clock milliseconds (for expiry only).
    :param first_producer_id: the first id :meth:`new_producer` gives out; pick one that
        a previous run of the broker cannot have given (the server derives it from the
        clock at start-up).
    :param expiry_ms: drop a producer's state on a partition after this long unused.

    Not thread-safe: one task owns it.
    """

    def __init__(
        self,
        *,
        clock: Callable[[], int],
        first_producer_id: int,
        expiry_ms: int = DEFAULT_EXPIRY_MS,
    ) -> None:
        assert first_producer_id >= 0
        self._clock = clock
        self._next_id = first_producer_id
        self._expiry_ms = expiry_ms
        self._entries: dict[_Key, _Entry] = {}
        self._pruned_ms = clock()

    def __len__(self) -> int:
        """Return how many (topic, partition, producer) states are kept."""
        return len(self._entries)

    def new_producer(self) -> tuple[int, int]:
        """Return a fresh (producer id, epoch) for InitProducerId."""
        self._prune()
        producer_id = self._next_id
        self._next_id += 1
        return producer_id, 0

    def check(
        self,
        topic: str,
        partition: int,
        *,
        producer_id: int,
        epoch: int,
        first_seq: int,
        last_seq: int,
    ) -> SequenceCheck:
        """Judge one batch (see the module docstring); on ``NONE``, reserve its place.

        After a ``NONE`` verdict the caller must call :meth:`complete` once the batch is
        appended, or :meth:`abort` if the append fails.
        """
        now = self._clock()
        if now - self._pruned_ms >= _PRUNE_INTERVAL_MS:
            self._prune()
        key = (topic, partition, producer_id)
        entry = self._entries.get(key)
        if entry is None:
            entry = self._entries[key] = _Entry(epoch, now)
        elif epoch < entry.epoch:
            return SequenceCheck(KafkaErrorCode.INVALID_PRODUCER_EPOCH)
        elif epoch > entry.epoch:
            if first_seq != 0:
                return SequenceCheck(KafkaErrorCode.OUT_OF_ORDER_SEQUENCE_NUMBER)
            entry.epoch = epoch
            entry.batches.clear()
        else:
            for batch in entry.batches:
                if batch.first_seq == first_seq and batch.last_seq == last_seq:
                    entry.used_ms = now
                    return SequenceCheck(
                        KafkaErrorCode.DUPLICATE_SEQUENCE_NUMBER, batch.base_offset
                    )
            if entry.batches and not _follows(entry.batches[-1].last_seq, first_seq):
                return SequenceCheck(KafkaErrorCode.OUT_OF_ORDER_SEQUENCE_NUMBER)
        entry.used_ms = now
        entry.batches.append(_Batch(first_seq, last_seq, -1))
        return SequenceCheck(KafkaErrorCode.NONE)

    def complete(
        self, topic: str, partition: int, producer_id: int, first_seq: int, base_offset: int
    ) -> None:
        """Record where a batch that :meth:`check` accepted was appended."""
        batch = self._find(topic, partition, producer_id, first_seq)
        if batch is not None:
            batch.base_offset = base_offset

    def abort(self, topic: str, partition: int, producer_id: int, first_seq: int) -> None:
        """Take back the place :meth:`check` reserved for a batch whose append failed."""
        key = (topic, partition, producer_id)
        entry = self._entries.get(key)
        batch = self._find(topic, partition, producer_id, first_seq)
        if entry is None or batch is None:
            return
        entry.batches.remove(batch)
        if not entry.batches:
            del self._entries[key]

    def forget_topic(self, topic: str) -> None:
        """Drop every state kept for ``topic`` (it was deleted)."""
        for key in [key for key in self._entries if key[0] == topic]:
            del self._entries[key]

    def _find(self, topic: str, partition: int, producer_id: int, first_seq: int) -> _Batch | None:
        entry = self._entries.get((topic, partition, producer_id))
        if entry is None:
            return None
        for batch in reversed(entry.batches):
            if batch.first_seq == first_seq:
                return batch
        return None

    def _prune(self) -> None:
        now = self._clock()
        self._pruned_ms = now
        stale = [k for k, e in self._entries.items() if now - e.used_ms >= self._expiry_ms]
        for key in stale:
            del self._entries[key]
