"""Layouts of the consumer-group APIs (Kafka's classic group protocol).

FindCoordinator, JoinGroup, SyncGroup, Heartbeat, LeaveGroup, OffsetCommit, OffsetFetch,
DescribeGroups, ListGroups, DeleteGroups and OffsetDelete. Member metadata and
assignments are opaque ``bytes``: the consumer protocol inside them is the assignor's
business, not the wire codec's.
"""

from __future__ import annotations

from ._codes import NO_AUTHORIZED_OPERATIONS, ApiKey
from ._schema import (
    BOOL,
    BYTES,
    INT8,
    INT16,
    INT32,
    INT64,
    STRING,
    Api,
    Array,
    Field,
    Struct,
    nullable_string,
)

FIND_COORDINATOR = Api(
    ApiKey.FIND_COORDINATOR, "FindCoordinator", advertised=(0, 3), accepted=(0, 3),
    flexible_since=3,
    request=Struct(
        Field("key", STRING),
        Field("key_type", INT8, since=1),
    ),
    response=Struct(
        Field("throttle_time_ms", INT32, since=1),
        Field("error_code", INT16),
        Field("error_message", STRING, since=1, nullable_since=1),
        Field("node_id", INT32),
        Field("host", STRING),
        Field("port", INT32),
    ),
)  # fmt: skip

JOIN_GROUP = Api(
    ApiKey.JOIN_GROUP, "JoinGroup", advertised=(0, 7), accepted=(0, 7), flexible_since=6,
    request=Struct(
        Field("group_id", STRING),
        Field("session_timeout_ms", INT32),
        Field("rebalance_timeout_ms", INT32, since=1, default=-1),
        Field("member_id", STRING),
        nullable_string("group_instance_id", since=5),
        Field("protocol_type", STRING),
        Field("protocols", Array(Struct(
            Field("name", STRING),
            Field("metadata", BYTES),
        ))),
    ),
    response=Struct(
        Field("throttle_time_ms", INT32, since=2),
        Field("error_code", INT16),
        Field("generation_id", INT32, default=-1),
        nullable_string("protocol_type", since=7),
        Field("protocol_name", STRING, nullable_since=7),
        Field("leader", STRING),
        Field("member_id", STRING),
        Field("members", Array(Struct(
            Field("member_id", STRING),
            nullable_string("group_instance_id", since=5),
            Field("metadata", BYTES),
        ))),
    ),
)  # fmt: skip

SYNC_GROUP = Api(
    ApiKey.SYNC_GROUP, "SyncGroup", advertised=(0, 5), accepted=(0, 5), flexible_since=4,
    request=Struct(
        Field("group_id", STRING),
        Field("generation_id", INT32),
        Field("member_id", STRING),
        nullable_string("group_instance_id", since=3),
        nullable_string("protocol_type", since=5),
        nullable_string("protocol_name", since=5),
        Field("assignments", Array(Struct(
            Field("member_id", STRING),
            Field("assignment", BYTES),
        ))),
    ),
    response=Struct(
        Field("throttle_time_ms", INT32, since=1),
        Field("error_code", INT16),
        nullable_string("protocol_type", since=5),
        nullable_string("protocol_name", since=5),
        Field("assignment", BYTES),
    ),
)  # fmt: skip

HEARTBEAT = Api(
    ApiKey.HEARTBEAT, "Heartbeat", advertised=(0, 4), accepted=(0, 4), flexible_since=4,
    request=Struct(
        Field("group_id", STRING),
        Field("generation_id", INT32),
        Field("member_id", STRING),
        nullable_string("group_instance_id", since=3),
    ),
    response=Struct(
        Field("throttle_time_ms", INT32, since=1),
        Field("error_code", INT16),
    ),
)  # fmt: skip

LEAVE_GROUP = Api(
    ApiKey.LEAVE_GROUP, "LeaveGroup", advertised=(0, 4), accepted=(0, 4), flexible_since=4,
    request=Struct(
        Field("group_id", STRING),
        Field("member_id", STRING, until=2),
        Field("members", Array(Struct(
            Field("member_id", STRING),
            nullable_string("group_instance_id", since=0),
        )), since=3),
    ),
    response=Struct(
        Field("throttle_time_ms", INT32, since=1),
        Field("error_code", INT16),
        Field("members", Array(Struct(
            Field("member_id", STRING),
            Field("group_instance_id", STRING, nullable_since=0),
            Field("error_code", INT16),
        )), since=3),
    ),
)  # fmt: skip

OFFSET_COMMIT = Api(
    ApiKey.OFFSET_COMMIT, "OffsetCommit", advertised=(0, 8), accepted=(0, 8), flexible_since=8,
    request=Struct(
        Field("group_id", STRING),
        Field("generation_id_or_member_epoch", INT32, since=1, default=-1),
        Field("member_id", STRING, since=1),
        nullable_string("group_instance_id", since=7),
        Field("retention_time_ms", INT64, since=2, until=4, default=-1),
        Field("topics", Array(Struct(
            Field("name", STRING),
            Field("partitions", Array(Struct(
                Field("partition_index", INT32),
                Field("committed_offset", INT64),
                Field("committed_leader_epoch", INT32, since=6, default=-1),
                Field("commit_timestamp", INT64, since=1, until=1, default=-1),
                Field("committed_metadata", STRING, nullable_since=0),
            ))),
        ))),
    ),
    response=Struct(
        Field("throttle_time_ms", INT32, since=3),
        Field("topics", Array(Struct(
            Field("name", STRING),
            Field("partitions", Array(Struct(
                Field("partition_index", INT32),
                Field("error_code", INT16),
            ))),
        ))),
    ),
)  # fmt: skip

OFFSET_FETCH = Api(
    ApiKey.OFFSET_FETCH, "OffsetFetch", advertised=(0, 7), accepted=(0, 7), flexible_since=6,
    request=Struct(
        Field("group_id", STRING),
        Field("topics", Array(Struct(
            Field("name", STRING),
            Field("partition_indexes", Array(INT32)),
        )), nullable_since=2),
        Field("require_stable", BOOL, since=7),
    ),
    response=Struct(
        Field("throttle_time_ms", INT32, since=3),
        Field("topics", Array(Struct(
            Field("name", STRING),
            Field("partitions", Array(Struct(
                Field("partition_index", INT32),
                Field("committed_offset", INT64),
                Field("committed_leader_epoch", INT32, since=5, default=-1),
                Field("metadata", STRING, nullable_since=0),
                Field("error_code", INT16),
            ))),
        ))),
        Field("error_code", INT16, since=2),
    ),
)  # fmt: skip

DESCRIBE_GROUPS = Api(
    ApiKey.DESCRIBE_GROUPS, "DescribeGroups", advertised=(0, 5), accepted=(0, 5),
    flexible_since=5,
    request=Struct(
        Field("groups", Array(STRING)),
        Field("include_authorized_operations", BOOL, since=3),
    ),
    response=Struct(
        Field("throttle_time_ms", INT32, since=1),
        Field("groups", Array(Struct(
            Field("error_code", INT16),
            Field("group_id", STRING),
            Field("group_state", STRING),
            Field("protocol_type", STRING),
            Field("protocol_data", STRING),
            Field("members", Array(Struct(
                Field("member_id", STRING),
                nullable_string("group_instance_id", since=4),
                Field("client_id", STRING),
                Field("client_host", STRING),
                Field("member_metadata", BYTES),
                Field("member_assignment", BYTES),
            ))),
            Field("authorized_operations", INT32, since=3, default=NO_AUTHORIZED_OPERATIONS),
        ))),
    ),
)  # fmt: skip

LIST_GROUPS = Api(
    ApiKey.LIST_GROUPS, "ListGroups", advertised=(0, 4), accepted=(0, 4), flexible_since=3,
    request=Struct(
        Field("states_filter", Array(STRING), since=4),
    ),
    response=Struct(
        Field("throttle_time_ms", INT32, since=1),
        Field("error_code", INT16),
        Field("groups", Array(Struct(
            Field("group_id", STRING),
            Field("protocol_type", STRING),
            Field("group_state", STRING, since=4),
        ))),
    ),
)  # fmt: skip

DELETE_GROUPS = Api(
    ApiKey.DELETE_GROUPS, "DeleteGroups", advertised=(0, 2), accepted=(0, 2), flexible_since=2,
    request=Struct(
        Field("groups_names", Array(STRING)),
    ),
    response=Struct(
        Field("throttle_time_ms", INT32),
        Field("results", Array(Struct(
            Field("group_id", STRING),
            Field("error_code", INT16),
        ))),
    ),
)  # fmt: skip

OFFSET_DELETE = Api(
    ApiKey.OFFSET_DELETE, "OffsetDelete", advertised=(0, 0), accepted=(0, 0),
    flexible_since=1 << 15,  # no version of OffsetDelete is flexible
    request=Struct(
        Field("group_id", STRING),
        Field("topics", Array(Struct(
            Field("name", STRING),
            Field("partitions", Array(Struct(
                Field("partition_index", INT32),
            ))),
        ))),
    ),
    response=Struct(
        Field("error_code", INT16),
        Field("throttle_time_ms", INT32),
        Field("topics", Array(Struct(
            Field("name", STRING),
            Field("partitions", Array(Struct(
                Field("partition_index", INT32),
                Field("error_code", INT16),
            ))),
        ))),
    ),
)  # fmt: skip
