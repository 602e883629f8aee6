"""Handlers of the consumer-group APIs, over a :class:`~headwater.groups.GroupCoordinator`.

JoinGroup, SyncGroup, Heartbeat, LeaveGroup, OffsetCommit, OffsetFetch, DescribeGroups,
ListGroups, DeleteGroups and OffsetDelete. The broker passes :meth:`GroupHandlers.table` to
:class:`~headwater.broker.Broker` as ``extra_handlers`` (``headwater broker`` does).

Theory of operation
-------------------
Every handler turns its request into a call of the coordinator and the outcome back into a
response: the coordinator holds the rules (member ids, generations, rebalances, plain
commits), this module only translates. A :class:`~headwater.groups.GroupError` carries its
Kafka error code (``code``), which goes into the response as it is. JoinGroup and
SyncGroup wait in the handler until the rebalance answers them, holding back that
connection's later requests as a Kafka coordinator does (clients send nothing else on the
coordinator connection while they wait).

Versions: JoinGroup v4+ asks the coordinator to require a known member id (the first join
is answered with 79 MEMBER_ID_REQUIRED and a generated id); LeaveGroup v3+ names a batch of
members, each answered on its own; OffsetFetch v2+ with ``topics`` null returns every
committed offset of the group; nothing committed reads as offset -1.

OffsetCommit checks each partition on its own: one that does not exist (or a negative
offset) gets its error code while the others are committed together.

OffsetDelete answers as Kafka's coordinator does: ``GROUP_ID_NOT_FOUND`` for an unknown
group, ``NON_EMPTY_GROUP`` for one with members of another protocol type than
``consumer``, and per partition ``GROUP_SUBSCRIBED_TO_TOPIC`` where the active members
subscribe to the topic, ``UNKNOWN_TOPIC_OR_PARTITION`` where it does not exist; the other
offsets are deleted together.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from headwater.groups import (
    GroupCoordinator,
    GroupError,
    GroupIdNotFoundError,
    GroupProtocol,
    JoinRequest,
    MemberIdRequiredError,
    OffsetAndMetadata,
    SyncRequest,
    TopicPartition,
)
from headwater.store import StoreError, TopicNotFoundError

from ._dispatch import ClientInfo, Handler
from ._protocol import ApiKey, KafkaErrorCode, Message, Request

logger = logging.getLogger("headwater.broker")


def _code(exc: Exception) -> int:
    """The Kafka error code to answer ``exc`` with."""
    if isinstance(exc, GroupError):
        return exc.code
    if isinstance(exc, TopicNotFoundError):
        return KafkaErrorCode.UNKNOWN_TOPIC_OR_PARTITION
    return KafkaErrorCode.UNKNOWN_SERVER_ERROR


class GroupHandlers:
    """The consumer-group APIs over ``coordinator`` (entered, on the broker's event loop)."""

    def __init__(self, coordinator: GroupCoordinator) -> None:
        self._groups = coordinator

    def table(self) -> dict[ApiKey, Handler]:
        """Return this module's handlers by API key."""
        return {
            ApiKey.JOIN_GROUP: self.join_group,
            ApiKey.SYNC_GROUP: self.sync_group,
            ApiKey.HEARTBEAT: self.heartbeat,
            ApiKey.LEAVE_GROUP: self.leave_group,
            ApiKey.OFFSET_COMMIT: self.offset_commit,
            ApiKey.OFFSET_FETCH: self.offset_fetch,
            ApiKey.DESCRIBE_GROUPS: self.describe_groups,
            ApiKey.LIST_GROUPS: self.list_groups,
            ApiKey.DELETE_GROUPS: self.delete_groups,
            ApiKey.OFFSET_DELETE: self.offset_delete,
        }

    # -- membership ------------------------------------------------------------------------

    async def join_group(self, request: Request, client: ClientInfo) -> Message:
        """Join (or rejoin) the group; answer once the rebalance completes."""
        body = request.body
        version = request.header.api_version
        member_id = body["member_id"]
        join = JoinRequest(
            client_id=request.header.client_id or "",
            client_host=f"/{client.host}",
            session_timeout_ms=body["session_timeout_ms"],
            rebalance_timeout_ms=body.get("rebalance_timeout_ms", -1),
            protocol_type=body["protocol_type"],
            protocols=tuple(GroupProtocol(p["name"], p["metadata"]) for p in body["protocols"]),
            member_id=member_id,
            group_instance_id=body.get("group_instance_id"),
            require_known_member_id=version >= 4,
        )
        try:
            result = await self._groups.join(body["group_id"], join)
        except (GroupError, StoreError) as exc:
            if isinstance(exc, MemberIdRequiredError):
                member_id = exc.member_id
            return {
                "error_code": _code(exc),
                "generation_id": -1,
                "protocol_type": None,
                "protocol_name": None if version >= 7 else "",
                "leader": "",
                "member_id": member_id,
                "members": [],
            }
        return {
            "error_code": 0,
            "generation_id": result.generation_id,
            "protocol_type": result.protocol_type,
            "protocol_name": result.protocol_name or ("" if version < 7 else None),
            "leader": result.leader_id,
            "member_id": result.member_id,
            "members": [
                {
                    "member_id": m.member_id,
                    "group_instance_id": m.group_instance_id,
                    "metadata": m.metadata,
                }
                for m in result.members
            ],
        }

    async def sync_group(self, request: Request, client: ClientInfo) -> Message:
        """Hand in (leader) or wait for (follower) the assignment; answer this member's."""
        body = request.body
        sync = SyncRequest(
            member_id=body["member_id"],
            generation_id=body["generation_id"],
            assignments={a["member_id"]: a["assignment"] for a in body["assignments"]},
            group_instance_id=body.get("group_instance_id"),
            protocol_type=body.get("protocol_type"),
            protocol_name=body.get("protocol_name"),
        )
        try:
            result = await self._groups.sync(body["group_id"], sync)
        except (GroupError, StoreError) as exc:
            return {
                "error_code": _code(exc),
                "protocol_type": None,
                "protocol_name": None,
                "assignment": b"",
            }
        return {
            "error_code": 0,
            "protocol_type": result.protocol_type,
            "protocol_name": result.protocol_name,
            "assignment": result.assignment,
        }

    async def heartbeat(self, request: Request, client: ClientInfo) -> Message:
        """Refresh the member's session; 27 when it should rejoin."""
        body = request.body
        try:
            await self._groups.heartbeat(
                body["group_id"],
                body["member_id"],
                body["generation_id"],
                body.get("group_instance_id"),
            )
        except (GroupError, StoreError) as exc:
            return {"error_code": _code(exc)}
        return {"error_code": 0}

    async def leave_group(self, request: Request, client: ClientInfo) -> Message:
        """Remove one member (v0-2) or each of a batch of members (v3+)."""
        body = request.body
        group_id = body["group_id"]
        if request.header.api_version < 3:
            try:
                await self._groups.leave(group_id, body["member_id"])
            except (GroupError, StoreError) as exc:
                return {"error_code": _code(exc)}
            return {"error_code": 0}
        members = []
        for member in body["members"]:
            code = 0
            try:
                await self._groups.leave(
                    group_id, member["member_id"], member.get("group_instance_id")
                )
            except (GroupError, StoreError) as exc:
                code = _code(exc)
            members.append({**member, "error_code": code})
        return {"error_code": 0, "members": members}

    # -- offsets ---------------------------------------------------------------------------

    async def offset_commit(self, request: Request, client: ClientInfo) -> Message:
        """Commit the offsets of the partitions that exist; answer a code per partition."""
        body = request.body
        store = self._groups.store
        codes: dict[tuple[str, int], int] = {}
        offsets: dict[TopicPartition, OffsetAndMetadata] = {}
        for topic in body["topics"]:
            for p in topic["partitions"]:
                key = (topic["name"], p["partition_index"])
                try:
                    store.partition(*key)
                except TopicNotFoundError:
                    codes[key] = KafkaErrorCode.UNKNOWN_TOPIC_OR_PARTITION
                    continue
                if p["committed_offset"] < 0:
                    codes[key] = KafkaErrorCode.OFFSET_OUT_OF_RANGE
                    continue
                epoch = p.get("committed_leader_epoch", -1)
                offsets[TopicPartition(*key)] = OffsetAndMetadata(
                    p["committed_offset"],
                    p["committed_metadata"] or "",
                    leader_epoch=epoch if epoch >= 0 else None,
                )
                codes[key] = 0
        if offsets:
            try:
                await self._groups.commit(
                    body["group_id"],
                    offsets,
                    member_id=body.get("member_id", ""),
                    generation_id=body.get("generation_id_or_member_epoch", -1),
                    group_instance_id=body.get("group_instance_id"),
                )
            except (GroupError, StoreError) as exc:
                code = _code(exc)
                if code == KafkaErrorCode.UNKNOWN_SERVER_ERROR:
                    logger.warning("commit for group %r failed: %s", body["group_id"], exc)
                for tp in offsets:
                    codes[tp.topic, tp.partition] = code
        return {
            "topics": [
                {
                    "name": topic["name"],
                    "partitions": [
                        {
                            "partition_index": p["partition_index"],
                            "error_code": codes[topic["name"], p["partition_index"]],
                        }
                        for p in topic["partitions"]
                    ],
                }
                for topic in body["topics"]
            ]
        }

    async def offset_fetch(self, request: Request, client: ClientInfo) -> Message:
        """The group's committed offsets for the named partitions (all of them: null topics)."""
        body = request.body
        committed = self._groups.committed(body["group_id"])
        requested: Mapping[str, Any] | None
        if body["topics"] is None:
            requested = {}
            for tp in committed:
                requested.setdefault(tp.topic, []).append(tp.partition)
        else:
            requested = {t["name"]: t["partition_indexes"] for t in body["topics"]}
        topics = []
        for name, indexes in requested.items():
            partitions = []
            for index in indexes:
                offset = committed.get(TopicPartition(name, index))
                partitions.append(
                    {
                        "partition_index": index,
                        "committed_offset": -1 if offset is None else offset.offset,
                        "committed_leader_epoch": -1
                        if offset is None or offset.leader_epoch is None
                        else offset.leader_epoch,
                        "metadata": "" if offset is None else offset.metadata,
                        "error_code": 0,
                    }
                )
            topics.append({"name": name, "partitions": partitions})
        return {"topics": topics, "error_code": 0}

    # -- admin -----------------------------------------------------------------------------

    async def describe_groups(self, request: Request, client: ClientInfo) -> Message:
        """Each group's state and members; an unknown group reads as Dead."""
        groups = []
        for group_id in request.body["groups"]:
            try:
                d = self._groups.describe_group(group_id)
            except GroupIdNotFoundError:
                groups.append(_dead(group_id))
                continue
            except GroupError as exc:
                groups.append({**_dead(group_id), "error_code": exc.code})
                continue
            groups.append(
                {
                    "error_code": 0,
                    "group_id": d.group_id,
                    "group_state": d.state,
                    "protocol_type": d.protocol_type,
                    "protocol_data": d.protocol_name,
                    "members": [
                        {
                            "member_id": m.member_id,
                            "group_instance_id": m.group_instance_id,
                            "client_id": m.client_id,
                            "client_host": m.client_host,
                            "member_metadata": m.metadata,
                            "member_assignment": m.assignment,
                        }
                        for m in d.members
                    ],
                }
            )
        return {"groups": groups}

    async def list_groups(self, request: Request, client: ClientInfo) -> Message:
        """Every group with members or committed offsets (v4+: in the requested states)."""
        wanted = {s.lower() for s in request.body.get("states_filter") or ()}
        try:
            overviews = self._groups.list_groups()
        except GroupError as exc:
            return {"error_code": exc.code, "groups": []}
        return {
            "error_code": 0,
            "groups": [
                {"group_id": g.group_id, "protocol_type": g.protocol_type, "group_state": g.state}
                for g in overviews
                if not wanted or g.state.lower() in wanted
            ],
        }

    async def delete_groups(self, request: Request, client: ClientInfo) -> Message:
        """Delete Empty groups and their committed offsets, each answered on its own.

        A group with members answers NON_EMPTY_GROUP, an unknown one GROUP_ID_NOT_FOUND.
        """
        results = []
        for group_id in request.body["groups_names"]:
            try:
                await self._groups.delete_group(group_id)
            except GroupError as exc:
                code = exc.code
            except StoreError as exc:
                logger.warning("cannot delete group %r: %s", group_id, exc)
                code = KafkaErrorCode.KAFKA_STORAGE_ERROR
            else:
                code = KafkaErrorCode.NONE
            results.append({"group_id": group_id, "error_code": code})
        return {"results": results}

    async def offset_delete(self, request: Request, client: ClientInfo) -> Message:
        """Delete committed offsets of a group, except those its members consume."""
        body = request.body
        group_id = body["group_id"]
        wanted = [
            TopicPartition(topic["name"], p["partition_index"])
            for topic in body["topics"]
            for p in topic["partitions"]
        ]
        try:
            outcome = await self._groups.delete_offsets(group_id, wanted)
        except GroupError as exc:
            return {"error_code": exc.code, "topics": []}
        except StoreError as exc:
            logger.warning("cannot delete offsets of group %r: %s", group_id, exc)
            return {"error_code": KafkaErrorCode.KAFKA_STORAGE_ERROR, "topics": []}
        topics: dict[str, list[Message]] = {}
        for tp in wanted:
            error = outcome[tp]
            code = KafkaErrorCode.NONE if error is None else _code(error)
            topics.setdefault(tp.topic, []).append(
                {"partition_index": tp.partition, "error_code": code}
            )
        return {
            "error_code": KafkaErrorCode.NONE,
            "topics": [{"name": name, "partitions": parts} for name, parts in topics.items()],
        }


def _dead(group_id: str) -> Message:
    return {
        "error_code": 0,
        "group_id": group_id,
        "group_state": "Dead",
        "protocol_type": "",
        "protocol_data": "",
        "members": [],
    }
