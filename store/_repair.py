"""Repair: move the damaged bytes of a partition's log aside, keeping every valid batch.

Theory of operation. Recovery never deletes damage that has valid batches after it (see
``_loader.py``); the log then refuses to open for writing until a user asks for repair.
Repair first verifies every batch of every segment (ignoring the checkpoint and the index
files) and finds each damaged range with the search of ``_damage.py``. For each one, in a
segment ``S`` with damaged bytes ``[p, q)``:

1. the bytes ``[p, q)`` are copied to ``<S>.log.<p>-<q>.quarantine`` in the partition
   folder (temporary name, fsync, rename, directory fsync): nothing is ever deleted;
2. the valid batches after the damage, ``[q, end)``, are copied to a new segment named
   by their first offset ``R``, written as ``<R>.log.cleaned`` (thrown away by recovery if
   a crash interrupts) and fsynced; renaming it to ``<R>.log.<S>-<p>.split`` is the commit
   point. Finishing (here, or by recovery after a crash) cuts ``S`` at ``p``, fsyncs it
   and renames the split file to ``<R>.log``.

The offsets the damage held are now a gap between ``S`` and ``R``, which readers step
over as they do the gaps compaction leaves. When the damage runs to the end of ``S``, the
new segment holds a single empty batch instead, at the last offset the damage held (as
compaction ends a rewritten range), so that the log never ends in a gap: the next segment
begins after it, or, at the end of the log, the next append gets an offset no
acknowledged record had (the checkpoint says how far acknowledgements went). Only a torn
tail past the checkpoint, which nothing acknowledged, is simply cut off.

Ranges in one segment are handled from the last to the first, so that each one's
positions stay valid. Before any of it, the clean-shutdown marker and the index files of
the segments to be cut are removed and the recovery checkpoint is moved back before the
first damaged segment, so that the next open checks what changed.

Every step is idempotent and a crash at any point leaves either the damage in place (run
repair again: it finds the same ranges and writes the same files) or a committed split
that recovery finishes. Without ``apply`` nothing is written: the report says what would
be done.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path

from ._batch import encode_empty_batch
from ._checkpoint import RecoveryPoint, read_recovery_point, write_recovery_point
from ._config import TopicConfig
from ._errors import DamagedRange, TopicNotFoundError
from ._files import (
    CLEAN_SHUTDOWN_FILE,
    CLEANED_SUFFIX,
    INDEX_SUFFIX,
    LOG_SUFFIX,
    TIMEINDEX_SUFFIX,
    TMP_SUFFIX,
    atomic_write,
    fsync_dir,
    parse_segment_file_name,
    quarantine_file_name,
    segment_file_name,
    split_file_name,
)
from ._fs import OS_FILE_SYSTEM, FileSystem
from ._loader import LoadMode, finish_split, load_segments, settle_leftovers
from ._store import TOPIC_CONFIG_FILE, Store

_COPY_CHUNK = 8 << 20


@dataclass(frozen=True, slots=True)
class RepairAction:
    """What repair does (or would do) about one damaged range."""

    damage: DamagedRange
    #: The file that holds the damaged bytes once moved aside.
    quarantine: Path
    #: The segment that continues the log after the damage (``None``: a torn tail that
    #: nothing acknowledged, which is only cut off).
    new_segment: Path | None
    #: Whether ``new_segment`` holds the valid batches that followed the damage, or a
    #: single empty batch that keeps the offsets the damage held from being used again.
    keeps_batches: bool
    #: The timestamp of that empty batch (the damaged segment's largest before it).
    timestamp_ms: int = -1

    @property
    def size(self) -> int:
        """How many damaged bytes are moved aside."""
        return self.damage.end_position - self.damage.position

    def describe(self) -> str:
        """Say what is moved where, after a verb ("moved ...", "would move ...")."""
        damage = self.damage
        first = damage.last_good_offset + 1
        if damage.resume_offset is None:
            offsets = f"offsets from {first} to the end of the log"
        elif damage.resume_offset > first + 1:
            offsets = f"offsets {first} to {damage.resume_offset - 1}"
        elif damage.resume_offset == first + 1:
            offsets = f"offset {first}"
        else:
            offsets = "no offsets"
        line = (
            f"bytes {damage.position} to {damage.end_position} of {Path(damage.path).name} "
            f"({self.size} bytes; {offsets}) to {self.quarantine.name}"
        )
        if self.new_segment is not None and self.keeps_batches:
            line += (
                f"; the valid batches after them (from offset {damage.resume_offset}) "
                f"to {self.new_segment.name}"
            )
        elif self.new_segment is not None:
            line += (
                f"; an empty batch in {self.new_segment.name} keeps those offsets from "
                "being used again"
            )
        return line


@dataclass(frozen=True, slots=True)
class RepairReport:
    """What :func:`repair_partition` found in one partition folder and did about it."""

    directory: Path
    actions: tuple[RepairAction, ...]
    applied: bool

    @property
    def damaged(self) -> bool:
        """Whether any damage was found."""
        return bool(self.actions)


def repair_partition(
    directory: Path, config: TopicConfig, *, apply: bool, fs: FileSystem = OS_FILE_SYSTEM
) -> RepairReport:
    """Find every damaged range in the log in ``directory`` and, with ``apply``, move each
    aside as the module docstring describes.

    The caller must own the data directory (no log may be open on ``directory``).

    :raises OSError: if a file cannot be read or written; a rerun picks up from there.
    """
    if not fs.exists(directory):
        return RepairReport(directory, (), apply)
    if apply:
        settle_leftovers(fs, directory)
    result = load_segments(
        fs,
        directory,
        index_interval_bytes=config.index_interval_bytes,
        now_ms=0,
        mode=LoadMode.VERIFY,
    )
    timestamps = {str(s.log_path): s.max_timestamp for s in result.segments}
    for segment in result.segments:
        segment.close()
    point = read_recovery_point(fs, directory)
    acknowledged = 0 if point is None else point.offset
    actions = tuple(
        _plan(fs, directory, damage, acknowledged, timestamps[damage.path])
        for damage in result.damaged
    )
    if apply and actions:
        _apply(fs, directory, actions)
    return RepairReport(directory, actions, apply)


def _plan(
    fs: FileSystem, directory: Path, damage: DamagedRange, acknowledged: int, timestamp: int
) -> RepairAction:
    path = Path(damage.path)
    parsed = parse_segment_file_name(path.name)
    assert parsed is not None, path  # a .log (or, before settling, a .swap or .split)
    base = parsed[0]
    quarantine = directory / quarantine_file_name(base, damage.position, damage.end_position)
    if damage.resume_offset is not None and damage.end_position < _size(fs, path):
        name = segment_file_name(damage.resume_offset, LOG_SUFFIX)
        return RepairAction(damage, quarantine, directory / name, keeps_batches=True)
    # Nothing valid follows in this segment: an empty batch holds the last offset the
    # damage (or, at the end of the log, the acknowledgements) reached.
    end = damage.resume_offset if damage.resume_offset is not None else acknowledged
    if end <= damage.last_good_offset + 1:
        return RepairAction(damage, quarantine, None, keeps_batches=False)
    name = segment_file_name(end - 1, LOG_SUFFIX)
    return RepairAction(damage, quarantine, directory / name, False, timestamp)


def _apply(fs: FileSystem, directory: Path, actions: tuple[RepairAction, ...]) -> None:
    bases = sorted({_segment_base(a) for a in actions})
    with contextlib.suppress(FileNotFoundError):
        fs.unlink(directory / CLEAN_SHUTDOWN_FILE)
    for base in bases:
        for suffix in (INDEX_SUFFIX, TIMEINDEX_SUFFIX):
            with contextlib.suppress(FileNotFoundError):
                fs.unlink(directory / segment_file_name(base, suffix))
    point = read_recovery_point(fs, directory)
    if point is not None and (point.segment, point.position) > (bases[0], 0):
        # Its offset stays: how far acknowledgements went, should a rerun need it.
        write_recovery_point(fs, directory, RecoveryPoint(point.offset, bases[0], 0))
    fsync_dir(fs, directory)
    for action in sorted(
        actions, key=lambda a: (_segment_base(a), a.damage.position), reverse=True
    ):
        _move_aside(fs, directory, action)


def _segment_base(action: RepairAction) -> int:
    parsed = parse_segment_file_name(Path(action.damage.path).name)
    assert parsed is not None
    return parsed[0]


def _move_aside(fs: FileSystem, directory: Path, action: RepairAction) -> None:
    damage = action.damage
    source = Path(damage.path)
    _copy_range(fs, source, damage.position, damage.end_position, action.quarantine)
    fsync_dir(fs, directory)  # the quarantined copy is durable before anything is cut
    if action.new_segment is None:
        fd = fs.open(source, os.O_RDWR)
        try:
            fs.ftruncate(fd, damage.position)
            fs.fsync(fd)
        finally:
            fs.close(fd)
        return
    parsed = parse_segment_file_name(action.new_segment.name)
    assert parsed is not None
    cleaned = action.new_segment.with_name(action.new_segment.name + CLEANED_SUFFIX)
    if action.keeps_batches:
        _copy_range(fs, source, damage.end_position, _size(fs, source), cleaned, rename=False)
    else:
        atomic_write(
            fs,
            cleaned,
            encode_empty_batch(parsed[0], action.timestamp_ms),
            sync_directory=False,
        )
    base = _segment_base(action)
    split = directory / split_file_name(parsed[0], base, damage.position)
    fs.replace(cleaned, split)
    fsync_dir(fs, directory)  # the commit point
    finish_split(fs, directory, split.name)
    fsync_dir(fs, directory)


def _size(fs: FileSystem, path: Path) -> int:
    fd = fs.open(path, os.O_RDONLY)
    try:
        return fs.fstat(fd).st_size
    finally:
        fs.close(fd)


def _copy_range(
    fs: FileSystem, source: Path, start: int, end: int, target: Path, *, rename: bool = True
) -> None:
    """Copy bytes ``[start, end)`` of ``source`` to ``target``, fsynced.

    With ``rename`` the copy is written under a temporary name and renamed into place (the
    caller fsyncs the directory); without, it is written as ``target`` itself.
    """
    written = target.with_name(target.name + TMP_SUFFIX) if rename else target
    src = fs.open(source, os.O_RDONLY)
    try:
        dst = fs.open(written, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            position = start
            while position < end:
                data = fs.pread(src, min(_COPY_CHUNK, end - position), position)
                if not data:
                    raise OSError(f"{source}: ended at {position} while copying to {end}")
                view = memoryview(data)
                while view:
                    view = view[fs.write(dst, view) :]
                position += len(data)
            fs.fsync(dst)
        finally:
            fs.close(dst)
    finally:
        fs.close(src)
    if rename:
        fs.replace(written, target)


def repair_topic(
    path: Path,
    topic: str,
    partition: int | None = None,
    *,
    apply: bool,
    fs: FileSystem = OS_FILE_SYSTEM,
) -> list[RepairReport]:
    """Repair partition ``partition`` (default: every partition) of ``topic`` in the data
    directory ``path``, holding the directory's lock meanwhile; see :func:`repair_partition`.

    :raises TopicNotFoundError: if there is no such topic or partition.
    :raises DataDirectoryLockedError: if another process has the directory open.
    """
    folder = Path(path) / topic
    try:
        config = TopicConfig.from_json(fs.read_bytes(folder / TOPIC_CONFIG_FILE))
    except FileNotFoundError:
        raise TopicNotFoundError(f"unknown topic {topic!r} in {path}") from None
    if partition is not None and not 0 <= partition < config.partitions:
        raise TopicNotFoundError(
            f"topic {topic!r} has no partition {partition} (it has {config.partitions})"
        )
    indexes = range(config.partitions) if partition is None else [partition]
    # Taking the lock as a store would (nothing else of the store is opened: it would
    # refuse the damage this is about).
    owner = Store(Path(path), read_only=not apply, fs=fs)
    owner._lock()
    try:
        return [repair_partition(folder / str(i), config, apply=apply, fs=fs) for i in indexes]
    finally:
        owner._unlock()
