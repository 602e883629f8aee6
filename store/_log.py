"""PartitionLog: the segments of one partition, appended to and read by offset.

Theory of operation. A partition is a folder of segments covering consecutive offset
ranges; only the last one, the *active* segment, is appended to. ``append_batch`` checks a
batch, gives it the next offsets by writing its base offset (outside the CRC, so the
client's bytes are otherwise stored as sent), and writes it at the end of the active
segment. Offsets are dense: every append covers ``[log_end_offset, log_end_offset + n)``.

Writes reach the page cache at once; they become durable when ``flush`` fsyncs them.
Each append counts its batch, records and bytes (``statistics()``, which the metrics
read); each flush times its fsyncs, and the owner observes that time into the process's
fsync histogram when metrics were on as the log was opened (see ``_store_metrics.py``).
A flush runs in three steps so that its slow part can leave the event loop:
``prepare_flush`` (on the writer's side: note what to fsync), ``FlushPlan.execute`` (any
thread: fsync the segments, write the indexes of rolled segments, fsync the directory,
then record the recovery checkpoint, see ``_checkpoint.py``) and ``complete_flush``
(writer's side again: advance ``recovery_point``). Everything below ``recovery_point`` is
durable, and the checkpoint on disk is at or past it before anything is acknowledged.
The event loop's owner runs the middle step with ``FlushPlan.execute_async``: a plan
whose only slow work is its segments' fsyncs (no segment rolled, the checkpoint written
in place) sends just those to a thread that does not need the GIL (``_fsync.py``), so
that the loop learns of them without waiting for a busy interpreter to hand the GIL
back; any other plan runs ``execute`` whole in a worker thread.

A failed fsync is final for the log. Linux reports a writeback error once and then marks
the pages clean, whether or not they reached the disk (PostgreSQL's "fsyncgate"), so a
later fsync that succeeds proves nothing about them. After one, the log *fails*: the
recovery point stays where the last good fsync left it, so nothing written since is ever
acknowledged; appends, flushes, rolls, retention and compaction raise
:class:`LogFailedError`; ``close`` writes neither index files nor the checkpoint nor the
clean-shutdown marker, exactly as a crash would leave the folder. Reopening runs recovery,
which keeps what is really on disk. Index files and the checkpoint are derived data, so
failing to write them is not such an error (the next flush writes them again).

The active segment rolls when the next batch would take it past ``segment_bytes`` or its
first batch is older than ``segment_ms``; it is fsynced before the next one is created,
so only the last segment can ever end in a torn batch. Retention removes whole segments
from the front (never the active one, nor one that ends past the high watermark its owner
names), by age (a segment whose newest record is older than ``retention_ms``) and by
size (while the log is larger than ``retention_bytes``).
``log_start_offset`` is the base offset of the first remaining segment, or later: deleting
records (:meth:`PartitionLog.advance_log_start`, Kafka's DeleteRecords) moves it to any
offset up to the log end, recorded durably in a file of its own (see ``_log_start.py``)
before it takes effect. Offsets below it are out of range for every reader even where
their batch is still on disk; retention then deletes the segments that end at or before
it, whatever the cleanup policy.

Reading returns whole batches, each verified (CRC, and base offsets that fit). A read
that meets damage returns the valid batches before it; the next read, which starts at the
damage, raises :class:`CorruptRecordError` whose ``damage`` names the damaged byte range
and the offset where reading can resume. The range is remembered in the segment (see
``_damage.py``), so reads past it go straight to the batch after it.

A log opened ``read_only`` (see ``_loader.py``) refuses changes and writes nothing, not at
open and not at close.

Producers. A batch with a producer id is checked against the partition's producer state
(sequences, epochs, transactions: ``_producer_state.py``) before it is written and
recorded in it after; a batch without one costs a single comparison. Transaction markers
are written by :meth:`PartitionLog.write_marker` only. The state is rebuilt at open from
the newest snapshot and the log after it, and snapshotted at each roll, at the first
flush after every ``PRODUCER_SNAPSHOT_BYTES`` appended (so that the replay after a crash
is bounded) and at a clean close (``_producer_snapshots.py``).

Concurrency: one owner calls every method except ``FlushPlan.execute`` and
``Segment.read`` on a pinned segment, which may run in worker threads.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import time
from bisect import bisect_right
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import anyio
import anyio.to_thread

from ._batch import (
    CONTROL_BIT,
    TRANSACTIONAL_BIT,
    BatchHeader,
    TimestampType,
    set_base_offset,
    stamp_log_append_time,
    verify_batch,
)
from ._checkpoint import CheckpointFile, RecoveryPoint
from ._config import CleanupPolicy, TopicConfig
from ._control import ControlType, Marker, encode_marker
from ._damage import damage_start, damaged_range, note_damage
from ._errors import (
    CorruptRecordError,
    LogClosedError,
    LogFailedError,
    OffsetOutOfRangeError,
    RecordTooLargeError,
    StorageFullError,
    StoreError,
)
from ._files import CLEAN_SHUTDOWN_FILE, atomic_write, fsync_dir, make_dirs
from ._fs import OS_FILE_SYSTEM, FileSystem
from ._fsync import StartedFsync, fsync_all, start_fsync
from ._loader import LoadMode, load_segments, rebuild_indexes
from ._log_start import read_log_start, write_log_start
from ._producer_snapshots import load_producer_state, write_snapshot
from ._producer_state import ProducerStateManager
from ._records import Compression, NewRecord, decode_records, encode_batch
from ._segment import HOP_SIZE, Segment
from ._store_metrics import STORE_METRICS

logger = logging.getLogger("headwater.store")

#: The errors of a file system that is full (or a file at its size limit).
FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})
#: fdatasync the recovery checkpoint (recorded after every flush) at least this often, in
#: bytes of log, so that after a power loss too recovery has a bounded tail to check.
CHECKPOINT_SYNC_BYTES = 64 << 20
#: Snapshot the producer state at least this often, in bytes appended, so that opening
#: after a crash replays at most about this much of the log.
PRODUCER_SNAPSHOT_BYTES = 8 << 20


_PRODUCER_BITS = TRANSACTIONAL_BIT | CONTROL_BIT


def wall_clock_ms() -> int:
    """Return the wall-clock time in epoch milliseconds."""
    return time.time_ns() // 1_000_000


@dataclass(frozen=True, slots=True)
class AppendInfo:
    """Where an append landed: offsets ``[base_offset, last_offset]``."""

    base_offset: int
    last_offset: int
    #: The time the log stamped on the batch for ``LogAppendTime`` topics, else -1.
    log_append_time: int = -1

    @property
    def next_offset(self) -> int:
        """The offset after the last one appended."""
        return self.last_offset + 1


@dataclass(frozen=True, slots=True)
class LogStatistics:
    """A snapshot of a partition's offsets and size, and what was appended since it opened."""

    log_start_offset: int
    log_end_offset: int
    recovery_point: int
    size_bytes: int
    segments: int
    appended_batches: int = 0
    appended_records: int = 0
    appended_bytes: int = 0


@dataclass(slots=True)
class FlushPlan:
    """What one flush makes durable; ``execute`` may run in a worker thread."""

    fs: FileSystem
    directory: Path
    segments: list[Segment]
    rolled: list[Segment]
    sync_directory: bool
    target: RecoveryPoint
    checkpoint: CheckpointFile
    #: Whether to fdatasync the checkpoint too (see ``CHECKPOINT_SYNC_BYTES``).
    sync_checkpoint: bool
    done: bool = field(default=False)
    #: Why ``execute`` failed (an fsync of data or of the directory), else ``None``.
    error: BaseException | None = field(default=None)
    #: Rolled segments whose index files could not be written (retried by the next flush).
    unindexed: list[Segment] = field(default_factory=list)
    #: How long ``execute`` took, once done.
    elapsed_s: float = field(default=0.0)
    #: The fsyncs :meth:`start` set going, and when.
    _started: StartedFsync | None = field(default=None, init=False, repr=False)
    _started_at: float = field(default=0.0, init=False, repr=False)

    @property
    def light(self) -> bool:
        """Whether the segments' fsyncs are the plan's only slow work: no rolled segment's
        indexes to write, no directory to fsync, a checkpoint to record with one small
        write in place. The rest of such a plan may run on the event loop."""
        return (
            not self.rolled
            and not self.sync_directory
            and not self.sync_checkpoint
            and self.checkpoint.in_place
        )

    def start(self) -> bool:
        """Set a :attr:`light` plan's fsyncs going now, in a thread without the GIL, for
        :meth:`execute_async` (or :meth:`finish_blocking`) to wait for; return whether
        they were (not for a heavy plan, nor a file system that cannot, see
        ``_fsync.py``: ``execute_async`` then does all the work, as it would have).

        :raises OSError: if no thread could be had to run them.
        """
        if self._started is None and self.light:
            self._started_at = time.perf_counter()
            self._started = start_fsync(self.fs, [segment.fd for segment in self.segments])
        return self._started is not None

    def finish_blocking(self) -> None:
        """Finish the plan in the calling thread: wait for the fsyncs :meth:`start` set
        going, else :meth:`execute` it all.

        :raises OSError: as :meth:`execute` does.
        """
        if self._started is None:
            self.execute()
            return
        with self._timed(self._started_at):
            self._started.wait_blocking()
            self._finish()

    async def execute_async(self) -> None:
        """Run :meth:`execute` off the event loop; for a :attr:`light` plan, only the
        fsyncs leave it (in a thread without the GIL, see ``_fsync.py``), and the
        checkpoint is recorded on the loop after them. Fsyncs that :meth:`start` set
        going are waited for, not repeated.

        :raises OSError: as :meth:`execute` does.
        """
        if self._started is not None:
            with self._timed(self._started_at):
                await self._started.wait()
                self._finish()
            return
        if not self.light:
            await anyio.to_thread.run_sync(self.execute)
            return
        with self._timed(time.perf_counter()):
            await fsync_all(self.fs, [segment.fd for segment in self.segments])
            self._finish()

    def execute(self) -> None:
        """fsync what the plan names; write rolled segments' indexes; record the checkpoint.

        Index files and the checkpoint only speed recovery up, so failing to write them
        (a full disk) is not an error here: the next flush tries again. A failed fsync
        of data or of the directory is, and fails the log (see the module docstring).

        :raises OSError: if an fsync fails; ``done`` stays ``False`` and ``error`` says why.
        """
        with self._timed(time.perf_counter()):
            self._execute()

    @contextlib.contextmanager
    def _timed(self, started: float) -> Iterator[None]:
        """Note why the work inside failed, else how long the plan took since ``started``."""
        try:
            yield
        except BaseException as exc:
            self.error = exc
            raise
        self.elapsed_s = time.perf_counter() - started

    def _execute(self) -> None:
        for segment in self.segments:
            segment.flush()
        # The derived files are renamed into place without a directory fsync of their
        # own: one at the end covers them and the segments' names. A directory reports a
        # failed fsync once too, so every fsync of it must be one whose failure fails the
        # log; a derived file's own failure only leaves its old version in place.
        renamed = False
        for segment in self.rolled:
            try:
                segment.write_indexes(sync_directory=False)
                renamed = True
            except OSError as exc:
                logger.warning("%s: cannot write index files yet: %s", segment.log_path, exc)
                self.unindexed.append(segment)
        if self.sync_directory or renamed:
            fsync_dir(self.fs, self.directory)
        self._finish()

    def _finish(self) -> None:
        """Record the checkpoint and mark the plan done: last, so that the checkpoint
        names only what is durable, segment names included."""
        try:
            created = self.checkpoint.record(self.target, sync=self.sync_checkpoint)
        except OSError as exc:
            logger.warning("%s: cannot record the recovery checkpoint: %s", self.directory, exc)
            self.sync_checkpoint = created = False
        if created:
            fsync_dir(self.fs, self.directory)  # the checkpoint file's name
        self.done = True


class PartitionLog:
    """The append-only log of one partition: a folder of segments.

    Open one with :meth:`open`. One owner appends, reads and flushes; see the module
    docstring for what may run in worker threads.
    """

    def __init__(
        self,
        directory: Path,
        config: TopicConfig,
        segments: list[Segment],
        *,
        clock: Callable[[], int],
        fs: FileSystem = OS_FILE_SYSTEM,
        read_only: bool = False,
        log_start_offset: int = 0,
    ) -> None:
        self.fs = fs
        self.directory = directory
        self.config = config
        self.read_only = read_only
        self._clock = clock
        self._segments = segments
        self._bases = [s.base_offset for s in segments]
        active = segments[-1]
        self._log_end_offset = active.next_offset
        # Where deleted records end (see _log_start.py); never past the log end, which a
        # crash of a log appended to with durability=never can have moved back.
        self._deleted_before = min(log_start_offset, self._log_end_offset)
        self._recovery_point = RecoveryPoint(active.next_offset, active.base_offset, active.size)
        self._checkpoint = CheckpointFile(fs, directory)
        #: Where the checkpoint was last fdatasync'ed (segment, position).
        self._checkpoint_position = (active.base_offset, active.size)
        #: The flush between prepare_flush and complete_flush, if any.
        self._flushing: FlushPlan | None = None
        self._rolled: list[Segment] = []
        self._unflushed: list[Segment] = []
        self._directory_dirty = False
        self._closed = False
        self._clean_marker = False
        #: The failed fsync that froze the log (see the module docstring), else ``None``.
        self._failure: BaseException | None = None
        #: Seconds :meth:`open` took (recovery included); 0 for a log made otherwise.
        self.open_seconds = 0.0
        self._appended_batches = self._appended_records = self._appended_bytes = 0
        #: Sequences, epochs and transactions of the partition's producers (see the module
        #: docstring); :meth:`open` loads it.
        self.producer_state = ProducerStateManager()
        self._snapshot_bytes = 0  # _appended_bytes at the last producer snapshot
        metrics = STORE_METRICS.get()
        self._fsync_seconds = None if metrics is None else metrics.fsync_seconds

    @classmethod
    def open(
        cls,
        directory: Path,
        config: TopicConfig,
        *,
        clock: Callable[[], int] = wall_clock_ms,
        fs: FileSystem = OS_FILE_SYSTEM,
        read_only: bool = False,
    ) -> PartitionLog:
        """Open (creating if needed) the log in ``directory``, recovering after a crash.

        All file work goes through ``fs`` (the operating system by default). ``read_only``
        opens it without writing anything (see ``_loader.py``): damage is then reported to
        the readers that meet it instead of refusing the open.

        :raises CorruptRecordError: if the log is damaged other than in a torn tail (when
            opening for writing).
        """
        started = time.perf_counter()
        if read_only:
            log = cls._open_read_only(directory, config, clock, fs)
        else:
            log = cls._open(directory, config, clock, fs)
        try:
            log.producer_state = load_producer_state(
                fs,
                directory,
                log._segments,
                log._log_end_offset,
                now_ms=clock(),
                read_only=read_only,
            )
        except BaseException:
            log.abandon()
            raise
        log.open_seconds = time.perf_counter() - started
        return log

    @classmethod
    def _open(
        cls, directory: Path, config: TopicConfig, clock: Callable[[], int], fs: FileSystem
    ) -> PartitionLog:
        make_dirs(fs, directory)
        result = load_segments(
            fs, directory, index_interval_bytes=config.index_interval_bytes, now_ms=clock()
        )
        segments = result.segments
        if not segments:
            segments = [
                Segment.create(
                    fs,
                    directory,
                    0,
                    index_interval_bytes=config.index_interval_bytes,
                    now_ms=clock(),
                )
            ]
            fsync_dir(fs, directory)
        start = read_log_start(fs, directory)
        log = cls(directory, config, segments, clock=clock, fs=fs, log_start_offset=start)
        log._clean_marker = result.clean
        # Rebuilt indexes of inactive segments are rewritten by the next flush.
        log._rolled = [s for s in result.rebuilt if s is not segments[-1]]
        if not result.clean:
            # What recovery kept may not be on disk yet: fsync it, then checkpoint it.
            log._unflushed = [segments[-1]]
            log._directory_dirty = True
            log._checkpoint_position = (-1, 0)
            try:
                log.flush()
            except BaseException:
                log.abandon()
                raise
        return log

    @classmethod
    def _open_read_only(
        cls, directory: Path, config: TopicConfig, clock: Callable[[], int], fs: FileSystem
    ) -> PartitionLog:
        interval = config.index_interval_bytes
        segments = []
        start = 0
        if fs.exists(directory):
            segments = load_segments(
                fs, directory, index_interval_bytes=interval, now_ms=clock(), mode=LoadMode.READ
            ).segments
            start = read_log_start(fs, directory)
        if not segments:
            segments = [Segment.placeholder(fs, directory, 0, index_interval_bytes=interval)]
        return cls(
            directory, config, segments, clock=clock, fs=fs, read_only=True, log_start_offset=start
        )

    # -- offsets ---------------------------------------------------------------------------

    @property
    def log_start_offset(self) -> int:
        """The first offset still in the log: the first segment's base offset, or where
        deleted records end when that is later (see :meth:`advance_log_start`)."""
        return max(self._segments[0].base_offset, self._deleted_before)

    def check_log_start(self, offset: int) -> None:
        """Raise what :meth:`advance_log_start` would raise for ``offset``; change nothing.

        :raises OffsetOutOfRangeError: if ``offset`` is negative or past the log end.
        :raises LogFailedError: if an earlier fsync failed.
        :raises StoreError: if the log is read-only or closed.
        """
        self._check_writable()
        if not 0 <= offset <= self._log_end_offset:
            raise OffsetOutOfRangeError(
                f"cannot delete records before offset {offset}: it is outside the log "
                f"[{self.log_start_offset}, {self._log_end_offset}]"
            )

    def advance_log_start(self, offset: int) -> int:
        """Delete the records before ``offset``: move the log start there; return it.

        A log start at or past ``offset`` stays where it is. The new one is on disk (see
        ``_log_start.py``) before this returns; retention deletes the segments it leaves
        wholly behind. Writes in the calling thread: :class:`Partition` splits this into
        :func:`write_log_start` in a worker thread and :meth:`note_log_start`.

        :raises OffsetOutOfRangeError: if ``offset`` is negative or past the log end.
        :raises StoreError: if the file system refuses (the log start does not move).
        """
        self.check_log_start(offset)
        if offset > self.log_start_offset:
            try:
                write_log_start(self.fs, self.directory, offset)
            except OSError as exc:
                raise StoreError(
                    f"{self.directory}: cannot record the new log start {offset}: {exc}"
                ) from exc
            self.note_log_start(offset)
        return self.log_start_offset

    def note_log_start(self, offset: int) -> None:
        """Take ``offset`` as the log start, once :func:`write_log_start` recorded it."""
        assert offset <= self._log_end_offset, (offset, self._log_end_offset)
        self._deleted_before = max(self._deleted_before, offset)

    @property
    def log_end_offset(self) -> int:
        """The offset the next appended record will get."""
        return self._log_end_offset

    @property
    def recovery_point(self) -> int:
        """Every offset below this one is durable (fsynced)."""
        return self._recovery_point.offset

    @property
    def segments(self) -> Sequence[Segment]:
        """The segments in offset order (the last one is active)."""
        return self._segments

    @property
    def max_timestamp(self) -> int:
        """The largest record timestamp stored (-1 when there is none)."""
        return max((s.max_timestamp for s in self._segments), default=-1)

    def statistics(self) -> LogStatistics:
        """Return a snapshot of offsets and sizes."""
        return LogStatistics(
            self.log_start_offset,
            self._log_end_offset,
            self._recovery_point.offset,
            sum(s.size for s in self._segments),
            len(self._segments),
            self._appended_batches,
            self._appended_records,
            self._appended_bytes,
        )

    # -- appending -------------------------------------------------------------------------

    def append(
        self,
        records: Sequence[NewRecord],
        *,
        compression: Compression = Compression.NONE,
    ) -> AppendInfo:
        """Encode ``records`` as one batch and append it (durable only after ``flush``).

        :raises RecordTooLargeError: if the batch exceeds ``max_message_bytes``.
        :raises StorageFullError: if the disk refuses the write.
        """
        now = self._clock()
        batch = encode_batch(
            records,
            base_offset=self._log_end_offset,
            now_ms=now,
            compression=compression,
            timestamp_type=self.config.timestamp_type,
        )
        return self._append_checked(batch, now)

    def append_batch(self, batch: bytes | bytearray) -> AppendInfo:
        """Append one encoded record batch as received, assigning its offsets.

        Only the base offset (and, for ``LogAppendTime`` topics, the timestamp) is
        rewritten; everything else, compressed payloads included, is stored as sent.

        :raises CorruptRecordError: if ``batch`` is not exactly one valid v2 batch.
        :raises RecordTooLargeError: if it exceeds ``max_message_bytes``.
        :raises StorageFullError: if the disk refuses the write.
        """
        return self._append_checked(batch, self._clock())

    def write_marker(
        self,
        control_type: ControlType,
        *,
        producer_id: int,
        producer_epoch: int,
        coordinator_epoch: int,
    ) -> AppendInfo:
        """Append the marker that commits or aborts ``producer_id``'s transaction.

        A marker for a producer with no open transaction is written all the same (a
        retried EndTxn), and changes nothing.

        :raises InvalidProducerEpochError: if ``producer_epoch`` is older than the producer's.
        :raises CoordinatorFencedError: if ``coordinator_epoch`` is older than its last marker's.
        :raises StorageFullError: if the disk refuses the write.
        """
        now = self._clock()
        batch = encode_marker(
            control_type,
            producer_id=producer_id,
            producer_epoch=producer_epoch,
            coordinator_epoch=coordinator_epoch,
            now_ms=now,
            base_offset=self._log_end_offset,
        )
        return self._append_checked(batch, now, Marker(control_type, coordinator_epoch))

    @property
    def failure(self) -> BaseException | None:
        """The fsync error that failed the log (it then refuses changes), else ``None``."""
        return self._failure

    def failed_error(self) -> LogFailedError:
        """Return the error that changes to a failed log raise (see the module docstring)."""
        return LogFailedError(
            f"{self.directory}: an fsync failed ({self._failure}): records from offset "
            f"{self._recovery_point.offset} on may not be on disk and were not acknowledged, "
            "and the partition refuses writes; reopen the store, whose recovery keeps what "
            "is really on disk"
        )

    def _check_writable(self) -> None:
        if self._closed:
            raise LogClosedError(f"{self.directory}: the log is closed")
        if self.read_only:
            raise StoreError(f"{self.directory}: the log was opened read-only")
        if self._failure is not None:
            raise self.failed_error()

    def _begin_change(self) -> None:
        """Remove the clean-shutdown marker before the first change since a clean open."""
        if self._clean_marker:
            with contextlib.suppress(FileNotFoundError):
                self.fs.unlink(self.directory / CLEAN_SHUTDOWN_FILE)
            self._sync_directory()
            self._clean_marker = False

    def _sync_directory(self) -> None:
        """fsync the folder on the owner's side; a failure fails the log."""
        try:
            fsync_dir(self.fs, self.directory)
        except OSError as exc:
            self._failure = exc
            raise self.failed_error() from exc

    def _append_checked(
        self, batch: bytes | bytearray, now: int, marker: Marker | None = None
    ) -> AppendInfo:
        self._check_writable()
        self._begin_change()
        header = verify_batch(batch)
        size = header.batch_length + 12
        if size != len(batch):
            raise CorruptRecordError(f"expected one batch of {size} bytes, got {len(batch)}")
        if size > self.config.max_message_bytes:
            raise RecordTooLargeError(
                f"batch of {size} bytes exceeds max_message_bytes={self.config.max_message_bytes}"
            )
        producer = header.producer_id >= 0
        if producer or header.attributes & _PRODUCER_BITS:
            self._check_producer(header, marker)
        self._maybe_roll(size, now)
        base = self._log_end_offset
        max_timestamp = header.max_timestamp
        append_time = -1
        if (
            header.base_offset != base
            or self.config.timestamp_type is TimestampType.LOG_APPEND_TIME
        ):
            if not isinstance(batch, bytearray):
                batch = bytearray(batch)
            set_base_offset(batch, 0, base)
            if self.config.timestamp_type is TimestampType.LOG_APPEND_TIME:
                stamp_log_append_time(batch, 0, now)
                max_timestamp = append_time = now
        next_offset = base + header.last_offset_delta + 1
        active = self._segments[-1]
        if active.size == 0:
            active.created_ms = now
        try:
            active.append(batch, base, next_offset, max_timestamp)
        except OSError as exc:
            if exc.errno in FULL_ERRNOS:
                raise StorageFullError(
                    f"{active.log_path}: cannot append {size} bytes ({os.strerror(exc.errno)});"
                    " nothing acknowledged was lost, appends resume once space is freed"
                ) from exc
            raise StoreError(f"{active.log_path}: append failed: {exc}") from exc
        if active not in self._unflushed:
            self._unflushed.append(active)
        if producer:
            self.producer_state.record(header, base, now, marker)
        self._log_end_offset = next_offset
        self._appended_batches += 1
        self._appended_records += next_offset - base
        self._appended_bytes += size
        return AppendInfo(base, next_offset - 1, append_time)

    def _check_producer(self, header: BatchHeader, marker: Marker | None) -> None:
        if header.producer_id < 0:
            raise CorruptRecordError("a transactional or control batch without a producer id")
        if header.is_control != (marker is not None):
            raise CorruptRecordError(
                "control batches are written as transaction markers only (write_marker)"
            )
        self.producer_state.validate(header, marker)

    def _write_producer_snapshot(self, now: int) -> None:
        """Snapshot the producer state at the log end (only an accelerator: failures are
        logged, and the next open replays more of the log instead)."""
        state = self.producer_state
        state.end_offset = self._log_end_offset
        self._snapshot_bytes = self._appended_bytes
        state.expire(now)
        try:
            write_snapshot(self.fs, self.directory, state)
        except OSError as exc:
            logger.warning("%s: cannot write the producer snapshot: %s", self.directory, exc)

    def _maybe_roll(self, size: int, now: int) -> None:
        active = self._segments[-1]
        if active.size == 0:
            return
        too_big = active.size + size > self.config.segment_bytes
        too_old = now - active.created_ms >= self.config.segment_ms
        if too_big or too_old:
            self.roll(now)

    def roll(self, now_ms: int | None = None) -> None:
        """Close the active segment to appends and start a new one at ``log_end_offset``."""
        if self._segments[-1].size == 0:
            return
        self._check_writable()
        now = self._clock() if now_ms is None else now_ms
        self._begin_change()
        old = self._segments[-1]
        old.seal_time_index()
        # The old segment's data must be durable before the new segment's name can be:
        # else a power cut could leave a torn batch in a segment that is no longer the
        # last one, which recovery cannot tell from damage.
        try:
            old.flush()
        except OSError as exc:
            self._failure = exc  # as for any failed fsync (see the module docstring)
            raise self.failed_error() from exc
        new = Segment.create(
            self.fs,
            self.directory,
            self._log_end_offset,
            index_interval_bytes=self.config.index_interval_bytes,
            now_ms=now,
        )
        self._segments.append(new)
        self._bases.append(new.base_offset)
        self._rolled.append(old)
        self._directory_dirty = True
        # Everything below the new segment is durable now: a snapshot cannot outrun it.
        self._write_producer_snapshot(now)

    # -- durability ------------------------------------------------------------------------

    def prepare_flush(self) -> FlushPlan | None:
        """Note what a flush must fsync to make everything appended so far durable.

        Returns ``None`` when there is nothing to do. Pins the segments it names; pass
        the plan to :meth:`complete_flush` after executing it.

        :raises LogFailedError: if an earlier fsync failed.
        """
        if self._failure is not None:
            raise self.failed_error()
        if not self._unflushed and not self._rolled and not self._directory_dirty:
            return None
        if self._appended_bytes - self._snapshot_bytes >= PRODUCER_SNAPSHOT_BYTES:
            # It may describe batches this flush has yet to make durable: a crash that
            # loses them leaves it past the log end, and the next open ignores it.
            self._write_producer_snapshot(self._clock())
        active = self._segments[-1]
        target = RecoveryPoint(self._log_end_offset, active.base_offset, active.size)
        segments, self._unflushed = self._unflushed, []
        rolled, self._rolled = self._rolled, []
        for segment in segments:
            segment.pin()
        base, position = self._checkpoint_position
        sync = (
            bool(rolled)
            or base != active.base_offset
            or active.size - position >= CHECKPOINT_SYNC_BYTES
        )
        plan = FlushPlan(
            self.fs,
            self.directory,
            segments,
            rolled,
            self._directory_dirty,
            target,
            self._checkpoint,
            sync,
        )
        self._directory_dirty = False
        self._flushing = plan
        return plan

    def complete_flush(self, plan: FlushPlan) -> None:
        """Publish a flush's effect: everything below ``plan.target`` is durable.

        After a failed ``execute`` this fails the log instead (see the module docstring).
        """
        self._flushing = None
        for segment in plan.segments:
            segment.unpin()
        if not plan.done:
            # Retrying could not help: the kernel may have dropped the pages and will not
            # say so again. The recovery point stays; nothing after it is acknowledged.
            if self._failure is None:
                self._failure = plan.error or StoreError("a flush did not finish")
                logger.error("%s: fsync failed, no more writes: %s", self.directory, plan.error)
            return
        self._rolled.extend(s for s in plan.unindexed if not s.deleted)
        if self._fsync_seconds is not None:
            self._fsync_seconds.observe(plan.elapsed_s)
        if plan.target.offset > self._recovery_point.offset:
            self._recovery_point = plan.target
        if plan.sync_checkpoint:
            self._checkpoint_position = (plan.target.segment, plan.target.position)

    def flush(self) -> None:
        """fsync everything appended so far, in the calling thread.

        :raises LogFailedError: if an fsync fails, now or earlier.
        """
        plan = self.prepare_flush()
        if plan is not None:
            try:
                plan.execute()
            except OSError as exc:
                self.complete_flush(plan)
                raise self.failed_error() from exc
            self.complete_flush(plan)

    # -- reading ---------------------------------------------------------------------------

    def locate(
        self, start_offset: int, upper_offset: int | None = None
    ) -> tuple[Segment, int] | None:
        """Find the segment and position of the batch holding ``start_offset``.

        Returns ``None`` when no batch below ``upper_offset`` (default: the log end) is
        at or after ``start_offset``.

        :raises OffsetOutOfRangeError: if ``start_offset`` is outside
            ``[log_start_offset, log_end_offset]``.
        """
        self._check_range(start_offset)
        upper = self._log_end_offset if upper_offset is None else upper_offset
        i = max(bisect_right(self._bases, start_offset) - 1, 0)
        while i < len(self._segments) and start_offset < upper:
            segment = self._segments[i]
            try:
                batch = segment.find_batch(start_offset)
            except CorruptRecordError as exc:
                position = 0 if exc.position is None else exc.position
                raise self.damage_error(segment, position, exc.reason) from exc
            if batch is not None:
                return (segment, batch.position) if batch.base_offset < upper else None
            i += 1
        return None

    def read(self, start_offset: int, max_bytes: int, *, upper_offset: int | None = None) -> bytes:
        """Return whole batches from the one holding ``start_offset`` on.

        The result holds batches below ``upper_offset`` (default: the log end) totalling at
        most ``max_bytes``, except that the first batch is returned whole even when larger,
        so that a reader always makes progress. The first batch may begin before
        ``start_offset``; readers skip those records. Returns ``b""`` when caught up.

        :raises OffsetOutOfRangeError: if ``start_offset`` is outside the log.
        :raises CorruptRecordError: if the batch holding ``start_offset`` is damaged; its
            ``damage`` says which offsets are lost and where reading can resume.
        """
        found = self.locate(start_offset, upper_offset)
        if found is None:
            return b""
        segment, position = found
        raw = segment.read(position, min(max(max_bytes, HOP_SIZE), segment.size - position))
        return self.trim(segment, position, raw, upper_offset)

    def trim(
        self, segment: Segment, position: int, raw: bytes, upper_offset: int | None = None
    ) -> bytes:
        """Cut ``raw`` (read at ``position``) to whole, verified batches below ``upper_offset``.

        Stops before the first batch that fails its checks (CRC, framing, base offsets that
        go forward and stay inside the segment): the valid batches before it are returned,
        and the read that starts at it raises.

        :raises CorruptRecordError: if the first batch is damaged (see :meth:`read`).
        """
        upper = self._log_end_offset if upper_offset is None else upper_offset
        limit = segment.next_offset
        expected = segment.base_offset
        end = 0
        while end < len(raw):
            size = _batch_size(raw, end)
            if end + size > len(raw):
                if end:
                    break
                # The first batch is larger than max_bytes: return it whole.
                raw = segment.read(position, min(size, segment.size - position))
                if len(raw) < size:
                    raise self.damage_error(
                        segment, position, "batch runs past the end of the segment"
                    )
            try:
                header = verify_batch(raw, end)
            except CorruptRecordError as exc:
                if end:
                    break
                raise self.damage_error(segment, position, exc.reason) from exc
            # Per batch, not per record: base offsets lie outside the CRC.
            if not expected <= header.base_offset < limit:
                if end:
                    break
                raise self.damage_error(
                    segment, position, f"batch offset {header.base_offset} does not fit here"
                )
            if header.base_offset >= upper:
                break
            expected = header.base_offset + header.last_offset_delta + 1
            end += size
        return raw if end == len(raw) else raw[:end]

    def damage_error(self, segment: Segment, position: int, reason: str) -> CorruptRecordError:
        """Return the error for damage met at byte ``position`` of ``segment``.

        Works out (once; the segment remembers it) where the damage begins, the offsets
        it hides and where reading can resume (see ``_damage.py``).
        """
        path = str(segment.log_path)
        for known in segment.damaged:
            if known.position <= position < max(known.end_position, known.position + 1):
                return CorruptRecordError(reason, position=known.position, path=path, damage=known)
        start, first = damage_start(segment, position)
        for known in segment.damaged:
            if known.position == start:
                return CorruptRecordError(reason, position=start, path=path, damage=known)
        i = bisect_right(self._bases, segment.base_offset)
        upper = self._bases[i] if i < len(self._bases) else None
        end_offset = upper if upper is not None else max(segment.next_offset, first)
        damage = damaged_range(segment, start, first, upper, end_offset)
        note_damage(segment, damage)
        return CorruptRecordError(reason, position=start, path=path, damage=damage)

    def offset_for_time(self, timestamp_ms: int) -> int | None:
        """Return the first offset whose record timestamp is at or after ``timestamp_ms``.

        Returns ``None`` when every record is older. Records below the log start (deleted,
        though their batch is still on disk) do not count, as in Kafka.
        """
        start = self.log_start_offset
        for segment in self._segments:
            if segment.max_timestamp < timestamp_ms or segment.next_offset <= start:
                continue
            found = segment.find_time(timestamp_ms)
            if found is None:
                continue
            for batch in segment.iter_batches(found.position):
                if batch.max_timestamp < timestamp_ms or batch.next_offset <= start:
                    continue
                data = segment.read(batch.position, batch.size)
                for record in decode_records(data):
                    if record.timestamp >= timestamp_ms and record.offset >= start:
                        return record.offset
        return None

    def _check_range(self, offset: int) -> None:
        if self._closed:
            raise LogClosedError(f"{self.directory}: the log is closed")
        if not self.log_start_offset <= offset <= self._log_end_offset:
            raise OffsetOutOfRangeError(
                f"offset {offset} is outside the log [{self.log_start_offset}, "
                f"{self._log_end_offset}]"
            )

    # -- retention -------------------------------------------------------------------------

    def enforce_retention(
        self, now_ms: int | None = None, *, upper_offset: int | None = None
    ) -> list[int]:
        """Delete whole segments past ``retention_ms`` or beyond ``retention_bytes``.

        Also deletes, whatever the cleanup policy, segments that end at or before the log
        start (records deleted by :meth:`advance_log_start`). The active segment is never
        deleted, nor otherwise anything of a compacted topic (its records go only when
        superseded), nor a segment that ends past ``upper_offset`` (the high watermark;
        default: the log end), so that, as in Kafka, the log start never passes what
        readers may see. Returns the base offsets removed.
        """
        if self._failure is not None or self.read_only:
            return []
        upper = self._log_end_offset if upper_offset is None else upper_offset
        removed: list[int] = []
        deleted = min(self._deleted_before, upper)
        while len(self._segments) > 1 and self._segments[1].base_offset <= deleted:
            removed.append(self._segments[0].base_offset)
            self._delete_oldest()
        if self.config.cleanup_policy is CleanupPolicy.COMPACT:
            return removed
        now = self._clock() if now_ms is None else now_ms
        retention_ms = self.config.retention_ms
        retention_bytes = self.config.retention_bytes
        total = sum(s.size for s in self._segments)
        while len(self._segments) > 1 and self._segments[1].base_offset <= upper:
            oldest = self._segments[0]
            expired = retention_ms >= 0 and now - oldest.max_timestamp > retention_ms
            oversized = retention_bytes >= 0 and total - oldest.size >= retention_bytes
            if not (expired or oversized):
                break
            total -= oldest.size
            self._delete_oldest()
            removed.append(oldest.base_offset)
        return removed

    def delete_segments_before(self, offset: int) -> list[int]:
        """Delete whole segments that end at or before ``offset`` (never the active one).

        :raises LogFailedError: if an earlier fsync failed.
        """
        self._check_writable()
        removed = []
        while len(self._segments) > 1 and self._segments[1].base_offset <= offset:
            removed.append(self._segments[0].base_offset)
            self._delete_oldest()
        return removed

    def replace_segments(self, replaced: Sequence[Segment], swap_file: Path) -> Segment:
        """Swap a compacted segment in for the run of inactive segments it replaces.

        ``swap_file`` is ``<base>.log.swap`` (``base`` the first replaced segment's base
        offset), already fsynced with its directory: it is the commit point, so a crash
        from here on is finished by the loader. Offsets do not change; records dropped by
        compaction leave gaps that readers step over. A recovery checkpoint that points
        into a replaced segment is first moved to the start of the next one.

        :raises StoreError: if ``replaced`` is no longer a run of this log's inactive
            segments (retention removed some meanwhile), or a flush under way will write
            a checkpoint into them, or the checkpoint cannot be moved; the swap file is
            then removed. Also if the file system fails the swap half-way: the log is
            then closed and the swap file stays for the next open to finish.
        :raises LogFailedError: if an fsync failed, now or earlier.
        """
        first = self._segments.index(replaced[0]) if replaced[0] in self._segments else -1
        run = self._segments[first : first + len(replaced)] if first >= 0 else []
        if first < 0 or run != list(replaced) or first + len(replaced) >= len(self._segments):
            with contextlib.suppress(FileNotFoundError):
                self.fs.unlink(swap_file)
            raise StoreError(f"{self.directory}: segments changed while compacting; retry")
        if self._failure is not None or self.read_only:
            with contextlib.suppress(FileNotFoundError):
                self.fs.unlink(swap_file)
            self._check_writable()
        # The recovery checkpoint names a byte position in one segment, which must not be
        # one that this swap rewrites (recovery would take it for a segment that lost
        # acknowledged data, or check the segment whole).
        bases = {s.base_offset for s in replaced}
        following = self._segments[first + len(replaced)]
        try:
            if self._flushing is not None and self._flushing.target.segment in bases:
                raise OSError(errno.EBUSY, "a flush may write a checkpoint into them")
            last = self._checkpoint.last_segment
            if last is None or last in bases:
                # Everything before the next segment is durable: segments are fsynced when
                # they roll, and the swap file's commit made their names durable.
                point = RecoveryPoint(following.base_offset, following.base_offset, 0)
                if self._checkpoint.reset(point):
                    fsync_dir(self.fs, self.directory)
                self._checkpoint_position = (point.segment, point.position)
        except OSError as exc:
            with contextlib.suppress(FileNotFoundError):
                self.fs.unlink(swap_file)
            raise StoreError(
                f"{self.directory}: cannot move the recovery checkpoint off the segments"
                f" being compacted ({exc}); retry"
            ) from exc
        self._begin_change()
        for segment in replaced:
            if segment in self._unflushed:
                self._unflushed.remove(segment)
            if segment in self._rolled:
                self._rolled.remove(segment)
            segment.delete()
        base = replaced[0].base_offset
        try:
            self.fs.replace(swap_file, replaced[0].log_path)
            fsync_dir(self.fs, self.directory)
        except OSError as exc:
            # The replaced segments are gone and the swap file holds their records:
            # leave it for recovery to finish, and take no more changes until then.
            self.abandon()
            raise StoreError(
                f"{self.directory}: cannot swap in {swap_file.name} ({exc}); the partition"
                " is closed, and reopening it finishes the swap"
            ) from exc
        segment = Segment.open_file(
            self.fs,
            self.directory,
            base,
            index_interval_bytes=self.config.index_interval_bytes,
            now_ms=self._clock(),
        )
        # Also checks the new segment's framing and that its offsets stay in its range.
        rebuild_indexes(segment, segment.size, self._segments[first + len(replaced)].base_offset)
        # The replaced run ended where the next segment begins, whatever compaction kept.
        segment.next_offset = max(segment.next_offset, replaced[-1].next_offset)
        self._segments[first : first + len(replaced)] = [segment]
        self._bases[first : first + len(replaced)] = [base]
        self._rolled.append(segment)
        return segment

    def _delete_oldest(self) -> None:
        self._begin_change()
        oldest = self._segments.pop(0)
        self._bases.pop(0)
        if oldest in self._unflushed:
            self._unflushed.remove(oldest)
        if oldest in self._rolled:
            self._rolled.remove(oldest)
        oldest.delete()
        self._directory_dirty = True
        self.producer_state.truncate_head(self.log_start_offset)

    # -- closing ---------------------------------------------------------------------------

    def close(self) -> None:
        """Flush, persist the indexes and a checkpoint at the end, and mark a clean shutdown.

        A failed log (see the module docstring) is only closed, as a crash would leave it.

        :raises LogFailedError: if the final fsync fails (the files are closed anyway).
        """
        if self._closed:
            return
        if self._clean_marker or self._failure is not None or self.read_only:
            # Nothing changed since a clean open (the files on disk still describe the
            # log), the log failed and must not claim anything more than it did, or it
            # may not write at all.
            self.abandon()
            return
        try:
            self.flush()
            self._write_producer_snapshot(self._clock())
            active = self._segments[-1]
            # The marker's directory fsync makes the new names durable.
            active.write_indexes(sync_directory=False)
            end = RecoveryPoint(self._log_end_offset, active.base_offset, active.size)
            self._checkpoint.record(end, sync=True)
            atomic_write(self.fs, self.directory / CLEAN_SHUTDOWN_FILE, b"")
        finally:
            self.abandon()

    def abandon(self) -> None:
        """Close the files without flushing or marking a clean shutdown (as a crash would)."""
        self._closed = True
        self._checkpoint.close()
        for segment in self._segments:
            segment.close()

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` or :meth:`abandon` was called."""
        return self._closed


def _batch_size(raw: bytes, position: int) -> int:
    """The size a batch at ``position`` claims, from its length field (at least a header)."""
    if position + 12 > len(raw):
        return HOP_SIZE
    length = int.from_bytes(raw[position + 8 : position + 12], "big", signed=True)
    return max(length + 12, HOP_SIZE)
