"""The idempotent producers' sequence state (broker/_producers.py): pure, with a fake clock."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from headwater.broker import KafkaErrorCode
from headwater.broker._producers import (
    MAX_CACHED_BATCHES,
    ProducerStates,
    SequenceCheck,
    last_sequence,
)

E = KafkaErrorCode
MAX_SEQ = 2**31 - 1


class Clock:
    def __init__(self) -> None:
        self.now = 0

    def __call__(self) -> int:
        return self.now


def states(clock: Clock | None = None, expiry_ms: int = 1000) -> ProducerStates:
    return ProducerStates(clock=clock or Clock(), first_producer_id=100, expiry_ms=expiry_ms)


def append(
    s: ProducerStates, first: int, count: int, *, epoch: int = 0, at: int = 0
) -> SequenceCheck:
    check = s.check(
        "t",
        0,
        producer_id=100,
        epoch=epoch,
        first_seq=first,
        last_seq=last_sequence(first, count - 1),
    )
    if check.error == E.NONE:
        s.complete("t", 0, 100, first, at)
    return check


def test_new_producers_get_fresh_ids_and_epoch_zero() -> None:
    s = states()
    assert [s.new_producer() for _ in range(3)] == [(100, 0), (101, 0), (102, 0)]


def test_in_order_batches_duplicates_and_gaps() -> None:
    s = states()
    assert append(s, 0, 5, at=10) == SequenceCheck(E.NONE)
    assert append(s, 5, 2, at=15) == SequenceCheck(E.NONE)
    assert append(s, 0, 5) == SequenceCheck(E.DUPLICATE_SEQUENCE_NUMBER, 10)
    assert append(s, 5, 2) == SequenceCheck(E.DUPLICATE_SEQUENCE_NUMBER, 15)
    assert append(s, 8, 1).error == E.OUT_OF_ORDER_SEQUENCE_NUMBER  # 7 is missing
    assert append(s, 5, 3).error == E.OUT_OF_ORDER_SEQUENCE_NUMBER  # overlaps, not a retry
    assert append(s, 7, 1).error == E.NONE


def test_only_the_last_five_batches_are_remembered() -> None:
    s = states()
    for i in range(MAX_CACHED_BATCHES + 1):
        assert append(s, i, 1, at=i).error == E.NONE
    assert append(s, 0, 1).error == E.OUT_OF_ORDER_SEQUENCE_NUMBER  # forgotten
    assert append(s, 1, 1) == SequenceCheck(E.DUPLICATE_SEQUENCE_NUMBER, 1)


def test_epochs_fence_old_producers_and_restart_sequences() -> None:
    s = states()
    assert append(s, 0, 3).error == E.NONE
    assert append(s, 3, 1, epoch=1).error == E.OUT_OF_ORDER_SEQUENCE_NUMBER
    assert append(s, 0, 1, epoch=1).error == E.NONE
    assert append(s, 3, 1, epoch=0).error == E.INVALID_PRODUCER_EPOCH
    assert append(s, 1, 1, epoch=1).error == E.NONE


def test_a_producer_the_partition_does_not_know_may_start_anywhere() -> None:
    s = states()
    assert append(s, 12345, 2).error == E.NONE  # e.g. after the broker restarted
    assert append(s, 12347, 1).error == E.NONE


def test_sequences_wrap_past_int32_max() -> None:
    s = states()
    assert append(s, MAX_SEQ - 1, 2).error == E.NONE
    assert last_sequence(MAX_SEQ - 1, 3) == 1
    assert append(s, 0, 4).error == E.NONE


def test_a_batch_in_flight_is_judged_and_aborts_give_its_place_back() -> None:
    s = states()
    check = s.check("t", 0, producer_id=100, epoch=0, first_seq=0, last_seq=1)
    assert check.error == E.NONE
    # Its retry while it is being appended is a duplicate without an offset yet.
    assert s.check("t", 0, producer_id=100, epoch=0, first_seq=0, last_seq=1) == SequenceCheck(
        E.DUPLICATE_SEQUENCE_NUMBER, -1
    )
    assert s.check("t", 0, producer_id=100, epoch=0, first_seq=2, last_seq=2).error == E.NONE
    s.abort("t", 0, 100, 2)
    s.abort("t", 0, 100, 0)
    assert len(s) == 0
    assert append(s, 0, 2).error == E.NONE  # the aborted batch is accepted again


def test_state_expires_and_is_forgotten_with_its_topic() -> None:
    clock = Clock()
    s = states(clock, expiry_ms=1000)
    append(s, 0, 1)
    s.check("u", 1, producer_id=7, epoch=0, first_seq=0, last_seq=0)
    s.forget_topic("u")
    assert len(s) == 1
    clock.now = 70_000
    s.new_producer()
    assert len(s) == 0


@given(st.lists(st.tuples(st.integers(0, 3), st.integers(1, 3)), max_size=40))
def test_matches_a_model_of_one_producer(steps: list[tuple[int, int]]) -> None:
    """Against a model: accepted batches are exactly those that continue the sequence."""
    s = states()
    next_seq: int | None = None
    accepted: list[tuple[int, int]] = []
    for jump, count in steps:
        first = (next_seq or 0) + jump - 1 if next_seq is not None else jump
        first = max(first, 0)
        check = append(s, first, count, at=len(accepted))
        recent = accepted[-MAX_CACHED_BATCHES:]
        if next_seq is None or first == next_seq:
            assert check.error == E.NONE
            accepted.append((first, count))
            next_seq = first + count
        elif any(first == f and count == c for f, c in recent):
            assert check.error == E.DUPLICATE_SEQUENCE_NUMBER
        else:
            assert check.error == E.OUT_OF_ORDER_SEQUENCE_NUMBER
