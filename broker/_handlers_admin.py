"""Handlers of the cluster and administration APIs.

ApiVersions, Metadata, CreateTopics, DeleteTopics and FindCoordinator, over the store and
this broker's :class:`~headwater.broker._config.Node` (the topic-config APIs are in
``_handlers_configs.py``).

Theory of operation
-------------------
The broker is a one-node cluster: Metadata lists this node as the only broker, the
controller (admin clients send CreateTopics and DeleteTopics to the controller) and the
leader of every partition, with one stable leader epoch (:data:`LEADER_EPOCH`) and the
node as the only replica. FindCoordinator names it for every group.

Topics made through the Kafka protocol -- by CreateTopics, or by a Metadata request that
names a missing topic when auto-creation is on and the client allows it -- take the
store's default config; CreateTopics may change any setting Kafka names
(``retention.ms``, ``max.message.bytes``, ..., and ``headwater.durability``) and the
partition count. The replication factor must be 1 (or -1, "the default").

Topic names are the store's to judge (:meth:`~headwater.store.Store.check_new_topic`):
names starting with ``__`` are the system's own, reported as internal and neither created
nor deleted by clients, and a name that collides with an existing one once ``.`` and
``_`` are read alike is refused; both answer ``INVALID_TOPIC_EXCEPTION``, as Kafka does.
"""

from __future__ import annotations

import dataclasses
import logging
import uuid
from collections import Counter
from collections.abc import Callable

from headwater.store import (
    InvalidConfigError,
    InvalidTopicError,
    Store,
    StoreError,
    TopicConfig,
    TopicExistsError,
    TopicNotFoundError,
    is_internal_topic,
    validate_topic_name,
)

from ._config import Node
from ._dispatch import ClientInfo, Handler, HandlerTable, advertised_versions
from ._handlers_configs import config_entries
from ._protocol import ApiKey, KafkaErrorCode, Message, Request
from ._protocol._codes import NO_AUTHORIZED_OPERATIONS

logger = logging.getLogger("headwater.broker")

LEADER_EPOCH = 0
"""The leader epoch of every partition: one broker, never a new leader."""

_ZERO_UUID = uuid.UUID(int=0)

# Kafka's ACL operation codes (AclOperation) that a topic or the cluster allows everybody.
_TOPIC_OPERATIONS = sum(1 << op for op in (3, 4, 5, 6, 7, 8, 10, 11))


class AdminHandlers:
    """ApiVersions, Metadata, CreateTopics, DeleteTopics and FindCoordinator.

    :param store: the open store.
    :param node: this broker as clients see it.
    :param auto_create_topics: whether Metadata may create the topics it names.
    :param advertised: returns the merged handler table (for ApiVersions).
    :param on_topic_deleted: called with a topic's name after it is deleted.
    """

    def __init__(
        self,
        store: Store,
        node: Node,
        *,
        auto_create_topics: bool,
        advertised: Callable[[], HandlerTable],
        on_topic_deleted: Callable[[str], None] = lambda topic: None,
    ) -> None:
        self._store = store
        self._node = node
        self._auto_create = auto_create_topics
        self._advertised = advertised
        self._on_topic_deleted = on_topic_deleted

    def table(self) -> dict[ApiKey, Handler]:
        """Return this module's handlers by API key."""
        return {
            ApiKey.API_VERSIONS: self.api_versions,
            ApiKey.METADATA: self.metadata,
            ApiKey.CREATE_TOPICS: self.create_topics,
            ApiKey.DELETE_TOPICS: self.delete_topics,
            ApiKey.FIND_COORDINATOR: self.find_coordinator,
        }

    # -- ApiVersions and FindCoordinator ---------------------------------------------------

    async def api_versions(self, request: Request, client: ClientInfo) -> Message:
        """List the APIs of the broker's handler table with their version ranges."""
        return {"error_code": 0, "api_keys": advertised_versions(self._advertised())}

    async def find_coordinator(self, request: Request, client: ClientInfo) -> Message:
        """Name this node as the coordinator of every group, and of every transactional id
        when it serves the transaction APIs."""
        node = self._node
        key_type = request.body["key_type"]
        if key_type != 0 and not (key_type == 1 and ApiKey.END_TXN in self._advertised()):
            return {
                "error_code": KafkaErrorCode.COORDINATOR_NOT_AVAILABLE,
                "error_message": "transactions are not supported by this broker",
                "node_id": -1,
                "host": "",
                "port": -1,
            }
        return {
            "error_code": 0,
            "error_message": None,
            "node_id": node.node_id,
            "host": node.host,
            "port": node.port,
        }

    # -- Metadata --------------------------------------------------------------------------

    async def metadata(self, request: Request, client: ClientInfo) -> Message:
        """Describe the cluster (this node) and the requested topics, or all of them."""
        body = request.body
        version = request.header.api_version
        requested = body["topics"]
        if requested is None or (version == 0 and not requested):
            names: list[str | None] = list(self._store.list_topics())
        else:
            names = [t["name"] for t in requested]
        allow_create = self._auto_create and body["allow_auto_topic_creation"]
        authorized = body["include_topic_authorized_operations"]
        topics = []
        seen: set[str | None] = set()
        for name in names:
            if name in seen:
                continue
            seen.add(name)
            topics.append(await self._describe(name, allow_create, authorized))
        node = self._node
        return {
            "brokers": [{"node_id": node.node_id, "host": node.host, "port": node.port}],
            "cluster_id": node.cluster_id,
            "controller_id": node.node_id,
            "topics": topics,
        }

    async def _describe(self, name: str | None, allow_create: bool, authorized: bool) -> Message:
        def failed(code: KafkaErrorCode) -> Message:
            return {"error_code": code, "name": name, "topic_id": _ZERO_UUID, "partitions": []}

        if name is None:  # a lookup by topic id: headwater topics have none
            return failed(KafkaErrorCode.UNKNOWN_TOPIC_OR_PARTITION)
        store = self._store
        if not store.has_topic(name):
            try:
                validate_topic_name(name)
            except InvalidConfigError:
                return failed(KafkaErrorCode.INVALID_TOPIC_EXCEPTION)
            if not allow_create or is_internal_topic(name):
                return failed(KafkaErrorCode.UNKNOWN_TOPIC_OR_PARTITION)
            try:
                await store.create_topic(name)
                logger.info("created topic %r (auto-created by a Metadata request)", name)
            except TopicExistsError:
                pass  # another request created it meanwhile
            except InvalidTopicError as exc:  # it collides with an existing topic
                logger.info("not auto-creating topic %r: %s", name, exc)
                return failed(KafkaErrorCode.INVALID_TOPIC_EXCEPTION)
            except StoreError as exc:
                logger.warning("cannot auto-create topic %r: %s", name, exc)
                return failed(KafkaErrorCode.UNKNOWN_TOPIC_OR_PARTITION)
        try:
            count = len(store.partitions(name))
        except TopicNotFoundError:  # deleted meanwhile
            return failed(KafkaErrorCode.UNKNOWN_TOPIC_OR_PARTITION)
        node_id = self._node.node_id
        return {
            "error_code": 0,
            "name": name,
            "topic_id": _ZERO_UUID,
            "is_internal": is_internal_topic(name),
            "partitions": [
                {
                    "error_code": 0,
                    "partition_index": i,
                    "leader_id": node_id,
                    "leader_epoch": LEADER_EPOCH,
                    "replica_nodes": [node_id],
                    "isr_nodes": [node_id],
                    "offline_replicas": [],
                }
                for i in range(count)
            ],
            "topic_authorized_operations": (
                _TOPIC_OPERATIONS if authorized else NO_AUTHORIZED_OPERATIONS
            ),
        }

    # -- CreateTopics and DeleteTopics -----------------------------------------------------

    async def create_topics(self, request: Request, client: ClientInfo) -> Message:
        """Create topics with the store's default config changed by the request's configs."""
        body = request.body
        counts = Counter(topic["name"] for topic in body["topics"])
        results = []
        for topic in body["topics"]:
            name = topic["name"]
            if counts[name] > 1:
                result = _create_error(
                    name, KafkaErrorCode.INVALID_REQUEST, "the topic is named more than once"
                )
            else:
                result = await self._create_one(topic, validate_only=body["validate_only"])
            results.append(result)
        return {"topics": results}

    async def _create_one(self, topic: Message, *, validate_only: bool) -> Message:
        name = topic["name"]
        store = self._store
        try:
            store.check_new_topic(name)
        except InvalidTopicError as exc:
            return _create_error(name, KafkaErrorCode.INVALID_TOPIC_EXCEPTION, str(exc))
        except TopicExistsError as exc:
            return _create_error(name, KafkaErrorCode.TOPIC_ALREADY_EXISTS, str(exc))
        if topic["replication_factor"] not in (-1, 1):
            return _create_error(
                name,
                KafkaErrorCode.INVALID_REPLICATION_FACTOR,
                f"replication factor {topic['replication_factor']}: this broker is a "
                "one-node cluster, so it must be 1 (or -1 for the default)",
            )
        partitions, problem = self._partition_count(topic)
        if problem is not None:
            return _create_error(name, *problem)
        settings = {c["name"]: c["value"] for c in topic["configs"] if c["value"] is not None}
        if any(key.strip().lower() == "partitions" for key in settings):
            return _create_error(
                name,
                KafkaErrorCode.INVALID_CONFIG,
                "give the partition count as num_partitions, not as a config",
            )
        try:
            base = dataclasses.replace(store.default_config, partitions=partitions)
            config = TopicConfig.from_strings(settings, base)
        except InvalidConfigError as exc:
            code = KafkaErrorCode.INVALID_CONFIG
            if "partitions" in str(exc) and not settings:
                code = KafkaErrorCode.INVALID_PARTITIONS
            return _create_error(name, code, str(exc))
        if not validate_only:
            try:
                await store.create_topic(name, config)
            except TopicExistsError as exc:
                return _create_error(name, KafkaErrorCode.TOPIC_ALREADY_EXISTS, str(exc))
            except InvalidTopicError as exc:  # a colliding topic was created meanwhile
                return _create_error(name, KafkaErrorCode.INVALID_TOPIC_EXCEPTION, str(exc))
            except (StoreError, OSError) as exc:
                logger.warning("cannot create topic %r: %s", name, exc)
                return _create_error(name, KafkaErrorCode.KAFKA_STORAGE_ERROR, str(exc))
            logger.info("created topic %r with %d partition(s)", name, config.partitions)
        return {
            "name": name,
            "error_code": 0,
            "error_message": None,
            "num_partitions": config.partitions,
            "replication_factor": 1,
            "configs": config_entries(store, config, None),
        }

    def _partition_count(self, topic: Message) -> tuple[int, tuple[KafkaErrorCode, str] | None]:
        count = topic["num_partitions"]
        assignments = topic["assignments"]
        if assignments:
            if count != -1:
                return 0, (
                    KafkaErrorCode.INVALID_REQUEST,
                    "give either num_partitions or assignments, not both",
                )
            indexes = sorted(a["partition_index"] for a in assignments)
            if indexes != list(range(len(indexes))):
                return 0, (
                    KafkaErrorCode.INVALID_REPLICA_ASSIGNMENT,
                    "assignments must number the partitions 0, 1, ... without gaps",
                )
            node_id = self._node.node_id
            if any(a["broker_ids"] != [node_id] for a in assignments):
                return 0, (
                    KafkaErrorCode.INVALID_REPLICA_ASSIGNMENT,
                    f"every partition must be assigned to this broker alone ([{node_id}])",
                )
            return len(indexes), None
        if count == -1:
            return self._store.default_config.partitions, None
        if count <= 0:
            return 0, (
                KafkaErrorCode.INVALID_PARTITIONS,
                f"num_partitions must be at least 1 (or -1 for the default), got {count}",
            )
        return count, None

    async def delete_topics(self, request: Request, client: ClientInfo) -> Message:
        """Delete the named topics and their records."""
        results = []
        for name in request.body["topic_names"]:
            code, message = await self._delete_one(name)
            results.append({"name": name, "error_code": code, "error_message": message})
        return {"responses": results}

    async def _delete_one(self, name: str) -> tuple[KafkaErrorCode, str | None]:
        try:
            await self._store.delete_topic(name)
        except InvalidTopicError as exc:
            return KafkaErrorCode.INVALID_TOPIC_EXCEPTION, str(exc)
        except TopicNotFoundError as exc:
            return KafkaErrorCode.UNKNOWN_TOPIC_OR_PARTITION, str(exc)
        except (StoreError, OSError) as exc:
            logger.warning("cannot delete topic %r: %s", name, exc)
            return KafkaErrorCode.KAFKA_STORAGE_ERROR, str(exc)
        self._on_topic_deleted(name)
        logger.info("deleted topic %r", name)
        return KafkaErrorCode.NONE, None


def _create_error(name: str, code: KafkaErrorCode, message: str) -> Message:
    return {"name": name, "error_code": code, "error_message": message, "configs": None}
