"""An idle exactly-once run commits no transactions.

Every commit interval, an exactly-once run commits the open transaction with the
positions that moved; when nothing was written since the last commit and no position
moved, there is nothing to commit, and the run commits nothing (it once began and
committed an empty transaction every interval, and counted each). The runs here read
their input to its end and commit, then run again with no new input for many commit
intervals (the test sleeps on the run's event loop, so the periodic commit's shorter
sleeps end first), then read new input: that is committed as before. On a data
directory (the store's transactions) and on a cluster (``headwater broker`` and Apache
Kafka, through librdkafka's transactional producer).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import anyio
import orjson

from headwater.processing import App, AppConfig, RunStatistics
from headwater.store import IsolationLevel, open_store

from .cluster import create_topic, produce, unique
from .helpers import load
from .test_exactly_once import read_committed

INTERVAL_MS = 20
#: How many commit intervals the idle run lasts.
IDLE_INTERVALS = 25


def passthrough(name: str, where: str | Path) -> App:
    """An exactly-once app that copies topic ``in`` to ``out``, on the cluster at ``where``
    (a bootstrap) or on the data directory ``where``."""
    config = AppConfig(commit_interval_ms=INTERVAL_MS, guarantee="exactly_once")
    if isinstance(where, Path):
        app = App(name, data_dir=where, config=config)
    else:
        app = App(name, bootstrap=where, config=config)
    app.stream(f"{name}-in").to(f"{name}-out")
    return app


async def run_idle(app: App) -> RunStatistics:
    """Run ``app`` (not until caught up) for ``IDLE_INTERVALS`` commit intervals once it
    processes its partitions; return its statistics."""
    stop = anyio.Event()
    result: list[RunStatistics] = []

    async def run() -> None:
        result.append(await app.run_async(stop=stop))

    async with anyio.create_task_group() as tg:
        tg.start_soon(run)
        with anyio.fail_after(60):
            while not app.progress():  # the partitions are assigned and resumed
                await anyio.sleep(0.01)
        await anyio.sleep(IDLE_INTERVALS * INTERVAL_MS / 1000)
        stop.set()
    return result[0]


def events(start: int, count: int) -> list[bytes]:
    return [orjson.dumps({"i": i}) for i in range(start, start + count)]


async def check_idle_runs_commit_nothing(where: str | Path, name: str) -> None:
    first = await passthrough(name, where).run_async(until_caught_up=True)
    assert first.records_in == 100 and first.commits >= 1

    idle = await run_idle(passthrough(name, where))
    assert idle.records_in == 0
    assert idle.commits == 0, f"{idle.commits} empty transactions committed"

    if isinstance(where, Path):
        await load(where, f"{name}-in", [{"i": i} for i in range(100, 150)])
    else:
        await anyio.to_thread.run_sync(
            lambda: produce(where, f"{name}-in", events(100, 50), partitions=1)
        )
    last = await passthrough(name, where).run_async(until_caught_up=True)
    assert last.records_in == 50 and last.commits >= 1


async def test_an_idle_embedded_run_commits_no_transactions(data: Path) -> None:
    name = "idle"
    await load(data, f"{name}-in", [{"i": i} for i in range(100)])
    await check_idle_runs_commit_nothing(data, name)
    async with open_store(data, read_only=True) as store:
        out = await store.partition(f"{name}-out", 0).read_records(
            0, 1 << 24, isolation=IsolationLevel.READ_COMMITTED
        )
    assert Counter(orjson.loads(r.value or b"")["i"] for r in out) == Counter(range(150))


async def test_an_idle_run_on_a_cluster_commits_no_transactions(cluster: str) -> None:
    name = unique("idle")
    create_topic(cluster, f"{name}-in", 1)
    produce(cluster, f"{name}-in", events(0, 100), partitions=1)
    await check_idle_runs_commit_nothing(cluster, name)
    out = await anyio.to_thread.run_sync(read_committed, cluster, f"{name}-out")
    assert Counter(orjson.loads(v or b"")["i"] for _, v in out[0]) == Counter(range(150))
