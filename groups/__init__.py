"""Consumer groups: the group coordinator state machine, assignors and the consumer protocol.

Everything here is sans-I/O: :class:`Group` is Kafka's classic group protocol driven by an
injected clock (see its module's theory of operation for how to drive it); the assignors
are plain functions; the consumer protocol codec turns subscriptions and assignments into
Kafka's bytes and back. The embedded consumer and the broker drive these objects.

A one-member group, driven by hand (a broker or consumer does the same in a loop)::

    >>> from headwater.groups import (
    ...     Group, GroupConfig, GroupProtocol, JoinRequest, Subscription, SyncRequest,
    ...     assign_partitions, decode_assignment, encode_subscription)
    >>> group = Group("clicks-app", clock=lambda: 0,
    ...               config=GroupConfig(initial_rebalance_delay_ms=0))
    >>> subscription = encode_subscription(Subscription(topics=("clicks",)))
    >>> pending = group.join(JoinRequest(
    ...     client_id="c1", session_timeout_ms=10_000, protocol_type="consumer",
    ...     protocols=(GroupProtocol("range", subscription),), require_known_member_id=False))
    >>> [joined] = group.poll()  # the rebalance completed within the call
    >>> joined.pending is pending, joined.outcome.is_leader
    (True, True)
    >>> leader = joined.outcome
    >>> assignments = assign_partitions(leader.protocol_name, leader.members, {"clicks": 2})
    >>> pending = group.sync(SyncRequest(
    ...     member_id=leader.member_id, generation_id=leader.generation_id,
    ...     assignments=assignments))
    >>> [synced] = group.poll()
    >>> decode_assignment(synced.outcome.assignment).partitions
    (TopicPartition(topic='clicks', partition=0), TopicPartition(topic='clicks', partition=1))
    >>> group.state
    <GroupState.STABLE: 'Stable'>
"""

from ._assignors import ASSIGNORS as ASSIGNORS
from ._assignors import Assignor as Assignor
from ._assignors import assign_partitions as assign_partitions
from ._assignors import cooperative_sticky_assign as cooperative_sticky_assign
from ._assignors import range_assign as range_assign
from ._assignors import round_robin_assign as round_robin_assign
from ._config import GroupConfig as GroupConfig
from ._consumer_protocol import Assignment as Assignment
from ._consumer_protocol import Subscription as Subscription
from ._consumer_protocol import TopicPartition as TopicPartition
from ._consumer_protocol import decode_assignment as decode_assignment
from ._consumer_protocol import decode_subscription as decode_subscription
from ._consumer_protocol import encode_assignment as encode_assignment
from ._consumer_protocol import encode_subscription as encode_subscription
from ._coordinator import Group as Group
from ._errors import CoordinatorLoadInProgressError as CoordinatorLoadInProgressError
from ._errors import CoordinatorNotAvailableError as CoordinatorNotAvailableError
from ._errors import FencedInstanceIdError as FencedInstanceIdError
from ._errors import FencedMemberError as FencedMemberError
from ._errors import GroupError as GroupError
from ._errors import GroupIdNotFoundError as GroupIdNotFoundError
from ._errors import GroupMaxSizeReachedError as GroupMaxSizeReachedError
from ._errors import GroupNotEmptyError as GroupNotEmptyError
from ._errors import IllegalGenerationError as IllegalGenerationError
from ._errors import InconsistentGroupProtocolError as InconsistentGroupProtocolError
from ._errors import InvalidGroupConfigError as InvalidGroupConfigError
from ._errors import InvalidGroupIdError as InvalidGroupIdError
from ._errors import InvalidProtocolMetadataError as InvalidProtocolMetadataError
from ._errors import InvalidSessionTimeoutError as InvalidSessionTimeoutError
from ._errors import MemberIdRequiredError as MemberIdRequiredError
from ._errors import NotCoordinatorError as NotCoordinatorError
from ._errors import RebalanceInProgressError as RebalanceInProgressError
from ._errors import UnknownMemberError as UnknownMemberError
from ._messages import Completion as Completion
from ._messages import GroupDescription as GroupDescription
from ._messages import GroupOverview as GroupOverview
from ._messages import GroupProtocol as GroupProtocol
from ._messages import JoinedMember as JoinedMember
from ._messages import JoinRequest as JoinRequest
from ._messages import JoinResult as JoinResult
from ._messages import MemberDescription as MemberDescription
from ._messages import Pending as Pending
from ._messages import SyncRequest as SyncRequest
from ._messages import SyncResult as SyncResult
from ._rebalance import GroupState as GroupState

__all__ = (
    "ASSIGNORS",
    "Assignment",
    "Assignor",
    "Completion",
    "CoordinatorLoadInProgressError",
    "CoordinatorNotAvailableError",
    "FencedInstanceIdError",
    "FencedMemberError",
    "Group",
    "GroupConfig",
    "GroupDescription",
    "GroupError",
    "GroupIdNotFoundError",
    "GroupMaxSizeReachedError",
    "GroupNotEmptyError",
    "GroupOverview",
    "GroupProtocol",
    "GroupState",
    "IllegalGenerationError",
    "InconsistentGroupProtocolError",
    "InvalidGroupConfigError",
    "InvalidGroupIdError",
    "InvalidProtocolMetadataError",
    "InvalidSessionTimeoutError",
    "JoinRequest",
    "JoinResult",
    "JoinedMember",
    "MemberDescription",
    "MemberIdRequiredError",
    "NotCoordinatorError",
    "Pending",
    "RebalanceInProgressError",
    "Subscription",
    "SyncRequest",
    "SyncResult",
    "TopicPartition",
    "UnknownMemberError",
    "assign_partitions",
    "cooperative_sticky_assign",
    "decode_assignment",
    "decode_subscription",
    "encode_assignment",
    "encode_subscription",
    "range_assign",
    "round_robin_assign",
)
