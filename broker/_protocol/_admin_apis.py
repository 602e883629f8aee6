"""Layouts of the cluster and administration APIs.

ApiVersions, Metadata, CreateTopics, DeleteTopics, DescribeConfigs, AlterConfigs,
IncrementalAlterConfigs, DeleteRecords and CreatePartitions. An ApiVersions
response is always sent with response header v0, and a request for a version the broker
does not know is answered with a v0 body (see ``_frames.py``).
"""

from __future__ import annotations

from ._codes import NO_AUTHORIZED_OPERATIONS, ApiKey
from ._schema import (
    BOOL,
    INT8,
    INT16,
    INT32,
    INT64,
    STRING,
    UUID,
    Api,
    Array,
    Field,
    Struct,
    nullable_string,
)

API_VERSIONS_API = Api(
    ApiKey.API_VERSIONS, "ApiVersions", advertised=(0, 3), accepted=(0, 3), flexible_since=3,
    request=Struct(
        Field("client_software_name", STRING, since=3),
        Field("client_software_version", STRING, since=3),
    ),
    response=Struct(
        Field("error_code", INT16),
        Field("api_keys", Array(Struct(
            Field("api_key", INT16),
            Field("min_version", INT16),
            Field("max_version", INT16),
        ))),
        Field("throttle_time_ms", INT32, since=1),
        Field("supported_features", Array(Struct(
            Field("name", STRING),
            Field("min_version", INT16),
            Field("max_version", INT16),
        )), since=3, tag=0),
        Field("finalized_features_epoch", INT64, since=3, tag=1, default=-1),
        Field("finalized_features", Array(Struct(
            Field("name", STRING),
            Field("max_version_level", INT16),
            Field("min_version_level", INT16),
        )), since=3, tag=2),
        Field("zk_migration_ready", BOOL, since=3, tag=3),
    ),
)  # fmt: skip

METADATA = Api(
    ApiKey.METADATA, "Metadata", advertised=(0, 12), accepted=(0, 12), flexible_since=9,
    request=Struct(
        Field("topics", Array(Struct(
            Field("topic_id", UUID, since=10),
            Field("name", STRING, nullable_since=10),
        )), nullable_since=1),
        Field("allow_auto_topic_creation", BOOL, since=4, default=True),
        Field("include_cluster_authorized_operations", BOOL, since=8, until=10),
        Field("include_topic_authorized_operations", BOOL, since=8),
    ),
    response=Struct(
        Field("throttle_time_ms", INT32, since=3),
        Field("brokers", Array(Struct(
            Field("node_id", INT32),
            Field("host", STRING),
            Field("port", INT32),
            nullable_string("rack", since=1),
        ))),
        nullable_string("cluster_id", since=2),
        Field("controller_id", INT32, since=1, default=-1),
        Field("topics", Array(Struct(
            Field("error_code", INT16),
            Field("name", STRING, nullable_since=12),
            Field("topic_id", UUID, since=10),
            Field("is_internal", BOOL, since=1),
            Field("partitions", Array(Struct(
                Field("error_code", INT16),
                Field("partition_index", INT32),
                Field("leader_id", INT32),
                Field("leader_epoch", INT32, since=7, default=-1),
                Field("replica_nodes", Array(INT32)),
                Field("isr_nodes", Array(INT32)),
                Field("offline_replicas", Array(INT32), since=5),
            ))),
            Field("topic_authorized_operations", INT32, since=8, default=NO_AUTHORIZED_OPERATIONS),
        ))),
        Field("cluster_authorized_operations", INT32, since=8, until=10,
              default=NO_AUTHORIZED_OPERATIONS),
    ),
)  # fmt: skip

CREATE_TOPICS = Api(
    ApiKey.CREATE_TOPICS, "CreateTopics", advertised=(0, 7), accepted=(0, 7), flexible_since=5,
    request=Struct(
        Field("topics", Array(Struct(
            Field("name", STRING),
            Field("num_partitions", INT32),
            Field("replication_factor", INT16),
            Field("assignments", Array(Struct(
                Field("partition_index", INT32),
                Field("broker_ids", Array(INT32)),
            ))),
            Field("configs", Array(Struct(
                Field("name", STRING),
                Field("value", STRING, nullable_since=0),
            ))),
        ))),
        Field("timeout_ms", INT32, default=60000),
        Field("validate_only", BOOL, since=1),
    ),
    response=Struct(
        Field("throttle_time_ms", INT32, since=2),
        Field("topics", Array(Struct(
            Field("name", STRING),
            Field("topic_id", UUID, since=7),
            Field("error_code", INT16),
            Field("error_message", STRING, since=1, nullable_since=0),
            Field("topic_config_error_code", INT16, since=5, tag=0),
            Field("num_partitions", INT32, since=5, default=-1),
            Field("replication_factor", INT16, since=5, default=-1),
            Field("configs", Array(Struct(
                Field("name", STRING),
                Field("value", STRING, nullable_since=0),
                Field("read_only", BOOL),
                Field("config_source", INT8, default=-1),
                Field("is_sensitive", BOOL),
            )), since=5, nullable_since=5),
        ))),
    ),
)  # fmt: skip

DELETE_TOPICS = Api(
    ApiKey.DELETE_TOPICS, "DeleteTopics", advertised=(0, 5), accepted=(0, 5), flexible_since=4,
    request=Struct(
        Field("topic_names", Array(STRING)),
        Field("timeout_ms", INT32),
    ),
    response=Struct(
        Field("throttle_time_ms", INT32, since=1),
        Field("responses", Array(Struct(
            Field("name", STRING),
            Field("error_code", INT16),
            nullable_string("error_message", since=5),
        ))),
    ),
)  # fmt: skip

DESCRIBE_CONFIGS = Api(
    ApiKey.DESCRIBE_CONFIGS, "DescribeConfigs", advertised=(0, 4), accepted=(0, 4),
    flexible_since=4,
    request=Struct(
        Field("resources", Array(Struct(
            Field("resource_type", INT8),
            Field("resource_name", STRING),
            Field("configuration_keys", Array(STRING), nullable_since=0),
        ))),
        Field("include_synonyms", BOOL, since=1),
        Field("include_documentation", BOOL, since=3),
    ),
    response=Struct(
        Field("throttle_time_ms", INT32),
        Field("results", Array(Struct(
            Field("error_code", INT16),
            Field("error_message", STRING, nullable_since=0),
            Field("resource_type", INT8),
            Field("resource_name", STRING),
            Field("configs", Array(Struct(
                Field("name", STRING),
                Field("value", STRING, nullable_since=0),
                Field("read_only", BOOL),
                Field("is_default", BOOL, until=0),
                Field("config_source", INT8, since=1, default=-1),
                Field("is_sensitive", BOOL),
                Field("synonyms", Array(Struct(
                    Field("name", STRING),
                    Field("value", STRING, nullable_since=0),
                    Field("source", INT8),
                )), since=1),
                Field("config_type", INT8, since=3),
                Field("documentation", STRING, since=3, nullable_since=0),
            ))),
        ))),
    ),
)  # fmt: skip

ALTER_CONFIGS = Api(
    ApiKey.ALTER_CONFIGS, "AlterConfigs", advertised=(0, 2), accepted=(0, 2), flexible_since=2,
    request=Struct(
        Field("resources", Array(Struct(
            Field("resource_type", INT8),
            Field("resource_name", STRING),
            Field("configs", Array(Struct(
                Field("name", STRING),
                Field("value", STRING, nullable_since=0),
            ))),
        ))),
        Field("validate_only", BOOL),
    ),
    response=Struct(
        Field("throttle_time_ms", INT32),
        Field("responses", Array(Struct(
            Field("error_code", INT16),
            Field("error_message", STRING, nullable_since=0),
            Field("resource_type", INT8),
            Field("resource_name", STRING),
        ))),
    ),
)  # fmt: skip

INCREMENTAL_ALTER_CONFIGS = Api(
    ApiKey.INCREMENTAL_ALTER_CONFIGS, "IncrementalAlterConfigs", advertised=(0, 1),
    accepted=(0, 1), flexible_since=1,
    request=Struct(
        Field("resources", Array(Struct(
            Field("resource_type", INT8),
            Field("resource_name", STRING),
            Field("configs", Array(Struct(
                Field("name", STRING),
                Field("config_operation", INT8),
                Field("value", STRING, nullable_since=0),
            ))),
        ))),
        Field("validate_only", BOOL),
    ),
    response=Struct(
        Field("throttle_time_ms", INT32),
        Field("responses", Array(Struct(
            Field("error_code", INT16),
            Field("error_message", STRING, nullable_since=0),
            Field("resource_type", INT8),
            Field("resource_name", STRING),
        ))),
    ),
)  # fmt: skip

DELETE_RECORDS = Api(
    ApiKey.DELETE_RECORDS, "DeleteRecords", advertised=(0, 2), accepted=(0, 2),
    flexible_since=2,
    request=Struct(
        Field("topics", Array(Struct(
            Field("name", STRING),
            Field("partitions", Array(Struct(
                Field("partition_index", INT32),
                Field("offset", INT64),
            ))),
        ))),
        Field("timeout_ms", INT32),
    ),
    response=Struct(
        Field("throttle_time_ms", INT32),
        Field("topics", Array(Struct(
            Field("name", STRING),
            Field("partitions", Array(Struct(
                Field("partition_index", INT32),
                Field("low_watermark", INT64),
                Field("error_code", INT16),
            ))),
        ))),
    ),
)  # fmt: skip

CREATE_PARTITIONS = Api(
    ApiKey.CREATE_PARTITIONS, "CreatePartitions", advertised=(0, 3), accepted=(0, 3),
    flexible_since=2,
    request=Struct(
        Field("topics", Array(Struct(
            Field("name", STRING),
            Field("count", INT32),
            Field("assignments", Array(Struct(
                Field("broker_ids", Array(INT32)),
            )), nullable_since=0),
        ))),
        Field("timeout_ms", INT32),
        Field("validate_only", BOOL),
    ),
    response=Struct(
        Field("throttle_time_ms", INT32),
        Field("results", Array(Struct(
            Field("name", STRING),
            Field("error_code", INT16),
            nullable_string("error_message"),
        ))),
    ),
)  # fmt: skip
