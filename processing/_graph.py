"""The operator graph: nodes that streams describe, the table of node kinds, the topology.

Theory of operation
-------------------
Every :class:`~headwater.processing.Stream` method adds one :class:`Node` to its app's
:class:`Graph` and returns a stream over it; nothing is ever removed or changed, so a
stream is an immutable description and the graph only grows. A node knows its parents
(none for a source, two or more for a merge), its kind, the user function and the
error policy that was in force when it was added.

What a kind means is said once, in :data:`KINDS`: its step class (what runs, one
instance per task), its role (a source reads a topic, a sink writes one, an operator
neither), whether its topic is a repartition topic the app owns, whether it is an
effect (runs even when nothing is written after it), whether it can fail (and so
dead-letter), whether its inputs must be co-partitioned, and what ``describe`` shows
about it. Every module asks the table; a new operator kind is one new entry (and its
step class). Kinds today: sources ``source`` and ``internal`` (reads a repartition
topic back); operators ``filter``, ``map``, ``flat_map``, ``peek``, ``key_by``,
``metadata``, ``map_async``, ``filter_async``, ``split`` (one ``route`` child per
outcome) and ``merge``; sinks ``to`` and ``through`` (writes a repartition topic).
Stateful steps will be further kinds that call :meth:`Stream._copartitioned` first, so
that a re-keyed stream passes through a repartition topic before them.

What runs: the runtime groups the nodes into tasks (``_tasks.py``) and builds, for each
task, the steps of the nodes that lead to an effect; see :meth:`Graph.live_nodes`.
"""

from __future__ import annotations

import enum
import importlib
import inspect
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._errors import ErrorPolicy, MissingSourceTopicError, TopologyError
from ._operators import (
    FilterAsyncStep,
    FilterStep,
    FlatMapStep,
    KeyByStep,
    MapAsyncStep,
    MapStep,
    MetadataStep,
    PeekStep,
    SinkStep,
    SourceStep,
    SplitStep,
    Step,
)
from ._serde import JSON

if TYPE_CHECKING:
    from ._serde import Serde
    from ._tasks import Task


class Role(enum.Enum):
    """What a kind of node does with topics."""

    SOURCE = "source"  #: reads a topic: where a task's batches enter
    OPERATOR = "operator"  #: transforms what reaches it
    SINK = "sink"  #: writes a topic


def _no_detail(node: Node) -> str:
    return ""


def _serde_detail(node: Node) -> str:
    return f" [{node.params.get('serde')!r}]"


def _concurrency_detail(node: Node) -> str:
    return f" concurrency={node.params['concurrency']}"


def _route_label(node: Node) -> str:
    return f" {node.params['route']!r}"


@dataclass(frozen=True, slots=True)
class NodeKind:
    """What one kind of node is; see the module docstring and :data:`KINDS`."""

    name: str
    role: Role
    #: Builds the kind's step for one task: ``step(node, task)``.
    step: Callable[[Node, Task], Step]
    internal: bool = False
    effect: bool = False
    can_fail: bool = True
    copartitioned: bool = False
    #: Whether its step may emit rows of its own (results of many inputs, timers): what
    #: it emits then names, as its lineage, an input that may not follow the order of
    #: the input's offsets.
    adds_rows: bool = False
    #: Text after ``#id kind`` in a label; by default the function or the topic.
    label: Callable[[Node], str] | None = None
    #: Text ``describe`` adds after the label.
    detail: Callable[[Node], str] = _no_detail


_OPERATOR = Role.OPERATOR


def _lazy(module: str, name: str) -> Callable[[Node, Task], Step]:
    """Return a step builder that imports ``name`` from ``module`` when first used (the
    stateful steps' modules import this one)."""

    def build(node: Node, task: Task) -> Step:
        built: Step = getattr(importlib.import_module(f"{__package__}.{module}"), name)(node, task)
        return built

    build.__qualname__ = name
    return build


def _stores_detail(node: Node) -> str:
    stores = node.params.get("stores") or []
    text = ""
    windows = node.params.get("windows")
    if windows is not None:
        text += f" {windows.describe()} grace={node.params['grace_ms']}ms"
        idle = node.params.get("idle_ms")
        text += f" idle={idle}ms" if idle is not None else " idle=off"
    if "how" in node.params:
        text += f" {node.params['how']}"
        if "within_ms" in node.params:
            text += f" within={node.params['within_ms']}ms grace={node.params['grace_ms']}ms"
    for spec in stores:
        text += f" [store {spec.name!r} {spec.kind.value} -> {spec.changelog}]"
    return text


def _name_label(node: Node) -> str:
    name = node.params.get("name")
    return f" {name!r}" if name else ""


def _output_label(node: Node) -> str:
    return ""


#: The one table of node kinds, by name.
KINDS: dict[str, NodeKind] = {
    kind.name: kind
    for kind in (
        NodeKind("source", Role.SOURCE, SourceStep, detail=_serde_detail),
        NodeKind("internal", Role.SOURCE, SourceStep, internal=True, detail=_serde_detail),
        NodeKind("filter", _OPERATOR, FilterStep),
        NodeKind("map", _OPERATOR, MapStep),
        NodeKind("flat_map", _OPERATOR, FlatMapStep),
        NodeKind("peek", _OPERATOR, PeekStep, effect=True),
        NodeKind("key_by", _OPERATOR, KeyByStep),
        NodeKind("metadata", _OPERATOR, MetadataStep),
        NodeKind("map_async", _OPERATOR, MapAsyncStep, detail=_concurrency_detail),
        NodeKind("filter_async", _OPERATOR, FilterAsyncStep, detail=_concurrency_detail),
        NodeKind("split", _OPERATOR, SplitStep),
        NodeKind("route", _OPERATOR, Step, can_fail=False, label=_route_label),
        NodeKind("merge", _OPERATOR, Step, can_fail=False),
        NodeKind(
            "process",
            _OPERATOR,
            _lazy("_stateful", "ProcessStep"),
            adds_rows=True,
            detail=_stores_detail,
        ),
        NodeKind(
            "window_aggregate",
            _OPERATOR,
            _lazy("_aggregate", "windowed_step"),
            adds_rows=True,
            label=_name_label,
            detail=_stores_detail,
        ),
        NodeKind("final", _OPERATOR, Step, can_fail=False, label=_output_label),
        NodeKind("updates", _OPERATOR, Step, can_fail=False, label=_output_label),
        NodeKind("late", _OPERATOR, Step, can_fail=False, label=_output_label),
        NodeKind(
            "aggregate",
            _OPERATOR,
            _lazy("_aggregate", "TableAggregateStep"),
            label=_name_label,
            detail=_stores_detail,
        ),
        NodeKind(
            "table",
            _OPERATOR,
            _lazy("_table", "MaterializedTableStep"),
            label=_name_label,
            detail=_stores_detail,
        ),
        NodeKind("table_filter", _OPERATOR, _lazy("_table", "TableFilterStep")),
        NodeKind("table_map", _OPERATOR, _lazy("_table", "TableMapStep")),
        NodeKind("to_stream", _OPERATOR, _lazy("_table", "ToStreamStep"), can_fail=False),
        NodeKind("table_side", _OPERATOR, _lazy("_joins", "TableSideStep"), can_fail=False),
        NodeKind(
            "join_side",
            _OPERATOR,
            _lazy("_joins", "JoinSideStep"),
            can_fail=False,
            label=lambda node: f" {('left', 'right')[node.params['side']]}",
        ),
        NodeKind(
            "stream_table_join",
            _OPERATOR,
            _lazy("_joins", "StreamTableJoinStep"),
            copartitioned=True,
            label=_name_label,
            detail=_stores_detail,
        ),
        NodeKind(
            "stream_stream_join",
            _OPERATOR,
            _lazy("_joins", "StreamStreamJoinStep"),
            copartitioned=True,
            adds_rows=True,
            label=_name_label,
            detail=_stores_detail,
        ),
        NodeKind(
            "table_join",
            _OPERATOR,
            _lazy("_joins", "TableTableJoinStep"),
            copartitioned=True,
            label=_name_label,
            detail=_stores_detail,
        ),
        NodeKind("to", Role.SINK, SinkStep, effect=True, detail=_serde_detail),
        NodeKind("through", Role.SINK, SinkStep, internal=True, effect=True, detail=_serde_detail),
    )
}


@dataclass(frozen=True, eq=False, kw_only=True)
class Node:
    """One step of the graph; its ``kind`` names an entry of :data:`KINDS`.

    ``params`` holds what the kind needs (``serde``, ``routes``, ``concurrency``, ...).
    """

    id: int
    kind: str
    parents: tuple[Node, ...] = ()
    fn: Callable[..., Any] | None = None
    topic: str | None = None
    policy: ErrorPolicy = ErrorPolicy.RAISE
    dead_letter_topic: str | None = None
    params: Mapping[str, Any] = field(default_factory=dict)

    @property
    def spec(self) -> NodeKind:
        """The node's entry in the table of kinds."""
        return KINDS[self.kind]

    @property
    def is_source(self) -> bool:
        """Whether the node reads a topic."""
        return self.spec.role is Role.SOURCE

    @property
    def is_sink(self) -> bool:
        """Whether the node writes a topic."""
        return self.spec.role is Role.SINK

    @property
    def label(self) -> str:
        """Return ``#id kind detail`` as describe and errors show it."""
        spec = self.spec
        if spec.label is not None:
            detail = spec.label(self)
        elif self.fn is not None:
            detail = f" {describe_function(self.fn)}"
        elif self.topic is not None:
            detail = f" {self.topic}"
        else:
            detail = ""
        return f"#{self.id} {self.kind}{detail}"


def describe_function(fn: Callable[..., Any]) -> str:
    """Return a function's name and where it is defined: ``parse (app.py:12)``."""
    name = getattr(fn, "__qualname__", None) or type(fn).__name__
    code = getattr(fn, "__code__", None)
    if code is None:
        return name
    return f"{name} ({Path(code.co_filename).name}:{code.co_firstlineno})"


def check_function(fn: object, operator: str, *, coroutine: bool = False) -> None:
    """Check that ``fn`` can serve as ``operator``'s function.

    :raises TopologyError: if it is not callable, or its kind (``async def`` or not) does
        not match the operator.
    """
    if not callable(fn):
        raise TopologyError(f"{operator} needs a function, got {fn!r}")
    is_coroutine = inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(
        getattr(fn, "__call__", None)  # noqa: B004 - a callable object's async __call__
    )
    if coroutine and not is_coroutine:
        raise TopologyError(f"{operator} needs an async function, got {describe_function(fn)}")
    if not coroutine and is_coroutine:
        raise TopologyError(
            f"{operator} got the async function {describe_function(fn)}; "
            f"use {operator}_async for async functions"
        )


class Graph:
    """The nodes of one app, in the order they were added."""

    def __init__(self) -> None:
        self.nodes: list[Node] = []
        self._children: dict[int, list[Node]] = {}
        #: The names of the app's state stores (each names a changelog: unique).
        self.store_names: set[str] = set()

    def add(self, kind: str, parents: tuple[Node, ...] = (), **fields: Any) -> Node:
        """Add a node of ``kind`` (a name in :data:`KINDS`) below ``parents``; return it."""
        assert kind in KINDS, kind
        node = Node(id=len(self.nodes) + 1, kind=kind, parents=parents, **fields)
        self.nodes.append(node)
        for parent in parents:
            self._children.setdefault(parent.id, []).append(node)
        return node

    def insert_repartition(self, consumer: Node, topic: str, partitions: int) -> None:
        """Put a repartition through ``topic`` (``partitions`` wide) between ``consumer``
        and its first parent: what :func:`~headwater.processing._tasks.copartition`
        does to a join's side that is not co-partitioned with the other, before the
        app runs. The new nodes go into the list just before ``consumer`` (a node's
        parents always come first); ``consumer`` takes the repartition's reader as its
        first parent."""
        parent, *others = consumer.parents
        dedupe = follows_offsets(parent)
        # Values go through as their source's serde reads them (JSON if the sources differ).
        serdes = {id(s.params["serde"]): s.params["serde"] for s in source_ancestors(parent)}
        serde = next(iter(serdes.values())) if len(serdes) == 1 else JSON
        base = len(self.nodes)
        through = Node(
            id=base + 1, kind="through", parents=(parent,), topic=topic,
            params={"serde": serde, "partitions": partitions, "partitions_of": None,
                    "dedupe": dedupe},
            policy=parent.policy, dead_letter_topic=parent.dead_letter_topic,
        )  # fmt: skip
        reader = Node(
            id=base + 2, kind="internal", parents=(through,), topic=topic,
            params={"serde": serde, "key_serde": self.key_serde(parent), "dedupe": dedupe},
            policy=parent.policy, dead_letter_topic=parent.dead_letter_topic,
        )  # fmt: skip
        at = self.nodes.index(consumer)
        self.nodes[at:at] = [through, reader]
        siblings = self._children[parent.id]
        siblings[siblings.index(consumer)] = through
        self._children[through.id] = [reader]
        self._children[reader.id] = [consumer]
        # Nodes are values to everything but this rewrite, which runs before any step
        # is built from them.
        object.__setattr__(consumer, "parents", (reader, *others))

    def children(self, node: Node) -> list[Node]:
        """Return the nodes below ``node``, in the order they were added."""
        return self._children.get(node.id, [])

    def sources(self) -> list[Node]:
        """Return the source nodes (external and internal)."""
        return [node for node in self.nodes if node.is_source]

    def live_nodes(self) -> set[int]:
        """Return the ids of nodes that lead to an effect (a sink or a peek)."""
        live: set[int] = set()
        for node in reversed(self.nodes):  # children are always added after parents
            if node.spec.effect or any(c.id in live for c in self.children(node)):
                live.add(node.id)
        return live

    def topics(self, role: Role, *, internal: bool | None = None) -> list[str]:
        """Return the topics of nodes of ``role`` (only internal ones, or only external
        ones, if ``internal`` says so), each once, in order."""
        seen: dict[str, None] = {}
        for node in self.nodes:
            spec = node.spec
            if (
                spec.role is role
                and node.topic is not None
                and (internal is None or spec.internal is internal)
            ):
                seen.setdefault(node.topic)
        return list(seen)

    def dead_letter_topics(self) -> dict[str, Node]:
        """Return each dead-letter topic with the first live node that may write to it."""
        live = self.live_nodes()
        found: dict[str, Node] = {}
        for node in self.nodes:
            if (
                node.id in live
                and node.policy is ErrorPolicy.DEAD_LETTER
                and node.dead_letter_topic is not None
                and node.spec.can_fail
            ):
                found.setdefault(node.dead_letter_topic, node)
        return found

    def key_serde(self, node: Node) -> Serde[Any] | None:
        """Return the key serde of the keys that reach ``node``: the nearest ``key_by``'s
        (or a repartition's, which read its keys back), None for stored keys (or keys of
        merged streams that disagree)."""
        found: set[int] = set()
        serdes: list[Serde[Any] | None] = []
        stack = [node]
        while stack:
            current = stack.pop()
            if current.id in found:
                continue
            found.add(current.id)
            if "key_serde" in current.params:
                serdes.append(current.params["key_serde"])
            elif current.is_source or not current.parents:
                serdes.append(None)
            else:
                stack.extend(current.parents)
        first = serdes[0] if serdes else None
        return first if all(s is first for s in serdes) else None

    def validate(self) -> None:
        """Check the graph can run.

        :raises TopologyError: if nothing is written anywhere, or a topic is both read and
            written by the app (a loop through the log).
        """
        if not any(node.spec.effect for node in self.nodes):
            raise TopologyError("the app writes nothing: add a .to(topic) (or a .peek) to a stream")
        read = set(self.topics(Role.SOURCE, internal=False))
        written = set(self.topics(Role.SINK, internal=False))
        looped = sorted(read & written)
        if looped:
            raise TopologyError(
                f"topic {looped[0]!r} is both read and written by the app (a loop through "
                "the log); write to another topic"
            )

    def describe(self, app_name: str) -> str:
        """Return the topology as text: each source with the tree of nodes below it."""
        live = self.live_nodes()
        lines = [f"app {app_name!r} (consumer group {app_name!r})"]
        shown: set[int] = set()
        for source in self.sources():
            lines.append("")
            lines.extend(self._describe_tree(source, live, shown))
        internal = self.topics(Role.SINK, internal=True)
        sinks = self.topics(Role.SINK, internal=False)
        dead_letters = sorted(self.dead_letter_topics())
        lines.append("")
        lines.append(
            "sources:        " + (", ".join(self.topics(Role.SOURCE, internal=False)) or "-")
        )
        lines.append("sinks:          " + (", ".join(sinks) or "-"))
        lines.append("internal topics: " + (", ".join(internal) or "-"))
        lines.append("dead letters:   " + (", ".join(dead_letters) or "-"))
        stores = [
            f"{spec.name} ({spec.kind.value}, changelog {spec.changelog})"
            for node in self.nodes
            if node.id in live
            for spec in node.params.get("stores") or ()
        ]
        if stores:
            lines.append("state stores:   " + ", ".join(stores))
        return "\n".join(lines) + "\n"

    def changelogs(self, counts: Mapping[str, int]) -> dict[str, int]:
        """Return the changelog topic of every live store, with its partition count (that
        of the topics its task reads)."""
        live = self.live_nodes()
        found: dict[str, int] = {}
        for node in self.nodes:
            specs = node.params.get("stores")
            if node.id not in live or not specs:
                continue
            width = max((counts[s.topic] for s in source_ancestors(node) if s.topic), default=1)
            for spec in specs:
                found[spec.changelog] = width
        return found

    def _describe_tree(self, root: Node, live: set[int], shown: set[int]) -> Iterator[str]:
        def line(node: Node) -> str:
            text = node.label + node.spec.detail(node)
            if not node.is_sink and node.policy is not ErrorPolicy.RAISE:
                text += f" on_error={node.policy.value}"
            if node.id not in live:
                text += "  (unused: leads to no sink)"
            return text

        def walk(node: Node, prefix: str) -> Iterator[str]:
            children = self.children(node)
            for i, child in enumerate(children):
                last = i == len(children) - 1
                branch, indent = ("└── ", "    ") if last else ("├── ", "│   ")
                if child.id in shown:
                    yield f"{prefix}{branch}→ {child.label} (above)"
                    continue
                shown.add(child.id)
                if child.is_sink and child.spec.internal:
                    reader = self.children(child)
                    yield f"{prefix}{branch}{line(child)} → read back as #{reader[0].id}"
                    continue
                yield f"{prefix}{branch}{line(child)}"
                yield from walk(child, prefix + indent)

        shown.add(root.id)
        yield line(root)
        yield from walk(root, "")


def source_ancestors(node: Node) -> list[Node]:
    """Return the source nodes (external or internal) that ``node`` reads from."""
    found: dict[int, Node] = {}
    stack = [node]
    seen: set[int] = set()
    while stack:
        current = stack.pop()
        if current.id in seen:
            continue
        seen.add(current.id)
        if current.is_source:
            found[current.id] = current
            continue
        stack.extend(current.parents)
    return list(found.values())


def follows_offsets(node: Node) -> bool:
    """Return whether every record leaving ``node`` comes from a row its task read, in
    the order of the offsets read: neither it nor a step above it (up to the sources)
    adds rows."""
    stack = [node]
    seen: set[int] = set()
    while stack:
        current = stack.pop()
        if current.id in seen or current.is_source:
            continue
        seen.add(current.id)
        if current.spec.adds_rows:
            return False
        stack.extend(current.parents)
    return True


def plan_topics(
    graph: Graph, existing: Mapping[str, int | None], default_partitions: int | None = None
) -> dict[str, int]:
    """Return the partition count of every topic the app uses, in creation order.

    Topics that exist keep their count (``existing`` maps a topic to its count, or None
    when it is missing). A missing source topic gets the count its stream declares
    (``app.stream(topic, partitions=N)``), else ``default_partitions`` (the test
    driver's); a missing sink, repartition or dead-letter topic gets its explicit count,
    else as many as the widest source it reads from.

    :raises MissingSourceTopicError: if source topics are missing and neither gives a count.
    """
    counts: dict[str, int] = {}
    missing: list[str] = []
    declared = {
        n.topic: n.params["partitions"]
        for n in graph.nodes
        if n.is_source and not n.spec.internal and n.topic and n.params.get("partitions")
    }

    def widest(node: Node) -> int:
        return max((counts.get(s.topic, 1) for s in source_ancestors(node) if s.topic), default=1)

    for node in graph.nodes:
        if node.topic is None or node.topic in counts:
            continue
        have = existing.get(node.topic)
        if have is not None:
            counts[node.topic] = have
        elif node.is_source and not node.spec.internal:
            count = declared.get(node.topic, default_partitions)
            if count is None:
                if node.topic not in missing:
                    missing.append(node.topic)
                continue
            counts[node.topic] = count
    # Sinks next, each once the topics it is sized by are (a sink below a repartition
    # topic is as wide as that topic, which may be sized by the topics it joins).
    sinks = [n for n in graph.nodes if n.is_sink and n.topic is not None and n.topic not in counts]

    def size(node: Node, *, force: bool) -> int | None:
        assert node.topic is not None
        have = existing.get(node.topic)
        if have is not None:
            return have
        like = node.params.get("partitions_of")
        if node.params.get("partitions") and not like:
            return int(node.params["partitions"])
        sized_by = like or [s.topic for s in source_ancestors(node) if s.topic]
        if not force and any(t not in counts and t not in missing for t in sized_by):
            return None
        if like and all(t in counts for t in like):
            return max(counts[t] for t in like)
        return widest(node)

    while sinks:
        done = [n for n in sinks if n.topic in counts]
        for node in sinks:
            if node.topic not in counts and (count := size(node, force=False)) is not None:
                counts[node.topic] = count  # type: ignore[index]
                done.append(node)
        if not done:  # nothing more to learn: as wide as what is known
            for node in sinks:
                if node.topic not in counts:
                    counts[node.topic] = size(node, force=True) or 1  # type: ignore[index]
            break
        sinks = [n for n in sinks if n not in done]
    if missing:
        raise MissingSourceTopicError(missing)
    for topic, node in graph.dead_letter_topics().items():
        if topic not in counts:
            have = existing.get(topic)
            counts[topic] = have if have is not None else widest(node)
    return counts
