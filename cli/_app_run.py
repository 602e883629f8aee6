"""``headwater run``'s event loop: the app, its signals, its metrics and its progress.

The first SIGINT/SIGTERM stops the app gracefully (the batches in hand are finished,
written and committed; the worker leaves its group), a second one at once, as
:meth:`~headwater.processing.App.run` does. Around the app, in the same event loop: the
metrics server (``--metrics``; on before the app opens its log, so that everything it
makes is measured) and, for a run until caught up on a terminal, a progress bar of the
records to go across the partitions this worker processes (their end offsets at the
start), with the rate and the time left; while its tasks' state stores are restored
from their changelogs (nothing is processed meanwhile), the bar counts the changelog
records restored of those to read instead. A worker of ``headwater worker`` also stops
gracefully when its standard input ends: its supervisor holds the other end, so the
worker does not outlive it (see ``_supervisor.py``).
"""

from __future__ import annotations

import logging
import os
import signal
import sys
from pathlib import Path

import anyio
from anyio.abc import TaskStatus

from headwater.processing import App, RunStatistics

from ._metrics_http import serving_metrics
from ._progress import REFRESH_S, counting_progress
from ._run import run_async

logger = logging.getLogger("headwater.processing")


def run_app(
    app: App,
    *,
    until_caught_up: bool,
    data_dir: Path | None,
    bootstrap: str | None,
    metrics: tuple[str, int] | None,
    show_progress: bool,
    stop_at_end_of_input: bool = False,
) -> RunStatistics:
    """Run ``app`` until a signal (or caught up) on trio; return the run's statistics.

    With ``stop_at_end_of_input``, the end of standard input stops it gracefully too.

    :raises HeadwaterError: as :meth:`App.run_async` does.
    """

    async def main() -> RunStatistics:
        stop = anyio.Event()
        async with anyio.create_task_group() as tg:
            await tg.start(_watch_signals, app.name, stop, tg.cancel_scope)
            if stop_at_end_of_input:
                tg.start_soon(_watch_input, app.name, stop)
            async with serving_metrics(metrics), anyio.create_task_group() as shows:
                if show_progress and until_caught_up:
                    shows.start_soon(_show_progress, app)
                try:
                    await app.run_async(
                        until_caught_up=until_caught_up,
                        stop=stop,
                        data_dir=data_dir,
                        bootstrap=bootstrap,
                    )
                finally:
                    shows.cancel_scope.cancel()
            tg.cancel_scope.cancel()
        statistics = app.statistics()
        assert statistics is not None
        return statistics

    return run_async(main)


async def _watch_signals(
    name: str, stop: anyio.Event, scope: anyio.CancelScope, *, task_status: TaskStatus[None]
) -> None:
    # Only a second signal stops at once. ``stop`` may already be set by the end of
    # standard input: a supervisor stopping its workers sends a signal and closes their
    # input together, and that pair is one request for a graceful stop.
    signalled = False
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        task_status.started()
        async for signum in signals:
            if signalled:
                logger.warning("app %r: second signal: stopping now", name)
                scope.cancel()
                return
            signalled = True
            logger.info(
                "app %r: %s: %s the batches in hand, then stopping",
                name,
                signal.Signals(signum).name,
                "already finishing" if stop.is_set() else "finishing",
            )
            stop.set()


async def _watch_input(name: str, stop: anyio.Event) -> None:
    """Set ``stop`` once standard input ends (whatever is written to it is ignored)."""
    fd = sys.stdin.fileno()
    os.set_blocking(fd, False)
    while True:
        await anyio.wait_readable(fd)
        try:
            if not os.read(fd, 4096):
                break
        except BlockingIOError:
            continue
    if not stop.is_set():
        logger.info("app %r: its supervisor is gone: finishing the batches in hand", name)
        stop.set()


async def _show_progress(app: App) -> None:
    """Draw the records processed out of those to go, until cancelled."""
    progress = counting_progress("records")
    bar = progress.add_task(f"app {app.name!r}", total=None)

    def update() -> None:
        description, done, total = bar_state(app)
        progress.update(bar, total=total, completed=done, description=description)
        progress.refresh()

    with progress:
        try:
            while True:
                update()
                await anyio.sleep(REFRESH_S)
        finally:
            update()


def bar_state(app: App) -> tuple[str, int, int | None]:
    """Return what the bar of a running ``app`` shows: (description, done, total or None
    if unknown). While its tasks' stores are restored (nothing is processed meanwhile):
    the changelog records restored of those to read; then the input records processed
    of those to go."""
    restores = [p for p in (app.restore_progress() or {}).values() if p.total]
    if restores and not all(p.done for p in restores):
        done = sum(min(p.restored, p.total) for p in restores)
        total = sum(p.total for p in restores)
        return f"app {app.name!r}: restoring {len(restores)} store(s)", done, total
    positions = app.progress() or {}
    done = total = 0
    for start, position, end in positions.values():
        total += max(end - start, 0)
        done += max(min(position, end) - start, 0)
    return f"app {app.name!r}: {len(positions)} partition(s)", done, total or None
