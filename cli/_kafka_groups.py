"""Consumer groups over the Kafka protocol: a group member, and the ``groups`` commands.

Theory of operation
-------------------
A member (:func:`read_group`) subscribes with the group's id; when partitions are
assigned it asks for their committed offsets and starts those without one where
``--from`` says (librdkafka's callback runs in the polling thread, and assigns there).
Each delivery the sink takes is committed synchronously before the next poll, so the
next run of the group resumes after the last record printed. Without ``--follow`` it
stops once every assigned partition has reached its end (librdkafka's partition EOF),
then commits the start of every partition it delivered nothing from, as the
data-directory member does, and leaves the group.

:class:`KafkaGroups` answers ``groups list``, ``describe``, ``reset-offsets``,
``delete`` and ``delete-offsets`` with the admin API (ListGroups, DescribeGroups,
OffsetFetch, ListOffsets, OffsetCommit, DeleteGroups; OffsetDelete, which librdkafka's
Python binding lacks, through headwater's own :class:`~headwater.broker.AdminClient`).
The offsets of a topic's partitions are listed in one admin call per offset kind (the
client sends one ListOffsets request per leader), and a reset is committed in batches of
partitions, one OffsetCommit each (``_offset_reset.py``).
Like ``kafka-consumer-groups``, a reset is refused while the group has members; a group
the cluster does not know (described as Dead, with no offsets) is an error, as with a
data directory.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from confluent_kafka import (
    Consumer,
    ConsumerGroupState,
    ConsumerGroupTopicPartitions,
    KafkaException,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient
from confluent_kafka.admin import OffsetSpec as _OffsetSpec  # type: ignore[attr-defined]

from headwater.broker import AdminClient as HeadwaterAdminClient
from headwater.broker import BrokerError, KafkaErrorCode
from headwater.groups import GroupNotEmptyError
from headwater.groups import TopicPartition as HeadwaterTopicPartition
from headwater.processing.kafka_client import TIMEOUT_S, blocking, finish
from headwater.store import IsolationLevel, TopicNotFoundError

from ._access import (
    GroupRow,
    GroupView,
    OffsetDeleteRow,
    PartitionRow,
    RecordSink,
    ResetRow,
    ResetTarget,
)
from ._kafka_client import Cluster, kafka_failure, poll_batch, runs
from ._offset_reset import ResetProgress, commit_in_batches
from ._start import Start

#: The binding's ``OffsetSpec`` (earliest, latest, a time) has no annotations.
OffsetSpec: Any = _OffsetSpec

_ACTIVE = (
    ConsumerGroupState.STABLE,
    ConsumerGroupState.PREPARING_REBALANCING,
    ConsumerGroupState.COMPLETING_REBALANCING,
)


class _Member:
    """What the polling thread learns: the assignment, ends reached, starts to commit."""

    def __init__(self, cluster: Cluster, topic: str, start: Start) -> None:
        self.cluster = cluster
        self.topic = topic
        self.start = start
        self.assigned: set[int] = set()
        self.at_end: set[int] = set()
        self.uncommitted: dict[int, int] = {}  # partition -> its start, until committed

    def on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        committed = consumer.committed(partitions, timeout=TIMEOUT_S)
        fresh = [tp.partition for tp in committed if tp.offset < 0]
        starts = self.cluster.bounds(consumer, self.topic, fresh, self.start) if fresh else {}
        for tp in committed:
            if tp.partition in starts:
                tp.offset = starts[tp.partition][0]
                self.uncommitted[tp.partition] = tp.offset
        consumer.assign(committed)
        self.assigned = {tp.partition for tp in committed}
        self.at_end -= self.assigned

    def on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self.assigned -= {tp.partition for tp in partitions}

    @property
    def caught_up(self) -> bool:
        return bool(self.assigned) and self.assigned <= self.at_end


async def read_group(
    cluster: Cluster,
    topic: str,
    group: str,
    *,
    start: Start,
    follow: bool,
    sink: RecordSink,
    isolation: IsolationLevel = IsolationLevel.READ_UNCOMMITTED,
) -> None:
    """Deliver ``topic`` into ``sink`` as a member of ``group``; commit what it took."""
    consumer = Consumer(
        cluster.consumer_config(
            **{
                "group.id": group,
                "isolation.level": isolation.name.lower(),
                "client.id": "headwater-consume",
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
                "enable.partition.eof": True,
                "auto.offset.reset": "earliest",
                "fetch.wait.max.ms": 100,
            }
        )
    )
    member = _Member(cluster, topic, start)
    try:
        await blocking(cluster.partition_count, consumer, topic)
        consumer.subscribe([topic], on_assign=member.on_assign, on_revoke=member.on_revoke)
        while not sink.done() and (follow or not member.caught_up):
            for p, records, at_end in runs(await blocking(poll_batch, consumer), topic):
                if at_end:
                    member.at_end.add(p)
                    continue
                taken = sink.write(p, records)
                if taken:
                    await _commit(consumer, topic, {p: records[taken - 1].offset + 1})
                    member.uncommitted.pop(p, None)
                if sink.done():
                    break
        if member.uncommitted:
            await _commit(consumer, topic, member.uncommitted)
    finally:
        await finish(consumer.close)


async def _commit(consumer: Consumer, topic: str, offsets: dict[int, int]) -> None:
    positions = [TopicPartition(topic, p, o) for p, o in offsets.items()]
    try:
        await blocking(lambda: consumer.commit(offsets=positions, asynchronous=False))
    except KafkaException as exc:
        raise kafka_failure(f"committing offsets of topic {topic!r}", exc) from None


class KafkaGroups:
    """:class:`~headwater.cli._access.GroupAdmin` over a cluster's admin API."""

    def __init__(self, cluster: Cluster) -> None:
        self._cluster = cluster
        self._admin = AdminClient(cluster.config(**{"client.id": "headwater-groups"}))

    async def _result(self, action: str, future: Any) -> Any:
        try:
            return await blocking(future.result, TIMEOUT_S)
        except KafkaException as exc:
            raise kafka_failure(action, exc) from None

    async def _committed(self, group: str) -> dict[HeadwaterTopicPartition, int]:
        request = [ConsumerGroupTopicPartitions(group)]
        futures = self._admin.list_consumer_group_offsets(request, request_timeout=TIMEOUT_S)
        listed = await self._result(f"fetching the offsets of group {group!r}", futures[group])
        return {
            HeadwaterTopicPartition(tp.topic, tp.partition): tp.offset
            for tp in listed.topic_partitions
            if tp.offset >= 0
        }

    async def _describe(self, group: str) -> Any:
        futures = self._admin.describe_consumer_groups([group], request_timeout=TIMEOUT_S)
        return await self._result(f"describing group {group!r}", futures[group])

    async def list_groups(self) -> list[GroupRow]:
        """Return every group with its state and committed partitions."""
        future = self._admin.list_consumer_groups(request_timeout=TIMEOUT_S)
        listed = await self._result("listing groups", future)
        rows = []
        for group_id in sorted(g.group_id for g in listed.valid):
            description = await self._describe(group_id)
            committed = await self._committed(group_id)
            rows.append(
                GroupRow(
                    group_id,
                    _state(description.state),
                    len(description.members),
                    tuple(sorted({tp.topic for tp in committed})),
                    len(committed),
                )
            )
        return rows

    async def describe_group(self, group: str) -> GroupView:
        """Return ``group``'s members and its partitions' offsets, log ends and owners."""
        description = await self._describe(group)
        committed = await self._committed(group)
        if description.state == ConsumerGroupState.DEAD and not committed:
            raise BrokerError(f"group {group!r} does not exist")
        owners: dict[HeadwaterTopicPartition, tuple[str, str]] = {}
        for member in description.members:
            for tp in member.assignment.topic_partitions if member.assignment else ():
                owners[HeadwaterTopicPartition(tp.topic, tp.partition)] = (
                    member.member_id,
                    member.client_id,
                )
        partitions = set(committed) | set(owners)
        ends = await self._ends({tp.topic for tp in partitions})
        partitions |= set(ends)
        rows = [
            PartitionRow(tp, committed.get(tp), ends.get(tp), owners.get(tp))
            for tp in sorted(partitions)
        ]
        return GroupView(_state(description.state), len(description.members), rows)

    async def _ends(self, topics: set[str]) -> dict[HeadwaterTopicPartition, int]:
        """The high watermark of every partition of ``topics`` that still exist."""
        ends: dict[HeadwaterTopicPartition, int] = {}
        for topic in sorted(topics):
            count = await self._partition_count(topic, missing_ok=True)
            for p, high in (await self._list_offsets(topic, count, OffsetSpec.latest())).items():
                ends[HeadwaterTopicPartition(topic, p)] = high
        return ends

    async def _partition_count(self, topic: str, *, missing_ok: bool = False) -> int:
        """``topic``'s partition count (0 for a missing topic, with ``missing_ok``).

        :raises TopicNotFoundError: if there is no such topic (without ``missing_ok``).
        """
        cluster = self._cluster
        consumer = cluster.reader_consumer()
        try:
            return await blocking(cluster.partition_count, consumer, topic)
        except TopicNotFoundError:
            if missing_ok:
                return 0
            raise
        finally:
            await finish(consumer.close)

    async def _list_offsets(self, topic: str, count: int, spec: Any) -> dict[int, int]:
        """``{partition: offset}`` at ``spec`` for the ``count`` partitions of ``topic``: one
        ListOffsets request per leader, not one round trip per partition (``-1``: a time
        that no record is at or after)."""
        if not count:
            return {}
        asked = {TopicPartition(topic, p): spec for p in range(count)}
        futures = self._admin.list_offsets(asked, request_timeout=TIMEOUT_S)

        def results() -> dict[int, int]:
            return {tp.partition: f.result(TIMEOUT_S).offset for tp, f in futures.items()}

        try:
            return await blocking(results)
        except KafkaException as exc:
            raise kafka_failure(f"listing the offsets of topic {topic!r}", exc) from None

    async def _plan(self, topic: str, to: ResetTarget) -> dict[int, int]:
        """``{partition: new offset}`` of a reset of ``topic`` to ``to``."""
        count = await self._partition_count(topic)
        start = _start_of(to)
        if start.kind == "earliest":
            return await self._list_offsets(topic, count, OffsetSpec.earliest())
        ends = await self._list_offsets(topic, count, OffsetSpec.latest())
        if start.kind == "latest":
            return ends
        starts = await self._list_offsets(topic, count, OffsetSpec.earliest())
        found: dict[int, int] = {}
        if start.kind == "time":
            found = await self._list_offsets(topic, count, OffsetSpec.for_timestamp(start.value))
        return {
            p: start.position(starts[p], end, found[p] if found.get(p, -1) >= 0 else None)
            for p, end in ends.items()
        }

    async def reset_offsets(
        self,
        group: str,
        topic: str,
        to: ResetTarget,
        *,
        execute: bool,
        progress: ResetProgress | None = None,
    ) -> list[ResetRow]:
        """Plan (and commit, with ``execute``, in batches) ``group``'s offsets on ``topic``."""
        description = await self._describe(group)
        if description.state in _ACTIVE or description.members:
            raise GroupNotEmptyError(
                f"cannot reset the offsets of group {group!r}: it has active members "
                f"(state {_state(description.state)}); stop its consumers first"
            )
        current = await self._committed(group)
        plan = sorted((await self._plan(topic, to)).items())
        if execute:

            async def commit(batch: Sequence[tuple[int, int]]) -> None:
                request = ConsumerGroupTopicPartitions(
                    group, [TopicPartition(topic, p, o) for p, o in batch]
                )
                futures = self._admin.alter_consumer_group_offsets(
                    [request], request_timeout=TIMEOUT_S
                )
                await self._result(f"committing the offsets of group {group!r}", futures[group])

            await commit_in_batches(plan, commit, progress)
        return [
            ResetRow(tp, current.get(tp), offset)
            for p, offset in plan
            for tp in [HeadwaterTopicPartition(topic, p)]
        ]

    async def delete_group(self, group: str) -> None:
        """Delete ``group`` and its committed offsets."""
        futures = self._admin.delete_consumer_groups([group], request_timeout=TIMEOUT_S)
        await self._result(f"deleting group {group!r}", futures[group])

    async def delete_offsets(
        self, group: str, topic: str, partitions: Sequence[int]
    ) -> list[OffsetDeleteRow]:
        """Delete ``group``'s committed offsets of ``topic`` (see ``GroupAdmin``)."""
        bootstrap = self._cluster.bootstrap.split(",")[0].strip()

        def delete() -> dict[tuple[str, int], int]:
            with HeadwaterAdminClient(bootstrap, client_id="headwater-groups") as client:
                count = len(client.partition_leaders(topic))
                for index in partitions:
                    if index >= count:
                        raise TopicNotFoundError(
                            f"topic {topic!r} has no partition {index} (it has {count})"
                        )
                chosen = partitions or range(count)
                return client.delete_group_offsets(group, [(topic, i) for i in chosen])

        codes = await blocking(delete)
        return [
            OffsetDeleteRow(HeadwaterTopicPartition(t, p), _kept_because(code, t))
            for (t, p), code in sorted(codes.items())
        ]


def _kept_because(code: int, topic: str) -> str | None:
    if code == KafkaErrorCode.NONE:
        return None
    if code == KafkaErrorCode.GROUP_SUBSCRIBED_TO_TOPIC:
        return f"the group's active members consume topic {topic!r}"
    try:
        return KafkaErrorCode(code).name
    except ValueError:
        return f"error {code}"


def _start_of(to: ResetTarget) -> Start:
    if to == "earliest":
        return Start("earliest")
    if to == "latest":
        return Start("latest")
    if isinstance(to, datetime):
        when = to if to.tzinfo is not None else to.replace(tzinfo=UTC)
        return Start("time", int(when.timestamp() * 1000))
    assert isinstance(to, int)
    return Start("offset", to)


def _state(state: ConsumerGroupState) -> str:
    """The state as the data-directory coordinator spells it (``Empty``, ``Stable``...)."""
    names = {
        ConsumerGroupState.PREPARING_REBALANCING: "PreparingRebalance",
        ConsumerGroupState.COMPLETING_REBALANCING: "CompletingRebalance",
    }
    return names.get(state, state.name.capitalize())
