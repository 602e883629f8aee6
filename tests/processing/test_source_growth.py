"""An embedded app whose source topic gains partitions while it runs."""

from __future__ import annotations

import functools
from pathlib import Path

import anyio
import orjson

from headwater.processing import App, open_in_process
from headwater.store import NewRecord, Store

from .helpers import load, values


async def wait_for_records(store: Store, topic: str, count: int) -> None:
    """Return once ``topic`` holds ``count`` records, woken by its partitions' appends."""
    partitions = store.partitions(topic)
    while sum(p.high_watermark for p in partitions) < count:
        async with anyio.create_task_group() as tg:

            async def moved(partition: object, at: int) -> None:
                await partition.wait_for(at)  # type: ignore[attr-defined]
                tg.cancel_scope.cancel()

            for p in partitions:
                tg.start_soon(moved, p, p.high_watermark)


async def test_new_source_partitions_are_processed(data: Path) -> None:
    await load(data, "clicks", [{"i": i} for i in range(10)], partitions=2)
    await load(data, "out", [], partitions=2)
    app = App("grow")
    app.stream("clicks").map(lambda e: {**e, "seen": True}).to("out")
    stop = anyio.Event()
    with anyio.fail_after(60):
        async with open_in_process(data, serve=False) as local, anyio.create_task_group() as tg:
            tg.start_soon(functools.partial(app.run_async, stop=stop, backend=local))
            store = local.store
            await wait_for_records(store, "out", 10)
            await store.create_partitions("clicks", 4)
            await store.partition("clicks", 2).append([NewRecord(orjson.dumps({"i": 100}))])
            await store.partition("clicks", 3).append([NewRecord(orjson.dumps({"i": 101}))])
            # The app's group rebalances onto the new partitions and processes them.
            await wait_for_records(store, "out", 12)
            stop.set()
    got = await values(data, "out")
    assert sorted(e["i"] for e in got) == [*range(10), 100, 101]
    assert all(e["seen"] for e in got)
