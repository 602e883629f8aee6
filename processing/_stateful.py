"""Stateful steps: what they share, and ``process()``, the primitive for custom state.

Theory of operation
-------------------
A stateful step owns stores (``_stores``) opened for its task when it is built. It
keys its state by the *encoded* key of each record, the bytes the key is written as
(and hashed by, for placement): for records read from a topic (or a repartition topic)
those are the stored key bytes, no encoding needed; for keys a ``key_by`` computed in
this task they are the key serde's output. Two streams whose keys encode alike meet in
one partition and join on one key, whatever produced them (``headwater produce --key``
encodes keys as ``key_by`` does).

What a stateful step emits it adds as rows of its own (``Context.add_rows``): its
timestamp, its lineage (the last input it covers) and its key bytes; the batch it pushes
on carries no key objects, so sinks write the key bytes as they are, and a later
``repartition`` reads them back with the key serde of the stream's ``key_by``.

Exactly once for state: :meth:`StatefulStep.uncovered` drops, before a batch changes
the state, the records whose input the restored state already covers (see ``_stores``),
and, for records read from a repartition topic, those the state has applied already
though the topic holds them twice. An upstream task that crashed re-processes its
uncommitted tail, so it writes the records derived from that tail to the repartition
topic again. Each such record names its source (``headwater.source``: the upstream's
input partition and offset) and its number among the records that source made
(``headwater.seq``), and, as long as no step above the repartition emits rows of its
own (``follows_offsets`` in ``_graph.py``: the topic's ``dedupe`` flag), the records of
one source partition follow its offsets in every partition of the topic. So the step
keeps, per source partition, the last ``(offset, number)`` it applied (checkpointed with
its state) and drops a record that is not after it: a copy. The price is reading one
header per record of a repartition topic. A reset of the app's input offsets to
earlier ones must reset its state too (delete its changelogs), as in Kafka Streams: the
inputs read again would count as copies. Records of repartition topics written below
steps that emit rows (a windowed aggregation's results re-keyed, say) are not checked:
for those, state is at-least-once.

``process()``: :class:`ProcessStep` calls the user's processor once per record with a
:class:`ProcessorContext`: the task's stores by name, the record's key, timestamp and
position, ``forward`` to emit, and timers on wall time and on stream time (Kafka Streams'
Processor API; Bytewax's ``stateful_map`` is a processor with one store). Timers live
in memory: a processor's ``init`` runs again after a restore, and schedules them anew
from its stores.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from headwater.groups import TopicPartition

from ._batch import Batch, Context, at_origins
from ._clock import Timer
from ._lineage import SourcePosition
from ._marks import newer_marks
from ._operators import Step
from ._stores import MemoryStore, StoreSpec

if TYPE_CHECKING:
    from ._graph import Node
    from ._serde import Serde
    from ._tasks import Task

logger = logging.getLogger("headwater.processing")


def stored_keys(node: Node | None) -> bool:
    """Return whether records keyed by ``node`` (a batch's ``key_node``) hold their key
    bytes in their rows: keys read from a topic, or emitted by a stateful step."""
    return node is None or node.is_source or bool(node.params.get("emits_rows"))


class StatefulStep(Step):
    """A step with stores; see the module docstring."""

    __slots__ = ("key_serde", "stores")

    def __init__(self, node: Node, task: Task) -> None:
        super().__init__(node, task)
        specs: list[StoreSpec] = node.params["stores"]
        self.stores = [task.open_store(spec) for spec in specs]
        #: The serde that turns this step's key bytes into the user's key objects
        #: (None: the keys are the stored bytes themselves).
        self.key_serde: Serde[Any] | None = node.params.get("key_serde")

    @property
    def store(self) -> MemoryStore:
        """The step's first (usually only) store."""
        return self.stores[0]

    def key_bytes(self, batch: Batch, ctx: Context) -> list[bytes | None]:
        """Return each record's key as the bytes it is written as."""
        if batch.keys is None or stored_keys(batch.key_node):
            return at_origins(ctx.records.keys, batch.origins)
        assert batch.key_node is not None
        serialize = batch.key_node.params["key_serde"].serialize
        return list(map(serialize, batch.keys))

    def key_object(self, key: bytes | None) -> Any:
        """Return the user's key object of ``key`` bytes."""
        if key is None or self.key_serde is None:
            return key
        return self.key_serde.deserialize(key)

    def uncovered(self, batch: Batch, ctx: Context) -> Batch:
        """Return ``batch`` without the records whose input the state already covers
        (see the module docstring)."""
        store = self.stores[0]
        if ctx.dedupe:
            batch = self.unapplied(batch, ctx)
        if not store.covers or not ctx.topic:
            return batch
        tp = TopicPartition(ctx.topic, ctx.partition)
        covered = store.covers.get(tp)
        if covered is None:
            return batch
        offsets = ctx.records.offsets
        keep = [offsets[o] >= covered for o in batch.origins]
        if all(keep):
            for s in self.stores:
                s.covers.pop(tp, None)
            return batch
        return batch.select(keep)

    def unapplied(self, batch: Batch, ctx: Context) -> Batch:
        """Return ``batch`` without the repartition topic's records that are copies of
        records applied already (see the module docstring)."""
        applied = self.stores[0].applied
        for s in self.stores[1:]:
            s.applied = applied
        keep, dropped = newer_marks(ctx.records.headers, batch.origins, ctx.read, applied)
        if not dropped:
            return batch
        logger.info(
            "task %s: %s dropped %d records of %s/%d applied already (written again by an "
            "upstream task that re-processed its uncommitted input)",
            self.task.id, self.node.label, dropped, ctx.topic, ctx.partition,
        )  # fmt: skip
        assert keep is not None
        return batch.select(keep)

    def emit(
        self,
        ctx: Context,
        values: list[Any],
        keys: list[bytes | None],
        timestamps: list[int],
        lineage: list[SourcePosition],
    ) -> Batch:
        """Add rows for emitted ``values`` (with their key bytes, timestamps and lineage)
        and return the batch to push on."""
        origins = ctx.add_rows(timestamps, lineage)
        if origins:
            ctx.records.keys[origins[0] :] = keys
        return Batch(values, origins, None, self.node)


def source_position(ctx: Context, origin: int) -> SourcePosition:
    """Return the lineage of row ``origin`` (what it was read from, or covers)."""
    return ctx.source(origin)


class ProcessorContext:
    """What a processor sees (see :meth:`Stream.process <headwater.processing.Stream.process>`).

    ``key``, ``timestamp`` and ``position`` describe the record being processed (in a
    timer callback: the key given to ``forward`` is needed, and ``timestamp`` is the
    timer's time). Concurrency: one task at a time; do not keep it past the call.
    """

    __slots__ = ("_forwarded", "_step", "key", "position", "timestamp")

    def __init__(self, step: ProcessStep) -> None:
        self._step = step
        self._forwarded: list[tuple[Any, Any, int | None, int | None]] = []
        self.key: Any = None
        self.timestamp = 0
        self.position: SourcePosition | None = None

    def store(self, name: str) -> MemoryStore:
        """Return the task's store ``name`` (one of the ``stores`` of ``process``).

        :raises KeyError: for a store the step did not declare.
        """
        for store in self._step.stores:
            if store.spec.name == name:
                return store
        raise KeyError(f"the processor has no store {name!r}; declare it in stores=[...]")

    @property
    def stream_time_ms(self) -> int | None:
        """The step's stream time: the largest record timestamp it has seen."""
        return self._step.stream_time_ms

    @property
    def wall_time_ms(self) -> int:
        """The wall clock, in epoch ms."""
        return self._step.task.clock.now_ms()

    def forward(self, value: Any, *, key: Any = ..., timestamp: int | None = None) -> None:
        """Emit ``value`` (with the current record's key unless ``key`` is given, and its
        timestamp unless ``timestamp`` is)."""
        self._forwarded.append((value, self.key if key is ... else key, timestamp, None))

    def schedule_wall(self, at_ms: int, callback: Callable[[ProcessorContext, int], None]) -> Timer:
        """Call ``callback(ctx, now_ms)`` once the wall clock reaches ``at_ms``."""
        return self._step.schedule(at_ms, callback, wall=True)

    def schedule_stream(
        self, at_ms: int, callback: Callable[[ProcessorContext, int], None]
    ) -> Timer:
        """Call ``callback(ctx, stream_time_ms)`` once the step's stream time reaches
        ``at_ms``."""
        return self._step.schedule(at_ms, callback, wall=False)


class Processor(Protocol):
    """What ``stream.process(factory)``'s factory returns, one per task."""

    def process(self, value: Any, ctx: ProcessorContext) -> None:
        """Handle one record (its key, timestamp and position are in ``ctx``)."""
        ...


class ProcessStep(StatefulStep):
    """Runs a user's processor (see the module docstring)."""

    __slots__ = ("ctx", "init", "last", "processor", "stream_time_ms", "stream_timers")

    #: Stream-time timers fire on the task's stream time, which the task then tracks.
    uses_stream_time = True

    def __init__(self, node: Node, task: Task) -> None:
        super().__init__(node, task)
        factory: Callable[[], Processor] = node.params["factory"]
        self.processor = factory()
        self.init: Callable[[ProcessorContext], None] | None = getattr(self.processor, "init", None)
        self.ctx = ProcessorContext(self)
        self.stream_time_ms: int | None = None
        self.last: SourcePosition | None = None
        #: The timers the processor scheduled (cancelled when a restore runs init again).
        self.stream_timers: list[Timer] = []
        if self.init is not None:
            self.init(self.ctx)

    def restored(self) -> None:
        """Take the restored stream time, and let the processor schedule its timers again
        (from its restored stores: those it scheduled before are cancelled)."""
        self.stream_time_ms = self.store.stream_time_ms if self.stores else None
        for timer in self.stream_timers:
            timer.cancel()
        self.stream_timers = []
        if self.init is not None:
            self.init(self.ctx)

    def schedule(
        self, at_ms: int, callback: Callable[[ProcessorContext, int], None], *, wall: bool
    ) -> Timer:
        """Schedule ``callback`` on wall time or on the step's stream time."""

        async def fire(ctx: Context, now: int) -> None:
            timer.cancel()  # fired: nothing for a restore to cancel
            self.ctx.timestamp = now
            self.ctx.key = None
            self._call(callback, now)
            await self._flush_forwarded(ctx, None, now)

        timers = self.task.timers
        timer = timers.at_wall_time(at_ms, fire) if wall else timers.at_stream_time(at_ms, fire)
        self.stream_timers = [t for t in self.stream_timers if not t.cancelled]
        self.stream_timers.append(timer)
        return timer

    def _call(self, callback: Callable[[ProcessorContext, int], None], now: int) -> None:
        callback(self.ctx, now)

    async def push(self, batch: Batch, ctx: Context) -> None:
        """Call the processor on each record, then push what it forwarded."""
        batch = self.uncovered(batch, ctx)
        if not batch.values:
            return
        records = ctx.records
        keys = batch.key_objects(records)
        pctx = self.ctx
        process = self.processor.process
        newest = self.stream_time_ms
        for value, key, origin in zip(batch.values, keys, batch.origins, strict=True):
            pctx.key = key
            ts = pctx.timestamp = records.timestamps[origin]
            pctx.position = ctx.source(origin)
            if newest is None or ts > newest:
                newest = self.stream_time_ms = ts
            mark = len(pctx._forwarded)
            try:
                process(value, pctx)
            except Exception as error:
                del pctx._forwarded[mark:]
                ctx.fail(self.node, origin, error)
                continue
            for i in range(mark, len(pctx._forwarded)):
                v, k, t, _ = pctx._forwarded[i]
                pctx._forwarded[i] = (v, k, t, origin)
        self.last = ctx.source(batch.origins[-1])
        for store in self.stores:
            store.stream_time_ms = self.stream_time_ms
            store.touched(())
        await self._flush_forwarded(ctx, batch, None)

    async def _flush_forwarded(self, ctx: Context, batch: Batch | None, now: int | None) -> None:
        forwarded, self.ctx._forwarded = self.ctx._forwarded, []
        if not forwarded:
            return
        timestamps = ctx.records.timestamps
        values: list[Any] = []
        keys: list[Any] = []
        origins: list[int] = []
        rows: list[tuple[int, int, SourcePosition]] = []  # outputs that need a row
        for value, key, ts, origin in forwarded:
            values.append(value)
            keys.append(key)
            if origin is not None and ts is None:
                origins.append(origin)
                continue
            stamp = ts if ts is not None else timestamps[origin] if origin is not None else now
            where = ctx.source(origin) if origin is not None else self.last or _NOWHERE
            rows.append((len(origins), stamp or 0, where))
            origins.append(-1)
        if rows:
            added = ctx.add_rows([t for _, t, _ in rows], [w for _, _, w in rows])
            for (i, _, _), origin in zip(rows, added, strict=True):
                origins[i] = origin
        await self.forward(Batch(values, origins, keys, self.node), ctx)


_NOWHERE = SourcePosition("-", 0, 0)
