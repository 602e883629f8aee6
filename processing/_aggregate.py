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
from collections.abc import Callable
from dataclasses import dataclass
from itertools import accumulate, compress
from typing import TYPE_CHECKING, Any

from ._batch import Batch, Context, apply_each
from ._clock import Timer
from ._lineage import SourcePosition
from ._stateful import StatefulStep
from ._stores import StoreKind
from ._table import Change
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
    """A windowed aggregation's children, by what they receive."""

    __slots__ = ("final", "late", "updates")

    def __init__(self, children: list[Step | None]) -> None:
        self.final: list[Step] = []
        self.updates: list[Step] = []
        self.late: list[Step] = []
        for child in children:
            if child is not None:
                getattr(self, child.node.params["output"]).append(child)


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
        "outputs",
        "sources",
        "spec",
        "stream_time_ms",
        "timestamp",
    )

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
        if self.timestamp is None:
            times = list(map(ctx.records.timestamps.__getitem__, batch.origins))
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
        running = list(accumulate(times, max, initial=first))[1:]
        if self.store.kind is StoreKind.DISK:
            self.prefetch(keys, times)  # type: ignore[arg-type]
        late, updates = self.fold(batch, ctx, keys, times, running)  # type: ignore[arg-type]
        now = running[-1]
        self.stream_time_ms = self.base_stream_time = self.store.stream_time_ms = now
        if late:
            ctx.late += len(late)
            mask = [False] * len(batch.values)
            for i in late:
                mask[i] = True
            late_batch = batch.select(mask)
            for child in self.outputs.late:
                await child.push(late_batch, ctx)
        if updates and self.outputs.updates:
            out = self.emit_windows(ctx, updates)
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
        running: list[int],
    ) -> tuple[list[int], list[tuple[Any, Any, str, int]]]:
        """Fold the records into their windows; return the indexes of the late ones, and
        (when ``updates()`` is used) each window update as (state key, acc, source, offset)."""
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
        data = store.data
        closed: list[Any] = []
        results: list[tuple[Any, Any, str, int]] = []
        for wkey in due:
            state = data.pop(wkey, None)
            if state is not None:
                closed.append(wkey)
                results.append((wkey, state[0], state[1], state[2]))
        store.touched(closed)
        self.closed(closed)
        if results and self.outputs.final:
            results.sort(key=self.window_start_of)
            out = self.emit_windows(ctx, results)
            for child in self.outputs.final:
                await child.push(out, ctx)

    def window_start_of(self, result: tuple[Any, Any, str, int]) -> int:
        """Return the window start of a result (what ``final()`` orders by)."""
        return int(result[0][1])

    def emit_windows(self, ctx: Context, results: list[tuple[Any, Any, str, int]]) -> Batch:
        """Add rows for window results and return the batch of :class:`Windowed` values."""
        values: list[Any] = []
        keys: list[bytes | None] = []
        timestamps: list[int] = []
        lineage: list[SourcePosition] = []
        key_object = self.key_object
        decoded: dict[bytes, Any] = {}
        places: dict[str, tuple[str, int]] = {}
        for wkey, acc, source, offset in results:
            kb = wkey[0]
            key = decoded.get(kb, decoded)
            if key is decoded:
                key = decoded[kb] = key_object(kb)
            start, end = wkey[1], self.window_end(wkey)
            values.append(Windowed(key, start, end, acc))
            keys.append(kb)
            timestamps.append(end - 1)
            place = places.get(source)
            if place is None:
                topic, _, partition = source.rpartition("/")
                place = places[source] = (topic, int(partition))
            lineage.append(SourcePosition(place[0], place[1], offset))
        return self.emit(ctx, values, keys, timestamps, lineage)

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
    """Tumbling windows: one window per record, found by arithmetic."""

    __slots__ = ()

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

    def fold(
        self,
        batch: Batch,
        ctx: Context,
        keys: list[bytes],
        times: list[int],
        running: list[int],
    ) -> tuple[list[int], list[tuple[Any, Any, str, int]]]:
        """Fold each record into its one window (see the base class)."""
        spec = self.spec
        assert isinstance(spec, TumblingWindows)
        size, grace = spec.size_ms, self.grace_ms
        data = self.store.data
        initial, add = self.aggregator.initial, self.aggregator.add
        source, _ = self.source_id(ctx, batch.origins[0])
        offsets = ctx.records.offsets
        if ctx.sources is None:
            positions: Any = map(offsets.__getitem__, batch.origins)
        else:
            pairs = [self.source_id(ctx, o) for o in batch.origins]
            positions = [o for _, o in pairs]
        lowest = min(times)
        late: list[int] = []
        may_be_late = lowest - lowest % size + size + grace <= running[-1]
        want_updates = bool(self.outputs.updates)
        updates: list[tuple[Any, Any, str, int]] = []
        created: list[Any] = []
        touched: list[Any] = []
        values = batch.values
        i = -1
        items = zip(keys, times, values, positions, strict=False)
        while True:
            try:
                for kb, ts, value, offset in items:
                    i += 1
                    start = ts - ts % size
                    if may_be_late and start + size + grace <= running[i]:
                        late.append(i)
                        continue
                    wkey = (kb, start)
                    state = data.get(wkey)
                    if state is None:
                        state = data[wkey] = [add(initial(), value), source, offset]
                        created.append(wkey)
                    else:
                        state[0] = add(state[0], value)
                        state[2] = offset
                    touched.append(wkey)
                    if want_updates:
                        updates.append((wkey, state[0], source, offset))
                break
            except Exception as error:  # the user's add raised: its policy, then go on
                ctx.fail(self.node, batch.origins[i], error)
        if ctx.sources is not None:  # rows from several sources: fix each window's source
            for j, wkey in enumerate(touched):
                state = data.get(wkey)
                if state is not None:
                    state[1] = pairs[j][0]
        self.store.touched(touched, created)
        for wkey in created:
            self.index(wkey)
        return late, updates


class HoppingAggregateStep(TumblingAggregateStep):
    """Hopping windows: each record folds into every open window that holds it."""

    __slots__ = ()

    def fold(
        self,
        batch: Batch,
        ctx: Context,
        keys: list[bytes],
        times: list[int],
        running: list[int],
    ) -> tuple[list[int], list[tuple[Any, Any, str, int]]]:
        """Fold each record into each of its windows that is still open."""
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
        running: list[int],
    ) -> tuple[list[int], list[tuple[Any, Any, str, int]]]:
        """Fold each record into the windows that hold it, making the windows it makes."""
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
        running: list[int],
    ) -> tuple[list[int], list[tuple[Any, Any, str, int]]]:
        """Merge each record into its key's sessions."""
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
