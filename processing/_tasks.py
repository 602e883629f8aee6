"""Tasks: which partitions are processed together, and the state of one task.

Theory of operation
-------------------
As in Kafka Streams, the unit of work is a *task*, a partition group: task ``g_N``
reads partition ``N`` of every topic of *topic group* ``g``, and owns its own instance
of every step below those topics (so a step may hold per-task state, and a merge of the
group's topics feeds one set of steps). :func:`plan_topic_groups` forms the groups from
the graph:

- the nodes fall into *sub-topologies*: sets of nodes connected through the graph's
  edges, except that a repartition topic separates its writer (``through``) from its
  reader (``internal``), and two sources of one topic are connected (one partition is
  read by one task);
- the topics a sub-topology reads are grouped by partition count: topics with equal
  counts are co-partitioned and share tasks; a topic with another count gets tasks of its
  own (a stateless merge of a 3- and a 2-partition topic still works, as it always
  did, but is two groups). A kind that needs its inputs co-partitioned (a join) gets
  them: before the groups are planned, :func:`copartition` puts a join's stream side of
  another count through a repartition topic; :func:`check_copartitioning` refuses
  what cannot be (tables of different counts).

Assignment. A member of the app's consumer group is assigned partitions, not tasks, so
the assignor must keep a task's partitions together. The runtime asks for Kafka's
``range`` assignor: per topic, it gives member ``i`` (in member order) the same range of
partition numbers for every topic with the same partition count, since all members of an
app subscribe to the same topics; so partitions ``g/N`` of all of a group's topics land
on one member. It is eager (a rebalance revokes every partition first), which a task
needs anyway to hand its state over whole; and librdkafka offers it, so the
Kafka-protocol backend can keep the same guarantee (cooperative-sticky, the consumer's
default, moves partitions one by one and would split tasks). A task-aware assignor in
our coordinator would do better for uneven groups, but a Kafka cluster's clients could
not run it. The price of eager: at every rebalance a member closes all its tasks and
rebuilds those it gets back, so state stores must keep their local copy, with the
changelog offset it reflects, to reopen a task that stayed by reading only the
changelog's tail. :meth:`TaskPlan.tasks_of` turns an assignment into tasks, and says
which tasks it got only part of (never, under range, unless the topics changed
meanwhile).

A :class:`Task` holds one task's runtime state, but no loop: its step instances
(built by ``Pipeline.task``), the position and last committed offset of each of its
partitions, its stream time and its timers. The runtime and the test driver both drive
tasks through :class:`~headwater.processing._pipeline.Pipeline`; the commit metadata
carries the stream time, so a task resumed elsewhere starts at the same stream time.
"""

from __future__ import annotations

import contextvars
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

import orjson

from headwater.groups import TopicPartition

from ._clock import Clock, Timers
from ._errors import TopologyError
from ._graph import Graph, Node, source_ancestors
from ._metrics import OperatorCounts

if TYPE_CHECKING:
    from ._backends import Backend, Membership
    from ._operators import SourceStep, Step
    from ._stores import MemoryStore, StoreSpec
    from ._stores._changelog import StoreRegistry

logger = logging.getLogger("headwater.processing")

#: The task whose batch (or timers) is being processed, for look-ups into its stores
#: (``Table.get``) from user functions.
CURRENT_TASK: contextvars.ContextVar[Task] = contextvars.ContextVar("headwater_task")

#: Commit metadata format version (a JSON object with ``"v"``).
METADATA_VERSION = 1


class TaskId(NamedTuple):
    """A task: topic group ``group``, partition ``partition`` (shown as ``group_partition``)."""

    group: int
    partition: int

    def __str__(self) -> str:
        return f"{self.group}_{self.partition}"


@dataclass(frozen=True, slots=True)
class TopicGroup:
    """Topics whose partition ``N`` form task ``id_N``: co-partitioned inputs of one
    sub-topology (see the module docstring)."""

    id: int
    topics: tuple[str, ...]
    partitions: int
    sources: tuple[Node, ...]

    def task_partitions(self, partition: int) -> list[TopicPartition]:
        """Return the partitions task ``self.id``\\_``partition`` reads."""
        return [TopicPartition(topic, partition) for topic in self.topics]


def plan_topic_groups(graph: Graph, counts: Mapping[str, int]) -> list[TopicGroup]:
    """Return the topic groups of the graph's live sources, given every topic's count."""
    live = graph.live_nodes()
    parent: dict[int, int] = {}  # union-find over node ids, and topics as negative ids
    topic_ids: dict[str, int] = {}

    def find(item: int) -> int:
        root = item
        while parent.setdefault(root, root) != root:
            root = parent[root]
        parent[item] = root
        return root

    def union(a: int, b: int) -> None:
        parent[find(a)] = find(b)

    for node in graph.nodes:
        if node.id not in live:
            continue
        find(node.id)
        if node.is_source and node.topic is not None:
            union(node.id, topic_ids.setdefault(node.topic, -1 - len(topic_ids)))
        for p in node.parents:
            if p.id in live and not p.is_sink:  # a through's reader starts a new one
                union(node.id, p.id)
    by_component: dict[int, dict[int, list[Node]]] = {}
    for node in graph.sources():
        if node.id in live and node.topic is not None:
            sizes = by_component.setdefault(find(node.id), {})
            sizes.setdefault(counts[node.topic], []).append(node)
    groups: list[TopicGroup] = []
    for sizes in by_component.values():
        for count, nodes in sizes.items():
            topics = tuple(dict.fromkeys(n.topic for n in nodes if n.topic))
            groups.append(TopicGroup(len(groups), topics, count, tuple(nodes)))
    return groups


def copartition(graph: Graph, counts: Mapping[str, int], app_name: str) -> list[str]:
    """Repartition the stream sides of joins that are not co-partitioned with the other
    side; return the repartition topics added (their counts go into ``plan_topics``
    next, as ``partitions`` of their writers).

    A stream-table join's stream, read with another partition count than the table's
    topic, goes through ``<app>-<name>-repartition`` with the table's count (placed by
    its key, as the table's records are); a stream-stream join's side with fewer
    partitions than the other goes through ``<app>-<name>-left-repartition`` (or
    ``-right-``) with the wider count. A re-keyed side has been repartitioned already, to
    the count of the topics it meets. Tables cannot be repartitioned (a table is its
    topic): a table-table join of different counts, or a table whose topics disagree,
    is left for :func:`check_copartitioning` to refuse.
    """
    live = graph.live_nodes()
    added: list[str] = []

    def count_of(node: Node) -> set[int]:
        return {counts[s.topic] for s in source_ancestors(node) if s.topic}

    for node in list(graph.nodes):
        if node.id not in live:
            continue
        name = node.params.get("name")
        if node.kind == "stream_table_join":
            stream, table = node.parents
            wanted = count_of(table)
            if len(wanted) == 1 and count_of(stream) != wanted:
                topic = f"{app_name}-{name}-repartition"
                graph.insert_repartition(node, topic, wanted.pop())
                added.append(topic)
        elif node.kind == "stream_stream_join":
            sides = [count_of(side) for side in node.parents]
            widest = max(max(c, default=1) for c in sides)
            for side, have, which in zip(node.parents, sides, ("left", "right"), strict=True):
                if have != {widest}:
                    topic = f"{app_name}-{name}-{which}-repartition"
                    graph.insert_repartition(side, topic, widest)
                    added.append(topic)
    return added


def check_copartitioning(graph: Graph, counts: Mapping[str, int]) -> None:
    """Check that every node whose kind needs co-partitioned inputs has them.

    :raises TopologyError: naming the node and the topics, with their counts.
    """
    live = graph.live_nodes()
    for node in graph.nodes:
        if node.id not in live or not node.spec.copartitioned:
            continue
        topics = {s.topic: counts[s.topic] for s in source_ancestors(node) if s.topic}
        if len(set(topics.values())) > 1:
            listed = ", ".join(f"{t!r} ({n} partitions)" for t, n in sorted(topics.items()))
            fix = (
                "a stream side is repartitioned to the other's count, but a table cannot "
                "be: make the table's topics the same partition count, or build the table "
                "from a stream (.key_by(...) then an aggregation), which is repartitioned"
            )
            raise TopologyError(
                f"{node.label} reads {listed}: its inputs must be co-partitioned (equal "
                f"partition counts, placed by the same key); {fix}"
            )


class TaskPlan:
    """The topic groups of a graph, and the tasks a set of partitions forms."""

    def __init__(self, groups: Sequence[TopicGroup]) -> None:
        self.groups = list(groups)
        self._group_of = {topic: g for g in self.groups for topic in g.topics}

    def topics(self) -> list[str]:
        """Return every topic a task reads."""
        return list(self._group_of)

    def task_of(self, tp: TopicPartition) -> TaskId | None:
        """Return the task that reads ``tp`` (None: the app does not read its topic)."""
        group = self._group_of.get(tp.topic)
        return None if group is None else TaskId(group.id, tp.partition)

    def tasks_of(self, partitions: Iterable[TopicPartition]) -> dict[TaskId, list[TopicPartition]]:
        """Group ``partitions`` by task (sorted); partitions of other topics are left out."""
        tasks: dict[TaskId, list[TopicPartition]] = {}
        for tp in sorted(partitions):
            task = self.task_of(tp)
            if task is not None:
                tasks.setdefault(task, []).append(tp)
        return dict(sorted(tasks.items()))

    def missing(self, task: TaskId, have: Iterable[TopicPartition]) -> list[TopicPartition]:
        """Return the partitions of ``task`` that are not in ``have``."""
        held = set(have)
        return [
            tp for tp in self.groups[task.group].task_partitions(task.partition) if tp not in held
        ]


class PartitionState:
    """One partition of a task: where reading continues, and what was last committed."""

    __slots__ = ("committed", "position", "tp")

    def __init__(self, tp: TopicPartition, position: int) -> None:
        self.tp = tp
        self.position = position
        self.committed = position


class Task:
    """One task's state (see the module docstring); driven by a pipeline, owned by a
    runtime or a test driver. Concurrency: one batch at a time."""

    def __init__(
        self,
        task_id: TaskId,
        group: TopicGroup,
        clock: Clock,
        topic_partitions: Mapping[str, int],
        registry: StoreRegistry | None = None,
    ) -> None:
        self.id = task_id
        self.group = group
        self.clock = clock
        self.topic_partitions = topic_partitions
        self.partitions: dict[TopicPartition, PartitionState] = {}
        self.timers = Timers()
        self.stream_time_ms: int | None = None
        self.settled_stream_time_ms: int | None = None
        self.tracks_stream_time = False
        self.roots: dict[str, list[SourceStep]] = {}
        self.steps: list[Step] = []
        #: Each operator's counts by node id (a pipeline shares its own among its tasks).
        self.counts: dict[int, OperatorCounts] = {}
        #: Each step by the id of its node (a join finds its table's step here).
        self.step_by_node: dict[int, Step] = {}
        #: The task's state stores, by name (see ``_stores``).
        self.stores: dict[str, MemoryStore] = {}
        self.registry = registry
        #: Wall time of the last input batch (None: none yet), for idle timers.
        self.last_input_ms: int | None = None

    def __repr__(self) -> str:
        return f"<Task {self.id}: {', '.join(f'{t}/{p}' for t, p in self.partitions)}>"

    def operator_counts(self, node_id: int) -> OperatorCounts:
        """Return the counts of operator ``node_id`` (made on first use)."""
        counts = self.counts.get(node_id)
        if counts is None:
            counts = self.counts[node_id] = OperatorCounts()
        return counts

    def open_store(self, spec: StoreSpec) -> MemoryStore:
        """Return the task's store ``spec``, opened (once) through the task's registry.

        :raises TopologyError: if two steps of the task name the same store.
        """
        if spec.name in self.stores:
            raise TopologyError(f"two stateful steps use the store name {spec.name!r}")
        if self.registry is not None:
            store = self.registry.open(self.id, spec)
        else:
            from ._stores import MemoryStore  # noqa: PLC0415 - a cycle through the steps

            store = MemoryStore(spec)
        self.stores[spec.name] = store
        return store

    def positions(self) -> dict[TopicPartition, int]:
        """Return the task's position in each of its partitions."""
        return {tp: state.position for tp, state in self.partitions.items()}

    def add_partition(self, tp: TopicPartition, position: int, metadata: str = "") -> None:
        """Start reading ``tp`` at ``position``; take the stream time its commit metadata
        recorded, if later than the task's."""
        self.partitions[tp] = PartitionState(tp, position)
        recorded = decode_metadata(metadata).get("stream_time_ms")
        if isinstance(recorded, int) and (
            self.stream_time_ms is None or recorded > self.stream_time_ms
        ):
            self.stream_time_ms = self.settled_stream_time_ms = recorded

    def observe(self, timestamps: list[int]) -> bool:
        """Move stream time to the largest of ``timestamps`` if later; return whether it
        moved (only for a task that tracks it)."""
        if not self.tracks_stream_time or not timestamps:
            return False
        newest = max(timestamps)
        if self.stream_time_ms is not None and newest <= self.stream_time_ms:
            return False
        self.stream_time_ms = newest
        return True

    def settle(self) -> None:
        """Note that everything processed so far is durable: the stream time reached is
        what commits record from now on (a batch still being written must not count)."""
        self.settled_stream_time_ms = self.stream_time_ms

    def to_commit(self) -> dict[TopicPartition, tuple[int, str]]:
        """Return the partitions whose position moved since the last commit, with the
        offset to commit and the metadata to store with it."""
        metadata = self.metadata()
        return {
            tp: (state.position, metadata)
            for tp, state in self.partitions.items()
            if state.position != state.committed
        }

    def metadata(self) -> str:
        """Return the commit metadata of the task's partitions: its settled stream time."""
        if self.settled_stream_time_ms is None:
            return ""
        return encode_metadata({"stream_time_ms": self.settled_stream_time_ms})


def encode_metadata(fields: Mapping[str, Any]) -> str:
    """Return the commit metadata string for ``fields`` (compact JSON, versioned)."""
    return orjson.dumps({"v": METADATA_VERSION, **fields}).decode()


def decode_metadata(text: str) -> dict[str, Any]:
    """Return the fields of a commit metadata string; {} for none, another tool's or a
    newer version's (what another program committed is ignored, not an error)."""
    if not text.startswith("{"):
        return {}
    try:
        fields = orjson.loads(text)
    except orjson.JSONDecodeError:
        return {}
    if not isinstance(fields, dict) or fields.get("v") != METADATA_VERSION:
        return {}
    return fields


async def resume(
    task: Task,
    partitions: Sequence[TopicPartition],
    membership: Membership,
    backend: Backend,
) -> None:
    """Add ``partitions`` to ``task`` where the group last committed them (with the stream
    time their metadata recorded), else at their log start: what a worker does with
    partitions it is assigned, and so what a restart or a rebalance rebuilds a task from.
    """
    committed = await membership.committed(partitions)
    for tp in partitions:
        offset = committed.get(tp)
        if offset is None:
            task.add_partition(tp, await backend.start_offset(tp.topic, tp.partition))
        else:
            task.add_partition(tp, offset.offset, offset.metadata)
