"""The runtime: one task per assigned input partition, committing only what is durable.

Theory of operation
-------------------
:meth:`Runtime.run` creates the topics the graph needs, builds one
:class:`~headwater.processing._pipeline.Pipeline` per input topic, and joins the app's
consumer group (group id = app name) through the backend. Each partition it is assigned
gets a task that loops: fetch a batch (waiting when caught up), run it through the
pipeline, write every output partition's records and wait until they are durable, then
move the partition's *position* past the batch. Only positions are ever committed (every
``commit_interval_ms``, when a partition is revoked, and when the run ends), so a
committed offset never runs ahead of durable outputs: after a crash, at any instant,
the app resumes at the last commit and re-derives at most the records after it
(at-least-once; duplicates only in that uncommitted tail).

Backpressure and memory: a task holds one batch (``max_batch_bytes`` of input) and its
outputs; it reads the next batch only after the last one's outputs are durable, so a
slow operator or a slow output slows reading, never buffers without bound.

Stopping: :meth:`Runtime.run` ends when its ``stop`` event is set (SIGINT/SIGTERM in
``App.run``) or, with ``until_caught_up``, when every input partition has been
processed up to the end offset it had at the start (then, in turn, every repartition
topic up to its end). A graceful stop cancels only the tasks' waits for new records: a
batch in progress is finished and written, then positions are committed and the worker
leaves the group. A user function that raises under the ``raise`` policy fails its task,
which stops the run; positions that are durable are still committed first.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass

import anyio
from anyio.abc import TaskGroup

from headwater.groups import GroupError, TopicPartition
from headwater.store import OffsetOutOfRangeError, StoreError

from ._backend import Backend, Membership
from ._config import AppConfig
from ._graph import Graph, plan_topics
from ._pipeline import Pipeline, Write, build_pipelines

logger = logging.getLogger("headwater.processing")


@dataclass(frozen=True, slots=True)
class RunStatistics:
    """Counters of one run of an app."""

    records_in: int
    records_out: int
    skipped: int
    dead_lettered: int
    batches: int
    commits: int
    elapsed_s: float

    @property
    def records_per_s(self) -> float:
        """Input records processed per second of the run."""
        return self.records_in / self.elapsed_s if self.elapsed_s > 0 else 0.0


class _PartitionTask:
    __slots__ = ("committed", "done", "fetch_scope", "pipeline", "position", "stopping", "tp")

    def __init__(self, tp: TopicPartition, pipeline: Pipeline, position: int) -> None:
        self.tp = tp
        self.pipeline = pipeline
        self.position = position
        self.committed = position
        self.stopping = False
        self.fetch_scope: anyio.CancelScope | None = None
        self.done = anyio.Event()

    def stop(self) -> None:
        """Stop after the batch in hand (cancel only a wait for new records)."""
        self.stopping = True
        if self.fetch_scope is not None:
            self.fetch_scope.cancel()


class Runtime:
    """Runs an app's graph against a backend; see the module docstring.

    :param name: the app's name, which is its consumer group id.
    """

    def __init__(
        self,
        name: str,
        graph: Graph,
        config: AppConfig,
        backend: Backend,
        *,
        until_caught_up: bool = False,
    ) -> None:
        self._name = name
        self._graph = graph
        self._config = config
        self._backend = backend
        self._until_caught_up = until_caught_up
        self._pipelines: dict[str, Pipeline] = {}
        self._internal_topics: list[str] = []
        self._tasks: dict[TopicPartition, _PartitionTask] = {}
        self._pending: list[TopicPartition] = []
        self._membership: Membership | None = None
        self._task_group: TaskGroup | None = None
        self._progress = anyio.Event()
        self._records_in = self._records_out = self._skipped = self._dead_lettered = 0
        self._batches = self._commits = 0
        self._started = time.perf_counter()
        self._finished: float | None = None

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
        )

    async def prepare(self) -> dict[str, int]:
        """Create the topics the graph needs and build the pipelines; return partition counts.

        :raises TopologyError: if the graph cannot run.
        :raises MissingSourceTopicError: if a source topic is missing (nothing is created).
        """
        graph = self._graph
        graph.validate()
        backend = self._backend
        topics = [n.topic for n in graph.nodes if n.topic] + list(graph.dead_letter_topics())
        existing = {topic: backend.partition_count(topic) for topic in topics}
        counts = plan_topics(graph, existing)
        for topic, partitions in counts.items():
            if existing.get(topic) is None:
                logger.info(
                    "app %r: creating topic %r (%d partitions)", self._name, topic, partitions
                )
                await backend.create_topic(topic, partitions)
        self._pipelines, self._internal_topics = build_pipelines(graph, counts)
        return counts

    async def run(self, stop: anyio.Event | None = None) -> RunStatistics:
        """Run until ``stop`` is set (or caught up, if asked); return the statistics.

        :raises OperatorError: if a user function failed under the ``raise`` policy.
        :raises TopologyError: if the graph cannot run.
        """
        self._started = time.perf_counter()
        try:
            await self._run(stop or anyio.Event())
        finally:
            self._finished = time.perf_counter()
        return self.statistics()

    async def _run(self, stop: anyio.Event) -> None:
        counts = await self.prepare()
        external = [t for t in self._pipelines if t not in self._internal_topics]
        targets = {
            TopicPartition(topic, p): self._backend.end_offset(topic, p)
            for topic in external
            for p in range(counts[topic])
        }
        async with anyio.create_task_group() as tg:
            self._task_group = tg
            async with self._backend.join(
                self._name,
                list(self._pipelines),
                on_assigned=self._assigned,
                on_revoked=self._revoked,
            ) as membership:
                self._membership = membership
                try:
                    self._start_pending()
                    tg.start_soon(self._commit_periodically)
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
                    await self._stop_tasks(list(self._tasks))
                finally:
                    with anyio.CancelScope(shield=True):
                        await self._commit()
            tg.cancel_scope.cancel()

    # -- partitions ------------------------------------------------------------------------

    async def _assigned(self, partitions: list[TopicPartition]) -> None:
        self._pending.extend(partitions)
        if self._membership is not None:
            self._start_pending()

    def _start_pending(self) -> None:
        assert self._membership is not None and self._task_group is not None
        pending, self._pending = self._pending, []
        for tp in pending:
            pipeline = self._pipelines.get(tp.topic)
            if pipeline is None or tp in self._tasks:
                continue
            task = _PartitionTask(tp, pipeline, self._membership.position(tp))
            self._tasks[tp] = task
            logger.info(
                "app %r: processing %s/%d from offset %d",
                self._name,
                tp.topic,
                tp.partition,
                task.position,
            )
            self._task_group.start_soon(self._run_task, task)
        self._notify_progress()

    async def _revoked(self, partitions: list[TopicPartition]) -> None:
        self._pending = [tp for tp in self._pending if tp not in partitions]
        await self._stop_tasks([tp for tp in partitions if tp in self._tasks])
        await self._commit(partitions)
        for tp in partitions:
            self._tasks.pop(tp, None)

    async def _stop_tasks(self, partitions: list[TopicPartition]) -> None:
        tasks = [self._tasks[tp] for tp in partitions]
        for task in tasks:
            task.stop()
        for task in tasks:
            await task.done.wait()

    async def _run_task(self, task: _PartitionTask) -> None:
        backend = self._backend
        topic, partition = task.tp
        max_bytes = self._config.max_batch_bytes
        try:
            while not task.stopping:
                records = None
                with anyio.CancelScope() as scope:
                    task.fetch_scope = scope  # no checkpoint since `stopping` was read
                    try:
                        records = await backend.fetch(topic, partition, task.position, max_bytes)
                    except OffsetOutOfRangeError:
                        start = backend.start_offset(topic, partition)
                        logger.warning(
                            "app %r: %s/%d offset %d is gone (retention); resuming at %d",
                            self._name, topic, partition, task.position, start,
                        )  # fmt: skip
                        task.position = start
                        continue
                task.fetch_scope = None
                if records is None:
                    break
                outcome = await task.pipeline.process(partition, records)
                await self._write(outcome.writes)
                task.position = records.offsets[-1] + 1
                self._records_in += len(records)
                self._records_out += sum(w.records.count() for w in outcome.writes)
                self._skipped += outcome.skipped
                self._dead_lettered += outcome.dead_lettered
                self._batches += 1
                self._notify_progress()
        finally:
            task.done.set()

    async def _write(self, writes: list[Write]) -> None:
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
            await self._commit()

    async def _commit(self, partitions: list[TopicPartition] | None = None) -> None:
        """Commit the positions that moved (of ``partitions``, by default all)."""
        if self._membership is None:
            return
        chosen = (
            self._tasks
            if partitions is None
            else {tp: self._tasks[tp] for tp in partitions if tp in self._tasks}
        )
        offsets = {tp: t.position for tp, t in chosen.items() if t.position != t.committed}
        if not offsets:
            return
        try:
            await self._membership.commit(offsets)
        except (GroupError, StoreError) as exc:
            logger.warning("app %r: commit failed (will retry): %s", self._name, exc)
            return
        self._commits += 1
        for tp, offset in offsets.items():
            chosen[tp].committed = offset

    # -- caught up -------------------------------------------------------------------------

    def _notify_progress(self) -> None:
        self._progress.set()
        self._progress = anyio.Event()

    async def _wait_reached(self, targets: Mapping[TopicPartition, int]) -> None:
        while True:
            behind = [
                tp
                for tp, end in targets.items()
                if tp in self._tasks and self._tasks[tp].position < end
            ]
            if not behind:
                return
            await self._progress.wait()

    async def _wait_caught_up(self, targets: Mapping[TopicPartition, int]) -> None:
        await self._wait_reached(targets)
        internal = [
            TopicPartition(topic, p)
            for topic in self._internal_topics
            for p in range(self._backend.partition_count(topic) or 0)
        ]
        while internal:
            ends = {tp: self._backend.end_offset(*tp) for tp in internal}
            await self._wait_reached(ends)
            if all(self._backend.end_offset(*tp) == end for tp, end in ends.items()):
                return
