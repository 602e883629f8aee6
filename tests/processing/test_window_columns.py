"""A batch's tumbling windows and late records: the C loop (processing/_speedups.c)
against the column-by-column Python it accelerates, and both against a model that walks
the records one at a time as Kafka Streams does."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given
from hypothesis import strategies as st

from headwater.processing import _window_columns
from headwater.processing._aggregate import _windowed_many
from headwater.processing._batch import indexes
from headwater.processing._window_columns import _tumbling_windows, tumbling_windows
from headwater.processing.windows import Windowed

compiled = _window_columns._c_tumbling_windows


def model(
    times: list[int], size: int, grace: int, first: int
) -> tuple[list[int], list[int], list[int]]:
    """Record by record: its window, then late if that window closed by the stream time."""
    kept, starts, late, now = [], [], [], first
    for i, t in enumerate(times):
        now = max(now, t)
        start = t - t % size
        if start + size + grace <= now:
            late.append(i)
        else:
            kept.append(i)
            starts.append(start)
    return kept, starts, late


batches = st.tuples(
    st.lists(st.integers(0, 10_000), min_size=1, max_size=60),
    st.integers(1, 3_000),
    st.integers(0, 2_000),
    st.integers(-1, 12_000),
)


@given(batches)
def test_windows_and_late_records_are_the_models(batch: tuple[list[int], int, int, int]) -> None:
    expected = model(*batch)
    assert _tumbling_windows(*batch) == expected
    assert tumbling_windows(*batch) == expected


@given(batches)
def test_the_c_loop_answers_as_the_python_one(batch: tuple[list[int], int, int, int]) -> None:
    if compiled is None:  # pragma: no cover - only where the extension could not be built
        return
    assert compiled(*batch, indexes(len(batch[0]))) == _tumbling_windows(*batch)


def test_times_past_64_bits_are_left_to_python_and_answered_alike() -> None:
    times = [1 << 70, 5]
    if compiled is not None:
        assert compiled(times, 10, 0, 0, [0, 1]) is None
        assert compiled([5], 10, 0, 0, [0, 1]) is None  # a row per time, or Python answers
    assert tumbling_windows(times, 10, 0, 0) == model(times, 10, 0, 0)


def test_results_built_a_column_at_a_time_are_windowed_values_like_any_other() -> None:
    made = _windowed_many(["u1", 7], [0, 10], [10, 20], [{"count": 1}, 3])
    assert made == [Windowed("u1", 0, 10, {"count": 1}), Windowed(7, 10, 20, 3)]
    assert hash(made[1]) == hash(Windowed(7, 10, 20, 3))
    with pytest.raises(dataclasses.FrozenInstanceError):
        made[0].start = 5  # type: ignore[misc]
