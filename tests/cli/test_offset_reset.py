"""An offset reset is committed in batches of partitions, and says how far it got.

On a data directory (the group coordinator in process, over a real store) and against a
``headwater broker`` (the admin API over the Kafka protocol): the progress callback hears
of each batch, never of single partitions, and the offsets committed are the plan.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import anyio
import pytest
from broker.running import BrokerProcess

from headwater.cli._kafka_client import Cluster
from headwater.cli._kafka_groups import KafkaGroups
from headwater.cli._local_groups import LocalGroups
from headwater.cli._offset_reset import RESET_BATCH, commit_in_batches
from headwater.groups import GroupCoordinator, GroupError, GroupNotEmptyError, TopicPartition
from headwater.store import NewRecord, TopicConfig, open_store

from .helpers import run_headwater

#: Two full batches and a short one.
PARTITIONS = 2 * RESET_BATCH + 7
BATCHES = [(0, PARTITIONS), (RESET_BATCH, PARTITIONS), (2 * RESET_BATCH, PARTITIONS)]
STEPS = [*BATCHES, (PARTITIONS, PARTITIONS)]


def test_a_reset_on_a_data_directory_commits_batch_by_batch(tmp_path: Path) -> None:
    data = tmp_path / "data"
    heard: list[tuple[int, int]] = []

    async def main() -> None:
        async with open_store(data) as store:
            await store.create_topic("wide", TopicConfig(partitions=PARTITIONS))
            for partition in store.partitions("wide"):
                await partition.append([NewRecord(value=b"1"), NewRecord(value=b"2")])
            async with GroupCoordinator(store) as coordinator:
                groups = LocalGroups(store, coordinator)
                await coordinator.commit("g", {("wide", p): 1 for p in range(PARTITIONS)})
                plan = await groups.reset_offsets(
                    "g", "wide", "latest", execute=True, progress=lambda d, t: heard.append((d, t))
                )
                assert [(row.current, row.new) for row in plan] == [(1, 2)] * PARTITIONS
        # What was committed survives a restart.
        async with open_store(data) as store, GroupCoordinator(store) as coordinator:
            committed = coordinator.committed("g")
            assert {tp: o.offset for tp, o in committed.items()} == {
                TopicPartition("wide", p): 2 for p in range(PARTITIONS)
            }

    anyio.run(main, backend="trio")
    assert heard == STEPS


def test_a_dry_run_commits_nothing_and_reports_nothing(tmp_path: Path) -> None:
    heard: list[tuple[int, int]] = []

    async def main() -> None:
        async with open_store(tmp_path / "data") as store:
            await store.create_topic("wide", TopicConfig(partitions=3))
            async with GroupCoordinator(store) as coordinator:
                groups = LocalGroups(store, coordinator)
                await coordinator.commit("g", {("wide", p): 0 for p in range(3)})
                plan = await groups.reset_offsets(
                    "g", "wide", 5, execute=False, progress=lambda d, t: heard.append((d, t))
                )
                assert [row.new for row in plan] == [0, 0, 0]  # clamped to the (empty) log
                assert len(coordinator.committed("g")) == 3

    anyio.run(main, backend="trio")
    assert heard == []


def test_a_reset_through_a_broker_commits_batch_by_batch(
    broker: BrokerProcess, tmp_path: Path
) -> None:
    created = run_headwater(
        None, "topics", "create", "wide-b", "-p", str(PARTITIONS), "--bootstrap", broker.bootstrap
    )
    assert created.returncode == 0, created.stderr
    heard: list[tuple[int, int]] = []

    async def main() -> None:
        groups = KafkaGroups(Cluster(broker.bootstrap))
        plan = await groups.reset_offsets(
            "gb", "wide-b", "earliest", execute=True, progress=lambda d, t: heard.append((d, t))
        )
        assert [(row.partition.partition, row.new) for row in plan] == [
            (p, 0) for p in range(PARTITIONS)
        ]
        view = await groups.describe_group("gb")
        assert [row.committed for row in view.partitions] == [0] * PARTITIONS

    anyio.run(main, backend="trio")
    assert heard == STEPS


def test_a_failure_after_a_batch_says_how_many_partitions_were_reset() -> None:
    committed: list[Sequence[int]] = []
    heard: list[tuple[int, int]] = []

    async def commit_twice(batch: Sequence[int]) -> None:
        if len(committed) == 2:
            raise GroupNotEmptyError("group 'g' has active members")
        committed.append(batch)

    async def main() -> None:
        await commit_in_batches(range(PARTITIONS), commit_twice, lambda d, t: heard.append((d, t)))

    with pytest.raises(GroupError) as raised:
        anyio.run(main, backend="trio")
    assert str(raised.value) == (
        f"group 'g' has active members (the offsets of {2 * RESET_BATCH} of the {PARTITIONS} "
        "partitions were reset before this: run the command again to reset them all)"
    )
    assert [len(batch) for batch in committed] == [RESET_BATCH, RESET_BATCH]
    assert heard == BATCHES


def test_a_failure_of_the_first_batch_is_raised_as_it_is() -> None:
    async def refuse(batch: Sequence[int]) -> None:
        raise GroupNotEmptyError("group 'g' has active members")

    async def main() -> None:
        await commit_in_batches(range(PARTITIONS), refuse, None)

    with pytest.raises(GroupNotEmptyError, match=r"^group 'g' has active members$"):
        anyio.run(main, backend="trio")
