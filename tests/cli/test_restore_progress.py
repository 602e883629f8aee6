"""A running app's restore of its state stores, seen while it runs: ``App.restore_progress``,
its metrics, ``headwater describe --app-metrics`` reading them, and what the progress
bar of ``headwater run --until-caught-up`` shows.

The app runs in the test's event loop beside the metrics server (the CLI's own
``serving_metrics``); the embedded backend is held before the restore's second fetch of
the changelog, so the test looks at a restore halfway, then lets it finish.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import pytest

from headwater.cli._app_commands import load_app
from headwater.cli._app_run import bar_state
from headwater.cli._main import run
from headwater.cli._metrics_http import serving_metrics
from headwater.processing import RestoreProgress, open_in_process
from headwater.store import (
    CleanupPolicy,
    NewRecord,
    TopicConfig,
    disable_metrics,
    enable_metrics,
    open_store,
)

APP = """
from headwater.processing import App

app = App("counter")
app.stream("in").key_by(lambda v: v["k"]).count(name="n").to_stream().to("counts")
"""
CHANGELOG = "counter-n-changelog"
#: Changelog records, padded so that the restore takes several fetches of 8 MiB.
RECORDS = 3_000
PADDING = b" " * 5_000


@pytest.fixture
def metrics_on() -> Iterator[None]:
    enable_metrics()
    yield
    disable_metrics()


async def fill(data: Path) -> None:
    async with open_store(data) as store:
        await store.create_topic("in", TopicConfig(partitions=1))
        await store.append("in", [NewRecord(b'{"k": "new"}')], partition=0)
        await store.create_topic(
            CHANGELOG, TopicConfig(partitions=1, cleanup_policy=CleanupPolicy.COMPACT)
        )
        for start in range(0, RECORDS, 100):  # counts of keys the input never has
            await store.append(
                CHANGELOG,
                [NewRecord(PADDING + b"%d" % i, b'"old%d"' % i) for i in range(start, start + 100)],
                partition=0,
            )


@pytest.mark.usefixtures("metrics_on")
async def test_a_restore_in_progress_is_seen_in_describe(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "data"
    await fill(data)
    (tmp_path / "app.py").write_text(APP)
    app = load_app(str(tmp_path / "app.py"))  # as describe loads it
    held, release = anyio.Event(), anyio.Event()
    async with open_in_process(data) as local, serving_metrics(("127.0.0.1", 0)) as url:
        assert url is not None
        fetch = local.fetch

        async def fetch_held(topic: str, partition: int, offset: int, max_bytes: int) -> Any:
            if topic == CHANGELOG and offset > 0 and not release.is_set():
                held.set()
                await release.wait()
            return await fetch(topic, partition, offset, max_bytes)

        local.fetch = fetch_held  # type: ignore[method-assign]
        async with anyio.create_task_group() as tg:
            tg.start_soon(lambda: app.run_async(backend=local, until_caught_up=True))
            await held.wait()
            [(where, progress)] = (app.restore_progress() or {}).items()
            assert where == ("1_0", "n")  # the group after the repartition
            assert 0 < progress.restored < progress.total == RECORDS
            assert not progress.done
            assert bar_state(app) == (
                "app 'counter': restoring 1 store(s)",
                progress.restored,
                RECORDS,
            )  # what run --until-caught-up's bar shows meanwhile
            status = await anyio.to_thread.run_sync(
                run, ["describe", str(tmp_path / "app.py"), "--app-metrics", url]
            )
            assert status == 0
            out = capsys.readouterr().out
            assert out.startswith(app.describe())  # the topology comes first
            assert f"task 1_0 store 'n': restoring {progress.restored:,} / {RECORDS:,}" in out, out
            release.set()
        assert all(p.done for p in (app.restore_progress() or {}).values())
        assert bar_state(app) == ("app 'counter': 1 partition(s)", 1, 1)  # the input's
        stats = app.statistics()
        assert stats is not None and stats.records_in == 2  # the input, then the repartition


def test_describe_says_when_the_metrics_hold_no_store_of_the_app(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "app.py").write_text(APP)
    assert run(["describe", str(tmp_path / "app.py"), "--app-metrics", "http://127.0.0.1:1/m"]) == 1
    assert "cannot read the app's metrics at http://127.0.0.1:1/m" in capsys.readouterr().err


def test_restore_progress_is_done_once_it_read_its_total() -> None:
    assert RestoreProgress(3, 3).done and RestoreProgress(0, 0).done
    assert not RestoreProgress(2, 3).done
