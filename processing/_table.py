"""Tables: the latest value per key, as Kafka Streams' KTable, and their steps.

A :class:`Table` is what ``app.table(topic)`` reads (each record an upsert, a record
without a value a delete) and what an aggregation over all time makes. It flows through
the graph as *changes*: for each update, the key's :class:`Change` (its new value and
the old one, None for none), so that a filtered or mapped table knows what to retract
and a table-table join what to update, as Kafka Streams forwards old values.

Materialised tables (a topic's, an aggregation's) keep their state in a store; derived
ones (``filter``, ``map_values``, a table-table join) keep none and answer look-ups
through their parents (Kafka Streams' value getters), so a lookup of a derived table
costs its parent's plus a function call. ``table.get(key)`` looks a key up from a user
function running in the task that holds the table (a join's task, or any task of the
same topic group).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Generic, NamedTuple, TypeVar

from ._batch import Batch, Context, apply_each
from ._errors import ProcessingError, TopologyError
from ._graph import Node, check_function
from ._operators import Step
from ._serde import JSON, Serde
from ._stateful import StatefulStep
from ._tasks import CURRENT_TASK

if TYPE_CHECKING:
    from ._app import App
    from ._stream import Stream
    from ._tasks import Task

T = TypeVar("T")
U = TypeVar("U")


class Change(NamedTuple):
    """One update of a table's key: its ``new`` value and its ``old`` one (None: none)."""

    new: Any
    old: Any


class Table(Generic[T]):
    """The latest value of each key: see the module docstring.

    Build one with :meth:`App.table <headwater.processing.App.table>` or an aggregation
    over all time (``stream.key_by(...).count()``).
    """

    __slots__ = ("_app", "_name", "_node")

    def __init__(self, app: App, node: Node, name: str) -> None:
        self._app = app
        self._node = node
        self._name = name

    def __repr__(self) -> str:
        return f"<Table {self._name!r} ({self._node.label}) of app {self._app.name!r}>"

    @property
    def node(self) -> Node:
        """The graph node of the table's changes."""
        return self._node

    @property
    def name(self) -> str:
        """The table's name (its store's, for a materialised one)."""
        return self._name

    def _derive(self, kind: str, name: str, fn: Callable[..., Any]) -> Table[Any]:
        node = self._app.graph.add(
            kind, (self._node,), fn=fn, params={"key_serde": self._node.params.get("key_serde")}
        )
        return Table(self._app, node, name)

    def to_stream(self) -> Stream[T]:
        """Return the stream of the table's updates: each key's new value (None for a
        deleted key)."""
        from ._stream import Stream  # noqa: PLC0415 - the two modules refer to each other

        node = self._app.graph.add("to_stream", (self._node,))
        return Stream(self._app, node, policy=node.policy, dead_letter_topic=f"{self._name}-dlq")

    def filter(self, predicate: Callable[[T], object]) -> Table[T]:
        """Return the table of the values for which ``predicate`` is true (a key whose
        value stops passing is deleted from it)."""
        check_function(predicate, "table filter")
        return self._derive("table_filter", self._name, fn=predicate)

    def map_values(self, fn: Callable[[T], U]) -> Table[U]:
        """Return the table of ``fn(value)`` of each key."""
        check_function(fn, "table map_values")
        return self._derive("table_map", self._name, fn=fn)

    def to(self, topic: str, *, serde: Serde[T] | None = None) -> None:
        """Write the table's updates to ``topic``: each key's new value, a deleted key as
        a record without a value (a tombstone), so a compacted topic holds the table."""
        from ._stream import check_topic  # noqa: PLC0415

        check_topic(topic, "table to")
        node = self._app.graph.add("to_stream", (self._node,))
        self._app.graph.add(
            "to",
            (node,),
            topic=topic,
            params={"serde": Tombstones(serde or JSON), "partitions": None},
        )

    def join(
        self, other: Table[U], fn: Callable[[T, U], Any], *, name: str | None = None
    ) -> Table[Any]:
        """Return the table of ``fn(left, right)`` for the keys in both tables; an update on
        either side updates the result (Kafka Streams' KTable-KTable inner join)."""
        from ._joins import table_table_join  # noqa: PLC0415

        return table_table_join(self, other, fn, "inner", name)

    def left_join(
        self, other: Table[U], fn: Callable[[T, U | None], Any], *, name: str | None = None
    ) -> Table[Any]:
        """As :meth:`join`, for every key of this table (``right`` None when the other
        has none)."""
        from ._joins import table_table_join  # noqa: PLC0415

        return table_table_join(self, other, fn, "left", name)

    def outer_join(
        self, other: Table[U], fn: Callable[[T | None, U | None], Any], *, name: str | None = None
    ) -> Table[Any]:
        """As :meth:`join`, for every key of either table (the missing side None)."""
        from ._joins import table_table_join  # noqa: PLC0415

        return table_table_join(self, other, fn, "outer", name)

    def get(self, key: object) -> T | None:
        """Return the table's value of ``key`` (None: none), from a user function running in
        a task that holds the table (the task of a join with it, or of its topic group).

        :raises ProcessingError: if called elsewhere.
        """
        task = CURRENT_TASK.get(None)
        step = None if task is None else task.step_by_node.get(self._node.id)
        if not isinstance(step, TableStep):
            raise ProcessingError(
                f"table {self._name!r} can only be read from a function running in a task "
                "that holds it (join a stream with it to read it by key)"
            )
        serde = self._node.params.get("key_serde")
        encoded: Any = key if serde is None else serde.serialize(key)
        return step.lookup(encoded)  # type: ignore[no-any-return]


class Tombstones:
    """A serde that writes None as a record without a value (a table's deletes)."""

    def __init__(self, serde: Serde[Any]) -> None:
        self._serde = serde

    def __repr__(self) -> str:
        return f"{self._serde!r}, None as a tombstone"

    def serialize(self, value: Any) -> bytes | None:
        """Return ``value`` serialised, or None for None."""
        return None if value is None else self._serde.serialize(value)

    def deserialize(self, data: bytes | None) -> Any:
        """Return the value of ``data`` (None for none)."""
        return None if data is None else self._serde.deserialize(data)


# -- steps ------------------------------------------------------------------------------------


class TableStep(Step):
    """A step whose output is a table's changes, and which answers look-ups by key bytes."""

    __slots__ = ()

    def lookup(self, key: bytes | None) -> Any:
        """Return the table's value of ``key`` bytes (None: none)."""
        raise NotImplementedError

    def parent_step(self, index: int = 0) -> TableStep:
        """Return the step of the node's parent ``index`` (a table) in this task."""
        step = self.task.step_by_node[self.node.parents[index].id]
        assert isinstance(step, TableStep), step
        return step


class MaterializedTableStep(StatefulStep, TableStep):
    """Reads a table's records and keeps the latest value per key in its store."""

    __slots__ = ()

    def lookup(self, key: bytes | None) -> Any:
        """Return the stored value of ``key``."""
        return self.store.get(key)

    async def push(self, batch: Batch, ctx: Context) -> None:
        """Upsert (or, for no value, delete) each record's key; emit the changes."""
        batch = self.uncovered(batch, ctx)
        if not batch.values:
            return
        keys = self.key_bytes(batch, ctx)
        self.store.load(set(keys))
        data = self.store.data
        changes: list[Change] = []
        origins: list[int] = []
        touched: list[bytes] = []
        created: list[bytes] = []
        for kb, value, origin in zip(keys, batch.values, batch.origins, strict=True):
            if kb is None:  # a table's record without a key is no update of anything
                ctx.skipped += 1
                continue
            old = data.get(kb)
            if value is None:
                if old is None:
                    continue
                del data[kb]
            else:
                if old is None:
                    created.append(kb)
                data[kb] = value
            touched.append(kb)
            changes.append(Change(value, old))
            origins.append(origin)
        self.store.touched(touched, created)
        if changes:
            await self.forward(Batch(changes, origins, None, self.node), ctx)


class TableFilterStep(TableStep):
    """``table.filter``: a value that does not pass is a delete."""

    __slots__ = ()

    def lookup(self, key: bytes | None) -> Any:
        """Return the parent's value if it passes."""
        value = self.parent_step().lookup(key)
        assert self.node.fn is not None
        return value if value is not None and self.node.fn(value) else None

    async def push(self, batch: Batch, ctx: Context) -> None:
        """Filter both sides of each change; drop changes that become no change."""
        fn = self.node.fn
        assert fn is not None

        def passes(change: Change) -> Change:
            new = change.new if change.new is not None and fn(change.new) else None
            old = change.old if change.old is not None and fn(change.old) else None
            return Change(new, old)

        changes, batch = apply_each(self.node, passes, batch, ctx)
        keep = [c.new is not None or c.old is not None for c in changes]
        await self.forward(batch.replace(changes).select(keep), ctx)


class TableMapStep(TableStep):
    """``table.map_values``."""

    __slots__ = ()

    def lookup(self, key: bytes | None) -> Any:
        """Return ``fn`` of the parent's value."""
        value = self.parent_step().lookup(key)
        assert self.node.fn is not None
        return None if value is None else self.node.fn(value)

    async def push(self, batch: Batch, ctx: Context) -> None:
        """Map both sides of each change."""
        fn = self.node.fn
        assert fn is not None

        def mapped(change: Change) -> Change:
            return Change(
                None if change.new is None else fn(change.new),
                None if change.old is None else fn(change.old),
            )

        changes, batch = apply_each(self.node, mapped, batch, ctx)
        await self.forward(batch.replace(changes), ctx)


class ToStreamStep(Step):
    """``table.to_stream()``: each change's new value."""

    __slots__ = ()

    async def push(self, batch: Batch, ctx: Context) -> None:
        """Replace each change by its new value."""
        await self.forward(batch.replace([c.new for c in batch.values]), ctx)


def table_lookup_step(task: Task, node: Node) -> TableStep:
    """Return the step of table node ``node`` in ``task``.

    :raises TopologyError: if the task does not run it (a bug in the grouping).
    """
    step = task.step_by_node.get(node.id)
    if not isinstance(step, TableStep):
        raise TopologyError(f"{node.label} is not run by task {task.id}")
    return step
