"""Growing a topic's partition count: keyed data stays, new keys spread over the new count."""

from __future__ import annotations

from pathlib import Path

import pytest

from headwater.store import (
    InvalidPartitionsError,
    InvalidTopicError,
    NewRecord,
    StoreError,
    TopicConfig,
    TopicNotFoundError,
    open_store,
    partition_for_key,
)

KEYS = [f"user-{i}".encode() for i in range(40)]


async def test_grow_keeps_records_and_moves_new_keys(tmp_path: Path) -> None:
    async with open_store(tmp_path) as store:
        await store.create_topic("t", TopicConfig(partitions=2, retention_ms=-1))
        before = await store.append("t", [NewRecord(value=b"old", key=k) for k in KEYS])
        config = await store.create_partitions("t", 4)
        assert config.partitions == 4
        assert store.topic_config("t").partitions == 4
        assert len(store.partitions("t")) == 4
        assert [p.log.config.partitions for p in store.partitions("t")] == [4] * 4
        after = await store.append("t", [NewRecord(value=b"new", key=k) for k in KEYS])
        assert [p for p, _ in before] == [partition_for_key(k, 2) for k in KEYS]
        assert [p for p, _ in after] == [partition_for_key(k, 4) for k in KEYS]
        assert {p for p, _ in after} - {0, 1}  # some keys now land in the new partitions
        # What was written before stays where it was.
        for index in (0, 1):
            records = await store.partition("t", index).read_records(0, 1 << 20)
            old = [r.key for r in records if r.value == b"old"]
            assert old == [k for k in KEYS if partition_for_key(k, 2) == index]
    async with open_store(tmp_path) as store:
        assert len(store.partitions("t")) == 4
        assert store.topic_config("t").partitions == 4
        assert [p.log_end_offset for p in store.describe_topic("t").partitions][2:] != [0, 0]


async def test_the_count_never_shrinks(tmp_path: Path) -> None:
    async with open_store(tmp_path) as store:
        await store.create_topic("t", TopicConfig(partitions=3))
        for count in (1, 3):
            with pytest.raises(InvalidPartitionsError, match="only grow"):
                await store.create_partitions("t", count)
        with pytest.raises(InvalidPartitionsError):
            await store.create_partitions("t", 10_001)
        with pytest.raises(TopicNotFoundError):
            await store.create_partitions("nope", 4)
        with pytest.raises(InvalidTopicError):
            await store.create_partitions("__consumer_offsets", 4)
        store.check_partition_count("t", 5)  # checks, changes nothing
        assert len(store.partitions("t")) == 3
    async with open_store(tmp_path, read_only=True) as store:
        with pytest.raises(StoreError):
            await store.create_partitions("t", 5)


async def test_folders_left_by_an_interrupted_growth_are_ignored_then_reused(
    tmp_path: Path,
) -> None:
    async with open_store(tmp_path) as store:
        await store.create_topic("t", TopicConfig(partitions=1))
    # A crash after the new folders were made, before topic.json named them.
    (tmp_path / "t" / "1").mkdir()
    (tmp_path / "t" / "2").mkdir()
    async with open_store(tmp_path) as store:
        assert len(store.partitions("t")) == 1
        await store.create_partitions("t", 3)
        await store.append("t", [NewRecord(value=b"x")], partition=2)
    async with open_store(tmp_path) as store:
        assert [p.log_end_offset for p in store.describe_topic("t").partitions] == [0, 0, 1]
