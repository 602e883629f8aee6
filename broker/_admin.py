"""A small blocking admin client over the codec: topics (and transactions) on a running
Kafka-protocol broker.

Theory of operation
-------------------
The ``headwater topics ... --bootstrap HOST:PORT`` commands administer a broker through
the Kafka protocol, with the same codec the broker uses and a plain socket: a command
sends a handful of requests and exits, so neither an event loop nor a client library is
needed. On connecting, the client asks ApiVersions (v3, falling back to v0 as a broker
that does not know v3 asks) and uses, per API, the highest version both sides speak.

It follows the cluster's routing, so it works against a Kafka cluster as well as against
``headwater broker``: CreateTopics, DeleteTopics and CreatePartitions go to the
controller that Metadata names, ListOffsets and DeleteRecords to each partition's leader,
OffsetDelete to the group's coordinator (FindCoordinator), DescribeTransactions to the
transactional id's, ListTransactions to every broker, config changes to the
bootstrap broker (any broker forwards them); connections are made on demand and kept by
node id.

A partition just created or added has no leader for a moment on a Kafka cluster (the
controller has made it, its broker has not taken it up yet): describing answers
``LEADER_NOT_AVAILABLE`` or ``NOT_LEADER_OR_FOLLOWER`` then. As a Kafka client does for
these retriable errors, describing asks the metadata again and retries, for at most the
client's timeout.

One request at a time per connection; not thread-safe. Every call may raise ``OSError``
when a broker cannot be reached (the CLI turns that into one line).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import tenacity

from ._admin_connection import Connection, check_error, parse_address
from ._errors import BrokerResponseError
from ._protocol import (
    ApiKey,
    KafkaErrorCode,
    Message,
)

DEFAULT_TIMEOUT_S = 10.0
_LATEST = -1
_EARLIEST = -2
_TOPIC_RESOURCE = 2
_SET, _DELETE = 0, 1  # IncrementalAlterConfigs' operations


@dataclass(frozen=True, slots=True)
class RemotePartition:
    """Offsets of one partition as a broker reports them."""

    partition: int
    log_start_offset: int
    high_watermark: int


@dataclass(frozen=True, slots=True)
class RemoteTopic:
    """A topic as a broker describes it: partitions' offsets and its config entries.

    ``configs`` are Kafka's names and spellings (``retention.ms``, ``cleanup.policy``,
    ``headwater.durability`` on a headwater broker).
    """

    name: str
    internal: bool
    partitions: tuple[RemotePartition, ...]
    configs: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class RemoteTransaction:
    """A transactional id as its coordinator reports it (the epoch, timeout, start and
    partitions are known only from DescribeTransactions: -1 and empty otherwise)."""

    transactional_id: str
    producer_id: int
    state: str
    producer_epoch: int = -1
    timeout_ms: int = -1
    #: When its current or last transaction began (epoch ms), -1 if none since it started.
    start_time_ms: int = -1
    partitions: tuple[tuple[str, int], ...] = ()


#: The errors of a partition whose leadership is moving (module docstring).
_LEADERSHIP_MOVING = frozenset(
    {KafkaErrorCode.LEADER_NOT_AVAILABLE, KafkaErrorCode.NOT_LEADER_OR_FOLLOWER}
)


def _leaderless(exc: BaseException) -> bool:
    return isinstance(exc, BrokerResponseError) and exc.code in _LEADERSHIP_MOVING


class AdminClient:
    """Create, list, describe, change, grow and delete topics, delete records, and delete
    groups' committed offsets on a running broker (blocking).

    :param bootstrap: ``HOST:PORT`` of any broker of the cluster.
    :param client_id: the client id sent with every request.
    :param timeout_s: the connect and per-read socket timeout.

    Use as a context manager, or call :meth:`close`.

    :raises OSError: if the bootstrap broker cannot be reached.
    :raises BrokerError: if it does not speak the protocol well enough.
    """

    def __init__(
        self,
        bootstrap: str,
        *,
        client_id: str = "headwater-admin",
        timeout_s: float = DEFAULT_TIMEOUT_S,
    ) -> None:
        host, port = parse_address(bootstrap)
        self._client_id = client_id
        self._timeout_s = timeout_s
        self._bootstrap = Connection(host, port, client_id, timeout_s)
        self._nodes: dict[int, Connection] = {}
        self._brokers: dict[int, tuple[str, int]] = {}

    def __enter__(self) -> AdminClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Close every connection."""
        self._bootstrap.close()
        for connection in self._nodes.values():
            connection.close()
        self._nodes.clear()

    def _node(self, node_id: int) -> Connection:
        connection = self._nodes.get(node_id)
        if connection is None:
            if node_id not in self._brokers:
                return self._bootstrap
            host, port = self._brokers[node_id]
            connection = Connection(host, port, self._client_id, self._timeout_s)
            self._nodes[node_id] = connection
        return connection

    def _metadata(self, topics: Sequence[str] | None) -> Message:
        body = self._bootstrap.request(
            ApiKey.METADATA,
            {
                "topics": None if topics is None else [{"name": t} for t in topics],
                "allow_auto_topic_creation": False,
            },
        )
        self._brokers = {b["node_id"]: (b["host"], b["port"]) for b in body["brokers"]}
        return body

    def _controller(self) -> Connection:
        return self._node(self._metadata([])["controller_id"])

    # -- topics ----------------------------------------------------------------------------

    def create_topic(
        self, name: str, partitions: int, configs: Mapping[str, str] | None = None
    ) -> None:
        """Create topic ``name`` with ``partitions`` partitions and Kafka-named ``configs``.

        :raises BrokerResponseError: with the broker's error code and message.
        """
        body = self._controller().request(
            ApiKey.CREATE_TOPICS,
            {
                "topics": [
                    {
                        "name": name,
                        "num_partitions": partitions,
                        "replication_factor": -1,
                        "assignments": [],
                        "configs": [{"name": k, "value": v} for k, v in (configs or {}).items()],
                    }
                ],
                "timeout_ms": int(self._timeout_s * 1000),
                "validate_only": False,
            },
        )
        for result in body["topics"]:
            check_error(result["error_code"], f"creating topic {name!r}", result["error_message"])

    def delete_topic(self, name: str) -> None:
        """Delete topic ``name``.

        :raises BrokerResponseError: with the broker's error code and message.
        """
        body = self._controller().request(
            ApiKey.DELETE_TOPICS,
            {"topic_names": [name], "timeout_ms": int(self._timeout_s * 1000)},
        )
        for result in body["responses"]:
            check_error(result["error_code"], f"deleting topic {name!r}", result["error_message"])

    def alter_topic_config(self, name: str, configs: Mapping[str, str | None]) -> None:
        """Change topic ``name``'s Kafka-named ``configs`` (IncrementalAlterConfigs): set
        each to its value, or back to the broker's default where the value is ``None``.

        :raises BrokerResponseError: with the broker's error code and message.
        :raises BrokerError: if the broker does not serve IncrementalAlterConfigs.
        """
        body = self._bootstrap.request(
            ApiKey.INCREMENTAL_ALTER_CONFIGS,
            {
                "resources": [
                    {
                        "resource_type": _TOPIC_RESOURCE,
                        "resource_name": name,
                        "configs": [
                            {
                                "name": k,
                                "config_operation": _SET if v is not None else _DELETE,
                                "value": v,
                            }
                            for k, v in configs.items()
                        ],
                    }
                ],
                "validate_only": False,
            },
        )
        for result in body["responses"]:
            check_error(result["error_code"], f"changing topic {name!r}", result["error_message"])

    def create_partitions(self, name: str, count: int) -> None:
        """Grow topic ``name`` to ``count`` partitions (CreatePartitions).

        :raises BrokerResponseError: with the broker's error code and message
            (``INVALID_PARTITIONS`` for a count not above the current one).
        :raises BrokerError: if the broker does not serve CreatePartitions.
        """
        body = self._controller().request(
            ApiKey.CREATE_PARTITIONS,
            {
                "topics": [{"name": name, "count": count, "assignments": None}],
                "timeout_ms": int(self._timeout_s * 1000),
                "validate_only": False,
            },
        )
        for result in body["results"]:
            check_error(
                result["error_code"],
                f"adding partitions to topic {name!r}",
                result["error_message"],
            )

    def partition_leaders(self, name: str) -> dict[int, int]:
        """Return partition -> leader node id of topic ``name``.

        :raises BrokerResponseError: if the topic does not exist.
        """
        body = self._metadata([name])
        for topic in body["topics"]:
            missing = topic["error_code"] == KafkaErrorCode.UNKNOWN_TOPIC_OR_PARTITION
            check_error(
                topic["error_code"],
                f"looking up topic {name!r}",
                "the topic does not exist" if missing else None,
            )
            return {p["partition_index"]: p["leader_id"] for p in topic["partitions"]}
        return {}

    def delete_records(self, name: str, before: Mapping[int, int]) -> dict[int, int]:
        """Delete records of topic ``name`` before the given offsets (DeleteRecords).

        ``before`` maps a partition to the offset before which its records go (-1: its
        high watermark). Returns each partition's new low watermark.

        :raises BrokerResponseError: for the first partition the broker refused
            (``OFFSET_OUT_OF_RANGE`` past the high watermark), or one that does not exist.
        :raises BrokerError: if the broker does not serve DeleteRecords.
        """
        leaders = self.partition_leaders(name)
        by_node: dict[int, list[int]] = {}
        for index in before:
            if index not in leaders:
                check_error(
                    KafkaErrorCode.UNKNOWN_TOPIC_OR_PARTITION,
                    f"deleting records of {name}-{index}",
                    f"topic {name!r} has {len(leaders)} partition(s)",
                )
            by_node.setdefault(leaders[index], []).append(index)
        lows: dict[int, int] = {}
        for node_id, indexes in by_node.items():
            body = self._node(node_id).request(
                ApiKey.DELETE_RECORDS,
                {
                    "topics": [
                        {
                            "name": name,
                            "partitions": [
                                {"partition_index": i, "offset": before[i]} for i in indexes
                            ],
                        }
                    ],
                    "timeout_ms": int(self._timeout_s * 1000),
                },
            )
            for topic in body["topics"]:
                for p in topic["partitions"]:
                    index = p["partition_index"]
                    check_error(p["error_code"], f"deleting records of {name}-{index}", None)
                    lows[index] = p["low_watermark"]
        return lows

    def delete_group_offsets(
        self, group: str, partitions: Sequence[tuple[str, int]]
    ) -> dict[tuple[str, int], int]:
        """Delete ``group``'s committed offsets of ``partitions`` (OffsetDelete).

        Returns each partition's error code: 0 when deleted (or there was none),
        ``GROUP_SUBSCRIBED_TO_TOPIC`` when the group's active members consume its topic.

        :raises BrokerResponseError: for an error of the whole request
            (``GROUP_ID_NOT_FOUND`` for an unknown group).
        :raises BrokerError: if the broker does not serve OffsetDelete.
        """
        found = self._bootstrap.request(ApiKey.FIND_COORDINATOR, {"key": group, "key_type": 0})
        check_error(found["error_code"], f"finding the coordinator of group {group!r}", None)
        self._metadata([])
        self._brokers.setdefault(found["node_id"], (found["host"], found["port"]))
        topics: dict[str, list[int]] = {}
        for topic, index in partitions:
            topics.setdefault(topic, []).append(index)
        body = self._node(found["node_id"]).request(
            ApiKey.OFFSET_DELETE,
            {
                "group_id": group,
                "topics": [
                    {"name": t, "partitions": [{"partition_index": i} for i in indexes]}
                    for t, indexes in topics.items()
                ],
            },
        )
        check_error(body["error_code"], f"deleting offsets of group {group!r}", None)
        return {
            (topic["name"], p["partition_index"]): p["error_code"]
            for topic in body["topics"]
            for p in topic["partitions"]
        }

    # -- transactions ----------------------------------------------------------------------

    def list_transactions(self) -> list[RemoteTransaction]:
        """Return every transactional id of the cluster, by id (ListTransactions to every
        broker, each the coordinator of some).

        :raises BrokerError: if a broker does not serve ListTransactions.
        """
        found: list[RemoteTransaction] = []
        self._metadata([])
        for node_id in sorted(self._brokers):
            body = self._node(node_id).request(
                ApiKey.LIST_TRANSACTIONS, {"state_filters": [], "producer_id_filters": []}
            )
            check_error(body["error_code"], "listing transactions", None)
            found += (
                RemoteTransaction(t["transactional_id"], t["producer_id"], t["transaction_state"])
                for t in body["transaction_states"]
            )
        return sorted(found, key=lambda t: t.transactional_id)

    def describe_transaction(self, transactional_id: str) -> RemoteTransaction:
        """Return ``transactional_id``'s state from its coordinator (DescribeTransactions).

        :raises BrokerResponseError: ``TRANSACTIONAL_ID_NOT_FOUND`` for an unknown id.
        :raises BrokerError: if the coordinator does not serve DescribeTransactions.
        """
        what = f"transactional id {transactional_id!r}"
        found = self._bootstrap.request(
            ApiKey.FIND_COORDINATOR, {"key": transactional_id, "key_type": 1}
        )
        check_error(found["error_code"], f"finding the coordinator of {what}", None)
        self._metadata([])
        self._brokers.setdefault(found["node_id"], (found["host"], found["port"]))
        body = self._node(found["node_id"]).request(
            ApiKey.DESCRIBE_TRANSACTIONS, {"transactional_ids": [transactional_id]}
        )
        (t,) = body["transaction_states"]
        check_error(t["error_code"], f"describing {what}", None)
        return RemoteTransaction(
            transactional_id,
            t["producer_id"],
            t["transaction_state"],
            t["producer_epoch"],
            t["transaction_timeout_ms"],
            t["transaction_start_time_ms"],
            tuple(sorted((p["topic"], i) for p in t["topics"] for i in p["partitions"])),
        )

    def list_topic_names(self) -> list[str]:
        """Return the names of every topic, sorted."""
        body = self._metadata(None)
        return sorted(t["name"] for t in body["topics"] if t["error_code"] == 0)

    def describe_topics(self, names: Sequence[str] | None = None) -> list[RemoteTopic]:
        """Describe topics (every topic when ``names`` is ``None``): offsets and configs.

        A partition without a leader yet is waited for (module docstring).

        :raises BrokerResponseError: if a named topic does not exist, or a partition has
            no leader within the client's timeout.
        """
        retrying = tenacity.Retrying(
            retry=tenacity.retry_if_exception(_leaderless),
            stop=tenacity.stop_after_delay(self._timeout_s),
            wait=tenacity.wait_exponential(multiplier=0.02, max=0.5),
            reraise=True,
        )
        return retrying(self._describe_topics, names)

    def _describe_topics(self, names: Sequence[str] | None) -> list[RemoteTopic]:
        body = self._metadata(names)
        leaders: dict[str, dict[int, int]] = {}
        internal: dict[str, bool] = {}
        for topic in body["topics"]:
            missing = topic["error_code"] == KafkaErrorCode.UNKNOWN_TOPIC_OR_PARTITION
            check_error(
                topic["error_code"],
                f"describing topic {topic['name']!r}",
                "the topic does not exist" if missing else None,
            )
            internal[topic["name"]] = topic["is_internal"]
            for p in topic["partitions"]:
                where = f"{topic['name']}-{p['partition_index']}"
                if p["leader_id"] < 0 or p["error_code"] == KafkaErrorCode.LEADER_NOT_AVAILABLE:
                    raise BrokerResponseError(
                        f"describing {where} failed with LEADER_NOT_AVAILABLE",
                        KafkaErrorCode.LEADER_NOT_AVAILABLE,
                    )
            leaders[topic["name"]] = {
                p["partition_index"]: p["leader_id"] for p in topic["partitions"]
            }
        if not leaders:
            return []
        earliest = self._offsets(leaders, _EARLIEST)
        latest = self._offsets(leaders, _LATEST)
        configs = self._configs(sorted(leaders))
        return [
            RemoteTopic(
                name=name,
                internal=internal[name],
                partitions=tuple(
                    RemotePartition(i, earliest[name, i], latest[name, i])
                    for i in sorted(leaders[name])
                ),
                configs=configs.get(name, {}),
            )
            for name in sorted(leaders)
        ]

    def _offsets(
        self, leaders: Mapping[str, Mapping[int, int]], timestamp: int
    ) -> dict[tuple[str, int], int]:
        by_node: dict[int, dict[str, list[int]]] = {}
        for name, partitions in leaders.items():
            for index, leader in partitions.items():
                by_node.setdefault(leader, {}).setdefault(name, []).append(index)
        offsets: dict[tuple[str, int], int] = {}
        for node_id, topics in by_node.items():
            body = self._node(node_id).request(
                ApiKey.LIST_OFFSETS,
                {
                    "replica_id": -1,
                    "isolation_level": 0,
                    "topics": [
                        {
                            "name": name,
                            "partitions": [
                                {"partition_index": i, "timestamp": timestamp} for i in indexes
                            ],
                        }
                        for name, indexes in topics.items()
                    ],
                },
            )
            for topic in body["topics"]:
                for p in topic["partitions"]:
                    where = f"{topic['name']}-{p['partition_index']}"
                    check_error(p["error_code"], f"listing offsets of {where}", None)
                    offsets[topic["name"], p["partition_index"]] = p["offset"]
        return offsets

    def _configs(self, names: Sequence[str]) -> dict[str, dict[str, str]]:
        if ApiKey.DESCRIBE_CONFIGS not in self._bootstrap.versions:
            return {}
        body = self._bootstrap.request(
            ApiKey.DESCRIBE_CONFIGS,
            {
                "resources": [
                    {
                        "resource_type": _TOPIC_RESOURCE,
                        "resource_name": name,
                        "configuration_keys": None,
                    }
                    for name in names
                ]
            },
        )
        return {
            r["resource_name"]: {
                c["name"]: c["value"] for c in r["configs"] if c["value"] is not None
            }
            for r in body["results"]
            if r["error_code"] == 0
        }
