"""A pipeline: what one source topic's partition tasks run on each batch they read.

:class:`Pipeline` turns the live nodes reachable from one source node into a tree of
steps (``_operators.py``) and, for each input batch, pushes the batch through it and
turns what reached the sinks, and the dead letters, into :class:`Write` s: records per
output (topic, partition), with lineage, ready for the backend. It does no I/O itself,
so the runtime and the test driver run exactly the same code.

Placement: a keyed record goes to murmur2(key) modulo the topic's partition count, as
Kafka's default partitioner puts it; an unkeyed record goes to the partition numbered
like its source partition (modulo the count), which keeps a partition's order and costs
no hashing.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from itertools import compress, repeat
from typing import NamedTuple

from headwater.store import Record, RecordColumns, partition_for_key

from ._encoding import OutRecords
from ._errors import describe_exception, user_frame
from ._graph import SINK_KINDS, Graph, Node
from ._lineage import (
    ERROR_LOCATION,
    ERROR_MESSAGE,
    ERROR_OPERATOR,
    ERROR_TYPE,
    Headers,
    source_prefix,
    user_headers,
)
from ._operators import (
    STEP_KINDS,
    Batch,
    Context,
    SinkStep,
    SourceStep,
    SplitStep,
    Step,
    apply_each,
)
from ._serde import batch_serializer

_KEY_CACHE_LIMIT = 100_000


class Write(NamedTuple):
    """Records for one partition of one topic."""

    topic: str
    partition: int
    records: OutRecords


@dataclass(frozen=True, slots=True)
class Outcome:
    """What processing one input batch produced."""

    writes: list[Write]
    skipped: int
    dead_lettered: int


class Pipeline:
    """The steps the batches of one source topic go through.

    :param graph: the app's graph. :param sources: its source nodes reading one topic
        (usually one; each deserialises with its own serde).
    :param partitions: the partition count of every topic the pipeline writes.
    """

    def __init__(self, graph: Graph, sources: list[Node], partitions: Mapping[str, int]) -> None:
        assert sources and sources[0].topic is not None
        self.topic = sources[0].topic
        self._partitions = partitions
        self._live = graph.live_nodes()
        self._graph = graph
        self._steps: dict[int, Step] = {}
        self._key_partitions: dict[tuple[int, bytes], int] = {}
        self._roots: list[SourceStep] = []
        for source in sources:
            assert source.topic == self.topic
            root = self._build(source)
            assert isinstance(root, SourceStep)
            self._roots.append(root)

    def _build(self, node: Node) -> Step:
        step = self._steps.get(node.id)
        if step is not None:
            return step
        if node.kind in ("source", "internal"):
            step = SourceStep(node)
        elif node.kind in SINK_KINDS:
            assert node.topic is not None
            step = SinkStep(node, self._partitions[node.topic])
        elif node.kind == "split":
            step = SplitStep(node)
        else:
            step = STEP_KINDS[node.kind](node)
        self._steps[node.id] = step
        if node.kind in SINK_KINDS:
            return step  # a through node's reader is a pipeline of its own
        children = self._graph.children(node)
        if isinstance(step, SplitStep):
            step.routes = [self._build(c) if c.id in self._live else None for c in children]
        else:
            step.children = [self._build(c) for c in children if c.id in self._live]
        return step

    async def process(self, partition: int, records: RecordColumns) -> Outcome:
        """Run ``records`` (read from ``partition`` of the source topic, at least one)
        through the pipeline and return the writes they produce.

        :raises OperatorError: if a user function failed under the ``raise`` policy.
        """
        ctx = Context(self.topic, partition, records)
        for root in self._roots:
            await root.start(ctx)
        writes: dict[tuple[str, int], list[OutRecords]] = {}
        for sink, batches in ctx.outputs.items():
            assert isinstance(sink, SinkStep)
            self._place(sink, batches, ctx, writes)
        if ctx.dead_letters:
            self._place_dead_letters(ctx, writes)
        merged = [Write(topic, p, _concat(parts)) for (topic, p), parts in writes.items()]
        return Outcome(merged, ctx.skipped, len(ctx.dead_letters))

    def _place(
        self,
        sink: SinkStep,
        batches: list[Batch],
        ctx: Context,
        writes: dict[tuple[str, int], list[OutRecords]],
    ) -> None:
        batch = batches[0] if len(batches) == 1 else _concat_batches(batches, ctx.records)
        values, batch = apply_each(sink.node, batch_serializer(sink.serde), batch, ctx)
        if not values:
            return
        records, origins = ctx.records, batch.origins
        keys = batch.key_column(records)
        timestamps = list(map(records.timestamps.__getitem__, origins))
        headers: list[Headers] | None = None
        if any(records.headers):
            headers = [user_headers(h) for h in map(records.headers.__getitem__, origins)]
            if not any(headers):
                headers = None
        prefix = source_prefix(ctx.topic, ctx.partition)
        offsets = records.offsets
        if isinstance(offsets, range):  # lineage: the first offset plus each origin
            out = OutRecords(values, keys, timestamps, prefix, origins, headers, offsets.start)
        else:
            sources = list(map(offsets.__getitem__, origins))
            out = OutRecords(values, keys, timestamps, prefix, sources, headers)
        count = sink.partitions
        default = ctx.partition % count
        if count == 1 or keys.count(None) == len(keys):
            writes.setdefault((sink.topic, default), []).append(out)
            return
        cache = self._key_partitions
        if len(cache) > _KEY_CACHE_LIMIT:
            cache.clear()
        placed = []
        for key in keys:
            if key is None:
                placed.append(default)
                continue
            p = cache.get((count, key))
            if p is None:
                p = cache[(count, key)] = partition_for_key(key, count)
            placed.append(p)
        for p in sorted(set(placed)):
            mask = [q == p for q in placed]
            writes.setdefault((sink.topic, p), []).append(_select(out, mask))

    def _place_dead_letters(
        self, ctx: Context, writes: dict[tuple[str, int], list[OutRecords]]
    ) -> None:
        by_topic: dict[str, list[tuple[Record, Headers]]] = {}
        for letter in ctx.dead_letters:
            topic = letter.node.dead_letter_topic
            assert topic is not None
            record = ctx.records[letter.origin]
            error = letter.error
            location = user_frame(error) or ""
            headers = (
                *user_headers(record.headers),
                (ERROR_OPERATOR, letter.node.label.encode()),
                (ERROR_TYPE, type(error).__name__.encode()),
                (ERROR_MESSAGE, describe_exception(error).encode()[:4096]),
                (ERROR_LOCATION, location.encode()[:1024]),
            )
            by_topic.setdefault(topic, []).append((record, headers))
        prefix = source_prefix(ctx.topic, ctx.partition)
        for topic, letters in by_topic.items():
            out = OutRecords(
                [r.value for r, _ in letters],
                [r.key for r, _ in letters],
                [r.timestamp for r, _ in letters],
                prefix,
                [r.offset for r, _ in letters],
                [h for _, h in letters],
            )
            partition = ctx.partition % self._partitions[topic]
            writes.setdefault((topic, partition), []).append(out)


def _select(out: OutRecords, mask: list[bool]) -> OutRecords:
    return OutRecords(
        list(compress(out.values, mask)),
        list(compress(out.keys, mask)),
        list(compress(out.timestamps, mask)),
        out.source,
        list(compress(out.source_offsets, mask)),
        None if out.headers is None else list(compress(out.headers, mask)),
        out.source_base,
    )


def _concat(parts: list[OutRecords]) -> OutRecords:
    if len(parts) == 1:
        return parts[0]
    headers: list[Headers] | None = None
    if any(p.headers is not None for p in parts):
        headers = []
        for p in parts:
            headers.extend(p.headers if p.headers is not None else repeat((), len(p.values)))
    base = parts[0].source_base
    if all(p.source_base == base for p in parts):
        offsets = [o for p in parts for o in p.source_offsets]
    else:  # dead letters (absolute offsets) and outputs (relative) for one partition
        offsets = [p.source_base + o for p in parts for o in p.source_offsets]
        base = 0
    return OutRecords(
        [v for p in parts for v in p.values],
        [k for p in parts for k in p.keys],
        [t for p in parts for t in p.timestamps],
        parts[0].source,
        offsets,
        headers,
        base,
    )


def _concat_batches(batches: list[Batch], records: RecordColumns) -> Batch:
    values: list[object] = []
    origins: list[int] = []
    for b in batches:
        values.extend(b.values)
        origins.extend(b.origins)
    if all(b.keys is None for b in batches):
        return Batch(values, origins)
    keys: list[bytes | None] = []
    for b in batches:
        keys.extend(b.key_column(records))
    return Batch(values, origins, keys)


def build_pipelines(
    graph: Graph, partitions: Mapping[str, int]
) -> tuple[dict[str, Pipeline], list[str]]:
    """Return a pipeline per topic the app reads, and which of those are repartition topics.

    Only live sources are read; ``partitions`` gives every topic's partition count.
    """
    live = graph.live_nodes()
    by_topic: dict[str, list[Node]] = {}
    internal: list[str] = []
    for node in graph.sources():
        if node.id in live and node.topic is not None:
            by_topic.setdefault(node.topic, []).append(node)
            if node.kind == "internal" and node.topic not in internal:
                internal.append(node.topic)
    pipelines = {topic: Pipeline(graph, nodes, partitions) for topic, nodes in by_topic.items()}
    return pipelines, internal
