"""Opening a partition's folder: finishing interrupted work and recovering after a crash.

Theory of operation. The log records a *recovery checkpoint* (see ``_checkpoint.py``)
after every flush whose fsyncs succeeded, before it acknowledges anything the flush
covered, and a *clean-shutdown marker* when it closes properly. Opening for writing:

1. Leftovers of interrupted work are settled: a repair that reached its commit point (a
   ``.split`` file) is finished by cutting the segment it came from and renaming the file
   into place; temporary files are removed; a compaction that reached its commit point (a
   ``.log.swap`` file) is completed by removing the segments it replaces (and the
   checkpoint, if it points into one of them) and renaming it into place; a compaction
   that did not (a ``.cleaned`` file) is thrown away; index files without a ``.log`` are
   removed.
2. Segments before the checkpoint are trusted: their indexes are read from disk, or
   rebuilt from batch headers when missing or inconsistent. So is the checkpoint's own
   segment up to the checkpoint's position, provided it is still the last segment (an
   earlier one may have been rewritten by compaction since; it is then checked whole).
3. Everything after the checkpoint was possibly never written completely. Each batch there
   is verified (framing, CRC, offsets that only grow). At the first invalid one, a search
   for a plausible batch after it (see ``_damage.py``) tells the two kinds of damage apart:

   * none follows in the last segment: a *torn tail*, the end of an interrupted write,
     which was never acknowledged (it lies after the checkpoint); the segment is cut there;
   * valid batches follow, or the damage is in an earlier segment or before the
     checkpoint: this is no torn write, and acknowledged records may lie after it. Nothing
     is deleted: :class:`CorruptRecordError` names the file, the byte range and the
     offsets around it, and says how to repair (``_repair.py`` moves the damaged bytes
     aside when the user asks).

After a clean shutdown the checkpoint is the end of the log, so step 3 reads nothing and
opening costs a directory listing and the index files.

Opening read-only (a read-only store, and repair before it changes anything) writes
nothing, not even on a read-only file system. It sees the folder as a writer's open would
leave it: temporary and unfinished files are ignored, a finished compaction's swap file
is read in place of the segments it replaces, a finished repair's split file in place of
the tail it cut; a torn tail is cut in memory only; indexes are rebuilt in memory; and
damage with valid batches after it is remembered (``Segment.damaged``) rather than
refused, so that readers get every valid batch and an error naming the damaged range.
Verifying (for repair) also checks every batch of every segment, ignoring the checkpoint
and the index files, and reports a torn tail as damage instead of cutting it.
"""

from __future__ import annotations

import contextlib
import enum
import logging
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from ._batch import verify_batch
from ._checkpoint import RecoveryPoint, read_recovery_point
from ._damage import damage_start, damaged_range, note_damage
from ._errors import CorruptRecordError, DamagedRange
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
    fsync_dir,
    parse_segment_file_name,
    parse_split_file_name,
    segment_file_name,
)
from ._fs import FileSystem
from ._index import IndexFormatError, OffsetIndex, TimeIndex
from ._segment import Segment

logger = logging.getLogger("headwater.store")

_VERIFY_CHUNK = 8 << 20
# base_offset and batch_length: enough to know how many bytes a batch needs.
_LENGTH = struct.Struct(">8xi")

#: What a refused open tells the user to do about damage.
REPAIR_HINT = (
    "this is not a torn tail, so nothing was deleted; `headwater repair` moves the damaged "
    "bytes aside into a quarantine file and keeps every valid batch after them"
)


class LoadMode(enum.Enum):
    """How to open a partition's folder (see the module docstring)."""

    WRITE = "write"
    READ = "read"
    VERIFY = "verify"


@dataclass(slots=True)
class LoadResult:
    """What opening a partition folder found."""

    segments: list[Segment]
    clean: bool
    truncated_bytes: int
    #: Segments whose indexes were rebuilt in memory; their index files are stale.
    rebuilt: list[Segment]
    #: Damage remembered rather than refused (read-only and verifying opens), in log order.
    damaged: list[DamagedRange] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class _SegmentFile:
    """A segment as a read-only open sees it: which file, and where it ends."""

    base: int
    path: Path | None = None  # None: <base>.log
    limit: int | None = None  # cut short by a repair's unfinished split


def load_segments(
    fs: FileSystem,
    directory: Path,
    *,
    index_interval_bytes: int,
    now_ms: int,
    mode: LoadMode = LoadMode.WRITE,
) -> LoadResult:
    """Open every segment in ``directory``, recovering after a crash as the module describes.

    Returns the segments in offset order (possibly none). The clean-shutdown marker is
    left in place: the log removes it before its first change, so that a crash from
    then on is recognised as one, while a session that only reads writes nothing.

    :raises CorruptRecordError: (opening for writing) on damage that is not a torn tail.
    """
    if mode is LoadMode.WRITE:
        settle_leftovers(fs, directory)
        files = [_SegmentFile(base) for base in _log_bases(fs, directory)]
    else:
        files = _view(fs, directory)
    clean = fs.exists(directory / CLEAN_SHUTDOWN_FILE)
    point = None if mode is LoadMode.VERIFY else _read_point(fs, directory)
    segments: list[Segment] = []
    try:
        for f in files:
            segment = Segment.open_file(
                fs,
                directory,
                f.base,
                index_interval_bytes=index_interval_bytes,
                now_ms=now_ms,
                path=f.path,
                read_only=mode is not LoadMode.WRITE,
            )
            segments.append(segment)
            if f.limit is not None and segment.size > f.limit:
                segment.size = f.limit
        recovery = _Recovery(mode)
        viewed = {f.base for f in files if f.path is not None or f.limit is not None}
        recovery.run(segments, point, clean, viewed)
    except BaseException:
        for segment in segments:
            segment.close()
        raise
    return LoadResult(segments, clean, recovery.truncated, recovery.rebuilt, recovery.damaged)


class _Recovery:
    """Steps 2 and 3 of the module docstring, and what to do about damage in each mode."""

    def __init__(self, mode: LoadMode) -> None:
        self.mode = mode
        self.truncated = 0
        self.rebuilt: list[Segment] = []
        self.damaged: list[DamagedRange] = []
        #: How far the checkpoint says acknowledgements went (its offset).
        self.acknowledged = 0

    def run(
        self,
        segments: list[Segment],
        point: RecoveryPoint | None,
        clean: bool,
        viewed: set[int],
    ) -> None:
        if not segments:
            return
        self.acknowledged = 0 if point is None else point.offset
        point = _usable_point(segments, point)
        for i, segment in enumerate(segments):
            upper = segments[i + 1].base_offset if i + 1 < len(segments) else None
            if self.mode is LoadMode.VERIFY:
                self._verify(segment, 0, upper)
            elif segment.base_offset < point.segment:
                if segment.base_offset in viewed:
                    # A file read in place of another has no index files of its own.
                    rebuild_indexes(segment, segment.size, upper, self.damage)
                    self.rebuilt.append(segment)
                elif not self._load_trusted(segment, upper):
                    self.rebuilt.append(segment)
            elif segment.base_offset == point.segment:
                start = self._checkpoint_start(segment, point)
                if (
                    clean
                    and start == segment.size
                    and segment.base_offset not in viewed
                    and self._load_trusted(segment, upper)
                ):
                    continue
                reached = rebuild_indexes(segment, start, upper, self.damage)
                self._verify(segment, max(start, reached), upper)
                self.rebuilt.append(segment)
            else:
                self._verify(segment, 0, upper)
                self.rebuilt.append(segment)

    def _checkpoint_start(self, segment: Segment, point: RecoveryPoint) -> int:
        if segment.size >= point.position:
            return point.position
        missing = (
            f"segment is {segment.size} bytes, shorter than its recovery point "
            f"{point.position}: data acknowledged as durable is missing"
        )
        if self.mode is LoadMode.WRITE:
            raise CorruptRecordError(
                missing,
                path=str(segment.log_path),
                hint="`headwater repair` checks every batch and lets the log open again",
            )
        logger.warning("%s: %s; checking the whole segment", segment.log_path, missing)
        return 0

    def _load_trusted(self, segment: Segment, upper: int | None) -> bool:
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
            rebuild_indexes(segment, segment.size, upper, self.damage)
            return False
        return True

    def _verify(self, segment: Segment, start: int, upper: int | None) -> None:
        """Verify every batch from ``start`` on (framing, CRC, offsets), noting each."""
        end = segment.size
        position = start
        buf = b""
        buf_start = start
        while position < end:
            rel = position - buf_start
            need = _LENGTH.size
            if rel >= 0 and rel + need <= len(buf):
                need = max(need, _LENGTH.unpack_from(buf, rel)[0] + 12)
            if rel < 0 or rel + need > len(buf):
                buf = segment.read(position, min(end - position, max(_VERIFY_CHUNK, need)))
                buf_start, rel = position, 0
            try:
                header = verify_batch(buf, rel)
                next_offset = header.base_offset + header.last_offset_delta + 1
                problem = _offset_problem(segment, header.base_offset, next_offset, upper)
                if problem:
                    raise CorruptRecordError(problem)
            except CorruptRecordError as exc:
                resumed = self.damage(
                    segment, position, exc.reason, upper, end, trusted_before=start
                )
                if resumed is None:
                    return
                position = resumed
                continue
            size = header.batch_length + 12
            segment.note_batch(
                position, header.base_offset, next_offset, size, header.max_timestamp
            )
            position += size

    def damage(
        self,
        segment: Segment,
        position: int,
        reason: str,
        upper: int | None,
        file_end: int,
        *,
        trusted_before: int,
    ) -> int | None:
        """Deal with damage at ``position`` as the mode says.

        Damage that starts before ``trusted_before`` (the checkpoint, in its segment) is
        never a torn tail. Returns the position to go on from, or ``None`` when the
        segment ends here.

        :raises CorruptRecordError: when opening for writing, unless it is a torn tail.
        """
        segment.size = file_end
        # A walk of headers alone may have followed a damaged length past the real start
        # of the damage: find it by checking CRCs from the last index entry before it.
        position, first = damage_start(segment, position)
        trusted = position < trusted_before
        segment.index.truncate_to_position(position)
        segment.time_index.truncate_to_offset(first)
        segment.next_offset = first
        # Damage before the checkpoint that runs to the end of the log hides what was
        # acknowledged, up to the checkpoint's offset: reading resumes after that.
        end_offset = upper
        if upper is None and trusted and self.acknowledged > first:
            end_offset = self.acknowledged
        damage = damaged_range(segment, position, first, upper, end_offset)
        torn = upper is None and damage.resume_offset is None and not trusted
        if torn and self.mode is not LoadMode.VERIFY:
            # Only a writer's open changes anything worth a warning.
            logger.log(
                logging.WARNING if self.mode is LoadMode.WRITE else logging.INFO,
                "%s: cutting a torn tail of %d bytes at position %d (%s)%s",
                segment.log_path,
                file_end - position,
                position,
                reason,
                " in memory only" if self.mode is LoadMode.READ else "",
            )
            segment.truncate_to_position(position, in_memory=self.mode is LoadMode.READ)
            self.truncated += file_end - position
            return None
        if self.mode is LoadMode.WRITE:
            raise CorruptRecordError(
                reason,
                position=position,
                path=str(segment.log_path),
                damage=damage,
                hint=REPAIR_HINT,
            )
        logger.info("%s: %s", segment.log_path, CorruptRecordError(reason, damage=damage))
        self.damaged.append(damage)
        note_damage(segment, damage, index=False)
        if damage.resume_offset is None or damage.end_position >= file_end:
            # Readers that reach it get the error; the segment's offsets end where it says.
            segment.next_offset = first if damage.resume_offset is None else damage.resume_offset
            return None
        segment.skip_to(damage.resume_offset)
        return damage.end_position


def _usable_point(segments: list[Segment], point: RecoveryPoint | None) -> RecoveryPoint:
    """The checkpoint as far as it can be trusted (see step 2 of the module docstring)."""
    last = segments[-1].base_offset
    if point is not None and point.segment != last:
        point = RecoveryPoint(point.offset, point.segment, 0)
    if point is None or not any(s.base_offset == point.segment for s in segments):
        point = RecoveryPoint(0, segments[0].base_offset, 0)
    return point


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


class _OnDamage(Protocol):
    """The signature of :meth:`_Recovery.damage`, for :func:`rebuild_indexes`."""

    def __call__(
        self,
        segment: Segment,
        position: int,
        reason: str,
        upper: int | None,
        file_end: int,
        *,
        trusted_before: int,
    ) -> int | None: ...


def rebuild_indexes(
    segment: Segment, end: int, upper: int | None, on_damage: _OnDamage | None = None
) -> int:
    """Rebuild a segment's indexes from its batch headers up to ``end`` (no CRC checks).

    Damage is passed to ``on_damage`` (see :meth:`_Recovery.damage`), which says where to
    go on; without one it is raised. Returns the position the walk reached (``end``, or
    past it when damage straddles it).

    :raises CorruptRecordError: if the headers do not frame ``[0, end)`` exactly.
    """
    real_size = segment.size
    segment.reset_indexes()
    position = 0
    try:
        while position < end:
            try:
                for batch in segment.iter_batches(position, end):
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
                position = end
            except CorruptRecordError as exc:
                if on_damage is None or exc.position is None:
                    raise
                resumed = on_damage(
                    segment, exc.position, exc.reason, upper, real_size, trusted_before=end
                )
                if resumed is None:
                    return real_size
                position = resumed
    finally:
        segment.size = real_size
    return position


def _read_point(fs: FileSystem, directory: Path) -> RecoveryPoint | None:
    point = read_recovery_point(fs, directory)
    if point is None and fs.exists(directory / RECOVERY_CHECKPOINT_FILE):
        logger.warning("%s: unreadable recovery checkpoint; checking the whole log", directory)
    return point


def _log_bases(fs: FileSystem, directory: Path) -> list[int]:
    return sorted(
        parsed[0]
        for name in fs.listdir(directory)
        if (parsed := parse_segment_file_name(name)) and parsed[1] == LOG_SUFFIX
    )


def _view(fs: FileSystem, directory: Path) -> list[_SegmentFile]:
    """The segments as a writer's open would leave them, without changing anything."""
    names = sorted(fs.listdir(directory))
    paths: dict[int, Path | None] = dict.fromkeys(_log_bases(fs, directory))
    limits: dict[int, int] = {}
    for name in names:
        split = parse_split_file_name(name)
        if split is not None:
            resume, base, position = split
            paths[resume] = directory / name
            limits[base] = min(limits.get(base, position), position)
    for name in names:
        parsed = parse_segment_file_name(name)
        if parsed and parsed[1] == LOG_SUFFIX + SWAP_SUFFIX:
            base = parsed[0]
            next_offset = _swap_end(fs, directory / name, base)
            for replaced in [b for b in paths if base <= b < next_offset]:
                del paths[replaced]
            paths[base] = directory / name
    return [_SegmentFile(base, paths[base], limits.get(base)) for base in sorted(paths)]


def _swap_end(fs: FileSystem, swap: Path, base: int) -> int:
    """The offset after a swap file's last batch (at least ``base + 1``), checking every CRC."""
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
    return max(next_offset, base + 1)


def settle_leftovers(fs: FileSystem, directory: Path) -> None:
    """Step 1 of the module docstring: finish or throw away interrupted work."""
    changed = False
    for name in sorted(fs.listdir(directory)):
        if parse_split_file_name(name) is not None:
            finish_split(fs, directory, name)
            changed = True
    for name in fs.listdir(directory):
        if name.endswith((TMP_SUFFIX, DELETED_SUFFIX, CLEANED_SUFFIX)):
            fs.unlink(directory / name)
            changed = True
    for name in sorted(fs.listdir(directory)):
        parsed = parse_segment_file_name(name)
        if parsed and parsed[1] == LOG_SUFFIX + SWAP_SUFFIX:
            _finish_swap(fs, directory, parsed[0])
            changed = True
    logs = set(_log_bases(fs, directory))
    for name in fs.listdir(directory):
        parsed = parse_segment_file_name(name)
        if parsed and parsed[1] in (INDEX_SUFFIX, TIMEINDEX_SUFFIX) and parsed[0] not in logs:
            fs.unlink(directory / name)
            changed = True
    if changed:
        fsync_dir(fs, directory)


def finish_split(fs: FileSystem, directory: Path, name: str) -> None:
    """Finish a repair past its commit point: cut ``<base>.log`` at ``position``, rename
    the split file ``name`` to ``<resume>.log``. Idempotent; the caller fsyncs the folder.
    """
    parsed = parse_split_file_name(name)
    assert parsed is not None, name
    resume, base, position = parsed
    try:
        fd = fs.open(directory / segment_file_name(base, LOG_SUFFIX), os.O_RDWR)
    except FileNotFoundError:
        pass
    else:
        try:
            if fs.fstat(fd).st_size > position:
                fs.ftruncate(fd, position)
                fs.fsync(fd)
        finally:
            fs.close(fd)
    for suffix in (INDEX_SUFFIX, TIMEINDEX_SUFFIX):
        with contextlib.suppress(FileNotFoundError):
            fs.unlink(directory / segment_file_name(base, suffix))
    fs.replace(directory / name, directory / segment_file_name(resume, LOG_SUFFIX))


def _finish_swap(fs: FileSystem, directory: Path, base: int) -> None:
    """Complete a compaction whose replacement segment reached its commit point."""
    swap = directory / segment_file_name(base, LOG_SUFFIX + SWAP_SUFFIX)
    end = _swap_end(fs, swap, base)
    for name in fs.listdir(directory):
        parsed = parse_segment_file_name(name)
        if (
            parsed
            and parsed[1] in (LOG_SUFFIX, INDEX_SUFFIX, TIMEINDEX_SUFFIX)
            and base <= parsed[0] < end
        ):
            with contextlib.suppress(FileNotFoundError):
                fs.unlink(directory / name)
    point = read_recovery_point(fs, directory)
    if point is not None and base <= point.segment < end:
        # The checkpoint names a byte position in a segment this swap rewrites (the crash
        # came before the log moved it): without it, recovery checks the whole log.
        fs.unlink(directory / RECOVERY_CHECKPOINT_FILE)
    fsync_dir(fs, directory)
    fs.replace(swap, directory / segment_file_name(base, LOG_SUFFIX))
