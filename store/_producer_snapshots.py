"""Producer state on disk: snapshot files, and rebuilding the state from the log at open.

Theory of operation
-------------------
The producer state of a partition (``_producer_state.py``) is derived data: every batch
carries its producer id, epoch and base sequence, every marker its type, so the state
is a function of the log. Replaying a whole log at each open would be slow, so the log
writes a *snapshot* -- ``<end offset, 20 digits>.snapshot``, the state covering every
batch below that offset -- when the active segment rolls (the rolled segment is fsynced
first, so the snapshot never describes more than is durable) and when it closes cleanly.

Opening loads the newest intact snapshot whose offset is at or below the log end, then
replays the batches from its offset to the log end (after a crash: at most what was
appended since the last roll or the last ``PRODUCER_SNAPSHOT_BYTES``; after a clean
close: nothing). Snapshots past the log end (a crash cut the tail
they describe) are deleted, as are those that fail their checksum; with none left the
whole log is replayed. Replaying reads batch headers only, and the one control record of
each marker.

Snapshot files are renamed into place whole, without an fsync of their own: a snapshot a
power cut tore fails its checksum and is ignored (an older one, or the whole log, is
replayed instead), so paying an fsync per roll would buy nothing. The newest two are
kept.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Sequence
from pathlib import Path

from ._batch import HEADER, BatchHeader
from ._control import read_marker
from ._errors import CorruptRecordError
from ._files import TMP_SUFFIX, parse_segment_file_name, segment_file_name, write_all
from ._fs import FileSystem
from ._producer_state import ProducerStateManager
from ._segment import Segment

logger = logging.getLogger("headwater.store")

SNAPSHOT_SUFFIX = ".snapshot"
KEPT_SNAPSHOTS = 2
_SCAN_CHUNK = 1 << 20
_HEADER_SIZE = HEADER.size


def snapshot_offsets(fs: FileSystem, directory: Path) -> list[int]:
    """Return the offsets of the snapshot files in ``directory``, ascending."""
    return sorted(
        parsed[0]
        for name in fs.listdir(directory)
        if (parsed := parse_segment_file_name(name)) and parsed[1] == SNAPSHOT_SUFFIX
    )


def write_snapshot(fs: FileSystem, directory: Path, state: ProducerStateManager) -> None:
    """Write ``state`` as ``<state.end_offset>.snapshot`` and drop all but the newest two.

    Nothing is fsynced (see the module docstring).

    :raises OSError: if the file cannot be written; the snapshot is only an accelerator.
    """
    path = directory / segment_file_name(state.end_offset, SNAPSHOT_SUFFIX)
    tmp = path.with_name(path.name + TMP_SUFFIX)
    fd = fs.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        write_all(fs, fd, state.to_snapshot())
    finally:
        fs.close(fd)
    fs.replace(tmp, path)
    for offset in snapshot_offsets(fs, directory)[:-KEPT_SNAPSHOTS]:
        with contextlib.suppress(FileNotFoundError):
            fs.unlink(directory / segment_file_name(offset, SNAPSHOT_SUFFIX))


def load_producer_state(
    fs: FileSystem,
    directory: Path,
    segments: Sequence[Segment],
    log_end_offset: int,
    *,
    now_ms: int,
    read_only: bool = False,
) -> ProducerStateManager:
    """Load the newest usable snapshot and replay the log after it (module docstring).

    ``read_only`` deletes nothing and stops replaying at damage instead of raising.

    :raises CorruptRecordError: (writable opens) if a marker cannot be decoded.
    """
    state: ProducerStateManager | None = None
    offsets = snapshot_offsets(fs, directory) if fs.exists(directory) else []
    for offset in reversed(offsets):
        path = directory / segment_file_name(offset, SNAPSHOT_SUFFIX)
        if offset <= log_end_offset:
            try:
                state = ProducerStateManager.from_snapshot(fs.read_bytes(path))
                if state.end_offset == offset:
                    break
                raise ValueError(f"it says it covers up to {state.end_offset}")
            except (OSError, ValueError) as exc:
                logger.warning("%s: ignoring producer snapshot (%s)", path, exc)
                state = None
        if not read_only:  # past the log end (a crash cut what it describes), or unusable
            with contextlib.suppress(FileNotFoundError):
                fs.unlink(path)
    if state is None:
        state = ProducerStateManager()
        state.end_offset = segments[0].base_offset if segments else 0
    try:
        replay(segments, state, log_end_offset, now_ms)
    except CorruptRecordError as exc:
        if not read_only:
            raise
        logger.info("%s: producer state replay stopped at damage: %s", directory, exc)
    state.end_offset = log_end_offset
    state.expire(now_ms)
    return state


def replay(
    segments: Sequence[Segment], state: ProducerStateManager, log_end_offset: int, now_ms: int
) -> None:
    """Record every producer batch from ``state.end_offset`` to ``log_end_offset``."""
    start = state.end_offset
    for segment in segments:
        if segment.next_offset <= start or segment.base_offset >= log_end_offset:
            continue
        found = segment.find_batch(max(start, segment.base_offset))
        if found is not None:
            _replay_segment(segment, found.position, state, now_ms)


def _replay_segment(
    segment: Segment, position: int, state: ProducerStateManager, now_ms: int
) -> None:
    end = segment.size
    chunk = b""
    chunk_start = position
    read_size = _SCAN_CHUNK
    while position + _HEADER_SIZE <= end:
        rel = position - chunk_start
        if rel < 0 or rel + _HEADER_SIZE > len(chunk):
            chunk_start, rel = position, 0
            chunk = segment.read(position, min(read_size, end - position))
            if len(chunk) < _HEADER_SIZE:
                break
        header = BatchHeader(*HEADER.unpack_from(chunk, rel))
        size = header.batch_length + 12
        if header.magic != 2 or size < _HEADER_SIZE:
            raise CorruptRecordError(
                "malformed batch header", position=position, path=str(segment.log_path)
            )
        if header.producer_id >= 0:
            marker = None
            if header.is_control:
                data = chunk
                at = rel
                if rel + size > len(chunk):
                    data, at = segment.read(position, size), 0
                marker = read_marker(data, header, at)
            state.record(header, header.base_offset, now_ms, marker)
        position += size
        # Big batches: read just the next header rather than the bytes in between.
        read_size = _HEADER_SIZE if size >= _SCAN_CHUNK // 16 else _SCAN_CHUNK
