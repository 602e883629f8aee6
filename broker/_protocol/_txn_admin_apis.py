"""Layouts of the APIs Kafka's transaction tooling sends (KIP-664).

ListTransactions and DescribeTransactions go to the transaction coordinator,
DescribeProducers and WriteTxnMarkers to a partition's leader; every one is flexible
from its first version. ListTransactions stops at version 1 (its duration filter):
version 2 adds a transactional-id regular expression, in Java's regex dialect, which
the broker does not offer to evaluate, so a client that wants it is told the broker is
too old rather than given a different dialect's matches. WriteTxnMarkers is declared
from version 0 (the layout Kafka 3 brokers still accept, not flexible) to 1; its
version 2 adds a transaction version that belongs to Kafka's second round of
transaction hardening (KIP-890), which the coordinator does not implement.
"""

from __future__ import annotations

from ._codes import ApiKey
from ._schema import BOOL, INT16, INT32, INT64, STRING, Api, Array, Field, Struct, nullable_string

LIST_TRANSACTIONS = Api(
    ApiKey.LIST_TRANSACTIONS, "ListTransactions", advertised=(0, 1), accepted=(0, 1),
    flexible_since=0,
    request=Struct(
        Field("state_filters", Array(STRING)),
        Field("producer_id_filters", Array(INT64)),
        Field("duration_filter", INT64, since=1, default=-1),
    ),
    response=Struct(
        Field("throttle_time_ms", INT32),
        Field("error_code", INT16),
        Field("unknown_state_filters", Array(STRING)),
        Field("transaction_states", Array(Struct(
            Field("transactional_id", STRING),
            Field("producer_id", INT64),
            Field("transaction_state", STRING),
        ))),
    ),
)  # fmt: skip

DESCRIBE_TRANSACTIONS = Api(
    ApiKey.DESCRIBE_TRANSACTIONS, "DescribeTransactions", advertised=(0, 0), accepted=(0, 0),
    flexible_since=0,
    request=Struct(
        Field("transactional_ids", Array(STRING)),
    ),
    response=Struct(
        Field("throttle_time_ms", INT32),
        Field("transaction_states", Array(Struct(
            Field("error_code", INT16),
            Field("transactional_id", STRING),
            Field("transaction_state", STRING),
            Field("transaction_timeout_ms", INT32),
            Field("transaction_start_time_ms", INT64),
            Field("producer_id", INT64),
            Field("producer_epoch", INT16),
            Field("topics", Array(Struct(
                Field("topic", STRING),
                Field("partitions", Array(INT32)),
            ))),
        ))),
    ),
)  # fmt: skip

DESCRIBE_PRODUCERS = Api(
    ApiKey.DESCRIBE_PRODUCERS, "DescribeProducers", advertised=(0, 0), accepted=(0, 0),
    flexible_since=0,
    request=Struct(
        Field("topics", Array(Struct(
            Field("name", STRING),
            Field("partition_indexes", Array(INT32)),
        ))),
    ),
    response=Struct(
        Field("throttle_time_ms", INT32),
        Field("topics", Array(Struct(
            Field("name", STRING),
            Field("partitions", Array(Struct(
                Field("partition_index", INT32),
                Field("error_code", INT16),
                nullable_string("error_message"),
                Field("active_producers", Array(Struct(
                    Field("producer_id", INT64),
                    Field("producer_epoch", INT32),
                    Field("last_sequence", INT32, default=-1),
                    Field("last_timestamp", INT64, default=-1),
                    Field("coordinator_epoch", INT32),
                    Field("current_txn_start_offset", INT64, default=-1),
                ))),
            ))),
        ))),
    ),
)  # fmt: skip

WRITE_TXN_MARKERS = Api(
    ApiKey.WRITE_TXN_MARKERS, "WriteTxnMarkers", advertised=(0, 1), accepted=(0, 1),
    flexible_since=1,
    request=Struct(
        Field("markers", Array(Struct(
            Field("producer_id", INT64),
            Field("producer_epoch", INT16),
            Field("transaction_result", BOOL),
            Field("topics", Array(Struct(
                Field("name", STRING),
                Field("partition_indexes", Array(INT32)),
            ))),
            Field("coordinator_epoch", INT32),
        ))),
    ),
    response=Struct(
        Field("markers", Array(Struct(
            Field("producer_id", INT64),
            Field("topics", Array(Struct(
                Field("name", STRING),
                Field("partitions", Array(Struct(
                    Field("partition_index", INT32),
                    Field("error_code", INT16),
                ))),
            ))),
        ))),
    ),
)  # fmt: skip
