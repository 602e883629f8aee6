"""The producer state of a partition (store/_producer_state.py): pure, batch headers only."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from headwater.store import (
    AbortedTransaction,
    BatchHeader,
    ControlType,
    CoordinatorFencedError,
    DuplicateSequenceError,
    InvalidProducerEpochError,
    InvalidTxnStateError,
    OutOfOrderSequenceError,
    ProducerStateError,
)
from headwater.store._batch import CONTROL_BIT, TRANSACTIONAL_BIT
from headwater.store._control import Marker
from headwater.store._producer_state import (
    MAX_CACHED_BATCHES,
    ProducerStateManager,
    last_sequence,
)

MAX_SEQ = 2**31 - 1
PID = 100


def header(
    first_seq: int,
    count: int,
    *,
    epoch: int = 0,
    pid: int = PID,
    transactional: bool = False,
    control: bool = False,
) -> BatchHeader:
    attributes = (TRANSACTIONAL_BIT if transactional or control else 0) | (
        CONTROL_BIT if control else 0
    )
    return BatchHeader(0, 100, -1, 2, 0, attributes, count - 1, 0, 0, pid, epoch, first_seq, count)


class Log:
    """A partition's producer state and the offsets its batches would take."""

    def __init__(self) -> None:
        self.state = ProducerStateManager(expiry_ms=1000)
        self.end = 0

    def append(self, first: int, count: int, *, now: int = 0, **kw: object) -> int:
        h = header(first, count, **kw)  # type: ignore[arg-type]
        self.state.validate(h)
        base = self.end
        self.state.record(h, base, now)
        self.end += count
        return base

    def marker(
        self, kind: ControlType, *, epoch: int = 0, pid: int = PID, coordinator: int = 0
    ) -> int:
        h = header(-1, 1, epoch=epoch, pid=pid, control=True)
        m = Marker(kind, coordinator)
        self.state.validate(h, m)
        base = self.end
        self.state.record(h, base, 0, m)
        self.end += 1
        return base


def test_in_order_batches_duplicates_and_gaps() -> None:
    log = Log()
    assert log.append(0, 5) == 0
    assert log.append(5, 2) == 5
    with pytest.raises(DuplicateSequenceError) as dup:
        log.append(0, 5)
    assert (dup.value.base_offset, dup.value.last_offset) == (0, 4)
    with pytest.raises(DuplicateSequenceError) as dup:
        log.append(5, 2)
    assert (dup.value.base_offset, dup.value.last_offset) == (5, 6)
    with pytest.raises(OutOfOrderSequenceError):
        log.append(8, 1)  # 7 is missing
    with pytest.raises(OutOfOrderSequenceError):
        log.append(5, 3)  # overlaps, not a retry
    assert log.append(7, 1) == 7


def test_only_the_last_five_batches_are_remembered() -> None:
    log = Log()
    for i in range(MAX_CACHED_BATCHES + 1):
        log.append(i, 1)
    with pytest.raises(OutOfOrderSequenceError):
        log.append(0, 1)  # forgotten
    with pytest.raises(DuplicateSequenceError):
        log.append(1, 1)


def test_epochs_fence_old_producers_and_restart_sequences() -> None:
    log = Log()
    log.append(0, 3)
    with pytest.raises(OutOfOrderSequenceError):
        log.append(3, 1, epoch=1)
    log.append(0, 1, epoch=1)
    with pytest.raises(InvalidProducerEpochError):
        log.append(3, 1, epoch=0)
    log.append(1, 1, epoch=1)


def test_a_producer_the_partition_does_not_know_may_start_anywhere() -> None:
    log = Log()
    log.append(12345, 2)
    log.append(12347, 1)


def test_sequences_wrap_past_int32_max() -> None:
    log = Log()
    log.append(MAX_SEQ - 1, 2)
    assert last_sequence(MAX_SEQ - 1, 3) == 1
    log.append(0, 4)


def test_state_expires_unless_a_transaction_is_open() -> None:
    log = Log()
    log.append(0, 1, now=0)
    log.append(0, 1, pid=7, now=0, transactional=True)
    log.state.expire(999)
    assert set(log.state.producers) == {PID, 7}
    log.state.expire(1000)
    assert set(log.state.producers) == {7}
    log.append(5, 1)  # forgotten: may start anywhere again


def test_transactions_open_close_and_move_the_last_stable_offset() -> None:
    log = Log()
    log.append(0, 2)  # plain, offsets 0-1
    first = log.append(0, 3, pid=7, transactional=True)  # 2-4
    log.append(0, 1, pid=8, transactional=True)  # 5
    log.append(3, 2, pid=7, transactional=True)  # 6-7
    assert log.state.ongoing() == {7: first, 8: 5}
    assert log.state.last_stable_offset(8) == 2
    commit = log.marker(ControlType.COMMIT, pid=7)  # 8
    # Decided, but the marker is not below the high watermark yet.
    assert log.state.last_stable_offset(8) == 2
    assert log.state.last_stable_offset(9) == 5
    abort = log.marker(ControlType.ABORT, pid=8)  # 9
    assert log.state.last_stable_offset(10) == 10
    assert log.state.aborted_transactions(0, 10) == [AbortedTransaction(8, 5, abort)]
    assert log.state.aborted_transactions(6, 10) == [AbortedTransaction(8, 5, abort)]
    assert log.state.aborted_transactions(0, 5) == []
    assert log.state.aborted_transactions(10, 20) == []
    assert commit == 8


def test_transactional_checks() -> None:
    log = Log()
    log.append(0, 1, transactional=True)
    with pytest.raises(InvalidTxnStateError):
        log.append(1, 1)  # a plain batch inside the producer's transaction
    log.marker(ControlType.COMMIT, coordinator=3)
    with pytest.raises(CoordinatorFencedError):
        log.marker(ControlType.ABORT, coordinator=2)
    log.marker(ControlType.ABORT, epoch=1, coordinator=3)  # an epoch bump by the coordinator
    with pytest.raises(InvalidProducerEpochError):
        log.marker(ControlType.ABORT, epoch=0, coordinator=3)
    with pytest.raises(InvalidProducerEpochError):
        log.append(1, 1, epoch=0)
    with pytest.raises(OutOfOrderSequenceError):
        log.append(1, 1, epoch=1)  # the bumped epoch starts over at 0
    log.append(0, 1, epoch=1)


def test_snapshots_round_trip_and_refuse_damage() -> None:
    log = Log()
    log.append(0, 2)
    log.append(0, 1, pid=7, transactional=True)
    log.marker(ControlType.ABORT, pid=7, coordinator=4)
    log.append(1, 1, pid=7, transactional=True)
    log.state.end_offset = log.end
    data = log.state.to_snapshot()
    copy = ProducerStateManager.from_snapshot(data)
    assert copy.to_snapshot() == data
    assert copy.ongoing() == {7: 4}
    assert copy.aborted_transactions(0, 10) == log.state.aborted_transactions(0, 10)
    with pytest.raises(DuplicateSequenceError):
        copy.validate(header(0, 2))
    for cut in range(len(data)):
        with pytest.raises(ValueError):
            ProducerStateManager.from_snapshot(data[:cut])
    flipped = bytearray(data)
    flipped[-3] ^= 1
    with pytest.raises(ValueError):
        ProducerStateManager.from_snapshot(bytes(flipped))


@given(st.lists(st.tuples(st.integers(0, 3), st.integers(1, 3)), max_size=40))
def test_matches_a_model_of_one_producer(steps: list[tuple[int, int]]) -> None:
    """Against a model: accepted batches are exactly those that continue the sequence."""
    log = Log()
    next_seq: int | None = None
    accepted: list[tuple[int, int]] = []
    for jump, count in steps:
        first = (next_seq or 0) + jump - 1 if next_seq is not None else jump
        first = max(first, 0)
        recent = accepted[-MAX_CACHED_BATCHES:]
        try:
            log.append(first, count)
        except DuplicateSequenceError:
            assert any(first == f and count == c for f, c in recent)
            continue
        except ProducerStateError as exc:
            assert isinstance(exc, OutOfOrderSequenceError)
            assert next_seq is not None and first != next_seq
            assert not any(first == f and count == c for f, c in recent)
            continue
        assert next_seq is None or first == next_seq
        accepted.append((first, count))
        next_seq = first + count
