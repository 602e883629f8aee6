"""Layouts of the transaction APIs a transactional producer sends its coordinator.

AddPartitionsToTxn, AddOffsetsToTxn, EndTxn and TxnOffsetCommit, each up to version 3
(the flexible versions from 3 on), with Kafka's field names (AddPartitionsToTxn's
``v3_and_below_*``: its version 4 on batches transactions, for brokers). The later
versions belong to Kafka's second round of transaction hardening (KIP-890 part 2:
partitions added implicitly, an epoch bump per transaction), which the coordinator does
not implement, so they are not advertised and clients fall back to these.
InitProducerId (with a transactional id) and FindCoordinator (key type 1) are declared
with the log and group APIs.
"""

from __future__ import annotations

from ._codes import ApiKey
from ._schema import BOOL, INT16, INT32, INT64, STRING, Api, Array, Field, Struct, nullable_string

ADD_PARTITIONS_TO_TXN = Api(
    ApiKey.ADD_PARTITIONS_TO_TXN, "AddPartitionsToTxn", advertised=(0, 3), accepted=(0, 3),
    flexible_since=3,
    request=Struct(
        Field("v3_and_below_transactional_id", STRING),
        Field("v3_and_below_producer_id", INT64),
        Field("v3_and_below_producer_epoch", INT16),
        Field("v3_and_below_topics", Array(Struct(
            Field("name", STRING),
            Field("partitions", Array(INT32)),
        ))),
    ),
    response=Struct(
        Field("throttle_time_ms", INT32),
        Field("results_by_topic_v3_and_below", Array(Struct(
            Field("name", STRING),
            Field("results_by_partition", Array(Struct(
                Field("partition_index", INT32),
                Field("partition_error_code", INT16),
            ))),
        ))),
    ),
)  # fmt: skip

ADD_OFFSETS_TO_TXN = Api(
    ApiKey.ADD_OFFSETS_TO_TXN, "AddOffsetsToTxn", advertised=(0, 3), accepted=(0, 3),
    flexible_since=3,
    request=Struct(
        Field("transactional_id", STRING),
        Field("producer_id", INT64),
        Field("producer_epoch", INT16),
        Field("group_id", STRING),
    ),
    response=Struct(
        Field("throttle_time_ms", INT32),
        Field("error_code", INT16),
    ),
)  # fmt: skip

END_TXN = Api(
    ApiKey.END_TXN, "EndTxn", advertised=(0, 3), accepted=(0, 3), flexible_since=3,
    request=Struct(
        Field("transactional_id", STRING),
        Field("producer_id", INT64),
        Field("producer_epoch", INT16),
        Field("committed", BOOL),
    ),
    response=Struct(
        Field("throttle_time_ms", INT32),
        Field("error_code", INT16),
    ),
)  # fmt: skip

TXN_OFFSET_COMMIT = Api(
    ApiKey.TXN_OFFSET_COMMIT, "TxnOffsetCommit", advertised=(0, 3), accepted=(0, 3),
    flexible_since=3,
    request=Struct(
        Field("transactional_id", STRING),
        Field("group_id", STRING),
        Field("producer_id", INT64),
        Field("producer_epoch", INT16),
        Field("generation_id", INT32, since=3, default=-1),
        Field("member_id", STRING, since=3, default=""),
        nullable_string("group_instance_id", since=3),
        Field("topics", Array(Struct(
            Field("name", STRING),
            Field("partitions", Array(Struct(
                Field("partition_index", INT32),
                Field("committed_offset", INT64),
                Field("committed_leader_epoch", INT32, since=2, default=-1),
                Field("committed_metadata", STRING, nullable_since=0),
            ))),
        ))),
    ),
    response=Struct(
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
