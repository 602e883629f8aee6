"""Handlers of the APIs Kafka's transaction tooling uses: find, inspect, abort (KIP-664).

Theory of operation
-------------------
``kafka-transactions.sh`` and the admin clients that copy it (kafka-python's
``list_transactions``, ``describe_transactions``, ``describe_producers``,
``abort_transaction``, ``find_hanging_transactions``) look for a transaction that holds
a partition's last stable offset back, and end it by hand:

* ListTransactions and DescribeTransactions read the transaction coordinator
  (``headwater.groups``): every transactional id it knows with its state and producer,
  and for one id its epoch, timeout, when its transaction began and the partitions it
  wrote. They only read: the answer is the coordinator's state as last changed.
* DescribeProducers reads a partition's producer state (``headwater.store``'s
  :func:`~headwater.store.active_producers`): per producer id the epoch, last sequence,
  coordinator epoch and the first offset of its open transaction.
* WriteTxnMarkers, which a coordinator sends a partition's leader and an admin client
  sends to abort a transaction by hand, writes the marker into each named partition,
  durably, as the coordinator's own markers are written. The partition checks it as it
  checks theirs: an epoch older than the producer's is ``INVALID_PRODUCER_EPOCH``, a
  coordinator epoch older than the producer's last marker's is
  ``TRANSACTION_COORDINATOR_FENCED`` (an admin abort sends -1, which passes only where
  no coordinator marker of that producer was written yet, as in Kafka). The coordinator is not
  told: a transaction aborted by hand in one partition stays open in the coordinator,
  for its producer or its timeout to end, as in Kafka; its later markers change nothing
  there.

Bad values are answered with Kafka's codes: an unknown transactional id
``TRANSACTIONAL_ID_NOT_FOUND`` (an empty one ``INVALID_REQUEST``), an unknown topic or
partition ``UNKNOWN_TOPIC_OR_PARTITION``, a negative producer id or epoch
``INVALID_REQUEST``; a state filter that names no state is listed back in
``unknown_state_filters``.
"""

from __future__ import annotations

import logging
from collections import defaultdict

import anyio

from headwater.groups import TransactionCoordinator, TxnMetadata, TxnState
from headwater.store import (
    ControlType,
    CoordinatorFencedError,
    InvalidProducerEpochError,
    LogClosedError,
    Partition,
    Store,
    StoreError,
    TopicNotFoundError,
    active_producers,
)

from ._dispatch import ClientInfo, Handler
from ._protocol import ApiKey, KafkaErrorCode, Message, Request

logger = logging.getLogger("headwater.broker")

#: Kafka's transaction state names: a filter naming one of these is known, even where
#: this coordinator never has an id in that state (``Dead``, ``PrepareEpochFence``).
KNOWN_STATE_NAMES = frozenset({s.value for s in TxnState} | {"Dead", "PrepareEpochFence"})
_STATES_BY_NAME = {s.value: s for s in TxnState}


class TransactionAdminHandlers:
    """ListTransactions, DescribeTransactions, DescribeProducers and WriteTxnMarkers.

    :param coordinator: the transaction coordinator (entered, on the broker's loop),
        whose store holds the partitions.
    """

    def __init__(self, coordinator: TransactionCoordinator) -> None:
        self._txns = coordinator
        self._store: Store = coordinator.store

    def table(self) -> dict[ApiKey, Handler]:
        """Return this module's handlers by API key."""
        return {
            ApiKey.LIST_TRANSACTIONS: self.list_transactions,
            ApiKey.DESCRIBE_TRANSACTIONS: self.describe_transactions,
            ApiKey.DESCRIBE_PRODUCERS: self.describe_producers,
            ApiKey.WRITE_TXN_MARKERS: self.write_txn_markers,
        }

    async def list_transactions(self, request: Request, client: ClientInfo) -> Message:
        """Every transactional id matching the state, producer id and duration filters."""
        body = request.body
        names: list[str] = body["state_filters"]
        unknown = [name for name in names if name not in KNOWN_STATE_NAMES]
        states = {_STATES_BY_NAME[name] for name in names if name in _STATES_BY_NAME}
        listed: list[TxnMetadata] = []
        if not names or states:  # filters that name only states no id is in: none
            listed = self._txns.list_transactions(
                states, body["producer_id_filters"], body.get("duration_filter", -1)
            )
        return {
            "error_code": KafkaErrorCode.NONE,
            "unknown_state_filters": unknown,
            "transaction_states": [
                {
                    "transactional_id": meta.transactional_id,
                    "producer_id": meta.producer_id,
                    "transaction_state": meta.state.value,
                }
                for meta in listed
            ],
        }

    async def describe_transactions(self, request: Request, client: ClientInfo) -> Message:
        """The state of each named transactional id."""
        return {
            "transaction_states": [
                self._describe(transactional_id)
                for transactional_id in request.body["transactional_ids"]
            ]
        }

    def _describe(self, transactional_id: str) -> Message:
        if not transactional_id:
            return {"error_code": KafkaErrorCode.INVALID_REQUEST, "transactional_id": ""}
        meta = self._txns.describe(transactional_id)
        if meta is None:
            return {
                "error_code": KafkaErrorCode.TRANSACTIONAL_ID_NOT_FOUND,
                "transactional_id": transactional_id,
            }
        by_topic: dict[str, list[int]] = defaultdict(list)
        for topic, index in sorted(meta.partitions):
            by_topic[topic].append(index)
        return {
            "error_code": KafkaErrorCode.NONE,
            "transactional_id": transactional_id,
            "transaction_state": meta.state.value,
            "transaction_timeout_ms": meta.timeout_ms,
            "transaction_start_time_ms": meta.started_ms,
            "producer_id": meta.producer_id,
            "producer_epoch": meta.producer_epoch,
            "topics": [{"topic": t, "partitions": p} for t, p in by_topic.items()],
        }

    async def describe_producers(self, request: Request, client: ClientInfo) -> Message:
        """The producers each named partition keeps state for."""
        return {
            "topics": [
                {
                    "name": topic["name"],
                    "partitions": [
                        self._producers_of(topic["name"], index)
                        for index in topic["partition_indexes"]
                    ],
                }
                for topic in request.body["topics"]
            ]
        }

    def _producers_of(self, topic: str, index: int) -> Message:
        try:
            partition = self._store.partition(topic, index)
        except (TopicNotFoundError, LogClosedError) as exc:
            return {
                "partition_index": index,
                "error_code": KafkaErrorCode.UNKNOWN_TOPIC_OR_PARTITION,
                "error_message": str(exc),
            }
        return {
            "partition_index": index,
            "error_code": KafkaErrorCode.NONE,
            "active_producers": [
                {
                    "producer_id": p.producer_id,
                    "producer_epoch": p.producer_epoch,
                    "last_sequence": p.last_sequence,
                    "last_timestamp": p.last_timestamp_ms,
                    "coordinator_epoch": p.coordinator_epoch,
                    "current_txn_start_offset": p.txn_start_offset,
                }
                for p in active_producers(partition)
            ],
        }

    async def write_txn_markers(self, request: Request, client: ClientInfo) -> Message:
        """Write each marker into each of its partitions; answer once all are durable."""
        markers = request.body["markers"]
        results: list[list[list[Message]]] = [
            [
                [{"partition_index": index} for index in topic["partition_indexes"]]
                for topic in marker["topics"]
            ]
            for marker in markers
        ]
        async with anyio.create_task_group() as tg:
            for marker, marker_results in zip(markers, results, strict=True):
                for topic, topic_results in zip(marker["topics"], marker_results, strict=True):
                    for result in topic_results:
                        tg.start_soon(self._write_marker, marker, topic["name"], result)
        return {
            "markers": [
                {
                    "producer_id": marker["producer_id"],
                    "topics": [
                        {"name": topic["name"], "partitions": partitions}
                        for topic, partitions in zip(marker["topics"], marker_results, strict=True)
                    ],
                }
                for marker, marker_results in zip(markers, results, strict=True)
            ]
        }

    async def _write_marker(self, marker: Message, topic: str, result: Message) -> None:
        """Write ``marker`` into ``topic``'s partition of ``result``; set its error code."""
        index = result["partition_index"]
        producer_id, epoch = marker["producer_id"], marker["producer_epoch"]
        if producer_id < 0 or epoch < 0:
            result["error_code"] = KafkaErrorCode.INVALID_REQUEST
            return
        kind = ControlType.COMMIT if marker["transaction_result"] else ControlType.ABORT
        code = KafkaErrorCode.NONE
        try:
            partition = self._store.partition(topic, index)
            # Shielded: a marker half-acknowledged would leave the caller guessing.
            with anyio.CancelScope(shield=True):
                await _write(partition, kind, producer_id, epoch, marker["coordinator_epoch"])
        except (TopicNotFoundError, LogClosedError):
            code = KafkaErrorCode.UNKNOWN_TOPIC_OR_PARTITION
        except InvalidProducerEpochError:
            code = KafkaErrorCode.INVALID_PRODUCER_EPOCH
        except CoordinatorFencedError:
            code = KafkaErrorCode.TRANSACTION_COORDINATOR_FENCED
        except (StoreError, OSError) as exc:
            logger.error("%s marker for %s-%d not written: %s", kind.name, topic, index, exc)
            code = KafkaErrorCode.KAFKA_STORAGE_ERROR
        result["error_code"] = code


async def _write(
    partition: Partition, kind: ControlType, producer_id: int, epoch: int, coordinator_epoch: int
) -> None:
    await partition.write_marker(
        kind,
        producer_id=producer_id,
        producer_epoch=epoch,
        coordinator_epoch=coordinator_epoch,
    )
    logger.info(
        "%s marker written to %s-%d for producer %d epoch %d by request",
        kind.name.lower(),
        partition.topic,
        partition.index,
        producer_id,
        epoch,
    )
