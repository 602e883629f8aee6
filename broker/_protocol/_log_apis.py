"""Layouts of the APIs on the produce and consume path.

Produce, Fetch, ListOffsets and InitProducerId. ``records`` fields hold record batches
(magic 2) as buffers: decoded as zero-copy views of the request frame, encoded from the
stored bytes untouched. Produce v0-2 and Fetch v0-3 carry older message formats; they
decode, and the broker answers them with ``UNSUPPORTED_VERSION``.
"""

from __future__ import annotations

from ._codes import ApiKey
from ._schema import (
    INT8,
    INT16,
    INT32,
    INT64,
    RECORDS,
    STRING,
    Api,
    Array,
    Field,
    Struct,
    nullable_string,
)


def _leader_id_and_epoch() -> Struct:
    return Struct(
        Field("leader_id", INT32, default=-1),
        Field("leader_epoch", INT32, default=-1),
    )


def _node_endpoint() -> Struct:
    return Struct(
        Field("node_id", INT32),
        Field("host", STRING),
        Field("port", INT32),
        nullable_string("rack"),
    )


PRODUCE = Api(
    ApiKey.PRODUCE, "Produce", advertised=(0, 11), accepted=(3, 11), flexible_since=9,
    request=Struct(
        nullable_string("transactional_id", since=3),
        Field("acks", INT16),
        Field("timeout_ms", INT32),
        Field("topic_data", Array(Struct(
            Field("name", STRING),
            Field("partition_data", Array(Struct(
                Field("index", INT32),
                Field("records", RECORDS, nullable_since=0),
            ))),
        ))),
    ),
    response=Struct(
        Field("responses", Array(Struct(
            Field("name", STRING),
            Field("partition_responses", Array(Struct(
                Field("index", INT32),
                Field("error_code", INT16),
                Field("base_offset", INT64),
                Field("log_append_time_ms", INT64, since=2, default=-1),
                Field("log_start_offset", INT64, since=5, default=-1),
                Field("record_errors", Array(Struct(
                    Field("batch_index", INT32),
                    nullable_string("batch_index_error_message"),
                )), since=8),
                nullable_string("error_message", since=8),
                Field("current_leader", _leader_id_and_epoch(), since=10, tag=0),
            ))),
        ))),
        Field("throttle_time_ms", INT32, since=1),
        Field("node_endpoints", Array(_node_endpoint()), since=10, tag=0),
    ),
)  # fmt: skip

FETCH = Api(
    ApiKey.FETCH, "Fetch", advertised=(0, 12), accepted=(4, 12), flexible_since=12,
    request=Struct(
        Field("cluster_id", STRING, since=12, nullable_since=12, tag=0, default=None),
        Field("replica_id", INT32, default=-1),
        Field("max_wait_ms", INT32),
        Field("min_bytes", INT32),
        Field("max_bytes", INT32, since=3, default=0x7FFFFFFF),
        Field("isolation_level", INT8, since=4),
        Field("session_id", INT32, since=7),
        Field("session_epoch", INT32, since=7, default=-1),
        Field("topics", Array(Struct(
            Field("topic", STRING),
            Field("partitions", Array(Struct(
                Field("partition", INT32),
                Field("current_leader_epoch", INT32, since=9, default=-1),
                Field("fetch_offset", INT64),
                Field("last_fetched_epoch", INT32, since=12, default=-1),
                Field("log_start_offset", INT64, since=5, default=-1),
                Field("partition_max_bytes", INT32),
            ))),
        ))),
        Field("forgotten_topics_data", Array(Struct(
            Field("topic", STRING),
            Field("partitions", Array(INT32)),
        )), since=7),
        Field("rack_id", STRING, since=11),
    ),
    response=Struct(
        Field("throttle_time_ms", INT32, since=1),
        Field("error_code", INT16, since=7),
        Field("session_id", INT32, since=7),
        Field("responses", Array(Struct(
            Field("topic", STRING),
            Field("partitions", Array(Struct(
                Field("partition_index", INT32),
                Field("error_code", INT16),
                Field("high_watermark", INT64),
                Field("last_stable_offset", INT64, since=4, default=-1),
                Field("log_start_offset", INT64, since=5, default=-1),
                Field("diverging_epoch", Struct(
                    Field("epoch", INT32, default=-1),
                    Field("end_offset", INT64, default=-1),
                ), since=12, tag=0),
                Field("current_leader", _leader_id_and_epoch(), since=12, tag=1),
                Field("snapshot_id", Struct(
                    Field("end_offset", INT64, default=-1),
                    Field("epoch", INT32, default=-1),
                ), since=12, tag=2),
                Field("aborted_transactions", Array(Struct(
                    Field("producer_id", INT64),
                    Field("first_offset", INT64),
                )), since=4, nullable_since=4),
                Field("preferred_read_replica", INT32, since=11, default=-1),
                Field("records", RECORDS, nullable_since=0),
            ))),
        ))),
    ),
)  # fmt: skip

LIST_OFFSETS = Api(
    ApiKey.LIST_OFFSETS, "ListOffsets", advertised=(0, 7), accepted=(1, 7), flexible_since=6,
    request=Struct(
        Field("replica_id", INT32),
        Field("isolation_level", INT8, since=2),
        Field("topics", Array(Struct(
            Field("name", STRING),
            Field("partitions", Array(Struct(
                Field("partition_index", INT32),
                Field("current_leader_epoch", INT32, since=4, default=-1),
                Field("timestamp", INT64),
                Field("max_num_offsets", INT32, until=0, default=1),
            ))),
        ))),
    ),
    response=Struct(
        Field("throttle_time_ms", INT32, since=2),
        Field("topics", Array(Struct(
            Field("name", STRING),
            Field("partitions", Array(Struct(
                Field("partition_index", INT32),
                Field("error_code", INT16),
                Field("old_style_offsets", Array(INT64), until=0),
                Field("timestamp", INT64, since=1, default=-1),
                Field("offset", INT64, since=1, default=-1),
                Field("leader_epoch", INT32, since=4, default=-1),
            ))),
        ))),
    ),
)  # fmt: skip

INIT_PRODUCER_ID = Api(
    ApiKey.INIT_PRODUCER_ID, "InitProducerId", advertised=(0, 4), accepted=(0, 4),
    flexible_since=2,
    request=Struct(
        Field("transactional_id", STRING, nullable_since=0),
        Field("transaction_timeout_ms", INT32),
        Field("producer_id", INT64, since=3, default=-1),
        Field("producer_epoch", INT16, since=3, default=-1),
    ),
    response=Struct(
        Field("throttle_time_ms", INT32),
        Field("error_code", INT16),
        Field("producer_id", INT64, default=-1),
        Field("producer_epoch", INT16),
    ),
)  # fmt: skip
