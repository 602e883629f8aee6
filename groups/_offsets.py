"""Committed offsets: the records of ``__consumer_offsets`` and the table they build.

Theory of operation
-------------------
A committed offset is one record of the internal compacted topic ``__consumer_offsets``
in the store, encoded with orjson::

    key    ["offset", group, topic, partition]
    value  {"offset": int, "metadata": str, "commit_timestamp": int, "leader_epoch": int|null}
           or no value (a tombstone: the offset was deleted or expired)

Compaction keeps the latest record per key, so the topic holds one record per live
(group, topic, partition) plus tombstones younger than its ``delete_retention_ms``. All of
a group's records go to one partition of the topic (murmur2 of the group id, as keys are
partitioned everywhere), so they stay in the order they were written.

*Loading.* :meth:`OffsetLog.load` reads every partition of the topic from its log start to
its high watermark and applies the records in log order: the latest record per key wins,
a tombstone removes the key. Records of another kind (a key not starting with
``"offset"``) are skipped, leaving room for more record kinds later; records that do not
decode are skipped with a warning, never rewritten.

*Writing.* One commit is one batch (a batch is written whole or cut whole at recovery, so
a commit of several partitions is atomic). The table changes only after the append has
returned, that is once the batch is durable under the topic's durability policy; so a
commit that was acknowledged, or that anybody saw in the table, survives a crash. Appends
of concurrent commits may return in any order, so each table entry keeps the log offset
of the record it came from and an older write never replaces a newer one; while writes
are in flight, removed keys keep their tombstone's log offset for the same reason.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import anyio
import orjson

from headwater.store import (
    CleanupPolicy,
    NewRecord,
    Partition,
    Store,
    StoreError,
    TopicConfig,
    partition_for_key,
)

from ._consumer_protocol import TopicPartition

logger = logging.getLogger("headwater.groups")

#: The internal topic that holds committed offsets.
OFFSETS_TOPIC = "__consumer_offsets"
#: Segment size of the offsets topic: compaction only rewrites inactive segments, and a
#: start-up reads the active one whole, so it is kept small.
OFFSETS_SEGMENT_BYTES = 8 << 20
_LOAD_BYTES = 1 << 20
_KIND = "offset"


@dataclass(frozen=True, slots=True)
class OffsetAndMetadata:
    """A committed offset: the next offset to read, with the committer's metadata.

    ``commit_timestamp`` is the coordinator's clock (epoch milliseconds) when the commit
    was stored; a value passed in by a committer is replaced. ``leader_epoch`` is Kafka's
    optional leader epoch of the last consumed record (None when unknown).
    """

    offset: int
    metadata: str = ""
    commit_timestamp: int = -1
    leader_epoch: int | None = None


def encode_offset_key(group_id: str, partition: TopicPartition) -> bytes:
    """Encode the ``__consumer_offsets`` key of ``group_id``'s offset for ``partition``."""
    return orjson.dumps([_KIND, group_id, partition.topic, partition.partition])


def encode_offset_value(offset: OffsetAndMetadata | None) -> bytes | None:
    """Encode a committed offset as a record value; None (a tombstone) stays None."""
    if offset is None:
        return None
    return orjson.dumps(
        {
            "offset": offset.offset,
            "metadata": offset.metadata,
            "commit_timestamp": offset.commit_timestamp,
            "leader_epoch": offset.leader_epoch,
        }
    )


def decode_offset_record(
    key: bytes | None, value: bytes | None
) -> tuple[str, TopicPartition, OffsetAndMetadata | None] | None:
    """Decode one ``__consumer_offsets`` record; None for a record of another kind.

    :returns: ``(group_id, partition, offset)``, where ``offset`` is None for a tombstone.
    :raises ValueError: if the record claims to be an offset but does not decode.
    """
    if key is None:
        raise ValueError("a record without a key")
    decoded_key = _loads(key, "key")
    if not isinstance(decoded_key, list) or not decoded_key or decoded_key[0] != _KIND:
        return None
    match decoded_key:
        case [_, str(group_id), str(topic), int(index)] if not isinstance(index, bool):
            partition = TopicPartition(topic, index)
        case _:
            raise ValueError(f"malformed offset key {key!r}")
    if value is None:
        return group_id, partition, None
    match _loads(value, "value"):
        case {
            "offset": int(offset),
            "metadata": str(metadata),
            "commit_timestamp": int(timestamp),
            "leader_epoch": (int() | None) as epoch,
        } if not any(isinstance(v, bool) for v in (offset, timestamp, epoch)):
            return group_id, partition, OffsetAndMetadata(offset, metadata, timestamp, epoch)
        case _:
            raise ValueError(f"malformed offset value {value!r}")


def _loads(data: bytes, what: str) -> Any:
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"the {what} is not JSON: {exc}") from None


class OffsetTable:
    """The latest committed offset per (group, topic, partition), with where it came from.

    Pure bookkeeping; :class:`OffsetLog` feeds it. Not thread-safe: one event loop owns it.
    """

    def __init__(self) -> None:
        self._groups: dict[str, dict[TopicPartition, tuple[int, OffsetAndMetadata]]] = {}
        self._removed: dict[tuple[str, TopicPartition], int] = {}
        self._keep_removed = 0  # writes in flight: remember tombstones while > 0

    def apply(
        self,
        group_id: str,
        partition: TopicPartition,
        offset: OffsetAndMetadata | None,
        log_offset: int,
    ) -> bool:
        """Apply the record at ``log_offset``; return False if a newer one was applied."""
        entries = self._groups.get(group_id)
        current = None if entries is None else entries.get(partition)
        newest = max(
            -1 if current is None else current[0],
            self._removed.get((group_id, partition), -1),
        )
        if log_offset <= newest:
            return False
        if offset is not None:
            self._groups.setdefault(group_id, {})[partition] = (log_offset, offset)
            return True
        if entries is not None and current is not None:
            del entries[partition]
            if not entries:
                del self._groups[group_id]
        if self._keep_removed:
            self._removed[(group_id, partition)] = log_offset
        return True

    def begin_write(self) -> None:
        """Note a write in flight (until :meth:`end_write`): tombstones are remembered."""
        self._keep_removed += 1

    def end_write(self) -> None:
        """Note that a write finished; with none left, forget remembered tombstones."""
        self._keep_removed -= 1
        if not self._keep_removed:
            self._removed.clear()

    def group_ids(self) -> list[str]:
        """The groups with at least one committed offset, sorted."""
        return sorted(self._groups)

    def offsets(self, group_id: str) -> dict[TopicPartition, OffsetAndMetadata]:
        """``group_id``'s committed offsets (empty if it has none), sorted by partition."""
        entries = self._groups.get(group_id, {})
        return {partition: entries[partition][1] for partition in sorted(entries)}

    def has_offsets(self, group_id: str) -> bool:
        """Whether ``group_id`` has a committed offset."""
        return group_id in self._groups


def expiry_base_ms(offset: OffsetAndMetadata, empty_since_ms: int | None) -> int:
    """When an Empty group's ``offset`` starts aging: the later of the commit and emptiness.

    ``empty_since_ms`` is None when the coordinator has not seen the group lose its
    members (loaded at start-up, or plain commits only); the commit time counts then.
    """
    if empty_since_ms is None:
        return offset.commit_timestamp
    return max(empty_since_ms, offset.commit_timestamp)


def expired_offsets(
    offsets: Mapping[TopicPartition, OffsetAndMetadata],
    empty_since_ms: int | None,
    now_ms: int,
    retention_ms: int,
) -> list[TopicPartition]:
    """The partitions whose offsets have aged past ``retention_ms`` in an Empty group."""
    return [
        partition
        for partition, offset in offsets.items()
        if now_ms - expiry_base_ms(offset, empty_since_ms) >= retention_ms
    ]


class OffsetLog:
    """Committed offsets kept in the store's ``__consumer_offsets`` topic.

    :meth:`load` creates the topic when it is missing (with the store's default
    durability) and reads it into :attr:`table`; :meth:`write` appends and applies.
    Concurrency: any number of tasks of the store's event loop may write at once.
    """

    def __init__(self, store: Store) -> None:
        self.store = store
        self.table = OffsetTable()
        self._partitions: list[Partition] = []

    async def load(self) -> None:
        """Create the topic if missing, then read all of it into the table.

        A read-only store without the topic loads nothing (and refuses writes later).
        """
        store = self.store
        if not store.has_topic(OFFSETS_TOPIC):
            if store.read_only:
                return
            await store.create_topic(OFFSETS_TOPIC, offsets_topic_config(store), internal=True)
        self._partitions = store.partitions(OFFSETS_TOPIC)
        for partition in self._partitions:
            await self._load_partition(partition)

    async def _load_partition(self, partition: Partition) -> None:
        position, end = partition.log_start_offset, partition.high_watermark
        while position < end:
            records = await partition.read_records(position, _LOAD_BYTES)
            if not records:
                break
            for record in records:
                if record.offset >= end:
                    return
                self._apply_record(partition, record.offset, record.key, record.value)
            position = records[-1].offset + 1

    def _apply_record(
        self, partition: Partition, log_offset: int, key: bytes | None, value: bytes | None
    ) -> None:
        try:
            decoded = decode_offset_record(key, value)
        except ValueError as exc:
            logger.warning(
                "%s-%d offset %d: skipped a record that does not decode: %s",
                partition.topic,
                partition.index,
                log_offset,
                exc,
            )
            return
        if decoded is not None:
            self.table.apply(*decoded, log_offset)

    async def write(
        self, group_id: str, changes: Iterable[tuple[TopicPartition, OffsetAndMetadata | None]]
    ) -> None:
        """Append ``changes`` (None: delete) as one batch; apply them once it is durable.

        The append is shielded from cancellation: once written, the table learns of it.

        :raises StoreError: if the store is read-only, closed or refuses the write.
        """
        changes = list(changes)
        if not changes:
            return
        records = [
            NewRecord(value=encode_offset_value(offset), key=encode_offset_key(group_id, tp))
            for tp, offset in changes
        ]
        if self.store.read_only or not self._partitions:
            # A Partition would append even in a read-only store: refuse here.
            raise StoreError(f"{self.store.path}: the store is read-only; offsets cannot change")
        partition = self._partitions[partition_for_key(group_id.encode(), len(self._partitions))]
        self.table.begin_write()
        try:
            with anyio.CancelScope(shield=True):
                info = await partition.append(records, internal=True)
            for delta, (tp, offset) in enumerate(changes):
                self.table.apply(group_id, tp, offset, info.base_offset + delta)
        finally:
            self.table.end_write()


def offsets_topic_config(store: Store) -> TopicConfig:
    """The configuration ``__consumer_offsets`` is created with in ``store``.

    Compacted, kept forever (only compaction removes records), one partition, and as
    durable as the store's default topic.
    """
    return TopicConfig(
        partitions=1,
        cleanup_policy=CleanupPolicy.COMPACT,
        durability=store.default_config.durability,
        retention_ms=-1,
        retention_bytes=-1,
        segment_bytes=OFFSETS_SEGMENT_BYTES,
    )
