"""Aggregations: windowed (tumbling, hopping, sliding, session) and over all time.

Theory of operation
-------------------
An aggregation folds the values of each key with the user's ``add(acc, value)``,
starting from ``initial()`` (``count``, ``sum``, ``min``, ``max`` and ``reduce`` are
such folds). Its state is one store per task, keyed by the record's key bytes (see
``_stateful.py``), plus the window for windowed ones; a window's state is
``[acc, source, offset]``, the aggregate and the last input it covers (the lineage of
its result). A batch is folded in one loop over plain dicts; the store then learns the
keys it touched, once per batch.

Time (windows.py has the arithmetic). Each windowed step keeps its stream time: the
largest event time it has seen (``timestamp=fn`` of the value, else the record's
timestamp), record by record within a batch, as Kafka Streams' processors do; it is
flushed with the store and restored with it. A record whose window has closed is late:
it goes to ``late()`` and changes nothing. After each batch, the windows whose close
time the stream time reached are emitted by ``final()`` (oldest first) and removed;
``updates()`` emits a window's new value after every record that changed it.

A quiet task does not hold windows open: once the task has read nothing for ``idle_ms``
of wall time, a wall-time timer advances the step's stream time with the wall clock
from where the last input left it, and closes the windows that reaches, exactly as a
record with that timestamp would (the results are the same values). One timer per step,
re-armed only when it fires, so a busy task pays nothing for it.

Over all time (:class:`TableAggregateStep`) the result is a table: each record emits the
key's new and old aggregate (a :class:`~headwater.processing._table.Change`).
"""

from __future__ import annotations

import heapq
from bisect import insort
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from itertools import compress, groupby, repeat
from operator import itemgetter
from typing import TYPE_CHECKING, Any, ClassVar

from ._batch import Batch, Context, apply_each, at_origins, mask_without
from ._clock import Timer
from ._columns import take_rows
from ._operators import SinkStep
from ._serde import writes_plain_json
from ._stateful import StatefulStep
from ._stores import StoreKind
from ._table import Change
from ._window_columns import running_max, tumbling_windows
from .windows import (
    HoppingWindows,
    SessionWindows,
    SlidingWindows,
    TumblingWindows,
    Windowed,
    WindowSpec,
)

if TYPE_CHECKING:
    from ._graph import Node
    from ._operators import Step
    from ._tasks import Task


@dataclass(frozen=True, slots=True)
class Aggregator:
    """How an aggregation folds values: ``initial()``, ``add(acc, value)`` and, for
    session windows, ``merge(acc, acc)``."""

    initial: Callable[[], Any]
    add: Callable[[Any, Any], Any]
    merge: Callable[[Any, Any], Any] | None = None


def _add_one(acc: int, value: object) -> int:
    return acc + 1


def _plus(a: Any, b: Any) -> Any:
    return a + b


def _zero() -> int:
    return 0


def _none() -> None:
    return None


def count_aggregator() -> Aggregator:
    """``count()``: how many records."""
    return Aggregator(_zero, _add_one, _plus)


def sum_aggregator(fn: Callable[[Any], Any]) -> Aggregator:
    """``sum(fn)``: the sum of ``fn(value)``."""
    return Aggregator(_zero, lambda acc, value: acc + fn(value), _plus)


def min_aggregator(fn: Callable[[Any], Any]) -> Aggregator:
    """``min(fn)``: the least ``fn(value)``."""

    def add(acc: Any, value: Any) -> Any:
        x = fn(value)
        return x if acc is None or x < acc else acc

    return Aggregator(_none, add, lambda a, b: b if a is None or (b is not None and b < a) else a)


def max_aggregator(fn: Callable[[Any], Any]) -> Aggregator:
    """``max(fn)``: the greatest ``fn(value)``."""

    def add(acc: Any, value: Any) -> Any:
        x = fn(value)
        return x if acc is None or x > acc else acc

    return Aggregator(_none, add, lambda a, b: b if a is None or (b is not None and b > a) else a)


def reduce_aggregator(fn: Callable[[Any, Any], Any]) -> Aggregator:
    """``reduce(fn)``: the first value, then ``fn(acc, value)`` for each next one."""

    def add(acc: Any, value: Any) -> Any:
        return value if acc is None else fn(acc, value)

    return Aggregator(_none, add, lambda a, b: b if a is None else a if b is None else fn(a, b))


class _Outputs:
    """A windowed aggregation's children, by what they receive.

    ``final_as_json`` and ``updates_as_json`` say whether all that sees those results
    is topics written as plain JSON: the results are then made as the dicts JSON writes
    a :class:`Windowed` as (the same bytes), not as objects made only to be thrown away
    once written."""

    __slots__ = ("final", "final_as_json", "late", "updates", "updates_as_json")

    def __init__(self, children: list[Step | None]) -> None:
        self.final: list[Step] = []
        self.updates: list[Step] = []
        self.late: list[Step] = []
        for child in children:
            if child is not None:
                getattr(self, child.node.params["output"]).append(child)
        self.final_as_json = _only_json_sinks(self.final)
        self.updates_as_json = _only_json_sinks(self.updates)


def _only_json_sinks(outputs: list[Step]) -> bool:
    """Return whether the steps of one output (``final``, ``updates``) pass its results
    on only to sinks that write topics as plain JSON (linked already: a step's
    children are built before it)."""
    return all(
        output.children
        and all(
            isinstance(sink, SinkStep) and sink.node.kind == "to" and writes_plain_json(sink.serde)
            for sink in output.children
        )
        for output in outputs
    )


class WindowedAggregateStep(StatefulStep):
    """A windowed aggregation of one kind (see the module docstring); subclasses fold."""

    __slots__ = (
        "aggregator",
        "base_stream_time",
        "closing",
        "grace_ms",
        "heap",
        "idle_ms",
        "idle_timer",
        "key_objects",
        "outputs",
        "sources",
        "spec",
        "stream_time_ms",
        "timestamp",
    )

    #: Whether windows close in the order of their starts (the close-time heap then
    #: gives ``final()`` its order, with no sort).
    closes_in_start_order: ClassVar[bool] = False

    def __init__(self, node: Node, task: Task) -> None:
        super().__init__(node, task)
        params = node.params
        self.spec: WindowSpec = params["windows"]
        self.grace_ms: int = params["grace_ms"]
        self.timestamp: Callable[[Any], int] | None = params["timestamp"]
        self.aggregator: Aggregator = params["aggregator"]
        self.idle_ms: int | None = params["idle_ms"]
        self.stream_time_ms: int | None = None
        self.base_stream_time: int | None = None
        #: Window keys by close time, and the close times as a heap.
        self.closing: dict[int, list[Any]] = {}
        self.heap: list[int] = []
        self.idle_timer: Timer | None = None
        self.outputs = _Outputs([])
        self.sources: dict[tuple[str, int], str] = {}
        #: The key objects of key bytes, as results were last emitted (text and numbers:
        #: objects nobody can change, so results may share them).
        self.key_objects: dict[bytes | None, Any] = {}

    def link(self, children: list[Step | None]) -> None:
        """Sort the children by output (final, updates, late)."""
        self.outputs = _Outputs(children)
        self.children = [c for c in children if c is not None]

    # -- restore ------------------------------------------------------------------------

    def restored(self) -> None:
        """Take the restored stream time and rebuild the close-time index."""
        store = self.store
        self.stream_time_ms = self.base_stream_time = store.stream_time_ms
        self.closing = {}
        self.heap = []
        for wkey in store.all_keys():
            self.index(wkey)
        self.arm_idle_timer()

    def window_end(self, wkey: Any) -> int:
        """Return the (exclusive) end of the window of state key ``wkey``."""
        raise NotImplementedError

    def index(self, wkey: Any) -> None:
        """Note when the window of ``wkey`` closes."""
        close = self.spec.close_at(self.window_end(wkey), self.grace_ms)
        keys = self.closing.get(close)
        if keys is None:
            self.closing[close] = [wkey]
            heapq.heappush(self.heap, close)
        else:
            keys.append(wkey)

    # -- a batch ------------------------------------------------------------------------

    def source_id(self, ctx: Context, origin: int) -> tuple[str, int]:
        """Return the (source, offset) lineage pair of row ``origin``, as state holds it."""
        where = ctx.source(origin)
        key = (where.topic, where.partition)
        name = self.sources.get(key)
        if name is None:
            name = self.sources[key] = f"{where.topic}/{where.partition}"
        return name, where.offset

    def event_times(self, batch: Batch, ctx: Context) -> tuple[list[int], Batch]:
        """Return each record's event time, and the batch without the records whose
        timestamp function failed or gave no usable time (their node's policy applies)."""
        if batch.encoded_by is not None:  # handed over, checked (see _handoff.py)
            assert ctx.event_times is not None
            return at_origins(ctx.event_times, batch.origins), batch
        if self.timestamp is None:
            times = at_origins(ctx.records.timestamps, batch.origins)
        else:
            times, batch = apply_each(self.node, self.timestamp, batch, ctx)
            if not set(map(type, times)) <= {int}:  # check (or convert whole floats) each
                times, batch = apply_each(self.node, _as_ms, batch, ctx, times)
        if times and min(times) < 0:
            bad = [i for i, t in enumerate(times) if t < 0]
            for i in bad:
                ctx.fail(
                    self.node,
                    batch.origins[i],
                    ValueError(f"a windowed record needs a timestamp >= 0, got {times[i]}"),
                )
            keep = [t >= 0 for t in times]
            times = list(compress(times, keep))
            batch = batch.select(keep)
        return times, batch

    async def push(self, batch: Batch, ctx: Context) -> None:
        """Fold the batch into its windows; emit updates, late records and closed windows."""
        batch = self.uncovered(batch, ctx)
        if not batch.values:
            return
        times, batch = self.event_times(batch, ctx)
        keys = self.key_bytes(batch, ctx)
        if None in keys:  # as Kafka Streams: a record without a key has no group
            keep = [k is not None for k in keys]
            ctx.skipped += len(keys) - sum(keep)
            keys = list(compress(keys, keep))
            times = list(compress(times, keep))
            batch = batch.select(keep)
        if not batch.values:
            return
        first = self.stream_time_ms if self.stream_time_ms is not None else times[0]
        if self.store.kind is StoreKind.DISK:
            self.prefetch(keys, times)  # type: ignore[arg-type]
        late, updates = self.fold(batch, ctx, keys, times, first)  # type: ignore[arg-type]
        top = max(times)
        now = top if top > first else first
        self.stream_time_ms = self.base_stream_time = self.store.stream_time_ms = now
        if late:
            ctx.late += len(late)
        if late and self.outputs.late:
            mask = [False] * len(batch.values)
            for i in late:
                mask[i] = True
            late_batch = batch.select(mask).decoded(ctx)
            for child in self.outputs.late:
                await child.push(late_batch, ctx)
        if updates and self.outputs.updates:
            out = self.emit_windows(ctx, updates, as_json=self.outputs.updates_as_json)
            for child in self.outputs.updates:
                await child.push(out, ctx)
        await self.close_until(now, ctx)
        self.arm_idle_timer()

    def fold(
        self,
        batch: Batch,
        ctx: Context,
        keys: list[bytes],
        times: list[int],
        first: int,
    ) -> tuple[list[int], list[tuple[Any, Any, str, int]]]:
        """Fold the records into their windows; return the indexes of the late ones, and
        (when ``updates()`` is used) each window update as (state key, acc, source, offset).

        ``first`` is the stream time before the batch; record ``i`` sees the stream time
        ``running_max(times, first)[i]`` (the batch's records before it moved it)."""
        raise NotImplementedError

    def prefetch(self, keys: list[bytes], times: list[int]) -> None:
        """Load the state a batch will touch (a disk store reads it once per batch)."""
        raise NotImplementedError

    def closed(self, wkeys: list[Any]) -> None:
        """Forget what the step derives from the closed windows ``wkeys``."""

    # -- closing ------------------------------------------------------------------------

    async def close_until(self, stream_time: int, ctx: Context) -> None:
        """Remove (and emit, for ``final()``) the windows that close by ``stream_time``."""
        heap = self.heap
        if not heap or heap[0] > stream_time:
            return
        store = self.store
        due: list[Any] = []
        while heap and heap[0] <= stream_time:
            due.extend(self.closing.pop(heapq.heappop(heap)))
        store.load(due)
        states = list(map(store.data.pop, due, repeat(None)))  # [acc, source, offset] each
        closed = due
        if not all(states):  # windows gone before they closed (sessions merged)
            keep = [state is not None for state in states]
            closed, states = list(compress(due, keep)), list(compress(states, keep))
        store.touched(closed)
        self.closed(closed)
        if not states or not self.outputs.final:
            return
        accs, sources, offsets = zip(*states, strict=True)
        if not self.closes_in_start_order:
            unsorted = zip(closed, accs, sources, offsets, strict=True)
            results = sorted(unsorted, key=self.window_start_of)
            closed, accs, sources, offsets = zip(*results, strict=True)  # type: ignore[assignment]
        out = self.emit_columns(
            ctx, closed, accs, sources, offsets, as_json=self.outputs.final_as_json
        )
        for child in self.outputs.final:
            await child.push(out, ctx)

    def window_start_of(self, result: tuple[Any, Any, str, int]) -> int:
        """Return the window start of a result (what ``final()`` orders by)."""
        return int(result[0][1])

    def window_ends(self, wkeys: list[Any]) -> list[int]:
        """Return the (exclusive) end of each window of ``wkeys``."""
        return list(map(self.window_end, wkeys))

    def emit_windows(
        self, ctx: Context, results: list[tuple[Any, Any, str, int]], *, as_json: bool = False
    ) -> Batch:
        """Add rows for window results (state key, aggregate, source, offset) and return
        the batch of :class:`Windowed` values (``as_json``: of the dicts JSON writes them
        as, for sinks that only write JSON)."""
        wkeys, accs, sources, offsets = zip(*results, strict=True)
        return self.emit_columns(ctx, wkeys, accs, sources, offsets, as_json=as_json)

    def emit_columns(
        self,
        ctx: Context,
        wkeys: Sequence[Any],
        accs: Sequence[Any],
        sources: Sequence[str],
        offsets: Sequence[int],
        *,
        as_json: bool = False,
    ) -> Batch:
        """:meth:`emit_windows` of the results as columns.

        Column by column: each key's object is decoded once, each source parsed once."""
        keys: list[bytes | None] = [w[0] for w in wkeys]
        decoded = self.key_objects
        missing = set(keys).difference(decoded)
        if missing:
            if len(decoded) > _KEY_OBJECTS_LIMIT:
                decoded.clear()
                missing = set(keys)
            key_object = self.key_object
            new = {kb: key_object(kb) for kb in missing}
            decoded.update(new)
            if not set(map(type, new.values())) <= _SHARED_KEY_TYPES:
                decoded = {**decoded, **new}  # objects a user might change: this batch's own
                for kb in new:
                    del self.key_objects[kb]
        places = {source: _place(source) for source in set(sources)}
        ends = self.window_ends(wkeys)  # type: ignore[arg-type]
        objects = list(map(decoded.__getitem__, keys))
        starts = [w[1] for w in wkeys]
        if as_json:  # the dicts JSON writes a Windowed as (its fields, in order)
            values: list[Any] = [
                {"key": k, "start": s, "end": e, "value": v}
                for k, s, e, v in zip(objects, starts, ends, accs, strict=True)
            ]
        else:
            values = _windowed_many(objects, starts, ends, accs)
        origins = ctx.add_rows_at(
            [end - 1 for end in ends], list(map(places.__getitem__, sources)), offsets
        )
        ctx.records.keys[origins[0] :] = keys
        return Batch(values, origins, None, self.node)

    # -- idle -----------------------------------------------------------------------------

    def arm_idle_timer(self) -> None:
        """Make sure a timer will close windows if the task goes quiet."""
        if self.idle_ms is None or self.idle_timer is not None or not self.heap:
            return
        last = self.task.last_input_ms
        base = last if last is not None else self.task.clock.now_ms()
        stream_time = self.stream_time_ms if self.stream_time_ms is not None else self.heap[0]
        wait = max(self.idle_ms, self.heap[0] - stream_time)
        self.idle_timer = self.task.timers.at_wall_time(base + wait, self.on_idle_timer)

    async def on_idle_timer(self, ctx: Context, now: int) -> None:
        """Advance stream time with the wall clock if the task has been quiet for
        ``idle_ms``; close what that reaches."""
        self.idle_timer = None
        last = self.task.last_input_ms
        if last is None:
            last = now
            self.task.last_input_ms = now
        assert self.idle_ms is not None
        if now - last >= self.idle_ms and self.base_stream_time is not None:
            advanced = self.base_stream_time + (now - last)
            if self.stream_time_ms is None or advanced > self.stream_time_ms:
                self.stream_time_ms = self.store.stream_time_ms = advanced
                await self.close_until(advanced, ctx)
        self.arm_idle_timer()


_START = itemgetter(1)
#: How many key objects a windowed step keeps decoded, at most.
_KEY_OBJECTS_LIMIT = 100_000
_SHARED_KEY_TYPES = {str, int, float, bool, type(None)}


def _windowed_many(
    keys: Sequence[Any], starts: Sequence[int], ends: Sequence[int], values: Sequence[Any]
) -> list[Windowed[Any]]:
    """Return ``Windowed(key, start, end, value)`` of each row of the columns.

    Filled slot by slot, a column at a time, rather than through the frozen dataclass's
    ``__init__`` (four ``object.__setattr__`` calls per result): about a third of the
    cost, for the windows a batch closes."""
    made: list[Windowed[Any]] = list(map(object.__new__, repeat(Windowed, len(keys))))
    for fill, column in zip(_FILL_WINDOWED, (keys, starts, ends, values), strict=True):
        deque(map(fill, made, column), maxlen=0)
    return made


#: Windowed's slots, in the order of its fields (a field added there must be added here).
_FILL_WINDOWED = tuple(getattr(Windowed, f.name).__set__ for f in fields(Windowed))
assert [f.name for f in fields(Windowed)] == ["key", "start", "end", "value"]


def _place(source: str) -> tuple[str, int]:
    """Return a window's ``topic/partition`` source as (topic, partition)."""
    topic, _, partition = source.rpartition("/")
    return topic, int(partition)


def _as_ms(ts: Any) -> int:
    """Return a timestamp function's result as int epoch ms.

    :raises TypeError: for anything but an int or a whole float.
    """
    if isinstance(ts, bool) or not isinstance(ts, int):
        if isinstance(ts, float) and ts.is_integer():
            return int(ts)
        raise TypeError(f"the timestamp function gave {ts!r}, not epoch ms as an int")
    return ts


class TumblingAggregateStep(WindowedAggregateStep):
    """Tumbling windows: one window per record, found by arithmetic.

    Given the event times of a batch read back from a repartition topic (handed over by
    the task that wrote it, see ``_handoff.py``), it takes the values still encoded and
    decodes only the records that are not late."""

    __slots__ = ()

    closes_in_start_order = True
    takes_encoded_values = True

    def window_end(self, wkey: Any) -> int:
        """Return ``start + size``."""
        spec = self.spec
        assert isinstance(spec, HoppingWindows)
        return int(wkey[1]) + spec.size_ms

    def prefetch(self, keys: list[bytes], times: list[int]) -> None:
        """Load each record's windows."""
        spec = self.spec
        assert isinstance(spec, HoppingWindows)
        self.store.load({(k, s) for k, t in zip(keys, times, strict=True) for s in spec.starts(t)})

    def window_ends(self, wkeys: list[Any]) -> list[int]:
        """Return ``start + size`` of each window."""
        spec = self.spec
        assert isinstance(spec, HoppingWindows)
        size = spec.size_ms
        return [w[1] + size for w in wkeys]

    def fold(
        self,
        batch: Batch,
        ctx: Context,
        keys: list[bytes],
        times: list[int],
        first: int,
    ) -> tuple[list[int], list[tuple[Any, Any, str, int]]]:
        """Fold each record into its one window (see the base class).

        The hot path of W2: the windows, the late records and the lineage are worked
        out column by column, and the loop over the records does only the fold itself."""
        spec = self.spec
        assert isinstance(spec, TumblingWindows)
        size, grace = spec.size_ms, self.grace_ms
        origins = batch.origins
        source, _ = self.source_id(ctx, origins[0])
        rows, starts, late = tumbling_windows(times, size, grace, first)
        values = batch.values
        if late:
            keys, values, origins = take_rows((keys, values, origins), rows)
        if batch.encoded_by is not None and values:  # the late are never decoded
            kept = Batch(values, origins, encoded_by=batch.encoded_by).decoded(ctx)
            if len(kept.values) < len(values):  # a value did not decode: drop the record
                decodes = set(kept.origins)
                decoded = [i for i, origin in enumerate(origins) if origin in decodes]
                keys, starts, rows, origins = take_rows((keys, starts, rows, origins), decoded)
            values = kept.values
        # The lineage of the records that are not late only: the late change no state.
        sources: list[str] | None = None  # each row's source, if they differ
        if ctx.sources is None:
            positions = list(map(ctx.records.offsets.__getitem__, origins))
        else:
            pairs = [self.source_id(ctx, o) for o in origins]
            sources = [s for s, _ in pairs]
            positions = [o for _, o in pairs]
        wkeys = list(zip(keys, starts, strict=True))
        updates: list[tuple[Any, Any, str, int]] = []
        created, failed = self._fold_rows(
            batch, ctx, wkeys, values,
            positions=positions, rows=rows, source=source, sources=sources, updates=updates,
        )  # fmt: skip
        if failed:
            keep = mask_without(len(wkeys), failed)
            wkeys = list(compress(wkeys, keep))
            if sources is not None:
                sources = list(compress(sources, keep))
        data = self.store.data
        if sources is not None:  # rows from several sources: each window's last one
            for wkey, row_source in zip(wkeys, sources, strict=True):
                data[wkey][1] = row_source
        elif len(self.task.partitions) > 1:  # windows may have been made from another
            for wkey in set(wkeys):
                data[wkey][1] = source
        self.store.touched(wkeys, created)
        self._index_created(created, size + grace)
        return late, updates

    def _fold_rows(
        self,
        batch: Batch,
        ctx: Context,
        wkeys: list[tuple[bytes, int]],
        values: list[Any],
        *,
        positions: list[int],
        rows: list[int],
        source: str,
        sources: list[str] | None,
        updates: list[tuple[Any, Any, str, int]],
    ) -> tuple[list[Any], list[int]]:
        """Fold each value into its window (``updates`` gets each new value when
        ``updates()`` is used); return the windows created and the indexes of the
        records whose ``add`` raised (their node's policy applied)."""
        data = self.store.data
        get = data.get
        initial, add = self.aggregator.initial, self.aggregator.add
        created: list[Any] = []
        failed: list[int] = []
        want_updates = bool(self.outputs.updates)
        items = zip(rows, wkeys, values, positions, strict=True)
        numbered = zip(range(len(wkeys)), rows, wkeys, values, positions, strict=True)
        j = 0
        while True:
            try:
                if not want_updates:
                    for j, wkey, value, offset in items:  # noqa: B007 - j: the except's
                        state = get(wkey)
                        if state is None:
                            data[wkey] = [add(initial(), value), source, offset]
                            created.append(wkey)
                        else:
                            state[0] = add(state[0], value)
                            state[2] = offset
                else:
                    for pos, j, wkey, value, offset in numbered:  # noqa: B007 - as above
                        state = get(wkey)
                        if state is None:
                            state = data[wkey] = [add(initial(), value), source, offset]
                            created.append(wkey)
                        else:
                            state[0] = add(state[0], value)
                            state[2] = offset
                        row_source = source if sources is None else sources[pos]
                        updates.append((wkey, state[0], row_source, offset))
                break
            except Exception as error:  # the user's add raised: its policy, then go on
                failed.append(rows.index(j))
                ctx.fail(self.node, batch.origins[j], error)
        return created, failed

    def _index_created(self, created: list[Any], close_after: int) -> None:
        """Note when the windows ``created`` close (``close_after`` past their start):
        by runs of one start, in creation order (the order ``final()`` emits them in)."""
        closing, heap = self.closing, self.heap
        for start, run in groupby(created, key=_START):
            close = start + close_after
            keys = closing.get(close)
            if keys is None:
                closing[close] = list(run)
                heapq.heappush(heap, close)
            else:
                keys.extend(run)


class HoppingAggregateStep(TumblingAggregateStep):
    """Hopping windows: each record folds into every open window that holds it."""

    __slots__ = ()

    takes_encoded_values = False

    def fold(
        self,
        batch: Batch,
        ctx: Context,
        keys: list[bytes],
        times: list[int],
        first: int,
    ) -> tuple[list[int], list[tuple[Any, Any, str, int]]]:
        """Fold each record into each of its windows that is still open."""
        running = running_max(times, first)
        spec = self.spec
        assert isinstance(spec, HoppingWindows)
        size, grace = spec.size_ms, self.grace_ms
        data = self.store.data
        initial, add = self.aggregator.initial, self.aggregator.add
        want_updates = bool(self.outputs.updates)
        late: list[int] = []
        updates: list[tuple[Any, Any, str, int]] = []
        created: list[Any] = []
        touched: list[Any] = []
        for i, (kb, ts, value, origin) in enumerate(
            zip(keys, times, batch.values, batch.origins, strict=True)
        ):
            source, offset = self.source_id(ctx, origin)
            starts = [s for s in spec.starts(ts) if s + size + grace > running[i]]
            if not starts:
                late.append(i)
                continue
            try:
                for start in starts:
                    wkey = (kb, start)
                    state = data.get(wkey)
                    acc = initial() if state is None else state[0]
                    acc = add(acc, value)
                    if state is None:
                        data[wkey] = [acc, source, offset]
                        created.append(wkey)
                    else:
                        state[0], state[1], state[2] = acc, source, offset
                    touched.append(wkey)
                    if want_updates:
                        updates.append((wkey, acc, source, offset))
            except Exception as error:
                ctx.fail(self.node, origin, error)
        self.store.touched(touched, created)
        for wkey in created:
            self.index(wkey)
        return late, updates


class SlidingAggregateStep(WindowedAggregateStep):
    """Sliding windows (Kafka Streams' definition, see windows.py).

    The step keeps each key's records within reach of an open window (a second store,
    ``<name>-records``) and folds a new window from them when a record makes one;
    existing windows that hold a new record fold it in.
    """

    __slots__ = ("starts_of",)

    def __init__(self, node: Node, task: Task) -> None:
        super().__init__(node, task)
        #: Each key's window starts.
        self.starts_of: dict[bytes, set[int]] = {}

    def restored(self) -> None:
        """Rebuild the window index of each key, then the base class's."""
        self.starts_of = {}
        for kb, start in self.store.all_keys():
            self.starts_of.setdefault(kb, set()).add(start)
        super().restored()

    def prefetch(self, keys: list[bytes], times: list[int]) -> None:
        """Load each key's windows and kept records."""
        self.store.load({(k, s) for k in set(keys) for s in self.starts_of.get(k, ())})
        self.stores[1].load(set(keys))

    def closed(self, wkeys: list[Any]) -> None:
        """Forget the closed windows' starts."""
        for kb, start in wkeys:
            starts = self.starts_of.get(kb)
            if starts is not None:
                starts.discard(start)

    def window_end(self, wkey: Any) -> int:
        """Return ``start + max_difference + 1``."""
        spec = self.spec
        assert isinstance(spec, SlidingWindows)
        return int(wkey[1]) + spec.max_difference_ms + 1

    def fold(
        self,
        batch: Batch,
        ctx: Context,
        keys: list[bytes],
        times: list[int],
        first: int,
    ) -> tuple[list[int], list[tuple[Any, Any, str, int]]]:
        """Fold each record into the windows that hold it, making the windows it makes."""
        running = running_max(times, first)
        spec = self.spec
        assert isinstance(spec, SlidingWindows)
        d, grace = spec.max_difference_ms, self.grace_ms
        data, kept = self.store.data, self.stores[1]
        initial, add = self.aggregator.initial, self.aggregator.add
        late: list[int] = []
        updates: list[tuple[Any, Any, str, int]] = []
        created: list[Any] = []
        touched: list[Any] = []
        for i, (kb, ts, value, origin) in enumerate(
            zip(keys, times, batch.values, batch.origins, strict=True)
        ):
            if ts + 1 + grace <= running[i]:  # its own (left) window has closed
                late.append(i)
                continue
            source, offset = self.source_id(ctx, origin)
            records = kept.data.get(kb)
            if records is None:
                records = kept.data[kb] = []
            insort(records, [ts, value], key=lambda r: r[0])
            starts = self.starts_of.setdefault(kb, set())
            try:
                for start in sorted(starts):  # existing windows that hold the record
                    if start <= ts <= start + d and start + d + 1 + grace > running[i]:
                        state = data[(kb, start)]
                        state[0], state[1], state[2] = add(state[0], value), source, offset
                        touched.append((kb, start))
                        if self.outputs.updates:
                            updates.append(((kb, start), state[0], source, offset))
                wanted = {ts - d}
                if any(ts < t <= ts + d + 1 for t, _ in records):
                    wanted.add(ts + 1)
                wanted.update(t + 1 for t, _ in records if ts - d - 1 <= t < ts)
                for start in sorted(wanted - starts):
                    if start + d + 1 + grace <= running[i]:
                        continue
                    acc = initial()
                    for t, v in records:
                        if start <= t <= start + d:
                            acc = add(acc, v)
                    data[(kb, start)] = [acc, source, offset]
                    starts.add(start)
                    created.append((kb, start))
                    touched.append((kb, start))
                    if self.outputs.updates:
                        updates.append(((kb, start), acc, source, offset))
            except Exception as error:
                ctx.fail(self.node, origin, error)
        kept.touched(set(keys))
        self.store.touched(touched, created)
        for wkey in created:
            self.index(wkey)
        return late, updates

    async def close_until(self, stream_time: int, ctx: Context) -> None:
        """Close windows as the base class does; forget records no open window can hold."""
        await super().close_until(stream_time, ctx)
        spec = self.spec
        assert isinstance(spec, SlidingWindows)
        horizon = stream_time - self.grace_ms - spec.max_difference_ms - 1
        kept = self.stores[1]
        kept.load(list(self.starts_of))
        for kb, starts in list(self.starts_of.items()):
            records = kept.data.get(kb)
            if records and records[0][0] < horizon:
                kept.data[kb] = [r for r in records if r[0] >= horizon]
                kept.touched([kb])
            if not starts and not kept.data.get(kb):
                del self.starts_of[kb]
                kept.delete(kb)


class SessionAggregateStep(WindowedAggregateStep):
    """Session windows: a record extends (and merges) the sessions it is within ``gap`` of."""

    __slots__ = ("sessions",)

    def __init__(self, node: Node, task: Task) -> None:
        super().__init__(node, task)
        #: Each key's sessions, as (start, end).
        self.sessions: dict[bytes, set[tuple[int, int]]] = {}

    def restored(self) -> None:
        """Rebuild each key's sessions, then the base class's index."""
        self.sessions = {}
        for kb, start, end in self.store.all_keys():
            self.sessions.setdefault(kb, set()).add((start, end))
        super().restored()

    def prefetch(self, keys: list[bytes], times: list[int]) -> None:
        """Load each key's sessions."""
        self.store.load({(k, s, e) for k in set(keys) for s, e in self.sessions.get(k, ())})

    def closed(self, wkeys: list[Any]) -> None:
        """Forget the closed sessions."""
        for kb, start, end in wkeys:
            sessions = self.sessions.get(kb)
            if sessions is not None:
                sessions.discard((start, end))
                if not sessions:
                    del self.sessions[kb]

    def window_end(self, wkey: Any) -> int:
        """Return the session's end (one past its last record)."""
        return int(wkey[2])

    def fold(
        self,
        batch: Batch,
        ctx: Context,
        keys: list[bytes],
        times: list[int],
        first: int,
    ) -> tuple[list[int], list[tuple[Any, Any, str, int]]]:
        """Merge each record into its key's sessions."""
        running = running_max(times, first)
        spec = self.spec
        assert isinstance(spec, SessionWindows)
        grace = self.grace_ms
        merge = self.aggregator.merge
        assert merge is not None
        data = self.store.data
        initial, add = self.aggregator.initial, self.aggregator.add
        late: list[int] = []
        updates: list[tuple[Any, Any, str, int]] = []
        created: list[Any] = []
        touched: list[Any] = []
        for i, (kb, ts, value, origin) in enumerate(
            zip(keys, times, batch.values, batch.origins, strict=True)
        ):
            sessions = self.sessions.setdefault(kb, set())
            (start, end), absorbed = spec.merge(sessions, ts)
            if spec.close_at(end, grace) <= running[i]:
                late.append(i)
                if not sessions:
                    del self.sessions[kb]
                continue
            source, offset = self.source_id(ctx, origin)
            try:
                acc = add(initial(), value)
                for s_start, s_end in sorted(absorbed):
                    acc = merge(data[(kb, s_start, s_end)][0], acc)
            except Exception as error:
                ctx.fail(self.node, origin, error)
                continue
            for s_start, s_end in absorbed:
                del data[(kb, s_start, s_end)]
                touched.append((kb, s_start, s_end))
                sessions.discard((s_start, s_end))
            wkey = (kb, start, end)
            if wkey not in data:
                created.append(wkey)
            data[wkey] = [acc, source, offset]
            sessions.add((start, end))
            touched.append(wkey)
            if self.outputs.updates:
                updates.append((wkey, acc, source, offset))
        self.store.touched(touched, created)
        for wkey in created:
            self.index(wkey)
        return late, updates


def windowed_step(node: Node, task: Task) -> WindowedAggregateStep:
    """Build the step of a windowed aggregation of the node's window kind."""
    spec = node.params["windows"]
    if isinstance(spec, TumblingWindows):
        return TumblingAggregateStep(node, task)
    if isinstance(spec, HoppingWindows):
        return HoppingAggregateStep(node, task)
    if isinstance(spec, SlidingWindows):
        return SlidingAggregateStep(node, task)
    assert isinstance(spec, SessionWindows)
    return SessionAggregateStep(node, task)


class TableAggregateStep(StatefulStep):
    """An aggregation over all time: a table of each key's aggregate."""

    __slots__ = ("aggregator",)

    def __init__(self, node: Node, task: Task) -> None:
        super().__init__(node, task)
        self.aggregator: Aggregator = node.params["aggregator"]

    async def push(self, batch: Batch, ctx: Context) -> None:
        """Fold each record into its key's aggregate; emit the change after each."""
        batch = self.uncovered(batch, ctx)
        if not batch.values:
            return
        keys = self.key_bytes(batch, ctx)
        self.store.load(set(keys))
        data = self.store.data
        initial, add = self.aggregator.initial, self.aggregator.add
        changes: list[Any] = []
        origins: list[int] = []
        touched: list[bytes] = []
        created: list[bytes] = []
        for kb, value, origin in zip(keys, batch.values, batch.origins, strict=True):
            if kb is None:
                ctx.skipped += 1
                continue
            old = data.get(kb)
            try:
                new = add(initial() if old is None else old, value)
            except Exception as error:
                ctx.fail(self.node, origin, error)
                continue
            if old is None:
                created.append(kb)
            data[kb] = new
            touched.append(kb)
            changes.append(Change(new, old))
            origins.append(origin)
        self.store.touched(touched, created)
        if changes:
            await self.forward(Batch(changes, origins, None, self.node), ctx)
