"""Step kinds that exist only in the tests: they use the runtime's seams for state and time
(per-task instances, timers, emitted rows) the way stateful operators will.

Each test that uses one registers it in the table of node kinds with :func:`register`
(through pytest's ``monkeypatch``, so the table is restored afterwards).
"""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from headwater.processing import Stream
from headwater.processing._batch import Batch, Context
from headwater.processing._graph import KINDS, Node, NodeKind, Role
from headwater.processing._lineage import SourcePosition
from headwater.processing._operators import Step
from headwater.processing._tasks import Task


class CountStep(Step):
    """Emits, for each value, ``{"task": id, "n": how many values this task saw}``: state
    per task instance."""

    __slots__ = ("seen", "task")

    def __init__(self, node: Node, task: Task) -> None:
        super().__init__(node, task)
        self.task = task
        self.seen = 0

    async def push(self, batch: Batch, ctx: Context) -> None:
        out = []
        for value in batch.values:
            self.seen += 1
            out.append({"task": str(self.task.id), "n": self.seen, "value": value})
        await self.forward(batch.replace(out), ctx)


class TickStep(Step):
    """Counts values and, every ``period_ms`` of wall time, emits how many it saw since
    the last tick, stamped with the tick's time and naming the last value it covers.
    Each emission's time is appended to ``params["fired"]`` (a list) and sets
    ``params["event"]`` (an anyio.Event), when given."""

    __slots__ = ("count", "last", "period", "task")

    def __init__(self, node: Node, task: Task) -> None:
        super().__init__(node, task)
        self.task = task
        self.period: int = node.params["period_ms"]
        self.count = 0
        self.last: SourcePosition | None = None
        task.timers.at_wall_time(task.clock.now_ms() + self.period, self.tick)

    async def push(self, batch: Batch, ctx: Context) -> None:
        self.count += len(batch)
        self.last = ctx.source(batch.origins[-1])

    async def tick(self, ctx: Context, now_ms: int) -> None:
        self.task.timers.at_wall_time(now_ms + self.period, self.tick)
        if self.last is None or not self.count:
            return
        origins = ctx.add_rows([now_ms], [self.last])
        value = {"task": str(self.task.id), "count": self.count, "at": now_ms}
        self.count = 0
        await self.forward(Batch([value], origins), ctx)
        fired = self.node.params.get("fired")
        if fired is not None:
            fired.append(now_ms)
            event: anyio.Event | None = self.node.params.get("event")
            if event is not None:
                event.set()


class StreamTimeStep(Step):
    """Emits ``{"closed": deadline, "stream_time": ...}`` each time the task's stream time
    reaches ``period_ms`` past the previous deadline (the first: past the first record):
    a stream-time timer, as a window close."""

    __slots__ = ("next", "period", "task")
    uses_stream_time = True

    def __init__(self, node: Node, task: Task) -> None:
        super().__init__(node, task)
        self.task = task
        self.period: int = node.params["period_ms"]
        self.next: int | None = None

    async def push(self, batch: Batch, ctx: Context) -> None:
        if self.next is None:
            self.next = ctx.records.timestamps[batch.origins[0]] + self.period
            self.task.timers.at_stream_time(self.next, self.close)

    async def close(self, ctx: Context, time_ms: int) -> None:
        assert self.next is not None
        deadline, self.next = self.next, self.next + self.period
        where = SourcePosition(ctx.topic, ctx.partition, ctx.records.offsets[-1])
        origins = ctx.add_rows([deadline], [where])
        await self.forward(Batch([{"closed": deadline, "stream_time": time_ms}], origins), ctx)
        self.task.timers.at_stream_time(self.next, self.close)


TEST_KINDS = {
    "count": NodeKind("count", Role.OPERATOR, CountStep),
    "tick": NodeKind("tick", Role.OPERATOR, TickStep),
    "stream_time": NodeKind("stream_time", Role.OPERATOR, StreamTimeStep),
}


def register(monkeypatch: pytest.MonkeyPatch) -> None:
    """Add the test kinds to the table of node kinds for one test."""
    for name, kind in TEST_KINDS.items():
        monkeypatch.setitem(KINDS, name, kind)


def derive(stream: Stream[Any], kind: str, **params: Any) -> Stream[Any]:
    """Return ``stream`` followed by a node of test ``kind`` with ``params``."""
    return stream._derive(kind, params=params)
