"""Consumer groups: the coordinator, the embedded consumer, and committed offsets.

Many readers share a topic's partitions through a consumer group, and a restarted reader
resumes where it left off from the group's committed offsets. This is Kafka's classic
group protocol, in three layers:

- :class:`Group` is the coordinator state machine of one group, sans-I/O (an injected
  clock, no sleeps, no sockets); the assignors are plain functions; the consumer protocol
  codec turns subscriptions and assignments into Kafka's bytes and back.
- :class:`GroupCoordinator` hosts the groups of one store in this process: it drives the
  state machines on the event loop (one timer task, woken when deadlines move), keeps
  committed offsets in the store's compacted ``__consumer_offsets`` topic (a commit is
  acknowledged once durable), expires the offsets of groups that stay empty, and offers
  the admin operations (list, describe, reset offsets, delete). Its async ``join``,
  ``sync``, ``heartbeat``, ``leave`` and ``commit`` are what the broker's requests drive.
- :class:`Consumer` is the embedded client: it joins through the coordinator, heartbeats
  in the background, and yields :class:`ConsumerBatch` values (topic, partition, records)
  from its assigned partitions.

Beside the groups, the store's other coordinator: :class:`TransactionCoordinator` keeps
the transactional ids of a data directory and ends their transactions (markers to every
partition written, the group offsets sent with them), its state in the compacted
``__transaction_state`` topic. The broker drives it from Kafka's transaction requests;
an embedded exactly-once app calls it directly. It lives here, beside the group
coordinator whose offsets a transaction commits, so that both can reach it (Kafka keeps
both coordinators in one package too).

Delivery is at least once. A consumer's position in a partition is the offset after the
last record it yielded; it commits positions (``await consumer.commit()``, or every
``auto_commit_interval_ms`` with ``enable_auto_commit=True``), and whoever takes over a
partition starts at the group's committed offset. A rebalance waits while the application
holds a batch, so ``on_revoked`` (flush state, commit) never runs in the middle of one;
with ``cooperative-sticky`` (the default) only the partitions that move are revoked.
Batches rather than single records: a batch is one partition's records in offset order,
so what to commit after it is one number (``batch.next_offset``), and the records stay
the store's :class:`~headwater.store.Record` values.

Dependencies point one way (``groups`` imports ``store``, never the reverse), so the
consumer hangs off the coordinator, not off the store::

    async with open_store("headwater-data") as store:
        async with GroupCoordinator(store) as groups:
            async with groups.consumer("clicks-app", ["clicks"],
                                       auto_offset_reset="earliest") as consumer:
                async for batch in consumer:
                    handle(batch.topic, batch.partition, batch.records)
                    await consumer.commit()   # what was delivered so far

Run for real (the example the tests run):

    >>> import tempfile, anyio
    >>> from headwater.store import NewRecord, TopicConfig, open_store
    >>> async def main(path):
    ...     async with open_store(path) as store:
    ...         await store.create_topic("clicks", TopicConfig(partitions=2))
    ...         await store.append("clicks", [NewRecord(b"%d" % i, b"user-%d" % i)
    ...                                       for i in range(10)])
    ...         async with GroupCoordinator(store) as groups:
    ...             async with groups.consumer("app", ["clicks"],
    ...                                        auto_offset_reset="earliest") as consumer:
    ...                 seen = 0
    ...                 async for batch in consumer:
    ...                     seen += len(batch.records)
    ...                     await consumer.commit()
    ...                     if seen == 10:
    ...                         break
    ...             return groups.committed("app")
    >>> with tempfile.TemporaryDirectory() as path:
    ...     committed = anyio.run(main, path, backend="trio")
    >>> sum(offset.offset for offset in committed.values())
    10

The sans-I/O core, driven by hand (the coordinator and the broker do the same in a loop):

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
from ._consumer import Consumer as Consumer
from ._consumer import ConsumerBatch as ConsumerBatch
from ._consumer_config import ConsumerConfig as ConsumerConfig
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
from ._errors import GroupSubscribedToTopicError as GroupSubscribedToTopicError
from ._errors import IllegalGenerationError as IllegalGenerationError
from ._errors import InconsistentGroupProtocolError as InconsistentGroupProtocolError
from ._errors import InvalidGroupConfigError as InvalidGroupConfigError
from ._errors import InvalidGroupIdError as InvalidGroupIdError
from ._errors import InvalidProtocolMetadataError as InvalidProtocolMetadataError
from ._errors import InvalidSessionTimeoutError as InvalidSessionTimeoutError
from ._errors import MemberIdRequiredError as MemberIdRequiredError
from ._errors import NotCoordinatorError as NotCoordinatorError
from ._errors import OffsetMetadataTooLargeError as OffsetMetadataTooLargeError
from ._errors import PartitionNotAssignedError as PartitionNotAssignedError
from ._errors import RebalanceInProgressError as RebalanceInProgressError
from ._errors import UnknownMemberError as UnknownMemberError
from ._host import GroupCoordinator as GroupCoordinator
from ._host import GroupStatistics as GroupStatistics
from ._membership import PartitionsCallback as PartitionsCallback
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
from ._offsets import OFFSETS_TOPIC as OFFSETS_TOPIC
from ._offsets import OffsetAndMetadata as OffsetAndMetadata
from ._producer_ids import ProducerIds as ProducerIds
from ._rebalance import GroupState as GroupState
from ._txn_codes import TxnCode as TxnCode
from ._txn_coordinator import TransactionCoordinator as TransactionCoordinator
from ._txn_coordinator import pending_offsets as pending_offsets
from ._txn_coordinator import read_transaction_states as read_transaction_states
from ._txn_state import TRANSACTION_STATE_TOPIC as TRANSACTION_STATE_TOPIC
from ._txn_state import PendingOffset as PendingOffset
from ._txn_state import TxnMetadata as TxnMetadata
from ._txn_state import TxnState as TxnState

__all__ = (
    "ASSIGNORS",
    "Assignment",
    "Assignor",
    "Completion",
    "Consumer",
    "ConsumerBatch",
    "ConsumerConfig",
    "CoordinatorLoadInProgressError",
    "CoordinatorNotAvailableError",
    "FencedInstanceIdError",
    "FencedMemberError",
    "Group",
    "GroupConfig",
    "GroupCoordinator",
    "GroupDescription",
    "GroupError",
    "GroupIdNotFoundError",
    "GroupMaxSizeReachedError",
    "GroupNotEmptyError",
    "GroupOverview",
    "GroupProtocol",
    "GroupState",
    "GroupStatistics",
    "GroupSubscribedToTopicError",
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
    "OFFSETS_TOPIC",
    "OffsetAndMetadata",
    "OffsetMetadataTooLargeError",
    "PartitionNotAssignedError",
    "PartitionsCallback",
    "Pending",
    "PendingOffset",
    "ProducerIds",
    "RebalanceInProgressError",
    "Subscription",
    "SyncRequest",
    "SyncResult",
    "TRANSACTION_STATE_TOPIC",
    "TopicPartition",
    "TransactionCoordinator",
    "TxnCode",
    "TxnMetadata",
    "TxnState",
    "UnknownMemberError",
    "assign_partitions",
    "cooperative_sticky_assign",
    "decode_assignment",
    "decode_subscription",
    "encode_assignment",
    "encode_subscription",
    "pending_offsets",
    "range_assign",
    "read_transaction_states",
    "round_robin_assign",
)
