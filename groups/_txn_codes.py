"""The Kafka error codes a transaction coordinator answers with. Pure.

The transaction coordinator (``_txn_coordinator.py``) answers each request with a code,
as Kafka's does, so that the broker passes it to a client unchanged and the embedded
runtime tells a fenced producer from a transaction to retry by the same numbers. The
names and values are the Java client's (``org.apache.kafka.common.protocol.Errors``),
which the broker's ``KafkaErrorCode`` also lists; a :class:`GroupError`'s ``code`` (a
member that is not current) is answered as it is.
"""

from __future__ import annotations

from enum import IntEnum


class TxnCode(IntEnum):
    """An error code a transaction coordinator answers with (module docstring)."""

    NONE = 0
    UNKNOWN_TOPIC_OR_PARTITION = 3
    COORDINATOR_NOT_AVAILABLE = 15
    INVALID_GROUP_ID = 24
    INVALID_PRODUCER_EPOCH = 47
    INVALID_TXN_STATE = 48
    INVALID_PRODUCER_ID_MAPPING = 49
    INVALID_TRANSACTION_TIMEOUT = 50
    CONCURRENT_TRANSACTIONS = 51
    OPERATION_NOT_ATTEMPTED = 55
    PRODUCER_FENCED = 90
