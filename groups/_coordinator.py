"""The group coordinator: Kafka's classic group protocol as a sans-I/O state machine.

Theory of operation
-------------------
One :class:`Group` per group id. It never sleeps, reads a socket or spawns a task: time
comes from the injected ``clock`` (monotonic milliseconds), requests come in as method
calls, and answers go out as return values, raised errors, or :class:`Completion` values
collected with :meth:`Group.poll`.

The states (Empty, PreparingRebalance, CompletingRebalance, Stable, Dead), generations,
timers and waiting requests are the rebalance machine's (``_rebalance.py``); this module
adds Kafka's request semantics on top: who may join and how (MEMBER_ID_REQUIRED for a
first dynamic join, protocol type and protocol checks, the group size), when a rejoin is
answered at once and when it forces a rebalance, static membership, SyncGroup,
Heartbeat, LeaveGroup, offset-commit validation, DescribeGroups and ListGroups.

Static members (``group_instance_id``) survive a rebalance they miss. A static member
that restarts joins without a member id and takes over the instance: the old member id is
fenced (FENCED_INSTANCE_ID, also to its waiting requests), and in a Stable group whose
selected protocol stays the same it gets its previous assignment back without a
rebalance.

Driving it (the sans-I/O contract)
----------------------------------
``join`` and ``sync`` return a result at once when Kafka would answer at once, or a
:class:`Pending` when the request must wait for the rebalance. Any call (and the clock
passing deadlines) can complete waiting requests, so after every call the driver drains
:meth:`Group.poll` and delivers each :class:`Completion` to whoever waits on its
``pending``; it also calls ``poll`` when :meth:`Group.next_deadline_ms` passes, so timeouts
fire even when no request arrives. Every call first runs the timers that are due by the
clock, so the group's answers never depend on how promptly the driver polled. A request
that is replaced (the same member joins again while its join waits) is answered with
REBALANCE_IN_PROGRESS; no Pending is ever left unanswered. Errors the caller gets at once
are raised as :class:`~headwater.groups.GroupError`; errors for a waiting request are the
``outcome`` of its Completion. A Group is not thread-safe: one task owns it.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable

from ._config import GroupConfig
from ._consumer_protocol import decode_subscription
from ._errors import (
    FencedInstanceIdError,
    GroupIdNotFoundError,
    GroupMaxSizeReachedError,
    GroupNotEmptyError,
    IllegalGenerationError,
    InconsistentGroupProtocolError,
    InvalidGroupIdError,
    InvalidProtocolMetadataError,
    InvalidSessionTimeoutError,
    MemberIdRequiredError,
    RebalanceInProgressError,
    UnknownMemberError,
)
from ._member import Member
from ._messages import (
    GroupDescription,
    GroupOverview,
    JoinRequest,
    JoinResult,
    MemberDescription,
    Pending,
    SyncRequest,
    SyncResult,
)
from ._rebalance import GroupState, RebalanceMachine


def _random_member_id(client_id: str) -> str:
    return f"{client_id}-{uuid.uuid4()}"


class Group(RebalanceMachine):
    """One consumer group's coordinator state machine (see the module docstring).

    :param group_id: the group's id.
    :param clock: returns monotonic time in milliseconds; read on every call.
    :param config: coordinator settings; by default ``GroupConfig()``.
    :param new_member_id: makes a member id from a client id; by default
        ``f"{client_id}-{uuid4()}"``, as Kafka does. Tests inject a deterministic one.

    Not thread-safe: one task calls it and drains :meth:`poll` after each call.
    """

    def __init__(
        self,
        group_id: str,
        *,
        clock: Callable[[], int],
        config: GroupConfig | None = None,
        new_member_id: Callable[[str], str] | None = None,
    ) -> None:
        super().__init__(group_id, clock, config if config is not None else GroupConfig())
        self._new_member_id = new_member_id if new_member_id is not None else _random_member_id

    # -- read-only views -------------------------------------------------------------

    @property
    def group_id(self) -> str:
        return self._group_id

    @property
    def state(self) -> GroupState:
        return self._state

    @property
    def state_since_ms(self) -> int:
        """Clock time of the last state change (how long an Empty group has been empty)."""
        return self._state_since_ms

    @property
    def generation_id(self) -> int:
        return self._generation_id

    @property
    def protocol_type(self) -> str | None:
        return self._roster.protocol_type

    @property
    def protocol_name(self) -> str | None:
        """The protocol selected for the current generation (None while Empty)."""
        return self._protocol_name

    @property
    def leader_id(self) -> str | None:
        return self._roster.leader_id

    @property
    def member_ids(self) -> tuple[str, ...]:
        """The current members, in join order."""
        return tuple(self._roster.members)

    def describe(self) -> GroupDescription:
        """Describe the group for DescribeGroups: metadata and assignments only when Stable."""
        self._run_timers()
        stable = self._state is GroupState.STABLE
        members = () if self._state is GroupState.DEAD else self._roster.members.values()
        return GroupDescription(
            group_id=self._group_id,
            state=str(self._state),
            protocol_type=self._roster.protocol_type or "",
            protocol_name=(self._protocol_name or "") if stable else "",
            generation_id=self._generation_id,
            leader_id=self._roster.leader_id,
            members=tuple(
                MemberDescription(
                    member_id=m.member_id,
                    group_instance_id=m.group_instance_id,
                    client_id=m.request.client_id,
                    client_host=m.request.client_host,
                    metadata=m.metadata_for(self._protocol_name) if stable else b"",
                    assignment=m.assignment if stable else b"",
                )
                for m in members
            ),
        )

    def subscribed_topics(self) -> frozenset[str] | None:
        """Return the topics the current members subscribe to; ``None`` if unknown.

        Read from the members' ConsumerProtocol subscriptions (of the selected protocol,
        or of every protocol they offered while none is selected). Unknown (``None``) for
        a group with members whose protocol type is not ``consumer``: their metadata
        means nothing here. Metadata that does not decode names no topic.
        """
        members = list(self._roster.members.values())
        if not members:
            return frozenset()
        if self._roster.protocol_type != "consumer":
            return None
        topics: set[str] = set()
        for member in members:
            chosen = member.protocols.get(self._protocol_name or "")
            for metadata in [chosen] if chosen is not None else member.protocols.values():
                try:
                    topics.update(decode_subscription(metadata).topics)
                except InvalidProtocolMetadataError:
                    continue
        return frozenset(topics)

    def overview(self) -> GroupOverview:
        """Summarise the group for ListGroups."""
        self._run_timers()
        return GroupOverview(
            group_id=self._group_id,
            protocol_type=self._roster.protocol_type or "",
            state=str(self._state),
        )

    # -- requests --------------------------------------------------------------------

    def join(self, request: JoinRequest) -> JoinResult | Pending:
        """Handle JoinGroup.

        Returns a :class:`JoinResult` when Kafka answers at once (a member rejoining with
        unchanged metadata, a static member taking back its place in a Stable group), else
        a :class:`Pending` answered through :meth:`poll` when the rebalance completes.

        :raises CoordinatorNotAvailableError: if the group is Dead.
        :raises InvalidGroupIdError: if the group id is empty.
        :raises InvalidSessionTimeoutError: if the session timeout is out of range.
        :raises InconsistentGroupProtocolError: on another protocol type or no common protocol.
        :raises GroupMaxSizeReachedError: if a new member would exceed ``max_size``.
        :raises MemberIdRequiredError: on a first join with ``require_known_member_id``.
        :raises UnknownMemberError: if ``member_id`` is not a member (or pending member).
        :raises FencedInstanceIdError: if the instance id belongs to another member id.
        """
        self._run_timers()
        try:
            return self._join(request)
        finally:
            self._run_timers()

    def sync(self, request: SyncRequest) -> SyncResult | Pending:
        """Handle SyncGroup.

        In a Stable group the member's assignment comes back at once. While the group
        completes a rebalance the request waits (a :class:`Pending`) until the leader's
        SyncGroup brings the assignment; the leader's own request waits in the same way
        and completes in the same call.

        :raises CoordinatorNotAvailableError: if the group is Dead.
        :raises UnknownMemberError: if the member is not in the group.
        :raises FencedInstanceIdError: if the instance id belongs to another member id.
        :raises IllegalGenerationError: if the generation is not the current one.
        :raises InconsistentGroupProtocolError: if a given protocol type or name differs.
        :raises RebalanceInProgressError: if the group is preparing a rebalance.
        """
        self._run_timers()
        try:
            return self._sync(request)
        finally:
            self._run_timers()

    def heartbeat(
        self, member_id: str, generation_id: int, group_instance_id: str | None = None
    ) -> None:
        """Handle Heartbeat: refresh the member's session.

        :raises CoordinatorNotAvailableError: if the group is Dead.
        :raises UnknownMemberError: if the member is not in the group.
        :raises FencedInstanceIdError: if the instance id belongs to another member id.
        :raises IllegalGenerationError: if the generation is not the current one.
        :raises RebalanceInProgressError: if a rebalance is being prepared (the session
            was still refreshed); the member should rejoin.
        """
        self._run_timers()
        self._check_alive()
        if self._state is GroupState.EMPTY:
            raise UnknownMemberError(f"group {self._group_id!r} has no members")
        member = self._roster.current(member_id, group_instance_id)
        self._check_generation(generation_id)
        member.heartbeat_ms = self._now
        if self._state is GroupState.PREPARING_REBALANCE:
            raise RebalanceInProgressError(f"group {self._group_id!r} is rebalancing; rejoin")

    def leave(self, member_id: str, group_instance_id: str | None = None) -> None:
        """Handle one member of a LeaveGroup request.

        An empty ``member_id`` with a ``group_instance_id`` removes that static member
        (the administrative removal LeaveGroup v3+ allows).

        :raises CoordinatorNotAvailableError: if the group is Dead.
        :raises UnknownMemberError: if no such member (or instance) is in the group.
        :raises FencedInstanceIdError: if the instance id belongs to another member id.
        """
        self._run_timers()
        try:
            self._check_alive()
            if not member_id:
                member = self._roster.static_member(group_instance_id)
                if member is None:
                    raise UnknownMemberError(f"no member has instance id {group_instance_id!r}")
                self._remove_and_rebalance(member, "left the group")
            elif self._roster.pending_members.pop(member_id, None) is None:
                member = self._roster.current(member_id, group_instance_id)
                self._remove_and_rebalance(member, "left the group")
        finally:
            self._run_timers()

    def validate_commit(
        self, member_id: str, generation_id: int, group_instance_id: str | None = None
    ) -> None:
        """Check that an OffsetCommit may be stored; a member's valid commit refreshes it.

        Generation -1 with no member id and no instance id is a plain commit (kcat, a
        consumer using ``assign()``), accepted only while the group is Empty.

        :raises CoordinatorNotAvailableError: if the group is Dead.
        :raises UnknownMemberError: for an unknown member, or a plain commit to a group
            that has members.
        :raises FencedInstanceIdError: if the instance id belongs to another member id.
        :raises IllegalGenerationError: for a stale generation.
        :raises RebalanceInProgressError: while the group completes a rebalance.
        """
        self._run_timers()
        self._check_alive()
        if generation_id < 0 and not member_id and group_instance_id is None:
            if self._state is not GroupState.EMPTY:
                raise UnknownMemberError(
                    f"group {self._group_id!r} has members; only they can commit"
                )
            return
        member = self._roster.current(member_id, group_instance_id)
        self._check_generation(generation_id)
        if self._state is GroupState.COMPLETING_REBALANCE:
            raise RebalanceInProgressError(f"group {self._group_id!r} is completing a rebalance")
        member.heartbeat_ms = self._now

    def delete(self) -> None:
        """Mark an Empty group Dead (DeleteGroups); its owner then forgets it.

        :raises GroupIdNotFoundError: if the group is already Dead.
        :raises GroupNotEmptyError: if the group has members or is rebalancing.
        """
        self._run_timers()
        if self._state is GroupState.DEAD:
            raise GroupIdNotFoundError(f"group {self._group_id!r} does not exist")
        if self._state is not GroupState.EMPTY:
            raise GroupNotEmptyError(f"group {self._group_id!r} is {self._state}")
        self._roster.pending_members.clear()
        self._transition(GroupState.DEAD)

    # -- JoinGroup -------------------------------------------------------------------

    def _join(self, request: JoinRequest) -> JoinResult | Pending:
        self._check_alive()
        if not self._group_id:
            raise InvalidGroupIdError("the group id is empty")
        low, high = self._config.min_session_timeout_ms, self._config.max_session_timeout_ms
        if not low <= request.session_timeout_ms <= high:
            raise InvalidSessionTimeoutError(
                f"session timeout {request.session_timeout_ms} ms is outside [{low}, {high}]"
            )
        if not request.member_id:
            return self._join_new(request)
        if request.member_id in self._roster.pending_members:
            if request.group_instance_id is not None:
                raise UnknownMemberError("a pending member id cannot be static")
            self._roster.check_protocols(request, replacing=None)
            self._check_room()
            return self._add_member(request.member_id, request)
        member = self._roster.current(request.member_id, request.group_instance_id)
        self._roster.check_protocols(request, replacing=member.member_id)
        return self._rejoin(member, request)

    def _join_new(self, request: JoinRequest) -> JoinResult | Pending:
        static = self._roster.static_member(request.group_instance_id)
        self._roster.check_protocols(
            request, replacing=None if static is None else static.member_id
        )
        if static is None:
            self._check_room()
        member_id = self._new_member_id(request.client_id)
        if static is not None:
            return self._replace_static(static, member_id, request)
        if request.group_instance_id is None and request.require_known_member_id:
            self._roster.pending_members[member_id] = self._now + request.session_timeout_ms
            raise MemberIdRequiredError(member_id)
        return self._add_member(member_id, request)

    def _add_member(self, member_id: str, request: JoinRequest) -> Pending:
        if self._initial_delay_left_ms is not None:
            self._new_member_added = True
        member = Member(member_id, request, self._now)
        self._roster.add(member)
        pending = self._wait_for_join(member)
        self._maybe_prepare_rebalance()
        return pending

    def _rejoin(self, member: Member, request: JoinRequest) -> JoinResult | Pending:
        unchanged = member.matches(request)
        if self._state is GroupState.COMPLETING_REBALANCE and unchanged:
            # It lost the first answer: repeat this generation's.
            return self._join_result(member)
        if (
            self._state is GroupState.STABLE
            and unchanged
            and member.member_id != self._roster.leader_id
        ):
            return self._join_result(member)
        # The leader rejoining a Stable group forces a rebalance (new topic metadata).
        self._roster.update(member, request)
        pending = self._wait_for_join(member)
        self._maybe_prepare_rebalance()
        return pending

    def _replace_static(
        self, member: Member, member_id: str, request: JoinRequest
    ) -> JoinResult | Pending:
        previous_leader = self._roster.leader_id
        fenced = f"instance {request.group_instance_id!r} rejoined as {member_id!r}"
        self._answer_join(member, FencedInstanceIdError(fenced))
        self._answer_sync(member, FencedInstanceIdError(fenced))
        if member.member_id in self._pending_sync:
            self._pending_sync.discard(member.member_id)
            self._pending_sync.add(member_id)
        self._roster.rename(member, member_id)
        self._roster.update(member, request)
        member.heartbeat_ms = self._now
        if (
            self._state is GroupState.STABLE
            and self._roster.select_protocol() == self._protocol_name
        ):
            # The previous leader id, so the restarted member does not think it leads and
            # run an assignment a Stable group would never hand out.
            return JoinResult(
                member_id=member_id,
                generation_id=self._generation_id,
                protocol_type=self._roster.protocol_type,
                protocol_name=self._protocol_name,
                leader_id=previous_leader or "",
            )
        pending = self._wait_for_join(member)
        if self._state is not GroupState.PREPARING_REBALANCE:
            self._prepare_rebalance()
        return pending

    def _check_room(self) -> None:
        max_size = self._config.max_size
        members = len(self._roster.members)
        if max_size is not None and self._state is not GroupState.EMPTY and members >= max_size:
            raise GroupMaxSizeReachedError(f"group {self._group_id!r} has {max_size} members")

    # -- SyncGroup -------------------------------------------------------------------

    def _sync(self, request: SyncRequest) -> SyncResult | Pending:
        self._check_alive()
        member = self._roster.current(request.member_id, request.group_instance_id)
        self._check_generation(request.generation_id)
        protocol_type = self._roster.protocol_type
        if request.protocol_type is not None and request.protocol_type != protocol_type:
            raise InconsistentGroupProtocolError(f"protocol type {request.protocol_type!r}")
        if request.protocol_name is not None and request.protocol_name != self._protocol_name:
            raise InconsistentGroupProtocolError(f"protocol name {request.protocol_name!r}")
        if self._state is GroupState.PREPARING_REBALANCE:
            raise RebalanceInProgressError(f"group {self._group_id!r} is rebalancing; rejoin")
        self._pending_sync.discard(member.member_id)
        if self._state is GroupState.STABLE:
            member.heartbeat_ms = self._now
            return self._sync_result(member)
        pending = self._wait_for_sync(member)
        if member.member_id == self._roster.leader_id:
            for other in self._roster.members.values():
                other.assignment = request.assignments.get(other.member_id, b"")
                self._answer_sync(other, self._sync_result(other))
            self._transition(GroupState.STABLE)
        return pending

    def _sync_result(self, member: Member) -> SyncResult:
        return SyncResult(
            assignment=member.assignment,
            protocol_type=self._roster.protocol_type,
            protocol_name=self._protocol_name,
        )

    def _check_generation(self, generation_id: int) -> None:
        if generation_id != self._generation_id:
            raise IllegalGenerationError(
                f"generation {generation_id} is not {self._group_id!r}'s current "
                f"{self._generation_id}"
            )
