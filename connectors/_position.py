"""Where a connector stands: a source's durable position, a sink's committed offsets.

The contract every connector keeps, whatever its source or destination:

**Sources** write records into a topic, then their position. A position is a small
document the source alone understands (for files: which file, which byte, which line),
saved under the source's name in a :class:`PositionStore` only after the records it
covers are durable. On restart the source resumes from the saved position. So no input
is lost, and input is written twice only when the process died between a durable append
and the save of the position after it: at most the last batch before the crash (the
*un-checkpointed tail*), never anything before it.

:class:`LogPositionStore` keeps positions in the log itself, like committed offsets: one
record per save in the internal compacted topic ``__connector_positions`` (key: the
source's name, value: the position document), durable before :meth:`save` returns.
Compaction keeps the latest record per name; loading reads the topic once and keeps the
latest of each in memory (one process owns a data directory, so nobody else writes it).
On a Kafka-protocol cluster :class:`~headwater.connectors.KafkaPositionStore` does the same
in the cluster's topic ``headwater-connector-positions``.

**Sinks** read a topic as a consumer group and commit an input offset only once the
destination has accepted every record below it, or the record went to the dead-letter
topic. The commit's metadata string (Kafka's OffsetCommit carries one per partition)
holds what the sink must know to resume exactly: the webhook sink the extent of a batch
it is sending, the file sink the last file it finished. :func:`encode_checkpoint` and
:func:`decode_checkpoint` give that string one format (a compact JSON object).
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

import orjson

from headwater.store import CleanupPolicy, NewRecord, Store, StoreError, TopicConfig

logger = logging.getLogger("headwater.connectors")

#: The internal topic that holds source positions.
POSITIONS_TOPIC = "__connector_positions"
_SEGMENT_BYTES = 8 << 20
_LOAD_BYTES = 1 << 20


class PositionStore(Protocol):
    """Durable source positions, by source name."""

    async def load(self, name: str) -> bytes | None:
        """Return the position last saved under ``name``, or ``None``."""
        ...

    async def save(self, name: str, position: bytes) -> None:
        """Save ``position`` under ``name``; return once it is durable."""
        ...


class LogPositionStore:
    """Source positions in the store's compacted topic ``__connector_positions``.

    The topic is created on first use (one partition, compacted, kept forever, as
    durable as the store's default topic). Concurrency: tasks of the store's event loop.
    """

    def __init__(self, store: Store) -> None:
        self.store = store
        self._table: dict[str, bytes] | None = None

    async def load(self, name: str) -> bytes | None:
        """Return the position last saved under ``name``, or ``None``."""
        table = await self._loaded()
        return table.get(name)

    async def save(self, name: str, position: bytes) -> None:
        """Save ``position`` under ``name``; return once it is durable.

        :raises StoreError: if the store refuses the write (read-only, full, closed).
        """
        table = await self._loaded()
        partition = self.store.partition(POSITIONS_TOPIC, 0)
        await partition.append([NewRecord(position, name.encode())], internal=True)
        table[name] = position

    async def _loaded(self) -> dict[str, bytes]:
        if self._table is not None:
            return self._table
        store = self.store
        if not store.has_topic(POSITIONS_TOPIC):
            if store.read_only:
                raise StoreError(f"{store.path}: the store is read-only; no position can be kept")
            config = TopicConfig(
                partitions=1,
                cleanup_policy=CleanupPolicy.COMPACT,
                durability=store.default_config.durability,
                retention_ms=-1,
                retention_bytes=-1,
                segment_bytes=_SEGMENT_BYTES,
            )
            try:
                await store.create_topic(POSITIONS_TOPIC, config, internal=True)
            except StoreError:
                if not store.has_topic(POSITIONS_TOPIC):  # a concurrent first use made it
                    raise
        table: dict[str, bytes] = {}
        partition = store.partition(POSITIONS_TOPIC, 0)
        position, end = partition.log_start_offset, partition.high_watermark
        while position < end:
            columns = await partition.read_columns(position, _LOAD_BYTES)
            if not len(columns):
                break
            for offset, key, value in zip(
                columns.offsets, columns.keys, columns.values, strict=True
            ):
                if offset >= end or key is None:
                    continue
                name = key.decode(errors="replace")
                if value is None:
                    table.pop(name, None)
                else:
                    table[name] = value
            position = columns.offsets[-1] + 1
        if self._table is None:  # a concurrent first call may have finished first
            self._table = table
        return self._table


def encode_checkpoint(note: dict[str, Any]) -> str:
    """Return a sink's note as commit metadata (compact JSON; empty for no note)."""
    return orjson.dumps(note).decode() if note else ""


def decode_checkpoint(metadata: str) -> dict[str, Any]:
    """Return the note in commit metadata; a note that does not decode is logged and ignored.

    Ignoring one is safe: the note only ever narrows what a sink redelivers.
    """
    if not metadata:
        return {}
    try:
        note = orjson.loads(metadata)
    except orjson.JSONDecodeError:
        note = None
    if not isinstance(note, dict):
        logger.warning("ignored commit metadata that is not a sink checkpoint: %r", metadata)
        return {}
    return note
