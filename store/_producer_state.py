"""Producer state of one partition: sequences, epochs, open transactions, aborts. Pure.

Theory of operation
-------------------
A batch with a producer id (>= 0) comes from an idempotent producer, which numbers the
records it sends to each partition: the batch carries the sequence of its first record
(``base_sequence``) and its records take the numbers that follow (wrapping from 2**31 - 1
to 0). The partition keeps, per producer id, the epoch, the last
:data:`MAX_CACHED_BATCHES` batches (first and last sequence, first and last offset), the
coordinator epoch of its last marker and the first offset of its open transaction. A
batch is then, in this order of checks (:meth:`ProducerStateManager.validate`):

* from an older epoch: :class:`InvalidProducerEpochError` -- a newer producer fenced it;
* from a newer epoch: the producer started over; its first sequence must be 0, else
  :class:`OutOfOrderSequenceError`;
* one of the cached batches again (same first and last sequence): a retry,
  :class:`DuplicateSequenceError` naming the original offsets; nothing is appended;
* the batch after the last one (or, after an epoch bump by a marker, sequence 0): accepted;
* anything else (a gap, an old batch no longer cached): :class:`OutOfOrderSequenceError`;
* a non-transactional batch while the producer's transaction is open:
  :class:`InvalidTxnStateError`.

A producer the partition has no state for (it never wrote here, or its state expired)
may start at any sequence, as Kafka allows.

Transactions. The first transactional batch of a producer opens its transaction at that
batch's base offset; a marker (see ``_control.py``) closes it: a commit makes its records
visible to read_committed readers, an abort adds ``(producer id, first offset, marker
offset)`` to the *aborted index* those readers use to skip its records. A marker from an
older producer epoch or an older coordinator epoch is refused.

The *last stable offset* (LSO) is the first offset of the earliest transaction that is
not yet decided -- open, or closed by a marker that is not yet below the high watermark
(a crash could still take the marker back) -- else the high watermark. read_committed
readers stop there.

Moving the log start past a transaction's first offset (deleting records, retention)
changes none of this, as in Kafka: the transaction stays open from its first offset, so
the LSO may lie below the log start until a marker ends it (read_committed readers get
nothing meanwhile), and an abort is indexed from that first offset, which hides the
transaction's records that remain. The snapshot taken at each roll keeps that first
offset through a reopen; rebuilt from the log alone, the transaction begins at its first
record still stored, which hides and shows the same records.

State unused for ``expiry_ms`` (Kafka's ``producer.id.expiration.ms``) is dropped, unless
its transaction is open. The state round-trips through bytes (:meth:`to_snapshot`,
:meth:`from_snapshot`); ``_producer_snapshots.py`` writes and reads the files and rebuilds
the rest from the log.

Checking and recording are split around the write (the log calls :meth:`validate`, writes
the batch, then :meth:`record`), both on the log's owner side. Nothing here does I/O.
"""

from __future__ import annotations

import struct
from bisect import bisect_left
from collections import deque
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import orjson
from crc32c import crc32c

from ._batch import BatchHeader
from ._control import ControlType, Marker
from ._errors import (
    CoordinatorFencedError,
    CorruptRecordError,
    DuplicateSequenceError,
    InvalidProducerEpochError,
    InvalidTxnStateError,
    OutOfOrderSequenceError,
)

MAX_CACHED_BATCHES = 5
"""Batches remembered per producer (Kafka's and clients' in-flight limit)."""

DEFAULT_EXPIRY_MS = 24 * 3600 * 1000
"""Kafka's ``producer.id.expiration.ms``: one day."""

_SEQUENCE_SPAN = 1 << 31
_SNAPSHOT_MAGIC = b"HWPS"
_SNAPSHOT_VERSION = 1
_SNAPSHOT_HEADER = struct.Struct(">4sBI")  # magic, version, CRC-32C of the payload


def last_sequence(base_sequence: int, last_offset_delta: int) -> int:
    """Return the sequence of a batch's last record, wrapping past 2**31 - 1 to 0."""
    return (base_sequence + last_offset_delta) % _SEQUENCE_SPAN


class AbortedTransaction(NamedTuple):
    """An aborted transaction: its records lie in ``[first_offset, last_offset]`` (the
    marker's offset) and carry ``producer_id``."""

    producer_id: int
    first_offset: int
    last_offset: int


class _Batch(NamedTuple):
    first_seq: int
    last_seq: int
    base_offset: int
    last_offset: int


@dataclass(slots=True)
class ProducerEntry:
    """What the partition remembers of one producer."""

    epoch: int
    last_used_ms: int
    coordinator_epoch: int = -1
    #: First offset of the producer's open transaction, -1 when none is open.
    txn_first_offset: int = -1
    #: A marker bumped the epoch: the next batch must start at sequence 0.
    expect_zero: bool = False
    batches: deque[_Batch] = field(default_factory=lambda: deque(maxlen=MAX_CACHED_BATCHES))


class ProducerStateManager:
    """The producer state of one partition (see the module docstring).

    :param expiry_ms: drop a producer's state after this long unused (by the log's clock).

    One owner: the partition's log.
    """

    def __init__(self, *, expiry_ms: int = DEFAULT_EXPIRY_MS) -> None:
        self.expiry_ms = expiry_ms
        self.producers: dict[int, ProducerEntry] = {}
        #: The offset the state covers up to (exclusive): the log end, once loaded.
        self.end_offset = 0
        #: Whether a transactional or control batch was ever seen (readers filter then).
        self.has_transactions = False
        self._ongoing: dict[int, int] = {}  # producer id -> first offset
        self._deciding: deque[tuple[int, int]] = deque()  # (first offset, marker offset)
        self._aborted: list[AbortedTransaction] = []
        self._aborted_last: list[int] = []  # last offsets, for bisect
        self._max_span = 0  # the longest aborted transaction, in offsets

    # -- appending -----------------------------------------------------------------------

    def validate(self, header: BatchHeader, marker: Marker | None = None) -> None:
        """Check a producer's batch (``marker``: a control batch's) before it is written.

        :raises ProducerStateError: one of the subclasses the module docstring lists.
        """
        entry = self.producers.get(header.producer_id)
        epoch = header.producer_epoch
        if marker is not None:
            if entry is None:
                return
            if epoch < entry.epoch:
                raise InvalidProducerEpochError(
                    f"marker epoch {epoch} is older than producer {header.producer_id}'s "
                    f"epoch {entry.epoch}"
                )
            if marker.coordinator_epoch < entry.coordinator_epoch:
                raise CoordinatorFencedError(
                    f"marker from coordinator epoch {marker.coordinator_epoch}, older than "
                    f"{entry.coordinator_epoch}"
                )
            return
        first_seq = header.base_sequence
        if first_seq < 0:
            raise CorruptRecordError(f"producer id {header.producer_id} without a base sequence")
        if entry is None:
            return
        if epoch < entry.epoch:
            raise InvalidProducerEpochError(
                f"producer {header.producer_id} epoch {epoch} is older than epoch "
                f"{entry.epoch}: a newer producer fenced it"
            )
        last_seq = last_sequence(first_seq, header.last_offset_delta)
        if epoch > entry.epoch:
            if first_seq != 0:
                raise OutOfOrderSequenceError(
                    f"producer {header.producer_id} began epoch {epoch} at sequence "
                    f"{first_seq}, not 0"
                )
        else:
            for batch in entry.batches:
                if batch.first_seq == first_seq and batch.last_seq == last_seq:
                    raise DuplicateSequenceError(
                        f"producer {header.producer_id} sequences {first_seq}-{last_seq} are "
                        f"already at offsets {batch.base_offset}-{batch.last_offset}",
                        base_offset=batch.base_offset,
                        last_offset=batch.last_offset,
                    )
            expected = (entry.batches[-1].last_seq + 1) % _SEQUENCE_SPAN if entry.batches else None
            if expected is None and entry.expect_zero:
                expected = 0
            if expected is not None and first_seq != expected:
                raise OutOfOrderSequenceError(
                    f"producer {header.producer_id} sent sequence {first_seq}, expected {expected}"
                )
        if not header.is_transactional and entry.txn_first_offset >= 0:
            raise InvalidTxnStateError(
                f"producer {header.producer_id} sent a non-transactional batch while its "
                f"transaction from offset {entry.txn_first_offset} is open"
            )

    def record(
        self, header: BatchHeader, base_offset: int, now_ms: int, marker: Marker | None = None
    ) -> None:
        """Record a producer's batch (validated, or recovered from the log) at ``base_offset``."""
        producer_id = header.producer_id
        epoch = header.producer_epoch
        next_offset = base_offset + header.last_offset_delta + 1
        entry = self.producers.get(producer_id)
        if entry is None:
            entry = self.producers[producer_id] = ProducerEntry(epoch, now_ms)
        entry.last_used_ms = max(entry.last_used_ms, now_ms)
        if marker is not None:
            self.has_transactions = True
            self._close_transaction(producer_id, entry, marker, base_offset)
            if epoch > entry.epoch:
                entry.epoch = epoch
                entry.batches.clear()
                entry.expect_zero = True
            entry.coordinator_epoch = marker.coordinator_epoch
        else:
            if epoch != entry.epoch:
                entry.epoch = epoch
                entry.batches.clear()
            entry.expect_zero = False
            last_seq = last_sequence(header.base_sequence, header.last_offset_delta)
            entry.batches.append(
                _Batch(header.base_sequence, last_seq, base_offset, next_offset - 1)
            )
            if header.is_transactional:
                self.has_transactions = True
                if entry.txn_first_offset < 0:
                    entry.txn_first_offset = base_offset
                    self._ongoing[producer_id] = base_offset
        self.end_offset = max(self.end_offset, next_offset)

    def _close_transaction(
        self, producer_id: int, entry: ProducerEntry, marker: Marker, offset: int
    ) -> None:
        first = entry.txn_first_offset
        if first < 0:
            return  # a marker for no open transaction (a retried EndTxn): nothing to undo
        entry.txn_first_offset = -1
        del self._ongoing[producer_id]
        self._deciding.append((first, offset))
        if marker.control_type is ControlType.ABORT:
            self._aborted.append(AbortedTransaction(producer_id, first, offset))
            self._aborted_last.append(offset)
            self._max_span = max(self._max_span, offset - first)

    # -- reading -------------------------------------------------------------------------

    def ongoing(self) -> dict[int, int]:
        """Return the open transactions: producer id -> first offset."""
        return dict(self._ongoing)

    def last_stable_offset(self, high_watermark: int) -> int:
        """Return the LSO under ``high_watermark`` (which must never go backwards)."""
        deciding = self._deciding
        while deciding and deciding[0][1] < high_watermark:
            deciding.popleft()
        lso = high_watermark
        if self._ongoing:
            lso = min(lso, *self._ongoing.values())
        for first, _marker in deciding:
            lso = min(lso, first)
        return lso

    def first_unstable_offset(self) -> int | None:
        """Return the first offset of the earliest undecided transaction (open, or closed
        by a marker that may not be durable yet), or ``None``. Reads only."""
        firsts = [*self._ongoing.values(), *(first for first, _ in self._deciding)]
        return min(firsts, default=None)

    def aborted_transactions(self, start_offset: int, end_offset: int) -> list[AbortedTransaction]:
        """Return the aborted transactions with records in ``[start_offset, end_offset)``,
        in the order their markers were written."""
        found = []
        limit = end_offset + self._max_span
        for i in range(bisect_left(self._aborted_last, start_offset), len(self._aborted)):
            txn = self._aborted[i]
            if txn.last_offset > limit:
                break  # every later one began at or past end_offset
            if txn.first_offset < end_offset:
                found.append(txn)
        return found

    # -- housekeeping --------------------------------------------------------------------

    def expire(self, now_ms: int) -> None:
        """Drop producers unused for ``expiry_ms`` whose transaction is not open."""
        stale = [
            pid
            for pid, entry in self.producers.items()
            if entry.txn_first_offset < 0 and now_ms - entry.last_used_ms >= self.expiry_ms
        ]
        for pid in stale:
            del self.producers[pid]

    def truncate_head(self, log_start_offset: int) -> None:
        """Forget aborted transactions that ended before ``log_start_offset``."""
        cut = bisect_left(self._aborted_last, log_start_offset)
        if cut:
            del self._aborted[:cut]
            del self._aborted_last[:cut]

    # -- snapshots -----------------------------------------------------------------------

    def to_snapshot(self) -> bytes:
        """Return the state as bytes (a checksummed JSON document); nothing in flight is
        included, so take it when everything up to ``end_offset`` is durable."""
        payload = orjson.dumps(
            {
                "end_offset": self.end_offset,
                "has_transactions": self.has_transactions,
                "producers": [
                    [
                        pid,
                        e.epoch,
                        e.last_used_ms,
                        e.coordinator_epoch,
                        e.txn_first_offset,
                        e.expect_zero,
                        [list(b) for b in e.batches],
                    ]
                    for pid, e in self.producers.items()
                ],
                "aborted": [list(t) for t in self._aborted],
            }
        )
        return _SNAPSHOT_HEADER.pack(_SNAPSHOT_MAGIC, _SNAPSHOT_VERSION, crc32c(payload)) + payload

    @classmethod
    def from_snapshot(
        cls, data: bytes, *, expiry_ms: int = DEFAULT_EXPIRY_MS
    ) -> ProducerStateManager:
        """Rebuild the state :meth:`to_snapshot` wrote.

        :raises ValueError: if ``data`` is not an intact snapshot of a known version.
        """
        if len(data) < _SNAPSHOT_HEADER.size:
            raise ValueError("snapshot shorter than its header")
        magic, version, crc = _SNAPSHOT_HEADER.unpack_from(data)
        payload = data[_SNAPSHOT_HEADER.size :]
        if magic != _SNAPSHOT_MAGIC or version != _SNAPSHOT_VERSION:
            raise ValueError(f"not a producer snapshot of version {_SNAPSHOT_VERSION}")
        if crc32c(payload) != crc:
            raise ValueError("snapshot fails its CRC-32C")
        try:
            doc: dict[str, Any] = orjson.loads(payload)
            state = cls(expiry_ms=expiry_ms)
            state.end_offset = int(doc["end_offset"])
            state.has_transactions = bool(doc["has_transactions"])
            for pid, epoch, used, coord, txn_first, zero, batches in doc["producers"]:
                entry = ProducerEntry(int(epoch), int(used), int(coord), int(txn_first), bool(zero))
                entry.batches.extend(_Batch(*map(int, b)) for b in batches)
                state.producers[int(pid)] = entry
                if entry.txn_first_offset >= 0:
                    state._ongoing[int(pid)] = entry.txn_first_offset
            for pid, first, last in doc["aborted"]:
                state._aborted.append(AbortedTransaction(int(pid), int(first), int(last)))
                state._aborted_last.append(int(last))
                state._max_span = max(state._max_span, int(last) - int(first))
        except (KeyError, TypeError, ValueError, orjson.JSONDecodeError) as exc:
            raise ValueError(f"malformed snapshot: {exc}") from exc
        return state
