"""The test driver's backend: topics, committed offsets and consumer groups in memory.

Theory of operation. A topic is a list of partitions; a partition is a list of
:class:`~headwater.store.Record` values (offsets from 0) plus the ends of the batches
that were appended, so a fetch returns whole appended batches, as the store does. A
produce is durable when it returns (memory is all there is); the event times the
pipeline knows of a repartition topic's records go to a
:class:`~headwater.processing._handoff.Handoff` for their reader, as on the embedded
log. Deleting records only moves
the partition's start offset (they stay in memory, out of reach). Fetch waits for records on
an event that the next append sets; the event is made by the waiting fetch, in its own
event loop, so the backend can be used from one ``anyio.run`` after another (the test
driver runs one per call).

A :class:`MemoryGroup` is a consumer group reduced to its contract: members join and
leave, and every change rebalances eagerly with Kafka's range assignor (the same
function the embedded coordinator runs): every member's ``on_revoked`` is awaited for
all it holds, then each ``on_assigned`` for its new share, in member order. A member
that crashed leaves without a word (:meth:`MemoryGroup.remove` with ``clean=False``);
one whose session expired is told ``on_lost`` (:meth:`MemoryGroup.expire`). Commits
keep each partition's offset and metadata; a member that is no longer in the group
cannot commit. Tests may queue commit failures (:attr:`MemoryBackend.commit_errors`) to
exercise a runtime's retries. Deterministic: no clock, no threads, no disk.
"""

from __future__ import annotations

import bisect
import contextlib
import itertools
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field

import anyio
import anyio.lowlevel

from headwater.groups import (
    OffsetAndMetadata,
    Subscription,
    TopicPartition,
    UnknownMemberError,
    range_assign,
)
from headwater.store import (
    CleanupPolicy,
    InvalidConfigError,
    OffsetOutOfRangeError,
    PolicyViolationError,
    Record,
    RecordColumns,
    TopicConfig,
    TopicNotFoundError,
    kafka_config_entries,
)

from .._encoding import OutRecords
from .._handoff import Handoff
from . import LOCAL_BATCH_BYTES, Membership, PartitionsHandler


class _Partition:
    __slots__ = ("batch_ends", "records", "start", "waiter")

    def __init__(self) -> None:
        self.records: list[Record] = []
        self.batch_ends: list[int] = []
        self.waiter: anyio.Event | None = None
        #: Where deleted records end (``delete_records``); they stay in ``records``.
        self.start = 0

    def append(self, records: Sequence[Record]) -> None:
        self.records.extend(records)
        self.batch_ends.append(len(self.records))
        waiter, self.waiter = self.waiter, None
        if waiter is not None:
            waiter.set()


class MemoryBackend:
    """A :class:`~headwater.processing.Backend` in memory (see the module docstring)."""

    def __init__(self) -> None:
        self._topics: dict[str, list[_Partition]] = {}
        self.configs: dict[str, TopicConfig] = {}
        self._committed: dict[str, dict[TopicPartition, OffsetAndMetadata]] = {}
        self._groups: dict[str, MemoryGroup] = {}
        #: Exceptions the next commits raise, one each, first first (for tests).
        self.commit_errors: list[Exception] = []
        #: The event times of repartition records the app appended (``_handoff.py``).
        self.handoff: Handoff | None = Handoff()
        self.batch_bytes = LOCAL_BATCH_BYTES

    # -- topics ------------------------------------------------------------------------

    def topics(self) -> list[str]:
        """Return the topics, in creation order."""
        return list(self._topics)

    def create_topic_now(
        self, topic: str, partitions: int, config: Mapping[str, str] | None = None
    ) -> None:
        """Create ``topic`` at once (nothing if it exists).

        :raises InvalidConfigError: for an unknown config or a bad value.
        """
        if topic in self._topics:
            return
        settings = TopicConfig.from_strings(config or {}, TopicConfig(partitions=partitions))
        if settings.partitions != partitions:
            raise InvalidConfigError(f"topic {topic!r}: give partitions as such, not as a config")
        self.configs[topic] = settings
        self._topics[topic] = [_Partition() for _ in range(partitions)]

    def records(self, topic: str, partition: int) -> list[Record]:
        """Return every record of one partition (the list itself: do not change it)."""
        return self._partition(topic, partition).records

    def append(self, topic: str, partition: int, records: Sequence[Record]) -> None:
        """Append ``records`` (whose offsets must follow the partition's) as one batch."""
        target = self._partition(topic, partition)
        assert not records or records[0].offset == len(target.records)
        if records:
            target.append(records)

    def _partition(self, topic: str, partition: int) -> _Partition:
        partitions = self._topics.get(topic)
        if partitions is None or not 0 <= partition < len(partitions):
            raise TopicNotFoundError(f"no partition {topic}/{partition}")
        return partitions[partition]

    async def partition_count(self, topic: str) -> int | None:
        """Return how many partitions ``topic`` has, or None if it does not exist."""
        partitions = self._topics.get(topic)
        return None if partitions is None else len(partitions)

    async def topic_config(self, topic: str) -> Mapping[str, str] | None:
        """Return ``topic``'s configs as Kafka spells them (None: no such topic)."""
        config = self.configs.get(topic)
        return None if config is None else kafka_config_entries(config)

    async def create_topic(
        self, topic: str, partitions: int, config: Mapping[str, str] | None = None
    ) -> None:
        """Create ``topic`` (nothing if it exists). :raises InvalidConfigError: as the store."""
        self.create_topic_now(topic, partitions, config)

    async def produce(self, topic: str, partition: int, records: OutRecords) -> None:
        """Append ``records``, with their lineage and headers, as one batch (and hand
        their event times over, if known)."""
        log = self._partition(topic, partition).records
        start = len(log)
        if records.event_times is not None and self.handoff is not None:
            self.handoff.put(topic, partition, start, records.event_times)
        self.append(
            topic,
            partition,
            [
                Record(start + i, ts, key, value, headers)
                for i, (value, key, ts, headers) in enumerate(
                    zip(
                        records.values,
                        records.keys,
                        records.timestamps,
                        records.all_headers(),
                        strict=True,
                    )
                )
            ],
        )

    async def fetch(self, topic: str, partition: int, offset: int, max_bytes: int) -> RecordColumns:
        """Return the appended batches from ``offset`` on (at least one; about
        ``max_bytes``), waiting for one if there is none."""
        source = self._partition(topic, partition)
        if offset < source.start:
            raise OffsetOutOfRangeError(f"{topic}/{partition} starts at {source.start}")
        while offset >= len(source.records):
            if offset > len(source.records):
                raise OffsetOutOfRangeError(f"{topic}/{partition} has no offset {offset}")
            if source.waiter is None:
                source.waiter = anyio.Event()
            await source.waiter.wait()
        ends = source.batch_ends
        stop = ends[bisect.bisect_right(ends, offset)]
        size = sum(len(r.value or b"") for r in source.records[offset:stop])
        while stop < ends[-1] and size < max_bytes:
            following = ends[bisect.bisect_right(ends, stop)]
            size += sum(len(r.value or b"") for r in source.records[stop:following])
            stop = following
        return RecordColumns.of(source.records[offset:stop])

    async def start_offset(self, topic: str, partition: int) -> int:
        """Return where the records :meth:`delete_records` deleted end (0 if none were)."""
        return self._partition(topic, partition).start

    async def delete_records(self, topic: str, partition: int, before_offset: int) -> None:
        """Move the partition's start to ``before_offset`` (unless it is there or later):
        fetches below it fail, as they do in the store.

        :raises OffsetOutOfRangeError: if ``before_offset`` is past the partition's end.
        :raises PolicyViolationError: if the topic is compacted.
        """
        target = self._partition(topic, partition)
        if not 0 <= before_offset <= len(target.records):
            raise OffsetOutOfRangeError(
                f"cannot delete records of {topic}/{partition} before offset {before_offset}: "
                f"it must lie from 0 to the end {len(target.records)}"
            )
        if self.configs[topic].cleanup_policy is CleanupPolicy.COMPACT:
            raise PolicyViolationError(f"cannot delete records of {topic}/{partition}: compacted")
        target.start = max(target.start, before_offset)

    async def end_offset(self, topic: str, partition: int) -> int:
        """Return how many records the partition holds."""
        return len(self._partition(topic, partition).records)

    # -- groups ------------------------------------------------------------------------

    def group(self, group_id: str) -> MemoryGroup:
        """Return consumer group ``group_id`` (made when first asked for)."""
        group = self._groups.get(group_id)
        if group is None:
            group = self._groups[group_id] = MemoryGroup(self, group_id)
        return group

    def committed(self, group_id: str) -> dict[TopicPartition, OffsetAndMetadata]:
        """Return ``group_id``'s committed offsets, sorted."""
        return dict(sorted(self._committed.get(group_id, {}).items()))

    def store_offsets(
        self, group_id: str, offsets: Mapping[TopicPartition, OffsetAndMetadata]
    ) -> None:
        """Store committed ``offsets`` of ``group_id`` (no checks: a member commits through
        its membership).

        :raises TopicNotFoundError: for a partition that does not exist.
        """
        table = self._committed.setdefault(group_id, {})
        for tp, offset in offsets.items():
            self._partition(tp.topic, tp.partition)
            table[tp] = offset

    @contextlib.asynccontextmanager
    async def join(
        self,
        group_id: str,
        topics: Sequence[str],
        *,
        on_assigned: PartitionsHandler,
        on_revoked: PartitionsHandler,
        on_lost: PartitionsHandler,
    ) -> AsyncIterator[Membership]:
        """Join ``group_id`` for the duration of a block (see the module docstring)."""
        group = self.group(group_id)
        member = await group.add(
            topics, on_assigned=on_assigned, on_revoked=on_revoked, on_lost=on_lost
        )
        try:
            yield group.membership(member)
        finally:
            with anyio.CancelScope(shield=True):
                await group.remove(member, clean=True)


@dataclass(slots=True)
class _Member:
    topics: tuple[str, ...]
    on_assigned: PartitionsHandler
    on_revoked: PartitionsHandler
    on_lost: PartitionsHandler
    assigned: list[TopicPartition] = field(default_factory=list)


class MemoryGroup:
    """A consumer group in memory (see the module docstring). Concurrency: membership
    changes take turns; the callbacks of one change all run before the next starts."""

    def __init__(self, backend: MemoryBackend, group_id: str) -> None:
        self._backend = backend
        self.group_id = group_id
        self.generation = 0
        self._members: dict[str, _Member] = {}
        self._ids = itertools.count(1)
        self._busy: anyio.Event | None = None

    def members(self) -> list[str]:
        """Return the member ids, in member order."""
        return list(self._members)

    def assignment(self, member_id: str) -> list[TopicPartition]:
        """Return the partitions ``member_id`` holds."""
        return list(self._members[member_id].assigned)

    def membership(self, member_id: str) -> Membership:
        """Return the :class:`Membership` of ``member_id``."""
        return _MemoryMembership(self._backend, self, member_id)

    def is_member(self, member_id: str) -> bool:
        """Return whether ``member_id`` is in the group."""
        return member_id in self._members

    async def add(
        self,
        topics: Sequence[str],
        *,
        on_assigned: PartitionsHandler,
        on_revoked: PartitionsHandler,
        on_lost: PartitionsHandler,
    ) -> str:
        """Add a member reading ``topics``; rebalance; return its member id."""
        async with self._turn():
            member_id = f"member-{next(self._ids)}"
            await self._revoke_all()
            self._members[member_id] = _Member(tuple(topics), on_assigned, on_revoked, on_lost)
            await self._assign()
            return member_id

    async def remove(self, member_id: str, *, clean: bool) -> None:
        """Remove ``member_id`` and rebalance. A clean leave first revokes what it holds
        (so it can commit); otherwise it is gone without a word (a crash)."""
        async with self._turn():
            member = self._members.get(member_id)
            if member is None:
                return
            if not clean:
                del self._members[member_id]
            await self._revoke_all()
            self._members.pop(member_id, None)
            await self._assign()

    async def expire(self, member_id: str) -> None:
        """End ``member_id``'s session: it is told ``on_lost``, the others rebalance."""
        async with self._turn():
            member = self._members.pop(member_id, None)
            if member is None:
                return
            lost, member.assigned = member.assigned, []
            if lost:
                await member.on_lost(lost)
            await self._revoke_all()
            await self._assign()

    @contextlib.asynccontextmanager
    async def _turn(self) -> AsyncIterator[None]:
        while self._busy is not None:
            await self._busy.wait()
        self._busy = anyio.Event()
        try:
            yield
        finally:
            busy, self._busy = self._busy, None
            busy.set()

    async def _revoke_all(self) -> None:
        for member in list(self._members.values()):
            held, member.assigned = member.assigned, []
            if held:
                await member.on_revoked(held)

    async def _assign(self) -> None:
        self.generation += 1
        if not self._members:
            return
        counts: dict[str, int] = {}
        for member in self._members.values():
            for topic in member.topics:
                count = await self._backend.partition_count(topic)
                if count:
                    counts[topic] = count
        subscriptions = {
            m: Subscription(topics=member.topics) for m, member in self._members.items()
        }
        shares = range_assign(subscriptions, counts)
        for member_id, member in list(self._members.items()):
            member.assigned = sorted(shares.get(member_id, []))
            if member.assigned:
                await member.on_assigned(list(member.assigned))


class _MemoryMembership:
    """A member's :class:`Membership` in a :class:`MemoryGroup`."""

    def __init__(self, backend: MemoryBackend, group: MemoryGroup, member_id: str) -> None:
        self._backend = backend
        self._group = group
        self.member_id = member_id

    async def committed(
        self, partitions: Sequence[TopicPartition]
    ) -> dict[TopicPartition, OffsetAndMetadata]:
        """Return the group's committed offsets of ``partitions`` that have one."""
        offsets = self._backend.committed(self._group.group_id)
        return {tp: offsets[tp] for tp in partitions if tp in offsets}

    async def commit(
        self, offsets: Mapping[TopicPartition, int], metadata: Mapping[TopicPartition, str]
    ) -> None:
        """Store ``offsets`` with their metadata.

        :raises UnknownMemberError: if this member has left the group (or its session
            expired).
        """
        await anyio.lowlevel.checkpoint()
        if self._backend.commit_errors:
            raise self._backend.commit_errors.pop(0)
        if not self._group.is_member(self.member_id):
            raise UnknownMemberError(
                f"group {self._group.group_id!r} has no member {self.member_id!r}"
            )
        self._backend.store_offsets(
            self._group.group_id,
            {tp: OffsetAndMetadata(offset, metadata.get(tp, "")) for tp, offset in offsets.items()},
        )
