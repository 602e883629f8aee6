"""Partition: the awaitable face of a PartitionLog (durable appends, reads, waiting).

Theory of operation. Appends are written by the event loop's thread at once (a write to
the page cache is short); what an append awaits is durability, as the topic's policy says:

* ``never``: nothing; the record is visible to readers at once.
* ``always``: the append holds the partition's write lock through its own write and fsync,
  so every acknowledgement follows an fsync made for it.
* ``batch`` (group commit): an append that finds no fsync running starts one, in a worker
  thread, covering everything written so far; appends arriving meanwhile wait for it to
  finish and, if it did not cover them, the first of them starts the next. One fsync thus
  acknowledges every append that arrived during the previous one.

Readers see records up to the *high watermark*: the durable end for ``always``/``batch``
topics, the log end for ``never``. So a reader never sees a record that a crash could take
back. A caught-up reader waits on an event set whenever the high watermark moves; there
is no polling.

Deleting records (:meth:`Partition.delete_records`) moves the log start up to at most the
high watermark, so only records a reader could see are deleted; under ``never`` the log
is flushed first, so that the log start never lies past what a crash keeps. The new log
start is written in a worker thread, then takes effect (see ``_log_start.py``).
"""

from __future__ import annotations

from collections.abc import Sequence

import anyio
import anyio.to_thread

from ._batch import parse_batch_header
from ._config import CleanupPolicy, Durability, TopicConfig
from ._errors import LogClosedError, OffsetOutOfRangeError, PolicyViolationError, StoreError
from ._log import AppendInfo, PartitionLog
from ._log_start import write_log_start
from ._records import (
    Compression,
    NewRecord,
    Record,
    RecordColumns,
    decode_columns,
    decode_records,
)
from ._topic_names import check_not_internal, is_internal_topic

#: Reads larger than this leave the event loop for a worker thread.
THREADED_READ_BYTES = 256 << 10


class Partition:
    """One partition of a topic: awaitable appends and reads over its :class:`PartitionLog`.

    Concurrency: any number of tasks may append and read; appends are applied in the
    order they are called, and each is acknowledged once durable under the topic's
    durability policy.
    """

    def __init__(
        self, topic: str, index: int, log: PartitionLog, *, read_only: bool = False
    ) -> None:
        self.topic = topic
        self.index = index
        self.log = log
        self.read_only = read_only
        #: Whether the topic is one of the system's own: appends take ``internal=True``.
        self.internal = is_internal_topic(topic)
        never = log.config.durability is Durability.NEVER
        self._high_watermark = log.log_end_offset if never else log.recovery_point
        self._new_data: anyio.Event | None = None
        self._flush_done: anyio.Event | None = None
        self._write_lock: anyio.Lock | None = None
        self._start_lock: anyio.Lock | None = None

    def __repr__(self) -> str:
        return f"<Partition {self.topic}-{self.index} end={self.log.log_end_offset}>"

    @property
    def config(self) -> TopicConfig:
        """The topic's configuration."""
        return self.log.config

    @property
    def log_start_offset(self) -> int:
        """The first offset still stored."""
        return self.log.log_start_offset

    @property
    def max_timestamp(self) -> int:
        """The largest record timestamp stored (-1 when there is none); with
        :meth:`offset_for_time` it finds the record that has it (Kafka's ListOffsets -3)."""
        return self.log.max_timestamp

    @property
    def log_end_offset(self) -> int:
        """The offset the next record will get."""
        return self.log.log_end_offset

    @property
    def high_watermark(self) -> int:
        """The end of what readers may see: records below it are durable per the policy."""
        return self._high_watermark

    # -- appending -------------------------------------------------------------------------

    async def append(
        self,
        records: Sequence[NewRecord],
        *,
        compression: Compression = Compression.NONE,
        internal: bool = False,
    ) -> AppendInfo:
        """Append ``records`` as one batch; return once durable under the topic's policy.

        :param internal: allow appending to an internal topic; for headwater's own code.
        :raises RecordTooLargeError: if the batch exceeds ``max_message_bytes``.
        :raises StorageFullError: if the disk refuses the write (nothing is acknowledged).
        :raises LogClosedError: if the partition is closed.
        :raises LogFailedError: if an fsync of this partition failed, now or earlier.
        :raises InvalidTopicError: if the topic is internal.
        :raises StoreError: if the store was opened read-only.
        """
        self._check_writable(internal)
        if self.config.durability is Durability.ALWAYS:
            async with self._lock():
                info = self.log.append(records, compression=compression)
                await self._flush()
            return info
        info = self.log.append(records, compression=compression)
        await self._acknowledge(info)
        return info

    async def append_batch(self, batch: bytes | bytearray, *, internal: bool = False) -> AppendInfo:
        """Append one encoded v2 record batch as received; return once durable.

        :param internal: allow appending to an internal topic; for headwater's own code.
        :raises CorruptRecordError: if ``batch`` is not exactly one valid batch.
        :raises RecordTooLargeError: if it exceeds ``max_message_bytes``.
        :raises StorageFullError: if the disk refuses the write.
        :raises LogFailedError: if an fsync of this partition failed, now or earlier.
        :raises InvalidTopicError: if the topic is internal.
        :raises StoreError: if the store was opened read-only.
        """
        self._check_writable(internal)
        if self.config.durability is Durability.ALWAYS:
            async with self._lock():
                info = self.log.append_batch(batch)
                await self._flush()
            return info
        info = self.log.append_batch(batch)
        await self._acknowledge(info)
        return info

    def _check_writable(self, internal: bool) -> None:
        if self.read_only:
            raise StoreError(f"partition {self.topic}-{self.index} was opened read-only")
        if self.internal and not internal:
            check_not_internal(self.topic, "append to")

    def _lock(self) -> anyio.Lock:
        if self._write_lock is None:
            self._write_lock = anyio.Lock()
        return self._write_lock

    def append_batch_nowait(
        self, batch: bytes | bytearray, *, internal: bool = False
    ) -> AppendInfo:
        """Write one encoded v2 record batch now, without waiting for it to be durable.

        For callers that pipeline appends (the broker writes every batch of a client's
        pipelined requests before the first fsync ends): pair it with :meth:`wait_durable`,
        whose waits share fsyncs as :meth:`append_batch`'s do under ``batch``. Readers see
        the records once they are durable.

        :raises CorruptRecordError: if ``batch`` is not exactly one valid batch.
        :raises RecordTooLargeError: if it exceeds ``max_message_bytes``.
        :raises StorageFullError: if the disk refuses the write.
        :raises InvalidTopicError: if the topic is internal and ``internal`` is not given.
        :raises StoreError: if the store was opened read-only.
        """
        self._check_writable(internal)
        return self.log.append_batch(batch)

    async def wait_durable(self, next_offset: int) -> None:
        """Return once every record below ``next_offset`` is durable under the topic's policy.

        Concurrent waiters share fsyncs (group commit); under ``never`` there is nothing
        to wait for.

        :raises LogClosedError: if the partition is closed while waiting.
        :raises LogFailedError: if an fsync fails, now or earlier.
        """
        if self.config.durability is Durability.NEVER:
            self._publish(self.log.log_end_offset)
            return
        while self._high_watermark < next_offset:
            if self.log.closed:
                raise LogClosedError(f"partition {self.topic}-{self.index} is closed")
            if self._flush_done is not None:
                await self._flush_done.wait()
            else:
                await self._flush()

    async def _acknowledge(self, info: AppendInfo) -> None:
        await self.wait_durable(info.next_offset)

    async def _flush(self) -> None:
        plan = self.log.prepare_flush()  # raises LogFailedError once an fsync has failed
        if plan is None:
            self._publish(self.log.recovery_point)
            return
        done = self._flush_done = anyio.Event()
        failed: OSError | None = None
        try:
            # Not cancellable: an fsync under way finishes, whoever stopped waiting for it.
            await anyio.to_thread.run_sync(plan.execute)
        except OSError as exc:
            # complete_flush (below) fails the log: the page cache may have dropped the
            # data, so nothing from this log is acknowledged again until it is reopened.
            failed = exc
        finally:
            self.log.complete_flush(plan)
            self._flush_done = None
            done.set()
        if failed is not None:
            raise self.log.failed_error() from failed
        self._publish(plan.target.offset)

    async def flush(self) -> None:
        """Make everything appended so far durable (whatever the durability policy).

        :raises LogFailedError: if an fsync of this partition failed, now or earlier.
        """
        while self._flush_done is not None:
            await self._flush_done.wait()
        await self._flush()

    def _publish(self, offset: int) -> None:
        if offset > self._high_watermark:
            self._high_watermark = offset
            if self._new_data is not None:
                self._new_data.set()
                self._new_data = None

    # -- deleting records -------------------------------------------------------------------

    async def delete_records(self, before_offset: int, *, internal: bool = False) -> int:
        """Delete the records before ``before_offset``; return the new log start offset.

        ``before_offset`` -1 means the high watermark (every record a reader can see). A
        log start already at or past it stays. The move is durable before this returns;
        readers then get :class:`OffsetOutOfRangeError` below it, and retention deletes
        the segments it leaves wholly behind.

        :param internal: allow an internal topic; for headwater's own code.
        :raises OffsetOutOfRangeError: if ``before_offset`` is below -1 or past the high
            watermark.
        :raises PolicyViolationError: if the topic is compacted (``cleanup_policy=compact``:
            its records go only when superseded, as in Kafka).
        :raises InvalidTopicError: if the topic is internal.
        :raises LogFailedError: if an fsync of this partition failed, now or earlier.
        :raises StoreError: if the store was opened read-only, or the file system refuses
            (the log start then stays where it was).
        """
        if self.read_only:
            raise StoreError(f"partition {self.topic}-{self.index} was opened read-only")
        if self.internal and not internal:
            check_not_internal(self.topic, "delete records of")
        if self.config.cleanup_policy is CleanupPolicy.COMPACT:
            raise PolicyViolationError(
                f"cannot delete records of {self.topic}-{self.index}: the topic is compacted "
                "(cleanup_policy=compact), so its records go only when superseded"
            )
        offset = self._high_watermark if before_offset == -1 else before_offset
        if not 0 <= offset <= self._high_watermark:
            raise OffsetOutOfRangeError(
                f"cannot delete records of {self.topic}-{self.index} before offset "
                f"{before_offset}: it must lie from 0 to the high watermark "
                f"{self._high_watermark} (or be -1 for the high watermark)"
            )
        if self._start_lock is None:
            self._start_lock = anyio.Lock()
        async with self._start_lock:  # one file write at a time, in order
            log = self.log
            log.check_log_start(offset)
            if offset <= log.log_start_offset:
                return log.log_start_offset
            if log.recovery_point < offset:  # durability=never: the end is not on disk yet
                await self.flush()
            try:
                await anyio.to_thread.run_sync(write_log_start, log.fs, log.directory, offset)
            except OSError as exc:
                raise StoreError(
                    f"partition {self.topic}-{self.index}: cannot record the new log start "
                    f"{offset}: {exc}"
                ) from exc
            log.note_log_start(offset)
            return log.log_start_offset

    # -- reading ---------------------------------------------------------------------------

    async def read(self, start_offset: int, max_bytes: int) -> bytes:
        """Return whole batches from the one holding ``start_offset``, below the high watermark.

        See :meth:`PartitionLog.read`; large reads run in a worker thread.

        :raises OffsetOutOfRangeError: if ``start_offset`` is outside the log.
        """
        upper = self._high_watermark
        found = self.log.locate(start_offset, upper)
        if found is None:
            return b""
        segment, position = found
        size = min(max(max_bytes, 64), segment.size - position)
        if size < THREADED_READ_BYTES:
            raw = segment.read(position, size)
        else:
            segment.pin()
            try:
                raw = await anyio.to_thread.run_sync(segment.read, position, size)
            finally:
                segment.unpin()
        return self.log.trim(segment, position, raw, upper)

    async def read_records(self, start_offset: int, max_bytes: int) -> list[Record]:
        """Return decoded records at or after ``start_offset`` (see :meth:`read`).

        Batches left empty by compaction are stepped over, so the result is empty only
        when the reader has caught up with the high watermark.
        """
        while True:
            data = await self.read(start_offset, max_bytes)
            records = records_from(data, start_offset)
            if records or not data:
                return records
            start_offset = next_offset_after(data)

    async def read_columns(self, start_offset: int, max_bytes: int) -> RecordColumns:
        """Return records at or after ``start_offset`` as columns (see :meth:`read` and
        :meth:`read_records`): the same records, without a tuple per record."""
        while True:
            data = await self.read(start_offset, max_bytes)
            columns = decode_columns(data, start_offset)
            if len(columns) or not data:
                return columns
            start_offset = next_offset_after(data)

    async def wait_for(self, offset: int) -> None:
        """Wait until the high watermark passes ``offset`` (a record at ``offset`` is readable).

        :raises LogClosedError: if the partition is closed while waiting.
        """
        while self._high_watermark <= offset:
            if self.log.closed:
                raise LogClosedError(f"partition {self.topic}-{self.index} is closed")
            if self._new_data is None:
                self._new_data = anyio.Event()
            await self._new_data.wait()

    def offset_for_time(self, timestamp_ms: int) -> int | None:
        """Return the first offset with a timestamp at or after ``timestamp_ms``, or ``None``."""
        found = self.log.offset_for_time(timestamp_ms)
        if found is None or found >= self._high_watermark:
            return None
        return found

    def close(self) -> None:
        """Close the log cleanly and wake every waiting reader (they get LogClosedError)."""
        self.log.close()
        if self._new_data is not None:
            self._new_data.set()
            self._new_data = None


def records_from(data: bytes, start_offset: int = 0) -> list[Record]:
    """Decode every record in ``data`` (whole batches) at or after ``start_offset``."""
    out: list[Record] = []
    position = 0
    end = len(data)
    while position < end:
        records = decode_records(data, position, verify=False)
        if records and records[0].offset < start_offset:
            records = [r for r in records if r.offset >= start_offset]
        out.extend(records)
        position += int.from_bytes(data[position + 8 : position + 12], "big") + 12
    return out


def next_offset_after(data: bytes) -> int:
    """Return the offset after the last batch in ``data`` (whole batches)."""
    position = 0
    next_offset = 0
    while position < len(data):
        header = parse_batch_header(data, position)
        next_offset = header.base_offset + header.last_offset_delta + 1
        position += header.batch_length + 12
    return next_offset
