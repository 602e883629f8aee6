"""Repartition topics keep what was written to them until the app has read it, however old
its timestamps, and lose it once committed: they are created with no retention, and the
runtime deletes the records before its committed offsets. On a data directory and on a
cluster (``headwater broker``, Apache Kafka)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anyio
import confluent_kafka as ck
import orjson
import pytest

from headwater.groups import GroupConfig, GroupCoordinator, TopicPartition
from headwater.processing import App, AppConfig, InProcessBackend
from headwater.processing._encoding import OutRecords
from headwater.store import NewRecord, Record, RecordColumns, TopicConfig, open_store

from .cluster import TIMEOUT_S, committed, create_topic, topic_config, unique
from .helpers import committed as committed_in
from .test_exactly_once import read_committed

DAY_MS = 24 * 3600 * 1000
KEYS = 7


def events(count: int) -> list[dict[str, Any]]:
    return [{"i": i, "k": f"k{i % KEYS}"} for i in range(count)]


def counting(name: str, source: str, **options: Any) -> App:
    """Count each key's events: through ``<name>-n-repartition``, keyed by ``k``."""
    app = App(name, **options)
    app.stream(source).key_by(lambda e: e["k"]).count(name="n").to_stream().to(f"{name}-out")
    return app


def latest_counts(updates: Sequence[tuple[bytes | None, Any]]) -> dict[bytes | None, Any]:
    """Each key's last count, from the count's updates in the order written."""
    return dict(updates)


def expected_counts(count: int) -> dict[str, int]:
    counts: dict[str, int] = {}
    for event in events(count):
        counts[event["k"]] = counts.get(event["k"], 0) + 1
    return counts


async def load_old(data: Path, topic: str, count: int, partitions: int, batch: int) -> None:
    """Write ``events(count)`` to ``topic``, round-robin, timestamped 30 days ago."""
    old = int(time.time() * 1000) - 30 * DAY_MS
    async with open_store(data) as store:
        await store.create_topic(topic, TopicConfig(partitions=partitions))
        encoded = [orjson.dumps(e) for e in events(count)]
        for p in range(partitions):
            mine = [NewRecord(v, timestamp=old + i) for i, v in enumerate(encoded[p::partitions])]
            for start in range(0, len(mine), batch):
                await store.append(topic, mine[start : start + batch], partition=p)


class ReadsLate(InProcessBackend):
    """The embedded log, with the app's repartition topic read only once every record was
    written to it, and the store's retention applied to it before each read (as the
    store's maintenance may at any time): the reader of a replay that fell behind."""

    def __init__(self, *args: Any, topic: str, total: int) -> None:
        super().__init__(*args)
        self._topic = topic
        self._left = total
        self._written = anyio.Event()
        #: Each partition's segments once every record was written.
        self.segments_written: list[int] = []

    async def produce(self, topic: str, partition: int, records: OutRecords) -> None:
        await super().produce(topic, partition, records)
        if topic == self._topic:
            self._left -= records.count()
            if self._left <= 0 and not self._written.is_set():
                partitions = self.store.partitions(topic)
                self.segments_written = [len(p.log.segments) for p in partitions]
                self._written.set()

    async def fetch(self, topic: str, partition: int, offset: int, max_bytes: int) -> RecordColumns:
        if topic == self._topic:
            await self._written.wait()
            for written in self.store.partitions(topic):
                written.log.enforce_retention()
        return await super().fetch(topic, partition, offset, max_bytes)


async def test_a_replay_of_month_old_input_loses_nothing_to_retention(
    data: Path, tmp_path: Path
) -> None:
    total = 600
    await load_old(data, "old", total, partitions=2, batch=20)
    repartition = "replay-n-repartition"
    small_segments = TopicConfig(segment_bytes=1024)  # many segments, so retention has work
    async with (
        open_store(data, default_config=small_segments) as store,
        GroupCoordinator(store, config=GroupConfig(initial_rebalance_delay_ms=0)) as coordinator,
    ):
        backend = ReadsLate(store, coordinator, topic=repartition, total=total)
        config = AppConfig(
            commit_interval_ms=50, max_batch_bytes=512, state_dir=str(tmp_path / "state")
        )
        stats = await counting("replay", "old", config=config).run_async(
            until_caught_up=True, backend=backend
        )
        retention_ms = store.topic_config(repartition).retention_ms
    assert len(backend.segments_written) == 2 and min(backend.segments_written) > 3
    assert stats.records_in == 2 * total  # each record read from the input, then back
    updates = [(r.key, orjson.loads(r.value or b"")) for part in await _read(data) for r in part]
    assert latest_counts(updates) == {orjson.dumps(k): n for k, n in expected_counts(total).items()}
    assert retention_ms == -1


async def _read(data: Path) -> list[list[Record]]:
    """Every record of ``replay-out``, per partition (a read stops at a segment's end)."""
    async with open_store(data, read_only=True) as store:
        parts = []
        for partition in store.partitions("replay-out"):
            records: list[Record] = []
            offset = partition.log_start_offset
            while offset < partition.high_watermark:
                records += await partition.read_records(offset, 1 << 24)
                offset = records[-1].offset + 1
            parts.append(records)
        return parts


@pytest.mark.parametrize("guarantee", ["at_least_once", "exactly_once"])
async def test_a_run_deletes_the_repartition_records_it_committed_past(
    data: Path, tmp_path: Path, guarantee: str
) -> None:
    await load_old(data, "in", 300, partitions=2, batch=50)
    config = AppConfig(guarantee=guarantee, state_dir=str(tmp_path / "state"))
    await counting("purged", "in", config=config).run_async(until_caught_up=True, data_dir=data)
    offsets = await committed_in(data, "purged")
    repartition = "purged-n-repartition"
    async with open_store(data, read_only=True) as store:
        for p, partition in enumerate(store.partitions(repartition)):
            end = offsets[TopicPartition(repartition, p)]
            assert end > 0
            assert partition.log_start_offset == end


def produce_old(bootstrap: str, topic: str, count: int, partitions: int) -> None:
    """Write ``events(count)`` to ``topic``, round-robin, timestamped 30 days ago."""
    old = int(time.time() * 1000) - 30 * DAY_MS
    producer = ck.Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True})
    for i, event in enumerate(events(count)):
        producer.produce(topic, orjson.dumps(event), partition=i % partitions, timestamp=old + i)
    assert producer.flush(TIMEOUT_S) == 0


def start_offsets(bootstrap: str, topic: str, partitions: int) -> dict[int, int]:
    """Return each partition's first offset still stored (its low watermark)."""
    consumer = ck.Consumer({"bootstrap.servers": bootstrap, "group.id": unique("starts")})
    try:
        return {
            p: consumer.get_watermark_offsets(ck.TopicPartition(topic, p), timeout=TIMEOUT_S)[0]
            for p in range(partitions)
        }
    finally:
        consumer.close()


@pytest.mark.parametrize("guarantee", ["at_least_once", "exactly_once"])
async def test_a_replay_on_a_cluster_keeps_then_purges_its_repartition_records(
    cluster: str, tmp_path: Path, guarantee: str
) -> None:
    name = unique("replay")
    total = 400
    create_topic(cluster, f"{name}-in", 2)
    await anyio.to_thread.run_sync(produce_old, cluster, f"{name}-in", total, 2)
    config = AppConfig(
        guarantee=guarantee, commit_interval_ms=100, state_dir=str(tmp_path / "state")
    )
    app = counting(name, f"{name}-in", bootstrap=cluster, config=config)

    stats = await app.run_async(until_caught_up=True)

    assert stats.records_in == 2 * total
    out = await anyio.to_thread.run_sync(read_committed, cluster, f"{name}-out")
    updates = [(key, orjson.loads(value or b"")) for part in out for key, value in part]
    assert latest_counts(updates) == {orjson.dumps(k): n for k, n in expected_counts(total).items()}
    repartition = f"{name}-n-repartition"
    assert topic_config(cluster, repartition)["retention.ms"] == "-1"
    offsets = committed(cluster, name, repartition, 2)
    assert sum(offset for offset, _ in offsets.values()) >= total
    assert start_offsets(cluster, repartition, 2) == {p: offsets[p][0] for p in range(2)}
