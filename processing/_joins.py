"""Joins, with Kafka Streams' semantics: stream-table, stream-stream (windowed), table-table.

Theory of operation
-------------------
Both sides of a join must hold each key in the same task: a side re-keyed by ``key_by``
first passes through ``<app>-<name>-repartition`` (``<name>-left``/``-right`` for
stream-stream joins), with as many partitions as the other side's topics. A stream side
read straight from a topic with another partition count than the other side's is
repartitioned the same way when the app starts (``copartition`` in ``_tasks.py``: to the
table's count, or to the wider stream's); a table cannot be (it is its topic), so a
table-table join of different counts is refused, saying what to change. Topics of equal
counts must be placed by the same key encoding.
A two-input join sees each side through a ``join_side`` node, whose step tells the join
which side a batch came from.

- Stream-table (``stream.join(table)``, ``left_join``): each stream record looks its key
  up in the table as it is when the record is processed; table updates emit nothing.
  Records without a value are dropped; without a key, dropped by an inner join and
  joined with None by a left join (KIP-962).
- Stream-stream (``join``/``left_join``/``outer_join`` with ``within_ms``): both sides are
  buffered per key (two stores); a record joins every record of the other side whose
  timestamp is within ``within_ms`` of its own, the result stamped with the later of the
  two. A record that found no partner by the time its window closed (stream time past
  its timestamp + ``within_ms`` + ``grace_ms``) is joined with None by a left join (left
  records) or an outer join (either side): Kafka Streams' behaviour since 3.1, without
  the spurious early ``A - null`` results of older versions. Records later than that are
  dropped. Records without a value are dropped.
- Table-table (``table.join(table)``, ``left_join``, ``outer_join``): an update on either
  side recomputes the key's result from the update's new and old values and the other
  side's current value, and emits the result's change (a delete when it no longer
  exists); the result is itself a table.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ._batch import Batch, Context, apply_each
from ._errors import TopologyError
from ._graph import check_function, source_ancestors
from ._lineage import SourcePosition
from ._operators import Step
from ._stateful import StatefulStep
from ._stores import BYTES_KEYS
from ._table import Change, Table, TableStep

if TYPE_CHECKING:
    from ._graph import Node
    from ._stream import Stream
    from ._tasks import Task

_HOW = ("inner", "left", "outer")


def _source_topics(node: Node) -> list[str]:
    return sorted({s.topic for s in source_ancestors(node) if s.topic})


def _check(fn: object, how: str, what: str) -> None:
    check_function(fn, what)
    assert how in _HOW


def stream_table_join(
    stream: Stream[Any], table: Table[Any], fn: Callable[..., Any], how: str, name: str | None
) -> Stream[Any]:
    """Add a stream-table join (see the module docstring); return its stream."""
    _check(fn, how, f"{how} join")
    if not isinstance(table, Table) or table._app is not stream.app:
        raise TopologyError("join: the table must come from the same App")
    if how == "outer":
        raise TopologyError("a stream-table join is inner or left (outer_join is for two streams)")
    graph = stream.app.graph
    mine, theirs = graph.key_serde(stream.node), table.node.params.get("key_serde")
    if mine is not None and theirs is not None and type(mine) is not type(theirs):
        raise TopologyError(
            f"join: the stream's keys are written as {mine!r} and the table's as {theirs!r}, "
            "so equal keys would not meet: give key_by (serde=...) or the table (key_serde=...) "
            "the other's"
        )
    name = name or f"join-{len(graph.nodes) + 1}"
    left = stream._copartitioned(name, partitions_of=_source_topics(table.node))
    side = graph.add("table_side", (table.node,))
    return left._derive(
        "stream_table_join",
        parents=(left.node, side),
        fn=fn,
        params={"how": how, "table": table.node, "name": name},
        rekeyed=False,
    )


def stream_stream_join(  # noqa: PLR0917 - one call site, the DSL's
    left: Stream[Any],
    right: Stream[Any],
    fn: Callable[..., Any],
    how: str,
    within_ms: int,
    grace_ms: int,
    name: str | None,
) -> Stream[Any]:
    """Add a windowed stream-stream join (see the module docstring); return its stream."""
    _check(fn, how, f"{how} join")
    if right.app is not left.app:
        raise TopologyError("join: both streams must come from the same App")
    for what, value in (("within_ms", within_ms), ("grace_ms", grace_ms)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise TopologyError(f"join: {what} must be an integer >= 0, got {value!r}")
    app = left.app
    graph = app.graph
    name = name or f"join-{len(graph.nodes) + 1}"
    topics = sorted({*_source_topics(left.node), *_source_topics(right.node)})
    lefts = left._copartitioned(f"{name}-left", partitions_of=topics)
    rights = right._copartitioned(f"{name}-right", partitions_of=topics)
    ls = graph.add("join_side", (lefts.node,), params={"side": 0})
    rs = graph.add("join_side", (rights.node,), params={"side": 1})
    from ._windowed import store_spec  # noqa: PLC0415 - it imports this module's neighbours

    stores = [
        store_spec(app, f"{name}-left", keys=BYTES_KEYS),
        store_spec(app, f"{name}-right", keys=BYTES_KEYS),
    ]
    return lefts._derive(
        "stream_stream_join",
        parents=(ls, rs),
        fn=fn,
        params={
            "how": how,
            "within_ms": within_ms,
            "grace_ms": grace_ms,
            "stores": stores,
            "name": name,
            "key_serde": graph.key_serde(lefts.node),
            "emits_rows": True,
        },
        rekeyed=False,
    )


def table_table_join(
    left: Table[Any], right: Table[Any], fn: Callable[..., Any], how: str, name: str | None
) -> Table[Any]:
    """Add a table-table join (see the module docstring); return the result table."""
    _check(fn, how, f"table {how} join")
    if not isinstance(right, Table) or right._app is not left._app:
        raise TopologyError("join: both tables must come from the same App")
    graph = left._app.graph
    name = name or f"join-{len(graph.nodes) + 1}"
    ls = graph.add("join_side", (left.node,), params={"side": 0})
    rs = graph.add("join_side", (right.node,), params={"side": 1})
    node = graph.add(
        "table_join",
        (ls, rs),
        fn=fn,
        params={"how": how, "name": name, "key_serde": left.node.params.get("key_serde")},
    )
    return Table(left._app, node, name)


def _joiner(how: str, fn: Callable[[Any, Any], Any]) -> Callable[[Any, Any], Any]:
    """Return the function of a table join's result: None where the join has none."""
    if how == "inner":
        return lambda a, b: None if a is None or b is None else fn(a, b)
    if how == "left":
        return lambda a, b: None if a is None else fn(a, b)
    return lambda a, b: None if a is None and b is None else fn(a, b)


# -- steps ------------------------------------------------------------------------------------


class JoinSideStep(Step):
    """Tells a two-input join which side a batch came from."""

    __slots__ = ("join", "side")

    def __init__(self, node: Node, task: Task) -> None:
        super().__init__(node, task)
        self.side: int = node.params["side"]
        self.join: Any = None

    def link(self, children: list[Step | None]) -> None:
        """Take the join's step."""
        super().link(children)
        self.join = self.children[0] if self.children else None

    async def push(self, batch: Batch, ctx: Context) -> None:
        """Hand ``batch`` to the join as this side's."""
        if self.join is not None and batch.values:
            await self.join.push_side(self.side, batch, ctx)


class TableSideStep(Step):
    """A stream-table join's table side: updates of the table emit nothing."""

    __slots__ = ()

    async def push(self, batch: Batch, ctx: Context) -> None:
        """Ignore the table's changes (the join reads the table by key)."""


class StreamTableJoinStep(Step):
    """``stream.join(table)`` / ``left_join``."""

    __slots__ = ("fn", "how", "table")

    def __init__(self, node: Node, task: Task) -> None:
        super().__init__(node, task)
        self.how: str = node.params["how"]
        self.table: Node = node.params["table"]
        assert node.fn is not None
        self.fn: Callable[[Any, Any], Any] = node.fn

    async def push(self, batch: Batch, ctx: Context) -> None:
        """Join each record with the table's value of its key."""
        table = self.task.step_by_node[self.table.id]
        assert isinstance(table, TableStep)
        if batch.keys is None or batch.key_node is None or batch.key_node.is_source:
            keys: list[Any] = list(map(ctx.records.keys.__getitem__, batch.origins))
        else:
            serialize = batch.key_node.params["key_serde"].serialize
            keys = list(map(serialize, batch.keys))
        inner = self.how == "inner"
        lookup = table.lookup
        pairs = []
        keep = []
        for kb, value in zip(keys, batch.values, strict=True):
            if value is None:
                keep.append(False)
                continue
            found = None if kb is None else lookup(kb)
            ok = not (inner and found is None)
            keep.append(ok)
            if ok:
                pairs.append((value, found))
        batch = batch.select(keep)
        fn = self.fn
        joined, batch = apply_each(self.node, lambda pair: fn(*pair), batch, ctx, pairs)
        await self.forward(batch.replace(joined), ctx)


class StreamStreamJoinStep(StatefulStep):
    """A windowed stream-stream join (see the module docstring)."""

    __slots__ = ("deadlines", "fn", "grace_ms", "how", "stream_time_ms", "within_ms")

    def __init__(self, node: Node, task: Task) -> None:
        super().__init__(node, task)
        self.how: str = node.params["how"]
        self.within_ms: int = node.params["within_ms"]
        self.grace_ms: int = node.params["grace_ms"]
        assert node.fn is not None
        self.fn: Callable[[Any, Any], Any] = node.fn
        self.stream_time_ms: int | None = None
        #: (deadline, side, key, timestamp): when a buffered record's window closes
        #: (its unmatched result is due) or it can match nothing more (it goes).
        self.deadlines: list[tuple[int, int, bytes, int]] = []

    def restored(self) -> None:
        """Take the restored stream time and rebuild the deadlines of buffered records."""
        self.stream_time_ms = self.store.stream_time_ms
        self.deadlines = []
        for side, store in enumerate(self.stores):
            for kb, entries in store.data.items():
                for entry in entries:
                    self._schedule(side, kb, entry)

    def _schedule(self, side: int, kb: bytes, entry: list[Any]) -> None:
        t, state = entry[0], entry[2]
        close = t + self.within_ms + self.grace_ms
        deadline = close + 1 if state == 0 else close + self.within_ms + 1
        heapq.heappush(self.deadlines, (deadline, side, kb, t))

    async def push(self, batch: Batch, ctx: Context) -> None:
        """Not called: a join's inputs come through its side steps."""
        raise AssertionError("a join is fed through its join_side steps")

    async def push_side(self, side: int, batch: Batch, ctx: Context) -> None:
        """Join ``side``'s records with the other side's buffered ones; buffer them."""
        batch = self.uncovered(batch, ctx)
        if not batch.values:
            return
        keys = self.key_bytes(batch, ctx)
        times = ctx.records.timestamps
        mine, theirs = self.stores[side], self.stores[1 - side]
        mine.load(set(keys))
        theirs.load(set(keys))
        within, grace, fn = self.within_ms, self.grace_ms, self.fn
        values: list[Any] = []
        out_keys: list[bytes | None] = []
        stamps: list[int] = []
        lineage: list[SourcePosition] = []
        outer_here = self.how == "outer" or (self.how == "left" and side == 0)
        stream_time = self.stream_time_ms
        for kb, value, origin in zip(keys, batch.values, batch.origins, strict=True):
            t = times[origin]
            if stream_time is None or t > stream_time:
                stream_time = t
            if value is None:
                continue
            where = ctx.source(origin)
            if kb is None:  # no key: no partner; a left/outer join keeps the record
                if outer_here:
                    try:
                        values.append(fn(value, None) if side == 0 else fn(None, value))
                    except Exception as error:
                        ctx.fail(self.node, origin, error)
                        continue
                    out_keys.append(None)
                    stamps.append(t)
                    lineage.append(where)
                continue
            if t + within + grace < stream_time:
                ctx.skipped += 1  # late: its window has closed
                continue
            partners = theirs.data.get(kb)
            matched = 0
            if partners:
                for entry in partners:
                    if abs(entry[0] - t) <= within:
                        matched = 1
                        entry[2] = 1
                        try:
                            result = fn(value, entry[1]) if side == 0 else fn(entry[1], value)
                        except Exception as error:
                            ctx.fail(self.node, origin, error)
                            continue
                        values.append(result)
                        out_keys.append(kb)
                        stamps.append(max(t, entry[0]))
                        lineage.append(where)
                if matched:
                    theirs.touched([kb])
            entry = [t, value, matched, where.topic, where.partition, where.offset]
            buffered = mine.data.get(kb)
            if buffered is None:
                mine.data[kb] = [entry]
                mine.touched([kb], [kb])
            else:
                buffered.append(entry)
                mine.touched([kb])
            self._schedule(side, kb, entry)
        self.stream_time_ms = stream_time
        for store in self.stores:
            store.stream_time_ms = stream_time
        if stream_time is not None:
            self._expire(stream_time, values, out_keys, stamps, lineage)
        if values:
            await self.forward(self.emit(ctx, values, out_keys, stamps, lineage), ctx)

    def _expire(
        self,
        stream_time: int,
        values: list[Any],
        keys: list[bytes | None],
        stamps: list[int],
        lineage: list[SourcePosition],
    ) -> None:
        """Emit the unmatched results that are due; forget records that can match no more."""
        deadlines = self.deadlines
        emit_left = self.how in ("left", "outer")
        emit_right = self.how == "outer"
        while deadlines and deadlines[0][0] <= stream_time:
            _, side, kb, t = heapq.heappop(deadlines)
            store = self.stores[side]
            store.load((kb,))
            entries = store.data.get(kb)
            if not entries:
                continue
            for i, entry in enumerate(entries):
                if entry[0] != t:
                    continue
                if entry[2] == 0:  # its window closed without a partner
                    entry[2] = 2
                    if (emit_left and side == 0) or (emit_right and side == 1):
                        where = SourcePosition(entry[3], entry[4], entry[5])
                        result = self.fn(entry[1], None) if side == 0 else self.fn(None, entry[1])
                        values.append(result)
                        keys.append(kb)
                        stamps.append(t)
                        lineage.append(where)
                    self._schedule(side, kb, entry)
                else:  # nothing more can match it
                    del entries[i]
                store.touched([kb])
                break
            if not entries:
                store.delete(kb)


class TableTableJoinStep(TableStep):
    """A table-table join (see the module docstring): its result is a table."""

    __slots__ = ("joiner",)

    def __init__(self, node: Node, task: Task) -> None:
        super().__init__(node, task)
        assert node.fn is not None
        self.joiner = _joiner(node.params["how"], node.fn)

    def lookup(self, key: bytes | None) -> Any:
        """Return the join's result for ``key`` from both sides' current values."""
        left = self._side(0).lookup(key)
        right = self._side(1).lookup(key)
        return self.joiner(left, right)

    def _side(self, side: int) -> TableStep:
        node = self.node.parents[side].parents[0]  # through the join_side node
        step = self.task.step_by_node[node.id]
        assert isinstance(step, TableStep)
        return step

    async def push(self, batch: Batch, ctx: Context) -> None:
        """Not called: a join's inputs come through its side steps."""
        raise AssertionError("a join is fed through its join_side steps")

    async def push_side(self, side: int, batch: Batch, ctx: Context) -> None:
        """Recompute the result of each updated key; emit its change."""
        other = self._side(1 - side)
        keys = list(map(ctx.records.keys.__getitem__, batch.origins))
        joiner = self.joiner

        def result(pair: tuple[Change, bytes | None]) -> Change:
            change, kb = pair
            current = other.lookup(kb)
            if side == 0:
                return Change(joiner(change.new, current), joiner(change.old, current))
            return Change(joiner(current, change.new), joiner(current, change.old))

        changes, batch = apply_each(
            self.node, result, batch, ctx, list(zip(batch.values, keys, strict=True))
        )
        keep = [c.new is not None or c.old is not None for c in changes]
        await self.forward(Batch(changes, batch.origins).select(keep), ctx)
