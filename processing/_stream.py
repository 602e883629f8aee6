"""Stream[T]: an immutable description of records flowing through operators.

Each method adds one node to the app's graph (see ``_graph.py``) and returns a new
stream over it; the stream it was called on is unchanged and may be used again (a
fan-out). Nothing runs until :meth:`App.run <headwater.processing.App.run>` or a
:class:`~headwater.processing.testing.TestDriver` does.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from headwater.store import InvalidConfigError, validate_topic_name

from ._aggregate import (
    count_aggregator,
    max_aggregator,
    min_aggregator,
    reduce_aggregator,
    sum_aggregator,
)
from ._batch import Event
from ._errors import ErrorPolicy, TopologyError, parse_policy
from ._graph import Node, Role, check_function, follows_offsets
from ._retry import Retry
from ._serde import JSON, JSON_KEY, Serde

if TYPE_CHECKING:
    from ._app import App
    from ._connectors import AppConnector
    from ._table import Table
    from ._windowed import WindowedStream
    from .windows import WindowSpec

T = TypeVar("T")
U = TypeVar("U")

#: Concurrency of async operators when none is given.
DEFAULT_CONCURRENCY = 16
#: How long a task reads nothing before its windows' stream time follows the wall clock.
DEFAULT_IDLE_MS = 10_000


def check_topic(topic: object, what: str) -> str:
    """Return ``topic`` if it is a valid topic name.

    :raises TopologyError: if it is not.
    """
    try:
        validate_topic_name(topic)  # type: ignore[arg-type]
    except InvalidConfigError as exc:
        raise TopologyError(f"{what}: {exc}") from None
    return topic  # type: ignore[return-value]


def check_partitions(partitions: object) -> int | None:
    """Return ``partitions`` if it is None or a partition count from 1 to 10,000.

    :raises TopologyError: otherwise.
    """
    if partitions is None:
        return None
    if isinstance(partitions, bool) or not isinstance(partitions, int):
        raise TopologyError(f"partitions must be an integer, got {partitions!r}")
    if not 1 <= partitions <= 10_000:
        raise TopologyError(f"partitions must be from 1 to 10000, got {partitions}")
    return partitions


class Stream(Generic[T]):
    """An immutable, typed description of a stream of values of type ``T``.

    Build streams with :meth:`App.stream <headwater.processing.App.stream>` and the
    methods below; each returns a new stream. Functions given to operators run in the
    app's event loop, one batch at a time per input partition: plain functions must not
    block (use :meth:`map_async` for I/O).
    """

    __slots__ = ("_app", "_dead_letter_topic", "_node", "_policy", "_rekeyed")

    def __init__(
        self,
        app: App,
        node: Node,
        *,
        policy: ErrorPolicy,
        dead_letter_topic: str,
        rekeyed: bool = False,
    ) -> None:
        self._app = app
        self._node = node
        self._policy = policy
        self._dead_letter_topic = dead_letter_topic
        self._rekeyed = rekeyed

    def __repr__(self) -> str:
        return f"<Stream {self._node.label} of app {self._app.name!r}>"

    @property
    def app(self) -> App:
        """The app this stream belongs to."""
        return self._app

    @property
    def node(self) -> Node:
        """The graph node this stream is the output of."""
        return self._node

    @property
    def policy(self) -> ErrorPolicy:
        """The error policy of the operators added to this stream."""
        return self._policy

    def _derive(
        self,
        kind: str,
        *,
        parents: tuple[Node, ...] | None = None,
        rekeyed: bool | None = None,
        **fields: Any,
    ) -> Stream[Any]:
        """Return the stream of a new node of ``kind`` below this one (or ``parents``),
        under this stream's policy: the one way streams grow the app's graph."""
        node = self._app.graph.add(
            kind,
            (self._node,) if parents is None else parents,
            policy=self._policy,
            dead_letter_topic=self._dead_letter_topic,
            **fields,
        )
        return Stream(
            self._app,
            node,
            policy=self._policy,
            dead_letter_topic=self._dead_letter_topic,
            rekeyed=self._rekeyed if rekeyed is None else rekeyed,
        )

    # -- one in, one (or no) out ---------------------------------------------------------

    def filter(self, predicate: Callable[[T], object]) -> Stream[T]:
        """Keep the values for which ``predicate`` is true.

        ``predicate`` reads the value and must not change it: a repartition topic after
        filters and a ``key_by`` gets each value's bytes as they were read.
        """
        check_function(predicate, "filter")
        return self._derive("filter", fn=predicate)

    def map(self, fn: Callable[[T], U]) -> Stream[U]:
        """Replace each value by ``fn(value)``; key, timestamp and headers stay."""
        check_function(fn, "map")
        return self._derive("map", fn=fn)

    def flat_map(self, fn: Callable[[T], Iterable[U]]) -> Stream[U]:
        """Replace each value by the values ``fn(value)`` yields (none, one or many)."""
        check_function(fn, "flat_map")
        return self._derive("flat_map", fn=fn)

    def peek(self, fn: Callable[[T], object]) -> Stream[T]:
        """Call ``fn(value)`` for its side effect and pass the value on unchanged.

        A peek runs even when nothing is written after it.
        """
        check_function(fn, "peek")
        return self._derive("peek", fn=fn)

    def key_by(self, fn: Callable[[T], object], *, serde: Serde[Any] | None = None) -> Stream[T]:
        """Give each record the key ``fn(value)``: later steps see it as it is, and the sink
        writes it encoded by ``serde``.

        Without a serde the key is canonical JSON (:func:`~headwater.processing.encode_key`:
        sorted object keys, no whitespace, so equal keys always encode alike and keys of
        different types never collide; ``None``: no key). ``serde=StrSerde()`` writes text
        keys as plain UTF-8 (as a Java producer's StringSerializer does),
        ``serde=BytesSerde()`` bytes keys as they are. Sinks place records by the encoded
        key; a stateful step after a ``key_by`` (an aggregation, a join) first passes
        the stream through a repartition topic so that equal keys meet in one partition.
        ``fn`` reads the value and must not change it (see :meth:`filter`).
        """
        check_function(fn, "key_by")
        return self._derive("key_by", fn=fn, params={"key_serde": serde or JSON_KEY}, rekeyed=True)

    def with_metadata(self) -> Stream[Event[T]]:
        """Wrap each value in an :class:`Event` with its record's key, timestamp, headers
        and source position, for operators that need them; ``.map(lambda e: e.value)``
        unwraps it again."""
        return self._derive("metadata")

    # -- async operators -------------------------------------------------------------------

    def map_async(
        self,
        fn: Callable[[T], Awaitable[U]],
        *,
        concurrency: int = DEFAULT_CONCURRENCY,
        retry: Retry | None = None,
    ) -> Stream[U]:
        """Replace each value by ``await fn(value)``, with up to ``concurrency`` calls at once.

        Results leave in input order (so in order per key); a batch's records are all
        awaited before the batch's outputs are written, so a slow function slows reading
        and memory stays bounded. A call that raises is retried as ``retry`` says, then
        the stream's error policy applies.
        """
        check_function(fn, "map_async", coroutine=True)
        return self._derive("map_async", fn=fn, params=_async_params(concurrency, retry))

    def filter_async(
        self,
        predicate: Callable[[T], Awaitable[object]],
        *,
        concurrency: int = DEFAULT_CONCURRENCY,
        retry: Retry | None = None,
    ) -> Stream[T]:
        """Keep the values for which ``await predicate(value)`` is true (see :meth:`map_async`)."""
        check_function(predicate, "filter_async", coroutine=True)
        return self._derive("filter_async", fn=predicate, params=_async_params(concurrency, retry))

    # -- splitting and joining -----------------------------------------------------------

    def branch(self, predicate: Callable[[T], object]) -> tuple[Stream[T], Stream[T]]:
        """Split in two: ``(matching, rest)``; ``predicate`` runs once per value."""
        routes = self.split({"matching": predicate})
        return routes["matching"], routes["rest"]

    def split(
        self, routes: Mapping[str, Callable[[T], object]], *, rest: str = "rest"
    ) -> dict[str, Stream[T]]:
        """Split by named predicates: each value goes to the first route whose predicate is
        true, or to ``rest``. Returns a stream per route name, and one named ``rest``.

        :raises TopologyError: if there are no routes or ``rest`` is also a route name.
        """
        if not isinstance(routes, Mapping) or not routes:
            raise TopologyError("split needs a mapping of route names to predicates")
        if rest in routes:
            raise TopologyError(f"split: {rest!r} is the name of the default route")
        for name, predicate in routes.items():
            if not isinstance(name, str) or not name:
                raise TopologyError(f"split: route names are non-empty strings, got {name!r}")
            check_function(predicate, f"split route {name!r}")
        names = (*routes, rest)
        node = self._derive("split", params={"routes": dict(routes), "rest": rest}).node
        return {
            name: self._derive("route", parents=(node,), params={"route": name}) for name in names
        }

    def merge(self, *others: Stream[T]) -> Stream[T]:
        """Return one stream of this stream's values and ``others``'.

        Values from one input partition keep their order; there is no order between
        partitions or between the merged streams.

        :raises TopologyError: if a stream belongs to another app.
        """
        if not others:
            raise TopologyError("merge needs at least one other stream")
        for other in others:
            if not isinstance(other, Stream) or other._app is not self._app:
                raise TopologyError("merge: every stream must come from the same App")
        parents = (self._node, *(other._node for other in others))
        rekeyed = self._rekeyed or any(other._rekeyed for other in others)
        return self._derive("merge", parents=parents, rekeyed=rekeyed)

    # -- error policy ------------------------------------------------------------------------

    def on_error(
        self, policy: ErrorPolicy | str, *, dead_letter_topic: str | None = None
    ) -> Stream[T]:
        """Return this stream with ``policy`` for the operators added to it from now on.

        ``"raise"`` (default), ``"skip"`` or ``"dead_letter"`` (see :class:`ErrorPolicy`);
        dead letters go to ``dead_letter_topic``, by default the source's ``<stream>-dlq``.

        :raises TopologyError: for an unknown policy or a bad topic name.
        """
        chosen = parse_policy(policy)
        topic = self._dead_letter_topic
        if dead_letter_topic is not None:
            topic = check_topic(dead_letter_topic, "dead_letter_topic")
        return Stream(
            self._app, self._node, policy=chosen, dead_letter_topic=topic, rekeyed=self._rekeyed
        )

    # -- sinks and repartitioning --------------------------------------------------------

    def to(
        self, topic: str, *, serde: Serde[T] | None = None, partitions: int | None = None
    ) -> None:
        """Write the values to ``topic`` (serialised by ``serde``, JSON by default).

        Records keep their key (a ``key_by`` key, or the source record's), timestamp and
        headers, plus a ``headwater.source`` lineage header; keyed records are placed by
        the key's murmur2 hash, unkeyed ones in the partition numbered like their source
        partition (modulo the count). A missing topic is created when the app starts,
        with ``partitions`` partitions or else as many as the source topic has.

        :raises TopologyError: for a bad topic name or partition count.
        """
        check_topic(topic, "to")
        check_partitions(partitions)
        self._derive("to", topic=topic, params={"serde": serde or JSON, "partitions": partitions})

    def sink(
        self,
        connector: AppConnector,
        *,
        serde: Serde[T] | None = None,
        partitions: int | None = None,
    ) -> None:
        """Deliver the values with ``connector`` (a sink of :mod:`headwater.connectors`).

        The values are written to the connector's topic as :meth:`to` writes them
        (``serde``, ``partitions`` as there), and the connector, run with the app, reads
        that topic as a consumer group of its own and commits only what its destination
        took.

        :raises TopologyError: for a bad topic name or partition count.
        """
        self.to(connector.topic, serde=serde, partitions=partitions)
        self._app.add_sink(connector)

    def repartition(
        self, name: str, *, serde: Serde[T] | None = None, partitions: int | None = None
    ) -> Stream[T]:
        """Pass the stream through the internal topic ``<app>-<name>-repartition``.

        Records are placed there by their key, so afterwards every record with a given key
        is read by the same partition task: what a stateful step needs after a
        ``key_by`` (aggregations and joins do it themselves). ``name`` names the topic,
        so it must stay stable across versions of the app (renaming it orphans the old
        topic). Values are written with ``serde`` (JSON by default); the topic gets
        ``partitions`` partitions, by default as many as the app's widest source topic.

        :raises TopologyError: for a bad name, a name used twice, or a bad partition count.
        """
        return self._repartition(name, serde=serde, partitions=partitions)

    def _repartition(
        self,
        name: str,
        *,
        serde: Serde[T] | None = None,
        partitions: int | None = None,
        partitions_of: list[str] | None = None,
    ) -> Stream[T]:
        topic = check_topic(f"{self._app.name}-{name}-repartition", "repartition")
        check_partitions(partitions)
        graph = self._app.graph
        if topic in graph.topics(Role.SINK, internal=True):
            raise TopologyError(f"repartition name {name!r} is used twice")
        chosen = serde or JSON
        # Records that follow their source's offsets can be told from the same ones
        # written again after an upstream crash (see ``_stateful.py``).
        dedupe = follows_offsets(self._node)
        sink = self._derive(
            "through",
            topic=topic,
            params={
                "serde": chosen,
                "partitions": partitions,
                "partitions_of": partitions_of,
                "dedupe": dedupe,
            },
        )
        return sink._derive(
            "internal",
            topic=topic,
            params={"serde": chosen, "key_serde": graph.key_serde(sink.node), "dedupe": dedupe},
            rekeyed=False,
        )

    def _copartitioned(self, name: str, *, partitions_of: list[str] | None = None) -> Stream[T]:
        """Return a stream whose records sit in the partition their key hashes to.

        The hook for stateful steps (windows, aggregations, joins): each calls it with its
        own stable name first. A stream re-keyed by ``key_by`` since its source (or last
        repartition) goes through a repartition topic (with as many partitions as the
        widest of ``partitions_of``, the topics it must be co-partitioned with, if
        given); any other stream is already placed by its key and is returned as it is.
        """
        if self._rekeyed:
            return self._repartition(name, partitions_of=partitions_of)
        return self

    # -- stateful operators ------------------------------------------------------------------

    def window(
        self,
        spec: WindowSpec,
        *,
        timestamp: Callable[[T], int] | None = None,
        grace_ms: int = 0,
        idle_ms: int | None = DEFAULT_IDLE_MS,
    ) -> WindowedStream[T]:
        """Return this (keyed) stream in windows of ``spec`` (see :mod:`windows`), for an
        aggregation per key and window.

        Event time is ``timestamp(value)`` (epoch ms) or else the record's timestamp; a
        window closes once the step's stream time (the largest event time it has seen)
        reaches its end plus ``grace_ms``, and records for a closed window are late.
        When the task has read nothing for ``idle_ms`` of wall time, stream time moves
        on with the wall clock, so windows close without a next record (None: never).

        :raises TopologyError: for a bad spec, function or duration.
        """
        from ._windowed import WindowedStream  # noqa: PLC0415 - it builds on this module

        return WindowedStream(self, spec, timestamp=timestamp, grace_ms=grace_ms, idle_ms=idle_ms)

    def count(self, *, name: str | None = None, store: str = "memory") -> Table[int]:
        """Return the table of how many records each key has had (over all time).

        ``name`` names the state store and its changelog ``<app>-<name>-changelog``
        (renaming it is a breaking change); by default it comes from the step's position
        in the graph. ``store`` is ``"memory"`` or ``"disk"``.
        """
        from ._windowed import aggregate_table  # noqa: PLC0415

        return aggregate_table(self, count_aggregator(), name, store)

    def sum(
        self, fn: Callable[[T], Any], *, name: str | None = None, store: str = "memory"
    ) -> Table[Any]:
        """Return the table of each key's sum of ``fn(value)`` (see :meth:`count`)."""
        check_function(fn, "sum")
        from ._windowed import aggregate_table  # noqa: PLC0415

        return aggregate_table(self, sum_aggregator(fn), name, store)

    def min(
        self, fn: Callable[[T], Any], *, name: str | None = None, store: str = "memory"
    ) -> Table[Any]:
        """Return the table of each key's least ``fn(value)`` (see :meth:`count`)."""
        check_function(fn, "min")
        from ._windowed import aggregate_table  # noqa: PLC0415

        return aggregate_table(self, min_aggregator(fn), name, store)

    def max(
        self, fn: Callable[[T], Any], *, name: str | None = None, store: str = "memory"
    ) -> Table[Any]:
        """Return the table of each key's greatest ``fn(value)`` (see :meth:`count`)."""
        check_function(fn, "max")
        from ._windowed import aggregate_table  # noqa: PLC0415

        return aggregate_table(self, max_aggregator(fn), name, store)

    def reduce(
        self, fn: Callable[[T, T], T], *, name: str | None = None, store: str = "memory"
    ) -> Table[T]:
        """Return the table of each key's values folded by ``fn(acc, value)`` (the first
        value as it is; see :meth:`count`)."""
        check_function(fn, "reduce")
        from ._windowed import aggregate_table  # noqa: PLC0415

        return aggregate_table(self, reduce_aggregator(fn), name, store)

    def aggregate(
        self,
        initial: Callable[[], U],
        add: Callable[[U, T], U],
        merge: Callable[[U, U], U] | None = None,
        *,
        name: str | None = None,
        store: str = "memory",
    ) -> Table[U]:
        """Return the table of each key's ``add(acc, value)`` fold from ``initial()`` (see
        :meth:`count`); the aggregate must be made of what JSON holds (it is written
        to the changelog as JSON)."""
        from ._windowed import aggregate_table, make_aggregator  # noqa: PLC0415

        return aggregate_table(self, make_aggregator(initial, add, merge), name, store)

    def join(
        self,
        other: Table[U] | Stream[U],
        fn: Callable[[T, U], Any],
        *,
        within_ms: int | None = None,
        grace_ms: int = 0,
        name: str | None = None,
    ) -> Stream[Any]:
        """Join with a table (each record with the table's value of its key) or, with
        ``within_ms``, with another stream (each pair of records of one key at most
        ``within_ms`` apart); emit ``fn(value, other_value)``.

        Kafka Streams' inner join semantics; see ``left_join`` and ``outer_join``. A
        re-keyed side is repartitioned first (``<app>-<name>-repartition``); ``name``
        names the join's stores and topics (by default from its position in the graph).

        :raises TopologyError: for a table of another app, or a stream without ``within_ms``.
        """
        return self._join(other, fn, "inner", within_ms, grace_ms, name)

    def left_join(
        self,
        other: Table[U] | Stream[U],
        fn: Callable[[T, U | None], Any],
        *,
        within_ms: int | None = None,
        grace_ms: int = 0,
        name: str | None = None,
    ) -> Stream[Any]:
        """As :meth:`join`, keeping every record of this stream: ``fn(value, None)`` when
        the table has no value (or, between streams, when no partner came before the
        record's window closed)."""
        return self._join(other, fn, "left", within_ms, grace_ms, name)

    def outer_join(
        self,
        other: Stream[U],
        fn: Callable[[T | None, U | None], Any],
        *,
        within_ms: int,
        grace_ms: int = 0,
        name: str | None = None,
    ) -> Stream[Any]:
        """Join with another stream within ``within_ms``, keeping every record of both:
        ``fn(value, None)`` or ``fn(None, other_value)`` for records without a partner
        when their window closes."""
        return self._join(other, fn, "outer", within_ms, grace_ms, name)

    def _join(  # noqa: PLR0917 - the join methods' one helper
        self,
        other: Any,
        fn: Callable[..., Any],
        how: str,
        within_ms: int | None,
        grace_ms: int,
        name: str | None,
    ) -> Stream[Any]:
        from ._joins import stream_stream_join, stream_table_join  # noqa: PLC0415

        if name is not None:
            check_topic(f"{self._app.name}-{name}-changelog", "join name")
        if isinstance(other, Stream):
            if within_ms is None:
                raise TopologyError(
                    f"{how} join of two streams needs within_ms: how far apart two records "
                    "of a key may be to join"
                )
            return stream_stream_join(self, other, fn, how, within_ms, grace_ms, name)
        if within_ms is not None:
            raise TopologyError("within_ms is for stream-stream joins; a table join has none")
        return stream_table_join(self, other, fn, how, name)

    def process(
        self,
        factory: Callable[[], Any],
        *,
        stores: Iterable[str] = (),
        store: str = "memory",
    ) -> Stream[Any]:
        """Run a processor of your own, with per-task stores and timers (Kafka Streams'
        Processor API).

        ``factory()`` makes one processor per task: an object with
        ``process(value, ctx)`` and, optionally, ``init(ctx)`` (called when the task
        starts and after its stores are restored, to schedule timers). Through the
        :class:`~headwater.processing.ProcessorContext` it reads the record's key and
        timestamp, its stores by name (each a key-value store of JSON values, backed by
        the changelog ``<app>-<store>-changelog``), forwards values, and schedules
        callbacks on wall time or stream time. ``store`` is ``"memory"`` or ``"disk"``.

        :raises TopologyError: for a factory that is not callable or a store name in use.
        """
        check_function(factory, "process")
        from ._windowed import process_node  # noqa: PLC0415

        return process_node(self, factory, list(stores), store)


def _async_params(concurrency: object, retry: object) -> dict[str, Any]:
    if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
        raise TopologyError(f"concurrency must be a positive integer, got {concurrency!r}")
    if retry is not None and not isinstance(retry, Retry):
        raise TopologyError(f"retry must be a Retry, got {retry!r}")
    return {"concurrency": concurrency, "retry": retry}
