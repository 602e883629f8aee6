"""What librdkafka's errors become: headwater's own exception types.

A :class:`confluent_kafka.KafkaError` carries a Kafka error code (or one of librdkafka's
local codes, below zero). Where headwater has an exception for the same condition it
is that one (an unknown topic is a :class:`TopicNotFoundError` whichever backend said
so), so the runtime and a user handle one set of types: group errors by the classes'
own ``code`` (the coordinator answers with the same codes), log errors by the table
below; anything else is a :class:`ClusterError` naming the cluster. Pure functions.
"""

from __future__ import annotations

from confluent_kafka import KafkaError

from headwater.groups import (
    CoordinatorLoadInProgressError,
    CoordinatorNotAvailableError,
    FencedInstanceIdError,
    GroupError,
    IllegalGenerationError,
    InvalidGroupIdError,
    NotCoordinatorError,
    OffsetMetadataTooLargeError,
    RebalanceInProgressError,
    UnknownMemberError,
)
from headwater.store import (
    HeadwaterError,
    InvalidConfigError,
    InvalidTopicError,
    OffsetOutOfRangeError,
    RecordTooLargeError,
    StoreError,
    TopicExistsError,
    TopicNotFoundError,
)

from .._errors import ClusterError

_GROUP_ERRORS: dict[int, type[GroupError]] = {
    cls.code: cls
    for cls in (
        OffsetMetadataTooLargeError,
        CoordinatorLoadInProgressError,
        CoordinatorNotAvailableError,
        NotCoordinatorError,
        InvalidGroupIdError,
        RebalanceInProgressError,
        IllegalGenerationError,
        UnknownMemberError,
        FencedInstanceIdError,
    )
}

_LOG_ERRORS: dict[int, type[StoreError]] = {
    KafkaError.OFFSET_OUT_OF_RANGE: OffsetOutOfRangeError,
    KafkaError._AUTO_OFFSET_RESET: OffsetOutOfRangeError,
    KafkaError.UNKNOWN_TOPIC_OR_PART: TopicNotFoundError,
    KafkaError._UNKNOWN_TOPIC: TopicNotFoundError,
    KafkaError._UNKNOWN_PARTITION: TopicNotFoundError,
    KafkaError.MSG_SIZE_TOO_LARGE: RecordTooLargeError,
    KafkaError.RECORD_LIST_TOO_LARGE: RecordTooLargeError,
    KafkaError.TOPIC_ALREADY_EXISTS: TopicExistsError,
    KafkaError.INVALID_CONFIG: InvalidConfigError,
    KafkaError.INVALID_PARTITIONS: InvalidConfigError,
    KafkaError.INVALID_REPLICATION_FACTOR: InvalidConfigError,
    KafkaError.POLICY_VIOLATION: InvalidConfigError,
    KafkaError.TOPIC_EXCEPTION: InvalidTopicError,
}

#: Codes that say "not yet" rather than "no": a topic just created that a broker does
#: not know of yet, a leader being elected, a coordinator loading.
RETRIABLE_CODES = frozenset(
    {
        KafkaError.UNKNOWN_TOPIC_OR_PART,
        KafkaError.LEADER_NOT_AVAILABLE,
        KafkaError.NOT_LEADER_FOR_PARTITION,
        KafkaError.REQUEST_TIMED_OUT,
        KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
        KafkaError.COORDINATOR_NOT_AVAILABLE,
        KafkaError.NOT_COORDINATOR,
        KafkaError._TIMED_OUT,
        KafkaError._TRANSPORT,
    }
)

#: Local codes that mean the cluster is not there (rather than refusing one request).
_UNREACHABLE = frozenset(
    {
        KafkaError._TRANSPORT,
        KafkaError._ALL_BROKERS_DOWN,
        KafkaError._TIMED_OUT,
        KafkaError._RESOLVE,
        KafkaError._MSG_TIMED_OUT,
    }
)


def describe(error: KafkaError) -> str:
    """Return Kafka's reason, as librdkafka words it, with the code's name."""
    return f"{error.str()} ({error.name()})"


def log_error(error: KafkaError, what: str, bootstrap: str) -> HeadwaterError:
    """Return the exception for ``error`` met while doing ``what`` to the log."""
    cls = _LOG_ERRORS.get(error.code())
    if cls is not None:
        return cls(f"{what}: {describe(error)}")
    return cluster_error(error, what, bootstrap)


def group_error(error: KafkaError, what: str, bootstrap: str) -> HeadwaterError:
    """Return the exception for ``error`` met while doing ``what`` in a consumer group.

    The cluster not answering is :class:`CoordinatorNotAvailableError`: a commit that
    could not be made is retried, as one the coordinator refused for now.
    """
    code = error.code()
    cls = _GROUP_ERRORS.get(code)
    if cls is not None:
        return cls(f"{what}: {describe(error)}")
    if code in _UNREACHABLE:
        return CoordinatorNotAvailableError(
            f"{what}: the cluster at {bootstrap} did not answer: {describe(error)}"
        )
    return log_error(error, what, bootstrap)


def cluster_error(error: KafkaError, what: str, bootstrap: str) -> ClusterError:
    """Return a :class:`ClusterError` for ``error`` met while doing ``what``."""
    if error.code() in _UNREACHABLE:
        return ClusterError(
            f"{what}: cannot reach the Kafka cluster at {bootstrap}: {describe(error)}"
        )
    return ClusterError(f"{what}: the Kafka cluster at {bootstrap} refused: {describe(error)}")
