"""``headwater top``: a live view of a log's topics, consumer groups and apps.

Every ``--interval`` seconds it looks at the log -- a broker (``--bootstrap``) through
the Kafka protocol, or a data directory -- and at the apps whose metrics it is given
(``--app-metrics URL``, what ``headwater run --metrics`` serves), and redraws the tables
of ``_top_view.py`` in place (rich's live display: the cursor goes back over the last
frame, nothing is cleared, so nothing flickers). ``q`` or Ctrl-C leaves, leaving the last
frame on the screen. ``--once`` prints a single snapshot instead -- two looks
``--interval`` apart, so that it has rates -- for scripts and tests.

The terminal is put in cbreak mode (keys arrive one by one, unechoed; Ctrl-C still
signals) while the view runs, and restored however it ends. Keys are read only after a
frame is drawn, so a key typed before the view started acts after its first frame.
"""

from __future__ import annotations

import contextlib
import os
import sys
import termios
import time
import tty
from collections.abc import Iterator, Sequence
from pathlib import Path

import anyio
import anyio.to_thread
import click
from rich.live import Live

from headwater.groups import GroupCoordinator, TopicPartition
from headwater.store import Store

from ._access import GroupAdmin, LogAccess
from ._datadir import claimed, data_dir, data_option
from ._local import through
from ._local_groups import LocalGroups
from ._output import stdout_console
from ._owner import Served
from ._remote import admin_client
from ._run import run_until_signal
from ._target import bootstrap_of, log_access, log_option
from ._top_view import AppSample, GroupSample, Sample, render

#: Keys that leave the live view.
QUIT_KEYS = (b"q", b"Q")


@click.command()
@click.option(
    "--interval",
    type=click.FloatRange(min=0.1, max=3600),
    default=2.0,
    show_default=True,
    help="Seconds between two looks at the log.",
)
@click.option("--once", is_flag=True, help="Print one snapshot (with rates) and exit.")
@click.option(
    "--app-metrics",
    "app_urls",
    multiple=True,
    metavar="URL",
    help="Also show the app whose metrics are at URL (headwater run --metrics); repeatable.",
)
@data_option
@log_option
@click.pass_context
def top(
    ctx: click.Context,
    *,
    interval: float,
    once: bool,
    app_urls: tuple[str, ...],
    data: object,
    bootstrap: str | None,
) -> None:
    """Watch the topics (records/s in and out), consumer groups (lag per partition and
    whether it shrinks) and apps (per-operator rates) of a data directory or a broker.

    q or Ctrl-C leaves. --once prints one snapshot instead.
    """
    access = log_access(ctx)
    cluster = bootstrap_of(ctx)
    directory = None if cluster is not None else data_dir(ctx)
    title = access.description
    console = stdout_console()
    if not once and not console.is_terminal:
        raise click.UsageError("the live view needs a terminal; use --once for a snapshot")

    async def look() -> Sample:
        return await take_sample(access, cluster, directory, app_urls)

    if once:

        async def snapshot() -> None:
            first = await look()
            await anyio.sleep(interval)
            console.print(render(await look(), first, title=title))

        run_until_signal(snapshot)
        return

    async def watch() -> None:
        previous: Sample | None = None
        with _cbreak(sys.stdin) as keys, Live(console=console, auto_refresh=False) as live:
            live.vertical_overflow = "crop"
            while True:
                current = await look()
                live.update(render(current, previous, title=title), refresh=True)
                previous = current
                with anyio.move_on_after(interval):
                    if await _quit_pressed(keys):
                        return

    run_until_signal(watch)


@contextlib.contextmanager
def _cbreak(stream: object) -> Iterator[int | None]:
    """Put the terminal on ``stream`` in cbreak mode for a block; yield its descriptor
    (None when it is not a terminal: no keys are read)."""
    fileno = getattr(stream, "fileno", None)
    fd = fileno() if callable(fileno) else None
    if not isinstance(fd, int) or not os.isatty(fd):
        yield None
        return
    saved = termios.tcgetattr(fd)
    # TCSANOW: a key typed before now is kept, not flushed.
    tty.setcbreak(fd, termios.TCSANOW)
    try:
        yield fd
    finally:
        termios.tcsetattr(fd, termios.TCSANOW, saved)


async def _quit_pressed(fd: int | None) -> bool:
    """Wait for keys on ``fd`` (forever, if None); return True when one of them quits."""
    if fd is None:
        await anyio.sleep_forever()
    assert fd is not None
    while True:
        await anyio.wait_readable(fd)
        typed = os.read(fd, 64)
        if not typed or any(key in typed for key in QUIT_KEYS):
            return True


async def take_sample(
    access: LogAccess, bootstrap: str | None, directory: Path | None, app_urls: Sequence[str]
) -> Sample:
    """Look at the log once (and at the apps' metrics)."""
    if bootstrap is not None:
        topics, groups = await _cluster_sample(bootstrap, access)
    else:
        assert directory is not None
        topics, groups = await _directory_sample(directory)
    apps, unreachable = await _apps(app_urls)
    return Sample(time.monotonic(), topics, groups, apps, unreachable)


def _remote_topics(bootstrap: str) -> _Topics:
    with admin_client(bootstrap) as client:
        described = client.describe_topics()
    return {
        t.name: tuple((p.log_start_offset, p.high_watermark) for p in t.partitions)
        for t in described
    }


_Topics = dict[str, tuple[tuple[int, int], ...]]


async def _cluster_sample(
    bootstrap: str, access: LogAccess
) -> tuple[_Topics, dict[str, GroupSample]]:
    topics = await anyio.to_thread.run_sync(_remote_topics, bootstrap)
    async with access.groups(writer=False) as admin:
        groups = await _groups(admin)
    return topics, groups


async def _directory_sample(directory: Path) -> tuple[_Topics, dict[str, GroupSample]]:
    """Look at a data directory: its store, opened here, or through the owner that
    serves it (whose groups have their live members)."""
    if not directory.is_dir():
        return {}, {}
    async with claimed(directory, writer=False) as claim:
        if isinstance(claim, Served):
            return await _cluster_sample(claim.bootstrap, through(claim))
        return await _store_sample(claim)


async def _store_sample(store: Store) -> tuple[_Topics, dict[str, GroupSample]]:
    async with GroupCoordinator(store) as coordinator:
        topics = {}
        for name in store.list_topics():
            described = store.describe_topic(name)
            topics[name] = tuple(
                (p.log_start_offset, p.high_watermark) for p in described.partitions
            )
        groups = await _groups(LocalGroups(store, coordinator))
    return topics, groups


async def _groups(admin: GroupAdmin) -> dict[str, GroupSample]:
    groups = {}
    for row in await admin.list_groups():
        view = await admin.describe_group(row.group_id)
        partitions: dict[TopicPartition, tuple[int | None, int | None]] = {
            p.partition: (p.committed, p.log_end_offset) for p in view.partitions
        }
        groups[row.group_id] = GroupSample(view.state, view.members, partitions)
    return groups


async def _apps(urls: Sequence[str]) -> tuple[dict[str, AppSample], dict[str, str]]:
    """Scrape each app's metrics; return the apps found, and the URLs that failed."""
    if not urls:
        return {}, {}
    # Imported here: only a view of apps needs an HTTP client and the metrics parser.
    import httpx  # noqa: PLC0415
    from prometheus_client.parser import text_string_to_metric_families  # noqa: PLC0415

    operators: dict[str, dict[str, list[float]]] = {}
    lags: dict[str, dict[str, float]] = {}
    unreachable = {}
    fields = {
        "headwater_app_operator_records_in_total": 0,
        "headwater_app_operator_records_out_total": 1,
        "headwater_app_operator_skipped_total": 2,
        "headwater_app_operator_dead_lettered_total": 3,
    }
    async with httpx.AsyncClient(timeout=5) as client:
        for url in urls:
            try:
                response = await client.get(url)
                response.raise_for_status()
                families = list(text_string_to_metric_families(response.text))
            except (httpx.HTTPError, ValueError) as exc:
                unreachable[url] = str(exc) or type(exc).__name__
                continue
            for family in families:
                for sample in family.samples:
                    app = sample.labels.get("app")
                    if app is None:
                        continue
                    if sample.name in fields:
                        counts = operators.setdefault(app, {}).setdefault(
                            sample.labels["operator"], [0.0] * 4
                        )
                        counts[fields[sample.name]] = sample.value
                    elif sample.name == "headwater_app_task_lag":
                        lags.setdefault(app, {})[sample.labels["task"]] = sample.value
    apps = {
        name: AppSample(
            {op: (c[0], c[1], c[2], c[3]) for op, c in operators.get(name, {}).items()},
            lags.get(name, {}),
        )
        for name in sorted(set(operators) | set(lags))
    }
    return apps, unreachable
