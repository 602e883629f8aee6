"""Opening a partition's folder: finishing interrupted work and recovering after a crash.

Theory of operation. The log writes a *recovery checkpoint* (offset, segment, byte
position) only after everything before it has been fsynced, and a *clean-shutdown marker*
when it closes properly. On open:

1. Leftovers of interrupted work are settled: temporary files are removed; a compaction
   that reached its commit point (a ``.log.swap`` file) is completed by removing the
   segments it replaces (and the checkpoint, if it points into one of them) and renaming
   it into place; a compaction that did not (a ``.cleaned`` file) is thrown away; index
   files without a ``.log`` are removed.
2. Segments before the checkpoint are trusted: their indexes are read from disk, or
   rebuilt from batch headers when missing or inconsistent.
3. Everything after the checkpoint was possibly never written completely. Each batch there
   is verified (framing, CRC, offsets that only grow). In the last segment the first
   invalid batch is a torn tail: the segment is truncated to the last valid batch. In an
   earlier segment (data follows it, so this is no torn write) it is corruption:
   :class:`CorruptRecordError` names the file and position, and nothing is deleted.

After a clean shutdown the checkpoint is the end of the log, so step 3 reads nothing and
opening costs a directory listing and the index files.
"""

from __future__ import annotations

import contextlib
import logging
import os
import struct
from dataclasses import dataclass
from pathlib import Path

import orjson

from ._batch import verify_batch
from ._errors import CorruptRecordError
from ._files import (
    CLEAN_SHUTDOWN_FILE,
    CLEANED_SUFFIX,
    DELETED_SUFFIX,
    INDEX_SUFFIX,
    LOG_SUFFIX,
    RECOVERY_CHECKPOINT_FILE,
    SWAP_SUFFIX,
    TIMEINDEX_SUFFIX,
    TMP_SUFFIX,
    atomic_write,
    fsync_dir,
    parse_segment_file_name,
    segment_file_name,
)
from ._fs import FileSystem
from ._index import IndexFormatError, OffsetIndex, TimeIndex
from ._segment import Segment

logger = logging.getLogger("headwater.store")

_VERIFY_CHUNK = 8 << 20
# base_offset and batch_length: enough to know how many bytes a batch needs.
_LENGTH = struct.Struct(">8xi")


@dataclass(frozen=True, slots=True)
class RecoveryPoint:
    """Everything before ``offset`` (at ``position`` in segment ``segment``) is durable."""

    offset: int
    segment: int
    position: int

    def to_json(self) -> bytes:
        """Encode for the checkpoint file."""
        return orjson.dumps(
            {"offset": self.offset, "segment": self.segment, "position": self.position}
        )

    @classmethod
    def from_json(cls, data: bytes) -> RecoveryPoint | None:
        """Decode a checkpoint file; ``None`` if it is not one (the whole log is then checked)."""
        try:
            obj = orjson.loads(data)
            point = cls(int(obj["offset"]), int(obj["segment"]), int(obj["position"]))
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            return None
        if min(point.offset, point.segment, point.position) < 0:
            return None
        return point


def write_recovery_point(fs: FileSystem, directory: Path, point: RecoveryPoint) -> None:
    """Persist ``point`` atomically (its data must already be fsynced)."""
    atomic_write(fs, directory / RECOVERY_CHECKPOINT_FILE, point.to_json())


@dataclass(slots=True)
class LoadResult:
    """What opening a partition folder found."""

    segments: list[Segment]
    clean: bool
    truncated_bytes: int
    #: Segments whose indexes were rebuilt in memory; their index files are stale.
    rebuilt: list[Segment]


def load_segments(
    fs: FileSystem, directory: Path, *, index_interval_bytes: int, now_ms: int
) -> LoadResult:
    """Open every segment in ``directory``, recovering after a crash as the module describes.

    Returns the segments in offset order (possibly none). The clean-shutdown marker is
    left in place: the log removes it before its first change, so that a crash from
    then on is recognised as one, while a session that only reads writes nothing.

    :raises CorruptRecordError: on damage that is not a torn tail.
    """
    _settle_leftovers(fs, directory)
    marker = directory / CLEAN_SHUTDOWN_FILE
    clean = fs.exists(marker)
    point = _read_recovery_point(fs, directory)
    bases = sorted(
        parsed[0]
        for name in fs.listdir(directory)
        if (parsed := parse_segment_file_name(name)) and parsed[1] == LOG_SUFFIX
    )
    segments: list[Segment] = []
    try:
        for base in bases:
            segments.append(
                Segment.open_file(
                    fs, directory, base, index_interval_bytes=index_interval_bytes, now_ms=now_ms
                )
            )
        truncated, rebuilt = _recover(segments, point, clean)
    except BaseException:
        for segment in segments:
            segment.close()
        raise
    return LoadResult(segments, clean, truncated, rebuilt)


def _recover(
    segments: list[Segment], point: RecoveryPoint | None, clean: bool
) -> tuple[int, list[Segment]]:
    if point is None or not any(s.base_offset == point.segment for s in segments):
        point = RecoveryPoint(0, segments[0].base_offset, 0) if segments else None
    truncated = 0
    rebuilt: list[Segment] = []
    for i, segment in enumerate(segments):
        upper = segments[i + 1].base_offset if i + 1 < len(segments) else None
        assert point is not None
        if segment.base_offset < point.segment:
            if not _load_trusted(segment, upper):
                rebuilt.append(segment)
        elif segment.base_offset == point.segment:
            if segment.size < point.position:
                raise CorruptRecordError(
                    f"segment is {segment.size} bytes, shorter than its recovery point "
                    f"{point.position}: data acknowledged as durable is missing",
                    path=str(segment.log_path),
                )
            if clean and point.position == segment.size and _load_trusted(segment, upper):
                continue
            rebuild_indexes(segment, point.position, upper)
            truncated += _verify_tail(segment, point.position, upper)
            rebuilt.append(segment)
        else:
            truncated += _verify_tail(segment, 0, upper)
            rebuilt.append(segment)
    return truncated, rebuilt


def _load_trusted(segment: Segment, upper: int | None) -> bool:
    """Take a segment before the recovery point as it is, reading its index files if sane.

    Returns ``False`` if the index files were unusable and the indexes were rebuilt.
    """
    try:
        index = OffsetIndex.from_bytes(
            segment.base_offset,
            segment.fs.read_bytes(segment.index_path),
            log_size=segment.size,
            next_offset=upper,
        )
        time_index = TimeIndex.from_bytes(
            segment.base_offset,
            segment.fs.read_bytes(segment.timeindex_path),
            next_offset=upper if upper is not None else 1 << 62,
        )
        if segment.size and not len(index):
            raise IndexFormatError("empty index for a non-empty segment")
        segment.adopt_indexes(index, time_index)
    except (OSError, IndexFormatError, CorruptRecordError) as exc:
        if not isinstance(exc, FileNotFoundError):
            logger.warning("%s: rebuilding indexes (%s)", segment.log_path, exc)
        rebuild_indexes(segment, segment.size, upper)
        return False
    return True


def _offset_problem(segment: Segment, base_offset: int, next_offset: int, upper: int | None) -> str:
    """Why a batch's offsets cannot follow what the segment holds so far, or ``""``.

    Base offsets lie outside the CRC, so they are checked against their neighbours: the
    last segment is never compacted and so is dense; an earlier one may have gaps, but
    stays inside the range its name and the next segment's name give it.
    """
    if upper is None:
        if base_offset != segment.next_offset:
            return f"batch offset {base_offset} does not follow {segment.next_offset - 1}"
    elif base_offset < segment.next_offset:
        return f"batch offset {base_offset} goes backwards"
    elif next_offset > upper:
        return f"batch runs to offset {next_offset - 1}, into the next segment at {upper}"
    return ""


def rebuild_indexes(segment: Segment, end: int, upper: int | None) -> None:
    """Rebuild a segment's indexes from its batch headers up to ``end`` (no CRC checks).

    :raises CorruptRecordError: if the headers do not frame ``[0, end)`` exactly.
    """
    segment.reset_indexes()
    real_size = segment.size
    segment.size = end
    try:
        for batch in segment.iter_batches(0):
            problem = _offset_problem(segment, batch.base_offset, batch.next_offset, upper)
            if problem:
                raise CorruptRecordError(
                    problem, position=batch.position, path=str(segment.log_path)
                )
            segment.note_batch(
                batch.position,
                batch.base_offset,
                batch.next_offset,
                batch.size,
                batch.max_timestamp,
            )
    finally:
        segment.size = real_size


def _verify_tail(segment: Segment, start: int, upper: int | None) -> int:
    """Verify every batch from ``start`` on; cut a torn tail of the last segment.

    Returns the number of bytes cut off.

    :raises CorruptRecordError: on an invalid batch in a segment other than the last.
    """
    end = segment.size
    position = start
    buf = b""
    buf_start = start
    while position < end:
        rel = position - buf_start
        need = _LENGTH.size
        if rel + need <= len(buf):
            need = max(need, _LENGTH.unpack_from(buf, rel)[0] + 12)
        if rel + need > len(buf):
            buf = segment.read(position, min(end - position, max(_VERIFY_CHUNK, need)))
            buf_start, rel = position, 0
        try:
            header = verify_batch(buf, rel)
            problem = _offset_problem(
                segment,
                header.base_offset,
                header.base_offset + header.last_offset_delta + 1,
                upper,
            )
            if problem:
                raise CorruptRecordError(problem)
        except CorruptRecordError as exc:
            if upper is not None:
                raise CorruptRecordError(
                    exc.reason, position=position, path=str(segment.log_path)
                ) from exc
            logger.warning(
                "%s: cutting a torn tail of %d bytes at position %d (%s)",
                segment.log_path,
                end - position,
                position,
                exc.reason,
            )
            segment.truncate_to_position(position)
            return end - position
        size = header.batch_length + 12
        segment.note_batch(
            position,
            header.base_offset,
            header.base_offset + header.last_offset_delta + 1,
            size,
            header.max_timestamp,
        )
        position += size
    return 0


def _read_recovery_point(fs: FileSystem, directory: Path) -> RecoveryPoint | None:
    try:
        data = fs.read_bytes(directory / RECOVERY_CHECKPOINT_FILE)
    except FileNotFoundError:
        return None
    point = RecoveryPoint.from_json(data)
    if point is None:
        logger.warning("%s: unreadable recovery checkpoint; checking the whole log", directory)
    return point


def _settle_leftovers(fs: FileSystem, directory: Path) -> None:
    names = fs.listdir(directory)
    changed = False
    for name in names:
        if name.endswith((TMP_SUFFIX, DELETED_SUFFIX, CLEANED_SUFFIX)):
            fs.unlink(directory / name)
            changed = True
    for name in sorted(fs.listdir(directory)):
        parsed = parse_segment_file_name(name)
        if parsed and parsed[1] == LOG_SUFFIX + SWAP_SUFFIX:
            _finish_swap(fs, directory, parsed[0])
            changed = True
    logs = {
        p[0]
        for n in fs.listdir(directory)
        if (p := parse_segment_file_name(n)) and p[1] == LOG_SUFFIX
    }
    for name in fs.listdir(directory):
        parsed = parse_segment_file_name(name)
        if parsed and parsed[1] in (INDEX_SUFFIX, TIMEINDEX_SUFFIX) and parsed[0] not in logs:
            fs.unlink(directory / name)
            changed = True
    if changed:
        fsync_dir(fs, directory)


def _finish_swap(fs: FileSystem, directory: Path, base: int) -> None:
    """Complete a compaction whose replacement segment reached its commit point."""
    swap = directory / segment_file_name(base, LOG_SUFFIX + SWAP_SUFFIX)
    fd = fs.open(swap, os.O_RDONLY)
    try:
        size = fs.fstat(fd).st_size
        data = fs.pread(fd, size, 0)
    finally:
        fs.close(fd)
    next_offset = base
    position = 0
    while position < len(data):
        header = verify_batch(data, position)
        next_offset = header.base_offset + header.last_offset_delta + 1
        position += header.batch_length + 12
    end = max(next_offset, base + 1)
    for name in fs.listdir(directory):
        parsed = parse_segment_file_name(name)
        if (
            parsed
            and parsed[1] in (LOG_SUFFIX, INDEX_SUFFIX, TIMEINDEX_SUFFIX)
            and base <= parsed[0] < end
        ):
            with contextlib.suppress(FileNotFoundError):
                fs.unlink(directory / name)
    point = _read_recovery_point(fs, directory)
    if point is not None and base <= point.segment < end:
        # The checkpoint names a byte position in a segment this swap rewrites (the crash
        # came before the log moved it): without it, recovery checks the whole log.
        fs.unlink(directory / RECOVERY_CHECKPOINT_FILE)
    fsync_dir(fs, directory)
    fs.replace(swap, directory / segment_file_name(base, LOG_SUFFIX))
