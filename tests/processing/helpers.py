"""Helpers of the processing tests: load topics, run apps, read what they wrote."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson

from headwater.groups import GroupCoordinator, TopicPartition
from headwater.processing import App, RunStatistics
from headwater.store import NewRecord, Record, TopicConfig, open_store


async def load(
    data: Path,
    topic: str,
    values: Sequence[Any],
    *,
    partitions: int = 1,
    keys: Sequence[bytes | None] | None = None,
    raw: bool = False,
    batch: int = 1000,
) -> None:
    """Create ``topic`` if missing and append ``values`` (JSON unless ``raw``), ``batch``
    records per append.

    Unkeyed values are spread round-robin over the partitions; keyed ones by murmur2.
    """
    async with open_store(data) as store:
        if not store.has_topic(topic):
            await store.create_topic(topic, TopicConfig(partitions=partitions))
        count = len(store.partitions(topic))
        encoded = [v if raw else orjson.dumps(v) for v in values]
        if keys is not None:
            records = [NewRecord(v, k) for v, k in zip(encoded, keys, strict=True)]
            await store.append(topic, records)
            return
        for p in range(count):
            mine = [NewRecord(v) for v in encoded[p::count]]
            for start in range(0, len(mine), batch):
                await store.append(topic, mine[start : start + batch], partition=p)


async def read(data: Path, topic: str) -> list[list[Record]]:
    """Return every record of ``topic``, per partition."""
    async with open_store(data, read_only=True) as store:
        return [await p.read_records(0, 1 << 24) for p in store.partitions(topic)]


async def values(data: Path, topic: str) -> list[Any]:
    """Return the JSON values of every record of ``topic``, partition after partition."""
    return [orjson.loads(r.value) for part in await read(data, topic) for r in part]


async def committed(data: Path, group: str) -> dict[TopicPartition, int]:
    """Return ``group``'s committed offsets."""
    async with open_store(data) as store, GroupCoordinator(store) as coordinator:
        return {tp: o.offset for tp, o in coordinator.committed(group).items()}


async def run_until_caught_up(app: App, data: Path) -> RunStatistics:
    """Run ``app`` on ``data`` until it has consumed its inputs."""
    return await app.run_async(until_caught_up=True, data_dir=data)
