"""The member's side of the consumer protocol: joining, heartbeats, rebalances, commits.

:class:`ConsumerMembership` is the half of :class:`~headwater.groups.Consumer` that is a
group member (see the consumer module for the theory of operation: its tasks, when it
rebalances, what it revokes); the consumer adds reading and the public API. The pure
helpers build the JoinGroup request a consumer sends (one protocol per assignor it
supports, each carrying a ConsumerProtocol subscription that names its topics and, for
cooperative rebalancing, the partitions it owns and the generation it got them in), run
the leader's assignment over the store's partition counts, and split a new assignment
into what is revoked and added.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import anyio
import anyio.lowlevel
from anyio.abc import TaskGroup

from headwater.store import Partition, Store

from ._assignors import assign_partitions
from ._consumer_config import ConsumerConfig
from ._consumer_protocol import (
    Subscription,
    TopicPartition,
    decode_assignment,
    decode_subscription,
    encode_subscription,
)
from ._errors import (
    FencedMemberError,
    GroupError,
    IllegalGenerationError,
    MemberIdRequiredError,
    RebalanceInProgressError,
    UnknownMemberError,
)
from ._messages import GroupProtocol, JoinedMember, JoinRequest, JoinResult, SyncRequest
from ._offsets import OffsetAndMetadata

if TYPE_CHECKING:
    from ._host import GroupCoordinator

logger = logging.getLogger("headwater.groups")

PROTOCOL_TYPE = "consumer"


def join_request(
    config: ConsumerConfig,
    topics: Iterable[str],
    *,
    member_id: str,
    owned: Collection[TopicPartition],
    generation_id: int,
) -> JoinRequest:
    """Build the JoinGroup request of a consumer that owns ``owned`` since ``generation_id``."""
    subscription = encode_subscription(
        Subscription(
            topics=tuple(topics),
            owned_partitions=tuple(sorted(owned)),
            generation_id=generation_id,
        )
    )
    return JoinRequest(
        client_id=config.client_id,
        session_timeout_ms=config.session_timeout_ms,
        rebalance_timeout_ms=config.rebalance_timeout_ms,
        protocol_type=PROTOCOL_TYPE,
        protocols=tuple(GroupProtocol(name, subscription) for name in config.strategies),
        member_id=member_id,
        group_instance_id=config.group_instance_id,
    )


def leader_assignments(
    store: Store, protocol_name: str, members: Iterable[JoinedMember]
) -> dict[str, bytes]:
    """Run the selected assignor over every member's subscription and the store's topics.

    Topics the store does not have are left out (nobody is assigned their partitions).

    :raises InvalidProtocolMetadataError: if a member's subscription does not decode.
    :raises InconsistentGroupProtocolError: if ``protocol_name`` names no known assignor.
    """
    members = list(members)
    counts = partition_counts(store, subscribed_topics(members))
    return assign_partitions(protocol_name, members, counts)


def subscribed_topics(members: Iterable[JoinedMember]) -> set[str]:
    """Return the topics the members' subscriptions name.

    :raises InvalidProtocolMetadataError: if a member's subscription does not decode.
    """
    topics: set[str] = set()
    for member in members:
        topics.update(decode_subscription(member.metadata).topics)
    return topics


def partition_counts(store: Store, topics: Iterable[str]) -> dict[str, int]:
    """Return the partition count of each of ``topics`` that the store has."""
    return {t: len(store.partitions(t)) for t in sorted(topics) if store.has_topic(t)}


@dataclass(frozen=True, slots=True)
class AssignmentChange:
    """How a member's partitions change with a new assignment."""

    revoked: frozenset[TopicPartition]
    added: frozenset[TopicPartition]


def assignment_change(
    owned: Collection[TopicPartition], assignment: bytes, topics: Collection[str]
) -> AssignmentChange:
    """Compare ``owned`` with the assignment bytes a SyncGroup returned.

    Partitions of topics the member did not subscribe to are ignored (a leader with other
    ideas cannot make it read them).

    :raises InvalidProtocolMetadataError: if the assignment does not decode.
    """
    new = {tp for tp in decode_assignment(assignment).partitions if tp.topic in topics}
    current = set(owned)
    return AssignmentChange(frozenset(current - new), frozenset(new - current))


class PartitionsCallback(Protocol):
    """A rebalance callback: gets the partitions concerned, sorted; may be ``async``."""

    def __call__(self, partitions: list[TopicPartition], /) -> Awaitable[None] | None: ...


class ConsumerMembership:
    """The membership half of :class:`~headwater.groups.Consumer`: its state, joining,
    heartbeats, rebalances and commits. The consumer adds reading and the public API.
    """

    def __init__(
        self,
        coordinator: GroupCoordinator,
        group_id: str,
        topics: Sequence[str],
        config: ConsumerConfig,
        *,
        callbacks: tuple[
            PartitionsCallback | None, PartitionsCallback | None, PartitionsCallback | None
        ],
    ) -> None:
        self._coordinator = coordinator
        self._store = coordinator.store
        self.group_id = group_id
        self._topics = tuple(dict.fromkeys(topics))
        self._config = config
        self._on_assigned, self._on_revoked, self._on_lost = callbacks
        self._member_id = ""
        self._generation_id = -1
        self._assignment: dict[TopicPartition, Partition] = {}
        self._positions: dict[TopicPartition, int] = {}
        self._committed: dict[TopicPartition, int] = {}  # what this member last committed
        self._paused: set[TopicPartition] = set()
        self._next_index = 0  # round-robin over the assignment
        self._needs_rejoin = True
        #: As the leader: the group's topics and their partition counts when it last
        #: assigned them; a count that changes (a topic grew, or was created) rejoins.
        self._assigned_over: tuple[set[str], dict[str, int]] | None = None
        self._in_join = False  # between JoinGroup and the SyncGroup answer: no heartbeats
        self._fenced: FencedMemberError | None = None
        self._holding = False
        self._closed = False
        self._entered = False
        self._failure: BaseException | None = None
        self._failure_raised = False
        self._lock = anyio.Lock()
        self._changed = anyio.Event()
        self._next_auto_commit = 0.0
        self._task_group: TaskGroup | None = None
        self._heartbeat_scope = anyio.CancelScope()
        self._rebalancer_scope = anyio.CancelScope()

    def _reset_position(self, partition: Partition) -> int:
        if self._config.auto_offset_reset == "earliest":
            return partition.log_start_offset
        return partition.high_watermark

    def _start_position(self, partition: Partition, committed: OffsetAndMetadata | None) -> int:
        if committed is not None and (
            partition.log_start_offset <= committed.offset <= partition.log_end_offset
        ):
            return committed.offset
        return self._reset_position(partition)

    # -- committing (the member's side)

    async def _commit(self, offsets: Mapping[TopicPartition, int | OffsetAndMetadata]) -> None:
        if not offsets:
            return
        if not self._member_id or self._generation_id < 0:
            raise RebalanceInProgressError(
                f"this consumer is (re)joining group {self.group_id!r}; nothing can be committed"
            )
        await self._coordinator.commit(
            self.group_id,
            offsets,
            member_id=self._member_id,
            generation_id=self._generation_id,
            group_instance_id=self._config.group_instance_id,
        )
        for tp, value in offsets.items():
            if tp in self._assignment:
                self._committed[tp] = value if isinstance(value, int) else value.offset

    async def _auto_commit(self, partitions: Collection[TopicPartition]) -> None:
        self._next_auto_commit = anyio.current_time() + self._auto_commit_interval_s
        changed = {
            tp: self._positions[tp]
            for tp in partitions
            if tp in self._positions and self._committed.get(tp) != self._positions[tp]
        }
        try:
            await self._commit(changed)
        except (RebalanceInProgressError, FencedMemberError) as exc:
            logger.warning("group %r: auto-commit failed: %s", self.group_id, exc)

    @property
    def _auto_commit_interval_s(self) -> float:
        return self._config.auto_commit_interval_ms / 1000

    # -- membership ------------------------------------------------------------------

    async def _heartbeats(self) -> None:
        interval = self._config.heartbeat_interval_ms / 1000
        with self._heartbeat_scope:
            try:
                while True:
                    await anyio.sleep(interval)
                    await self._heartbeat()
            except Exception as exc:  # fatal: fenced instance, coordinator gone
                await self._fail(exc)

    async def _heartbeat(self) -> None:
        member_id, generation_id = self._member_id, self._generation_id
        if self._in_join or self._fenced is not None or not member_id:
            return
        if self._assigned_over is not None:
            topics, counts = self._assigned_over
            if partition_counts(self._store, topics) != counts:
                # As a Kafka leader does when metadata shows new partitions: rebalance
                # so that they are assigned.
                logger.info(
                    "group %r: the partitions of its topics changed; rejoining", self.group_id
                )
                self._assigned_over = None
                self._request_rejoin()
                return
        try:
            await self._coordinator.heartbeat(
                self.group_id, member_id, generation_id, self._config.group_instance_id
            )
        except RebalanceInProgressError:
            self._request_rejoin()
        except (UnknownMemberError, IllegalGenerationError) as exc:
            logger.info("group %r: %s; rejoining", self.group_id, exc)
            self._fenced = exc
            self._request_rejoin()

    async def _rebalancer(self) -> None:
        with self._rebalancer_scope:
            try:
                while True:
                    changed = self._changed
                    if self._needs_rejoin and not self._holding and not self._closed:
                        async with self._lock:
                            if not self._holding:
                                await self._ensure_membership()
                        continue
                    await changed.wait()
            except Exception as exc:  # a callback failed, or the coordinator is gone
                await self._fail(exc)

    def _request_rejoin(self) -> None:
        self._needs_rejoin = True
        self._pulse()

    async def _ensure_membership(self) -> None:
        """Rejoin until this member has its assignment for the current generation.

        Called with the lock held, while the application holds no batch.
        """
        while self._needs_rejoin and not self._closed:
            await self._rejoin()

    async def _rejoin(self) -> None:
        try:
            if self._fenced is not None:
                fenced, self._fenced = self._fenced, None
                try:
                    if self._assignment:
                        await self._give_up(list(self._assignment), lost=True)
                finally:
                    if isinstance(fenced, UnknownMemberError):
                        self._member_id = ""
                    self._generation_id = -1
            elif not self._config.cooperative and self._assignment:
                await self._give_up(list(self._assignment), lost=False)
            self._in_join = True
            result = await self._join()
            if result is None:
                return
            self._assigned_over = None
            assignments = {}
            if result.is_leader:
                topics = subscribed_topics(result.members)
                # Noted before assigning: a change in between only rebalances once more.
                self._assigned_over = (topics, partition_counts(self._store, topics))
                assignments = leader_assignments(
                    self._store, result.protocol_name or "", result.members
                )
            request = SyncRequest(
                member_id=result.member_id,
                generation_id=result.generation_id,
                assignments=assignments,
                group_instance_id=self._config.group_instance_id,
                protocol_type=PROTOCOL_TYPE,
                protocol_name=result.protocol_name,
            )
            try:
                synced = await self._coordinator.sync(self.group_id, request)
            except RebalanceInProgressError:
                return
            except (UnknownMemberError, IllegalGenerationError) as exc:
                self._fenced = exc
                return
            finally:
                self._in_join = False
            change = assignment_change(self._assignment, synced.assignment, self._topics)
            # Cooperative: what was revoked goes to its new owner in the next generation.
            self._needs_rejoin = bool(change.revoked)
            if change.revoked:
                await self._give_up(sorted(change.revoked), lost=False)
            if change.added:
                await self._take(sorted(change.added))
        finally:
            self._in_join = False
            self._pulse()

    async def _join(self) -> JoinResult | None:
        while True:
            request = join_request(
                self._config,
                self._topics,
                member_id=self._member_id,
                owned=self._assignment,
                generation_id=self._generation_id,
            )
            try:
                result = await self._coordinator.join(self.group_id, request)
            except MemberIdRequiredError as exc:
                self._member_id = exc.member_id
                continue
            except UnknownMemberError as exc:
                self._fenced = exc
                return None
            except RebalanceInProgressError:
                await anyio.lowlevel.checkpoint()
                continue
            self._member_id, self._generation_id = result.member_id, result.generation_id
            return result

    async def _give_up(self, partitions: list[TopicPartition], *, lost: bool) -> None:
        try:
            if not lost and self._config.enable_auto_commit:
                await self._auto_commit(partitions)
            callback = self._on_lost if lost and self._on_lost is not None else self._on_revoked
            await _invoke(callback, partitions)
        finally:
            for tp in partitions:
                self._assignment.pop(tp, None)
                self._positions.pop(tp, None)
                self._committed.pop(tp, None)
                self._paused.discard(tp)
            self._pulse()

    async def _take(self, partitions: list[TopicPartition]) -> None:
        committed = self._coordinator.committed(self.group_id)
        taken = []
        for tp in partitions:
            if not self._store.has_topic(tp.topic):
                continue
            partition = self._store.partition(tp.topic, tp.partition)
            self._assignment[tp] = partition
            offset = committed.get(tp)
            self._positions[tp] = self._start_position(partition, offset)
            if offset is not None:
                self._committed[tp] = offset.offset
            taken.append(tp)
        await _invoke(self._on_assigned, taken)

    # -- signalling ------------------------------------------------------------------

    def _pulse(self) -> None:
        """Wake every task waiting for a change (assignment, positions, pauses, closing)."""
        self._changed.set()
        self._changed = anyio.Event()

    def _raise_failure(self, *, unless_raised: bool = False) -> None:
        """Raise what stopped the background tasks, if anything did."""
        if self._failure is None or (unless_raised and self._failure_raised):
            return
        self._failure_raised = True
        raise self._failure

    async def _fail(self, exc: BaseException) -> None:
        """Stop: keep ``exc`` for the application, stop heartbeating and leave the group,
        so that the others need not wait for this member's session to expire."""
        logger.warning("group %r: consumer stopped: %s", self.group_id, exc)
        if self._failure is None:
            self._failure = exc
        self._heartbeat_scope.cancel()
        self._rebalancer_scope.cancel()
        self._pulse()
        await self._leave()

    async def _leave(self) -> None:
        member_id, self._member_id = self._member_id, ""
        if member_id and self._config.group_instance_id is None:
            with anyio.CancelScope(shield=True):
                try:
                    await self._coordinator.leave(self.group_id, member_id)
                except GroupError as exc:  # expired, fenced, or the coordinator is gone
                    logger.info("group %r: leaving: %s", self.group_id, exc)


async def _invoke(callback: PartitionsCallback | None, partitions: list[TopicPartition]) -> None:
    if callback is None or not partitions:
        return
    result = callback(list(partitions))
    if inspect.isawaitable(result):
        await result
