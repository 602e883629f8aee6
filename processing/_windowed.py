"""The DSL of stateful steps: windowed streams, aggregations and ``process``.

``stream.key_by(...).window(spec)`` is a :class:`WindowedStream`; its aggregations
return a :class:`WindowedAggregation`, whose ``final()``, ``updates()`` and ``late()``
are streams. Without ``window`` an aggregation returns a
:class:`~headwater.processing.Table`. Each stateful step has a stable name, which names
its store and the store's changelog topic ``<app>-<name>-changelog``; by default the
name comes from the step's position in the graph (``aggregate-7``), so adding steps
before it renames it: give stateful steps a ``name`` in an app that will change.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from ._aggregate import (
    Aggregator,
    count_aggregator,
    max_aggregator,
    min_aggregator,
    reduce_aggregator,
    sum_aggregator,
)
from ._errors import TopologyError
from ._graph import check_function
from ._serde import BytesSerde, Serde
from ._stores import (
    BYTES_KEYS,
    JSON_KEYS,
    SESSION_KEYS,
    WINDOW_KEYS,
    KeyCodec,
    StoreKind,
    StoreSpec,
)
from ._table import Table
from .windows import SessionWindows, SlidingWindows, WindowSpec

if TYPE_CHECKING:
    from ._app import App
    from ._stream import Stream

T = TypeVar("T")
U = TypeVar("U")

_BYTES = BytesSerde()


def store_kind(store: object) -> StoreKind:
    """Return ``store`` (``"memory"`` or ``"disk"``) as a :class:`StoreKind`.

    :raises TopologyError: for anything else.
    """
    try:
        return StoreKind(store)  # type: ignore[arg-type]
    except ValueError:
        raise TopologyError(f"store must be 'memory' or 'disk', got {store!r}") from None


def store_spec(
    app: App,
    name: str,
    *,
    kind: StoreKind = StoreKind.MEMORY,
    keys: KeyCodec = JSON_KEYS,
    values: Serde[Any] | None = None,
) -> StoreSpec:
    """Return the spec of store ``name`` of ``app``, its changelog ``<app>-<name>-changelog``.

    :raises TopologyError: for a bad name, or one another store of the app has.
    """
    from ._stream import check_topic  # noqa: PLC0415 - the stream module imports this one

    if not isinstance(name, str) or not name:
        raise TopologyError(f"a store name is a non-empty string, got {name!r}")
    changelog = check_topic(f"{app.name}-{name}-changelog", f"store name {name!r}")
    names = app.graph.store_names
    if name in names:
        raise TopologyError(
            f"the store name {name!r} is used twice: give each stateful step its own name"
        )
    names.add(name)
    if values is None:
        return StoreSpec(name, changelog, kind, keys)
    return StoreSpec(name, changelog, kind, keys, values.serialize, values.deserialize)


def make_aggregator(
    initial: Callable[[], Any],
    add: Callable[[Any, Any], Any],
    merge: Callable[[Any, Any], Any] | None,
) -> Aggregator:
    """Return the aggregator of ``aggregate(initial, add, merge)``.

    :raises TopologyError: if a function is not callable.
    """
    check_function(initial, "aggregate initial")
    check_function(add, "aggregate add")
    if merge is not None:
        check_function(merge, "aggregate merge")
    return Aggregator(initial, add, merge)


def _name(app: App, name: str | None, kind: str) -> str:
    return name if name is not None else f"{kind}-{len(app.graph.nodes) + 1}"


def aggregate_table(
    stream: Stream[Any], aggregator: Aggregator, name: str | None, store: str
) -> Table[Any]:
    """Add an aggregation over all time below ``stream``; return its table."""
    app = stream.app
    kind = store_kind(store)
    name = _name(app, name, "aggregate")
    spec = store_spec(app, name, kind=kind, keys=BYTES_KEYS)
    source = stream._copartitioned(name)
    node = source._derive(
        "aggregate",
        params={
            "stores": [spec],
            "aggregator": aggregator,
            "name": name,
            "key_serde": app.graph.key_serde(source.node),
        },
    ).node
    return Table(app, node, name)


def process_node(
    stream: Stream[Any], factory: Callable[[], Any], stores: list[str], store: str
) -> Stream[Any]:
    """Add a ``process`` step below ``stream``; return its stream."""
    app = stream.app
    kind = store_kind(store)
    specs = [store_spec(app, name, kind=kind, keys=JSON_KEYS) for name in stores]
    return stream._derive(
        "process",
        params={
            "factory": factory,
            "stores": specs,
            "key_serde": app.graph.key_serde(stream.node) or _BYTES,
        },
    )


class WindowedStream(Generic[T]):
    """A keyed stream in windows: aggregate it per key and window.

    Returned by :meth:`Stream.window <headwater.processing.Stream.window>`.
    """

    __slots__ = ("_grace_ms", "_idle_ms", "_spec", "_stream", "_timestamp")

    def __init__(
        self,
        stream: Stream[T],
        spec: WindowSpec,
        *,
        timestamp: Callable[[T], int] | None,
        grace_ms: int,
        idle_ms: int | None,
    ) -> None:
        if not isinstance(spec, WindowSpec):
            raise TopologyError(
                f"window needs a window spec (windows.tumbling(...), ...), got {spec!r}"
            )
        if timestamp is not None:
            check_function(timestamp, "window timestamp")
        for what, value, none_ok in (("grace_ms", grace_ms, False), ("idle_ms", idle_ms, True)):
            if value is None and none_ok:
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise TopologyError(f"window: {what} must be an integer >= 0, got {value!r}")
        self._stream = stream
        self._spec = spec
        self._timestamp = timestamp
        self._grace_ms = grace_ms
        self._idle_ms = idle_ms

    def __repr__(self) -> str:
        return f"<WindowedStream {self._spec.describe()} of {self._stream!r}>"

    def count(self, *, name: str | None = None, store: str = "memory") -> WindowedAggregation[int]:
        """Count each key's records per window (see :meth:`aggregate`)."""
        return self._aggregate(count_aggregator(), name, store)

    def sum(
        self, fn: Callable[[T], Any], *, name: str | None = None, store: str = "memory"
    ) -> WindowedAggregation[Any]:
        """Sum ``fn(value)`` per key and window."""
        check_function(fn, "sum")
        return self._aggregate(sum_aggregator(fn), name, store)

    def min(
        self, fn: Callable[[T], Any], *, name: str | None = None, store: str = "memory"
    ) -> WindowedAggregation[Any]:
        """The least ``fn(value)`` per key and window."""
        check_function(fn, "min")
        return self._aggregate(min_aggregator(fn), name, store)

    def max(
        self, fn: Callable[[T], Any], *, name: str | None = None, store: str = "memory"
    ) -> WindowedAggregation[Any]:
        """The greatest ``fn(value)`` per key and window."""
        check_function(fn, "max")
        return self._aggregate(max_aggregator(fn), name, store)

    def reduce(
        self, fn: Callable[[T, T], T], *, name: str | None = None, store: str = "memory"
    ) -> WindowedAggregation[T]:
        """Fold each key's values per window with ``fn(acc, value)``."""
        check_function(fn, "reduce")
        return self._aggregate(reduce_aggregator(fn), name, store)

    def aggregate(
        self,
        initial: Callable[[], U],
        add: Callable[[U, T], U],
        merge: Callable[[U, U], U] | None = None,
        *,
        name: str | None = None,
        store: str = "memory",
    ) -> WindowedAggregation[U]:
        """Fold each key's values per window: ``add(acc, value)`` from ``initial()``;
        session windows also need ``merge(acc, acc)`` (sessions a record bridges merge).

        ``name`` names the state store, its changelog ``<app>-<name>-changelog`` and, for
        a re-keyed stream, the repartition topic ``<app>-<name>-repartition``;
        ``store`` is ``"memory"`` or ``"disk"``. The aggregate must be made of what JSON
        holds. Pick the results with ``.final()``, ``.updates()`` or ``.late()``.

        :raises TopologyError: for session windows without ``merge``, or a bad name.
        """
        return self._aggregate(make_aggregator(initial, add, merge), name, store)

    def _aggregate(
        self, aggregator: Aggregator, name: str | None, store: str
    ) -> WindowedAggregation[Any]:
        spec = self._spec
        if isinstance(spec, SessionWindows) and aggregator.merge is None:
            raise TopologyError("an aggregation in session windows needs merge=(acc, acc) -> acc")
        app = self._stream.app
        kind = store_kind(store)
        name = _name(app, name, "aggregate")
        keys = SESSION_KEYS if isinstance(spec, SessionWindows) else WINDOW_KEYS
        stores = [store_spec(app, name, kind=kind, keys=keys)]
        if isinstance(spec, SlidingWindows):
            stores.append(store_spec(app, f"{name}-records", kind=kind, keys=BYTES_KEYS))
        source = self._stream._copartitioned(name)
        stream = source._derive(
            "window_aggregate",
            params={
                "windows": spec,
                "grace_ms": self._grace_ms,
                "timestamp": self._timestamp,
                "idle_ms": self._idle_ms,
                "aggregator": aggregator,
                "stores": stores,
                "name": name,
                "key_serde": app.graph.key_serde(source.node),
                "emits_rows": True,
            },
            rekeyed=False,
        )
        return WindowedAggregation(stream)


class WindowedAggregation(Generic[U]):
    """A windowed aggregation: pick its results with :meth:`final`, :meth:`updates` or
    :meth:`late` (each a stream; any of them, or several)."""

    __slots__ = ("_stream",)

    def __init__(self, stream: Stream[Any]) -> None:
        self._stream = stream

    def __repr__(self) -> str:
        return f"<WindowedAggregation {self._stream.node.label}>"

    def final(self) -> Stream[Any]:
        """Return the stream of each window's result, once, when the window closes
        (:class:`~headwater.processing.Windowed` values, oldest window first)."""
        return self._stream._derive("final", params={"output": "final"})

    def updates(self) -> Stream[Any]:
        """Return the stream of each window's new result after every record that changed
        it (:class:`~headwater.processing.Windowed` values)."""
        return self._stream._derive("updates", params={"output": "updates"})

    def late(self) -> Stream[Any]:
        """Return the stream of the records that arrived after their window closed (they
        changed nothing; without this stream they are dropped)."""
        return self._stream._derive("late", params={"output": "late"})
