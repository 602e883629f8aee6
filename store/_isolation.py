"""What a reader sees of transactions: isolation levels and the batch filter. Pure.

Theory of operation
-------------------
A partition that holds transactions holds three kinds of batch besides plain ones:
records of a transaction (attributes bit 4), control batches (bit 5: the commit and abort
markers, see ``_control.py``) and, among the former, records of aborted transactions.

* Control batches are never records: every reader skips them.
* ``READ_UNCOMMITTED`` readers see every other record up to the high watermark, whatever
  becomes of its transaction (Kafka's default).
* ``READ_COMMITTED`` readers stop at the last stable offset (everything below it is
  decided) and skip the records of aborted transactions: a transactional batch of
  producer P at offset o is skipped when the aborted index holds ``(P, first, last)``
  with ``first <= o <= last``.

Kafka clients get the raw batches up to the LSO and the aborted transactions of the
range, and filter themselves; embedded readers get :func:`visible_batches` applied for
them. A partition that never saw a transactional batch skips the filter altogether, so
plain logs pay nothing for it; otherwise the filter reads one header per batch.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence

from ._batch import CONTROL_BIT, HEADER, TRANSACTIONAL_BIT
from ._producer_state import AbortedTransaction

_HEADER_SIZE = HEADER.size
_ATTRIBUTES_AT = 21
_PRODUCER_ID_AT = 43


class IsolationLevel(enum.IntEnum):
    """Which records of transactions a reader sees (Kafka's ``isolation.level``)."""

    READ_UNCOMMITTED = 0
    READ_COMMITTED = 1


def _aborted_ranges(
    aborted: Sequence[AbortedTransaction] | None,
) -> dict[int, list[tuple[int, int]]]:
    ranges: dict[int, list[tuple[int, int]]] = {}
    for txn in aborted or ():
        ranges.setdefault(txn.producer_id, []).append((txn.first_offset, txn.last_offset))
    return ranges


def _hidden(data: bytes, position: int, ranges: dict[int, list[tuple[int, int]]]) -> bool:
    """Whether the batch at ``position`` is a marker or (``ranges`` given) aborted."""
    attributes = int.from_bytes(data[position + _ATTRIBUTES_AT : position + 23], "big")
    if attributes & CONTROL_BIT:
        return True
    if not ranges or not attributes & TRANSACTIONAL_BIT:
        return False
    producer_id = int.from_bytes(
        data[position + _PRODUCER_ID_AT : position + 51], "big", signed=True
    )
    base_offset = int.from_bytes(data[position : position + 8], "big", signed=True)
    return any(first <= base_offset <= last for first, last in ranges.get(producer_id, ()))


def skip_hidden_batches(
    data: bytes, start_offset: int, aborted: Sequence[AbortedTransaction] | None
) -> tuple[int, bool]:
    """Step over the batches at the front of ``data`` that a reader never sees as records
    (markers, aborted transactions when ``aborted`` is given, batches compaction emptied).

    Returns the offset after them (at least ``start_offset``) and whether a batch with
    records for the reader follows in ``data``.
    """
    ranges = _aborted_ranges(aborted)
    offset = start_offset
    position = 0
    end = len(data)
    while position + _HEADER_SIZE <= end:
        size = int.from_bytes(data[position + 8 : position + 12], "big") + 12
        count = int.from_bytes(data[position + 57 : position + 61], "big", signed=True)
        if count > 0 and not _hidden(data, position, ranges):
            return offset, True
        last_delta = int.from_bytes(data[position + 23 : position + 27], "big", signed=True)
        base = int.from_bytes(data[position : position + 8], "big", signed=True)
        offset = max(offset, base + last_delta + 1)
        position += size
    return offset, False


def visible_batches(data: bytes, aborted: Sequence[AbortedTransaction] | None) -> bytes:
    """Return the batches of ``data`` (whole batches) a reader sees, in order.

    Drops control batches, and, when ``aborted`` is given (a read_committed reader: the
    aborted transactions of the range), the transactional batches they cover. Returns
    ``data`` itself when nothing is dropped.
    """
    ranges = _aborted_ranges(aborted)
    kept: list[memoryview] = []
    view = memoryview(data)
    position = 0
    run_start = 0
    dropped = False
    end = len(data)
    while position + _HEADER_SIZE <= end:
        size = int.from_bytes(data[position + 8 : position + 12], "big") + 12
        if _hidden(data, position, ranges):
            dropped = True
            if position > run_start:
                kept.append(view[run_start:position])
            run_start = position + size
        position += size
    if not dropped:
        return data
    if end > run_start:
        kept.append(view[run_start:end])
    return b"".join(kept)
