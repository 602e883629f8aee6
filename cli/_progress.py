"""Progress bars where a person waits: on stderr, only when it is a terminal.

A bar shows what is done out of what there is to do, the rate and the time left (rich's
estimate from the recent rate). Commands refresh them themselves, a few times a second,
from the event loop that does the work (no refresh thread). With ``--quiet``, or when
stderr is not a terminal (a pipe, a file, a test), nothing is drawn.
"""

from __future__ import annotations

from typing import Any

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TaskProgressColumn,
    TextColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from ._output import stderr_console

#: Seconds between two refreshes of a bar.
REFRESH_S = 0.2


def progress_shown(quiet: bool) -> bool:
    """Whether to draw progress: stderr is a terminal and ``--quiet`` was not given."""
    return not quiet and stderr_console().is_terminal


class _RateColumn(ProgressColumn):
    """The rate, in ``unit`` per second (rich's own speed column counts bytes)."""

    def __init__(self, unit: str) -> None:
        super().__init__()
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
