"""Running a sink: a consumer group member that commits only what its destination took.

A sink is a :class:`SinkWriter`: it is handed the records of one partition at a time and
says what may be committed (a :class:`Checkpoint`: the next input offset, and a note for
the commit's metadata, see :mod:`._position`). :class:`SinkRunner` does the rest, the
same for every sink:

- it joins the consumer group (``auto_offset_reset="earliest"``, no auto-commit: a
  commit is only ever what the writer returned) through a :class:`SinkGroups`: the data
  directory's :class:`~headwater.groups.GroupCoordinator`, or a cluster's
  :class:`~headwater.connectors.KafkaGroups`;
- when a partition is assigned, the writer may recover (a file sink finds the files it
  finished but did not commit) and name where to start; the runner seeks there and
  commits it;
- it hands each batch to the writer and commits the checkpoint the writer returns;
- it wakes at the writer's next deadline (a file to roll by time) even when no records
  come, and commits what that finished;
- before a partition is given up in a rebalance, and on a clean stop, the writer
  finishes what it can and the runner commits that; a partition lost to a fenced member
  is dropped without a commit (its new owner redelivers from the group's offset).

A delivery that fails with an error of the machine (a full disk, an I/O error) is
logged and retried with capped, jittered backoff (tenacity): the writer drops what it
holds of the partition and the partition is read again from its checkpoint, so nothing
is lost and nothing past the checkpoint counts as delivered.

A commit that fails (the group rebalancing, the member fenced) is logged; the checkpoint
stays pending and goes with the next commit while the partition is still this member's.
Records past a failed commit may be delivered again by the partition's next owner
(at least once), never lost. The writer's methods are called one at a time.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Literal, Protocol

import anyio
from anyio.abc import TaskStatus
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, wait_random_exponential

from headwater.groups import ConsumerBatch, GroupError, OffsetAndMetadata, TopicPartition

from ._errors import RETRYABLE
from ._position import encode_checkpoint

logger = logging.getLogger("headwater.connectors")

#: The longest wait between two tries.
MAX_BACKOFF_S = 30.0


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """What a sink may commit for a partition: the next offset to read, and a note."""

    offset: int
    note: Mapping[str, object] | None = None

    def committed(self) -> OffsetAndMetadata:
        """Return the checkpoint as the group's committed offset."""
        return OffsetAndMetadata(self.offset, encode_checkpoint(dict(self.note or {})))


class SinkWriter(Protocol):
    """A destination's side of a sink (see the module). Called one method at a time."""

    async def assigned(
        self, partition: TopicPartition, committed: OffsetAndMetadata | None
    ) -> Checkpoint | None:
        """``partition`` is now this sink's; return where to start if not at ``committed``."""
        ...

    async def write(self, batch: ConsumerBatch, commit: Committer) -> Checkpoint | None:
        """Deliver ``batch`` (or dead-letter it); return what may now be committed.

        ``commit`` commits a checkpoint at once, for a sink that must record something
        before it goes on (the extent of a batch it is about to send).
        """
        ...

    def next_deadline(self) -> float | None:
        """Return when :meth:`tick` has work (``anyio.current_time()`` scale), or None."""
        ...

    async def tick(self) -> dict[TopicPartition, Checkpoint]:
        """Do the work that was due by now; return what may now be committed."""
        ...

    async def revoked(self, partition: TopicPartition, *, lost: bool) -> Checkpoint | None:
        """Finish (``lost``: abandon) ``partition``, which is no longer this sink's."""
        ...


class Committer(Protocol):
    """Commits a checkpoint of a partition now, for a :class:`SinkWriter` in the middle of
    a batch; returns whether the commit succeeded (a failed one goes with the next)."""

    def __call__(self, partition: TopicPartition, checkpoint: Checkpoint, /) -> Awaitable[bool]: ...


#: A rebalance callback of a :class:`SinkConsumer`: the partitions concerned, sorted.
PartitionsCallback = Callable[[list[TopicPartition]], Awaitable[None]]


class SinkConsumer(AbstractAsyncContextManager["SinkConsumer"], Protocol):
    """A consumer group member as a :class:`SinkRunner` drives it: the embedded
    :class:`~headwater.groups.Consumer`, or one over a Kafka-protocol cluster.

    Entering it joins the group and waits for the first assignment; a clean exit gives
    the partitions up (``on_revoked``) and leaves. ``__anext__`` returns the next batch
    of one partition, or ``None`` when a partition reached its end (a consumer that
    learns of ends by events, not by offsets, says so to a caller waiting to catch up),
    and raises ``StopAsyncIteration`` once the consumer is closed.
    """

    def __anext__(self) -> Awaitable[ConsumerBatch | None]:
        """Return the next batch (see the class)."""
        ...

    def assignment(self) -> frozenset[TopicPartition]:
        """Return the partitions this member is assigned now."""
        ...

    def committed(self) -> dict[TopicPartition, OffsetAndMetadata]:
        """Return the group's committed offsets of the assigned partitions."""
        ...

    def seek(self, partition: TopicPartition, offset: int) -> None:
        """Make ``partition``'s next batch start at ``offset`` (outside its log: reset to
        its start)."""
        ...

    def lag(self) -> dict[TopicPartition, int]:
        """Return how far behind its log end each assigned partition is (0: caught up)."""
        ...

    async def commit(self, offsets: Mapping[TopicPartition, OffsetAndMetadata]) -> None:
        """Commit ``offsets``; return once durable.

        :raises GroupError: if the group refuses (rebalancing, this member fenced).
        """
        ...


class SinkGroups(Protocol):
    """Where a :class:`SinkRunner` finds its consumer group: a
    :class:`~headwater.groups.GroupCoordinator`, or a Kafka-protocol cluster."""

    def consumer(
        self,
        group_id: str,
        topics: Sequence[str],
        *,
        auto_offset_reset: Literal["earliest", "latest"],
        enable_auto_commit: bool,
        on_assigned: PartitionsCallback,
        on_revoked: PartitionsCallback,
        on_lost: PartitionsCallback,
    ) -> SinkConsumer:
        """Return a member of ``group_id`` reading ``topics`` (enter it to join)."""
        ...


@dataclass(frozen=True, slots=True)
class SinkStatistics:
    """Counters of a :class:`SinkRunner` since it started."""

    batches: int
    records: int
    commits: int
    failed_commits: int
    retries: int


class SinkRunner:
    """Runs a :class:`SinkWriter` as a member of consumer group ``group_id`` on ``topic``.

    :param groups: where the group is: the group coordinator of the store the topic is
        in, or a Kafka-protocol cluster's groups.
    :param topic: the input topic (it must exist).
    :param group_id: the consumer group; members of one group share the partitions.
    :param writer: the sink.
    :param backoff_s: the first retry's largest wait after a failure; each further
        retry doubles it, up to ``MAX_BACKOFF_S`` (full jitter: a wait is random below that).
    """

    def __init__(
        self,
        groups: SinkGroups,
        topic: str,
        group_id: str,
        writer: SinkWriter,
        *,
        backoff_s: float = 0.2,
    ) -> None:
        self.groups = groups
        self.backoff_s = backoff_s
        self.topic = topic
        self.group_id = group_id
        self.writer = writer
        self._lock = anyio.Lock()
        self._pending: dict[TopicPartition, Checkpoint] = {}
        self._consumer: SinkConsumer | None = None
        self._committed: dict[TopicPartition, int] = {}
        self._deadline_moved = anyio.Event()
        self._stop_scope = anyio.CancelScope()
        self._committed_event = anyio.Event()
        self._batches = self._records = self._commits = self._failed_commits = 0
        self._retries = 0
        #: Partitions whose writer state a failure left in doubt, to be rebuilt from
        #: their checkpoint before any more of them is delivered.
        self._damaged: set[TopicPartition] = set()

    def statistics(self) -> SinkStatistics:
        """Return the counters so far."""
        return SinkStatistics(
            self._batches, self._records, self._commits, self._failed_commits, self._retries
        )

    async def run(
        self,
        *,
        until_caught_up: bool = False,
        task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        """Deliver the topic until cancelled or stopped; with ``until_caught_up``, stop
        once every assigned partition is delivered up to its end.

        ``task_status.started()`` is called once the member has its first assignment.
        Returning (``until_caught_up``, or :meth:`stop`) finishes every partition and commits;
        cancellation does neither (the uncommitted tail is delivered again later). A
        delivery that fails with an error of the machine is retried (see the module).

        :raises TopicNotFoundError: if the topic does not exist.
        """
        consumer = self.groups.consumer(
            self.group_id,
            [self.topic],
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            on_assigned=self._on_assigned,
            on_revoked=self._on_revoked,
            on_lost=self._on_lost,
        )
        self._consumer = consumer
        async with consumer:
            task_status.started()
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._run_timers)
                with self._stop_scope:
                    async for attempt in self._retrying():
                        with attempt:
                            await self._consume(consumer, until_caught_up)
                tg.cancel_scope.cancel()
            # Leaving the block cleanly gives every partition up: the writer finishes
            # each (on_revoked) and the runner commits that.

    async def _consume(self, consumer: SinkConsumer, until_caught_up: bool) -> None:
        """Deliver batches until the consumer closes (or, ``until_caught_up``, is caught
        up); raise a retryable failure once the partition it hit is marked damaged."""
        while True:
            await self._repair()
            if until_caught_up and _caught_up(consumer):
                return
            try:
                batch = await consumer.__anext__()
            except StopAsyncIteration:
                return
            if batch is None or batch.topic_partition in self._damaged:
                # An end reached; or an assignment that failed: read again once repaired.
                continue
            await self._deliver(batch)

    async def wait_committed(self, offsets: Mapping[TopicPartition, int]) -> None:
        """Wait until this runner has committed at least ``offsets`` (woken by each commit)."""
        committed = self._committed
        while not all(committed.get(tp, -1) >= offset for tp, offset in offsets.items()):
            await self._committed_event.wait()

    def stop(self) -> None:
        """Make :meth:`run` finish every partition, commit, and return (a clean stop)."""
        self._stop_scope.cancel()

    async def _deliver(self, batch: ConsumerBatch) -> None:
        async with self._lock:
            try:
                checkpoint = await self.writer.write(batch, self._commit_now)
            except RETRYABLE:
                self._damaged.add(batch.topic_partition)
                raise
            self._batches += 1
            self._records += len(batch.records)
            if checkpoint is not None:
                self._pending[batch.topic_partition] = checkpoint
            await self._commit()
        self._deadline_moved.set()

    async def _run_timers(self) -> None:
        while True:
            self._deadline_moved = anyio.Event()
            deadline = self.writer.next_deadline()
            with anyio.move_on_after(
                math.inf if deadline is None else deadline - anyio.current_time()
            ):
                await self._deadline_moved.wait()
                continue
            async with self._lock:
                try:
                    due = await self.writer.tick()
                except RETRYABLE as exc:
                    # Which partition failed is not known: every one is read again.
                    self._failed("a timed roll", exc)
                    assert self._consumer is not None
                    self._damaged.update(self._consumer.assignment())
                else:
                    self._pending.update(due)
                    await self._commit()
            if self._damaged:
                async for attempt in self._retrying():
                    with attempt:
                        await self._repair()

    async def _repair(self) -> None:
        """Rebuild the writer's state of every damaged partition from its checkpoint.

        The writer drops what it holds of the partition (as if it were lost), recovers
        it as at an assignment, and the consumer reads it again from there: what the
        writer had not finished is written again, nothing it finished is.
        """
        if not self._damaged:
            return
        consumer = self._consumer
        assert consumer is not None
        async with self._lock:
            assigned = consumer.assignment()
            for tp in sorted(self._damaged):
                if tp in assigned:
                    await self.writer.revoked(tp, lost=True)
                    committed = consumer.committed().get(tp)
                    start = await self.writer.assigned(tp, committed) or self._pending.get(tp)
                    if start is not None:
                        self._pending[tp] = start
                        consumer.seek(tp, start.offset)
                    else:
                        # No checkpoint: the committed offset, or (0 is reset by
                        # auto_offset_reset when outside the log) the log start.
                        consumer.seek(tp, committed.offset if committed is not None else 0)
                self._damaged.discard(tp)
            await self._commit()

    def _retrying(self) -> AsyncRetrying:
        return AsyncRetrying(
            retry=retry_if_exception_type(RETRYABLE),
            wait=wait_random_exponential(multiplier=self.backoff_s, max=MAX_BACKOFF_S),
            sleep=anyio.sleep,
            before_sleep=self._report,
            reraise=True,
        )

    def _report(self, state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome is not None else None
        wait = state.next_action.sleep if state.next_action is not None else 0.0
        self._failed(f"a delivery (next try in {wait:.1f} s)", exc)

    def _failed(self, what: str, exc: BaseException | None) -> None:
        self._retries += 1
        logger.warning(
            "sink %s on %s: %s failed: %s; the partitions concerned are read again from "
            "their last checkpoint",
            self.group_id,
            self.topic,
            what,
            exc,
        )

    async def _commit_now(self, partition: TopicPartition, checkpoint: Checkpoint) -> bool:
        """Commit ``checkpoint`` (and whatever is pending) now; return whether it stuck."""
        self._pending[partition] = checkpoint
        return await self._commit() and partition not in self._pending

    async def _commit(self) -> bool:
        """Commit what is pending for assigned partitions; return False if that failed."""
        consumer = self._consumer
        if not self._pending or consumer is None:
            return True
        assigned = consumer.assignment()
        offsets = {tp: cp.committed() for tp, cp in self._pending.items() if tp in assigned}
        self._pending = {tp: cp for tp, cp in self._pending.items() if tp in assigned}
        if not offsets:
            return True
        try:
            await consumer.commit(offsets)
        except (GroupError, *RETRYABLE) as exc:
            self._failed_commits += 1
            logger.warning(
                "sink %s on %s: commit failed (%s); it is retried with the next one",
                self.group_id,
                self.topic,
                exc,
            )
            return False
        self._commits += 1
        for tp, done in offsets.items():
            self._committed[tp] = done.offset
        self._committed_event.set()
        self._committed_event = anyio.Event()
        for tp, committed in offsets.items():
            if self._pending.get(tp) is not None and self._pending[tp].offset == committed.offset:
                del self._pending[tp]
        return True

    # The callbacks run inside the consumer, which stops for good on an exception: a
    # failure of the writer there is logged, and the partition repaired or dropped.

    async def _on_assigned(self, partitions: list[TopicPartition]) -> None:
        consumer = self._consumer
        assert consumer is not None
        committed = consumer.committed()
        async with self._lock:
            for tp in partitions:
                try:
                    start = await self.writer.assigned(tp, committed.get(tp))
                except RETRYABLE as exc:
                    self._failed(f"taking {tp.topic}-{tp.partition} on", exc)
                    self._damaged.add(tp)  # repaired before any batch of it is delivered
                    continue
                if start is not None:
                    consumer.seek(tp, start.offset)
                    self._pending[tp] = start
            await self._commit()

    async def _on_revoked(self, partitions: list[TopicPartition]) -> None:
        async with self._lock:
            for tp in partitions:
                try:
                    checkpoint = await self.writer.revoked(tp, lost=self._drop(tp))
                except RETRYABLE as exc:
                    # What it held is not committed: its next owner writes it again.
                    self._failed(f"finishing {tp.topic}-{tp.partition}", exc)
                    await self._abandon(tp)
                    continue
                if checkpoint is not None:
                    self._pending[tp] = checkpoint
            await self._commit()
            for tp in partitions:
                self._pending.pop(tp, None)

    async def _on_lost(self, partitions: list[TopicPartition]) -> None:
        async with self._lock:
            for tp in partitions:
                self._drop(tp)
                await self._abandon(tp)
                self._pending.pop(tp, None)

    def _drop(self, tp: TopicPartition) -> bool:
        """Forget that ``tp`` is damaged; return whether it was (its writer state is
        then not to be trusted, so it is abandoned rather than finished)."""
        damaged = tp in self._damaged
        self._damaged.discard(tp)
        return damaged

    async def _abandon(self, tp: TopicPartition) -> None:
        try:
            await self.writer.revoked(tp, lost=True)
        except RETRYABLE as exc:  # what it leaves behind, its next owner clears up
            self._failed(f"dropping {tp.topic}-{tp.partition}", exc)


def _caught_up(consumer: SinkConsumer) -> bool:
    return all(lag == 0 for lag in consumer.lag().values())
