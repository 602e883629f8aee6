"""A running app's metrics, served as ``headwater run --metrics`` serves them.

The app runs in the test's event loop beside the metrics server (the CLI's own
``serving_metrics``), so the test can hold a batch inside an operator, scrape while it
is held, then let it go and scrape again; httpx fetches ``/metrics`` over a socket and
prometheus_client's parser reads it. ``headwater run --metrics`` itself is run as a
subprocess at the end.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from processing.helpers import load
from prometheus_client.parser import text_string_to_metric_families

from headwater.cli._metrics_http import serving_metrics
from headwater.cli._top import _apps
from headwater.processing import App, windows
from headwater.store import disable_metrics

HEADWATER = str(Path(sys.executable).with_name("headwater"))

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@pytest.fixture
def metrics_off_after() -> Iterator[None]:
    """Metrics are turned on by the test; turn them off for the tests after it."""
    yield
    disable_metrics()


async def scrape(url: str) -> Samples:
    """GET ``url`` with an async client and parse it: {(sample name, labels): value}."""
    async with httpx.AsyncClient() as client:
        response = await client.get(url, timeout=10)
    assert response.status_code == 200
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def by_kind(samples: Samples, name: str) -> dict[str, float]:
    """Operator samples of ``name`` by operator kind (the label is ``#id kind ...``)."""
    out = {}
    for (sample, labels), number in samples.items():
        if sample == name:
            out[dict(labels)["operator"].split()[1]] = number
    return out


@pytest.mark.usefixtures("metrics_off_after")
async def test_operators_lag_batches_and_commits_are_scraped(tmp_path: Path) -> None:
    data = tmp_path / "data"
    # Even numbers land in partition 0, odd ones in partition 1.
    await load(data, "numbers", [{"n": i} for i in range(100)], partitions=2)
    held, release = anyio.Event(), anyio.Event()

    async def hold(value: dict[str, Any]) -> dict[str, Any]:
        if value["n"] == 2:  # partition 0's first batch stays in this operator
            held.set()
            await release.wait()
        return value

    app = App("metered", data_dir=data)
    (
        app.stream("numbers")
        .on_error("skip")
        .map(lambda v: v if v["n"] % 10 else 1 / 0)  # 0, 10, ..., 90 are skipped
        .filter(lambda v: v["n"] % 2 == 0)
        .map_async(hold)
        .to("evens")
    )
    async with serving_metrics(("127.0.0.1", 0)) as url, anyio.create_task_group() as tg:
        assert url is not None
        tg.start_soon(lambda: app.run_async(until_caught_up=True))
        await held.wait()
        during = await scrape(url)
        release.set()

    task = {"app": "metered", "task": "0_0"}
    assert during[("headwater_app_task_lag", frozenset(task.items()))] == 50

    after = await scrape_after_run(app)
    assert by_kind(after, "headwater_app_operator_records_in_total") == {
        "source": 100,
        "map": 100,
        "filter": 90,
        "map_async": 40,
        "to": 40,
    }
    assert by_kind(after, "headwater_app_operator_records_out_total") == {
        "source": 100,
        "map": 90,
        "filter": 40,
        "map_async": 40,
        "to": 40,
    }
    skipped = by_kind(after, "headwater_app_operator_skipped_total")
    assert skipped["map"] == 10
    assert sum(skipped.values()) == 10
    app_labels = frozenset({("app", "metered")})
    assert after[("headwater_app_records_in_total", app_labels)] == 100
    assert after[("headwater_app_records_out_total", app_labels)] == 40
    batches = after[("headwater_app_batches_total", app_labels)]
    assert batches >= 2
    assert after[("headwater_app_batch_seconds_count", app_labels)] == batches
    # A batch that wrote something waited for it (one whose records were all filtered
    # out or skipped did not).
    assert 1 <= after[("headwater_app_write_seconds_count", app_labels)] <= batches
    assert after[("headwater_app_write_seconds_sum", app_labels)] > 0
    commits = after[("headwater_app_commits_total", app_labels)]
    assert commits >= 1
    assert after[("headwater_app_commit_seconds_count", app_labels)] == commits
    # The run is over: it processes no task, so none lags.
    assert not [name for name, _ in after if name == "headwater_app_task_lag"]


@pytest.mark.usefixtures("metrics_off_after")
async def test_records_that_came_after_their_window_closed_are_counted_late(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    # 12000 closes [0, 10000) (grace 0): 3000 and 4000 come too late for it.
    times = (0, 5000, 12000, 3000, 4000, 13000)
    await load(data, "events", [{"k": "a", "t": t} for t in times])
    app = App("windowed", data_dir=data)
    (
        app.stream("events")
        .key_by(lambda e: e["k"])
        .window(windows.tumbling(seconds=10), timestamp=lambda e: e["t"], grace_ms=0)
        .count()
        .final()
        .to("counts")
    )
    async with serving_metrics(("127.0.0.1", 0)) as url:
        assert url is not None
        await app.run_async(until_caught_up=True)
        samples = await scrape(url)

    assert samples[("headwater_app_late_total", frozenset({("app", "windowed")}))] == 2
    assert app.statistics().late == 2  # type: ignore[union-attr]


async def scrape_after_run(app: App) -> Samples:
    """Scrape once more after the run: the runtime's counters stay readable."""
    assert app.statistics() is not None
    async with serving_metrics(("127.0.0.1", 0)) as url:
        assert url is not None
        return await scrape(url)


_URL = re.compile(r"serving metrics at (http://\S+/metrics)")

APP = """
from headwater.processing import App

app = App("printer")
(
    app.stream("numbers")
    .peek(lambda v: v["n"] == 99 and print("saw the last one", flush=True))
    .filter(lambda v: v["n"] % 3 == 0)
    .to("threes")
)
"""


def test_headwater_run_serves_its_metrics(tmp_path: Path) -> None:
    data = tmp_path / "data"
    anyio.run(load, data, "numbers", [{"n": i} for i in range(100)])
    (tmp_path / "app.py").write_text(APP)
    proc = subprocess.Popen(
        [HEADWATER, "--data", str(data), "run", str(tmp_path / "app.py"), "-v",
         "--metrics", "127.0.0.1:0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None and proc.stderr is not None
        url = None
        while url is None:  # the server is up before the app starts
            line = proc.stderr.readline()
            assert line, "headwater run ended before serving its metrics"
            found = _URL.search(line)
            url = found[1] if found else None
        # The peek runs while its batch goes through the steps, which then finish it
        # before the event loop answers a scrape.
        assert proc.stdout.readline() == "saw the last one\n"
        samples = anyio.run(scrape, url)
        assert by_kind(samples, "headwater_app_operator_records_out_total") == {
            "source": 100,
            "peek": 100,
            "filter": 34,
            "to": 34,
        }
        # What headwater top --app-metrics reads of it, and of an address nobody serves.
        apps, unreachable = anyio.run(_apps, [url, "http://127.0.0.1:1/metrics"])
        [(name, app)] = apps.items()
        assert name == "printer"
        outs = {operator.split()[1]: counts[1] for operator, counts in app.operators.items()}
        assert outs == {"source": 100, "peek": 100, "filter": 34, "to": 34}
        assert list(unreachable) == ["http://127.0.0.1:1/metrics"]
    finally:
        proc.terminate()
        proc.wait(30)
    assert proc.returncode == 0, proc.stderr.read() if proc.stderr else ""
