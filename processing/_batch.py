"""Values in flight: a batch of them as columns, and the context of the batch being processed.

Theory of operation
-------------------
A partition task reads a batch of records and hands it to its pipeline, which pushes a
:class:`Batch` through the task's steps. A batch is columns, never a list of record
objects: ``values``, the ``origins`` (each value's row in the :class:`Context`, which
gives its source record: timestamp, headers, offset) and, after a ``key_by``, ``keys``:
the user's own key objects, serialised once, at the sink, by the key serde of the
``key_by`` that made them (``key_node``). Keys read back from a repartition topic stay
bytes in the rows (``keys`` is None) until a step asks for the objects
(:meth:`Batch.key_objects`): most steps after a repartition only need the bytes, which a
sink writes as they are. A batch is never changed in place, so fanning one out to
several children needs no copies.

A batch also knows whether its values are still what its source's serde decoded from
the rows' stored values (``read_as``: that serde; None once a step made values of its
own): only ``filter``, ``key_by`` or ``branch`` ran since the source. A repartition
topic's sink then writes the stored bytes again instead of encoding each value anew, so
a function given to those steps must not change the value it is given (``peek`` may:
it passes on a batch of values of its own). A source whose only step is a tumbling
window, given the rows' event times (``Context.event_times``, see ``_handoff.py``),
passes the stored bytes on undecoded (``encoded_by``: the source node): the window
decodes only the records it keeps (:meth:`Batch.decoded`), not the late ones.

The rows of a context are the input batch's records; a step that emits a value of its
own (a timer firing, a result of many inputs) first adds a row with
:meth:`Context.add_rows`: its timestamp, headers and lineage (the input it covers, which
may have been read from another partition of the task, or in an earlier batch). Sinks
then treat emitted rows exactly like read ones. A context with no emitted rows costs
nothing extra: lineage is the input batch's partition plus each row's offset.

A user function that raises stops the ``map`` after the values before it;
:func:`apply_each` keeps those, applies the node's error policy to the failing value's
source row (raise: :class:`OperatorError`; skip: count and log; dead letter: remembered
in the context and written with the outputs), and carries on after it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from itertools import compress, islice
from typing import TYPE_CHECKING, Any, Generic, NamedTuple, TypeVar

from headwater.store import RecordColumns

from ._errors import ErrorPolicy, OperatorError, describe_exception, user_frame
from ._lineage import Headers, SourcePosition
from ._serde import batch_deserializer

if TYPE_CHECKING:
    from ._graph import Node
    from ._tasks import Task

logger = logging.getLogger("headwater.processing")

T = TypeVar("T")

_FAILED = object()
# Indexes 0, 1, 2, ... as shared int objects: a batch's origins are a slice of this list,
# so a batch of up to this many records allocates no int per record (beyond 256, every
# int is an object of its own).
_INDEXES = list(range(1 << 15))


def indexes(count: int) -> list[int]:
    """Return ``[0, 1, ..., count - 1]`` (shared int objects where possible)."""
    return _INDEXES[:count] if count <= len(_INDEXES) else list(range(count))


class Event(NamedTuple, Generic[T]):
    """A value with the metadata of the record it came from (see :meth:`Stream.with_metadata`).

    ``key`` is the key as the user gave it to ``key_by`` (any object), else the record's
    stored key bytes; ``timestamp`` is in epoch ms; ``topic``, ``partition`` and
    ``offset`` say where the source record was read.
    """

    value: T
    key: Any
    timestamp: int
    headers: Headers
    topic: str
    partition: int
    offset: int


class Batch:
    """Values in flight, as columns: see the module docstring."""

    __slots__ = ("encoded_by", "key_node", "keys", "origins", "read_as", "values")

    def __init__(
        self,
        values: list[Any],
        origins: list[int],
        keys: list[Any] | None = None,
        key_node: Node | None = None,
        read_as: object = None,
        *,
        encoded_by: Node | None = None,
    ):
        self.values = values
        self.origins = origins
        self.keys = keys
        self.key_node = key_node
        self.read_as = read_as
        #: The source node whose serde decodes the values, while they are still the
        #: stored bytes (see the module docstring); None once they are decoded.
        self.encoded_by = encoded_by

    def __len__(self) -> int:
        return len(self.values)

    def key_objects(self, records: RecordColumns) -> list[Any]:
        """Return each record's key: its typed one after a ``key_by`` (or read back from a
        repartition topic, decoded now by the key serde of its ``key_by``), else the
        stored bytes."""
        if self.keys is not None:
            return self.keys
        stored = list(map(records.keys.__getitem__, self.origins))
        node = self.key_node
        serde = None if node is None else node.params.get("key_serde")
        if serde is None:
            return stored
        return [None if key is None else serde.deserialize(key) for key in stored]

    def replace(self, values: list[Any]) -> Batch:
        """Return the batch with ``values`` (one per record) instead of its own."""
        return Batch(values, self.origins, self.keys, self.key_node)

    def select(self, mask: Sequence[object]) -> Batch:
        """Return the records whose ``mask`` entry is true."""
        keys = None if self.keys is None else list(compress(self.keys, mask))
        return Batch(
            list(compress(self.values, mask)),
            list(compress(self.origins, mask)),
            keys,
            self.key_node,
            self.read_as,
            encoded_by=self.encoded_by,
        )

    def decoded(self, ctx: Context) -> Batch:
        """Return the batch with its values decoded (itself if they are), without the
        records whose value does not decode (their source node's policy applies)."""
        node = self.encoded_by
        if node is None:
            return self
        decode = batch_deserializer(node.params["serde"], self.values)
        values, batch = apply_each(node, decode, self, ctx)
        return Batch(values, batch.origins, batch.keys, self.key_node, self.read_as)

    def rekeyed(self, keys: list[Any], key_node: Node) -> Batch:
        """Return the batch with ``keys`` (one per record), made by ``key_node``."""
        return Batch(self.values, self.origins, keys, key_node, self.read_as)

    def without(self, failed: Sequence[int]) -> Batch:
        """Return the batch without the records at indexes ``failed``."""
        return self.select(mask_without(len(self.values), failed))


def at_origins(column: Sequence[T], origins: list[int]) -> list[T]:
    """Return the items of ``column`` (one per row) at ``origins``: a copy of the column
    when they are all its rows in order (a batch nothing was dropped from yet, which a
    comparison of two lists in C tells), else one lookup per origin."""
    count = len(origins)
    if count == len(column) and origins == indexes(count):
        return list(column)
    return list(map(column.__getitem__, origins))


def mask_without(count: int, failed: Sequence[int]) -> list[bool]:
    """Return a mask of ``count`` trues, false at the indexes ``failed``."""
    mask = [True] * count
    for i in failed:
        mask[i] = False
    return mask


class DeadLetter:
    """A source row that failed an operator under the ``dead_letter`` policy."""

    __slots__ = ("error", "node", "origin")

    def __init__(self, node: Node, origin: int, error: BaseException) -> None:
        self.node = node
        self.origin = origin
        self.error = error


class Context:
    """One batch being processed by a task: its rows, and what it produced so far.

    ``topic`` and ``partition`` say where the input rows were read (a context of timers
    has none: ``topic`` is empty and ``partition`` is the task's); ``sources`` holds
    each row's (topic, partition) once rows were emitted, else None (all are the input's).
    """

    __slots__ = (
        "dead_letters",
        "dedupe",
        "event_times",
        "late",
        "outputs",
        "partition",
        "read",
        "records",
        "skipped",
        "sources",
        "task",
        "topic",
    )

    def __init__(self, task: Task, topic: str, partition: int, records: RecordColumns) -> None:
        self.task = task
        self.topic = topic
        self.partition = partition
        self.records = records
        #: How many of the rows were read (the rest were emitted by steps).
        self.read = len(records)
        self.sources: list[tuple[str, int]] | None = None
        self.outputs: dict[Any, list[Batch]] = {}
        self.dead_letters: list[DeadLetter] = []
        self.skipped = 0
        #: Records a windowed step dropped as late (their window had closed).
        self.late = 0
        #: Whether the input rows were read from a repartition topic whose records name
        #: their source in offset order (stateful steps drop those applied already).
        self.dedupe = False
        #: The input rows' event times, handed over by the task that wrote them for the
        #: window that reads them (see ``_handoff.py``).
        self.event_times: Sequence[int] | None = None

    def source(self, origin: int) -> SourcePosition:
        """Return where row ``origin`` was read (or, for an emitted row, what it covers)."""
        topic, partition = (
            (self.topic, self.partition) if self.sources is None else self.sources[origin]
        )
        return SourcePosition(topic, partition, self.records.offsets[origin])

    def add_rows(
        self,
        timestamps: Sequence[int],
        lineage: Sequence[SourcePosition],
        headers: Sequence[Headers] | None = None,
    ) -> list[int]:
        """Add rows for values a step emits; return their origins, for a :class:`Batch`.

        Each row has its own timestamp (epoch ms), its lineage (the input record it
        covers: for a result of many inputs, the last) and headers (none by default).
        """
        assert len(lineage) == len(timestamps)
        return self.add_rows_at(
            timestamps, [(p.topic, p.partition) for p in lineage], [p.offset for p in lineage],
            headers,
        )  # fmt: skip

    def add_rows_at(
        self,
        timestamps: Sequence[int],
        places: Sequence[tuple[str, int]],
        offsets: Sequence[int],
        headers: Sequence[Headers] | None = None,
    ) -> list[int]:
        """:meth:`add_rows` with the lineage as columns: each row's (topic, partition)
        and offset (a step emitting many rows builds no position object per row)."""
        count = len(timestamps)
        assert len(places) == count == len(offsets)
        assert headers is None or len(headers) == count
        records = self.records
        first = len(records)
        if self.sources is None:  # the first emitted rows: copy the read ones once
            self.sources = [(self.topic, self.partition)] * first
            records = self.records = RecordColumns(
                list(records.offsets),
                list(records.timestamps),
                list(records.keys),
                list(records.values),
                list(records.headers),
            )
        row_offsets = records.offsets
        assert isinstance(row_offsets, list)
        row_offsets.extend(offsets)
        records.timestamps.extend(timestamps)
        records.keys.extend([None] * count)
        records.values.extend([None] * count)
        records.headers.extend(headers if headers is not None else [()] * count)
        self.sources.extend(places)
        return list(range(first, first + count))

    def fail(self, node: Node, origin: int, error: BaseException) -> None:
        """Apply ``node``'s error policy to the row at index ``origin``.

        :raises OperatorError: under the ``raise`` policy.
        """
        where = self.source(origin)
        counts = self.task.counts.get(node.id)
        if node.policy is ErrorPolicy.RAISE:
            raise OperatorError(
                node.label, where.topic, where.partition, where.offset, error
            ) from (error)
        if node.policy is ErrorPolicy.SKIP:
            self.skipped += 1
            if counts is not None:
                counts.skipped += 1
            frame = user_frame(error)
            logger.warning(
                "skipped %s offset %d: operator %s failed: %s%s",
                f"{where.topic}/{where.partition}",
                where.offset,
                node.label,
                describe_exception(error),
                f" at {frame}" if frame else "",
            )
            return
        if counts is not None:
            counts.dead_lettered += 1
        self.dead_letters.append(DeadLetter(node, origin, error))


def apply_each(
    node: Node,
    fn: Callable[[Any], Any],
    batch: Batch,
    ctx: Context,
    values: list[Any] | None = None,
) -> tuple[list[Any], Batch]:
    """Return ``fn`` of each value (of ``values``, by default the batch's) and the batch,
    both without the records for which ``fn`` raised (handled by ``node``'s policy)."""
    if values is None:
        values = batch.values
    out: list[Any] = []
    try:
        out.extend(map(fn, values))
        return out, batch
    except Exception as error:
        failure: Exception | None = error
    failed: list[int] = []
    while failure is not None:
        i = len(out)
        ctx.fail(node, batch.origins[i], failure)
        failed.append(i)
        out.append(_FAILED)
        failure = None
        try:
            out.extend(map(fn, islice(values, i + 1, None)))
        except Exception as error:
            failure = error
    mask = mask_without(len(out), failed)
    return list(compress(out, mask)), batch.select(mask)
