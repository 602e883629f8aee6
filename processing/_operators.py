"""Operators at run time: steps that transform a batch of records as columns.

Theory of operation
-------------------
A partition task hands each batch it reads to its source's :class:`Pipeline` (see
``_pipeline.py``), which pushes a :class:`Batch` through a tree of steps, one per live
graph node. A batch is columns, never a list of record objects: ``values``, the
``origins`` (each value's index in the input batch, which gives its source record: key,
timestamp, headers, offset) and, after a ``key_by``, ``keys``. Steps call the user's
function on the whole column with ``map`` (so the per-record cost is one C-level call,
not an ``await``) and build new columns; a batch is never changed in place, so fanning
one out to several children needs no copies.

A user function that raises stops the ``map`` after the values before it; ``extend``
keeps those, so the step knows which value failed, applies the stream's error policy to
its source record (raise: :class:`OperatorError`; skip: count and log; dead letter:
remembered in the :class:`Context` and written with the outputs), and carries on after
it. Async steps await up to ``concurrency`` calls at once and keep input order.

Sinks collect what reaches them in the context; ``_pipeline.py`` serialises and places
it once the whole batch has been through.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from itertools import chain, compress, islice, repeat
from operator import not_
from typing import Any

import anyio

from headwater.store import RecordColumns

from ._errors import ErrorPolicy, OperatorError, describe_exception, user_frame
from ._graph import Node
from ._retry import Retry
from ._serde import BytesSerde, Serde, batch_deserializer
from ._stream import Event

logger = logging.getLogger("headwater.processing")

_FAILED = object()
# Indexes 0, 1, 2, ... as shared int objects: a batch's origins are a slice of this list,
# so a batch of up to this many records allocates no int per record (beyond 256, every
# int is an object of its own).
_INDEXES = list(range(1 << 15))


def _indexes(count: int) -> list[int]:
    return _INDEXES[:count] if count <= len(_INDEXES) else list(range(count))


class Batch:
    """Values in flight, as columns: see the module docstring."""

    __slots__ = ("keys", "origins", "values")

    def __init__(
        self, values: list[Any], origins: list[int], keys: list[bytes | None] | None = None
    ):
        self.values = values
        self.origins = origins
        self.keys = keys

    def __len__(self) -> int:
        return len(self.values)

    def key_column(self, records: RecordColumns) -> list[bytes | None]:
        """Return each record's key: its new one after a ``key_by``, else its stored one."""
        if self.keys is not None:
            return self.keys
        return list(map(records.keys.__getitem__, self.origins))

    def replace(self, values: list[Any]) -> Batch:
        """Return the batch with ``values`` (one per record) instead of its own."""
        return Batch(values, self.origins, self.keys)

    def select(self, mask: Sequence[object]) -> Batch:
        """Return the records whose ``mask`` entry is true."""
        keys = None if self.keys is None else list(compress(self.keys, mask))
        return Batch(list(compress(self.values, mask)), list(compress(self.origins, mask)), keys)

    def without(self, failed: Sequence[int]) -> Batch:
        """Return the batch without the records at indexes ``failed``."""
        return self.select(_mask_without(len(self.values), failed))


def _mask_without(count: int, failed: Sequence[int]) -> list[bool]:
    mask = [True] * count
    for i in failed:
        mask[i] = False
    return mask


class DeadLetter:
    """A source record that failed an operator under the ``dead_letter`` policy."""

    __slots__ = ("error", "node", "origin")

    def __init__(self, node: Node, origin: int, error: BaseException) -> None:
        self.node = node
        self.origin = origin
        self.error = error


class Context:
    """One input batch being processed: where it was read and what it produced so far."""

    __slots__ = ("dead_letters", "outputs", "partition", "records", "skipped", "topic")

    def __init__(self, topic: str, partition: int, records: RecordColumns) -> None:
        self.topic = topic
        self.partition = partition
        self.records = records
        self.outputs: dict[Step, list[Batch]] = {}
        self.dead_letters: list[DeadLetter] = []
        self.skipped = 0

    def fail(self, node: Node, origin: int, error: BaseException) -> None:
        """Apply ``node``'s error policy to the source record at index ``origin``.

        :raises OperatorError: under the ``raise`` policy.
        """
        offset = self.records.offsets[origin]
        if node.policy is ErrorPolicy.RAISE:
            raise OperatorError(node.label, self.topic, self.partition, offset, error) from error
        if node.policy is ErrorPolicy.SKIP:
            self.skipped += 1
            where = user_frame(error)
            logger.warning(
                "skipped %s/%d offset %d: operator %s failed: %s%s",
                self.topic,
                self.partition,
                offset,
                node.label,
                describe_exception(error),
                f" at {where}" if where else "",
            )
            return
        self.dead_letters.append(DeadLetter(node, origin, error))


def apply_each(
    node: Node,
    fn: Callable[[Any], Any],
    batch: Batch,
    ctx: Context,
    values: list[Any] | None = None,
) -> tuple[list[Any], Batch]:
    """Return ``fn`` of each value (of ``values``, by default the batch's) and the batch,
    both without the records for which ``fn`` raised (handled by ``node``'s policy)."""
    if values is None:
        values = batch.values
    out: list[Any] = []
    try:
        out.extend(map(fn, values))
        return out, batch
    except Exception as error:
        failure: Exception | None = error
    failed: list[int] = []
    while failure is not None:
        i = len(out)
        ctx.fail(node, batch.origins[i], failure)
        failed.append(i)
        out.append(_FAILED)
        failure = None
        try:
            out.extend(map(fn, islice(values, i + 1, None)))
        except Exception as error:
            failure = error
    mask = _mask_without(len(out), failed)
    return list(compress(out, mask)), batch.select(mask)


class Step:
    """A live graph node at run time; pushes what it makes to its children."""

    __slots__ = ("children", "node")

    def __init__(self, node: Node) -> None:
        self.node = node
        self.children: list[Step] = []

    async def push(self, batch: Batch, ctx: Context) -> None:
        """Process ``batch`` and pass the result on."""
        await self.forward(batch, ctx)

    async def forward(self, batch: Batch, ctx: Context) -> None:
        """Pass ``batch`` to every child (nothing when it is empty)."""
        if batch.values:
            for child in self.children:
                await child.push(batch, ctx)


class SourceStep(Step):
    """Deserialises the values of an input batch."""

    __slots__ = ("serde",)

    def __init__(self, node: Node) -> None:
        super().__init__(node)
        self.serde: Serde[Any] = node.params["serde"]

    async def start(self, ctx: Context) -> None:
        """Push the records of ``ctx`` through the pipeline."""
        raw = ctx.records.values
        batch = Batch(raw, _indexes(len(raw)))
        if type(self.serde) is not BytesSerde:
            decode = batch_deserializer(self.serde, raw)
            values, batch = apply_each(self.node, decode, batch, ctx)
            batch = batch.replace(values)
        await self.forward(batch, ctx)


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
        await self.forward(Batch(list(chain.from_iterable(groups)), origins, keys), ctx)


class PeekStep(Step):
    """Calls a function for its side effect."""

    __slots__ = ()

    async def push(self, batch: Batch, ctx: Context) -> None:
        """Call the function on each value; pass the values on."""
        assert self.node.fn is not None
        _, batch = apply_each(self.node, self.node.fn, batch, ctx)
        await self.forward(batch, ctx)


class KeyByStep(Step):
    """Gives each record a new key."""

    __slots__ = ("serde",)

    def __init__(self, node: Node) -> None:
        super().__init__(node)
        self.serde: Serde[Any] = node.params["serde"]

    async def push(self, batch: Batch, ctx: Context) -> None:
        """Compute and encode each record's key."""
        assert self.node.fn is not None
        keys, batch = apply_each(self.node, self.node.fn, batch, ctx)
        encoded, batch = apply_each(self.node, self.serde.serialize, batch, ctx, keys)
        await self.forward(Batch(batch.values, batch.origins, encoded), ctx)


class MetadataStep(Step):
    """Wraps each value in an :class:`Event`."""

    __slots__ = ()

    async def push(self, batch: Batch, ctx: Context) -> None:
        """Wrap each value with its record's metadata."""
        records, origins = ctx.records, batch.origins
        values = list(
            map(
                Event,
                batch.values,
                batch.key_column(records),
                map(records.timestamps.__getitem__, origins),
                map(records.headers.__getitem__, origins),
                repeat(ctx.topic),
                repeat(ctx.partition),
                map(records.offsets.__getitem__, origins),
            )
        )
        await self.forward(batch.replace(values), ctx)


class SplitStep(Step):
    """Sends each value to the first route whose predicate accepts it, else to the rest."""

    __slots__ = ("predicates", "routes")

    def __init__(self, node: Node) -> None:
        super().__init__(node)
        self.predicates: tuple[Callable[[Any], object], ...] = tuple(node.params["routes"].values())
        self.routes: list[Step | None] = []  # one per route, the rest last

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
                await route.push(part, ctx)


class SinkStep(Step):
    """Collects what reaches a ``to`` or ``through`` node; written after the batch."""

    __slots__ = ("partitions", "serde", "topic")

    def __init__(self, node: Node, partitions: int) -> None:
        super().__init__(node)
        assert node.topic is not None
        self.topic: str = node.topic
        self.serde: Serde[Any] = node.params["serde"]
        self.partitions = partitions

    async def push(self, batch: Batch, ctx: Context) -> None:
        """Keep ``batch`` for writing."""
        ctx.outputs.setdefault(self, []).append(batch)


class AsyncStep(Step):
    """Awaits an async function per value, ``concurrency`` at a time, keeping order."""

    __slots__ = ("concurrency", "retry")

    def __init__(self, node: Node) -> None:
        super().__init__(node)
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
        mask = _mask_without(len(values), failed)
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


#: The step class of each one-in operator kind.
STEP_KINDS: dict[str, type[Step]] = {
    "filter": FilterStep,
    "map": MapStep,
    "flat_map": FlatMapStep,
    "peek": PeekStep,
    "key_by": KeyByStep,
    "metadata": MetadataStep,
    "map_async": MapAsyncStep,
    "filter_async": FilterAsyncStep,
    "merge": Step,
    "route": Step,
}
