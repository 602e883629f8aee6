"""Which records of a repartition topic a stateful step has applied already.

Pure logic, no I/O: the check behind :meth:`StatefulStep.unapplied` (the module docstring
of ``_stateful.py`` says why records come twice and what the headers hold). A record's
*mark* is its source offset shifted 32 bits up, or'ed with its number among the records
of that source (``headwater.seq``, 0 when absent); per source partition (the lineage
header's value up to its last ``/``) the step keeps the highest mark it applied, and a
record whose mark is not above it is a copy.

:func:`newer_marks` is the reference; the C module ``_speedups`` (built where a compiler
is present at install time) does the same in one loop without a Python object per
record, and falls back to it for what it does not take (marks past 64 bits, a header
that is not a decimal number). The tests hold the two to the same results.
"""

from __future__ import annotations

from collections.abc import Sequence

from ._lineage import SEQUENCE_HEADER, SOURCE_HEADER

__all__ = ["newer_marks"]


def _newer_marks(
    headers: Sequence[Sequence[tuple[str, bytes | None]]],
    origins: Sequence[int],
    read: int,
    applied: dict[bytes, int],
) -> tuple[list[bool] | None, int]:
    """Return which of the records at ``origins`` (rows of ``headers``) to keep (None:
    all of them) and how many are dropped; record the highest mark kept per source in
    ``applied``. Rows from ``read`` on were emitted by a step, not read: always kept, as
    are rows without a lineage header (not written by a runtime)."""
    keep: list[bool] = []
    dropped = 0
    last_prefix: bytes | None = None
    last = -1
    for origin in origins:
        if origin >= read:
            keep.append(True)
            continue
        found = headers[origin]
        if not found or found[0][0] != SOURCE_HEADER or found[0][1] is None:
            keep.append(True)
            continue
        prefix, _, digits = found[0][1].rpartition(b"/")
        mark = int(digits) << 32
        if len(found) > 1 and found[1][0] == SEQUENCE_HEADER:
            mark |= int(found[1][1] or 0)
        if prefix != last_prefix:
            if last_prefix is not None:
                applied[last_prefix] = last
            last_prefix = prefix
            last = applied.get(prefix, -1)
        if mark > last:
            last = mark
            keep.append(True)
        else:
            keep.append(False)
            dropped += 1
    if last_prefix is not None:
        applied[last_prefix] = last
    return (keep if dropped else None), dropped


try:
    from ._speedups import newer_marks as _c_newer_marks
except ImportError:  # built without a C compiler
    _c_newer_marks = None  # type: ignore[assignment]


def _accelerated(
    headers: Sequence[Sequence[tuple[str, bytes | None]]],
    origins: Sequence[int],
    read: int,
    applied: dict[bytes, int],
) -> tuple[list[bool] | None, int]:
    """:func:`_newer_marks` in C where it takes the input (see the module docstring)."""
    assert _c_newer_marks is not None
    found = _c_newer_marks(headers, origins, read, applied, SOURCE_HEADER, SEQUENCE_HEADER)
    if found is None:
        return _newer_marks(headers, origins, read, applied)
    return found


newer_marks = _newer_marks if _c_newer_marks is None else _accelerated
