"""Store: topics in a data directory, the async append/read API, group commit."""

from __future__ import annotations

import os
from pathlib import Path

import anyio
import pytest

from headwater.store import (
    Durability,
    InvalidConfigError,
    InvalidTopicError,
    LogClosedError,
    NewRecord,
    RecordTooLargeError,
    StoreError,
    TopicConfig,
    TopicExistsError,
    TopicNotFoundError,
    encode_batch,
    open_store,
    partition_for_key,
)


async def test_create_list_describe_delete(tmp_path: Path) -> None:
    async with open_store(tmp_path) as store:
        await store.create_topic("clicks", TopicConfig(partitions=3))
        assert store.list_topics() == ["clicks"]
        with pytest.raises(TopicExistsError):
            await store.create_topic("clicks")
        with pytest.raises(InvalidConfigError):
            await store.create_topic("bad/name")
        description = store.describe_topic("clicks")
        assert [p.log_end_offset for p in description.partitions] == [0, 0, 0]
        await store.delete_topic("clicks")
        assert store.list_topics() == []
        with pytest.raises(TopicNotFoundError):
            store.describe_topic("clicks")
    assert [p.name for p in tmp_path.iterdir()] == [".lock"]


async def test_topics_survive_reopen(tmp_path: Path) -> None:
    async with open_store(tmp_path) as store:
        await store.create_topic("a", TopicConfig(partitions=2, durability=Durability.ALWAYS))
        await store.append("a", [NewRecord(value=b"1", key=b"k")])
    async with open_store(tmp_path) as store:
        assert store.topic_config("a").durability is Durability.ALWAYS
        p = partition_for_key(b"k", 2)
        records = await store.partition("a", p).read_records(0, 1000)
        assert [r.value for r in records] == [b"1"]


async def test_keyed_records_follow_murmur2(tmp_path: Path) -> None:
    async with open_store(tmp_path) as store:
        await store.create_topic("t", TopicConfig(partitions=4))
        keys = [f"user-{i}".encode() for i in range(50)]
        placed = await store.append("t", [NewRecord(value=k, key=k) for k in keys])
        for key, (partition, _offset) in zip(keys, placed, strict=True):
            assert partition == partition_for_key(key, 4)
        # per-partition offsets are dense and in input order
        for p in range(4):
            offsets = [o for (q, o) in placed if q == p]
            assert offsets == list(range(len(offsets)))


async def test_unkeyed_append_sticks_to_one_partition(tmp_path: Path) -> None:
    async with open_store(tmp_path) as store:
        await store.create_topic("t", TopicConfig(partitions=4))
        placed = await store.append("t", [NewRecord(value=b"x")] * 10)
        assert len({p for p, _ in placed}) == 1


@pytest.mark.parametrize("durability", list(Durability))
async def test_concurrent_appends_are_acknowledged_and_readable(
    tmp_path: Path, durability: Durability
) -> None:
    async with open_store(tmp_path) as store:
        await store.create_topic("t", TopicConfig(durability=durability))
        partition = store.partition("t", 0)
        acknowledged: list[int] = []

        async def writer(w: int) -> None:
            for i in range(20):
                info = await partition.append([NewRecord(value=f"{w}-{i}".encode())])
                assert partition.high_watermark > info.last_offset
                acknowledged.append(info.base_offset)

        async with anyio.create_task_group() as tg:
            for w in range(5):
                tg.start_soon(writer, w)
        assert sorted(acknowledged) == list(range(100))
        if durability is not Durability.NEVER:
            assert partition.log.recovery_point == 100
        records = await partition.read_records(0, 1 << 20)
        assert len(records) == 100


async def test_group_commit_shares_fsyncs(tmp_path: Path) -> None:
    async with open_store(tmp_path) as store:
        await store.create_topic("t", TopicConfig(durability=Durability.BATCH))
        partition = store.partition("t", 0)
        flushes = 0
        real_flush = partition.log.prepare_flush

        def counting_prepare():  # type: ignore[no-untyped-def]
            nonlocal flushes
            plan = real_flush()
            flushes += plan is not None
            return plan

        partition.log.prepare_flush = counting_prepare  # type: ignore[method-assign]
        async with anyio.create_task_group() as tg:
            for _ in range(50):
                tg.start_soon(partition.append, [NewRecord(value=b"x")])
        assert partition.high_watermark == 50
        assert flushes < 50


async def test_caught_up_reader_wakes_on_new_data(tmp_path: Path) -> None:
    async with open_store(tmp_path) as store:
        await store.create_topic("t")
        partition = store.partition("t", 0)
        seen: list[bytes | None] = []

        async def reader() -> None:
            offset = 0
            while len(seen) < 3:
                await partition.wait_for(offset)
                records = await partition.read_records(offset, 1 << 16)
                seen.extend(r.value for r in records)
                offset = records[-1].offset + 1

        async with anyio.create_task_group() as tg:
            tg.start_soon(reader)
            for v in (b"a", b"b", b"c"):
                await anyio.wait_all_tasks_blocked()  # the reader is caught up and waits
                await partition.append([NewRecord(value=v)])
        assert seen == [b"a", b"b", b"c"]


async def test_deleting_a_topic_wakes_its_readers(tmp_path: Path) -> None:
    async with open_store(tmp_path) as store:
        await store.create_topic("t")
        partition = store.partition("t", 0)

        async def reader() -> None:
            with pytest.raises(LogClosedError):
                await partition.wait_for(0)

        async with anyio.create_task_group() as tg:
            tg.start_soon(reader)
            await anyio.wait_all_tasks_blocked()  # the reader waits for offset 0
            await store.delete_topic("t")


async def test_store_compacts_compacted_topics(tmp_path: Path) -> None:
    from headwater.store import CleanupPolicy

    config = TopicConfig(cleanup_policy=CleanupPolicy.COMPACT, segment_bytes=1024)
    async with open_store(tmp_path) as store:
        await store.create_topic("table", config)
        for i in range(300):
            await store.append(
                "table", [NewRecord(value=f"{i}".encode(), key=f"k{i % 3}".encode())]
            )
        removed = await store.compact()
        assert removed > 250
        partition = store.partition("table", 0)
        latest = {}
        offset = partition.log_start_offset
        while offset < partition.high_watermark:
            records = await partition.read_records(offset, 1 << 20)
            if not records:
                break
            for r in records:
                latest[r.key] = r.value
            offset = records[-1].offset + 1
        assert latest == {b"k0": b"297", b"k1": b"298", b"k2": b"299"}


async def test_one_process_owns_a_data_directory(tmp_path: Path) -> None:
    import subprocess
    import sys

    from headwater.store import DataDirectoryLockedError, StoreError

    async with open_store(tmp_path) as store:
        await store.create_topic("t")
        other = subprocess.run(
            [
                sys.executable,
                "-c",
                "import anyio, sys\n"
                "from headwater.store import open_store, DataDirectoryLockedError\n"
                "async def main():\n"
                "    try:\n"
                f"        async with open_store({str(tmp_path)!r}):\n"
                "            pass\n"
                "    except DataDirectoryLockedError as exc:\n"
                "        print(exc)\n"
                "        sys.exit(3)\n"
                "anyio.run(main)\n",
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        assert other.returncode == 3, other.stderr
        assert f"in use by pid {os.getpid()} (" in other.stdout  # the holder: this process
        with pytest.raises(DataDirectoryLockedError):
            async with open_store(tmp_path):
                pass
    async with open_store(tmp_path, read_only=True) as reader:
        assert reader.list_topics() == ["t"]
        with pytest.raises(StoreError):
            await reader.append("t", [NewRecord(value=b"x")])


def test_the_store_runs_on_asyncio_too(tmp_path: Path) -> None:
    async def main() -> list[bytes | None]:
        async with open_store(tmp_path) as store:
            await store.create_topic("t", TopicConfig(durability=Durability.BATCH))
            partition = store.partition("t", 0)
            seen: list[bytes | None] = []

            async def reader() -> None:
                await partition.wait_for(1)
                seen.extend(r.value for r in await partition.read_records(0, 1 << 16))

            async with anyio.create_task_group() as tg:
                tg.start_soon(reader)
                await partition.append([NewRecord(value=b"a")])
                await partition.append([NewRecord(value=b"b")])
            return seen

    assert anyio.run(main, backend="asyncio") == [b"a", b"b"]


async def test_nowait_appends_become_visible_once_durable(tmp_path: Path) -> None:
    from headwater.store import encode_batch

    async with open_store(tmp_path) as store:
        await store.create_topic("t", TopicConfig(durability=Durability.BATCH))
        partition = store.partition("t", 0)
        infos = [
            partition.append_batch_nowait(encode_batch([NewRecord(value=b"%d" % i)]))
            for i in range(10)
        ]
        assert [i.base_offset for i in infos] == list(range(10))
        assert partition.high_watermark == 0  # written, not yet durable: not readable
        assert await partition.read(0, 1 << 16) == b""
        async with anyio.create_task_group() as tg:
            for info in infos:
                tg.start_soon(partition.wait_durable, info.next_offset)
        assert partition.high_watermark == partition.log.recovery_point == 10
        assert [r.value for r in await partition.read_records(0, 1 << 16)] == [
            b"%d" % i for i in range(10)
        ]


# -- internal topics, colliding names, config changes ------------------------------------


async def test_internal_topics_are_refused_unless_internal(tmp_path: Path) -> None:
    async with open_store(tmp_path) as store:
        with pytest.raises(InvalidTopicError, match=r"cannot create topic '__mine'.*reserved"):
            await store.create_topic("__mine")
        assert not store.has_topic("__mine")
        await store.create_topic("__mine", TopicConfig(partitions=2), internal=True)
        record = [NewRecord(value=b"x")]
        with pytest.raises(InvalidTopicError, match="cannot append to topic '__mine'"):
            await store.append("__mine", record)
        with pytest.raises(InvalidTopicError):
            await store.append("__mine", [])
        partition = store.partition("__mine", 0)
        with pytest.raises(InvalidTopicError):
            await partition.append(record)
        with pytest.raises(InvalidTopicError):
            await partition.append_batch(encode_batch(record))
        with pytest.raises(InvalidTopicError):
            partition.append_batch_nowait(encode_batch(record))
        assert partition.log_end_offset == 0  # nothing was written
        with pytest.raises(InvalidTopicError, match="cannot change the configuration"):
            await store.alter_topic_config("__mine", {"retention.ms": "1"})
        with pytest.raises(InvalidTopicError, match="cannot delete topic '__mine'"):
            await store.delete_topic("__mine")
        assert store.topic_config("__mine").retention_ms == TopicConfig().retention_ms
        # headwater's own code says so, and may.
        assert await store.append("__mine", record, partition=1, internal=True) == [(1, 0)]
        await partition.append(record, internal=True)
        await partition.append_batch(encode_batch(record), internal=True)
        config = await store.alter_topic_config("__mine", {"retention.ms": "1"}, internal=True)
        assert config.retention_ms == 1
        await store.delete_topic("__mine", internal=True)
        assert not store.has_topic("__mine")
        # Reading an internal topic stays allowed.
        await store.create_topic("__mine", internal=True)
        assert await store.partition("__mine", 0).read_records(0, 1 << 10) == []


@pytest.mark.parametrize(("first", "second"), [("a.b", "a_b"), ("a_b", "a.b"), ("x.y_z", "x_y.z")])
async def test_names_that_collide_once_dot_and_underscore_are_alike_are_refused(
    tmp_path: Path, first: str, second: str
) -> None:
    async with open_store(tmp_path) as store:
        await store.create_topic(first)
        with pytest.raises(InvalidTopicError) as info:
            await store.create_topic(second)
        assert f"topic {second!r} collides with existing topic {first!r}" in str(info.value)
        with pytest.raises(TopicExistsError):
            await store.create_topic(first)
        await store.create_topic("a-b")  # '-' is not one of the two
        assert store.list_topics() == sorted([first, "a-b"])
        await store.delete_topic(first)
        await store.create_topic(second)  # free again once the other is gone


async def test_concurrent_creates_of_colliding_names_let_one_through(tmp_path: Path) -> None:
    outcomes: list[str] = []
    async with open_store(tmp_path) as store:

        async def create(name: str) -> None:
            try:
                await store.create_topic(name)
            except (InvalidTopicError, TopicExistsError):  # which one: the order they run in
                outcomes.append("refused")
            else:
                outcomes.append("created")

        async with anyio.create_task_group() as tg:
            for name in ("t.1", "t_1", "t.1"):
                tg.start_soon(create, name)
        assert len(store.list_topics()) == 1
    assert outcomes.count("created") == 1


async def test_alter_topic_config_applies_at_once_and_survives_reopen(tmp_path: Path) -> None:
    defaults = TopicConfig(retention_ms=86_400_000)
    async with open_store(tmp_path, default_config=defaults) as store:
        await store.create_topic("t", TopicConfig(partitions=2, retention_ms=5_000))
        planned = store.altered_topic_config("t", {"max.message.bytes": "100"})
        assert planned.max_message_bytes == 100
        assert store.topic_config("t").max_message_bytes == TopicConfig().max_message_bytes
        config = await store.alter_topic_config(
            "t", {"max.message.bytes": "100", "retention.ms": None}
        )
        assert (config.max_message_bytes, config.retention_ms, config.partitions) == (
            100,
            86_400_000,
            2,
        )
        assert store.partition("t", 1).config == config
        with pytest.raises(RecordTooLargeError):  # the new limit holds for the next append
            await store.append("t", [NewRecord(value=b"x" * 200)], partition=1)
        with pytest.raises(InvalidConfigError, match="not a topic setting"):
            await store.alter_topic_config("t", {"partitions": "3"})
        with pytest.raises(InvalidConfigError, match="known keys"):
            await store.alter_topic_config("t", {"retention.hours": "3"})
        with pytest.raises(TopicNotFoundError):
            await store.alter_topic_config("nope", {"retention.ms": "3"})
        assert store.topic_config("t") == config  # the refused changes changed nothing
    async with open_store(tmp_path, default_config=defaults) as store:
        assert store.topic_config("t") == config
    async with open_store(tmp_path, read_only=True) as store:
        with pytest.raises(StoreError, match="read-only"):
            await store.alter_topic_config("t", {"retention.ms": "3"})
