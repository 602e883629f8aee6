"""Which repartition records a stateful step applied already: the C loop
(processing/_speedups.c) against the Python reference it accelerates (processing/_marks.py).

The contract: on any input the compiled loop returns what the Python one returns and
leaves ``applied`` as it leaves it, or returns None having changed nothing (then the
Python one runs, and raises where the input is malformed). The reference itself is
checked against a model: per source, a record is kept when (offset, number) is above
every one kept or applied before.
"""

from __future__ import annotations

import shutil
import sysconfig
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from headwater.processing import _marks
from headwater.processing._lineage import SEQUENCE_HEADER, SOURCE_HEADER
from headwater.processing._marks import _newer_marks, newer_marks

compiled = _marks._c_newer_marks

if compiled is None:  # pragma: no cover - only where the extension could not be built
    if shutil.which(sysconfig.get_config_var("CC").split()[0] or "cc"):
        raise AssertionError(
            "headwater.processing._speedups is missing although a C compiler is installed: "
            "reinstall the package (make clean test) to build it"
        )
    pytest.skip("no C compiler: the Python loop runs alone", allow_module_level=True)

PREFIXES = [b"clicks/0", b"clicks/1", b"app-x-repartition/3", b"", b"a/b/c"]


def lineage(prefix: bytes, offset: int, number: int | None) -> tuple[tuple[str, Any], ...]:
    """A runtime's headers for a record made from ``prefix``'s record at ``offset``."""
    source = (SOURCE_HEADER, prefix + b"/" + b"%d" % offset if prefix else b"%d" % offset)
    if number is None:
        return (source,)
    return (source, (SEQUENCE_HEADER, b"%d" % number), ("user", b"x"))


rows = st.one_of(
    st.builds(
        lineage,
        st.sampled_from(PREFIXES),
        st.integers(0, 40) | st.integers(0, 1 << 40),
        st.none() | st.integers(0, 3),
    ),
    st.just(()),  # no headers
    st.just((("user", b"1"),)),  # someone else's headers
    st.just(((SOURCE_HEADER, None),)),
)


def run_both(
    headers: list[Any], origins: list[int], read: int, applied: dict[bytes, int]
) -> tuple[Any, dict[bytes, int], Any, dict[bytes, int]]:
    """Each loop's answer and its ``applied`` afterwards, from the same start."""
    python_applied = dict(applied)
    expected = _newer_marks(headers, origins, read, python_applied)
    c_applied = dict(applied)
    found = compiled(headers, origins, read, c_applied, SOURCE_HEADER, SEQUENCE_HEADER)
    return expected, python_applied, found, c_applied


@settings(max_examples=400, deadline=None)
@given(
    st.lists(rows, max_size=60),
    st.data(),
    st.dictionaries(st.sampled_from(PREFIXES), st.integers(-1, 50 << 32), max_size=3),
)
def test_the_c_loop_answers_as_the_python_one(
    headers: list[Any], data: st.DataObject, applied: dict[bytes, int]
) -> None:
    read = data.draw(st.integers(0, len(headers)))
    origins = data.draw(st.lists(st.integers(0, max(len(headers) - 1, 0)), max_size=80))
    if not headers:
        origins = [read + i for i in range(len(origins))]  # emitted rows only
    expected, python_applied, found, c_applied = run_both(headers, origins, read, applied)
    if found is None:  # left to Python: nothing changed
        assert c_applied == applied
        marks_past_64_bits = any(v >= 1 << 63 for v in applied.values())
        assert marks_past_64_bits or any(o >= len(headers) for o in origins)
        return
    assert found == expected
    assert c_applied == python_applied
    assert list(c_applied) == list(python_applied)  # in the same order too


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(PREFIXES[:3]), st.integers(0, 30), st.integers(0, 2))))
def test_a_record_is_kept_when_its_mark_is_above_its_sources_last(
    records: list[tuple[bytes, int, int]],
) -> None:
    headers = [lineage(prefix, offset, number) for prefix, offset, number in records]
    applied: dict[bytes, int] = {}
    keep, dropped = newer_marks(headers, list(range(len(headers))), len(headers), applied)
    model: dict[bytes, tuple[int, int]] = {}
    expected = []
    for prefix, offset, number in records:
        last = model.get(prefix)
        kept = last is None or (offset, number) > last
        if kept:
            model[prefix] = (offset, number)
        expected.append(kept)
    assert (keep if keep is not None else [True] * len(records)) == expected
    assert dropped == expected.count(False)
    assert applied == {p: (o << 32) | n for p, (o, n) in model.items()}


def test_copies_written_again_are_dropped_and_the_first_copies_kept() -> None:
    first = [lineage(b"clicks/0", offset, 0) for offset in range(5)]
    again = [lineage(b"clicks/0", offset, 0) for offset in range(3, 8)]
    headers = first + again
    applied: dict[bytes, int] = {}
    keep, dropped = newer_marks(headers, list(range(10)), 10, applied)
    assert keep == [True] * 5 + [False, False, True, True, True]
    assert dropped == 2
    assert applied == {b"clicks/0": 7 << 32}


def test_headers_as_lists_are_read_as_tuples_are() -> None:
    """The Kafka backend's client gives each record's headers as a list of pairs."""
    headers: list[Any] = [list(lineage(b"clicks/1", n, None)) for n in (4, 2, 9)]
    applied: dict[bytes, int] = {}
    found = compiled(headers, [0, 1, 2], 3, applied, SOURCE_HEADER, SEQUENCE_HEADER)
    assert found == ([True, False, True], 1)
    assert applied == {b"clicks/1": 9 << 32}


def test_marks_past_64_bits_are_answered_alike() -> None:
    """Offsets of 2**31 and up make marks past 64 bits: kept exactly, whichever loop."""
    big = 1 << 40
    headers = [lineage(b"clicks/0", big + n, None) for n in (1, 0, 2)]
    expected, python_applied, found, c_applied = run_both(headers, [0, 1, 2], 3, {})
    assert found == expected == ([True, False, True], 1)
    assert c_applied == python_applied == {b"clicks/0": (big + 2) << 32}
    # A mark past 64 bits in ``applied`` is left to Python, which answers alike.
    assert compiled(headers, [0, 1, 2], 3, c_applied, SOURCE_HEADER, SEQUENCE_HEADER) is None
    assert c_applied == python_applied
    assert newer_marks(headers, [0, 1, 2], 3, c_applied) == ([False, False, False], 3)


@pytest.mark.parametrize("value", [b"clicks/0/", b"clicks/0/1x", b"clicks/0/ 1_0x"])
def test_a_lineage_header_that_is_not_a_number_raises_as_python_does(value: bytes) -> None:
    headers = [((SOURCE_HEADER, value),)]
    applied = {b"clicks/0": 5}
    assert compiled(headers, [0], 1, applied, SOURCE_HEADER, SEQUENCE_HEADER) is None
    assert applied == {b"clicks/0": 5}
    with pytest.raises(ValueError):
        newer_marks(headers, [0], 1, applied)
