"""The interface through which the log commands reach a log, wherever it is.

``produce``, ``consume``, ``groups`` and ``trace`` never touch a store or a Kafka client
themselves: they ask a :class:`LogAccess` for what they need and print what it gives. Two
implementations exist, and ``_target.py`` picks one for a command:

* a data directory (``_local.py``, ``_local_groups.py``): the store and the group
  coordinator in this process, taking turns with other processes for the directory;
* a Kafka-protocol broker (``_kafka.py``, ``_kafka_groups.py``): ``headwater broker`` or
  any Kafka cluster, through confluent-kafka.

Both give the same results for the same log: the same records in the same order (a
reader goes partition after partition, each in offset order, then follows whatever
arrives), acknowledgements as (partition, offset), the same group rows. Records cross the
interface as :class:`~headwater.store.Record` and :class:`~headwater.store.NewRecord`.

A reader pushes records into a :class:`RecordSink` instead of being iterated, so that
each implementation keeps its own resources (an open store, a consumer and its threads)
inside one call; the sink says how many records it took, which is what a group member
then commits.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import datetime
from typing import Literal, Protocol

from headwater.groups import TopicPartition
from headwater.store import IsolationLevel, NewRecord, Record

from ._offset_reset import ResetProgress
from ._start import Start

ResetTarget = Literal["earliest", "latest"] | int | datetime
"""Where ``groups reset-offsets`` moves a group: a log end, an offset, or a time."""


class RecordSink(Protocol):
    """Where a reader delivers records (the command prints them)."""

    def done(self) -> bool:
        """Whether the sink wants no more records (``--max`` reached)."""
        ...

    def write(self, partition: int, records: Sequence[Record]) -> int:
        """Take ``records`` of ``partition`` (in offset order); return how many it took.

        Taking fewer than given means the sink is done. When this returns, what it took
        is out (written and flushed), so a group member may commit it.
        """
        ...

    def damaged(self, partition: int, report: str) -> None:
        """Hear of a damaged range of ``partition`` that the reader stepped over.

        Called once per range, after every record before it was written; ``report`` says
        which offsets, where reading resumed and how to repair.
        """
        ...


class TopicWriter(Protocol):
    """Appends to one topic, acknowledging each record once durable."""

    @property
    def partitions(self) -> int:
        """The topic's partition count."""
        ...

    @property
    def max_message_bytes(self) -> int:
        """The largest batch the topic accepts."""
        ...

    async def append(
        self, records: Sequence[NewRecord], partition: int | None
    ) -> list[tuple[int, int]]:
        """Append ``records`` (to ``partition``, else by key as Kafka's partitioner does);
        return (partition, offset) for each, in input order, once all are acknowledged.

        :raises HeadwaterError: if the log refuses them; records acknowledged by earlier
            calls stay acknowledged.
        """
        ...


class RecordLookup(Protocol):
    """Reads single records by position (``trace``)."""

    async def record(self, topic: str, partition: int, offset: int) -> Record | str:
        """Return the record at ``topic/partition/offset``, or a sentence saying why there
        is none (no such topic or partition, removed by retention, deletion or compaction)."""
        ...


@dataclass(frozen=True, slots=True)
class GroupRow:
    """One group of ``groups list``."""

    group_id: str
    state: str
    members: int
    topics: tuple[str, ...]
    partitions: int


@dataclass(frozen=True, slots=True)
class PartitionRow:
    """One partition of ``groups describe``: committed offset, log end, owner."""

    partition: TopicPartition
    committed: int | None
    log_end_offset: int | None
    member: tuple[str, str] | None  # (member id, client id)

    @property
    def lag(self) -> int | None:
        """How far the committed offset is behind the log end (``None``: not known)."""
        if self.committed is None or self.log_end_offset is None:
            return None
        return max(self.log_end_offset - self.committed, 0)


@dataclass(frozen=True, slots=True)
class GroupView:
    """``groups describe``: the group's state and members, and its partitions."""

    state: str
    members: int
    partitions: list[PartitionRow]


@dataclass(frozen=True, slots=True)
class ResetRow:
    """One partition of an offset reset: the committed offset before and the new one."""

    partition: TopicPartition
    current: int | None
    new: int


@dataclass(frozen=True, slots=True)
class OffsetDeleteRow:
    """One partition of ``groups delete-offsets``: deleted, or why its offset was kept."""

    partition: TopicPartition
    kept_because: str | None


class GroupAdmin(Protocol):
    """The ``groups`` commands' view of a log's consumer groups."""

    async def list_groups(self) -> list[GroupRow]:
        """Return every group, sorted by id."""
        ...

    async def describe_group(self, group: str) -> GroupView:
        """Return ``group``'s state, members and partitions (every partition of every topic
        it has committed to or is assigned)."""
        ...

    async def reset_offsets(
        self,
        group: str,
        topic: str,
        to: ResetTarget,
        *,
        execute: bool,
        progress: ResetProgress | None = None,
    ) -> list[ResetRow]:
        """Plan (and with ``execute``, commit) ``group``'s offsets on ``topic`` at ``to``.

        An offset is clamped into each partition's log; a time goes to the first record
        at or after it (the end when there is none). The new offsets are committed in
        batches of partitions (``_offset_reset.py``), ``progress`` hearing of each.

        :raises HeadwaterError: if the group has active members, or the topic is unknown.
        """
        ...

    async def delete_group(self, group: str) -> None:
        """Delete ``group`` and its committed offsets.

        :raises HeadwaterError: if it does not exist or has active members.
        """
        ...

    async def delete_offsets(
        self, group: str, topic: str, partitions: Sequence[int]
    ) -> list[OffsetDeleteRow]:
        """Delete ``group``'s committed offsets of ``topic`` (of ``partitions``, or of
        every partition when empty); a partition whose topic the group's active members
        consume keeps its offset, and its row says so.

        :raises HeadwaterError: if the group does not exist, or the topic or a partition.
        """
        ...


class LogAccess(Protocol):
    """A log -- topics, records, consumer groups -- as the commands use it."""

    @property
    def description(self) -> str:
        """Where the log is, for messages: ``data directory DIR``, ``the broker at H:P``."""
        ...

    def writer(self, topic: str) -> AbstractAsyncContextManager[TopicWriter]:
        """Open ``topic`` for appending.

        :raises HeadwaterError: if the topic does not exist or may not be written (an
            internal topic), before anything is appended.
        """
        ...

    async def read(
        self,
        topic: str,
        *,
        partition: int | None,
        start: Start,
        follow: bool,
        sink: RecordSink,
        isolation: IsolationLevel = IsolationLevel.READ_UNCOMMITTED,
    ) -> None:
        """Deliver ``topic``'s records (one partition's, or all) from ``start`` into ``sink``.

        Without ``follow``, stops at the end each partition had when the read began (its
        high watermark, or for ``READ_COMMITTED`` its last stable offset); with it, then
        waits for more until cancelled. Stops once the sink is done. Transaction markers
        are never delivered; ``READ_COMMITTED`` skips aborted transactions too.
        """
        ...

    async def read_group(
        self,
        topic: str,
        group: str,
        *,
        start: Start,
        follow: bool,
        sink: RecordSink,
        isolation: IsolationLevel = IsolationLevel.READ_UNCOMMITTED,
    ) -> None:
        """Read ``topic`` as a member of ``group``: from its committed offsets (``start``
        where it has none), committing what the sink took; otherwise as :meth:`read`."""
        ...

    def lookup(self) -> AbstractAsyncContextManager[RecordLookup]:
        """Open the log for reading single records."""
        ...

    def groups(self, *, writer: bool) -> AbstractAsyncContextManager[GroupAdmin]:
        """Open the log's consumer groups (``writer``: to change them)."""
        ...
