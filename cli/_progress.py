"""Progress bars where a person waits: on stderr, only when it is a terminal.

A bar shows what is done out of what there is to do, the rate and the time left (rich's
estimate from the recent rate). Commands refresh them themselves, a few times a second,
from the event loop that does the work (no refresh thread). With ``--quiet``, or when
stderr is not a terminal (a pipe, a file, a test), nothing is drawn.
"""

from __future__ import annotations

import os
import stat
import sys
import time
from typing import Any

from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TaskProgressColumn,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Column
from rich.text import Text

from ._output import stderr_console

#: Seconds between two refreshes of a bar.
REFRESH_S = 0.2


def progress_shown(quiet: bool) -> bool:
    """Whether to draw progress: stderr is a terminal and ``--quiet`` was not given."""
    return not quiet and stderr_console().is_terminal


class _RateColumn(ProgressColumn):
    """The rate, in ``unit`` per second (rich's own speed column counts bytes).

    The column never wraps: on a narrow terminal (80 columns) the bar gives up width
    instead, so the row stays one line and the unit stays beside its figure.
    """

    def __init__(self, unit: str) -> None:
        super().__init__(table_column=Column(no_wrap=True))
        self._unit = unit

    def render(self, task: Task) -> Text:
        """Render the task's rate."""
        speed = task.finished_speed or task.speed
        if speed is None:
            return Text(f"- {self._unit}/s", style="progress.data.speed")
        return Text(f"{speed:,.0f} {self._unit}/s", style="progress.data.speed")


def counting_progress(unit: str, *extra: ProgressColumn | str) -> Progress:
    """Return a progress display (not started) of counted things (``unit``: records)."""
    columns: list[Any] = [
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TaskProgressColumn(),
        _RateColumn(unit),
        TimeRemainingColumn(),
        *extra,
    ]
    return Progress(*columns, console=stderr_console(), auto_refresh=False)


class CountProgress:
    """A bar of ``what``: how many ``unit`` are done out of a total learned with the first
    count, drawn from that first count on (nothing is drawn for work that never starts).

    Use as a context manager (the bar is put away on leaving it) and call it with
    ``(done, total)`` as the work advances: it redraws at most every :data:`REFRESH_S`
    seconds, and always once the work is done.
    """

    def __init__(self, what: str, unit: str) -> None:
        self._progress = counting_progress(unit)
        self._task = self._progress.add_task(what, total=None)
        self._started = False
        self._drawn = 0.0

    def __enter__(self) -> CountProgress:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._started:
            self._progress.stop()

    def __call__(self, done: int, total: int) -> None:
        """Note that ``done`` of ``total`` are done."""
        self._progress.update(self._task, completed=done, total=total)
        if not self._started:
            self._started = True
            self._progress.start()  # draws the bar
            self._drawn = time.monotonic()
            return
        now = time.monotonic()
        if done >= total or now - self._drawn >= REFRESH_S:
            self._drawn = now
            self._progress.refresh()


class InputProgress:
    """A bar of the bytes read from an input file, with the records stored so far (and,
    with ``show_rate``, how many a second), counted in ``unit``.

    Use as a context manager (the bar is drawn inside it); :meth:`read` and :meth:`stored`
    redraw it at most every :data:`REFRESH_S` seconds.
    """

    def __init__(
        self, total_bytes: int, what: str, *, unit: str = "records", show_rate: bool = False
    ) -> None:
        self._what = what
        self._unit = unit
        self._show_rate = show_rate
        self._started = time.monotonic()
        self._progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            console=stderr_console(),
            auto_refresh=False,
        )
        self._task = self._progress.add_task(what, total=total_bytes)
        self._records = 0
        self._drawn = 0.0

    def __enter__(self) -> InputProgress:
        self._started = time.monotonic()
        self._progress.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._draw(force=True)
        self._progress.stop()

    def read(self, size: int) -> None:
        """Note ``size`` more bytes read."""
        self._progress.advance(self._task, size)
        self._draw()

    def stored(self, count: int) -> None:
        """Note ``count`` more records stored."""
        self._records += count
        description = f"{self._what}: {self._records:,} {self._unit}"
        if self._show_rate:
            rate = self._records / max(time.monotonic() - self._started, 1e-9)
            description += f", {rate:,.0f} {self._unit}/s"
        self._progress.update(self._task, description=description)
        self._draw()

    def _draw(self, *, force: bool = False) -> None:
        now = time.monotonic()
        if force or now - self._drawn >= REFRESH_S:
            self._drawn = now
            self._progress.refresh()


def input_progress(fd: int, what: str, *, quiet: bool) -> InputProgress | None:
    """Return a bar for reading the file open at ``fd``, or None: when not shown (see
    :func:`progress_shown`), when stdout is the terminal too (the records' output would
    tear the bar), or when ``fd`` is not a regular file (a pipe: no size to go by)."""
    if not progress_shown(quiet) or sys.stdout.isatty():
        return None
    status = os.fstat(fd)
    if not stat.S_ISREG(status.st_mode):
        return None
    return InputProgress(max(status.st_size - os.lseek(fd, 0, os.SEEK_CUR), 0), what)
