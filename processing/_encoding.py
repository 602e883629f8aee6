"""Derived records on their way out: columns, and their encoding as one record batch.

The runtime keeps what a batch of input produced for one output partition as columns
(:class:`OutRecords`): values, keys, timestamps, and the source offsets that make each
record's lineage header. The store's :func:`~headwater.store.encode_columns` lays such
columns out as one v2 batch in a single pass (in C when the store was built with its
speedups), with the lineage as a header column every record carries (its values the
source prefix and each source offset in decimal), so no per-record headers are built.
A transactional writer's batches also carry its producer id, epoch and each batch's
first sequence number (:class:`ProducerStamp`), in the same pass. Pure functions, safe
from any thread.
"""

from __future__ import annotations

from itertools import repeat
from typing import NamedTuple

from headwater.store import DecimalColumn, encode_columns

from ._lineage import SEQUENCE_HEADER, SOURCE_HEADER, Headers

#: Sequence numbers wrap from 2**31 - 1 to 0 (Kafka's).
_SEQUENCE_SPAN = 1 << 31


class ProducerStamp(NamedTuple):
    """What makes a batch a transactional producer's: its id, its epoch, and the sequence
    number of the batch's first record (the next ones follow)."""

    producer_id: int
    producer_epoch: int
    base_sequence: int

    def after(self, count: int) -> ProducerStamp:
        """Return the stamp of the batch that follows one of ``count`` records."""
        return self._replace(base_sequence=(self.base_sequence + count) % _SEQUENCE_SPAN)


class OutRecords(NamedTuple):
    """Records to write, as columns of equal length, all derived from one source partition.

    ``source`` is that partition as a ``headwater.source`` prefix (``b"clicks/0/"``, see
    :func:`~headwater.processing._lineage.source_prefix`) and ``source_base +
    source_offsets[i]`` the offset record ``i`` came from (the runtime passes the
    record's index in its input batch and the batch's first offset, which needs no new
    int per record): together they make the lineage header. ``headers`` holds each
    record's other headers (None: none has any). Records that came from different
    partitions (results a task emitted on its own, covering inputs of several of its
    partitions) give each record's prefix in ``prefixes`` instead (``source`` is then
    unused); their lineage column is then built record by record, which costs more, so
    the common case keeps one prefix. ``sequence`` (None: none) numbers the records
    that came from one source record, written as the ``headwater.seq`` header (see
    ``_lineage.py``): only a repartition topic's records carry it, and only when some
    source record made several of them. ``event_times`` (None: not known) holds each
    record's event time for the window that reads a repartition topic, for a backend
    that hands them to that reader in this process (see ``_handoff.py``).
    """

    values: list[bytes | None]
    keys: list[bytes | None]
    timestamps: list[int]
    source: bytes
    source_offsets: list[int]
    headers: list[Headers] | None = None
    source_base: int = 0
    prefixes: list[bytes] | None = None
    sequence: list[int] | None = None
    event_times: list[int] | None = None

    def count(self) -> int:  # type: ignore[override]
        """Return how many records there are."""
        return len(self.values)

    def slice(self, start: int, stop: int) -> OutRecords:
        """Return records ``start`` to ``stop`` (exclusive)."""
        return OutRecords(
            self.values[start:stop],
            self.keys[start:stop],
            self.timestamps[start:stop],
            self.source,
            self.source_offsets[start:stop],
            None if self.headers is None else self.headers[start:stop],
            self.source_base,
            None if self.prefixes is None else self.prefixes[start:stop],
            None if self.sequence is None else self.sequence[start:stop],
            None if self.event_times is None else self.event_times[start:stop],
        )

    def lineage(self) -> list[bytes]:
        """Return each record's ``headwater.source`` header value."""
        if self.prefixes is not None:
            base = self.source_base
            return [
                b"%s%d" % (prefix, base + offset)
                for prefix, offset in zip(self.prefixes, self.source_offsets, strict=True)
            ]
        return self.lineage_column().expand()

    def lineage_column(self) -> DecimalColumn:
        """Return the ``headwater.source`` values as a column for the store's encoder."""
        return DecimalColumn(self.source, self.source_offsets, self.source_base)

    def all_headers(self) -> list[Headers]:
        """Return each record's headers, the lineage header first (for other backends)."""
        extra = self.headers if self.headers is not None else repeat(())
        if self.sequence is not None:
            return [
                ((SOURCE_HEADER, source), (SEQUENCE_HEADER, b"%d" % seq), *rest)
                for source, seq, rest in zip(self.lineage(), self.sequence, extra, strict=False)
            ]
        return [
            ((SOURCE_HEADER, source), *rest)
            for source, rest in zip(self.lineage(), extra, strict=False)
        ]


def encode_out_records(
    records: OutRecords, *, base_offset: int = 0, producer: ProducerStamp | None = None
) -> bytes:
    """Encode ``records`` (at least one) as one uncompressed v2 batch, CRC included.

    Timestamps are create times; offset deltas run from 0. With ``producer``, the batch
    belongs to that producer's open transaction.

    :raises ValueError: if there are no records.
    """
    keys = records.keys
    lineage: list[bytes] | DecimalColumn = (
        records.lineage() if records.prefixes is not None else records.lineage_column()
    )
    columns: tuple[tuple[str, list[bytes] | DecimalColumn], ...] = ((SOURCE_HEADER, lineage),)
    if records.sequence is not None:
        columns += ((SEQUENCE_HEADER, DecimalColumn(b"", records.sequence)),)
    producer_id, producer_epoch, base_sequence = producer or (-1, -1, -1)
    return encode_columns(
        records.values,
        keys=None if not keys or all_none(keys) else keys,
        timestamps=records.timestamps,
        header_columns=columns,
        headers=records.headers,
        base_offset=base_offset,
        producer_id=producer_id,
        producer_epoch=producer_epoch,
        base_sequence=base_sequence,
        transactional=producer is not None,
    )


def all_none(keys: list[bytes | None]) -> bool:
    """Return whether every one of ``keys`` (at least one) is None: the first decides
    most lists at once (comparing a key with None costs about 25 ns)."""
    return keys[0] is None and keys.count(None) == len(keys)


def encode_within(
    records: OutRecords, limit: int, producer: ProducerStamp | None = None
) -> list[bytes]:
    """Encode ``records`` as one batch, or as several (in order) if one would exceed
    ``limit`` bytes; a single record larger than ``limit`` stays a batch of its own, for
    the store to refuse. Encoding first and splitting only what turns out too big costs
    nothing in the common case, where a batch's outputs fit one append. With
    ``producer``, the batches are that producer's, numbered on from its sequence."""
    batch = encode_out_records(records, producer=producer)
    count = records.count()
    if len(batch) <= limit or count == 1:
        return [batch]
    half = count // 2
    return encode_within(records.slice(0, half), limit, producer) + encode_within(
        records.slice(half, count), limit, None if producer is None else producer.after(half)
    )
