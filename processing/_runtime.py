"""The runtime: the app's tasks over a backend, committing only what is durable.

Theory of operation
-------------------
:meth:`Runtime.run` creates the topics the graph needs (a missing source topic is an
error unless its stream declared a partition count), plans the topic groups
(``_tasks.py``) with one :class:`~headwater.processing._pipeline.Pipeline` each, and
joins the app's consumer group (group id = app name) through the backend. Assigned
partitions are grouped into tasks; a task gets its own steps and, for each of its
partitions, a *partition loop*: fetch a batch (waiting when caught up), run it through
the task's steps under the task's lock (so the task's steps see one batch at a time),
write every output partition's records and wait until they are durable, then move the
partition's *position* past the batch. Only positions are ever committed (every
``commit_interval_ms``, when a partition is revoked, and when the run ends), with the
task's stream time as the commit's metadata, so a committed offset never runs ahead of
durable outputs: after a crash, at any instant, the app resumes at the last commit and
re-derives at most the records after it (at-least-once; duplicates only in that
uncommitted tail).

Order within a task: a task that reads several partitions (the sides of a join, merged
co-partitioned topics) takes their records in timestamp order, as Kafka Streams does: a
loop holding a batch processes it only up to the first timestamp of another partition's
batch, waiting for a partition that is fetching, and for one that has found nothing to
read for up to ``max_task_idle_ms`` (see :meth:`Runtime._wait_turn`). Without it, one
side's backlog would run the join's stream time ahead and leave the other side late.
Tasks of one partition (most) skip all of it.

Time: a partition loop races its fetch against its task's earliest wall-time timer
(the fetch's cancel scope gets the deadline, converted by the injected clock); when it
fires first, the loop runs the task's due timers (``Pipeline.advance``) and writes what
they emitted, then fetches again. Nothing polls: a task without timers waits on its
fetch alone.

Rebalances: partitions given up are first finished (the batch in hand is written), then
committed; a commit that fails then is retried with backoff, and if it still fails the
run says so (an error in the log, and ``RunStatistics.commit_failures``): the next
owner re-processes from the last commit. Partitions *lost* (this member's session
expired) are stopped without committing, since the group would refuse it.

Backpressure and memory: a partition loop holds one batch (``max_batch_bytes`` of
input) and its outputs; it reads the next batch only after the last one's outputs are
durable, so a slow operator or a slow output slows reading, never buffers without bound.

Repartition topics (the internal topics a ``key_by`` writes and the app reads back) are
created with no retention (``INTERNAL_TOPIC_CONFIG``): their records keep their inputs'
timestamps, so time-based retention would delete a replay of old input before it is read.
The runtime deletes their records itself instead, as Kafka Streams does: after a commit,
the records before each committed offset of a repartition partition
(``Backend.delete_records``), at most every ``AppConfig.repartition_purge_interval_ms``
(30 s by default; ``None``: never) and once more when the run ends, in a task of its own.
An output's lineage names the repartition record it came from, so ``headwater trace``
follows an output back through a repartition topic only while that record is kept. A
purge that fails is logged and skipped: it is housekeeping, and never holds a commit up.
Internal topics that existed before the run are checked before anything is created, as
Kafka Streams validates its own: a repartition topic must have the configs above (time
or size retention, or compaction, could delete records not read yet), and a store's
changelog must be compacted (retention would delete state a restore needs). The app
refuses to start otherwise, and says which command fixes the topic.

Metrics (``_metrics.py``): every operator counts the records that reach it and that it
passes on, per batch; with the process's metrics on when the runtime is made, each
batch's time from its task taking it to its outputs being durable and each commit's time
are observed too, and the end offsets of the partitions processed are looked up every
commit interval, for the lag of each task.

Exactly-once (``AppConfig.guarantee="exactly_once"``, on a backend whose membership
commits transactions, see ``_backends``): every write of every task goes into the open
transaction of the worker's one transactional producer, and a commit, every
``commit_interval_ms``, takes every task's lock (no batch is half written), writes the
stores' changelog records, and commits the transaction with every partition's position
as the group's offsets: outputs, state and positions become visible together to
read_committed readers, or not at all, so a crash anywhere re-processes only what no
reader saw. Positions that moved past transaction markers alone (a fetch returning no
records, see ``Backend.fetch``) are committed too. A commit with nothing to commit (no
write since the last one, of outputs, timers' outputs or changelog records, and no
position moved) ends no transaction and is not counted: an idle app commits nothing.
Whatever makes a commit impossible aborts the open transaction and restarts every task
from the last commit, its stores closed dirty and restored from their changelogs:
partitions lost, a commit the cluster refused, a run failing. Partitions revoked are
committed first, like the at-least-once run. A producer fenced by another worker with
the same transactional id (a restart of this one) stops the run without committing: the
other worker owns its work. A run until caught up commits before it reads its internal
topics' ends, and again before it decides they are reached: records written there are
seen once committed.

Stopping: :meth:`Runtime.run` ends when its ``stop`` event is set (SIGINT/SIGTERM in
``App.run``) or, with ``until_caught_up``, when every input partition has been
processed up to the end offset it had at the start (then, in turn, every repartition
topic up to its end). A graceful stop cancels only the loops' waits for new records: a
batch in progress is finished and written, then positions are committed and the worker
leaves the group. A user function that raises under the ``raise`` policy fails its
loop, which stops the run; positions that are durable are still committed first.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import anyio
from anyio.abc import TaskGroup
from tenacity import (
    AsyncRetrying,
    RetryError,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential,
    wait_random,
)

from headwater.groups import (
    CoordinatorLoadInProgressError,
    CoordinatorNotAvailableError,
    GroupError,
    NotCoordinatorError,
    RebalanceInProgressError,
    TopicPartition,
)
from headwater.store import HeadwaterError, OffsetOutOfRangeError, RecordColumns, StoreError

from ._backends import Backend, Membership, Transactions
from ._clock import Clock, WallClock
from ._config import EXACTLY_ONCE, AppConfig
from ._errors import ProducerFencedError, TopologyError, TransactionAbortedError
from ._graph import Graph, Role, plan_topics
from ._metrics import PROCESSING_METRICS, OperatorCounts
from ._pipeline import Outcome, Pipeline, Write
from ._stores._changelog import StoreRegistry, checkpointed, flush_writes, restore
from ._tasks import (
    PartitionState,
    Task,
    TaskId,
    TaskPlan,
    check_copartitioning,
    copartition,
    plan_topic_groups,
    resume,
)

logger = logging.getLogger("headwater.processing")

#: Commit errors worth retrying before a revoked partition is given up.
_TRANSIENT = (
    RebalanceInProgressError,
    CoordinatorNotAvailableError,
    CoordinatorLoadInProgressError,
    NotCoordinatorError,
    StoreError,
)
_FINAL_COMMIT_ATTEMPTS = 5

#: The configs a repartition topic is created with: no time or size retention, since its
#: records keep their inputs' timestamps (a replay of last month's input would have them
#: deleted before they are read); the runtime deletes them once consumed instead.
INTERNAL_TOPIC_CONFIG = {"cleanup.policy": "delete", "retention.ms": "-1", "retention.bytes": "-1"}


@dataclass(frozen=True, slots=True)
class RunStatistics:
    """Counters of one run of an app.

    ``commits`` counts the commits made: of offsets that moved or, with
    ``exactly_once``, of transactions that hold something (an interval with nothing
    written and no offset moved makes none). ``commit_failures`` counts commits that
    failed: a periodic one is retried at the next interval, a final one (partitions given
    up, the run ending) after retries; the records after the last successful commit are
    processed again by whoever resumes.
    ``late`` counts records that windowed steps dropped because their window had closed
    (those a ``late()`` stream took are counted too). ``commit_seconds`` is the time the
    commits took (with ``exactly_once``, the changelog flush and the transaction's
    commit), ``aborts`` the transactions an exactly-once run aborted.
    ``write_seconds`` is the time the partition loops waited for their batches' outputs
    to be written and acknowledged (durable), summed over the loops, which wait side by
    side: against ``elapsed_s`` times the number of partitions, it says how much of a
    run went to waiting for the log or cluster rather than to processing.
    """

    records_in: int
    records_out: int
    skipped: int
    dead_lettered: int
    batches: int
    commits: int
    elapsed_s: float
    commit_failures: int = 0
    late: int = 0
    commit_seconds: float = 0.0
    aborts: int = 0
    write_seconds: float = 0.0

    @property
    def records_per_s(self) -> float:
        """Input records processed per second of the run."""
        return self.records_in / self.elapsed_s if self.elapsed_s > 0 else 0.0


class PartitionProgress(NamedTuple):
    """How far a run got in one input partition: from ``start_offset`` (where it began
    reading) at ``position`` now, toward ``end_offset`` (the end when the run started,
    where a run until caught up stops)."""

    start_offset: int
    position: int
    end_offset: int


class RestoreProgress(NamedTuple):
    """How far a store's restore got: ``restored`` changelog records of ``total``."""

    restored: int
    total: int

    @property
    def done(self) -> bool:
        """Whether the restore read all it had to."""
        return self.restored >= self.total


def _slice(records: RecordColumns, start: int, stop: int) -> RecordColumns:
    """Return records ``start`` to ``stop`` (exclusive) of ``records``."""
    return RecordColumns(
        records.offsets[start:stop],
        records.timestamps[start:stop],
        records.keys[start:stop],
        records.values[start:stop],
        records.headers[start:stop],
    )


class _Loop:
    """One partition of a running task: its fetch loop's handles."""

    __slots__ = ("done", "fetch_scope", "scope", "state", "stopping")

    def __init__(self, state: PartitionState) -> None:
        self.state = state
        self.stopping = False
        self.fetch_scope: anyio.CancelScope | None = None
        self.scope = anyio.CancelScope()
        self.done = anyio.Event()

    def kill(self) -> None:
        """Stop now, even in the middle of a batch (its outputs may be partly written)."""
        self.stopping = True
        self.scope.cancel()

    def stop(self) -> None:
        """Stop after the batch in hand (cancel only a wait for new records)."""
        self.stopping = True
        if self.fetch_scope is not None:
            self.fetch_scope.cancel()

    def stopped(self) -> bool:
        """Return whether :meth:`stop` was called (a call, so that it is read afresh)."""
        return self.stopping


class _Running:
    """A task and what runs it: its pipeline, its lock, its partition loops, the
    positions its stores' changelogs last covered (what a commit may take) and, for a
    task of several partitions, what orders their batches (see :meth:`Runtime._wait_turn`)."""

    __slots__ = ("changed", "flushed", "heads", "idle_since", "lock", "loops", "pipeline", "task")

    def __init__(self, task: Task, pipeline: Pipeline) -> None:
        self.task = task
        self.pipeline = pipeline
        self.lock = anyio.Lock()
        self.loops: dict[TopicPartition, _Loop] = {}
        self.flushed: dict[TopicPartition, int] = {}
        #: The first timestamp of the batch each partition loop holds.
        self.heads: dict[TopicPartition, int] = {}
        #: Since when (event loop time) each partition loop has found nothing to read.
        self.idle_since: dict[TopicPartition, float] = {}
        self.changed = anyio.Event()

    @property
    def synchronized(self) -> bool:
        """Whether the task reads several partitions, whose batches go in timestamp order."""
        return len(self.task.group.topics) > 1

    def notify(self) -> None:
        """Wake the loops waiting for their turn."""
        self.changed.set()
        self.changed = anyio.Event()


class Runtime:
    """Runs an app's graph against a backend; see the module docstring.

    :param name: the app's name, which is its consumer group id.
    :param clock: wall time (the machine's by default).
    """

    def __init__(
        self,
        name: str,
        graph: Graph,
        config: AppConfig,
        backend: Backend,
        *,
        clock: Clock | None = None,
        until_caught_up: bool = False,
        state_dir: Path | None = None,
    ) -> None:
        self._name = name
        self._graph = graph
        self._config = config
        self._backend = backend
        self._clock = clock or WallClock()
        self._until_caught_up = until_caught_up
        self._plan = TaskPlan([])
        self._pipelines: dict[int, Pipeline] = {}
        self._internal_topics: list[str] = []
        #: Committed offsets of repartition partitions, not yet purged up to (``_purge``).
        self._purgeable: dict[TopicPartition, int] = {}
        self._purge_lock = anyio.Lock()
        self._purged_at = -math.inf
        self._running: dict[TaskId, _Running] = {}
        self._loops: dict[TopicPartition, tuple[_Running, _Loop]] = {}
        self._pending: list[TopicPartition] = []
        self._membership: Membership | None = None
        self._commit_lock = anyio.Lock()
        #: Set once the run's final commit is due: periodic commits stop there.
        self._ending = False
        self._task_group: TaskGroup | None = None
        self._progress = anyio.Event()
        self._records_in = self._records_out = self._skipped = self._dead_lettered = 0
        self._batches = self._commits = self._commit_failures = self._late = 0
        self._aborts = 0
        self._commit_time = 0.0
        self._write_time = 0.0
        #: Exactly-once: whether the open transaction holds writes (a commit ends it).
        self._written = False
        self._exactly_once = config.guarantee == EXACTLY_ONCE
        self._fenced = False
        self._stop = anyio.Event()
        self._transactions: Transactions | None = None
        self._started = time.perf_counter()
        self._finished: float | None = None
        self._registry = StoreRegistry(state_dir, name)
        #: Each partition's end offset when last looked up (for lag; see ``_watch_ends``).
        self._ends: dict[TopicPartition, int] = {}
        #: Each input partition's end offset when the run started.
        self._targets: dict[TopicPartition, int] = {}
        #: Where each partition processed started, and its state (kept once given up).
        self._states: dict[TopicPartition, tuple[int, PartitionState]] = {}
        self._metrics = PROCESSING_METRICS.get()
        if self._metrics is not None:
            self._metrics.runtimes.add(self)
            self._batch_seconds = self._metrics.batch_seconds.labels(name)
            self._commit_seconds = self._metrics.commit_seconds.labels(name)
            self._write_seconds = self._metrics.write_seconds.labels(name)

    @property
    def name(self) -> str:
        """The app's name (its consumer group id)."""
        return self._name

    def statistics(self) -> RunStatistics:
        """Return the counters so far."""
        return RunStatistics(
            self._records_in,
            self._records_out,
            self._skipped,
            self._dead_lettered,
            self._batches,
            self._commits,
            (self._finished or time.perf_counter()) - self._started,
            self._commit_failures,
            self._late,
            self._commit_time,
            self._aborts,
            self._write_time,
        )

    def tasks(self) -> dict[TaskId, Task]:
        """Return the tasks this worker runs now."""
        return {task_id: running.task for task_id, running in self._running.items()}

    def operator_counts(self) -> dict[str, OperatorCounts]:
        """Return what went through each operator so far, by its label (``#id kind ...``)."""
        nodes = {node.id: node for node in self._graph.nodes}
        return {
            nodes[node_id].label: counts
            for pipeline in self._pipelines.values()
            for node_id, counts in sorted(pipeline.counts.items())
        }

    def progress(self) -> dict[TopicPartition, PartitionProgress]:
        """Return the progress of each input partition this run processed (or processes)."""
        return {
            tp: PartitionProgress(start, state.position, self._targets[tp])
            for tp, (start, state) in self._states.items()
            if tp in self._targets
        }

    def restore_progress(self) -> dict[tuple[str, str], RestoreProgress]:
        """Return, per (task, store) of the tasks this worker runs now, how far the store's
        last restore from its changelog got: records restored of the total to read (a
        task processes nothing until each of its stores has read its total)."""
        return {
            (str(task_id), name): RestoreProgress(store.restored, store.restore_total)
            for task_id, running in self._running.items()
            for name, store in running.task.stores.items()
        }

    def task_lag(self) -> dict[str, int]:
        """Return, per task run now, the records its partitions have yet to read, behind
        the end offsets last looked up."""
        lag: dict[str, int] = {}
        for tp, (running, loop) in self._loops.items():
            behind = max(self._ends.get(tp, loop.state.position) - loop.state.position, 0)
            task = str(running.task.id)
            lag[task] = lag.get(task, 0) + behind
        return lag

    async def prepare(self) -> dict[str, int]:
        """Create the topics the graph needs and plan its tasks; return partition counts.

        :raises TopologyError: if the graph cannot run.
        :raises MissingSourceTopicError: if a source topic is missing (nothing is created).
        """
        graph = self._graph
        graph.validate()
        backend = self._backend
        topics = [n.topic for n in graph.nodes if n.topic] + list(graph.dead_letter_topics())
        existing = {topic: await backend.partition_count(topic) for topic in topics}
        counts = plan_topics(graph, existing)
        for topic in copartition(graph, counts, self._name):  # joins' sides, repartitioned
            existing[topic] = await backend.partition_count(topic)
            counts = plan_topics(graph, existing)
        check_copartitioning(graph, counts)
        # Existing internal topics are checked first: a refused one leaves nothing created.
        internal = set(graph.topics(Role.SOURCE, internal=True))
        for topic in sorted(internal):
            if existing.get(topic) is not None:
                _check_unretained(topic, await backend.topic_config(topic))
        changelogs = graph.changelogs(counts)
        missing = []
        for topic, partitions in changelogs.items():
            have = await backend.partition_count(topic)
            if have is None:
                missing.append(topic)
            elif have != partitions:
                raise TopologyError(
                    f"changelog {topic!r} has {have} partitions, but its store's tasks read "
                    f"{partitions}: the input topics changed; delete the changelog (its state "
                    "is lost) or restore the partition count"
                )
            else:
                _check_compacted(topic, await backend.topic_config(topic))
        for topic, partitions in counts.items():
            if existing.get(topic) is None:
                logger.info(
                    "app %r: creating topic %r (%d partitions)", self._name, topic, partitions
                )
                config = INTERNAL_TOPIC_CONFIG if topic in internal else None
                await backend.create_topic(topic, partitions, config)
        for topic in missing:
            logger.info("app %r: creating changelog %r (%d partitions, compacted)",
                        self._name, topic, changelogs[topic])  # fmt: skip
            await backend.create_topic(topic, changelogs[topic], {"cleanup.policy": "compact"})
        groups = plan_topic_groups(graph, counts)
        self._plan = TaskPlan(groups)
        self._pipelines = {group.id: Pipeline(graph, group, counts) for group in groups}
        read = set(self._plan.topics())
        self._internal_topics = [t for t in graph.topics(Role.SOURCE, internal=True) if t in read]
        return counts

    async def run(self, stop: anyio.Event | None = None) -> RunStatistics:
        """Run until ``stop`` is set (or caught up, if asked); return the statistics.

        :raises OperatorError: if a user function failed under the ``raise`` policy.
        :raises TopologyError: if the graph cannot run.
        """
        self._started = time.perf_counter()
        self._stop = stop or anyio.Event()
        try:
            await self._run(self._stop)
        finally:
            self._finished = time.perf_counter()
        return self.statistics()

    async def _run(self, stop: anyio.Event) -> None:
        counts = await self.prepare()
        internal = set(self._internal_topics)
        targets = {
            TopicPartition(topic, p): await self._backend.end_offset(topic, p)
            for topic in self._plan.topics()
            if topic not in internal
            for p in range(counts[topic])
        }
        self._targets = targets
        self._ends.update(targets)
        async with anyio.create_task_group() as tg:
            self._task_group = tg
            async with self._backend.join(
                self._name,
                self._plan.topics(),
                on_assigned=self._assigned,
                on_revoked=self._revoked,
                on_lost=self._lost,
            ) as membership:
                if self._exactly_once:
                    if not isinstance(membership, Transactions):
                        raise TopologyError(
                            "guarantee 'exactly_once' needs a backend that commits "
                            "transactions (a data directory or a Kafka-protocol cluster)"
                        )
                    self._transactions = membership
                self._membership = membership
                failed = False
                try:
                    await self._start_pending()
                    tg.start_soon(self._commit_periodically)
                    if self._metrics is not None:
                        tg.start_soon(self._watch_ends)
                    async with anyio.create_task_group() as waits:

                        async def finish_when_stopped() -> None:
                            await stop.wait()
                            waits.cancel_scope.cancel()

                        async def finish_when_caught_up() -> None:
                            await self._wait_caught_up(targets)
                            waits.cancel_scope.cancel()

                        waits.start_soon(finish_when_stopped)
                        if self._until_caught_up:
                            waits.start_soon(finish_when_caught_up)
                    await self._stop_loops(list(self._loops))
                except BaseException:
                    failed = True
                    raise
                finally:
                    # No periodic commit after the final one (one under way finishes
                    # first, under the commit lock): none may reach the membership as
                    # it leaves the group.
                    self._ending = True
                    with anyio.CancelScope(shield=True):
                        if not self._exactly_once:
                            await self._commit_final(list(self._loops), "the run ends")
                        elif failed:
                            await self._abort_final()
                        else:
                            await self._commit_final_transaction("the run ends")
                        await self._purge_in_turn()  # after one under way, if any
            tg.cancel_scope.cancel()
        for running in self._running.values():
            self._registry.drop(running.task)
        self._registry.close()

    # -- assignment ------------------------------------------------------------------------

    async def _assigned(self, partitions: list[TopicPartition]) -> None:
        self._pending.extend(partitions)
        if self._membership is not None:
            await self._start_pending()

    async def _start_pending(self) -> None:
        assert self._membership is not None and self._task_group is not None
        pending, self._pending = self._pending, []
        fresh = [tp for tp in pending if tp not in self._loops]
        for task_id, tps in self._plan.tasks_of(fresh).items():
            running = self._running.get(task_id)
            if running is None:
                pipeline = self._pipelines[task_id.group]
                task = pipeline.task(task_id, self._clock, self._registry)
                running = _Running(task, pipeline)
                self._running[task_id] = running
                await resume(task, tps, self._membership, self._backend)
                if task.stores:  # nothing runs before the stores are restored
                    await restore(task, self._backend)
                    running.flushed = task.positions()
            else:
                await resume(running.task, tps, self._membership, self._backend)
            missing = self._plan.missing(task_id, running.task.partitions)
            if missing:
                logger.warning(
                    "app %r: task %s is assigned without %s (another member reads them): "
                    "its steps see only part of its input",
                    self._name,
                    task_id,
                    ", ".join(f"{t}/{p}" for t, p in missing),
                )
            for tp in tps:
                state = running.task.partitions[tp]
                loop = _Loop(state)
                running.loops[tp] = loop
                self._states[tp] = (state.position, state)
                self._loops[tp] = (running, loop)
                logger.info(
                    "app %r: task %s processing %s/%d from offset %d",
                    self._name,
                    task_id,
                    tp.topic,
                    tp.partition,
                    state.position,
                )
                self._task_group.start_soon(self._run_partition, running, loop)
        self._notify_progress()

    async def _revoked(self, partitions: list[TopicPartition]) -> None:
        self._pending = [tp for tp in self._pending if tp not in partitions]
        mine = [tp for tp in partitions if tp in self._loops]
        await self._stop_loops(mine)
        if self._exactly_once:
            if await self._commit_final_transaction("they are given up"):
                self._forget(mine, clean=True)
            else:  # aborted: the others restart from their last commit too
                await self._restart(gone=mine)
            return
        await self._commit_final(mine, "they are given up")
        self._forget(mine, clean=True)

    async def _lost(self, partitions: list[TopicPartition]) -> None:
        self._pending = [tp for tp in self._pending if tp not in partitions]
        mine = [tp for tp in partitions if tp in self._loops]
        if mine:
            logger.warning(
                "app %r: lost %s (this member's session expired): not committing them; "
                "their new owner re-processes what was not committed",
                self._name,
                ", ".join(f"{t}/{p}" for t, p in mine),
            )
        if self._exactly_once:  # what was written since the last commit is aborted
            await self._restart(gone=mine)
            return
        loops = [self._loops[tp][1] for tp in mine]
        for loop in loops:  # closed dirty, as Kafka Streams does: nothing can be committed
            loop.kill()
        for loop in loops:
            await loop.done.wait()
        self._forget(mine, clean=False)

    # -- exactly-once: aborting, restarting, fencing ------------------------------------------

    async def _restart(self, *, gone: list[TopicPartition]) -> None:
        """Abort the open transaction (unless fenced) and restart every task from its last
        commit: stop every loop at once, close the tasks dirty (their state is ahead of
        what was committed), and start again those of the partitions not ``gone``."""
        partitions = list(self._loops)
        loops = [self._loops[tp][1] for tp in partitions]
        for loop in loops:
            loop.kill()
        for loop in loops:
            await loop.done.wait()
        await self._abort()
        self._forget(partitions, clean=False)
        if self._fenced:
            return
        self._pending.extend(tp for tp in partitions if tp not in gone)
        if self._pending and self._membership is not None:
            await self._start_pending()

    async def _abort(self) -> None:
        """Abort the open transaction (a fenced producer has nothing left to abort)."""
        assert self._transactions is not None
        if self._fenced:
            return
        try:
            await self._transactions.abort_transaction()
        except ProducerFencedError as exc:
            self._fence(exc)
            return
        self._written = False
        self._aborts += 1

    async def _abort_final(self) -> None:
        """Abort the open transaction of a run that failed (logging, not raising, what
        prevents it: the run's own error is the one to see)."""
        try:
            await self._abort()
        except HeadwaterError as exc:
            logger.error("app %r: could not abort the open transaction: %s", self._name, exc)

    async def _commit_final_transaction(self, why: str) -> bool:
        """Commit the open transaction before ``why``; return whether it committed (it
        was aborted otherwise, and the log says why)."""
        if self._fenced:
            return False
        try:
            await self._commit(list(self._loops))
        except TransactionAbortedError as exc:
            logger.error("app %r: could not commit before %s: %s", self._name, why, exc)
            self._commit_failures += 1
            return False
        except ProducerFencedError as exc:
            self._fence(exc)
            return False
        except HeadwaterError as exc:
            self._commit_failures += 1
            logger.error(
                "app %r: could not commit before %s: %s; aborting what was not committed",
                self._name, why, exc,
            )  # fmt: skip
            await self._abort_final()
            return False
        return True

    def _fence(self, exc: ProducerFencedError) -> None:
        """Stop the run: another worker took this one's transactional id over."""
        if not self._fenced:
            self._fenced = True
            logger.error("app %r: stopping: %s", self._name, exc)
        self._stop.set()

    def _forget(self, partitions: list[TopicPartition], *, clean: bool) -> None:
        for tp in partitions:
            running, _ = self._loops.pop(tp)
            running.loops.pop(tp, None)
            running.task.partitions.pop(tp, None)
            if not running.task.partitions:
                self._running.pop(running.task.id, None)
                if clean:  # flushed: kept, so that the task comes back with its state
                    self._registry.keep(running.task)
                else:
                    self._registry.drop(running.task)

    async def _stop_loops(self, partitions: list[TopicPartition]) -> None:
        loops = [self._loops[tp][1] for tp in partitions]
        for loop in loops:
            loop.stop()
        for loop in loops:
            await loop.done.wait()

    # -- the partition loop ----------------------------------------------------------------

    async def _run_partition(self, running: _Running, loop: _Loop) -> None:
        try:
            with loop.scope:
                await self._read_partition(running, loop)
        except ProducerFencedError as exc:
            self._fence(exc)
        finally:
            loop.done.set()

    async def _read_partition(self, running: _Running, loop: _Loop) -> None:
        try:
            await self._read_partition_loop(running, loop)
        finally:
            if running.synchronized:  # gone: nobody waits for it
                running.heads.pop(loop.state.tp, None)
                running.idle_since[loop.state.tp] = -math.inf
                running.notify()

    async def _read_partition_loop(self, running: _Running, loop: _Loop) -> None:
        backend, clock, task = self._backend, self._clock, running.task
        handoff = backend.handoff
        state = loop.state
        topic, partition = state.tp
        max_bytes = self._config.max_batch_bytes or backend.batch_bytes
        synchronized = running.synchronized
        while not loop.stopping:
            if synchronized:
                if state.position >= await backend.end_offset(topic, partition):
                    running.idle_since.setdefault(state.tp, anyio.current_time())
                else:
                    running.idle_since.pop(state.tp, None)
                running.notify()
            records = None
            deadline = task.timers.next_wall_deadline()
            with anyio.CancelScope() as scope:
                loop.fetch_scope = scope  # no checkpoint since `stopping` was read
                if deadline is not None:
                    scope.deadline = anyio.current_time() + clock.seconds_until(deadline)
                try:
                    records = await backend.fetch(topic, partition, state.position, max_bytes)
                except OffsetOutOfRangeError:
                    start = await backend.start_offset(topic, partition)
                    logger.warning(
                        "app %r: %s/%d offset %d is gone (retention); resuming at %d",
                        self._name, topic, partition, state.position, start,
                    )  # fmt: skip
                    state.position = start
                    continue
            loop.fetch_scope = None
            if records is not None and not records:  # only markers: read on past them
                state.position = records.offsets.start  # type: ignore[attr-defined]
                self._notify_progress()
                continue
            if records is None:
                if loop.stopped():
                    break
                async with running.lock:  # a wall-time timer is due
                    outcome = await running.pipeline.advance(task, clock.now_ms())
                    await self._write_outputs(outcome.writes)
                    task.settle()
                self._count(outcome, 0)
                continue
            times = None if handoff is None else handoff.take(topic, partition, records.offsets)
            if synchronized:
                await self._process_in_turn(running, loop, records, times)
                continue
            async with running.lock:
                outcome = await running.pipeline.process(task, topic, partition, records, times)
                await self._write_outputs(outcome.writes)
                state.position = records.offsets[-1] + 1
                task.settle()
            self._count(outcome, len(records))
            self._notify_progress()
            # Free the batch and what it wrote before waiting for the next: the other
            # tasks' batches then reuse that memory while it is still in the cache.
            del outcome, records

    async def _process_in_turn(
        self,
        running: _Running,
        loop: _Loop,
        records: RecordColumns,
        event_times: Sequence[int] | None,
    ) -> None:
        """Process ``records`` of a task of several partitions in timestamp order with the
        other partitions' batches: each turn, the records up to the next batch of another
        partition (see :meth:`_wait_turn`). ``event_times``: theirs, if handed over."""
        state, task = loop.state, running.task
        topic, partition = state.tp
        timestamps = records.timestamps
        start, count = 0, len(records)
        while start < count:
            limit = await self._wait_turn(running, loop, timestamps[start])
            stop = count
            if limit is not None and not loop.stopping:
                stop = next((j for j in range(start + 1, count) if timestamps[j] > limit), count)
            part, times = records, event_times
            if stop - start != count:
                part = _slice(records, start, stop)
                times = None if event_times is None else event_times[start:stop]
            async with running.lock:
                outcome = await running.pipeline.process(task, topic, partition, part, times)
                await self._write_outputs(outcome.writes)
                state.position = part.offsets[-1] + 1
                task.settle()
            running.heads.pop(state.tp, None)
            running.notify()
            self._count(outcome, len(part))
            self._notify_progress()
            del outcome, part  # before waiting for the next turn, as in the loop above
            start = stop

    async def _wait_turn(self, running: _Running, loop: _Loop, head: int) -> int | None:
        """Wait until ``loop``'s next record, whose timestamp is ``head``, is the earliest
        of its task's: every other partition of the task holds a batch whose first record
        is later (or as late, and the partition comes after this one), or has found
        nothing to read for ``max_task_idle_ms`` (or stopped). A partition fetching a
        batch is waited for. Return the earliest first timestamp of the others' batches
        (None: they hold none), up to which this one may go on: Kafka Streams' order of a
        task's records (by their partitions' heads). The earliest always goes, so two
        loops never wait for each other."""
        tp = loop.state.tp
        running.idle_since.pop(tp, None)
        running.heads[tp] = head
        running.notify()
        idle_s = self._config.max_task_idle_ms / 1000
        while True:
            wake_at = math.inf
            blocked = False
            limit: int | None = None
            now = anyio.current_time()
            for other in running.loops:
                if other == tp:
                    continue
                theirs = running.heads.get(other)
                if theirs is not None:
                    blocked |= theirs < head or (theirs == head and other < tp)
                    limit = theirs if limit is None else min(limit, theirs)
                    continue
                since = running.idle_since.get(other)
                if since is None:
                    blocked = True  # fetching: it holds a batch soon, or is idle
                elif since + idle_s > now:
                    blocked = True
                    wake_at = min(wake_at, since + idle_s)
            if not blocked or loop.stopping:
                return limit
            with anyio.CancelScope(deadline=anyio.current_time() + wake_at - now) as scope:
                loop.fetch_scope = scope  # a graceful stop ends the wait: the batch goes
                await running.changed.wait()
            loop.fetch_scope = None

    def _count(self, outcome: Outcome, records_in: int) -> None:
        if self._metrics is not None and outcome.started:
            self._batch_seconds.observe(time.perf_counter() - outcome.started)
        self._records_in += records_in
        self._records_out += sum(w.records.count() for w in outcome.writes)
        self._skipped += outcome.skipped
        self._late += outcome.late
        self._dead_lettered += outcome.dead_lettered
        self._batches += records_in > 0

    async def _write_outputs(self, writes: list[Write]) -> None:
        """:meth:`_write` a batch's outputs, timing the wait (``RunStatistics.write_seconds``)."""
        if not writes:
            return
        started = time.perf_counter()
        await self._write(writes)
        took = time.perf_counter() - started
        self._write_time += took
        if self._metrics is not None:
            self._write_seconds.observe(took)

    async def _write(self, writes: list[Write]) -> None:
        if writes:
            self._written = True
        produce = self._backend.produce
        if len(writes) == 1:
            await produce(*writes[0])
        elif writes:
            async with anyio.create_task_group() as tg:
                for write in writes:
                    tg.start_soon(produce, *write)

    # -- committing ------------------------------------------------------------------------

    async def _commit_periodically(self) -> None:
        interval = self._config.commit_interval_ms / 1000
        while True:
            await anyio.sleep(interval)
            if self._ending:
                return
            try:
                await self._commit(list(self._loops), periodic=True)
            except (GroupError, StoreError) as exc:
                self._commit_failures += 1
                logger.warning("app %r: commit failed (retried next time): %s", self._name, exc)
            except TransactionAbortedError as exc:
                self._commit_failures += 1
                logger.warning("app %r: %s; the tasks restart from the last commit",
                               self._name, exc)  # fmt: skip
                await self._restart(gone=[])
            except ProducerFencedError as exc:
                self._fence(exc)
                return

    async def _commit(self, partitions: list[TopicPartition], *, periodic: bool = False) -> None:
        """Commit the positions that moved, of ``partitions``, with their metadata; a task
        with state stores first writes its changelogs (under the task's lock, so that the
        state and the positions agree) and waits for them to be durable. A ``periodic``
        commit that gets the commit lock after the run's final commit was due does nothing.

        :raises GroupError: as the membership's commit. :raises StoreError: likewise.
        """
        if self._membership is None:
            return
        if self._exactly_once:
            await self._commit_transaction(periodic=periodic)
            return
        async with self._commit_lock:  # one at a time: a later commit never goes first
            if periodic and self._ending:
                return
            offsets: dict[TopicPartition, int] = {}
            metadata: dict[TopicPartition, str] = {}
            states: list[PartitionState] = []
            flushed: set[TaskId] = set()
            for tp in partitions:
                if tp not in self._loops:
                    continue
                running, loop = self._loops[tp]
                task = running.task
                if task.stores and task.id not in flushed:
                    flushed.add(task.id)
                    await self._flush_stores(running)
                state = loop.state
                position = (
                    running.flushed.get(tp, state.position) if task.stores else state.position
                )
                if position != state.committed:
                    offsets[tp] = position
                    metadata[tp] = running.task.metadata()
                    states.append(state)
            if not offsets:
                return
            started = time.perf_counter()
            await self._membership.commit(offsets, metadata)
            took = time.perf_counter() - started
            self._commit_time += took
            if self._metrics is not None:
                self._commit_seconds.observe(took)
            self._commits += 1
            for state in states:  # the partition may have been given up meanwhile
                state.committed = offsets[state.tp]
            self._note_purgeable(offsets)

    async def _commit_transaction(self, *, periodic: bool = False) -> None:
        """Commit the open transaction: under every task's lock, write the stores'
        changelog records, then commit the transaction with every position that moved
        (see the module docstring); as :meth:`_commit` says of ``periodic``.

        :raises TransactionAbortedError: if it was aborted instead (the caller restarts
            the tasks). :raises ProducerFencedError: if another worker took over.
        """
        membership = self._transactions
        assert membership is not None
        async with self._commit_lock, contextlib.AsyncExitStack() as locks:
            if periodic and self._ending:
                return
            runnings = sorted(self._running.values(), key=lambda r: r.task.id)
            for running in runnings:  # one order: two commits never wait for each other
                await locks.enter_async_context(running.lock)
            started = time.perf_counter()
            offsets: dict[TopicPartition, int] = {}
            metadata: dict[TopicPartition, str] = {}
            states: list[PartitionState] = []
            flushed: list[Task] = []
            for running in runnings:
                task = running.task
                positions = task.positions()
                if task.stores:
                    writes = flush_writes(task, positions)
                    if writes:
                        await self._write(writes)
                        flushed.append(task)
                    running.flushed = positions
                for tp, loop in running.loops.items():
                    state = loop.state
                    if state.position != state.committed:
                        offsets[tp] = state.position
                        metadata[tp] = task.metadata()
                        states.append(state)
            if not offsets and not self._written:
                return  # nothing written, nothing read: no transaction to end
            await membership.commit_transaction(offsets, metadata)
            self._written = False
            for state in states:
                state.committed = offsets[state.tp]
            self._note_purgeable(offsets)
            for task in flushed:  # their changelog records are committed: local copies too
                await checkpointed(task, self._backend)
            took = time.perf_counter() - started
            self._commit_time += took
            if self._metrics is not None:
                self._commit_seconds.observe(took)
            self._commits += 1

    # -- purging repartition topics ---------------------------------------------------------

    def _note_purgeable(self, offsets: Mapping[TopicPartition, int]) -> None:
        """Note the committed ``offsets`` of repartition partitions: their records before
        those are consumed for good. Start a purge if none ran for the app's
        ``repartition_purge_interval_ms`` (the run's final commit purges in any case), or
        note nothing if that is ``None``."""
        interval_ms = self._config.repartition_purge_interval_ms
        if interval_ms is None:
            return
        internal = self._internal_topics
        for tp, offset in offsets.items():
            if tp.topic in internal:
                self._purgeable[tp] = max(offset, self._purgeable.get(tp, offset))
        due = anyio.current_time() >= self._purged_at + interval_ms / 1000
        if self._purgeable and due and not self._ending and not self._purge_lock.locked():
            assert self._task_group is not None
            self._task_group.start_soon(self._purge_in_turn)

    async def _purge_in_turn(self) -> None:
        """:meth:`_purge`, once a purge under way (if any) has finished."""
        async with self._purge_lock:
            await self._purge()

    async def _purge(self) -> None:
        """Delete the records of repartition partitions before their committed offsets, as
        Kafka Streams does: their topics keep records forever otherwise. Housekeeping: a
        failure is logged and the run goes on (the next commit's offsets are purged in
        their turn)."""
        todo, self._purgeable = self._purgeable, {}
        if not todo:
            return
        self._purged_at = anyio.current_time()
        for tp, offset in sorted(todo.items()):
            try:
                await self._backend.delete_records(tp.topic, tp.partition, offset)
            except HeadwaterError as exc:
                logger.warning(
                    "app %r: could not delete the consumed records of %s/%d before offset "
                    "%d (the run goes on): %s",
                    self._name, tp.topic, tp.partition, offset, exc,
                )  # fmt: skip

    async def _flush_stores(self, running: _Running) -> None:
        """Write ``running``'s store changes and a checkpoint of its positions to their
        changelogs, durably; note the positions they cover (what may be committed)."""
        async with running.lock:
            task = running.task
            positions = task.positions()
            writes = flush_writes(task, positions)
            if writes:
                await self._write(writes)
                await checkpointed(task, self._backend)
            running.flushed = positions

    async def _commit_final(self, partitions: list[TopicPartition], why: str) -> None:
        """Commit ``partitions`` before ``why``: retry transient failures with backoff,
        then report what could not be committed (never drop it in silence)."""
        retrying = AsyncRetrying(
            sleep=anyio.sleep,
            stop=stop_after_attempt(_FINAL_COMMIT_ATTEMPTS),
            wait=wait_exponential(multiplier=0.05, max=1.0) + wait_random(0, 0.05),
            retry=retry_if_exception_type(_TRANSIENT),
        )
        try:
            async for attempt in retrying:
                with attempt:
                    await self._commit(partitions)
        except (RetryError, GroupError, StoreError) as exc:
            cause = exc.last_attempt.exception() if isinstance(exc, RetryError) else exc
            states = [self._loops[tp][1].state for tp in partitions if tp in self._loops]
            positions = ", ".join(
                f"{s.tp.topic}/{s.tp.partition} at {s.position}"
                for s in states
                if s.position != s.committed
            )
            self._commit_failures += 1
            logger.error(
                "app %r: could not commit %s before %s: %s; the records after the last "
                "commit will be processed again (at-least-once: their outputs repeat)",
                self._name,
                positions,
                why,
                cause,
            )

    async def _watch_ends(self) -> None:
        """Look up the end offsets of the partitions processed, every commit interval
        (while metrics are on: the lag they give is read at scrape time)."""
        interval = self._config.commit_interval_ms / 1000
        while True:
            for tp in list(self._loops):
                try:
                    self._ends[tp] = await self._backend.end_offset(*tp)
                except HeadwaterError as exc:  # lag goes on from the last one known
                    logger.debug("app %r: end offset of %s: %s", self._name, tp, exc)
            await anyio.sleep(interval)

    # -- caught up -------------------------------------------------------------------------

    def _notify_progress(self) -> None:
        self._progress.set()
        self._progress = anyio.Event()

    async def _wait_reached(self, targets: Mapping[TopicPartition, int]) -> None:
        while True:
            behind = [
                tp
                for tp, end in targets.items()
                if tp in self._loops and self._loops[tp][1].state.position < end
            ]
            if not behind:
                return
            await self._progress.wait()

    async def _wait_caught_up(self, targets: Mapping[TopicPartition, int]) -> None:
        await self._wait_reached(targets)
        backend = self._backend
        internal = [
            TopicPartition(topic, p)
            for topic in self._internal_topics
            for p in range(await backend.partition_count(topic) or 0)
        ]
        while internal:
            # Exactly-once, what was written to the internal topics is seen once committed.
            await self._commit_to_see()
            ends = {tp: await backend.end_offset(*tp) for tp in internal}
            await self._wait_reached(ends)
            await self._commit_to_see()
            if all([await backend.end_offset(*tp) == end for tp, end in ends.items()]):
                return

    async def _commit_to_see(self) -> None:
        """Exactly-once, commit now, so that the records written so far become readable
        (as the periodic commit does, failures included); else nothing."""
        if not self._exactly_once:
            return
        try:
            await self._commit(list(self._loops))
        except (GroupError, StoreError) as exc:
            self._commit_failures += 1
            logger.warning("app %r: commit failed (retried): %s", self._name, exc)
        except TransactionAbortedError as exc:
            self._commit_failures += 1
            logger.warning("app %r: %s; the tasks restart from the last commit", self._name, exc)
            await self._restart(gone=[])
        except ProducerFencedError as exc:
            self._fence(exc)


def _check_compacted(changelog: str, config: Mapping[str, str] | None) -> None:
    """Refuse a changelog that existed with a policy that is not compaction: retention
    would delete the state of keys not written for a while, and a restore would then
    miss it (as Kafka Streams validates its internal topics).

    :raises TopologyError: naming the command that compacts it.
    """
    if config is None:
        return
    policy = config.get("cleanup.policy", "delete")
    if "compact" in policy.split(","):
        return
    raise TopologyError(
        f"changelog {changelog!r} exists with cleanup.policy={policy}, so retention "
        "would delete state that a restore needs: compact it (headwater topics alter "
        f"{changelog} -c cleanup.policy=compact) or delete it (its state is lost)"
    )


def _check_unretained(topic: str, config: Mapping[str, str] | None) -> None:
    """Refuse a repartition topic that existed with retention or compaction
    (``INTERNAL_TOPIC_CONFIG`` has neither): its records keep their inputs' timestamps,
    so a replay of old input would be deleted by time before the app reads it, and a
    backlog by size; compaction would drop records that share a key, and refuses those
    without one. The runtime deletes what it has read itself (the module docstring).

    :raises TopologyError: naming the settings and the command that changes them.
    """
    if config is None:
        return
    wrong = [
        f"{name}={config[name]}"
        for name, wanted in INTERNAL_TOPIC_CONFIG.items()
        if name in config and config[name] != wanted
    ]
    if not wrong:
        return
    settings = " ".join(f"-c {name}={wanted}" for name, wanted in INTERNAL_TOPIC_CONFIG.items())
    raise TopologyError(
        f"repartition topic {topic!r} exists with {', '.join(wrong)}, so records the app "
        f"has not read yet could be deleted: change it (headwater topics alter {topic} "
        f"{settings}) or delete it (records not yet read are lost)"
    )
