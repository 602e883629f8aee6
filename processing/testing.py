"""Test a pipeline with plain pytest: :class:`TestDriver` runs an app without a log.

It is an in-memory backend (topics, committed offsets, a consumer group) with a virtual
wall clock, driving the app's tasks with exactly the code the runtime runs: the same
task grouping and assignor, the same steps (one instance per task), error policies,
lineage and placement, the same code on assignment. No disk, no threads; each call
processes what it sent, and what that wrote to repartition topics, before it returns.
Async operators run on a trio event loop whose own clock is virtual too
(``trio.testing.MockClock``), so sleeps and retry backoffs take no real time and the
outputs are the same on every run.

Time: :meth:`TestDriver.advance` moves the wall clock and fires the wall-time timers that
come due, at their own deadlines, in order; positions are committed every
``commit_interval_ms`` of that clock (as the runtime does), when partitions move, and
by :meth:`TestDriver.commit`. Records sent without a timestamp get the clock's time.

Members and restarts: the driver starts ``members`` members of the app's group (one by
default). :meth:`~TestDriver.add_member`, :meth:`~TestDriver.remove_member` (cleanly, or
as a crash) and :meth:`~TestDriver.expire_member` rebalance as the runtime's group
does; :meth:`~TestDriver.restart` replaces every member, so each task is rebuilt from
what was committed (a crash re-processes what was not: at-least-once).

Example (a test suite runs this)::

    >>> from headwater.processing import App
    >>> from headwater.processing.testing import TestDriver
    >>> app = App("clicks")
    >>> clicks = app.stream("clicks")
    >>> slow = clicks.filter(lambda e: e["ms"] > 100)
    >>> slow.map(lambda e: {**e, "slow": e["ms"] > 500}).to("enriched")
    >>> driver = TestDriver(app)
    >>> driver.send("clicks", {"user": "u1", "ms": 50})
    >>> driver.send("clicks", {"user": "u2", "ms": 700})
    >>> driver.values("enriched")
    [{'user': 'u2', 'ms': 700, 'slow': True}]
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

import anyio
from trio.testing import MockClock

from headwater.groups import OffsetAndMetadata, TopicPartition
from headwater.store import Record, partition_for_key

from ._app import App
from ._backends import Membership
from ._backends.memory import MemoryBackend, MemoryGroup
from ._clock import VirtualClock
from ._errors import TopologyError
from ._graph import plan_topics
from ._lineage import Headers
from ._pipeline import Outcome, Pipeline
from ._serde import BytesSerde, Serde, encode_key
from ._stateful import StatefulStep
from ._stores import SESSION_KEYS, WINDOW_KEYS
from ._stores._changelog import StoreRegistry, checkpointed, flush_writes, restore
from ._tasks import (
    Task,
    TaskId,
    TaskPlan,
    check_copartitioning,
    copartition,
    plan_topic_groups,
    resume,
)

__all__ = ("TestDriver", "TestRecord")

#: The driver's clock at the start: 2024-01-01T00:00:00Z in epoch ms.
START_MS = 1_704_067_200_000

R = TypeVar("R")


class TestRecord(NamedTuple):
    """A record an app wrote, as :meth:`TestDriver.records` returns it.

    ``value`` is decoded with the sink's serde (dead letters: the raw bytes).
    """

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: Any
    timestamp: int
    headers: Headers


class _Member:
    """One member of the app's group in the driver: its tasks, as a worker holds them."""

    def __init__(self, driver: TestDriver) -> None:
        self._driver = driver
        self.registry = StoreRegistry(driver._state_dir, driver._app_name)
        self.member_id = ""
        self.membership: Membership | None = None
        self.tasks: dict[TaskId, Task] = {}
        self._pending: list[TopicPartition] = []

    async def join(self, group: MemoryGroup, topics: Sequence[str]) -> None:
        self.member_id = await group.add(
            topics, on_assigned=self.assigned, on_revoked=self.revoked, on_lost=self.lost
        )
        self.membership = group.membership(self.member_id)
        await self._start_pending()

    async def assigned(self, partitions: list[TopicPartition]) -> None:
        self._pending.extend(partitions)
        if self.membership is not None:
            await self._start_pending()

    async def _start_pending(self) -> None:
        assert self.membership is not None
        driver = self._driver
        pending, self._pending = self._pending, []
        for task_id, tps in driver._plan.tasks_of(pending).items():
            task = self.tasks.get(task_id)
            if task is None:
                pipeline = driver._pipelines[task_id.group]
                task = self.tasks[task_id] = pipeline.task(task_id, driver._clock, self.registry)
                await resume(task, tps, self.membership, driver._backend)
                if task.stores:
                    await restore(task, driver._backend)
            else:
                await resume(task, tps, self.membership, driver._backend)

    async def revoked(self, partitions: list[TopicPartition]) -> None:
        await self.commit(partitions)
        self.lost_nowait(partitions, clean=True)

    async def lost(self, partitions: list[TopicPartition]) -> None:
        self.lost_nowait(partitions, clean=False)

    def lost_nowait(self, partitions: list[TopicPartition], *, clean: bool) -> None:
        gone = set(partitions)
        for task_id, task in list(self.tasks.items()):
            for tp in gone & set(task.partitions):
                del task.partitions[tp]
            if not task.partitions:
                del self.tasks[task_id]
                if clean:
                    self.registry.keep(task)
                else:
                    self.registry.drop(task)

    def close(self) -> None:
        """Release the stores of a member that is gone, as its process's end would."""
        for task in self.tasks.values():
            self.registry.drop(task)
        self.tasks = {}
        self.registry.close()

    async def commit(self, partitions: Iterable[TopicPartition] | None = None) -> None:
        assert self.membership is not None
        wanted = None if partitions is None else set(partitions)
        offsets: dict[TopicPartition, int] = {}
        metadata: dict[TopicPartition, str] = {}
        backend = self._driver._backend
        for task in self.tasks.values():
            if task.stores:  # the changelogs first, durably; then the positions they cover
                for write in flush_writes(task, task.positions()):
                    await backend.produce(*write)
                await checkpointed(task, backend)
            for tp, (offset, meta) in task.to_commit().items():
                if wanted is None or tp in wanted:
                    offsets[tp], metadata[tp] = offset, meta
        if offsets:
            await self.membership.commit(offsets, metadata)
            for task in self.tasks.values():
                for tp, state in task.partitions.items():
                    if tp in offsets:
                        state.committed = offsets[tp]


class TestDriver:
    """Runs ``app`` in memory: feed records in, read what each topic received.

    :param app: the app under test.
    :param partitions: partition counts of topics (input topics default to their
        stream's declared count, else one; outputs follow the same rules as when the app
        runs).
    :param start_ms: the clock's start, in epoch ms.
    :param members: how many members of the app's group to start.
    :param state_dir: where disk stores keep their local copies (by default they are
        kept in memory, and a restart restores them from their changelogs).
    :raises TopologyError: if the app's graph cannot run.

    Concurrency: synchronous, for plain (non-async) tests; do not call it from inside a
    running event loop.
    """

    __test__ = False  # not a test class, whatever pytest thinks of its name

    def __init__(
        self,
        app: App,
        *,
        partitions: Mapping[str, int] | None = None,
        start_ms: int = START_MS,
        members: int = 1,
        state_dir: str | os.PathLike[str] | None = None,
    ) -> None:
        graph = app.graph
        graph.validate()
        self._config = app.config
        counts = plan_topics(graph, dict(partitions or {}), default_partitions=1)
        if copartition(graph, counts, app.name):  # joins' sides, repartitioned
            counts = plan_topics(graph, dict(partitions or {}), default_partitions=1)
        check_copartitioning(graph, counts)
        self._clock = VirtualClock(start_ms)
        self._backend = MemoryBackend()
        for topic, count in counts.items():
            self._backend.create_topic_now(topic, count)
        for topic, count in graph.changelogs(counts).items():
            self._backend.create_topic_now(topic, count, {"cleanup.policy": "compact"})
            counts[topic] = count
        self._counts = counts
        self._app_name = app.name
        self._state_dir = None if state_dir is None else Path(state_dir)
        self._graph = graph
        groups = plan_topic_groups(graph, counts)
        self._plan = TaskPlan(groups)
        self._pipelines = {group.id: Pipeline(graph, group, counts) for group in groups}
        self._serdes: dict[str, Serde[Any]] = {}
        for node in graph.nodes:
            if node.topic is not None and (node.is_sink or node.is_source):
                self._serdes.setdefault(node.topic, node.params["serde"])
        self._inputs = {n.topic for n in graph.sources() if n.topic and not n.spec.internal}
        self._group = self._backend.group(app.name)
        self._members: dict[str, _Member] = {}
        self._next_commit_ms = start_ms + self._config.commit_interval_ms
        for _ in range(members):
            self.add_member()

    def _run(self, fn: Callable[[], Awaitable[R]]) -> R:
        clock = MockClock(autojump_threshold=0)
        return anyio.run(fn, backend="trio", backend_options={"clock": clock})

    # -- time --------------------------------------------------------------------------------

    @property
    def now_ms(self) -> int:
        """The driver's wall clock, in epoch ms."""
        return self._clock.now_ms()

    def advance(self, ms: int) -> None:
        """Move the wall clock forward by ``ms`` milliseconds, firing the wall-time timers
        that come due, each at its own deadline, and committing every
        ``commit_interval_ms``.

        :raises ValueError: if ``ms`` is negative.
        :raises OperatorError: if a timer's step fails under the ``raise`` policy.
        """
        if ms < 0:
            raise ValueError(f"time only moves forward; got {ms} ms")
        target = self._clock.now_ms() + ms
        self._run(lambda: self._advance_to(target))

    async def _advance_to(self, target_ms: int) -> None:
        while True:
            now = self._clock.now_ms()
            deadlines = [
                d
                for task in self._tasks()
                if (d := task.timers.next_wall_deadline()) is not None and d <= target_ms
            ]
            step_to = max(min([*deadlines, target_ms]), now)
            self._clock.advance(step_to - now)
            for task in self._tasks():
                await self._apply(task, await self._pipelines[task.id.group].advance(task, step_to))
            await self._pump()
            if step_to >= self._next_commit_ms:
                await self._commit_all()
                self._next_commit_ms = step_to + self._config.commit_interval_ms
            if step_to == target_ms and not deadlines:
                return

    # -- input -------------------------------------------------------------------------------

    def send(
        self,
        topic: str,
        value: Any,
        *,
        key: object = None,
        timestamp: int | None = None,
        headers: Sequence[tuple[str, bytes | None]] = (),
        partition: int | None = None,
    ) -> None:
        """Append one record to input ``topic`` and process it (and all that follows).

        ``value`` is serialised with the stream's serde; ``key`` is stored as is if
        bytes, else encoded as ``key_by`` does by default (canonical JSON), and places
        the record (murmur2), else it goes to ``partition`` (default 0).

        :raises OperatorError: if a user function fails under the ``raise`` policy (the
            record stays in the input, and processing goes on after it).
        :raises TopologyError: if ``topic`` is not one of the app's input topics.
        """
        self.send_many(
            topic, [value], key=key, timestamp=timestamp, headers=headers, partition=partition
        )

    def send_many(
        self,
        topic: str,
        values: Iterable[Any],
        *,
        key: object = None,
        timestamp: int | None = None,
        headers: Sequence[tuple[str, bytes | None]] = (),
        partition: int | None = None,
    ) -> None:
        """Append records with ``values`` to one partition as one batch, and process it.

        Arguments as :meth:`send`, shared by every record.
        """
        if topic not in self._inputs:
            raise TopologyError(f"{topic!r} is not an input topic of the app")
        serde = self._serdes[topic]
        raw_key = key if isinstance(key, bytes) else encode_key(key)
        count = self._counts[topic]
        if partition is None:
            partition = 0 if raw_key is None else partition_for_key(raw_key, count)
        if not 0 <= partition < count:
            raise TopologyError(f"topic {topic!r} has no partition {partition}")
        start = len(self._backend.records(topic, partition))
        stamp = self._clock.now_ms() if timestamp is None else timestamp
        batch = [
            Record(start + i, stamp, raw_key, serde.serialize(v), tuple(headers))
            for i, v in enumerate(values)
        ]
        if not batch:
            return
        self._backend.append(topic, partition, batch)
        self._run(self._pump)

    async def _pump(self) -> None:
        """Process every assigned partition up to its end, until nothing moves."""
        backend = self._backend
        max_bytes = self._config.max_batch_bytes or backend.batch_bytes
        moved = True
        while moved:
            moved = False
            for task in self._tasks():
                pipeline = self._pipelines[task.id.group]
                for tp, state in list(task.partitions.items()):
                    if state.position >= await backend.end_offset(*tp):
                        continue
                    records = await backend.fetch(tp.topic, tp.partition, state.position, max_bytes)
                    end = records.offsets[-1] + 1
                    times = None
                    if backend.handoff is not None:
                        times = backend.handoff.take(tp.topic, tp.partition, records.offsets)
                    try:
                        outcome = await pipeline.process(
                            task, tp.topic, tp.partition, records, times
                        )
                    except BaseException:
                        state.position = end  # the failed batch is not read again
                        raise
                    await self._apply(task, outcome)
                    state.position = end
                    task.settle()
                    moved = True

    async def _apply(self, task: Task, outcome: Outcome) -> None:
        for write in outcome.writes:
            await self._backend.produce(*write)
        task.settle()

    def _tasks(self) -> list[Task]:
        return [
            task for member in self._members.values() for _, task in sorted(member.tasks.items())
        ]

    # -- members, commits, restarts -------------------------------------------------------------

    def members(self) -> list[str]:
        """Return the ids of the group's members, in member order."""
        return self._group.members()

    def add_member(self) -> str:
        """Start another member of the app's group (a rebalance follows); return its id."""
        member = _Member(self)
        self._run(lambda: member.join(self._group, self._plan.topics()))
        self._members[member.member_id] = member
        self._run(self._pump)
        return member.member_id

    def remove_member(self, member_id: str, *, clean: bool = True) -> None:
        """Stop ``member_id``: cleanly (it commits what it processed, then leaves), or as a
        crash (``clean=False``: it is gone, uncommitted progress with it). The others take
        over its partitions and process what is pending.

        :raises KeyError: if there is no such member.
        """
        self._leave(member_id, clean=clean)
        self._run(self._pump)

    def _leave(self, member_id: str, *, clean: bool) -> None:
        member = self._members.pop(member_id)
        self._run(lambda: self._group.remove(member_id, clean=clean))
        member.close()

    def expire_member(self, member_id: str) -> None:
        """End ``member_id``'s session, as a member that stopped heartbeating: it loses its
        partitions without committing, and leaves the group.

        :raises KeyError: if there is no such member.
        """
        member = self._members.pop(member_id)
        self._run(lambda: self._group.expire(member_id))
        member.close()
        self._run(self._pump)

    def restart(self, *, clean: bool = True) -> None:
        """Replace every member by a new one, as a restart of the app's processes does.

        With ``clean`` the members commit and leave first; without, they crash, and the
        new members re-process what was not committed. Each task is rebuilt through what
        the runtime does on assignment (positions and stream time from the commits).
        """
        count = len(self._members)
        for member_id in list(self._members):
            self._leave(member_id, clean=clean)
        for _ in range(count):
            self.add_member()

    def commit(self) -> None:
        """Commit every member's positions now."""
        self._run(self._commit_all)

    async def _commit_all(self) -> None:
        for member in self._members.values():
            await member.commit()

    def committed(self) -> dict[TopicPartition, OffsetAndMetadata]:
        """Return the group's committed offsets, with their metadata."""
        return self._backend.committed(self._group.group_id)

    def assignment(self, member_id: str) -> list[TopicPartition]:
        """Return the partitions ``member_id`` holds.

        :raises KeyError: if there is no such member.
        """
        return self._group.assignment(member_id)

    def tasks(self, member_id: str | None = None) -> list[str]:
        """Return the tasks (``group_partition``) of one member, or of all, in order."""
        members = self._members.values() if member_id is None else [self._members[member_id]]
        return [str(task_id) for m in members for task_id in sorted(m.tasks)]

    def stream_time(self, task: str) -> int | None:
        """Return a task's stream time (None: not tracked, or nothing read yet).

        :raises KeyError: if no member runs ``task``.
        """
        for member in self._members.values():
            for task_id, held in member.tasks.items():
                if str(task_id) == task:
                    return held.stream_time_ms
        raise KeyError(task)

    # -- state -------------------------------------------------------------------------------

    def state(self, store: str) -> dict[Any, Any]:
        """Return the contents of state store ``store`` over every task: each key as the
        user's object (a window's as ``(key, start)``, a session's as ``(key, start,
        end)``), each value as the step holds it (a window's: its aggregate).

        :raises KeyError: if no task has a store of that name.
        """
        found = False
        contents: dict[Any, Any] = {}
        for task in self._tasks():
            held = task.stores.get(store)
            if held is None:
                continue
            found = True
            owner = next(s for s in task.steps if isinstance(s, StatefulStep) and held in s.stores)
            windowed = held.spec.keys in (WINDOW_KEYS, SESSION_KEYS)
            for key, value in held.items():
                if windowed:
                    contents[(owner.key_object(key[0]), *key[1:])] = value[0]
                elif isinstance(key, bytes):
                    contents[owner.key_object(key)] = value
                else:
                    contents[key] = value
        if not found:
            raise KeyError(f"no task has a store named {store!r}")
        return contents

    def restored(self, store: str) -> tuple[int, int]:
        """Return how many changelog records the tasks' last restore of ``store`` read,
        and how many it had to read (both 0 for a store restored from a current local
        copy, or not restored at all), summed over the tasks that hold it.

        :raises KeyError: if no task has a store of that name.
        """
        held = [task.stores[store] for task in self._tasks() if store in task.stores]
        if not held:
            raise KeyError(f"no task has a store named {store!r}")
        return sum(s.restored for s in held), sum(s.restore_total for s in held)

    def changelog(self, store: str) -> list[TestRecord]:
        """Return the records of state store ``store``'s changelog topic (raw bytes).

        :raises KeyError: if the app has no store of that name.
        """
        for node in self._graph.nodes:
            for spec in node.params.get("stores") or ():
                if spec.name == store:
                    return self.records(spec.changelog)
        raise KeyError(f"the app has no store named {store!r}")

    # -- output ------------------------------------------------------------------------------

    @property
    def backend(self) -> MemoryBackend:
        """The in-memory backend the app runs on."""
        return self._backend

    def records(self, topic: str) -> list[TestRecord]:
        """Return every record ``topic`` holds, partition by partition, in offset order.

        :raises TopologyError: if the app does not use ``topic``.
        """
        if topic not in self._counts:
            raise TopologyError(f"the app does not use topic {topic!r}")
        serde = self._serdes.get(topic, BytesSerde())
        return [
            TestRecord(
                topic, p, r.offset, r.key, serde.deserialize(r.value), r.timestamp, r.headers
            )
            for p in range(self._counts[topic])
            for r in self._backend.records(topic, p)
        ]

    def values(self, topic: str) -> list[Any]:
        """Return the values of every record ``topic`` holds (see :meth:`records`)."""
        return [r.value for r in self.records(topic)]

    def partitions(self, topic: str) -> int:
        """Return how many partitions ``topic`` has in the driver.

        :raises TopologyError: if the app does not use ``topic``.
        """
        if topic not in self._counts:
            raise TopologyError(f"the app does not use topic {topic!r}")
        return self._counts[topic]
