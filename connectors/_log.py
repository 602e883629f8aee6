"""The log as a connector uses it: create a topic, append many records at once.

A connector never writes record by record. :class:`ConnectorLog` takes a whole request's
or a whole read chunk's records as columns (values, and optionally keys and header
columns) and returns once every one of them is durable under the topic's policy.

:class:`StoreLog` implements it over a :class:`~headwater.store.Store` in this process.
An append encodes each partition's share of the records as one v2 batch with the store's
column encoder (:func:`~headwater.store.encode_columns`, one pass in C where the store
was built with its speedups), cut into several batches where one would exceed the
topic's ``max_message_bytes``; it writes every batch first and then waits once per
partition for durability, so all of them share the group commit's fsyncs. Unkeyed
records go to one partition per append (Kafka's sticky partitioner), keyed ones to their
murmur2 partition, as a Java producer would place them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import repeat
from typing import Protocol

import anyio

from headwater.store import (
    DecimalColumn,
    Partition,
    RecordTooLargeError,
    StickyPartitioner,
    Store,
    TopicConfig,
    TopicExistsError,
    encode_columns,
    partition_for_key,
)

#: What a batch of one record adds to its value: the batch header and the record's
#: framing, with room for a short key.
RECORD_ALLOWANCE_BYTES = 256

#: A header column: a name, and one value per record (or a decimal column).
HeaderColumn = tuple[str, Sequence[bytes | None] | DecimalColumn]


@dataclass(frozen=True, slots=True)
class Appended:
    """Where an append put its records.

    ``runs`` holds, per partition written, ``(partition, base_offset, indexes)``: the
    records at ``indexes`` (positions in the append's input; ``None`` for all of them,
    in order) got consecutive offsets from ``base_offset``.
    """

    count: int
    runs: tuple[tuple[int, int, Sequence[int] | None], ...]

    def offsets(self) -> list[tuple[int, int]]:
        """Return ``(partition, offset)`` of each record, in input order."""
        if len(self.runs) == 1 and self.runs[0][2] is None:
            partition, base, _ = self.runs[0]
            offsets = range(base, base + self.count)
            return list(zip(repeat(partition, self.count), offsets, strict=True))
        out: list[tuple[int, int]] = [(0, 0)] * self.count
        for partition, base, indexes in self.runs:
            for delta, i in enumerate(range(self.count) if indexes is None else indexes):
                out[i] = (partition, base + delta)
        return out


class ConnectorLog(Protocol):
    """What a connector needs of the log. Used from one event loop."""

    async def has_topic(self, topic: str) -> bool:
        """Whether ``topic`` exists."""
        ...

    async def ensure_topic(self, topic: str) -> None:
        """Create ``topic`` with the log's defaults unless it exists."""
        ...

    async def max_record_bytes(self, topic: str) -> int:
        """Return the longest value one record of ``topic`` may have (key and headers aside).

        :raises TopicNotFoundError: if there is no such topic.
        """
        ...

    async def append(
        self,
        topic: str,
        values: Sequence[bytes | None],
        *,
        keys: Sequence[bytes | None] | None = None,
        header_columns: Sequence[HeaderColumn] = (),
    ) -> Appended:
        """Append records given as columns; return once all are durable.

        :raises TopicNotFoundError: if ``topic`` does not exist.
        :raises RecordTooLargeError: if one record alone exceeds the topic's limit.
        :raises LogUnavailableError: if the log cannot take records now (a broker out of
            reach); some of them may have been appended.
        """
        ...


class StoreLog:
    """A :class:`ConnectorLog` over a store in this process.

    :param store: the open store.
    :param topic_config: the config of topics this log creates (the store's default
        when ``None``).
    """

    def __init__(self, store: Store, *, topic_config: TopicConfig | None = None) -> None:
        self.store = store
        self.topic_config = topic_config
        self._sticky = StickyPartitioner()

    async def has_topic(self, topic: str) -> bool:
        """Whether ``topic`` exists in the store."""
        return self.store.has_topic(topic)

    async def ensure_topic(self, topic: str) -> None:
        """Create ``topic`` unless it exists (a concurrent creation is not an error)."""
        if self.store.has_topic(topic):
            return
        try:
            await self.store.create_topic(topic, self.topic_config)
        except TopicExistsError:
            if not self.store.has_topic(topic):  # a name in the way, not our topic
                raise

    async def max_record_bytes(self, topic: str) -> int:
        """Return the longest value a record alone in a batch of ``topic`` may have.

        :raises TopicNotFoundError: if there is no such topic.
        """
        return self.store.topic_config(topic).max_message_bytes - RECORD_ALLOWANCE_BYTES

    async def append(
        self,
        topic: str,
        values: Sequence[bytes | None],
        *,
        keys: Sequence[bytes | None] | None = None,
        header_columns: Sequence[HeaderColumn] = (),
    ) -> Appended:
        """Append records given as columns; return once all are durable (see the module)."""
        count = len(values)
        if not count:
            return Appended(0, ())
        partitions = self.store.partitions(topic)
        if keys is None or keys.count(None) == count:
            chosen = self._sticky.partition(topic, len(partitions))
            self._sticky.batch_complete(topic, chosen, len(partitions))
            groups: dict[int, list[int] | None] = {chosen: None}
            keys = None
        else:
            groups = _group_by_key(keys, len(partitions), self._sticky, topic)
        # Everything is encoded before anything is written, so that a record too large
        # for its topic leaves the log unchanged.
        encoded = [
            (
                index,
                indexes,
                _encode(
                    _take(values, indexes),
                    None if keys is None else _take(keys, indexes),
                    [(name, _take_column(column, indexes)) for name, column in header_columns],
                    partitions[index].config.max_message_bytes,
                ),
            )
            for index, indexes in groups.items()
        ]
        runs = []
        written: list[tuple[Partition, int]] = []
        for index, indexes, batches in encoded:
            partition = partitions[index]
            base = partition.log_end_offset
            # No await between the writes: the offsets of one partition stay consecutive.
            for batch in batches:
                partition.append_batch_nowait(batch)
            runs.append((index, base, indexes))
            written.append((partition, partition.log_end_offset))
        if len(written) == 1:
            await written[0][0].wait_durable(written[0][1])
        else:
            await _wait_durable_all(written)
        return Appended(count, tuple(runs))


async def _wait_durable_all(written: list[tuple[Partition, int]]) -> None:
    """Wait until every partition is durable up to its end; raise the first failure as
    itself (a caller catches a full disk as such, not inside a task group's exception)."""
    failures: list[Exception] = []

    async def wait(partition: Partition, end: int) -> None:
        try:
            await partition.wait_durable(end)
        except Exception as exc:  # raised below, once every wait is over
            failures.append(exc)

    async with anyio.create_task_group() as tg:
        for partition, end in written:
            tg.start_soon(wait, partition, end)
    if failures:
        raise failures[0]


def _group_by_key(
    keys: Sequence[bytes | None], count: int, sticky: StickyPartitioner, topic: str
) -> dict[int, list[int] | None]:
    groups: dict[int, list[int] | None] = {}
    unkeyed = None
    for i, key in enumerate(keys):
        if key is None:
            if unkeyed is None:
                unkeyed = sticky.partition(topic, count)
            p = unkeyed
        else:
            p = partition_for_key(key, count)
        found = groups.get(p)
        if found is None:
            groups[p] = [i]
        else:
            found.append(i)
    if unkeyed is not None:
        sticky.batch_complete(topic, unkeyed, count)
    if len(groups) == 1:
        ((p, _),) = groups.items()
        return {p: None}
    return groups


def _take(column: Sequence[bytes | None], indexes: list[int] | None) -> Sequence[bytes | None]:
    return column if indexes is None else [column[i] for i in indexes]


def _take_column(
    column: Sequence[bytes | None] | DecimalColumn, indexes: list[int] | None
) -> Sequence[bytes | None] | DecimalColumn:
    if indexes is None:
        return column
    if isinstance(column, DecimalColumn):
        return DecimalColumn(column.prefix, [column.numbers[i] for i in indexes], column.base)
    return [column[i] for i in indexes]


def _slice_column(
    column: Sequence[bytes | None] | DecimalColumn, start: int, stop: int
) -> Sequence[bytes | None] | DecimalColumn:
    if isinstance(column, DecimalColumn):
        return DecimalColumn(column.prefix, column.numbers[start:stop], column.base)
    return column[start:stop]


def _encode(
    values: Sequence[bytes | None],
    keys: Sequence[bytes | None] | None,
    header_columns: list[HeaderColumn],
    max_bytes: int,
) -> list[bytes]:
    """Encode records as batches of at most ``max_bytes`` each (one when they fit)."""
    batch = encode_columns(values, keys=keys, header_columns=header_columns)
    if len(batch) <= max_bytes:
        return [batch]
    count = len(values)
    if count == 1:
        raise RecordTooLargeError(
            f"a record of {len(batch)} bytes exceeds the topic's max_message_bytes={max_bytes}"
        )
    # Cut by count in proportion to the size, a little short so that most pieces fit at
    # the first try; a piece that still does not fit is cut again.
    pieces = math.ceil(len(batch) / max_bytes * 1.1)
    step = max(1, count // pieces)
    out = []
    for start in range(0, count, step):
        stop = min(start + step, count)
        out.extend(
            _encode(
                values[start:stop],
                None if keys is None else keys[start:stop],
                [(name, _slice_column(column, start, stop)) for name, column in header_columns],
                max_bytes,
            )
        )
    return out
