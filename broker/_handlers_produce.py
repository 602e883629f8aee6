"""Handlers of Produce and InitProducerId: validated batches into the log, as received.

Theory of operation
-------------------
A Produce request carries, per partition, exactly one record batch (magic 2) from the
client. The broker checks it (:func:`check_batch`, NOTES.md's list) before anything is
appended, then hands the client's bytes to the partition's log, which writes the base
offset -- outside the CRC -- and stores everything else as received: a compressed batch
is never decompressed, since its count, offsets and timestamps sit in the uncompressed
header. A batch is acknowledged only once it is durable under the topic's policy. Still,
the broker stores only what it could read itself (compaction, local readers), so a codec
it lacks is refused rather than stored.

Checks, in order, with the error each failure answers:

======================================================  ============================
an internal topic (``__consumer_offsets``)              INVALID_TOPIC_EXCEPTION (17)
no batch, or bytes after the first batch                INVALID_RECORD (87)
fewer bytes than a header, magic not 2, a length that   CORRUPT_MESSAGE (2)
runs past the bytes sent, an unknown codec
larger than the topic's ``max.message.bytes``           MESSAGE_TOO_LARGE (10)
CRC-32C mismatch                                        CORRUPT_MESSAGE (2)
a codec this installation cannot read (snappy, lz4 or   UNSUPPORTED_COMPRESSION_TYPE (76)
zstd without the ``compression`` extra's cramjam)
base offset not 0, ``lastOffsetDelta + 1 !=             INVALID_RECORD (87)
recordsCount`` or no records, a control batch, a
transactional batch when the broker has no transaction
coordinator, a producer id without a sequence
======================================================  ============================

A transactional batch must also belong to the open transaction of the request's
transactional id, which added the partition (``TransactionVerifier.verify``): else the
coordinator's code (``INVALID_TXN_STATE``, ``INVALID_PRODUCER_EPOCH``, ...) is answered.

Records inside a batch are not decoded: the CRC covers them, and decoding every record in
Python would cost more than the rest of the produce path together.

Idempotent producers (a batch with a producer id) are checked by the partition's log
itself, against producer state it persists with the data (so the checks survive a
restart): a retried batch is answered ``DUPLICATE_SEQUENCE_NUMBER`` with its original
offset, once that batch is durable, and not appended again; a gap or a new epoch not
starting at 0 ``OUT_OF_ORDER_SEQUENCE_NUMBER``; an older epoch ``INVALID_PRODUCER_EPOCH``.

Writing and waiting are split: the handler writes every partition's batch at once, in
request order, and leaves the wait for durability (the group-commit fsync of each
partition written, concurrently) as :class:`~headwater.broker._dispatch.Deferred` work, so
that the requests a client pipelines behind this one are written meanwhile and share the
next fsync. Topics at durability ``always`` (an fsync per append, under the partition's
lock) and ``never`` (nothing to wait for) are appended whole before the handler returns;
a request's ``always`` partitions side by side, each with its own fsync, so that a
request to several of them waits for about one fsync, not one after another.
Every ``acks`` value is answered once durable (the log has no weaker point at which to
answer); ``acks=0`` gets no response at all.
"""

from __future__ import annotations

import functools
import logging
import struct
from typing import NamedTuple, Protocol

import anyio
import anyio.lowlevel
from crc32c import crc32c

from headwater.groups import ProducerIds
from headwater.store import (
    CorruptRecordError,
    DuplicateSequenceError,
    Durability,
    InvalidProducerEpochError,
    InvalidTopicError,
    InvalidTxnStateError,
    LogClosedError,
    OutOfOrderSequenceError,
    Partition,
    RecordTooLargeError,
    Store,
    StoreError,
    TopicNotFoundError,
    UnsupportedCompressionError,
    check_codec,
)

from ._dispatch import ClientInfo, Deferred, Handler, is_accepted
from ._protocol import ApiKey, KafkaErrorCode, Message, Request

logger = logging.getLogger("headwater.broker")

Buffer = bytes | bytearray | memoryview

_HEADER = struct.Struct(">qiibIhiqqqhii")
_HEADER_SIZE = 61
_OVERHEAD = 12  # base offset and batch length precede what batch_length counts
_CRC_START = 21
_CODEC_MASK = 0x07
_MAX_CODEC = 4
_TRANSACTIONAL = 0x10
_CONTROL = 0x20
_ACKS = (0, 1, -1)


class CheckedBatch(NamedTuple):
    """The header fields of a batch that passed :func:`check_batch`."""

    last_offset_delta: int
    producer_id: int
    producer_epoch: int
    base_sequence: int
    records_count: int
    transactional: bool = False


class TransactionVerifier(Protocol):
    """What the produce path asks the transaction coordinator of a transactional batch."""

    def verify(
        self, transactional_id: str | None, producer_id: int, epoch: int, topic: str, index: int
    ) -> int:
        """Return ``NONE`` (0) if the batch belongs to the open transaction, else the code."""
        ...


class BatchRejection(NamedTuple):
    """Why :func:`check_batch` refused a batch."""

    code: KafkaErrorCode
    message: str


def check_batch(
    records: Buffer | None, max_message_bytes: int, *, transactions: bool = False
) -> CheckedBatch | BatchRejection:
    """Check the bytes a Produce request carries for one partition (see the module docstring).

    ``transactions``: the broker has a transaction coordinator, so transactional batches
    are accepted here (and verified against it by the caller). Pure: reads ``records``
    only (and which codecs this installation has).
    """
    if not records:
        return BatchRejection(KafkaErrorCode.INVALID_RECORD, "no record batch")
    size = len(records)
    if size < _HEADER_SIZE:
        return BatchRejection(
            KafkaErrorCode.CORRUPT_MESSAGE,
            f"{size} bytes are too few for a record batch header ({_HEADER_SIZE})",
        )
    (
        base_offset,
        batch_length,
        _leader_epoch,
        magic,
        crc,
        attributes,
        last_offset_delta,
        _base_timestamp,
        _max_timestamp,
        producer_id,
        producer_epoch,
        base_sequence,
        records_count,
    ) = _HEADER.unpack_from(records, 0)
    corrupt = KafkaErrorCode.CORRUPT_MESSAGE
    invalid = KafkaErrorCode.INVALID_RECORD
    if magic != 2:
        return BatchRejection(corrupt, f"magic {magic}: only record batches v2 are accepted")
    batch_size = batch_length + _OVERHEAD
    if batch_size < _HEADER_SIZE or batch_size > size:
        return BatchRejection(
            corrupt, f"batch length {batch_length} does not fit the {size} bytes sent"
        )
    if batch_size < size:
        return BatchRejection(invalid, "a produce request may carry one record batch per partition")
    if batch_size > max_message_bytes:
        return BatchRejection(
            KafkaErrorCode.MESSAGE_TOO_LARGE,
            f"batch of {batch_size} bytes exceeds the topic's max.message.bytes "
            f"({max_message_bytes})",
        )
    if crc32c(memoryview(records)[_CRC_START:]) != crc:
        return BatchRejection(corrupt, "CRC-32C mismatch")
    codec = attributes & _CODEC_MASK
    if codec > _MAX_CODEC:
        return BatchRejection(corrupt, f"unknown compression codec {codec}")
    try:
        check_codec(codec)
    except UnsupportedCompressionError as exc:
        return BatchRejection(KafkaErrorCode.UNSUPPORTED_COMPRESSION_TYPE, str(exc))
    if attributes & _CONTROL:
        return BatchRejection(invalid, "clients may not send control batches")
    if attributes & _TRANSACTIONAL and not transactions:
        return BatchRejection(invalid, "transactions are not supported by this broker")
    if attributes & _TRANSACTIONAL and producer_id < 0:
        return BatchRejection(invalid, "a transactional batch without a producer id")
    if base_offset != 0:
        return BatchRejection(invalid, f"base offset {base_offset}: a client's batch starts at 0")
    if records_count <= 0 or last_offset_delta + 1 != records_count:
        return BatchRejection(
            invalid,
            f"records count {records_count} does not match last offset delta {last_offset_delta}",
        )
    if producer_id >= 0 and base_sequence < 0:
        return BatchRejection(invalid, f"producer id {producer_id} without a base sequence")
    return CheckedBatch(
        last_offset_delta,
        producer_id,
        producer_epoch,
        base_sequence,
        records_count,
        bool(attributes & _TRANSACTIONAL),
    )


class ProduceHandlers:
    """Produce and InitProducerId over the store and the producers' sequence state.

    :param store: the open store.
    :param producers: hands out producer ids (shared with nothing else).
    :param transactions: the transaction coordinator, if the broker has one.
    """

    def __init__(
        self,
        store: Store,
        producers: ProducerIds,
        transactions: TransactionVerifier | None = None,
    ) -> None:
        self._store = store
        self._producers = producers
        self._transactions = transactions
        self._codec_warned = False

    def table(self) -> dict[ApiKey, Handler]:
        """Return this module's handlers by API key."""
        return {ApiKey.PRODUCE: self.produce, ApiKey.INIT_PRODUCER_ID: self.init_producer_id}

    async def init_producer_id(self, request: Request, client: ClientInfo) -> Message:
        """Give an idempotent producer a new producer id (epoch 0); refuse transactions."""
        if request.body["transactional_id"] is not None:
            return {
                "error_code": KafkaErrorCode.TRANSACTIONAL_ID_AUTHORIZATION_FAILED,
                "producer_id": -1,
                "producer_epoch": -1,
            }
        producer_id, epoch = self._producers.new_producer()
        return {"error_code": 0, "producer_id": producer_id, "producer_epoch": epoch}

    async def produce(self, request: Request, client: ClientInfo) -> Message | Deferred | None:
        """Append each partition's batch; answer per partition once durable (``acks=0``: never).

        The batches are written at once, in the order requests arrive; the wait for
        durability is deferred, so that the connection's next requests are written
        meanwhile and share the same group-commit fsync.
        """
        body = request.body
        acks = body["acks"]
        refusal: KafkaErrorCode | None = None
        if not is_accepted(request):
            refusal = KafkaErrorCode.UNSUPPORTED_VERSION
        elif acks not in _ACKS:
            refusal = KafkaErrorCode.INVALID_REQUIRED_ACKS
        elif body["transactional_id"] is not None and self._transactions is None:
            refusal = KafkaErrorCode.TRANSACTIONAL_ID_AUTHORIZATION_FAILED
        responses: list[Message] = []
        unflushed: list[tuple[Partition, int, Message]] = []
        # Appends that wait for their own fsync (durability ``always``) run side by side
        # when there are several, rather than each partition's after the last one's.
        held: list[tuple[str, Message, Message]] = []
        fsyncing = set() if refusal is not None else self._fsyncing_partitions(body)
        together = len(fsyncing) > 1
        for topic in body["topic_data"]:
            results: list[Message] = []
            responses.append({"name": topic["name"], "partition_responses": results})
            for data in topic["partition_data"]:
                result = _result(data["index"], KafkaErrorCode.NONE)
                results.append(result)
                if refusal is not None:
                    result["error_code"] = refusal
                elif together and (topic["name"], data["index"]) in fsyncing:
                    held.append((topic["name"], data, result))
                else:
                    await self._append_one(topic["name"], data, result, unflushed, body)
        if held:
            async with anyio.create_task_group() as tg:
                for name, data, result in held:
                    tg.start_soon(self._append_one, name, data, result, unflushed, body)
        response = None if acks == 0 else {"responses": responses}
        if not unflushed:
            return response
        return Deferred(functools.partial(self._wait_durable, unflushed, response))

    def _fsyncing_partitions(self, body: Message) -> set[tuple[str, int]]:
        """Return the request's partitions that fsync each append themselves (durability
        ``always``); one it cannot find is left to its append, which answers for it."""
        found = set()
        for topic in body["topic_data"]:
            for data in topic["partition_data"]:
                try:
                    partition = self._store.partition(topic["name"], data["index"])
                except (TopicNotFoundError, LogClosedError):
                    continue
                if partition.config.durability is Durability.ALWAYS:
                    found.add((topic["name"], data["index"]))
        return found

    async def _append_one(
        self,
        topic: str,
        data: Message,
        result: Message,
        unflushed: list[tuple[Partition, int, Message]],
        body: Message,
    ) -> None:
        """Append one partition's batch; note a refusal in its ``result``."""
        index = data["index"]
        code, message = await self._append(
            topic, index, data["records"], result, unflushed, body=body
        )
        if code != KafkaErrorCode.NONE:
            _refuse(result, code, message)
            self._log_refusal(topic, index, code, message)

    def _log_refusal(self, topic: str, index: int, code: KafkaErrorCode, message: str) -> None:
        if code == KafkaErrorCode.UNSUPPORTED_COMPRESSION_TYPE and not self._codec_warned:
            # The fix is on this side (install the extra): say so once, where the operator looks.
            self._codec_warned = True
            logger.warning("produce to %s-%d refused: %s", topic, index, message)
        else:
            logger.debug("produce to %s-%d refused: %s", topic, index, message)

    async def _append(
        self,
        topic: str,
        index: int,
        records: Buffer | None,
        result: Message,
        unflushed: list[tuple[Partition, int, Message]],
        *,
        body: Message,
    ) -> tuple[KafkaErrorCode, str]:
        try:
            partition = self._store.partition(topic, index)
        except (TopicNotFoundError, LogClosedError) as exc:
            return KafkaErrorCode.UNKNOWN_TOPIC_OR_PARTITION, str(exc)
        if partition.internal:  # Kafka's answer and words; the store refuses it too
            message = f"Cannot append to internal topic {topic}"
            return KafkaErrorCode.INVALID_TOPIC_EXCEPTION, message
        transactions = self._transactions
        checked = check_batch(
            records, partition.config.max_message_bytes, transactions=transactions is not None
        )
        if isinstance(checked, BatchRejection):
            return checked.code, checked.message
        assert records is not None
        if checked.transactional:
            assert transactions is not None
            code = KafkaErrorCode(
                transactions.verify(
                    body["transactional_id"],
                    checked.producer_id,
                    checked.producer_epoch,
                    topic,
                    index,
                )
            )
            if code != KafkaErrorCode.NONE:
                return code, f"not part of an open transaction: {code.name}"
        return await self._write(partition, records, result, unflushed)

    async def _write(
        self,
        partition: Partition,
        records: Buffer,
        result: Message,
        unflushed: list[tuple[Partition, int, Message]],
    ) -> tuple[KafkaErrorCode, str]:
        # One copy, into a buffer the log may stamp the base offset into.
        batch = bytearray(records)
        try:
            if partition.config.durability is Durability.BATCH:
                # Written now; made durable (group commit) by the deferred flush.
                info = partition.append_batch_nowait(batch)
                unflushed.append((partition, info.next_offset, result))
                # Its fsync starts now rather than when the deferred wait first runs (a
                # median 0.1 ms later in bench/broker_bench.py's latency run).
                partition.begin_flush()
            else:
                # `always` holds the partition's lock through its own fsync; `never` has
                # nothing to wait for.
                info = await partition.append_batch(batch)
        except InvalidTopicError as exc:  # an internal topic: clients may not write it
            return KafkaErrorCode.INVALID_TOPIC_EXCEPTION, str(exc)
        except DuplicateSequenceError as exc:
            # A success for the client, answered once the original batch is durable.
            result["base_offset"] = exc.base_offset
            result["log_start_offset"] = partition.log_start_offset
            unflushed.append((partition, exc.last_offset + 1, result))
            return KafkaErrorCode.DUPLICATE_SEQUENCE_NUMBER, str(exc)
        except OutOfOrderSequenceError as exc:
            return KafkaErrorCode.OUT_OF_ORDER_SEQUENCE_NUMBER, str(exc)
        except InvalidProducerEpochError as exc:
            return KafkaErrorCode.INVALID_PRODUCER_EPOCH, str(exc)
        except InvalidTxnStateError as exc:
            return KafkaErrorCode.INVALID_TXN_STATE, str(exc)
        except CorruptRecordError as exc:
            return KafkaErrorCode.CORRUPT_MESSAGE, str(exc)
        except RecordTooLargeError as exc:
            return KafkaErrorCode.MESSAGE_TOO_LARGE, str(exc)
        except LogClosedError as exc:
            return KafkaErrorCode.UNKNOWN_TOPIC_OR_PARTITION, str(exc)
        except (StoreError, OSError) as exc:
            logger.error("append to %s-%d failed: %s", partition.topic, partition.index, exc)
            return KafkaErrorCode.KAFKA_STORAGE_ERROR, str(exc)
        result["base_offset"] = info.base_offset
        result["log_append_time_ms"] = info.log_append_time
        result["log_start_offset"] = partition.log_start_offset
        return KafkaErrorCode.NONE, ""

    async def _wait_durable(
        self, unflushed: list[tuple[Partition, int, Message]], response: Message | None
    ) -> Message | None:
        """Wait until every written batch is durable; answer ``response`` (``None``: nothing).

        If that woke fetches waiting for the records, they answer first: the consumers'
        end-to-end latency is what a stream is for. The producer's acknowledgement waits
        for the fetches' reads and sends then (in ``bench/broker_bench.py``'s latency
        run, a median round trip 0.15-0.25 ms longer while a consumer tails the topic).
        """
        woken = [partition.readers_woken for partition, _, _ in unflushed]
        if len(unflushed) == 1:
            await self._wait_one(*unflushed[0])
        else:
            async with anyio.create_task_group() as tg:
                for partition, next_offset, result in unflushed:
                    tg.start_soon(self._wait_one, partition, next_offset, result)
        if any(p.readers_woken != w for (p, _, _), w in zip(unflushed, woken, strict=True)):
            # The woken fetches are runnable now; after one checkpoint this task is in
            # their batch, which trio runs in either order (half the time reversed), so a
            # second one puts it behind them whichever ran first.
            await anyio.lowlevel.checkpoint()
            await anyio.lowlevel.checkpoint()
        return response

    async def _wait_one(self, partition: Partition, next_offset: int, result: Message) -> None:
        try:
            await partition.wait_durable(next_offset)
        except LogClosedError as exc:
            _refuse(result, KafkaErrorCode.UNKNOWN_TOPIC_OR_PARTITION, str(exc))
        except (StoreError, OSError) as exc:
            logger.error("fsync of %s-%d failed: %s", partition.topic, partition.index, exc)
            _refuse(result, KafkaErrorCode.KAFKA_STORAGE_ERROR, str(exc))


def _refuse(result: Message, code: KafkaErrorCode, message: str) -> None:
    result["error_code"] = code
    if code == KafkaErrorCode.DUPLICATE_SEQUENCE_NUMBER:
        return  # a success for the client, with the original base offset
    result["base_offset"] = -1
    result["error_message"] = message
    if code in (KafkaErrorCode.INVALID_RECORD, KafkaErrorCode.CORRUPT_MESSAGE):
        result["record_errors"] = [{"batch_index": 0, "batch_index_error_message": message}]


def _result(index: int, code: KafkaErrorCode) -> Message:
    return {
        "index": index,
        "error_code": code,
        "base_offset": -1,
        "log_append_time_ms": -1,
        "log_start_offset": -1,
        "record_errors": [],
        "error_message": None,
    }
