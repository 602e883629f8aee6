"""File names and the few file-system routines the log builds from its :class:`FileSystem`.

A partition is a folder of segments, each named by its base offset as 20 zero-padded
digits so that a plain directory listing sorts them in offset order:
``00000000000000004096.log`` with its ``.index`` and ``.timeindex``. Files being written
as a unit are built under a temporary name and renamed into place, and every creation or
rename is followed by an fsync of the directory, because on Linux a new name is durable
only once its directory is.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from ._fs import FileSystem

LOG_SUFFIX = ".log"
INDEX_SUFFIX = ".index"
TIMEINDEX_SUFFIX = ".timeindex"
TMP_SUFFIX = ".tmp"
#: A segment marked for deletion: renamed first so that a crash mid-way finishes the delete.
DELETED_SUFFIX = ".deleted"
#: A compacted replacement that is complete; recovery finishes the swap it belongs to.
SWAP_SUFFIX = ".swap"
#: A compacted replacement still being written; recovery throws it away.
CLEANED_SUFFIX = ".cleaned"

#: The valid batches after a damaged range, split off by repair into a segment of their
#: own: ``<resume>.log.<segment>-<position>.split`` is the commit point of that repair;
#: recovery finishes it by cutting ``<segment>.log`` at ``<position>`` and renaming the
#: file to ``<resume>.log``.
SPLIT_SUFFIX = ".split"
#: Damaged bytes that repair moved aside: ``<segment>.log.<start>-<end>.quarantine``.
QUARANTINE_SUFFIX = ".quarantine"

CLEAN_SHUTDOWN_FILE = ".clean-shutdown"
RECOVERY_CHECKPOINT_FILE = "recovery-checkpoint"
#: Where a partition starts after records were deleted inside a segment (``_log_start.py``).
LOG_START_OFFSET_FILE = "log-start-offset"


def segment_file_name(base_offset: int, suffix: str) -> str:
    """Return the file name of a segment's file, e.g. ``00000000000000000042.log``."""
    return f"{base_offset:020d}{suffix}"


def parse_segment_file_name(name: str) -> tuple[int, str] | None:
    """Split ``<20 digits><suffix>`` into (base offset, suffix); ``None`` for other names."""
    stem, dot, rest = name.partition(".")
    if not dot or len(stem) != 20 or not stem.isdigit():
        return None
    return int(stem), "." + rest


def split_file_name(resume_offset: int, segment_base: int, position: int) -> str:
    """Name the commit file of a repair that splits a segment (see ``SPLIT_SUFFIX``)."""
    return f"{resume_offset:020d}{LOG_SUFFIX}.{segment_base:020d}-{position}{SPLIT_SUFFIX}"


def parse_split_file_name(name: str) -> tuple[int, int, int] | None:
    """Return (resume offset, segment base, position) of a split file's name, else ``None``."""
    parsed = parse_segment_file_name(name)
    if parsed is None or not parsed[1].endswith(SPLIT_SUFFIX):
        return None
    middle = parsed[1].removeprefix(LOG_SUFFIX + ".").removesuffix(SPLIT_SUFFIX)
    base, dash, position = middle.partition("-")
    if not dash or len(base) != 20 or not base.isdigit() or not position.isdigit():
        return None
    return parsed[0], int(base), int(position)


def quarantine_file_name(segment_base: int, start: int, end: int) -> str:
    """Name the file that holds bytes ``[start, end)`` of a segment moved aside by repair."""
    return f"{segment_base:020d}{LOG_SUFFIX}.{start}-{end}{QUARANTINE_SUFFIX}"


def fsync_dir(fs: FileSystem, path: Path) -> None:
    """Make the creations, renames and deletions inside directory ``path`` durable."""
    fd = fs.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fs.fsync(fd)
    finally:
        fs.close(fd)


def make_dirs(fs: FileSystem, path: Path) -> None:
    """Create directory ``path`` and its missing parents, each new name made durable.

    A new directory survives a power cut only once its parent has been fsynced, so each
    one created here is followed by an fsync of its parent. An existing ``path`` costs
    one lookup and writes nothing.
    """
    if fs.exists(path):
        return
    make_dirs(fs, path.parent)
    fs.mkdir(path, exist_ok=True)
    fsync_dir(fs, path.parent)


def atomic_write(fs: FileSystem, path: Path, data: bytes, *, sync_directory: bool = True) -> None:
    """Replace ``path`` with ``data`` so that a reader sees the old or the new bytes, never a mix.

    Without ``sync_directory`` the rename is durable only once the caller fsyncs the
    directory itself.

    :raises OSError: if the file system refuses; the old file is then untouched unless
        only the final directory fsync failed.
    """
    tmp = path.with_name(path.name + TMP_SUFFIX)
    fd = fs.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[fs.write(fd, view) :]
        fs.fsync(fd)
    except BaseException:
        fs.close(fd)
        with contextlib.suppress(OSError):
            fs.unlink(tmp)
        raise
    fs.close(fd)
    fs.replace(tmp, path)
    if sync_directory:
        fsync_dir(fs, path.parent)


def write_all(fs: FileSystem, fd: int, data: bytes | bytearray | memoryview) -> None:
    """Write every byte of ``data`` at the end of ``fd`` (opened with ``O_APPEND``)."""
    view = memoryview(data)
    while view:
        view = view[fs.write(fd, view) :]
