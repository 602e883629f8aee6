"""Records from librdkafka as columns: chunks of one partition, and batches cut from them.

Pure: no client, no I/O. ``consume`` returns messages of many partitions interleaved;
:func:`split_messages` cuts them into :class:`Chunk` runs per partition (one pass, a few
list appends per record), and :func:`columns` joins the chunks a fetch takes into the
:class:`~headwater.store.RecordColumns` the runtime reads, with a ``range`` of offsets
when they are consecutive (as they are unless compaction or transaction markers left
gaps), as the store's own reader gives.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass

import confluent_kafka as ck

from headwater.groups import TopicPartition
from headwater.store import RecordColumns

Headers = tuple[tuple[str, bytes | None], ...]


@dataclass(slots=True)
class Chunk:
    """Consecutive records of one partition, as columns; ``size`` counts value bytes."""

    offsets: list[int]
    timestamps: list[int]
    keys: list[bytes | None]
    values: list[bytes | None]
    headers: list[Headers]
    size: int

    def slice(self, start: int, stop: int) -> Chunk:
        """Return records ``start`` to ``stop`` (indexes, exclusive)."""
        values = self.values[start:stop]
        return Chunk(
            self.offsets[start:stop],
            self.timestamps[start:stop],
            self.keys[start:stop],
            values,
            self.headers[start:stop],
            sum(len(v) for v in values if v),
        )

    def drop_before(self, offset: int) -> Chunk | None:
        """Return the records at or after ``offset`` (None: none is)."""
        if self.offsets[0] >= offset:
            return self
        if self.offsets[-1] < offset:
            return None
        return self.slice(bisect.bisect_left(self.offsets, offset), len(self.offsets))

    def split_at_bytes(self, max_bytes: int) -> tuple[Chunk, Chunk | None]:
        """Return the first records that fit ``max_bytes`` (at least one), and the rest."""
        total = 0
        for index, value in enumerate(self.values):
            total += len(value) if value else 0
            if total > max_bytes and index > 0:
                return self.slice(0, index), self.slice(index, len(self.values))
        return self, None


def split_messages(
    messages: Sequence[ck.Message],
) -> tuple[dict[TopicPartition, list[Chunk]], list[ck.Message]]:
    """Split messages from ``consume`` into chunks per partition (in the order given), and
    the error events among them."""
    chunks: dict[TopicPartition, list[Chunk]] = {}
    errors: list[ck.Message] = []
    current = Chunk([], [], [], [], [], 0)
    current_tp: tuple[str | None, int | None] | None = None
    for m in messages:
        if m.error() is not None:
            errors.append(m)
            current_tp = None
            continue
        tp = (m.topic(), m.partition())
        if tp != current_tp:
            current = Chunk([], [], [], [], [], 0)
            chunks.setdefault(TopicPartition(*tp), []).append(current)  # type: ignore[arg-type]
            current_tp = tp
        value = m.value()
        headers = m.headers()
        current.offsets.append(m.offset())  # type: ignore[arg-type]
        current.timestamps.append(m.timestamp()[1])
        current.keys.append(m.key())
        current.values.append(value)
        # A consumed message's headers are a list of (str, bytes | None) pairs.
        current.headers.append(tuple(headers) if headers else ())  # type: ignore[arg-type]
        current.size += len(value) if value else 0
    return chunks, errors


def columns(chunks: Sequence[Chunk]) -> RecordColumns:
    """Return ``chunks`` (of one partition, in offset order, at least one record) as
    columns."""
    if len(chunks) == 1:
        c = chunks[0]
        offsets, timestamps, keys, values, headers = (
            c.offsets, c.timestamps, c.keys, c.values, c.headers
        )  # fmt: skip
    else:
        offsets, timestamps, keys, values, headers = [], [], [], [], []
        for c in chunks:
            offsets += c.offsets
            timestamps += c.timestamps
            keys += c.keys
            values += c.values
            headers += c.headers
    first, last = offsets[0], offsets[-1]
    consecutive = last - first + 1 == len(offsets)
    return RecordColumns(
        range(first, last + 1) if consecutive else offsets, timestamps, keys, values, headers
    )
