"""Compaction: keep the latest record per key in the inactive segments of a compacted topic.

Theory of operation. A topic with ``cleanup_policy=compact`` is a changelog: for each key
only its latest value matters. The cleaner reads the whole partition once to learn, for
each key, the offset of its latest record; then it rewrites the inactive segments (the
active one is never touched) keeping only

* records that are the latest for their key,
* records without a key (they cannot be superseded), and
* tombstones (a null value) that are the latest for their key and younger than
  ``delete_retention_ms``, so that readers catching up still see the deletion.

Offsets never change: a kept record keeps its offset, and the gaps left by dropped ones
are stepped over by readers. Consecutive kept records are written as one batch in the
codec of the batch they came from; each rewritten group of segments ends with a batch
whose last offset is the group's, an empty one if need be, so the group's offset range
survives even when its last records are dropped.

A record counts as superseding an older one only once it is durable (in an inactive
segment, all of which were fsynced when they rolled, or below the recovery point):
otherwise a power cut could take the newer record away after the older one was dropped.

Transactions: only what lies below the first undecided transaction is cleaned or counts
as superseding (a record whose transaction may still abort supersedes nothing). There,
transaction markers are dropped, records of aborted transactions are dropped (and never
supersede), and records of committed transactions are kept as plain records: a cleaned
range holds nothing transactional, so what a reader sees of it, and what replaying the
log's producer state finds, no longer depends on markers.

Consecutive inactive segments are merged while the result stays under
``segment_bytes``. The rewrite is made crash-safe by the swap protocol the loader
understands: the new segment is written as ``<base>.log.cleaned`` (thrown away if a crash
interrupts), fsynced, renamed to ``<base>.log.swap`` (the commit point: the loader finishes
an interrupted swap by removing the segments it replaces) and then swapped in by
:meth:`PartitionLog.replace_segments`.

A file-system error before the commit point removes the ``.cleaned`` and ``.swap`` files
(a stray swap file would be finished by a later recovery, over whatever the log holds by
then) and raises :class:`StorageFullError` or :class:`StoreError`; the log is untouched.
One during the swap-in, once the replaced segments are unlinked, leaves the swap file as
the only copy of their records: the partition is closed and the next open finishes it.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ._batch import BatchHeader, encode_empty_batch, parse_batch_header
from ._config import CleanupPolicy
from ._errors import StorageFullError, StoreError
from ._files import CLEANED_SUFFIX, LOG_SUFFIX, SWAP_SUFFIX, fsync_dir, segment_file_name, write_all
from ._log import FULL_ERRNOS, PartitionLog
from ._producer_state import AbortedTransaction
from ._records import Compression, NewRecord, Record, decode_records, encode_batch
from ._segment import Segment

logger = logging.getLogger("headwater.store")


@dataclass(frozen=True, slots=True)
class CleanResult:
    """What one cleaning pass over a partition did."""

    segments_before: int
    segments_after: int
    records_removed: int
    bytes_before: int
    bytes_after: int


def _segment_batches(segment: Segment) -> list[tuple[int, bytes]]:
    data = segment.read(0, segment.size)
    batches = []
    position = 0
    while position < len(data):
        header = parse_batch_header(data, position)
        batches.append((position, data[position : position + header.size]))
        position += header.size
    return batches


class _Aborted:
    """Which transactional batches belong to aborted transactions (the log's index)."""

    def __init__(self, aborted: Sequence[AbortedTransaction]) -> None:
        self._ranges: dict[int, list[tuple[int, int]]] = {}
        for txn in aborted:
            self._ranges.setdefault(txn.producer_id, []).append((txn.first_offset, txn.last_offset))

    def drops(self, header: BatchHeader) -> bool:
        """Whether the batch is a marker or a record batch of an aborted transaction."""
        if header.is_control:
            return True
        if not header.is_transactional:
            return False
        ranges = self._ranges.get(header.producer_id, ())
        return any(first <= header.base_offset <= last for first, last in ranges)


_NOTHING_ABORTED = _Aborted(())


def latest_offsets(
    segments: Sequence[Segment], upper: int, aborted: _Aborted = _NOTHING_ABORTED
) -> dict[bytes, int]:
    """Map every key in ``segments`` to the offset of its latest record below ``upper``
    (markers and aborted transactions left out)."""
    latest: dict[bytes, int] = {}
    for segment in segments:
        for _position, batch in _segment_batches(segment):
            if aborted.drops(parse_batch_header(batch)):
                continue
            for record in decode_records(batch):
                if record.key is not None and record.offset < upper:
                    latest[record.key] = record.offset
    return latest


def _kept(records: list[Record], latest: dict[bytes, int], tombstone_horizon: int) -> list[Record]:
    kept = []
    for record in records:
        if record.key is None or (
            latest.get(record.key) == record.offset
            and (record.value is not None or record.timestamp >= tombstone_horizon)
        ):
            kept.append(record)
    return kept


def _rewrite(
    segment: Segment,
    latest: dict[bytes, int],
    tombstone_horizon: int,
    aborted: _Aborted = _NOTHING_ABORTED,
) -> tuple[list[bytes], int, bool]:
    """Return the kept batches of one segment, how many records were dropped and whether
    the segment changed (transactional batches are rewritten plain even when whole)."""
    out: list[bytes] = []
    dropped = 0
    changed = False
    for _position, batch in _segment_batches(segment):
        header = parse_batch_header(batch)
        records = decode_records(batch)
        if aborted.drops(header):
            dropped += len(records)
            changed = True
            continue
        kept = _kept(records, latest, tombstone_horizon)
        dropped += len(records) - len(kept)
        if len(kept) == len(records) and not header.is_transactional:
            out.append(batch)
            continue
        changed = True
        compression = Compression(header.compression)
        run: list[Record] = []
        for record in kept:
            if run and record.offset != run[-1].offset + 1:
                out.append(_encode_run(run, compression))
                run = []
            run.append(record)
        if run:
            out.append(_encode_run(run, compression))
    return out, dropped, changed


def _encode_run(run: list[Record], compression: Compression) -> bytes:
    return encode_batch(
        [NewRecord(r.value, r.key, r.timestamp, r.headers) for r in run],
        base_offset=run[0].offset,
        compression=compression,
    )


def clean_partition(log: PartitionLog, now_ms: int) -> CleanResult | None:
    """Compact ``log``'s inactive segments now, in the calling thread.

    Returns what changed, or ``None`` if compaction would change nothing.
    """
    plan = plan_cleaning(log, now_ms)
    if plan is None:
        return None
    return apply_cleaning(log, plan)


@dataclass(slots=True)
class _Group:
    segments: list[Segment]
    batches: list[bytes]


@dataclass(slots=True)
class CleaningPlan:
    """Rewritten segment groups, ready to be written and swapped in."""

    groups: list[_Group]
    records_removed: int
    segments_before: int
    bytes_before: int


def plan_cleaning(log: PartitionLog, now_ms: int) -> CleaningPlan | None:
    """Work out the compacted contents of ``log``'s inactive segments (CPU and reads only).

    May run in a worker thread while the owner appends: it reads only inactive segments
    and the active one up to its size at the start. Returns ``None`` when compaction
    would change nothing.
    """
    if log.config.cleanup_policy is not CleanupPolicy.COMPACT:
        return None
    segments = list(log.segments)
    inactive = segments[:-1]
    if not inactive:
        return None
    # Only a durable record may supersede another: one a power cut could still take away
    # would take the record it replaced with it. Inactive segments were fsynced when they
    # rolled; in the active one, only what lies below the recovery point is durable.
    upper = max(log.recovery_point, segments[-1].base_offset)
    aborted = _NOTHING_ABORTED
    state = log.producer_state
    if state.has_transactions:
        # Nothing at or past the first undecided transaction is cleaned, nor supersedes.
        unstable = state.first_unstable_offset()
        if unstable is not None:
            upper = min(upper, unstable)
            inactive = [s for s in inactive if s.next_offset <= unstable]
            if not inactive:
                return None
        aborted = _Aborted(state.aborted_transactions(log.log_start_offset, upper))
    for segment in segments:
        segment.pin()
    try:
        latest = latest_offsets(segments, upper, aborted)
        horizon = now_ms - log.config.delete_retention_ms
        rewritten = []
        removed = 0
        for segment in inactive:
            batches, dropped, changed = _rewrite(segment, latest, horizon, aborted)
            rewritten.append((segment, batches, changed))
            removed += dropped
    finally:
        for segment in segments:
            segment.unpin()
    if not any(changed for _s, _b, changed in rewritten) and all(
        s.size >= log.config.segment_bytes // 2 for s in inactive
    ):
        return None
    groups: list[_Group] = []
    for segment, batches, _changed_segment in rewritten:
        size = sum(len(b) for b in batches)
        current = groups[-1] if groups else None
        if (
            current is not None
            and sum(map(len, current.batches)) + size <= log.config.segment_bytes
        ):
            current.segments.append(segment)
            current.batches.extend(batches)
        else:
            groups.append(_Group([segment], list(batches)))
    groups = [g for g in groups if len(g.segments) > 1 or _changed(g, rewritten)]
    if not groups:
        return None
    return CleaningPlan(groups, removed, len(segments), sum(s.size for s in segments))


def _changed(group: _Group, rewritten: list[tuple[Segment, list[bytes], bool]]) -> bool:
    return any(changed for segment, _b, changed in rewritten if segment in group.segments)


def write_swap_file(log: PartitionLog, group: _Group) -> Path:
    """Write one group's compacted segment and commit it as ``<base>.log.swap``.

    Touches no state of ``log``: may run in a worker thread.
    """
    base = group.segments[0].base_offset
    last = group.segments[-1].next_offset - 1
    batches = list(group.batches)
    if not batches or _last_offset(batches[-1]) < last:
        batches.append(encode_empty_batch(last, group.segments[-1].max_timestamp))
    cleaned = log.directory / segment_file_name(base, LOG_SUFFIX + CLEANED_SUFFIX)
    swap = log.directory / segment_file_name(base, LOG_SUFFIX + SWAP_SUFFIX)
    fs = log.fs
    try:
        fd = fs.open(cleaned, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o644)
        try:
            for batch in batches:
                write_all(fs, fd, batch)
            fs.fsync(fd)
        finally:
            fs.close(fd)
        fs.replace(cleaned, swap)
        fsync_dir(fs, log.directory)
    except OSError as exc:
        # Nothing refers to either file yet; a swap file left behind would be finished
        # by a later recovery, over whatever the log holds by then.
        _remove(log, [cleaned, swap])
        full = exc.errno in FULL_ERRNOS
        raise (StorageFullError if full else StoreError)(
            f"{cleaned}: cannot write a compacted segment: {exc}"
        ) from exc
    return swap


def write_swap_files(log: PartitionLog, plan: CleaningPlan) -> list[Path]:
    """Write and commit every group of ``plan`` (may run in a worker thread).

    :raises StoreError: if the file system fails (``StorageFullError`` if it is full);
        no swap file of ``plan`` is left behind.
    """
    swaps: list[Path] = []
    try:
        for group in plan.groups:
            swaps.append(write_swap_file(log, group))
    except StoreError:
        _remove(log, swaps)
        raise
    return swaps


def _remove(log: PartitionLog, paths: Sequence[Path]) -> None:
    for path in paths:
        with contextlib.suppress(OSError):
            log.fs.unlink(path)


def swap_in(log: PartitionLog, plan: CleaningPlan, swaps: Sequence[Path]) -> CleanResult:
    """Swap the committed files in for the segments they replace (on the owner's side).

    :raises StoreError: if the log changed meanwhile (see ``replace_segments``), or if a
        swap failed half-way: the log is then closed and its swap files stay for recovery.
    """
    try:
        for group, swap in zip(plan.groups, swaps, strict=True):
            log.replace_segments(group.segments, swap)
    finally:
        if not log.closed:
            for swap in swaps:
                with contextlib.suppress(FileNotFoundError):
                    log.fs.unlink(swap)
    stats = log.statistics()
    return CleanResult(
        plan.segments_before,
        stats.segments,
        plan.records_removed,
        plan.bytes_before,
        stats.size_bytes,
    )


def apply_cleaning(log: PartitionLog, plan: CleaningPlan) -> CleanResult:
    """Write and swap in every group of ``plan``, in the calling thread."""
    return swap_in(log, plan, write_swap_files(log, plan))


def _last_offset(batch: bytes) -> int:
    header = parse_batch_header(batch)
    return header.base_offset + header.last_offset_delta
