"""Handlers of Fetch and ListOffsets: stored batches out, as they are, and offset look-ups.

Theory of operation
-------------------
Fetch answers with whole stored batches, byte for byte: :meth:`Partition.read` returns
the bytes of whole batches from the one holding the fetch offset (which may begin before
it; clients skip those records), and the response carries that buffer uncopied to the
socket (the codec keeps large ``records`` buffers out of line). Limits follow Kafka's
KIP-74: partitions are read in request order within ``partition_max_bytes`` each and
``max_bytes`` in all, except that the first batch of the response is sent whole however
large it is, so that a consumer always makes progress.

Long polling: when fewer than ``min_bytes`` are available, the handler waits -- on the
partitions' new-data notifications (:meth:`Partition.wait_for`), never by sleeping and
polling -- until one of them has data, then reads again; it answers with what it has when
``max_wait_ms`` runs out, or at once when the broker shuts down (which cancels the waits:
no task per fetch watches for it). :attr:`FetchHandlers.waiting`
counts the fetches waiting so (the broker's statistics report it).

There are no fetch sessions: every response says ``session_id`` 0 ("no session") and
lists every requested partition, empty ones too, so clients keep sending full requests.

Isolation: a ``read_uncommitted`` fetch reads up to the high watermark; a
``read_committed`` one up to the last stable offset (the first offset of the earliest
undecided transaction), and its response lists the aborted transactions -- producer id
and first offset -- whose records lie in what it may read, so that the client drops
them; the batches themselves, markers included, go out as stored. ``last_stable_offset``
is always the partition's LSO. ListOffsets ``latest`` is the LSO for read_committed.

Every partition has the same leader epoch (:data:`LEADER_EPOCH`); a request naming a
newer one is answered ``UNKNOWN_LEADER_EPOCH``, an older one ``FENCED_LEADER_EPOCH``.

ListOffsets: timestamp -1 is the high watermark (latest), -2 the log start offset
(earliest), -3 the first record with the largest timestamp; any other value T the first
record with a timestamp at or after T, or offset -1 when there is none.
"""

from __future__ import annotations

import contextlib
import logging

import anyio

from headwater.store import (
    CorruptRecordError,
    IsolationLevel,
    LogClosedError,
    OffsetOutOfRangeError,
    Partition,
    Store,
    StoreError,
    TopicNotFoundError,
)

from ._dispatch import ClientInfo, Handler, is_accepted
from ._handlers_admin import LEADER_EPOCH
from ._protocol import ApiKey, KafkaErrorCode, Message, Request

logger = logging.getLogger("headwater.broker")

_LATEST = -1
_EARLIEST = -2
_MAX_TIMESTAMP = -3
_NO_LIMIT = 0x7FFFFFFF


def _epoch_error(current_leader_epoch: int) -> KafkaErrorCode | None:
    if current_leader_epoch < 0 or current_leader_epoch == LEADER_EPOCH:
        return None
    if current_leader_epoch > LEADER_EPOCH:
        return KafkaErrorCode.UNKNOWN_LEADER_EPOCH
    return KafkaErrorCode.FENCED_LEADER_EPOCH


async def _wait_any(waiting: list[tuple[Partition, int, IsolationLevel]]) -> None:
    """Return once one of the partitions has a record at its offset."""
    if len(waiting) == 1:  # the usual case, without a task per partition
        partition, offset, isolation = waiting[0]
        with contextlib.suppress(LogClosedError):  # deleted: the next read says so
            await partition.wait_for(offset, isolation=isolation)
        return
    async with anyio.create_task_group() as tg:

        async def wait_data(partition: Partition, offset: int, isolation: IsolationLevel) -> None:
            with contextlib.suppress(LogClosedError):
                await partition.wait_for(offset, isolation=isolation)
            tg.cancel_scope.cancel()

        for partition, offset, isolation in waiting:
            tg.start_soon(wait_data, partition, offset, isolation)


def _budget(body: Message) -> int:
    return body["max_bytes"] if body["max_bytes"] > 0 else _NO_LIMIT


def _fetch_error(index: int, code: KafkaErrorCode) -> Message:
    return {
        "partition_index": index,
        "error_code": code,
        "high_watermark": -1,
        "last_stable_offset": -1,
        "log_start_offset": -1,
        "aborted_transactions": None,
        "records": b"",
    }


class FetchHandlers:
    """Fetch and ListOffsets over the store.

    :param store: the open store.
    :param shutdown: set when the broker shuts down; no fetch waits after that, and
        :meth:`stop_waiting` wakes those waiting then.
    """

    def __init__(self, store: Store, shutdown: anyio.Event) -> None:
        self._store = store
        self._shutdown = shutdown
        #: Fetches waiting now for data (or for their ``max_wait_ms`` to run out).
        self.waiting = 0
        self._waits: set[anyio.CancelScope] = set()

    def table(self) -> dict[ApiKey, Handler]:
        """Return this module's handlers by API key."""
        return {ApiKey.FETCH: self.fetch, ApiKey.LIST_OFFSETS: self.list_offsets}

    # -- Fetch -----------------------------------------------------------------------------

    async def fetch(self, request: Request, client: ClientInfo) -> Message:
        """Answer with stored batches once ``min_bytes`` are there or ``max_wait_ms`` passed."""
        body = request.body
        if not is_accepted(request):
            return {
                "responses": [
                    {
                        "topic": t["topic"],
                        "partitions": [
                            _fetch_error(p["partition"], KafkaErrorCode.UNSUPPORTED_VERSION)
                            for p in t["partitions"]
                        ],
                    }
                    for t in body["topics"]
                ]
            }
        if body["session_id"] != 0 or body["session_epoch"] > 0:
            code = (
                KafkaErrorCode.FETCH_SESSION_ID_NOT_FOUND
                if body["session_id"] != 0
                else KafkaErrorCode.INVALID_FETCH_SESSION_EPOCH
            )
            return {"error_code": code, "session_id": 0, "responses": []}
        if body["isolation_level"] not in (0, 1):
            return {"error_code": KafkaErrorCode.INVALID_REQUEST, "session_id": 0, "responses": []}
        deadline = anyio.current_time() + max(body["max_wait_ms"], 0) / 1000
        min_bytes = body["min_bytes"]
        budget = _budget(body)
        while True:
            responses, size, waiting = await self._read(body)
            if size >= min(min_bytes, budget) or not waiting or self._shutdown.is_set():
                break
            remaining = deadline - anyio.current_time()
            if remaining <= 0:
                break
            self.waiting += 1
            with anyio.move_on_after(remaining) as scope:
                self._waits.add(scope)  # cancelled by stop_waiting at shutdown
                try:
                    await _wait_any(waiting)
                finally:
                    self._waits.discard(scope)
                    self.waiting -= 1
            if scope.cancelled_caught:
                break
        return {"error_code": 0, "session_id": 0, "responses": responses}

    async def _read(
        self, body: Message
    ) -> tuple[list[Message], int, list[tuple[Partition, int, IsolationLevel]]]:
        """Read every requested partition; return responses, bytes, and what to wait for."""
        isolation = IsolationLevel(body["isolation_level"])
        budget = _budget(body)
        total = 0
        waiting: list[tuple[Partition, int, IsolationLevel]] = []
        responses: list[Message] = []
        for topic in body["topics"]:
            name = topic["topic"]
            results: list[Message] = []
            responses.append({"topic": name, "partitions": results})
            for wanted in topic["partitions"]:
                index = wanted["partition"]
                try:
                    partition = self._store.partition(name, index)
                except (TopicNotFoundError, LogClosedError):
                    results.append(_fetch_error(index, KafkaErrorCode.UNKNOWN_TOPIC_OR_PARTITION))
                    continue
                epoch_error = _epoch_error(wanted["current_leader_epoch"])
                if epoch_error is not None:
                    results.append(_fetch_error(index, epoch_error))
                    continue
                offset = wanted["fetch_offset"]
                data = b""
                if total < budget:
                    limit = min(wanted["partition_max_bytes"], budget - total)
                    try:
                        data = await partition.read(offset, max(limit, 1), isolation=isolation)
                    except OffsetOutOfRangeError:
                        results.append(_fetch_error(index, KafkaErrorCode.OFFSET_OUT_OF_RANGE))
                        continue
                    except LogClosedError:
                        results.append(
                            _fetch_error(index, KafkaErrorCode.UNKNOWN_TOPIC_OR_PARTITION)
                        )
                        continue
                    except (CorruptRecordError, StoreError, OSError) as exc:
                        logger.error("cannot read %s-%d at %d: %s", name, index, offset, exc)
                        results.append(_fetch_error(index, KafkaErrorCode.KAFKA_STORAGE_ERROR))
                        continue
                    if total and len(data) > budget - total:
                        # Only the response's first batch may exceed the limits: this
                        # partition waits for the next request, and the response is full.
                        data = b""
                        total = budget
                total += len(data)
                high_watermark = partition.high_watermark
                stable = partition.last_stable_offset
                upper = stable if isolation is IsolationLevel.READ_COMMITTED else high_watermark
                # More for this partition is what lies past what was read (or asked for).
                waiting.append((partition, max(offset, upper), isolation))
                aborted = None
                if isolation is IsolationLevel.READ_COMMITTED:
                    aborted = [
                        {"producer_id": txn.producer_id, "first_offset": txn.first_offset}
                        for txn in partition.aborted_transactions(offset, upper)
                    ]
                results.append(
                    {
                        "partition_index": index,
                        "error_code": 0,
                        "high_watermark": high_watermark,
                        "last_stable_offset": stable,
                        "log_start_offset": partition.log_start_offset,
                        "aborted_transactions": aborted,
                        "records": data,
                    }
                )
        return responses, total, waiting

    def stop_waiting(self) -> None:
        """Wake every waiting fetch to answer with what it has (the broker shuts down)."""
        for scope in self._waits:
            scope.cancel()

    # -- ListOffsets -----------------------------------------------------------------------

    async def list_offsets(self, request: Request, client: ClientInfo) -> Message:
        """Answer the latest, earliest or max-timestamp offset, or the offset for a time."""
        accepted = is_accepted(request)
        topics = []
        for topic in request.body["topics"]:
            results = []
            for wanted in topic["partitions"]:
                index = wanted["partition_index"]
                if accepted:
                    code, offset, timestamp = await self._look_up(
                        topic["name"], wanted, request.body.get("isolation_level", 0)
                    )
                else:
                    code, offset, timestamp = KafkaErrorCode.UNSUPPORTED_VERSION, -1, -1
                results.append(
                    {
                        "partition_index": index,
                        "error_code": code,
                        "timestamp": timestamp,
                        "offset": offset,
                        "leader_epoch": -1,
                    }
                )
            topics.append({"name": topic["name"], "partitions": results})
        return {"topics": topics}

    async def _look_up(
        self, topic: str, wanted: Message, isolation: int
    ) -> tuple[KafkaErrorCode, int, int]:
        try:
            partition = self._store.partition(topic, wanted["partition_index"])
        except (TopicNotFoundError, LogClosedError):
            return KafkaErrorCode.UNKNOWN_TOPIC_OR_PARTITION, -1, -1
        epoch_error = _epoch_error(wanted["current_leader_epoch"])
        if epoch_error is not None:
            return epoch_error, -1, -1
        timestamp = wanted["timestamp"]
        try:
            if timestamp == _LATEST:
                if isolation == IsolationLevel.READ_COMMITTED:
                    return KafkaErrorCode.NONE, partition.last_stable_offset, -1
                return KafkaErrorCode.NONE, partition.high_watermark, -1
            if timestamp == _EARLIEST:
                return KafkaErrorCode.NONE, partition.log_start_offset, -1
            if timestamp == _MAX_TIMESTAMP:
                timestamp = partition.max_timestamp
                if timestamp < 0:
                    return KafkaErrorCode.NONE, -1, -1
            elif timestamp < 0:
                return KafkaErrorCode.INVALID_REQUEST, -1, -1
            offset = partition.offset_for_time(timestamp)
            if offset is None:
                return KafkaErrorCode.NONE, -1, -1
            records = await partition.read_records(offset, 1)
        except (LogClosedError, OffsetOutOfRangeError):
            return KafkaErrorCode.UNKNOWN_TOPIC_OR_PARTITION, -1, -1
        except (StoreError, OSError) as exc:
            logger.error("cannot look up offsets in %s: %s", topic, exc)
            return KafkaErrorCode.KAFKA_STORAGE_ERROR, -1, -1
        if not records:
            return KafkaErrorCode.NONE, -1, -1
        return KafkaErrorCode.NONE, records[0].offset, records[0].timestamp
