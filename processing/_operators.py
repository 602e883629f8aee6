"""Operators at run time: the stateless steps a batch goes through.

Theory of operation
-------------------
Each live graph node becomes one step per task (``_pipeline.py`` builds them from the
table of node kinds in ``_graph.py``), so a step may keep per-task state. A step gets a
:class:`~headwater.processing._batch.Batch` (columns: values, origins, keys), calls the
user's function on the whole value column with ``map`` (so the per-record cost is one
C-level call, not an ``await``) and pushes what it makes to its children. Async steps
await up to ``concurrency`` calls at once and keep input order. A failing function is
handled by ``apply_each`` under the node's error policy (see ``_batch.py``).

``key_by`` keeps the user's key objects in the batch; the sink serialises them, once,
with the key_by's key serde. Sinks collect what reaches them in the context;
``_pipeline.py`` serialises and places it once the whole batch has been through.

A step that works on time asks its task for timers when it is built (``task.timers``,
see ``_clock.py``) and emits with ``Context.add_rows``; a step class that needs the
task's stream time says so with ``uses_stream_time``, so that tasks of pipelines
without one skip the cost of tracking it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from itertools import chain, compress, repeat
from operator import not_
from typing import TYPE_CHECKING, Any, ClassVar

import anyio
import orjson

from ._batch import Batch, Context, Event, apply_each, indexes, mask_without
from ._retry import Retry
from ._serde import BytesSerde, Serde, batch_deserializer

if TYPE_CHECKING:
    from ._graph import Node
    from ._tasks import Task


class Step:
    """A live graph node at run time, in one task; pushes what it makes to its children.

    Built by the kind's entry in the table of node kinds as ``step(node, task)``.
    """

    __slots__ = ("children", "counts", "node", "task")

    #: Whether the step reads its task's stream time (the task tracks it only if so).
    uses_stream_time: ClassVar[bool] = False
    #: Whether the step takes a batch of values still encoded (``Batch.encoded_by``).
    takes_encoded_values: ClassVar[bool] = False

    def __init__(self, node: Node, task: Task) -> None:
        self.node = node
        self.task = task
        self.children: list[Step] = []
        #: The operator's counts, shared with its steps in the pipeline's other tasks.
        self.counts = task.operator_counts(node.id)

    def link(self, children: list[Step | None]) -> None:
        """Take the steps of the node's children (None: a child that leads nowhere)."""
        self.children = [c for c in children if c is not None]

    async def push(self, batch: Batch, ctx: Context) -> None:
        """Process ``batch`` and pass the result on."""
        await self.forward(batch, ctx)

    def restored(self) -> None:
        """Take up the task's restored state (a stateful step rebuilds what it derives
        from its store, and schedules its timers again)."""

    async def forward(self, batch: Batch, ctx: Context) -> None:
        """Pass ``batch`` to every child (nothing when it is empty)."""
        if batch.values:
            count = len(batch.values)
            self.counts.records_out += count
            for child in self.children:
                child.counts.records_in += count
                await child.push(batch, ctx)


class SourceStep(Step):
    """Deserialises the values (and, read back from a repartition topic, the keys) of an
    input batch."""

    __slots__ = ("key_serde", "serde")

    def __init__(self, node: Node, task: Task) -> None:
        super().__init__(node, task)
        self.serde: Serde[Any] = node.params["serde"]
        self.key_serde: Serde[Any] | None = node.params.get("key_serde")

    async def start(self, ctx: Context) -> None:
        """Push the records of ``ctx`` through the pipeline."""
        raw = ctx.records.values
        self.counts.records_in += len(raw)
        serde = self.serde
        batch = Batch(raw, indexes(len(raw)), read_as=serde)
        encoded_by = None
        if type(serde) is not BytesSerde:
            decode = batch_deserializer(serde, raw)
            if ctx.event_times is not None and decode is orjson.loads and self.decodes_later():
                encoded_by = self.node  # the window decodes what it keeps (see Batch)
            else:
                values, batch = apply_each(self.node, decode, batch, ctx)
                batch = Batch(values, batch.origins, read_as=serde)
        if self.key_serde is not None or encoded_by is not None:
            # Keys stay bytes until a step asks (Batch.key_objects).
            key_node = None if self.key_serde is None else self.node
            batch = Batch(batch.values, batch.origins, None, key_node, serde, encoded_by=encoded_by)
        if self.node.params.get("dedupe"):
            ctx.dedupe = True
        await self.forward(batch, ctx)

    def decodes_later(self) -> bool:
        """Return whether the source's one step decodes the values itself (only those
        it keeps: a tumbling window, see ``_handoff.py``)."""
        children = self.children
        return len(children) == 1 and children[0].takes_encoded_values


class FilterStep(Step):
    """Keeps the values its predicate accepts."""

    __slots__ = ()

    async def push(self, batch: Batch, ctx: Context) -> None:
        """Keep the values for which the predicate is true."""
        assert self.node.fn is not None
        keep, batch = apply_each(self.node, self.node.fn, batch, ctx)
        await self.forward(batch.select(keep), ctx)


class MapStep(Step):
    """Replaces each value."""

    __slots__ = ()

    async def push(self, batch: Batch, ctx: Context) -> None:
        """Replace each value by the function's result."""
        assert self.node.fn is not None
        values, batch = apply_each(self.node, self.node.fn, batch, ctx)
        await self.forward(batch.replace(values), ctx)


class FlatMapStep(Step):
    """Replaces each value by zero or more values."""

    __slots__ = ()

    async def push(self, batch: Batch, ctx: Context) -> None:
        """Expand each value into the values the function yields."""
        fn = self.node.fn
        assert fn is not None
        groups, batch = apply_each(self.node, lambda value: list(fn(value)), batch, ctx)
        sizes = list(map(len, groups))
        origins = list(chain.from_iterable(map(repeat, batch.origins, sizes)))
        keys = None
        if batch.keys is not None:
            keys = list(chain.from_iterable(map(repeat, batch.keys, sizes)))
        await self.forward(
            Batch(list(chain.from_iterable(groups)), origins, keys, batch.key_node), ctx
        )


class PeekStep(Step):
    """Calls a function for its side effect."""

    __slots__ = ()

    async def push(self, batch: Batch, ctx: Context) -> None:
        """Call the function on each value; pass the values on."""
        assert self.node.fn is not None
        _, batch = apply_each(self.node, self.node.fn, batch, ctx)
        await self.forward(batch.replace(batch.values), ctx)  # a peek may change values


class KeyByStep(Step):
    """Gives each record a new key: the user's object, serialised at the sink."""

    __slots__ = ()

    async def push(self, batch: Batch, ctx: Context) -> None:
        """Compute each record's key."""
        assert self.node.fn is not None
        keys, batch = apply_each(self.node, self.node.fn, batch, ctx)
        await self.forward(batch.rekeyed(keys, self.node), ctx)


class MetadataStep(Step):
    """Wraps each value in an :class:`Event`."""

    __slots__ = ()

    async def push(self, batch: Batch, ctx: Context) -> None:
        """Wrap each value with its record's metadata."""
        records, origins = ctx.records, batch.origins
        if ctx.sources is None:
            topics: Any = repeat(ctx.topic)
            partitions: Any = repeat(ctx.partition)
        else:
            sources = ctx.sources
            topics = [sources[o][0] for o in origins]
            partitions = [sources[o][1] for o in origins]
        values = list(
            map(
                Event,
                batch.values,
                batch.key_objects(records),
                map(records.timestamps.__getitem__, origins),
                map(records.headers.__getitem__, origins),
                topics,
                partitions,
                map(records.offsets.__getitem__, origins),
            )
        )
        await self.forward(batch.replace(values), ctx)


class SplitStep(Step):
    """Sends each value to the first route whose predicate accepts it, else to the rest."""

    __slots__ = ("predicates", "routes")

    def __init__(self, node: Node, task: Task) -> None:
        super().__init__(node, task)
        self.predicates: tuple[Callable[[Any], object], ...] = tuple(node.params["routes"].values())
        self.routes: list[Step | None] = []  # one per route, the rest last

    def link(self, children: list[Step | None]) -> None:
        """Take the route steps, in route order (None: a route that leads nowhere)."""
        self.routes = children

    async def push(self, batch: Batch, ctx: Context) -> None:
        """Evaluate the routes once per value and push each part to its route."""
        predicates = self.predicates
        if len(predicates) == 1:
            matched, batch = apply_each(self.node, predicates[0], batch, ctx)
            parts = [batch.select(matched), batch.select(list(map(not_, matched)))]
        else:

            def choose(value: Any) -> int:
                for i, predicate in enumerate(predicates):
                    if predicate(value):
                        return i
                return len(predicates)

            chosen, batch = apply_each(self.node, choose, batch, ctx)
            parts = [batch.select([c == i for c in chosen]) for i in range(len(self.routes))]
        for route, part in zip(self.routes, parts, strict=True):
            if route is not None and part.values:
                count = len(part.values)
                self.counts.records_out += count
                route.counts.records_in += count
                await route.push(part, ctx)


class SinkStep(Step):
    """Collects what reaches a sink node (``to``, ``through``); written after the batch."""

    __slots__ = ("partitions", "serde", "topic")

    def __init__(self, node: Node, task: Task) -> None:
        super().__init__(node, task)
        assert node.topic is not None
        self.topic: str = node.topic
        self.serde: Serde[Any] = node.params["serde"]
        self.partitions = task.topic_partitions[node.topic]

    def link(self, children: list[Step | None]) -> None:
        """A sink has no children at run time (a ``through``'s reader starts a pipeline)."""

    async def push(self, batch: Batch, ctx: Context) -> None:
        """Keep ``batch`` for writing."""
        ctx.outputs.setdefault(self, []).append(batch)


class AsyncStep(Step):
    """Awaits an async function per value, ``concurrency`` at a time, keeping order."""

    __slots__ = ("concurrency", "retry")

    def __init__(self, node: Node, task: Task) -> None:
        super().__init__(node, task)
        self.concurrency: int = node.params["concurrency"]
        self.retry: Retry | None = node.params["retry"]

    async def call_all(self, batch: Batch, ctx: Context) -> tuple[list[Any], Batch]:
        """Return each value's result, without the records that failed (policy applied)."""
        fn: Callable[[Any], Awaitable[Any]] = self.node.fn  # type: ignore[assignment]
        retry = self.retry
        values = batch.values
        results: list[Any] = [None] * len(values)
        errors: dict[int, Exception] = {}
        slots = anyio.Semaphore(self.concurrency)

        async def one(i: int, value: Any) -> None:
            try:
                results[i] = await (fn(value) if retry is None else retry.call(fn, value))
            except Exception as error:
                errors[i] = error
            finally:
                slots.release()

        async with anyio.create_task_group() as tg:
            for i, value in enumerate(values):
                await slots.acquire()
                tg.start_soon(one, i, value)
        if not errors:
            return results, batch
        failed = sorted(errors)
        for i in failed:
            ctx.fail(self.node, batch.origins[i], errors[i])
        mask = mask_without(len(values), failed)
        return list(compress(results, mask)), batch.select(mask)


class MapAsyncStep(AsyncStep):
    """``map_async``."""

    __slots__ = ()

    async def push(self, batch: Batch, ctx: Context) -> None:
        """Replace each value by the awaited result."""
        values, batch = await self.call_all(batch, ctx)
        await self.forward(batch.replace(values), ctx)


class FilterAsyncStep(AsyncStep):
    """``filter_async``."""

    __slots__ = ()

    async def push(self, batch: Batch, ctx: Context) -> None:
        """Keep the values whose awaited predicate is true."""
        keep, batch = await self.call_all(batch, ctx)
        await self.forward(batch.select(keep), ctx)
