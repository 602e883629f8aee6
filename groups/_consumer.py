"""The embedded consumer: a member of a consumer group, reading its partitions in-process.

Theory of operation
-------------------
A :class:`Consumer` is a client of a :class:`~headwater.groups.GroupCoordinator` in the
same process, speaking the classic consumer protocol to it exactly as a Kafka client
would (JoinGroup with MEMBER_ID_REQUIRED, the leader running the assignor, SyncGroup,
Heartbeat, OffsetCommit, LeaveGroup), and reading records straight from the store's
partitions.

Tasks. Entering the consumer starts, in its own task group, a *heartbeat* task (one
heartbeat every ``heartbeat_interval_ms``) and joins the group (the entering task waits
for its first assignment). A *rebalancer* task rejoins when a heartbeat answers
REBALANCE_IN_PROGRESS (or the member was fenced), but only while the application does
not hold a batch: from the moment ``async for`` yields a batch until it asks for the next
one, a rebalance waits, so ``on_revoked`` never runs in the middle of processing a
batch. An application that holds a batch longer than ``rebalance_timeout_ms`` while the
group rebalances is removed from the group (Kafka's max.poll.interval.ms). A lock keeps
rejoining and reading apart, so a batch never comes from a partition already given up.

Rebalancing. The leader notes the partition counts of the group's topics when it assigns
them; when one changes (partitions were added, a subscribed topic was created) its next
heartbeat rejoins, as a Kafka leader does when metadata shows new partitions, so that the
new partitions are assigned. With ``cooperative-sticky`` a member keeps its partitions
through the join;
after SyncGroup it gives up (``on_revoked``) only those no longer assigned, then rejoins
at once so that they can go to their new owner in the next generation; new ones are
added (``on_assigned``). With an eager assignor (range, round-robin) it gives up all its
partitions before joining. With auto-commit on, positions are committed before partitions
are given up. A member that finds itself fenced (its session expired, a stale generation)
has already lost its partitions: ``on_lost`` (or ``on_revoked``) is told, and commits
are rejected. So a well-behaved member — one that commits what it processed in
``on_revoked`` or after each batch — never makes another member read a committed record
again.

Reading. A partition starts at the group's committed offset; without one (or when it is
outside the log, e.g. below a log start moved by retention) at ``auto_offset_reset``.
``async for`` serves the assigned, unpaused partitions in turn, one read of up to
``max_bytes`` per batch; when every one is caught up it waits on the partitions'
high-watermark notifications (a waiter task per partition), or for a change (seek,
resume, rebalance, close) — it never sleeps and polls. The position of a partition is the
offset after the last record yielded; :meth:`Consumer.commit` commits positions.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import TracebackType

import anyio

from headwater.store import OffsetOutOfRangeError, Partition, Record

from ._consumer_protocol import TopicPartition
from ._errors import GroupError, PartitionNotAssignedError
from ._membership import ConsumerMembership
from ._offsets import OffsetAndMetadata


@dataclass(frozen=True, slots=True)
class ConsumerBatch:
    """Records of one partition, in offset order, as one step of ``async for`` yields them.

    ``records`` is never empty; after it, the consumer's position in the partition is
    :attr:`next_offset`.
    """

    topic: str
    partition: int
    records: list[Record]

    @property
    def topic_partition(self) -> TopicPartition:
        """The batch's topic and partition."""
        return TopicPartition(self.topic, self.partition)

    @property
    def next_offset(self) -> int:
        """The offset after the batch's last record: what committing it stores."""
        return self.records[-1].offset + 1


class Consumer(ConsumerMembership):
    """A member of consumer group ``group_id`` reading ``topics`` in this process.

    Build one with :meth:`GroupCoordinator.consumer
    <headwater.groups.GroupCoordinator.consumer>` and enter it with ``async with``
    (entering joins the group and waits for the first assignment; leaving commits if
    auto-commit is on, tells ``on_revoked``, and leaves the group — a static member does
    not leave, so that it can come back within its session timeout). Iterate it with
    ``async for batch in consumer`` (one task iterates at a time).

    Concurrency: use it from the event loop of its coordinator; the other methods may be
    called from any task of that loop, including from the callbacks.
    """

    # -- life cycle ------------------------------------------------------------------

    async def __aenter__(self) -> Consumer:
        if self._entered:
            raise RuntimeError("a Consumer can be entered only once")
        self._entered = True
        if not self._topics:
            raise GroupError("a consumer needs at least one topic")
        for topic in self._topics:
            self._store.partitions(topic)  # TopicNotFoundError for a topic that is missing
        self._task_group = anyio.create_task_group()
        await self._task_group.__aenter__()
        try:
            self._task_group.start_soon(self._heartbeats)
            async with self._lock:
                await self._ensure_membership()
            self._task_group.start_soon(self._rebalancer)
        except BaseException:
            await self._shut_down()
            raise
        self._next_auto_commit = anyio.current_time() + self._auto_commit_interval_s
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._close(clean=exc_type is None)

    async def aclose(self) -> None:
        """Close as a clean exit of ``async with`` does: commit (auto), revoke, leave."""
        await self._close(clean=True)

    async def _close(self, *, clean: bool) -> None:
        """On a clean exit, commit (auto-commit) and tell ``on_revoked`` (``on_lost`` if
        this member was fenced); then leave.

        After an error or cancellation nothing is committed and no callback runs: the
        batch in hand may not have been processed.
        """
        if self._closed or self._task_group is None:
            return
        self._closed = True
        self._rebalancer_scope.cancel()
        self._pulse()
        try:
            if clean and self._failure is None:
                async with self._lock:
                    owned = list(self._assignment)
                    if owned:
                        await self._give_up(owned, lost=self._fenced is not None)
        finally:
            await self._shut_down()
        if clean:
            self._raise_failure(unless_raised=True)  # a failure nobody has heard of yet

    async def _shut_down(self) -> None:
        self._closed = True
        if self._task_group is not None:
            self._task_group.cancel_scope.cancel()
            await self._task_group.__aexit__(None, None, None)
        await self._leave()

    # -- iteration -------------------------------------------------------------------

    def __aiter__(self) -> Consumer:
        return self

    async def __anext__(self) -> ConsumerBatch:
        """Return the next batch from an assigned, unpaused partition, waiting if need be.

        A batch given before is done with once this is called (rebalances may run, and
        auto-commit counts it as processed).

        :raises StopAsyncIteration: once the consumer is closed.
        :raises FencedInstanceIdError: if another process took this static member's place.
        :raises GroupError: if the background tasks stopped (the coordinator closed, a
            rebalance failed); also raised by :meth:`commit`, and when leaving the
            ``async with`` block if nothing raised it before. A callback's own exception
            is raised the same way.
        """
        self._holding = False
        if self._needs_rejoin:
            self._pulse()  # the rebalancer waits for the batch to be handed back
        while True:
            self._raise_failure()
            if self._closed:
                raise StopAsyncIteration
            changed = self._changed
            async with self._lock:
                await self._ensure_membership()
                auto_commit = self._config.enable_auto_commit
                if auto_commit and anyio.current_time() >= self._next_auto_commit:
                    await self._auto_commit(list(self._assignment))
                batch = await self._fetch()
                if batch is not None:
                    self._holding = True
                    return batch
            await self._wait_for_records(changed)

    async def _fetch(self) -> ConsumerBatch | None:
        partitions = list(self._assignment)
        count = len(partitions)
        for step in range(count):
            tp = partitions[(self._next_index + step) % count]
            if tp in self._paused:
                continue
            partition = self._assignment[tp]
            position = self._positions[tp]
            if not partition.log_start_offset <= position <= partition.log_end_offset:
                position = self._positions[tp] = self._reset_position(partition)
            isolation = self._config.isolation_level
            if position >= partition.upper_offset(isolation):
                continue
            try:
                records = await partition.read_records(
                    position, self._config.max_bytes, isolation=isolation
                )
            except OffsetOutOfRangeError:  # retention moved the log start meanwhile
                self._positions[tp] = self._reset_position(partition)
                continue
            if records:
                self._next_index = (self._next_index + step + 1) % count
                # Past transaction markers that follow (never records), as Kafka consumers
                # do: else a log ending in one would leave the position short of the end.
                after = records[-1].offset + 1
                self._positions[tp] = await partition.skip_hidden(after, isolation=isolation)
                return ConsumerBatch(tp.topic, tp.partition, records)
            self._positions[tp] = await partition.skip_hidden(position, isolation=isolation)
        return None

    async def _wait_for_records(self, changed: anyio.Event) -> None:
        waiting = [
            (partition, self._positions[tp])
            for tp, partition in self._assignment.items()
            if tp not in self._paused
        ]
        async with anyio.create_task_group() as tg:

            async def wait_partition(partition: Partition, position: int) -> None:
                await partition.wait_for(position, isolation=self._config.isolation_level)
                tg.cancel_scope.cancel()

            async def wait_changed() -> None:
                await changed.wait()
                tg.cancel_scope.cancel()

            for partition, position in waiting:
                tg.start_soon(wait_partition, partition, position)
            tg.start_soon(wait_changed)

    # -- positions -------------------------------------------------------------------

    def assignment(self) -> frozenset[TopicPartition]:
        """Return the partitions this member is assigned now."""
        return frozenset(self._assignment)

    def paused(self) -> frozenset[TopicPartition]:
        """Return the assigned partitions that are paused."""
        return frozenset(self._paused)

    def position(self, partition: TopicPartition | tuple[str, int]) -> int:
        """Return the offset of the next record the consumer will yield from ``partition``.

        :raises PartitionNotAssignedError: if the partition is not assigned to it.
        """
        return self._positions[self._assigned(partition)]

    def seek(self, partition: TopicPartition | tuple[str, int], offset: int) -> None:
        """Make ``partition``'s next batch start at ``offset``.

        An offset outside the log is reset by ``auto_offset_reset`` when next read.

        :raises PartitionNotAssignedError: if the partition is not assigned to it.
        :raises OffsetOutOfRangeError: if ``offset`` is negative.
        """
        tp = self._assigned(partition)
        if offset < 0:
            raise OffsetOutOfRangeError(f"cannot seek {tp.topic}-{tp.partition} to {offset}")
        self._positions[tp] = offset
        self._pulse()

    def pause(self, partitions: Iterable[TopicPartition | tuple[str, int]]) -> None:
        """Stop yielding batches of ``partitions`` (they stay assigned) until resumed.

        :raises PartitionNotAssignedError: if one is not assigned (none is paused then).
        """
        self._paused.update([self._assigned(tp) for tp in partitions])

    def resume(self, partitions: Iterable[TopicPartition | tuple[str, int]]) -> None:
        """Yield batches of paused ``partitions`` again.

        :raises PartitionNotAssignedError: if one is not assigned (none is resumed then).
        """
        self._paused.difference_update([self._assigned(tp) for tp in partitions])
        self._pulse()

    def lag(self) -> dict[TopicPartition, int]:
        """Return, per assigned partition, how many offsets lie between its position and
        the high watermark (``READ_COMMITTED``: the last stable offset), sorted by partition."""
        return {
            tp: max(
                self._assignment[tp].upper_offset(self._config.isolation_level)
                - self._positions[tp],
                0,
            )
            for tp in sorted(self._assignment)
        }

    def committed(self) -> dict[TopicPartition, OffsetAndMetadata]:
        """Return the group's committed offsets for the assigned partitions."""
        offsets = self._coordinator.committed(self.group_id)
        return {tp: offset for tp, offset in offsets.items() if tp in self._assignment}

    @property
    def member_id(self) -> str:
        """The member id the coordinator gave this consumer ("" before it joined)."""
        return self._member_id

    @property
    def generation_id(self) -> int:
        """The generation of the group this member last joined (-1 before)."""
        return self._generation_id

    def _assigned(self, partition: TopicPartition | tuple[str, int]) -> TopicPartition:
        tp = TopicPartition(*partition)
        if tp not in self._assignment:
            raise PartitionNotAssignedError(
                f"{tp.topic}-{tp.partition} is not assigned to this consumer of {self.group_id!r}"
            )
        return tp

    # -- committing ------------------------------------------------------------------

    async def commit(
        self,
        offsets: Mapping[TopicPartition, int | OffsetAndMetadata]
        | Mapping[tuple[str, int], int | OffsetAndMetadata]
        | None = None,
    ) -> None:
        """Commit the positions of what was delivered, or the given ``offsets``; return once
        they are durable.

        Without ``offsets``, each assigned partition whose position moved since this
        member last committed it is committed at its position (the offset after the last
        record yielded).

        :raises RebalanceInProgressError: while the group completes a rebalance, or this
            member is rejoining after being fenced.
        :raises FencedMemberError: if this member is no longer in the group's generation
            (its session expired, another member took its instance id).
        :raises StoreError: if the offsets cannot be written.
        :raises GroupError: if the consumer stopped (see :meth:`__anext__`).
        """
        self._raise_failure()
        if offsets is None:
            changed = {
                tp: position
                for tp, position in self._positions.items()
                if self._committed.get(tp) != position
            }
            await self._commit(changed)
        else:
            await self._commit({TopicPartition(*tp): value for tp, value in offsets.items()})
