"""The in-process group coordinator: sans-I/O groups, driven on an event loop, over a store.

Theory of operation
-------------------
:class:`GroupCoordinator` owns one :class:`~headwater.groups.Group` state machine per
group id and the committed offsets of every group (``_offsets.py``), and drives them
exactly as the groups' sans-I/O contract says:

- A request (join, sync, heartbeat, leave, commit) calls its group at once. A
  :class:`~headwater.groups.Pending` answer gets a waiter; after every call the group's
  completions are drained and each wakes its waiter, whose ``await`` then returns the
  result or raises the error. The same async methods serve the embedded consumer and,
  later, the broker's JoinGroup/SyncGroup/Heartbeat/LeaveGroup/OffsetCommit handlers.
- One timer task, in the coordinator's task group, sleeps until the earliest
  ``next_deadline_ms()`` of all groups or the next offset expiry, then polls the groups
  that are due. A request that brings a deadline forward (or changes a group's state)
  wakes it through an event; nothing polls at a fixed interval.
- Committed offsets are read from ``__consumer_offsets`` when the coordinator starts and
  every group that has some is loaded Empty: a group's members live in the process that
  runs them, so after a restart it has none. A commit is acknowledged only once its
  record is durable under the offsets topic's policy.
- Expiry (Kafka's offsets.retention.minutes): the offsets of a group that stays Empty
  expire ``offsets_retention_ms`` after it became Empty, or after the commit when that
  is later. For a group that has not had members since start-up, the commit time alone
  counts (group metadata is not persisted). Expired offsets are removed by tombstones,
  and a group with neither members nor offsets is forgotten.

Time is the injected ``clock`` in epoch milliseconds (the wall clock by default, as
Kafka's coordinator uses): commit timestamps and retention are wall-clock quantities. The
groups never see it go backwards (they keep the largest time they have seen).

Concurrency: every method must be called from the event loop that entered the
coordinator; none is thread-safe. Close consumers before the coordinator; a request still
waiting when it closes gets :class:`~headwater.groups.CoordinatorNotAvailableError`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, TypeAlias

import anyio
from anyio.abc import TaskGroup

from headwater.store import (
    HeadwaterError,
    OffsetOutOfRangeError,
    Store,
    StoreError,
    TopicNotFoundError,
)

from ._config import GroupConfig
from ._consumer import Consumer
from ._consumer_config import ConsumerConfig
from ._consumer_protocol import TopicPartition
from ._coordinator import Group
from ._errors import (
    CoordinatorNotAvailableError,
    GroupError,
    GroupIdNotFoundError,
    GroupNotEmptyError,
    GroupSubscribedToTopicError,
    InvalidGroupIdError,
    OffsetMetadataTooLargeError,
    UnknownMemberError,
)
from ._membership import PartitionsCallback
from ._messages import (
    Completion,
    GroupDescription,
    GroupOverview,
    JoinRequest,
    JoinResult,
    Pending,
    SyncRequest,
    SyncResult,
)
from ._metrics import GROUP_METRICS
from ._offsets import OffsetAndMetadata, OffsetLog, expired_offsets, expiry_base_ms
from ._rebalance import GroupState

logger = logging.getLogger("headwater.groups")

#: Where :meth:`GroupCoordinator.reset_offsets` moves a group's offsets: the log start,
#: the high watermark, an offset (clamped into the log), or the first record at or after a
#: time (the high watermark when there is none; a naive datetime is UTC).
ResetTo: TypeAlias = Literal["earliest", "latest"] | int | datetime

#: How long offset expiry waits after a failed write before it tries again.
_EXPIRY_RETRY_MS = 60_000


def wall_clock_ms() -> int:
    """Return the wall clock in epoch milliseconds."""
    return time.time_ns() // 1_000_000


@dataclass(frozen=True, slots=True)
class GroupStatistics:
    """One group as :meth:`GroupCoordinator.statistics` saw it.

    ``rebalances`` counts the rebalances it completed since the coordinator started;
    ``committed`` maps each partition to its committed offset (the next one to read).
    """

    group_id: str
    state: GroupState
    members: int
    generation_id: int
    rebalances: int
    committed: Mapping[TopicPartition, int]


class _Waiter:
    __slots__ = ("event", "outcome")

    def __init__(self) -> None:
        self.event = anyio.Event()
        self.outcome: JoinResult | SyncResult | GroupError | None = None


class GroupCoordinator:
    """Consumer groups and their committed offsets, hosted in this process over ``store``.

    Use as an async context manager: entering loads committed offsets (creating
    ``__consumer_offsets`` if missing) and starts the timer task; leaving stops it.

    :param store: the open store whose topics the groups read and which keeps offsets.
    :param config: coordinator settings shared by all groups (session timeout bounds,
        initial rebalance delay, offset retention); ``GroupConfig()`` by default.
    :param clock: epoch milliseconds; the wall clock by default. Tests inject a fake.

    Concurrency: call it from the event loop that entered it; not thread-safe.
    """

    def __init__(
        self,
        store: Store,
        *,
        config: GroupConfig | None = None,
        clock: Callable[[], int] = wall_clock_ms,
    ) -> None:
        self.store = store
        self.config = config if config is not None else GroupConfig()
        self._clock = clock
        self._offsets = OffsetLog(store)
        self._groups: dict[str, Group] = {}
        self._waiters: dict[Pending, _Waiter] = {}
        self._wakeup = anyio.Event()
        self._timer_target_ms: int | None = None
        self._expiry_retry_ms: int | None = None
        self._task_group: TaskGroup | None = None
        self._open = False
        #: Rebalances completed per group id since start-up, and the generation each
        #: group had when they were last counted (a forgotten group starts again at 0).
        self._rebalances: dict[str, int] = {}
        self._counted_generation: dict[str, int] = {}
        metrics = GROUP_METRICS.get()
        if metrics is not None:
            metrics.coordinators.add(self)

    # -- life cycle ------------------------------------------------------------------

    async def __aenter__(self) -> GroupCoordinator:
        await self._offsets.load()
        for group_id in self._offsets.table.group_ids():
            self._group(group_id)
        self._task_group = anyio.create_task_group()
        await self._task_group.__aenter__()
        self._task_group.start_soon(self._run_timers)
        self._open = True
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Stop the timer task; requests still waiting get CoordinatorNotAvailableError."""
        if not self._open:
            return
        self._open = False
        for waiter in self._waiters.values():
            waiter.outcome = CoordinatorNotAvailableError("the group coordinator closed")
            waiter.event.set()
        self._waiters.clear()
        if self._task_group is not None:
            self._task_group.cancel_scope.cancel()
            await self._task_group.__aexit__(None, None, None)

    def _check_open(self) -> None:
        if not self._open:
            raise CoordinatorNotAvailableError("the group coordinator is not running")

    # -- the consumer ----------------------------------------------------------------

    def consumer(
        self,
        group_id: str,
        topics: Sequence[str],
        *,
        config: ConsumerConfig | None = None,
        on_assigned: PartitionsCallback | None = None,
        on_revoked: PartitionsCallback | None = None,
        on_lost: PartitionsCallback | None = None,
        **options: Any,
    ) -> Consumer:
        """Return a consumer of ``topics`` in group ``group_id``; enter it with ``async with``.

        ``options`` are :class:`ConsumerConfig` fields (``auto_offset_reset="earliest"``,
        ``enable_auto_commit=True``, ...) applied over ``config``. The callbacks receive
        the partitions (sorted) and may be ``async``: ``on_assigned`` after partitions
        are added, ``on_revoked`` before they are given up (so state can be flushed and
        offsets committed), ``on_lost`` instead of ``on_revoked`` when they were already
        taken away (the session expired; commits would be rejected) — ``on_revoked`` when
        no ``on_lost`` is given.

        :raises InvalidGroupConfigError: for an unknown option or a bad value.
        :raises InvalidGroupIdError: if ``group_id`` is empty.
        """
        _check_group_id(group_id)
        settings = ConsumerConfig.from_options(config, options)
        return Consumer(
            self,
            group_id,
            topics,
            settings,
            callbacks=(on_assigned, on_revoked, on_lost),
        )

    # -- group membership (what JoinGroup/SyncGroup/Heartbeat/LeaveGroup drive) -------

    async def join(self, group_id: str, request: JoinRequest) -> JoinResult:
        """JoinGroup: wait, if need be, for the rebalance, and return this member's result.

        :raises GroupError: as :meth:`Group.join <headwater.groups.Group.join>` raises,
            or the error the waiting request was answered with.
        """
        self._check_open()
        _check_group_id(group_id)
        group = self._group(group_id)
        outcome = await self._submit(group, lambda: group.join(request))
        assert isinstance(outcome, JoinResult), outcome
        return outcome

    async def sync(self, group_id: str, request: SyncRequest) -> SyncResult:
        """SyncGroup: wait, if need be, for the leader's assignment; return this member's.

        :raises GroupError: as :meth:`Group.sync <headwater.groups.Group.sync>` raises,
            or the error the waiting request was answered with.
        """
        group = self._existing(group_id)
        outcome = await self._submit(group, lambda: group.sync(request))
        assert isinstance(outcome, SyncResult), outcome
        return outcome

    async def heartbeat(
        self,
        group_id: str,
        member_id: str,
        generation_id: int,
        group_instance_id: str | None = None,
    ) -> None:
        """Heartbeat: refresh the member's session.

        :raises RebalanceInProgressError: when the member should rejoin.
        :raises FencedMemberError: when it is no longer a member of this generation.
        """
        group = self._existing(group_id)
        await self._submit(
            group, lambda: group.heartbeat(member_id, generation_id, group_instance_id)
        )

    async def leave(
        self, group_id: str, member_id: str, group_instance_id: str | None = None
    ) -> None:
        """LeaveGroup for one member (or, with an empty ``member_id``, a static instance).

        :raises UnknownMemberError: if no such member is in the group.
        :raises FencedInstanceIdError: if the instance id belongs to another member.
        """
        group = self._existing(group_id)
        await self._submit(group, lambda: group.leave(member_id, group_instance_id))

    # -- offsets ---------------------------------------------------------------------

    def committed(self, group_id: str) -> dict[TopicPartition, OffsetAndMetadata]:
        """Return ``group_id``'s committed offsets (OffsetFetch), sorted; empty if none."""
        return self._offsets.table.offsets(group_id)

    async def commit(
        self,
        group_id: str,
        offsets: Mapping[TopicPartition, int | OffsetAndMetadata]
        | Mapping[tuple[str, int], int | OffsetAndMetadata],
        *,
        member_id: str = "",
        generation_id: int = -1,
        group_instance_id: str | None = None,
    ) -> None:
        """OffsetCommit: store ``offsets``; return once they are durable.

        Each value is the next offset to read (an int) or an :class:`OffsetAndMetadata`;
        the commit timestamp is the coordinator's clock. A member commits with its member
        id and generation; generation -1 with no member id is a plain commit, accepted
        only while the group is Empty (it creates the group if need be).

        :raises IllegalGenerationError: for a stale generation.
        :raises UnknownMemberError: for an unknown member, or a plain commit to a group
            with members.
        :raises FencedInstanceIdError: if another member took over the instance id.
        :raises RebalanceInProgressError: while the group completes a rebalance.
        :raises OffsetMetadataTooLargeError: if a metadata string is too long.
        :raises TopicNotFoundError: for a topic or partition the store does not have.
        :raises OffsetOutOfRangeError: for a negative offset.
        :raises StoreError: if the offsets cannot be written.
        """
        self._check_open()
        _check_group_id(group_id)
        changes = self._commit_changes(offsets)
        group = self._groups.get(group_id)
        if group is None:
            if member_id or generation_id >= 0 or group_instance_id is not None:
                raise UnknownMemberError(f"group {group_id!r} has no member {member_id!r}")
            group = self._group(group_id)
        await self._submit(
            group, lambda: group.validate_commit(member_id, generation_id, group_instance_id)
        )
        await self._offsets.write(group_id, changes)
        if group.state is GroupState.EMPTY:
            self._group(group_id)  # an idle group is forgotten at once: it has offsets now
            self._wakeup.set()  # the offsets of an Empty group expire: reschedule

    def _commit_changes(
        self,
        offsets: Mapping[TopicPartition, int | OffsetAndMetadata]
        | Mapping[tuple[str, int], int | OffsetAndMetadata],
    ) -> list[tuple[TopicPartition, OffsetAndMetadata | None]]:
        now = self._clock()
        limit = self.config.offset_metadata_max_bytes
        changes: list[tuple[TopicPartition, OffsetAndMetadata | None]] = []
        for (topic, index), value in offsets.items():
            self.store.partition(topic, index)  # the partition must exist
            given = value if isinstance(value, OffsetAndMetadata) else OffsetAndMetadata(value)
            if given.offset < 0:
                raise OffsetOutOfRangeError(
                    f"cannot commit offset {given.offset} for {topic}-{index}: offsets are >= 0"
                )
            if len(given.metadata.encode()) > limit:
                raise OffsetMetadataTooLargeError(
                    f"the metadata committed for {topic}-{index} exceeds {limit} bytes"
                )
            stamped = OffsetAndMetadata(given.offset, given.metadata, now, given.leader_epoch)
            changes.append((TopicPartition(topic, index), stamped))
        return changes

    def plan_offset_reset(
        self, group_id: str, topic: str, to: ResetTo
    ) -> dict[TopicPartition, int]:
        """Return the offsets :meth:`reset_offsets` would commit for each partition of ``topic``.

        :raises GroupNotEmptyError: if the group has active members.
        :raises TopicNotFoundError: if there is no such topic.
        """
        self._check_open()
        _check_group_id(group_id)
        self._check_inactive(group_id, "reset the offsets of")
        plan: dict[TopicPartition, int] = {}
        for partition in self.store.partitions(topic):
            start, end = partition.log_start_offset, partition.high_watermark
            if to == "earliest":
                offset = start
            elif to == "latest":
                offset = end
            elif isinstance(to, datetime):
                when = to if to.tzinfo is not None else to.replace(tzinfo=UTC)
                found = partition.offset_for_time(int(when.timestamp() * 1000))
                offset = end if found is None else found
            else:
                offset = min(max(to, start), end)
            plan[TopicPartition(topic, partition.index)] = offset
        return plan

    async def reset_offsets(
        self, group_id: str, topic: str, to: ResetTo
    ) -> dict[TopicPartition, int]:
        """Commit new offsets for every partition of ``topic``; return what was committed.

        ``to`` is ``"earliest"`` (the log start), ``"latest"`` (the high watermark), an
        offset (clamped into the log), or a datetime (the first record at or after it,
        else the high watermark; a naive datetime is UTC).

        :raises GroupNotEmptyError: if the group has active members (stop them first).
        :raises TopicNotFoundError: if there is no such topic.
        :raises StoreError: if the offsets cannot be written.
        """
        plan = self.plan_offset_reset(group_id, topic, to)
        await self.commit(group_id, plan)
        return plan

    async def delete_group(self, group_id: str) -> None:
        """DeleteGroups: forget an Empty group and tombstone its committed offsets.

        :raises GroupIdNotFoundError: if there is no such group.
        :raises GroupNotEmptyError: if it has active members.
        :raises StoreError: if the tombstones cannot be written.
        """
        self._check_open()
        group = self._groups.get(group_id)
        if group is None:
            raise GroupIdNotFoundError(f"group {group_id!r} does not exist")
        self._check_inactive(group_id, "delete")
        group.delete()
        self._forget(group_id)
        offsets = self._offsets.table.offsets(group_id)
        await self._offsets.write(group_id, [(tp, None) for tp in offsets])

    async def delete_offsets(
        self, group_id: str, partitions: Iterable[TopicPartition] | Iterable[tuple[str, int]]
    ) -> dict[TopicPartition, HeadwaterError | None]:
        """OffsetDelete: tombstone ``group_id``'s committed offsets of ``partitions``.

        As Kafka does: an Empty group loses every named offset; a consumer group with
        active members keeps those of the topics its members subscribe to (answered
        :class:`GroupSubscribedToTopicError` per partition) and loses the others. A
        partition the store does not have is answered :class:`TopicNotFoundError`. Returns
        each named partition with ``None`` (deleted, or there was nothing to delete) or
        the error that kept it; returns once the tombstones are durable.

        :raises GroupIdNotFoundError: if there is no such group.
        :raises GroupNotEmptyError: if the group has members whose protocol type is not
            ``consumer`` (their subscriptions cannot be read).
        :raises StoreError: if the tombstones cannot be written.
        """
        self._check_open()
        _check_group_id(group_id)
        group = self._groups.get(group_id)
        if group is None or group.state is GroupState.DEAD:
            raise GroupIdNotFoundError(f"group {group_id!r} does not exist")
        subscribed = group.subscribed_topics()
        if subscribed is None:
            raise GroupNotEmptyError(
                f"cannot delete offsets of group {group_id!r}: it has active members of "
                f"protocol type {group.protocol_type!r}; stop them first"
            )
        committed = self._offsets.table.offsets(group_id)
        outcome: dict[TopicPartition, HeadwaterError | None] = {}
        for topic, index in partitions:
            tp = TopicPartition(topic, index)
            try:
                self.store.partition(topic, index)
            except TopicNotFoundError as exc:
                outcome[tp] = exc
                continue
            if topic in subscribed:
                outcome[tp] = GroupSubscribedToTopicError(
                    f"group {group_id!r} has active members subscribed to topic {topic!r}; "
                    "its offsets stay while they consume it"
                )
            else:
                outcome[tp] = None
        doomed = [tp for tp, error in outcome.items() if error is None and tp in committed]
        await self._offsets.write(group_id, [(tp, None) for tp in doomed])
        self._forget_idle_groups()
        return outcome

    def _check_inactive(self, group_id: str, action: str) -> None:
        group = self._groups.get(group_id)
        if group is not None and (group.state is not GroupState.EMPTY or group.member_ids):
            raise GroupNotEmptyError(
                f"cannot {action} group {group_id!r}: it has active members "
                f"(state {group.state}); stop its consumers first"
            )

    async def expire_offsets(self) -> int:
        """Tombstone the offsets of Empty groups that are past retention; return how many.

        The timer task calls this when the next expiry is due; tests with a fake clock
        call it after moving the clock. Does nothing on a read-only store.

        :raises StoreError: if the tombstones cannot be written.
        """
        if self.store.read_only:
            return 0
        now = self._clock()
        retention = self.config.offsets_retention_ms
        removed = 0
        for group_id in self._offsets.table.group_ids():
            empty_since = self._empty_since(group_id)
            if empty_since is False:
                continue
            offsets = self._offsets.table.offsets(group_id)
            expired = expired_offsets(offsets, empty_since, now, retention)
            if expired:
                await self._offsets.write(group_id, [(tp, None) for tp in expired])
                removed += len(expired)
                logger.info("group %r: %d committed offset(s) expired", group_id, len(expired))
        self._forget_idle_groups()
        return removed

    def _empty_since(self, group_id: str) -> int | Literal[False] | None:
        """When ``group_id`` became Empty; None if unknown; False if it is not Empty."""
        group = self._groups.get(group_id)
        if group is None:
            return None
        if group.state is not GroupState.EMPTY or group.member_ids:
            return False
        # Generation 0: no rebalance has completed since start-up; emptiness is not news.
        return group.state_since_ms if group.generation_id > 0 else None

    def _next_expiry_ms(self) -> int | None:
        if self.store.read_only:
            return None
        retention = self.config.offsets_retention_ms
        earliest: int | None = None
        for group_id in self._offsets.table.group_ids():
            empty_since = self._empty_since(group_id)
            if empty_since is False:
                continue
            for offset in self._offsets.table.offsets(group_id).values():
                due = expiry_base_ms(offset, empty_since) + retention
                earliest = due if earliest is None else min(earliest, due)
        if earliest is not None and self._expiry_retry_ms is not None:
            earliest = max(earliest, self._expiry_retry_ms)
        return earliest

    # -- admin -----------------------------------------------------------------------

    def list_groups(self) -> list[GroupOverview]:
        """ListGroups: every group with members or committed offsets, sorted by id."""
        self._check_open()
        overviews = []
        for group_id in sorted(self._groups):
            group = self._groups[group_id]
            before = group.state
            overviews.append(group.overview())
            self._after(group, before)
        return overviews

    def describe_group(self, group_id: str) -> GroupDescription:
        """DescribeGroups: the group's state, members and (when Stable) their assignments.

        :raises GroupIdNotFoundError: if there is no such group (Kafka answers with state
            Dead; the broker translates).
        """
        self._check_open()
        group = self._groups.get(group_id)
        if group is None:
            raise GroupIdNotFoundError(f"group {group_id!r} does not exist")
        before = group.state
        description = group.describe()
        self._after(group, before)
        return description

    def statistics(self) -> list[GroupStatistics]:
        """Return each group's members, generation, rebalances and committed offsets,
        sorted by group id, without changing anything (no expiry, no completions)."""
        table = self._offsets.table
        stats = []
        for group_id in sorted(set(self._groups) | set(table.group_ids())):
            group = self._groups.get(group_id)
            stats.append(
                GroupStatistics(
                    group_id=group_id,
                    state=GroupState.EMPTY if group is None else group.state,
                    members=0 if group is None else len(group.member_ids),
                    generation_id=0 if group is None else group.generation_id,
                    rebalances=self._rebalances.get(group_id, 0),
                    committed={tp: o.offset for tp, o in table.offsets(group_id).items()},
                )
            )
        return stats

    # -- driving the groups ------------------------------------------------------------

    def _group(self, group_id: str) -> Group:
        group = self._groups.get(group_id)
        if group is None:
            group = self._groups[group_id] = Group(group_id, clock=self._clock, config=self.config)
        return group

    def _existing(self, group_id: str) -> Group:
        self._check_open()
        group = self._groups.get(group_id)
        if group is None:
            raise UnknownMemberError(f"group {group_id!r} has no members")
        return group

    async def _submit(
        self, group: Group, call: Callable[[], JoinResult | SyncResult | Pending | None]
    ) -> JoinResult | SyncResult | None:
        """Call ``group`` now; deliver what completed; wait for this call's own answer."""
        before = group.state
        waiter = None
        try:
            outcome = call()
            if isinstance(outcome, Pending):
                waiter = self._waiters[outcome] = _Waiter()
        finally:
            self._after(group, before)
        if waiter is None:
            assert not isinstance(outcome, Pending)
            return outcome
        try:
            await waiter.event.wait()
        finally:
            if isinstance(outcome, Pending):
                self._waiters.pop(outcome, None)
        result = waiter.outcome
        if isinstance(result, GroupError):
            raise result
        assert result is not None
        return result

    def _after(self, group: Group, before: GroupState) -> None:
        """Deliver ``group``'s completions; wake the timer if its schedule may have moved.

        A group left with no members, no offsets and no timers is forgotten.
        """
        self._deliver(group.poll())
        self._count_rebalances(group)
        deadline = group.next_deadline_ms()
        if self._idle(group, deadline):
            self._forget(group.group_id)
        target = self._timer_target_ms
        earlier = deadline is not None and (target is None or deadline < target)
        if earlier or group.state is not before:
            self._wakeup.set()

    def _deliver(self, completions: Iterable[Completion]) -> None:
        for pending, outcome in completions:
            waiter = self._waiters.pop(pending, None)
            if waiter is not None:  # None: its requester stopped waiting (cancelled)
                waiter.outcome = outcome
                waiter.event.set()

    def _idle(self, group: Group, deadline: int | None) -> bool:
        if group.state is GroupState.DEAD:
            return True
        return (
            group.state is GroupState.EMPTY
            and deadline is None
            and not self._offsets.table.has_offsets(group.group_id)
        )

    def _forget_idle_groups(self) -> None:
        for group_id, group in list(self._groups.items()):
            if self._idle(group, group.next_deadline_ms()):
                self._forget(group_id)

    def _forget(self, group_id: str) -> None:
        self._groups.pop(group_id, None)
        self._counted_generation.pop(group_id, None)

    def _count_rebalances(self, group: Group) -> None:
        """Count the rebalances ``group`` completed since last counted (generations)."""
        group_id = group.group_id
        generation = group.generation_id
        counted = self._counted_generation.get(group_id, 0)
        if generation != counted:
            self._rebalances[group_id] = self._rebalances.get(group_id, 0) + generation - counted
            self._counted_generation[group_id] = generation

    async def _run_timers(self) -> None:
        while True:
            self._wakeup = anyio.Event()
            now = self._clock()
            for group in list(self._groups.values()):
                deadline = group.next_deadline_ms()
                if deadline is not None and deadline <= now:
                    before = group.state
                    self._deliver(group.poll())
                    self._count_rebalances(group)
                    if group.state is not before:
                        self._wakeup.set()
            expiry = self._next_expiry_ms()
            if expiry is not None and expiry <= now:
                await self._expire_in_background()
                continue
            self._forget_idle_groups()
            target = min(
                (d for g in self._groups.values() if (d := g.next_deadline_ms()) is not None),
                default=None,
            )
            if expiry is not None:
                target = expiry if target is None else min(target, expiry)
            self._timer_target_ms = target
            if target is None:
                await self._wakeup.wait()
            else:
                # At least 1 ms, so a deadline the groups cannot clear never spins.
                with anyio.move_on_after(max(target - self._clock(), 1) / 1000):
                    await self._wakeup.wait()

    async def _expire_in_background(self) -> None:
        try:
            if await self.expire_offsets():
                self._expiry_retry_ms = None
            else:  # due, yet nothing expired: never spin on it
                self._expiry_retry_ms = self._clock() + _EXPIRY_RETRY_MS
        except StoreError as exc:
            self._expiry_retry_ms = self._clock() + _EXPIRY_RETRY_MS
            logger.warning("expiring committed offsets failed, retrying in 60 s: %s", exc)


def _check_group_id(group_id: str) -> None:
    if not isinstance(group_id, str) or not group_id:
        raise InvalidGroupIdError("the group id is empty")
