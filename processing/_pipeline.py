"""A pipeline: the steps of one topic group, and a batch (or a tick of time) through them.

:class:`Pipeline` knows the live nodes below one topic group's sources (see
``_tasks.py``). :meth:`Pipeline.build` gives a task its own instance of each step;
:meth:`Pipeline.process` pushes a batch one of the task's partitions read through the
task's steps, and :meth:`Pipeline.advance` runs the task's wall-time timers that are
due, so steps can emit on time alone, with no input. Both turn what reached the sinks,
and the dead letters, into :class:`Write` s: records per output (topic, partition),
with keys serialised (once, by the key serde of the ``key_by`` that made them) and
lineage, ready for the backend. A pipeline does no I/O itself, so the runtime and the
test driver run exactly the same code.

Placement: a keyed record goes to murmur2(key) modulo the topic's partition count, as
Kafka's default partitioner puts it; an unkeyed record goes to the partition numbered
like its task (modulo the count), which keeps a partition's order and costs no hashing.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from itertools import repeat
from time import perf_counter
from typing import Any, NamedTuple

import orjson

from headwater.store import Record, RecordColumns, canonical_key, partition_rows

from ._batch import Batch, Context, apply_each
from ._clock import Clock
from ._columns import take_rows
from ._encoding import OutRecords, all_none
from ._errors import describe_exception, user_frame
from ._graph import Graph, Node
from ._handoff import event_times
from ._lineage import (
    ERROR_LOCATION,
    ERROR_MESSAGE,
    ERROR_OPERATOR,
    ERROR_TYPE,
    Headers,
    source_prefix,
    user_headers,
)
from ._metrics import OperatorCounts
from ._operators import SinkStep, SourceStep, Step
from ._serde import (
    BytesSerde,
    JsonKeySerde,
    JsonSerde,
    StrSerde,
    batch_serializer,
    serialize_all,
)
from ._stores._changelog import StoreRegistry
from ._tasks import CURRENT_TASK, Task, TaskId, TopicGroup
from .windows import TumblingWindows

#: At most this many keys are kept in the cache of key encodings (see ``_serialise_keys``).
_KEY_CACHE_LIMIT = 100_000


class Write(NamedTuple):
    """Records for one partition of one topic."""

    topic: str
    partition: int
    records: OutRecords


@dataclass(frozen=True, slots=True)
class Outcome:
    """What processing one input batch (or one tick of time) produced."""

    writes: list[Write]
    skipped: int
    dead_lettered: int
    late: int = 0
    #: When processing the batch began (``perf_counter``; 0 for a tick of time).
    started: float = 0.0


_NOTHING = Outcome([], 0, 0)


class Pipeline:
    """The steps below one topic group's sources; see the module docstring.

    :param graph: the app's graph. :param group: the topic group.
    :param partitions: the partition count of every topic the app uses.
    """

    def __init__(self, graph: Graph, group: TopicGroup, partitions: Mapping[str, int]) -> None:
        self.group = group
        self._graph = graph
        self._partitions = partitions
        self._live = graph.live_nodes()
        #: Text and integer keys as the default key serde writes them, for the batches
        #: whose keys cannot be cut from one encoding of the list (``_json_each``).
        self._key_bytes: dict[str | int, bytes] = {}
        #: Each operator's counts by node id, shared by the steps of every task.
        self.counts: dict[int, OperatorCounts] = {}
        #: The timestamp function of the window that reads each repartition sink's topic,
        #: for the sinks whose event times are handed to that window (``_handoff.py``),
        #: and the sources that read those topics (the windows' own).
        self._event_time_fns: dict[int, Callable[[Any], Any]] = {}
        self._timed_readers: set[int] = set()
        for node in graph.nodes:
            fn = _event_time_fn(graph, node) if node.id in self._live else None
            if fn is not None:
                self._event_time_fns[node.id] = fn
                self._timed_readers.update(reader.id for reader in graph.children(node))

    def task(self, task_id: TaskId, clock: Clock, registry: StoreRegistry | None = None) -> Task:
        """Return a new task of this group with its own instance of every step (and of
        every step's store, opened through ``registry``)."""
        assert task_id.group == self.group.id
        task = Task(task_id, self.group, clock, self._partitions, registry)
        task.counts = self.counts
        steps: dict[int, Step] = {}

        def build(node: Node) -> Step:
            step = steps.get(node.id)
            if step is None:
                step = steps[node.id] = node.spec.step(node, task)
                if not node.is_sink:  # a through's reader starts a pipeline of its own
                    children = self._graph.children(node)
                    step.link([build(c) if c.id in self._live else None for c in children])
            return step

        for source in self.group.sources:
            assert source.topic is not None
            root = build(source)
            assert isinstance(root, SourceStep)
            task.roots.setdefault(source.topic, []).append(root)
        task.steps = list(steps.values())
        task.step_by_node = steps
        task.tracks_stream_time = any(type(step).uses_stream_time for step in task.steps)
        return task

    async def process(
        self,
        task: Task,
        topic: str,
        partition: int,
        records: RecordColumns,
        event_times: Sequence[int] | None = None,
    ) -> Outcome:
        """Run ``records`` (read from ``topic``/``partition``, one of ``task``'s, at least
        one record) through the task's steps; fire the stream-time timers they make due.
        ``event_times``: the records' event times, handed over by the task that wrote
        them for the window that reads them (see ``_handoff.py``).

        Stream time moves once the steps have seen the batch: during it a step sees the
        stream time before the batch (one that needs it record by record keeps the
        running maximum of the timestamps itself, as Kafka Streams' per-record order
        would give).

        :raises OperatorError: if a user function failed under the ``raise`` policy.
        """
        started = perf_counter()
        ctx = Context(task, topic, partition, records)
        roots = task.roots[topic]
        if event_times is not None and len(roots) == 1 and roots[0].node.id in self._timed_readers:
            ctx.event_times = event_times
        if task.stores:
            task.last_input_ms = task.clock.now_ms()
        token = CURRENT_TASK.set(task)
        try:
            for root in roots:
                await root.start(ctx)
        finally:
            CURRENT_TASK.reset(token)
        if task.observe(records.timestamps):
            now = task.stream_time_ms
            assert now is not None
            while due := task.timers.due_stream(now):  # a timer may schedule a due one
                for timer in due:
                    await timer.callback(ctx, now)
        return self._outcome(ctx, started)

    async def advance(self, task: Task, now_ms: int) -> Outcome:
        """Run ``task``'s wall-time timers due at ``now_ms``; return what they emitted.

        :raises OperatorError: if a user function failed under the ``raise`` policy.
        """
        due = task.timers.due_wall(now_ms)
        if not due:
            return _NOTHING
        ctx = Context(task, "", task.id.partition, RecordColumns([], [], [], [], []))
        token = CURRENT_TASK.set(task)
        try:
            while due:  # a timer may schedule one that is due already
                for timer in due:
                    await timer.callback(ctx, now_ms)
                due = task.timers.due_wall(now_ms)
        finally:
            CURRENT_TASK.reset(token)
        return self._outcome(ctx)

    def _outcome(self, ctx: Context, started: float = 0.0) -> Outcome:
        writes: dict[tuple[str, int], list[OutRecords]] = {}
        for sink, batches in ctx.outputs.items():
            assert isinstance(sink, SinkStep)
            self._place(sink, batches, ctx, writes)
        if ctx.dead_letters:
            self._place_dead_letters(ctx, writes)
        merged = [Write(topic, p, _concat(parts)) for (topic, p), parts in writes.items()]
        return Outcome(merged, ctx.skipped, len(ctx.dead_letters), ctx.late, started)

    def _place(
        self,
        sink: SinkStep,
        batches: list[Batch],
        ctx: Context,
        writes: dict[tuple[str, int], list[OutRecords]],
    ) -> None:
        values, keys, origins, decoded = _serialise(sink, batches, ctx, self._key_bytes)
        if not values:
            return
        event_time_fn = self._event_time_fns.get(sink.node.id)
        sink.counts.records_out += len(values)
        dedupe = sink.node.params.get("dedupe")
        if dedupe and len(batches) > 1:
            # In the order of their rows (stable), so that a repartition topic's records
            # of one source partition follow its offsets (see ``_stateful.py``).
            order = sorted(range(len(origins)), key=origins.__getitem__)
            values = [values[i] for i in order]
            keys = [keys[i] for i in order]
            origins = [origins[i] for i in order]
        records = ctx.records
        timestamps = list(map(records.timestamps.__getitem__, origins))
        headers: list[Headers] | None = None
        if any(records.headers):
            found = list(map(records.headers.__getitem__, origins))
            if any(found):  # emitted rows have none: results of a step need no copying
                headers = [user_headers(h) if h else h for h in found]
                if not any(headers):
                    headers = None
        offsets = records.offsets
        if ctx.sources is not None:  # emitted rows: each names its own source
            out = _with_sources(
                ctx,
                values=values,
                keys=keys,
                timestamps=timestamps,
                origins=origins,
                headers=headers,
            )
        elif isinstance(offsets, range):  # lineage: the first offset plus each origin
            prefix = source_prefix(ctx.topic, ctx.partition)
            out = OutRecords(values, keys, timestamps, prefix, origins, headers, offsets.start)
        else:
            prefix = source_prefix(ctx.topic, ctx.partition)
            sources = list(map(offsets.__getitem__, origins))
            out = OutRecords(values, keys, timestamps, prefix, sources, headers)
        if dedupe and len(set(origins)) < len(origins):
            out = out._replace(sequence=_sequence(origins))
        if event_time_fn is not None and decoded is not None:
            try:  # the window's function; if it fails, the window calls it (and says so)
                times = event_times(list(map(event_time_fn, decoded)))
            except Exception:
                times = None
            if times is not None:
                out = out._replace(event_times=times)
        count = sink.partitions
        default = ctx.partition % count
        if count == 1 or all_none(keys):
            writes.setdefault((sink.topic, default), []).append(out)
            return
        rows = partition_rows(keys, count, default)
        if len(rows) == 1:
            writes.setdefault((sink.topic, next(iter(rows))), []).append(out)
            return
        for p in sorted(rows):  # each partition's records in their order, one pass each
            writes.setdefault((sink.topic, p), []).append(_take(out, rows[p]))

    def _place_dead_letters(
        self, ctx: Context, writes: dict[tuple[str, int], list[OutRecords]]
    ) -> None:
        by_topic: dict[str, list[tuple[Record, Headers, bytes]]] = {}
        for letter in ctx.dead_letters:
            topic = letter.node.dead_letter_topic
            assert topic is not None
            record = ctx.records[letter.origin]
            where = ctx.source(letter.origin)
            error = letter.error
            location = user_frame(error) or ""
            headers = (
                *user_headers(record.headers),
                (ERROR_OPERATOR, letter.node.label.encode()),
                (ERROR_TYPE, type(error).__name__.encode()),
                (ERROR_MESSAGE, describe_exception(error).encode()[:4096]),
                (ERROR_LOCATION, location.encode()[:1024]),
            )
            prefix = source_prefix(where.topic, where.partition)
            by_topic.setdefault(topic, []).append((record, headers, prefix))
        for topic, letters in by_topic.items():
            prefixes = [prefix for _, _, prefix in letters]
            shared = all(p == prefixes[0] for p in prefixes)
            out = OutRecords(
                [r.value for r, _, _ in letters],
                [r.key for r, _, _ in letters],
                [r.timestamp for r, _, _ in letters],
                prefixes[0],
                [r.offset for r, _, _ in letters],
                [h for _, h, _ in letters],
                0,
                None if shared else prefixes,
            )
            partition = ctx.partition % self._partitions[topic]
            writes.setdefault((topic, partition), []).append(out)


def _serialise(
    sink: SinkStep, batches: list[Batch], ctx: Context, key_bytes: dict[str | int, bytes]
) -> tuple[list[bytes | None], list[bytes | None], list[int], list[Any] | None]:
    """Return the values, keys and origins ``sink`` writes, serialised; a value or key
    whose serialisation fails is left out under its node's policy (the sink's for
    values, the ``key_by``'s for keys). Last, when one batch reached the sink and its
    values are written as the rows' stored bytes (``_stored_values``), the values
    themselves (what decoding those bytes gives), else None."""
    values: list[bytes | None] = []
    keys: list[bytes | None] = []
    origins: list[int] = []
    stored = ctx.records.keys
    decoded: list[Any] | None = None
    for batch in batches:
        key_node = batch.key_node
        if batch.keys is not None and key_node is not None:
            encoded, batch = _serialise_keys(key_node, batch, ctx, key_bytes)
            out = _stored_values(sink, batch, ctx)
            if out is not None:
                decoded = batch.values
            else:
                out = serialize_all(sink.serde, batch.values)
                if out is None:
                    serialise = batch_serializer(sink.serde, batch.values)
                    out, batch = apply_each(
                        sink.node, serialise, Batch(batch.values, batch.origins, encoded), ctx
                    )
                    assert batch.keys is not None
                    encoded = batch.keys
            batch_keys: list[Any] = encoded
        else:
            out = _stored_values(sink, batch, ctx)
            if out is not None:
                decoded = batch.values
            else:
                out = serialize_all(sink.serde, batch.values)
                if out is None:
                    out, batch = apply_each(
                        sink.node, batch_serializer(sink.serde, batch.values), batch, ctx
                    )
            batch_keys = list(map(stored.__getitem__, batch.origins))
        if len(batches) == 1:
            return out, batch_keys, batch.origins, decoded
        values.extend(out)
        keys.extend(batch_keys)
        origins.extend(batch.origins)
    return values, keys, origins, None


#: The serdes whose encoding of a value they decoded decodes to that value again.
_ROUND_TRIPS = {JsonSerde, StrSerde, BytesSerde}


def _stored_values(sink: SinkStep, batch: Batch, ctx: Context) -> list[bytes | None] | None:
    """Return the values a repartition topic's sink writes as the rows' stored bytes,
    when the values are still what the sink's serde decoded from them (see ``Batch``),
    else None: they are encoded anew. Decoding the stored bytes again gives the same
    values, so what reads the topic sees no difference; outputs a user reads are always
    encoded anew."""
    serde = sink.serde
    if batch.read_as is not serde or sink.node.kind != "through" or type(serde) not in _ROUND_TRIPS:
        return None
    stored = list(map(ctx.records.values.__getitem__, batch.origins))
    return stored if all(stored) else None  # JSON writes a missing value as null


def _event_time_fn(graph: Graph, node: Node) -> Callable[[Any], Any] | None:
    """Return the timestamp function of the tumbling window that alone reads repartition
    sink ``node``'s topic, when its event times can be handed to it (see
    ``_handoff.py``), else None: the sink's values must be the very objects its source
    decoded, seen by no other step (from the source down, every node has one child and
    is a ``filter`` or a ``key_by``, which pass their values on unchanged), so that the
    function gives what it gives the window for the values decoded again."""
    if node.kind != "through" or type(node.params["serde"]) is not JsonSerde:
        return None
    readers = graph.children(node)
    windows = graph.children(readers[0]) if len(readers) == 1 else []
    if len(windows) != 1 or windows[0].kind != "window_aggregate":
        return None
    window = windows[0].params
    if type(window["windows"]) is not TumblingWindows or window["timestamp"] is None:
        return None
    current = node
    while len(current.parents) == 1:
        (parent,) = current.parents
        if len(graph.children(parent)) != 1:
            return None
        if parent.is_source:
            return window["timestamp"]  # type: ignore[no-any-return]
        if parent.kind not in _PASSING:
            return None
        current = parent
    return None


#: The kinds of node that pass on the values they are given, unchanged (as objects).
_PASSING = {"filter", "key_by"}


def _serialise_keys(
    key_node: Node, batch: Batch, ctx: Context, cache: dict[str | int, bytes]
) -> tuple[list[Any], Batch]:
    key_serde = key_node.params["key_serde"]
    keys = batch.keys
    assert keys is not None
    # Canonical JSON of text and integer keys is orjson's own output: cut from one
    # encoding of the whole list, or looked up in ``cache`` (``int`` and ``str`` keys
    # never compare equal, and bools are left out).
    if type(key_serde) is JsonKeySerde and set(map(type, keys)) <= _PLAIN_KEYS:
        each = _json_each(keys)
        if each is not None:
            return each, batch
        try:
            return list(map(cache.__getitem__, keys)), batch
        except KeyError:  # keys not seen yet
            if len(cache) > _KEY_CACHE_LIMIT:
                cache.clear()
            cache.update({key: canonical_key(key) for key in set(keys).difference(cache)})
            return list(map(cache.__getitem__, keys)), batch
    return apply_each(key_node, key_serde.serialize, batch, ctx, keys)


_PLAIN_KEYS = {str, int}


def _json_each(keys: list[Any]) -> list[bytes] | None:
    """Return orjson's encoding of each of ``keys`` (texts and integers), cut from its
    encoding of the list; None when a key holds a comma (or does not encode: an integer
    past 64 bits). The list's text is its elements' texts joined by commas, so when it
    holds one comma fewer than there are keys, every comma is a separator: one C call
    and one split instead of a call or a lookup per key."""
    try:
        joined = orjson.dumps(keys)
    except orjson.JSONEncodeError:
        return None
    if joined.count(b",") != len(keys) - 1:
        return None
    return joined[1:-1].split(b",")


def _with_sources(
    ctx: Context,
    *,
    values: list[bytes | None],
    keys: list[bytes | None],
    timestamps: list[int],
    origins: list[int],
    headers: list[Headers] | None,
) -> OutRecords:
    """Return records whose rows name their own sources (see ``Context.add_rows``)."""
    assert ctx.sources is not None
    prefixes: dict[tuple[str, int], bytes] = {}
    row_prefixes = []
    for origin in origins:
        where = ctx.sources[origin]
        prefix = prefixes.get(where)
        if prefix is None:
            prefix = prefixes[where] = source_prefix(*where)
        row_prefixes.append(prefix)
    offsets = [ctx.records.offsets[o] for o in origins]
    shared = len(prefixes) == 1
    return OutRecords(
        values,
        keys,
        timestamps,
        row_prefixes[0],
        offsets,
        headers,
        0,
        None if shared else row_prefixes,
    )


def _sequence(origins: list[int]) -> list[int]:
    """Return each record's number among the records of its row (0, 1, ...)."""
    seen: dict[int, int] = {}
    numbers = []
    for origin in origins:
        n = seen.get(origin, 0)
        numbers.append(n)
        seen[origin] = n + 1
    return numbers


def _take(out: OutRecords, rows: list[int]) -> OutRecords:
    """Return records ``rows`` (indexes, in the order given) of ``out``."""
    optional = (out.headers, out.prefixes, out.sequence, out.event_times)
    present = tuple(column for column in optional if column is not None)
    taken = iter(
        take_rows((out.values, out.keys, out.timestamps, out.source_offsets, *present), rows)
    )
    values, keys, timestamps, offsets = next(taken), next(taken), next(taken), next(taken)
    headers, prefixes, sequence, times = (
        None if column is None else next(taken) for column in optional
    )
    return OutRecords(
        values, keys, timestamps, out.source, offsets, headers, out.source_base, prefixes,
        sequence, times,
    )  # fmt: skip


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
    prefixes: list[bytes] | None = None
    source = parts[0].source
    if any(p.prefixes is not None or p.source != source for p in parts):
        prefixes = []
        for p in parts:
            prefixes.extend(
                p.prefixes if p.prefixes is not None else repeat(p.source, len(p.values))
            )
    sequence: list[int] | None = None
    if any(p.sequence is not None for p in parts):
        sequence = []
        for p in parts:
            sequence.extend(p.sequence if p.sequence is not None else repeat(0, len(p.values)))
    times: list[int] | None = None
    if all(p.event_times is not None for p in parts):
        times = [t for p in parts for t in p.event_times]  # type: ignore[union-attr]
    return OutRecords(
        [v for p in parts for v in p.values],
        [k for p in parts for k in p.keys],
        [t for p in parts for t in p.timestamps],
        source,
        offsets,
        headers,
        base,
        prefixes,
        sequence,
        times,
    )
