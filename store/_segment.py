"""One segment of a partition: a ``.log`` file of record batches and its sparse indexes.

Theory of operation. A segment owns one file descriptor opened for appending; batches are
written at its end with ``write`` and read anywhere with ``pread`` (through the store's
:class:`FileSystem`), so a reader
never moves a file position the writer depends on, and many readers may run beside the
one writer. The indexes live in memory while the segment is open and are written to
``.index`` / ``.timeindex`` when the segment stops being the active one and when the log
closes cleanly; they are rebuilt from the ``.log`` whenever they are missing or suspect.

A failed write (a full disk, a file-size limit) is undone by truncating the file back to
its size before the write, so a segment never holds a partial batch that its writer did
not also acknowledge. The offsets a segment covers are ``[base_offset, next_offset)``.

A segment removed by retention or compaction may still be under a reader's ``pread`` in a
worker thread; it is closed only once the last such reader has let go (``pin``/``unpin``)
so that its descriptor number is never reused under a reader.

A segment remembers the damaged byte ranges found in it (``damaged``, usually empty; see
``_damage.py``), and its offset index gets an entry at the first batch after each, so a
lookup of an offset past the damage starts there instead of walking through it. A segment
opened read-only (a read-only store, or repair looking before it changes anything) may be
read from a file of another name (a finished compaction's ``.swap``, a repair's
``.split``) and may be cut short in memory only.
"""

from __future__ import annotations

import contextlib
import os
import struct
from collections.abc import Iterator
from pathlib import Path

from ._batch import verify_batch
from ._errors import CorruptRecordError, DamagedRange
from ._files import (
    INDEX_SUFFIX,
    LOG_SUFFIX,
    TIMEINDEX_SUFFIX,
    atomic_write,
    segment_file_name,
    write_all,
)
from ._fs import FileSystem
from ._index import OffsetIndex, TimeIndex

# The fields of a batch header a scan needs, from its first 43 bytes:
# base_offset, batch_length, partition_leader_epoch, magic, crc, attributes,
# last_offset_delta, base_timestamp, max_timestamp.
_HOP = struct.Struct(">qiibIhiqq")
HOP_SIZE = _HOP.size
#: Smallest batch_length a well-formed v2 batch can have (a header with no records).
MIN_BATCH_LENGTH = 49
_SCAN_CHUNK = 64 << 10


class BatchPosition:
    """Where one batch sits in a segment, and the offsets and time it covers."""

    __slots__ = ("base_offset", "max_timestamp", "next_offset", "position", "size")

    def __init__(
        self, position: int, base_offset: int, next_offset: int, size: int, max_timestamp: int
    ) -> None:
        self.position = position
        self.base_offset = base_offset
        self.next_offset = next_offset
        self.size = size
        self.max_timestamp = max_timestamp


class Segment:
    """A ``.log`` file of batches covering ``[base_offset, next_offset)`` and its indexes.

    Concurrency: one writer (``append``, ``truncate_to_position``); readers may call
    ``read`` and ``find_batch`` concurrently, from worker threads too.
    """

    __slots__ = (
        "_bytes_since_index",
        "_closed",
        "_deleted",
        "_fd",
        "_path",
        "_pins",
        "_running_max",
        "base_offset",
        "created_ms",
        "damaged",
        "directory",
        "fs",
        "index",
        "index_interval_bytes",
        "max_timestamp",
        "next_offset",
        "size",
        "time_index",
    )

    def __init__(
        self,
        fs: FileSystem,
        directory: Path,
        base_offset: int,
        fd: int,
        *,
        size: int,
        next_offset: int,
        index: OffsetIndex,
        time_index: TimeIndex,
        max_timestamp: int,
        index_interval_bytes: int,
        created_ms: int,
    ) -> None:
        self.fs = fs
        self.directory = directory
        self.base_offset = base_offset
        self._fd = fd
        self.size = size
        self.next_offset = next_offset
        self.index = index
        self.time_index = time_index
        self.max_timestamp = max_timestamp
        self.index_interval_bytes = index_interval_bytes
        self.created_ms = created_ms
        self._bytes_since_index = index_interval_bytes  # the next batch gets an entry
        self._running_max = (max_timestamp, base_offset)
        self._pins = 0
        self._deleted = False
        self._closed = fd < 0
        self._path: Path | None = None
        #: Damaged byte ranges found so far, in file order (see the module docstring).
        self.damaged: list[DamagedRange] = []

    # -- opening -----------------------------------------------------------------------

    @classmethod
    def create(
        cls,
        fs: FileSystem,
        directory: Path,
        base_offset: int,
        *,
        index_interval_bytes: int,
        now_ms: int,
    ) -> Segment:
        """Create the empty files of a new segment (the caller fsyncs the directory)."""
        path = directory / segment_file_name(base_offset, LOG_SUFFIX)
        fd = fs.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o644)
        return cls._empty(
            fs,
            directory,
            base_offset,
            fd,
            size=0,
            index_interval_bytes=index_interval_bytes,
            now_ms=now_ms,
        )

    @classmethod
    def open_file(
        cls,
        fs: FileSystem,
        directory: Path,
        base_offset: int,
        *,
        index_interval_bytes: int,
        now_ms: int = 0,
        path: Path | None = None,
        read_only: bool = False,
    ) -> Segment:
        """Open an existing ``.log`` with empty indexes; the loader fills in the rest.

        A reopened segment's age for ``segment_ms`` counts from ``now_ms``. ``path``
        (read-only segments only) names a file other than ``<base>.log`` to read.
        """
        assert path is None or read_only, "only a read-only segment reads another file"
        name = path or directory / segment_file_name(base_offset, LOG_SUFFIX)
        fd = fs.open(name, os.O_RDONLY if read_only else os.O_RDWR | os.O_APPEND)
        size = fs.fstat(fd).st_size
        segment = cls._empty(
            fs,
            directory,
            base_offset,
            fd,
            size=size,
            index_interval_bytes=index_interval_bytes,
            now_ms=now_ms,
        )
        segment._path = path
        return segment

    @classmethod
    def placeholder(
        cls, fs: FileSystem, directory: Path, base_offset: int, *, index_interval_bytes: int
    ) -> Segment:
        """An empty segment with no file, for a read-only log whose folder holds none."""
        return cls._empty(
            fs,
            directory,
            base_offset,
            -1,
            size=0,
            index_interval_bytes=index_interval_bytes,
            now_ms=0,
        )

    @classmethod
    def _empty(
        cls,
        fs: FileSystem,
        directory: Path,
        base_offset: int,
        fd: int,
        *,
        size: int,
        index_interval_bytes: int,
        now_ms: int,
    ) -> Segment:
        """A segment over ``fd`` whose indexes and offsets are still to be filled in."""
        return cls(
            fs,
            directory,
            base_offset,
            fd,
            size=size,
            next_offset=base_offset,
            index=OffsetIndex(base_offset),
            time_index=TimeIndex(base_offset),
            max_timestamp=-1,
            index_interval_bytes=index_interval_bytes,
            created_ms=now_ms,
        )

    @property
    def log_path(self) -> Path:
        """Path of the ``.log`` file (or of the file a read-only segment reads instead)."""
        if self._path is not None:
            return self._path
        return self.directory / segment_file_name(self.base_offset, LOG_SUFFIX)

    @property
    def index_path(self) -> Path:
        """Path of the ``.index`` file."""
        return self.directory / segment_file_name(self.base_offset, INDEX_SUFFIX)

    @property
    def timeindex_path(self) -> Path:
        """Path of the ``.timeindex`` file."""
        return self.directory / segment_file_name(self.base_offset, TIMEINDEX_SUFFIX)

    @property
    def fd(self) -> int:
        """The file descriptor of the ``.log`` (for fsync by the log's flusher)."""
        return self._fd

    # -- writing -----------------------------------------------------------------------

    def append(
        self,
        batch: bytes | bytearray | memoryview,
        base_offset: int,
        next_offset: int,
        max_timestamp: int,
    ) -> int:
        """Append one encoded batch covering ``[base_offset, next_offset)``; return its position.

        :raises OSError: if the write fails; the file is first cut back to its old size.
        """
        position = self.size
        try:
            write_all(self.fs, self._fd, batch)
        except OSError:
            # A partial batch must never stay behind a failed write.
            self.fs.ftruncate(self._fd, position)
            raise
        self.note_batch(position, base_offset, next_offset, len(batch), max_timestamp)
        return position

    def note_batch(
        self, position: int, base_offset: int, next_offset: int, size: int, max_timestamp: int
    ) -> None:
        """Account for a batch now at ``position`` (written by ``append`` or found by recovery)."""
        if self._bytes_since_index >= self.index_interval_bytes:
            self.index.append(base_offset, position)
            self.time_index.maybe_append(*self._running_max)
            self._bytes_since_index = 0
        self._bytes_since_index += size
        if max_timestamp > self.max_timestamp:
            self.max_timestamp = max_timestamp
            self._running_max = (max_timestamp, base_offset)
        self.size = position + size
        self.next_offset = next_offset

    def skip_to(self, offset: int) -> None:
        """Go on after a damaged range: the next batch noted starts at ``offset`` and gets
        an index entry, so that lookups past the damage start there."""
        self.next_offset = offset
        self._bytes_since_index = self.index_interval_bytes

    def reset_indexes(self) -> None:
        """Forget every index entry and batch, before the loader rebuilds them from the log."""
        self.index = OffsetIndex(self.base_offset)
        self.time_index = TimeIndex(self.base_offset)
        self.next_offset = self.base_offset
        self.max_timestamp = -1
        self._running_max = (-1, self.base_offset)
        self._bytes_since_index = self.index_interval_bytes

    def adopt_indexes(self, index: OffsetIndex, time_index: TimeIndex) -> None:
        """Take indexes read from disk and walk the short tail after their last entry.

        :raises CorruptRecordError: if that tail is not well-framed.
        """
        self.index = index
        self.time_index = time_index
        _, position = index.lookup(self.base_offset + (1 << 62))
        since = 0
        next_offset = self.base_offset
        running = (time_index.last_timestamp, time_index.lookup(1 << 62))
        for batch in self.iter_batches(position):
            since += batch.size
            next_offset = batch.next_offset
            if batch.max_timestamp > running[0]:
                running = (batch.max_timestamp, batch.base_offset)
        self.next_offset = next_offset
        self.max_timestamp = running[0]
        self._running_max = running
        self._bytes_since_index = since if len(index) else self.index_interval_bytes

    def truncate_to_position(self, position: int, *, in_memory: bool = False) -> None:
        """Cut the log at ``position`` (a batch boundary) and forget later index entries.

        With ``in_memory`` the file is left as it is and only this view of it ends there.
        """
        if not in_memory:
            self.fs.ftruncate(self._fd, position)
        self.size = position
        self.index.truncate_to_position(position)

    def seal_time_index(self) -> None:
        """Record the segment's largest timestamp in the time index (at roll and close)."""
        self.time_index.maybe_append(*self._running_max)

    def write_indexes(self, *, sync_directory: bool = True) -> None:
        """Persist both indexes atomically (their files are derived data).

        Without ``sync_directory`` the new names are durable once the caller fsyncs the
        directory.
        """
        self.seal_time_index()
        atomic_write(self.fs, self.index_path, self.index.to_bytes(), sync_directory=False)
        atomic_write(
            self.fs,
            self.timeindex_path,
            self.time_index.to_bytes(),
            sync_directory=sync_directory,
        )

    # -- reading -----------------------------------------------------------------------

    def read(self, position: int, size: int) -> bytes:
        """Read up to ``size`` bytes at ``position``."""
        return self.fs.pread(self._fd, size, position)

    def iter_batches(
        self, start_position: int = 0, end: int | None = None
    ) -> Iterator[BatchPosition]:
        """Walk the batch headers from ``start_position`` to ``end``, without CRC checks.

        Reads a chunk at a time while batches are small and only the headers once they are
        large, so walking a segment of big batches costs one small read per batch.

        :raises CorruptRecordError: if a header is malformed or a batch runs past ``end``.
        """
        position = start_position
        end = self.size if end is None else end
        chunk = b""
        chunk_start = position
        read_size = _SCAN_CHUNK
        while position < end:
            rel = position - chunk_start
            if rel + HOP_SIZE > len(chunk):
                chunk_start, rel = position, 0
                chunk = self.fs.pread(self._fd, min(read_size, end - position), position)
                if len(chunk) < HOP_SIZE:
                    raise CorruptRecordError(
                        "truncated batch header", position=position, path=str(self.log_path)
                    )
            base, length, _epoch, magic, _crc, _attrs, last_delta, _bts, max_ts = _HOP.unpack_from(
                chunk, rel
            )
            size = length + 12
            if magic != 2 or length < MIN_BATCH_LENGTH or position + size > end or last_delta < 0:
                raise CorruptRecordError(
                    "malformed batch header", position=position, path=str(self.log_path)
                )
            yield BatchPosition(position, base, base + last_delta + 1, size, max_ts)
            position += size
            read_size = HOP_SIZE if size >= _SCAN_CHUNK // 4 else _SCAN_CHUNK

    def find_batch(self, offset: int) -> BatchPosition | None:
        """Return the first batch whose offsets reach ``offset`` or beyond, or ``None``.

        :raises CorruptRecordError: if the walk steps over a batch whose offsets leave a
            gap before the next one and that batch fails its CRC (a damaged
            ``last_offset_delta`` would otherwise skip records silently).
        """
        expected, position = self.index.lookup(offset)
        # An index entry names the base offset of the batch at its position exactly.
        exact = position > 0
        previous: BatchPosition | None = None
        for batch in self.iter_batches(position):
            # Base offsets lie outside the CRC: one that goes backwards or past what the
            # segment holds is damage, which would otherwise misplace records.
            if (
                batch.base_offset < expected
                or batch.base_offset >= self.next_offset
                or (exact and batch.base_offset != expected)
            ):
                raise CorruptRecordError(
                    f"batch offset {batch.base_offset} does not fit after offset {expected - 1}",
                    position=batch.position,
                    path=str(self.log_path),
                )
            expected = batch.next_offset
            exact = False
            if batch.next_offset > offset:
                if (
                    previous is not None
                    and batch.base_offset > offset
                    and previous.next_offset < batch.base_offset
                ):
                    self._check_batch(previous)
                return batch
            previous = batch
        return None

    def _check_batch(self, batch: BatchPosition) -> None:
        data = self.read(batch.position, batch.size)
        try:
            verify_batch(data)
        except CorruptRecordError as exc:
            raise CorruptRecordError(
                exc.reason, position=batch.position, path=str(self.log_path)
            ) from exc

    def find_time(self, timestamp: int) -> BatchPosition | None:
        """Return the first batch whose largest timestamp is at or after ``timestamp``."""
        offset = self.time_index.lookup(timestamp)
        _, position = self.index.lookup(offset)
        for batch in self.iter_batches(position):
            if batch.max_timestamp >= timestamp:
                return batch
        return None

    # -- life cycle ----------------------------------------------------------------------

    def pin(self) -> None:
        """Keep the descriptor open while a reader uses it outside the event loop."""
        self._pins += 1

    def unpin(self) -> None:
        """Release a ``pin``; closes the descriptor if the segment was deleted meanwhile."""
        self._pins -= 1
        if self._deleted and self._pins == 0:
            self.close()

    @property
    def deleted(self) -> bool:
        """Whether retention or compaction removed this segment."""
        return self._deleted

    def flush(self) -> None:
        """fsync the ``.log``."""
        self.fs.fsync(self._fd)

    def close(self) -> None:
        """Close the descriptor (idempotent)."""
        if not self._closed and self._fd >= 0:
            self._closed = True
            self.fs.close(self._fd)

    def delete(self) -> None:
        """Remove the segment's files, the ``.log`` first.

        A crash part-way leaves index files without a log, which the loader removes.
        """
        self._deleted = True
        for path in (self.log_path, self.index_path, self.timeindex_path):
            with contextlib.suppress(FileNotFoundError):
                self.fs.unlink(path)
        if self._pins == 0:
            self.close()
