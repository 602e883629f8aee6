"""Handlers that change a topic's partitions: DeleteRecords and CreatePartitions.

Theory of operation
-------------------
DeleteRecords moves each named partition's log start (its low watermark) up to the given
offset, -1 meaning the high watermark, through
:meth:`~headwater.store.Partition.delete_records`: the move is durable before the answer,
which carries the new low watermark. Every partition is answered on its own, as Kafka
does: ``UNKNOWN_TOPIC_OR_PARTITION`` for one the store does not have,
``OFFSET_OUT_OF_RANGE`` for an offset past the high watermark (or below -1),
``POLICY_VIOLATION`` for a compacted topic, ``INVALID_TOPIC_EXCEPTION`` for an internal
one; a failed partition's low watermark reads -1. A log start already past the offset
stays, and is what the answer says.

CreatePartitions grows a topic to ``count`` partitions
(:meth:`~headwater.store.Store.create_partitions`); a topic never shrinks, and a count not
above the current one is ``INVALID_PARTITIONS``. Explicit assignments may only name this
broker, one replica per new partition (``INVALID_REPLICA_ASSIGNMENT`` otherwise).
``validate_only`` checks and stops there. Records already written stay in their
partitions; keyed records from then on go by murmur2 over the new count, exactly as on a
Kafka cluster, so a key's later records may land in another partition than its earlier
ones. Metadata lists the new partitions at once, so consumer groups see them at their
next metadata refresh and rebalance.
"""

from __future__ import annotations

import logging
from collections import Counter

from headwater.store import (
    InvalidPartitionsError,
    InvalidTopicError,
    OffsetOutOfRangeError,
    PolicyViolationError,
    Store,
    StoreError,
    TopicNotFoundError,
)

from ._config import Node
from ._dispatch import ClientInfo, Handler
from ._protocol import ApiKey, KafkaErrorCode, Message, Request

logger = logging.getLogger("headwater.broker")

#: Kafka's low watermark of a partition whose DeleteRecords failed.
_INVALID_LOW_WATERMARK = -1


class PartitionHandlers:
    """DeleteRecords and CreatePartitions over the store.

    :param store: the open store.
    :param node: this broker as clients see it (assignments may name only it).
    """

    def __init__(self, store: Store, node: Node) -> None:
        self._store = store
        self._node = node

    def table(self) -> dict[ApiKey, Handler]:
        """Return this module's handlers by API key."""
        return {
            ApiKey.DELETE_RECORDS: self.delete_records,
            ApiKey.CREATE_PARTITIONS: self.create_partitions,
        }

    # -- DeleteRecords ---------------------------------------------------------------------

    async def delete_records(self, request: Request, client: ClientInfo) -> Message:
        """Move each partition's low watermark; answer the new ones, each on its own."""
        topics = []
        for topic in request.body["topics"]:
            name = topic["name"]
            results = []
            for entry in topic["partitions"]:
                index = entry["partition_index"]
                code, low = await self._delete_one(name, index, entry["offset"])
                results.append({"partition_index": index, "low_watermark": low, "error_code": code})
            topics.append({"name": name, "partitions": results})
        return {"topics": topics}

    async def _delete_one(self, name: str, index: int, offset: int) -> tuple[int, int]:
        try:
            partition = self._store.partition(name, index)
            low = await partition.delete_records(offset)
        except TopicNotFoundError:
            return KafkaErrorCode.UNKNOWN_TOPIC_OR_PARTITION, _INVALID_LOW_WATERMARK
        except OffsetOutOfRangeError:
            return KafkaErrorCode.OFFSET_OUT_OF_RANGE, _INVALID_LOW_WATERMARK
        except PolicyViolationError:
            return KafkaErrorCode.POLICY_VIOLATION, _INVALID_LOW_WATERMARK
        except InvalidTopicError:
            return KafkaErrorCode.INVALID_TOPIC_EXCEPTION, _INVALID_LOW_WATERMARK
        except (StoreError, OSError) as exc:
            logger.warning("cannot delete records of %s-%d: %s", name, index, exc)
            return KafkaErrorCode.KAFKA_STORAGE_ERROR, _INVALID_LOW_WATERMARK
        logger.info("deleted records of %s-%d before offset %d", name, index, low)
        return KafkaErrorCode.NONE, low

    # -- CreatePartitions ------------------------------------------------------------------

    async def create_partitions(self, request: Request, client: ClientInfo) -> Message:
        """Grow topics to the requested partition counts, each answered on its own."""
        body = request.body
        counts = Counter(topic["name"] for topic in body["topics"])
        results = []
        for topic in body["topics"]:
            name = topic["name"]
            code: int
            message: str | None
            if counts[name] > 1:
                code, message = KafkaErrorCode.INVALID_REQUEST, "the topic is named more than once"
            else:
                code, message = await self._grow_one(topic, validate_only=body["validate_only"])
            results.append({"name": name, "error_code": code, "error_message": message})
        return {"results": results}

    async def _grow_one(self, topic: Message, *, validate_only: bool) -> tuple[int, str | None]:
        name, count = topic["name"], topic["count"]
        store = self._store
        try:
            store.check_partition_count(name, count)
            problem = self._assignment_problem(topic, len(store.partitions(name)))
            if problem is not None:
                return KafkaErrorCode.INVALID_REPLICA_ASSIGNMENT, problem
            if not validate_only:
                await store.create_partitions(name, count)
        except TopicNotFoundError as exc:
            return KafkaErrorCode.UNKNOWN_TOPIC_OR_PARTITION, str(exc)
        except InvalidTopicError as exc:
            return KafkaErrorCode.INVALID_TOPIC_EXCEPTION, str(exc)
        except InvalidPartitionsError as exc:
            return KafkaErrorCode.INVALID_PARTITIONS, str(exc)
        except (StoreError, OSError) as exc:
            logger.warning("cannot add partitions to topic %r: %s", name, exc)
            return KafkaErrorCode.KAFKA_STORAGE_ERROR, str(exc)
        if not validate_only:
            logger.info("topic %r now has %d partitions", name, count)
        return KafkaErrorCode.NONE, None

    def _assignment_problem(self, topic: Message, current: int) -> str | None:
        assignments = topic["assignments"]
        if assignments is None:
            return None
        added = topic["count"] - current
        node_id = self._node.node_id
        if len(assignments) != added:
            return (
                f"{len(assignments)} assignment(s) for {added} new partition(s): give one "
                "per new partition, or none"
            )
        if any(a["broker_ids"] != [node_id] for a in assignments):
            return f"every new partition must be assigned to this broker alone ([{node_id}])"
        return None
