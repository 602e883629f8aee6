"""Handlers of InitProducerId and the transaction APIs, over the transaction coordinator.

Theory of operation
-------------------
InitProducerId without a transactional id gives an idempotent producer a fresh producer
id at epoch 0; with one, the transaction coordinator (``headwater.groups``, shared with
an embedded app that serves its directory) gives the id's producer id and bumps its
epoch, fencing older producers. AddPartitionsToTxn, AddOffsetsToTxn, TxnOffsetCommit and
EndTxn are translated to the coordinator's calls and their error codes back (Kafka's
numbers), nothing more: the rules are the coordinator's. A store that cannot record
the coordinator's state (a full disk, a failed fsync) is answered
``COORDINATOR_NOT_AVAILABLE``, which clients retry.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable, Mapping

from headwater.groups import TransactionCoordinator, pending_offsets
from headwater.store import StoreError

from ._dispatch import ClientInfo, Handler
from ._protocol import ApiKey, KafkaErrorCode, Message, Request

logger = logging.getLogger("headwater.broker")

_Handler = Callable[["TransactionHandlers", Request, ClientInfo], Awaitable[Message]]


def _unavailable_on_store_errors(handler: _Handler) -> _Handler:
    """Answer ``COORDINATOR_NOT_AVAILABLE`` when the coordinator's state cannot be written."""

    @functools.wraps(handler)
    async def wrapped(self: TransactionHandlers, request: Request, client: ClientInfo) -> Message:
        try:
            return await handler(self, request, client)
        except (StoreError, OSError) as exc:
            logger.error("transaction coordinator: cannot record its state: %s", exc)
            return {"error_code": KafkaErrorCode.COORDINATOR_NOT_AVAILABLE, "producer_epoch": -1}

    return wrapped


class TransactionHandlers:
    """InitProducerId and the transaction APIs.

    :param coordinator: the transaction coordinator (entered, on the broker's loop); its
        producer ids are handed out to idempotent producers too.
    """

    def __init__(self, coordinator: TransactionCoordinator) -> None:
        self._txns = coordinator

    def table(self) -> dict[ApiKey, Handler]:
        """Return this module's handlers by API key."""
        return {
            ApiKey.INIT_PRODUCER_ID: self.init_producer_id,
            ApiKey.ADD_PARTITIONS_TO_TXN: self.add_partitions_to_txn,
            ApiKey.ADD_OFFSETS_TO_TXN: self.add_offsets_to_txn,
            ApiKey.TXN_OFFSET_COMMIT: self.txn_offset_commit,
            ApiKey.END_TXN: self.end_txn,
        }

    @_unavailable_on_store_errors
    async def init_producer_id(self, request: Request, client: ClientInfo) -> Message:
        """A fresh producer id (idempotence), or the transactional id's, epoch bumped."""
        body = request.body
        transactional_id = body["transactional_id"]
        if transactional_id is None:
            producer_id, epoch = self._txns.producer_ids.new_producer()
            return {"error_code": 0, "producer_id": producer_id, "producer_epoch": epoch}
        if not transactional_id:
            return {"error_code": KafkaErrorCode.INVALID_REQUEST, "producer_epoch": -1}
        answer, producer_id, epoch = await self._txns.init_producer_id(
            transactional_id,
            body["transaction_timeout_ms"],
            body.get("producer_id", -1),
            body.get("producer_epoch", -1),
        )
        code = KafkaErrorCode(answer)
        if code == KafkaErrorCode.PRODUCER_FENCED and request.header.api_version < 3:
            code = KafkaErrorCode.INVALID_PRODUCER_EPOCH  # unreachable, but say it old-style
        return {"error_code": code, "producer_id": producer_id, "producer_epoch": epoch}

    async def add_partitions_to_txn(self, request: Request, client: ClientInfo) -> Message:
        """Add the named partitions to the producer's transaction (opening it)."""
        body = request.body
        topics = body["v3_and_below_topics"]
        wanted = [(t["name"], p) for t in topics for p in t["partitions"]]
        codes: Mapping[tuple[str, int], int]
        try:
            codes = await self._txns.add_partitions(
                body["v3_and_below_transactional_id"],
                body["v3_and_below_producer_id"],
                body["v3_and_below_producer_epoch"],
                wanted,
            )
        except (StoreError, OSError) as exc:
            logger.error("transaction coordinator: cannot record its state: %s", exc)
            codes = dict.fromkeys(wanted, KafkaErrorCode.COORDINATOR_NOT_AVAILABLE)
        return {
            "results_by_topic_v3_and_below": [
                {
                    "name": t["name"],
                    "results_by_partition": [
                        {"partition_index": p, "partition_error_code": codes[(t["name"], p)]}
                        for p in t["partitions"]
                    ],
                }
                for t in topics
            ]
        }

    @_unavailable_on_store_errors
    async def add_offsets_to_txn(self, request: Request, client: ClientInfo) -> Message:
        """The transaction will commit offsets of the named group."""
        body = request.body
        code = await self._txns.add_offsets(
            body["transactional_id"], body["producer_id"], body["producer_epoch"], body["group_id"]
        )
        return {"error_code": code}

    async def txn_offset_commit(self, request: Request, client: ClientInfo) -> Message:
        """Hold the group's offsets in the transaction, committed with it."""
        body = request.body
        offsets = pending_offsets(
            (
                t["name"],
                p["partition_index"],
                p["committed_offset"],
                p["committed_metadata"],
                p.get("committed_leader_epoch", -1),
            )
            for t in body["topics"]
            for p in t["partitions"]
        )
        codes: dict[tuple[str, int], int]
        try:
            codes = await self._txns.txn_offset_commit(
                body["transactional_id"],
                body["group_id"],
                body["producer_id"],
                body["producer_epoch"],
                offsets,
                member_id=body.get("member_id", ""),
                generation_id=body.get("generation_id", -1),
                group_instance_id=body.get("group_instance_id"),
            )
        except (StoreError, OSError) as exc:
            logger.error("transaction coordinator: cannot record its state: %s", exc)
            codes = dict.fromkeys(offsets, KafkaErrorCode.COORDINATOR_NOT_AVAILABLE)
        return {
            "topics": [
                {
                    "name": t["name"],
                    "partitions": [
                        {
                            "partition_index": p["partition_index"],
                            "error_code": codes[(t["name"], p["partition_index"])],
                        }
                        for p in t["partitions"]
                    ],
                }
                for t in body["topics"]
            ]
        }

    @_unavailable_on_store_errors
    async def end_txn(self, request: Request, client: ClientInfo) -> Message:
        """Commit or abort the transaction; answered once it is finished everywhere."""
        body = request.body
        code = await self._txns.end_txn(
            body["transactional_id"], body["producer_id"], body["producer_epoch"], body["committed"]
        )
        return {"error_code": code}
