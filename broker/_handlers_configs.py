"""Handlers of the topic-config APIs: DescribeConfigs, AlterConfigs, IncrementalAlterConfigs.

Theory of operation
-------------------
A topic's settings travel under Kafka's names and in Kafka's spellings
(:func:`~headwater.store.kafka_config_entries`: ``retention.ms``, ``cleanup.policy``,
``message.timestamp.type`` as ``CreateTime``, and ``headwater.durability`` for what Kafka
lacks). DescribeConfigs answers them, an entry being a topic's own
(``DYNAMIC_TOPIC_CONFIG``) when it differs from the store's default.

AlterConfigs replaces a topic's settings: those it names take the given values, every
other one goes back to the store's default. IncrementalAlterConfigs changes only what it
names: ``SET`` a value, ``DELETE`` back to the default; ``APPEND`` and ``SUBTRACT`` apply to
list-valued configs, and headwater has none. Either way the whole new config is checked
(:meth:`~headwater.store.TopicConfig.from_strings`) before anything changes, so one bad
entry changes nothing (``INVALID_CONFIG``); ``validate_only`` checks and stops there. The
partition count is not a config (CreatePartitions changes it, see
``_handlers_partitions.py``).

Internal topics (``__consumer_offsets``) are refused with ``INVALID_TOPIC_EXCEPTION``, the
code Kafka answers a client that writes to one; the store makes the same refusal. A
broker resource has no dynamic settings here: describing one answers nothing, altering
one ``INVALID_CONFIG``.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable

from headwater.store import (
    InvalidConfigError,
    InvalidTopicError,
    Store,
    StoreError,
    TopicConfig,
    TopicNotFoundError,
    kafka_config_entries,
)

from ._config import Node
from ._dispatch import ClientInfo, Handler
from ._protocol import ApiKey, KafkaErrorCode, Message, Request

logger = logging.getLogger("headwater.broker")

RESOURCE_TOPIC = 2
RESOURCE_BROKER = 4
_CONFIG_SOURCE_TOPIC = 1  # DYNAMIC_TOPIC_CONFIG
_CONFIG_SOURCE_DEFAULT = 5  # DEFAULT_CONFIG
_CONFIG_TYPE_STRING, _CONFIG_TYPE_INT, _CONFIG_TYPE_LONG = 2, 3, 5
_CONFIG_TYPES = {
    "retention.ms": _CONFIG_TYPE_LONG,
    "retention.bytes": _CONFIG_TYPE_LONG,
    "segment.ms": _CONFIG_TYPE_LONG,
    "delete.retention.ms": _CONFIG_TYPE_LONG,
    "segment.bytes": _CONFIG_TYPE_INT,
    "max.message.bytes": _CONFIG_TYPE_INT,
    "index.interval.bytes": _CONFIG_TYPE_INT,
}
# IncrementalAlterConfigs' operations (AlterConfigOp.OpType).
_SET, _DELETE, _APPEND, _SUBTRACT = 0, 1, 2, 3

_Changes = Callable[[Message], dict[str, "str | None"]]
"""A resource of the request -> the store's changes (a key mapped to None: the default)."""


class _RefusedError(Exception):
    """A resource's change refused with a Kafka error code (never leaves this module)."""

    def __init__(self, code: KafkaErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code


def config_entries(store: Store, config: TopicConfig, keys: list[str] | None) -> list[Message]:
    """Return ``config`` as DescribeConfigs entries (only ``keys`` when given)."""
    defaults = kafka_config_entries(store.default_config)
    entries = []
    for key, value in kafka_config_entries(config).items():
        if keys is not None and key not in keys:
            continue
        is_default = defaults.get(key) == value
        entries.append(
            {
                "name": key,
                "value": value,
                "read_only": False,
                "is_default": is_default,
                "config_source": _CONFIG_SOURCE_DEFAULT if is_default else _CONFIG_SOURCE_TOPIC,
                "is_sensitive": False,
                "config_type": _CONFIG_TYPES.get(key, _CONFIG_TYPE_STRING),
                "documentation": None,
            }
        )
    return entries


class ConfigHandlers:
    """DescribeConfigs, AlterConfigs and IncrementalAlterConfigs over the store.

    :param store: the open store.
    :param node: this broker as clients see it (a broker resource names its id).
    """

    def __init__(self, store: Store, node: Node) -> None:
        self._store = store
        self._node = node

    def table(self) -> dict[ApiKey, Handler]:
        """Return this module's handlers by API key."""
        return {
            ApiKey.DESCRIBE_CONFIGS: self.describe_configs,
            ApiKey.ALTER_CONFIGS: self.alter_configs,
            ApiKey.INCREMENTAL_ALTER_CONFIGS: self.incremental_alter_configs,
        }

    async def describe_configs(self, request: Request, client: ClientInfo) -> Message:
        """Answer topics' settings in Kafka's names; a broker resource has none to show."""
        results = []
        for resource in request.body["resources"]:
            kind, name = resource["resource_type"], resource["resource_name"]
            result: Message = {
                "error_code": 0,
                "error_message": None,
                "resource_type": kind,
                "resource_name": name,
                "configs": [],
            }
            if kind == RESOURCE_TOPIC:
                try:
                    config = self._store.topic_config(name)
                except TopicNotFoundError as exc:
                    result["error_code"] = KafkaErrorCode.UNKNOWN_TOPIC_OR_PARTITION
                    result["error_message"] = str(exc)
                else:
                    keys = resource["configuration_keys"]
                    result["configs"] = config_entries(self._store, config, keys)
            elif not self._is_this_broker(kind, name):
                result["error_code"] = KafkaErrorCode.INVALID_REQUEST
                result["error_message"] = f"no resource of type {kind} named {name!r}"
            results.append(result)
        return {"results": results}

    async def alter_configs(self, request: Request, client: ClientInfo) -> Message:
        """Replace topics' settings: the named ones as given, the others the defaults."""
        every_key = list(kafka_config_entries(self._store.default_config))

        def changes(resource: Message) -> dict[str, str | None]:
            named = {c["name"]: c["value"] for c in resource["configs"]}
            spelled = {key.strip().lower() for key in named}
            return {**{key: None for key in every_key if key not in spelled}, **named}

        return await self._alter(request, changes)

    async def incremental_alter_configs(self, request: Request, client: ClientInfo) -> Message:
        """Change the named settings of topics: SET a value, DELETE back to the default."""

        def changes(resource: Message) -> dict[str, str | None]:
            named: dict[str, str | None] = {}
            for entry in resource["configs"]:
                name, operation = entry["name"], entry["config_operation"]
                if operation == _SET:
                    if entry["value"] is None:
                        raise _RefusedError(
                            KafkaErrorCode.INVALID_CONFIG, f"{name}: SET without a value"
                        )
                    named[name] = entry["value"]
                elif operation == _DELETE:
                    named[name] = None
                elif operation in (_APPEND, _SUBTRACT):
                    raise _RefusedError(
                        KafkaErrorCode.INVALID_CONFIG,
                        f"{name}: APPEND and SUBTRACT apply to list configs; this broker's "
                        "configs each hold one value (use SET)",
                    )
                else:
                    raise _RefusedError(
                        KafkaErrorCode.INVALID_REQUEST, f"{name}: unknown operation {operation}"
                    )
            return named

        return await self._alter(request, changes)

    async def _alter(self, request: Request, changes: _Changes) -> Message:
        body = request.body
        counts = Counter((r["resource_type"], r["resource_name"]) for r in body["resources"])
        responses = []
        for resource in body["resources"]:
            kind, name = resource["resource_type"], resource["resource_name"]
            code, message = KafkaErrorCode.NONE, None
            try:
                if counts[kind, name] > 1:
                    raise _RefusedError(KafkaErrorCode.INVALID_REQUEST, "named twice")
                await self._alter_one(resource, changes, validate_only=body["validate_only"])
            except _RefusedError as exc:
                code, message = exc.code, str(exc)
            responses.append(
                {
                    "error_code": code,
                    "error_message": message,
                    "resource_type": kind,
                    "resource_name": name,
                }
            )
        return {"responses": responses}

    async def _alter_one(
        self, resource: Message, changes: _Changes, *, validate_only: bool
    ) -> None:
        kind, name = resource["resource_type"], resource["resource_name"]
        if kind != RESOURCE_TOPIC:
            if self._is_this_broker(kind, name):
                raise _RefusedError(
                    KafkaErrorCode.INVALID_CONFIG, "this broker has no dynamic broker configs"
                )
            raise _RefusedError(KafkaErrorCode.INVALID_REQUEST, f"no resource of type {kind}")
        store = self._store
        try:
            if validate_only:
                store.altered_topic_config(name, changes(resource))
            else:
                await store.alter_topic_config(name, changes(resource))
        except InvalidTopicError as exc:
            raise _RefusedError(KafkaErrorCode.INVALID_TOPIC_EXCEPTION, str(exc)) from None
        except InvalidConfigError as exc:
            raise _RefusedError(KafkaErrorCode.INVALID_CONFIG, str(exc)) from None
        except TopicNotFoundError as exc:
            raise _RefusedError(KafkaErrorCode.UNKNOWN_TOPIC_OR_PARTITION, str(exc)) from None
        except (StoreError, OSError) as exc:
            logger.warning("cannot change the config of topic %r: %s", name, exc)
            raise _RefusedError(KafkaErrorCode.KAFKA_STORAGE_ERROR, str(exc)) from None
        if not validate_only:
            logger.info("changed the config of topic %r", name)

    def _is_this_broker(self, kind: int, name: str) -> bool:
        return kind == RESOURCE_BROKER and name in ("", str(self._node.node_id))
