"""Partition: the awaitable face of a PartitionLog (durable appends, reads, waiting).

Theory of operation. Appends are written by the event loop's thread at once (a write to
the page cache is short); what an append awaits is durability, as the topic's policy says:

* ``never``: nothing; the record is visible to readers at once.
* ``always``: the append holds the partition's write lock through its own write and fsync,
  so every acknowledgement follows an fsync made for it.
  Appends waiting for the lock take it in the order they came (anyio's lock is fair).
* ``batch`` (group commit): an append that finds no fsync running starts one, in a worker
  thread, covering everything written so far; appends arriving meanwhile wait for it to
  finish and, if it did not cover them, the first of them starts the next. One fsync thus
  acknowledges every append that arrived during the previous one. A writer that will
  wait soon may start that fsync at once (:meth:`Partition.begin_flush`); the first wait
  then takes it over.

So under every policy batches and markers enter the log in the order they were called:
a transaction's marker follows every batch of it that was called before it, even when
both wait for the lock (the transaction coordinator accepts no batch of a transaction
once it has decided it, so none can follow its marker).

Readers see records up to the *high watermark*: the durable end for ``always``/``batch``
topics, the log end for ``never``. So a reader never sees a record that a crash could take
back. A caught-up reader waits on an event set whenever the high watermark moves; there
is no polling.

Readers choose an isolation level (``_isolation.py``): ``READ_UNCOMMITTED`` (the default)
reads to the high watermark, ``READ_COMMITTED`` to the last stable offset, skipping aborted
transactions. Decoded reads (:meth:`Partition.read_records`, :meth:`Partition.read_columns`)
never return the records of control batches; raw reads (:meth:`Partition.read`) return the
batches as stored, for Kafka clients, which filter them with
:meth:`Partition.aborted_transactions`.

Deleting records (:meth:`Partition.delete_records`) moves the log start up to at most the
high watermark, so only records a reader could see are deleted; under ``never`` the log
is flushed first, so that the log start never lies past what a crash keeps. The new log
start is written in a worker thread, then takes effect (see ``_log_start.py``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

import anyio
import anyio.to_thread

from ._batch import parse_batch_header
from ._config import CleanupPolicy, Durability, TopicConfig
from ._control import ControlType
from ._errors import (
    LogClosedError,
    LogFailedError,
    OffsetOutOfRangeError,
    PolicyViolationError,
    StoreError,
)
from ._isolation import IsolationLevel, skip_hidden_batches, visible_batches
from ._log import AppendInfo, FlushPlan, PartitionLog
from ._log_start import write_log_start
from ._producer_state import AbortedTransaction
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
        #: How many times new records woke readers waiting in :meth:`wait_for` (a writer
        #: that sees it move may let them go first: see the broker's produce handler).
        self.readers_woken = 0
        self._flush_done: anyio.Event | None = None
        #: A flush :meth:`begin_flush` set going, for the next one to take over.
        self._begun: FlushPlan | None = None
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

    @property
    def last_stable_offset(self) -> int:
        """The end of what read_committed readers see: the first offset of the earliest
        undecided transaction, else the high watermark."""
        return self.log.producer_state.last_stable_offset(self._high_watermark)

    def upper_offset(self, isolation: IsolationLevel) -> int:
        """Return where readers at ``isolation`` stop: the high watermark or the LSO."""
        if isolation is IsolationLevel.READ_COMMITTED:
            return self.last_stable_offset
        return self._high_watermark

    def aborted_transactions(self, start_offset: int, end_offset: int) -> list[AbortedTransaction]:
        """Return the aborted transactions with records in ``[start_offset, end_offset)``."""
        return self.log.producer_state.aborted_transactions(start_offset, end_offset)

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

    async def write_marker(
        self,
        control_type: ControlType,
        *,
        producer_id: int,
        producer_epoch: int,
        coordinator_epoch: int,
    ) -> AppendInfo:
        """Commit or abort ``producer_id``'s transaction here; return once durable.

        Internal topics take markers too (the offsets of a transaction are committed
        with one). See :meth:`PartitionLog.write_marker` for what it raises.
        """
        self._check_writable(True)
        if self.config.durability is Durability.ALWAYS:
            async with self._lock():
                info = self.log.write_marker(
                    control_type,
                    producer_id=producer_id,
                    producer_epoch=producer_epoch,
                    coordinator_epoch=coordinator_epoch,
                )
                await self._flush()
            return info
        info = self.log.write_marker(
            control_type,
            producer_id=producer_id,
            producer_epoch=producer_epoch,
            coordinator_epoch=coordinator_epoch,
        )
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
            if self._begun is not None:  # begun before the topic's durability changed
                await self._flush()
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

    def begin_flush(self) -> None:
        """Start making everything appended so far durable, without waiting: the fsyncs
        start now, in a thread, and the next :meth:`wait_durable`, :meth:`flush` or
        :meth:`close` waits for them instead of starting its own.

        For a writer that has just appended with :meth:`append_batch_nowait` and will
        wait for durability soon (the broker): the wait then starts where the fsync
        already is. Does nothing unless the durability is ``batch`` and no flush is under
        way (the appends are then left to the next one, as group commit does).
        """
        if (
            self.config.durability is not Durability.BATCH
            or self._flush_done is not None
            or self._begun is not None
            or self.log.closed
        ):
            return
        try:
            plan = self.log.prepare_flush()
        except LogFailedError:
            return  # the wait says so
        if plan is None:
            return
        self._begun = plan
        with contextlib.suppress(OSError):  # no thread to be had now: the wait runs it all
            plan.start()

    async def _flush(self) -> None:
        plan, self._begun = self._begun, None
        if plan is None:
            plan = self.log.prepare_flush()  # raises LogFailedError once an fsync failed
        if plan is None:
            self._publish(self.log.recovery_point)
            return
        done = self._flush_done = anyio.Event()
        failed: OSError | None = None
        try:
            # Not cancellable: an fsync under way finishes, whoever stopped waiting for it.
            await plan.execute_async()
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
                self.readers_woken += 1

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

    async def read(
        self,
        start_offset: int,
        max_bytes: int,
        *,
        isolation: IsolationLevel = IsolationLevel.READ_UNCOMMITTED,
    ) -> bytes:
        """Return whole batches from the one holding ``start_offset``, below the high
        watermark (``READ_COMMITTED``: below the last stable offset), as stored.

        See :meth:`PartitionLog.read`; large reads run in a worker thread.

        :raises OffsetOutOfRangeError: if ``start_offset`` is outside the log.
        """
        upper = self.upper_offset(isolation)
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

    async def read_records(
        self,
        start_offset: int,
        max_bytes: int,
        *,
        isolation: IsolationLevel = IsolationLevel.READ_UNCOMMITTED,
    ) -> list[Record]:
        """Return decoded records at or after ``start_offset`` (see :meth:`read`).

        Batches left empty by compaction, control batches and (``READ_COMMITTED``)
        aborted transactions are stepped over, so the result is empty only when the
        reader has caught up with the high watermark (or the last stable offset).
        """
        while True:
            data = await self.read(start_offset, max_bytes, isolation=isolation)
            records = records_from(self.visible(data, start_offset, isolation), start_offset)
            if records or not data:
                return records
            start_offset = next_offset_after(data)

    async def read_columns(
        self,
        start_offset: int,
        max_bytes: int,
        *,
        isolation: IsolationLevel = IsolationLevel.READ_UNCOMMITTED,
    ) -> RecordColumns:
        """Return records at or after ``start_offset`` as columns (see :meth:`read` and
        :meth:`read_records`): the same records, without a tuple per record."""
        while True:
            data = await self.read(start_offset, max_bytes, isolation=isolation)
            columns = decode_columns(self.visible(data, start_offset, isolation), start_offset)
            if len(columns) or not data:
                return columns
            start_offset = next_offset_after(data)

    def visible(self, data: bytes, start_offset: int, isolation: IsolationLevel) -> bytes:
        """Return the batches of ``data`` (a :meth:`read` from ``start_offset``) that a
        reader at ``isolation`` sees as records: without control batches and, for
        ``READ_COMMITTED``, without aborted transactions (see ``_isolation.py``)."""
        state = self.log.producer_state
        if not data or not state.has_transactions:
            return data  # a log without transactions has nothing to hide
        aborted = None
        if isolation is IsolationLevel.READ_COMMITTED:
            aborted = state.aborted_transactions(start_offset, next_offset_after(data))
        return visible_batches(data, aborted)

    async def skip_hidden(
        self, offset: int, *, isolation: IsolationLevel = IsolationLevel.READ_UNCOMMITTED
    ) -> int:
        """Return the first offset at or after ``offset`` that may hold a record a reader at
        ``isolation`` sees: past transaction markers, aborted transactions
        (``READ_COMMITTED``) and batches compaction emptied, up to what is readable.

        A reader whose decoded read came back empty moves its position here, so that a log
        ending in a marker does not leave it one short of the end forever.

        :raises OffsetOutOfRangeError: if ``offset`` is outside the log.
        """
        state = self.log.producer_state
        if not state.has_transactions:
            return offset  # nothing hidden: compaction never empties the active segment
        while offset < self.upper_offset(isolation):
            data = await self.read(offset, 1 << 16, isolation=isolation)
            if not data:
                break
            aborted = None
            if isolation is IsolationLevel.READ_COMMITTED and state.has_transactions:
                aborted = state.aborted_transactions(offset, next_offset_after(data))
            offset, found = skip_hidden_batches(data, offset, aborted)
            if found:
                break
        return offset

    async def wait_for(
        self, offset: int, *, isolation: IsolationLevel = IsolationLevel.READ_UNCOMMITTED
    ) -> None:
        """Wait until the high watermark (or the LSO) passes ``offset``.

        What lies there may be only batches decoded reads skip (markers, aborted records):
        a reader whose decoded read came back empty moves past them with
        :meth:`skip_hidden` before it waits.

        :raises LogClosedError: if the partition is closed while waiting.
        """
        while self.upper_offset(isolation) <= offset:
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
        """Close the log cleanly and wake every waiting reader (they get LogClosedError).

        A flush :meth:`begin_flush` started that no one waited for is finished first, in
        this thread (its fsyncs use the log's descriptors).
        """
        plan, self._begun = self._begun, None
        if plan is not None:
            try:
                plan.finish_blocking()
            except OSError:
                pass  # complete_flush fails the log: close then leaves it as a crash would
            finally:
                self.log.complete_flush(plan)
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
