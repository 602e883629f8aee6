"""The ``groups`` commands over a data directory: the group coordinator, in process.

One process uses a data directory at a time, so the groups seen here have no live members
(they are Empty): what there is to show and change are the committed offsets in
``__consumer_offsets``. The coordinator still refuses to reset or delete a group with
active members, which is what a broker hosting live groups answers.
"""

from __future__ import annotations

from collections.abc import Sequence

from headwater.groups import GroupCoordinator, TopicPartition, decode_assignment
from headwater.store import Store

from ._access import GroupRow, GroupView, OffsetDeleteRow, PartitionRow, ResetRow, ResetTarget
from ._offset_reset import ResetProgress, commit_in_batches


class LocalGroups:
    """:class:`~headwater.cli._access.GroupAdmin` over an open store and its coordinator."""

    def __init__(self, store: Store, coordinator: GroupCoordinator) -> None:
        self._store = store
        self._coordinator = coordinator

    async def list_groups(self) -> list[GroupRow]:
        """Return every group with its state and committed partitions."""
        coordinator = self._coordinator
        rows = []
        for overview in coordinator.list_groups():
            committed = coordinator.committed(overview.group_id)
            rows.append(
                GroupRow(
                    overview.group_id,
                    overview.state,
                    len(coordinator.describe_group(overview.group_id).members),
                    tuple(sorted({tp.topic for tp in committed})),
                    len(committed),
                )
            )
        return rows

    async def describe_group(self, group: str) -> GroupView:
        """Return every partition of every topic ``group`` has committed to or is assigned."""
        description = self._coordinator.describe_group(group)
        committed = {tp: o.offset for tp, o in self._coordinator.committed(group).items()}
        owners: dict[TopicPartition, tuple[str, str]] = {}
        for member in description.members:
            if member.assignment:
                for tp in decode_assignment(member.assignment).partitions:
                    owners[tp] = (member.member_id, member.client_id)
        partitions = set(committed) | set(owners)
        ends: dict[TopicPartition, int] = {}
        for topic in {tp.topic for tp in partitions}:
            if self._store.has_topic(topic):
                for partition in self._store.partitions(topic):
                    tp = TopicPartition(topic, partition.index)
                    ends[tp] = partition.high_watermark
                    partitions.add(tp)
        rows = [
            PartitionRow(tp, committed.get(tp), ends.get(tp), owners.get(tp))
            for tp in sorted(partitions)
        ]
        return GroupView(description.state, len(description.members), rows)

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
        coordinator = self._coordinator
        current = {tp: o.offset for tp, o in coordinator.committed(group).items()}
        plan = coordinator.plan_offset_reset(group, topic, to)
        if execute:

            async def commit(batch: Sequence[tuple[TopicPartition, int]]) -> None:
                await coordinator.commit(group, dict(batch))

            await commit_in_batches(list(plan.items()), commit, progress)
        return [ResetRow(tp, current.get(tp), offset) for tp, offset in plan.items()]

    async def delete_group(self, group: str) -> None:
        """Delete ``group`` and tombstone its committed offsets."""
        await self._coordinator.delete_group(group)

    async def delete_offsets(
        self, group: str, topic: str, partitions: Sequence[int]
    ) -> list[OffsetDeleteRow]:
        """Tombstone ``group``'s committed offsets of ``topic`` (see ``GroupAdmin``)."""
        for index in partitions:
            self._store.partition(topic, index)  # TopicNotFoundError names the partition
        chosen = partitions or [p.index for p in self._store.partitions(topic)]
        outcome = await self._coordinator.delete_offsets(
            group, [TopicPartition(topic, i) for i in chosen]
        )
        return [
            OffsetDeleteRow(tp, None if error is None else str(error))
            for tp, error in sorted(outcome.items())
        ]
