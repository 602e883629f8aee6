"""Rebalances: a group's states, generations, timers and waiting requests.

Theory of operation
-------------------
States and transitions (Kafka's names, as DescribeGroups reports them)::

    Empty ──join──▶ PreparingRebalance ──all joined / timeout──▶ CompletingRebalance
      ▲                ▲        │ (no members left)                 │ leader's SyncGroup
      └────────────────┼────────┘                                   ▼
                       └──── member joins, changes, leaves, expires ── Stable
    any ──delete()──▶ Dead

- *Empty*: no members (committed offsets may still exist). The first join starts a
  rebalance after the *initial rebalance delay* (Kafka's group.initial.rebalance.delay.ms,
  here small and configurable), extended by another delay while new members keep arriving,
  never beyond the rebalance timeout; so consumers started together share one generation.
- *PreparingRebalance*: waiting for every known member to send JoinGroup (and for members
  told MEMBER_ID_REQUIRED to come back or expire). It ends when all have joined, or at the
  rebalance timeout (the largest of the members'), when dynamic members that did not rejoin
  are removed (static ones stay). The generation id goes up, the protocol every member
  supports is selected by votes, a member that rejoined leads, and every waiting JoinGroup
  is answered; only the leader's answer lists the members and their metadata.
- *CompletingRebalance*: waiting for the leader's SyncGroup with the assignment; the other
  members' SyncGroups wait. The leader's assignment is handed out (members it left out get
  ``b""``) and the group is *Stable*. Members of the new generation, static or not, that
  have not sent SyncGroup within the rebalance timeout are removed and the group
  rebalances again.
- *Stable*: heartbeats keep sessions alive. A new member, a member with new metadata, the
  leader rejoining, a leave or an expired session starts a rebalance.

Timers are not scheduled callbacks but deadlines computed from the state (each member's
session, pending member ids, the join and sync deadlines). Every entry point first fires,
in time order, each timer the clock has passed, as of its own deadline; so the outcome
does not depend on when the driver happened to call.

A waiting JoinGroup or SyncGroup is a :class:`Pending` stored on its member; answering
it appends a :class:`Completion` to the outbox that :meth:`poll` drains. Each Pending is
answered exactly once: with its result, or with an error when the member is removed
(UNKNOWN_MEMBER_ID), fenced (FENCED_INSTANCE_ID), its request replaced or the rebalance
restarted (REBALANCE_IN_PROGRESS).
"""

from __future__ import annotations

from collections.abc import Callable
from enum import StrEnum
from functools import partial

from ._config import GroupConfig
from ._errors import (
    CoordinatorNotAvailableError,
    GroupError,
    RebalanceInProgressError,
    UnknownMemberError,
)
from ._member import Member, Roster
from ._messages import Completion, JoinResult, Pending, SyncResult


class GroupState(StrEnum):
    """A group's state; the values are Kafka's names, as DescribeGroups reports them."""

    EMPTY = "Empty"
    PREPARING_REBALANCE = "PreparingRebalance"
    COMPLETING_REBALANCE = "CompletingRebalance"
    STABLE = "Stable"
    DEAD = "Dead"


_EMPTY = GroupState.EMPTY
_PREPARING = GroupState.PREPARING_REBALANCE
_COMPLETING = GroupState.COMPLETING_REBALANCE
_STABLE = GroupState.STABLE
_DEAD = GroupState.DEAD

_PREVIOUS_STATES = {
    _EMPTY: {_PREPARING},
    _PREPARING: {_EMPTY, _COMPLETING, _STABLE},
    _COMPLETING: {_PREPARING},
    _STABLE: {_COMPLETING},
    _DEAD: set(GroupState),
}


class RebalanceMachine:
    """The rebalance half of a group: states, generations, timers, waiting requests.

    :class:`~headwater.groups.Group` adds the requests that drive it.
    """

    def __init__(self, group_id: str, clock: Callable[[], int], config: GroupConfig) -> None:
        self._group_id = group_id
        self._clock = clock
        self._config = config
        self._now = clock()
        self._state = _EMPTY
        self._state_since_ms = self._now
        self._generation_id = 0
        self._protocol_name: str | None = None
        self._roster = Roster(group_id)
        self._pending_sync: set[str] = set()  # members of this generation yet to sync
        self._join_deadline_ms: int | None = None
        self._initial_delay_left_ms: int | None = None  # set during the initial delay
        self._new_member_added = False
        self._sync_deadline_ms: int | None = None
        self._outbox: list[Completion] = []

    # -- driving ---------------------------------------------------------------------

    def poll(self) -> list[Completion]:
        """Run the timers due by the clock and return every completion not yet taken."""
        self._run_timers()
        completions, self._outbox = self._outbox, []
        return completions

    def next_deadline_ms(self) -> int | None:
        """The clock time at which :meth:`poll` has work to do, or None if nothing is timed."""
        deadline = self._earliest_timer()
        return None if deadline is None else deadline[0]

    # -- rebalancing -----------------------------------------------------------------

    def _maybe_prepare_rebalance(self) -> None:
        if self._state in (_EMPTY, _COMPLETING, _STABLE):
            self._prepare_rebalance()

    def _prepare_rebalance(self) -> None:
        if self._state is _COMPLETING:
            error = RebalanceInProgressError(f"group {self._group_id!r} is rebalancing again")
            for member in self._roster.members.values():
                member.assignment = b""
                self._answer_sync(member, error)
        self._pending_sync.clear()
        self._sync_deadline_ms = None
        timeout = self._roster.rebalance_timeout_ms()
        if self._state is _EMPTY:
            delay = self._config.initial_rebalance_delay_ms
            self._initial_delay_left_ms = max(timeout - delay, 0)
            self._new_member_added = False
            self._join_deadline_ms = self._now + delay
        else:
            self._initial_delay_left_ms = None
            self._join_deadline_ms = self._now + timeout
        self._transition(_PREPARING)

    def _maybe_complete_join(self) -> None:
        if self._state is not _PREPARING or self._initial_delay_left_ms is not None:
            return
        if self._roster.all_joined():
            self._complete_join()

    def _on_join_deadline(self) -> None:
        left = self._initial_delay_left_ms
        if left is not None and self._new_member_added and left > 0:
            # New members keep arriving: wait one more delay, within the rebalance timeout.
            delay = min(self._config.initial_rebalance_delay_ms, left)
            self._initial_delay_left_ms = left - delay
            self._new_member_added = False
            self._join_deadline_ms = self._now + delay
            return
        self._complete_join()

    def _complete_join(self) -> None:
        self._join_deadline_ms = None
        self._initial_delay_left_ms = None
        members = self._roster.members
        for member in list(members.values()):
            if member.join_pending is None and member.group_instance_id is None:
                self._remove(member, "did not rejoin within the rebalance timeout")
        if members and not self._roster.elect_joined_leader():
            # Only static members that have not rejoined are left: wait for them again
            # (at least 1 ms later, so a zero timeout cannot spin).
            self._join_deadline_ms = self._now + max(self._roster.rebalance_timeout_ms(), 1)
            return
        self._generation_id += 1
        if not members:
            self._protocol_name = None
            self._transition(_EMPTY)
            return
        self._protocol_name = self._roster.select_protocol()
        self._transition(_COMPLETING)
        for member in members.values():
            self._answer_join(member, self._join_result(member))
            member.is_new = False
            member.heartbeat_ms = self._now
            self._pending_sync.add(member.member_id)
        self._sync_deadline_ms = self._now + self._roster.rebalance_timeout_ms()

    def _on_sync_deadline(self) -> None:
        self._sync_deadline_ms = None
        for member_id in sorted(self._pending_sync):
            member = self._roster.members[member_id]
            self._remove(member, "did not sync within the rebalance timeout")
        self._prepare_rebalance()

    def _join_result(self, member: Member) -> JoinResult:
        is_leader = member.member_id == self._roster.leader_id
        return JoinResult(
            member_id=member.member_id,
            generation_id=self._generation_id,
            protocol_type=self._roster.protocol_type,
            protocol_name=self._protocol_name,
            leader_id=self._roster.leader_id or "",
            members=self._roster.joined_members(self._protocol_name) if is_leader else (),
        )

    # -- membership ------------------------------------------------------------------

    def _check_alive(self) -> None:
        if self._state is _DEAD:
            raise CoordinatorNotAvailableError(f"group {self._group_id!r} is dead")

    def _remove(self, member: Member, reason: str) -> None:
        error = UnknownMemberError(f"{member.member_id!r} {reason}")
        self._answer_join(member, error)
        self._answer_sync(member, error)
        self._roster.remove(member)
        self._pending_sync.discard(member.member_id)

    def _remove_and_rebalance(self, member: Member, reason: str) -> None:
        self._remove(member, reason)
        self._maybe_prepare_rebalance()

    # -- waiting requests ------------------------------------------------------------

    def _wait_for_join(self, member: Member) -> Pending:
        self._answer_join(member, RebalanceInProgressError("replaced by a newer JoinGroup"))
        member.join_pending = Pending(member.member_id, "join")
        return member.join_pending

    def _wait_for_sync(self, member: Member) -> Pending:
        self._answer_sync(member, RebalanceInProgressError("replaced by a newer SyncGroup"))
        member.sync_pending = Pending(member.member_id, "sync")
        return member.sync_pending

    def _answer_join(self, member: Member, outcome: JoinResult | GroupError) -> None:
        if member.join_pending is not None:
            self._outbox.append(Completion(member.join_pending, outcome))
            member.join_pending = None
            member.heartbeat_ms = self._now

    def _answer_sync(self, member: Member, outcome: SyncResult | GroupError) -> None:
        if member.sync_pending is not None:
            self._outbox.append(Completion(member.sync_pending, outcome))
            member.sync_pending = None
            member.heartbeat_ms = self._now

    # -- time ------------------------------------------------------------------------

    def _run_timers(self) -> None:
        """Fire, in time order, every timer due by the clock, each at its own deadline."""
        now = max(self._clock(), self._now)
        while True:
            self._maybe_complete_join()
            timer = self._earliest_timer()
            if timer is None or timer[0] > now:
                break
            self._now = max(self._now, timer[0])
            timer[1]()
        self._now = now

    def _earliest_timer(self) -> tuple[int, Callable[[], None]] | None:
        if self._state is _DEAD:
            return None
        timers: list[tuple[int, Callable[[], None]]] = [
            (deadline, partial(self._expire_pending, member_id))
            for member_id, deadline in self._roster.pending_members.items()
        ]
        join_timeout = self._config.new_member_join_timeout_ms
        for member in self._roster.members.values():
            expiry = member.expiry_ms(join_timeout)
            if expiry is not None:
                timers.append((expiry, partial(self._expire, member)))
        if self._join_deadline_ms is not None:
            timers.append((self._join_deadline_ms, self._on_join_deadline))
        if self._sync_deadline_ms is not None and self._pending_sync:
            timers.append((self._sync_deadline_ms, self._on_sync_deadline))
        # min() keeps the first of equal deadlines, so ties fire in a fixed order.
        return min(timers, key=lambda timer: timer[0], default=None)

    def _expire_pending(self, member_id: str) -> None:
        del self._roster.pending_members[member_id]

    def _expire(self, member: Member) -> None:
        self._remove_and_rebalance(member, "expired: no heartbeat within the session timeout")

    def _transition(self, state: GroupState) -> None:
        assert self._state in _PREVIOUS_STATES[state], f"{self._state} -> {state}"
        self._state = state
        self._state_since_ms = self._now
