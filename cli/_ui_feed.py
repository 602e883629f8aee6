"""The live side of ``headwater ui``: one look at the log every interval, shared by every
page that watches.

A :class:`Feed` takes a :class:`~headwater.cli._top_view.Sample` every ``interval_s``
(``headwater top``'s gathering), turns it into the overview the page shows, and keeps the
last :data:`HISTORY` chart points (records/s into each topic, each group's lag) for a page
that opens later. However many pages watch, the log is looked at once per interval.

A watcher (:meth:`Feed.watch`) waits for the next overview newer than the one it has; it
is never queued anything, so a slow page skips overviews instead of piling them up, and
memory stays bounded by the latest overview and the history. A look that fails (the
data directory kept busy, the broker gone) becomes the overview's ``error``, and the next
look tries again.
"""

from __future__ import annotations

import collections
import logging
import time
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass

import anyio
import click
from anyio.abc import TaskStatus

from headwater.store import HeadwaterError

from ._top_view import Sample
from ._ui_model import Json, chart_point, overview

logger = logging.getLogger("headwater.ui")

#: How many chart points a page that opens is given.
HISTORY = 300


@dataclass(frozen=True, slots=True)
class FeedStatistics:
    """What a feed has done: looks taken, looks failed, and pages watching now."""

    looks: int
    failures: int
    watchers: int


def failure_message(exc: BaseException) -> str:
    """Say in one line why a look at the log failed (out of exception groups too)."""
    while isinstance(exc, BaseExceptionGroup):
        exc = exc.exceptions[0]
    if isinstance(exc, click.ClickException):
        return exc.format_message()
    if isinstance(exc, HeadwaterError | OSError):
        return str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {exc}"


class Feed:
    """Looks at the log every ``interval_s`` with ``look``; see the module docstring."""

    def __init__(self, look: Callable[[], Awaitable[Sample]], interval_s: float) -> None:
        self._look = look
        self._interval_s = interval_s
        self._previous: Sample | None = None
        self._latest: Json | None = None
        self._version = 0
        self._changed = anyio.Event()
        self._lock = anyio.Lock()
        self._history: collections.deque[Json] = collections.deque(maxlen=HISTORY)
        self._looks = 0
        self._failures = 0
        self._watchers = 0

    def statistics(self) -> FeedStatistics:
        """Return the feed's counters."""
        return FeedStatistics(self._looks, self._failures, self._watchers)

    @property
    def latest(self) -> Json | None:
        """The last overview (None before the first look ends)."""
        return self._latest

    def history(self) -> list[Json]:
        """Return the chart points kept, oldest first."""
        return list(self._history)

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Look at the log until cancelled; started once the first look has ended."""
        started = False
        while True:
            await self.look_now()
            if not started:
                task_status.started()
                started = True
            await anyio.sleep(self._interval_s)

    async def look_now(self) -> Json:
        """Look at the log now (after a look in progress ends), publish the overview and
        return it."""
        async with self._lock:
            return await self._look_once()

    async def _look_once(self) -> Json:
        wall_ms = int(time.time() * 1000)
        try:
            sample = await self._look()
        except Exception as exc:
            self._failures += 1
            message = failure_message(exc)
            logger.warning("looking at the log failed: %s", message)
            view = dict(self._latest or {"topics": [], "groups": [], "apps": []})
            view.pop("point", None)
            view.update(at=wall_ms, error=message)
        else:
            view = overview(sample, self._previous, wall_ms=wall_ms)
            self._previous = sample
            view["point"] = chart_point(view)
            self._history.append(view["point"])
        self._looks += 1
        self._latest = view
        self._version += 1
        changed, self._changed = self._changed, anyio.Event()
        changed.set()
        return view

    async def next_look(self) -> None:
        """Wait until the next look at the log is published."""
        await self._changed.wait()

    async def watch(self, limit: int) -> AsyncGenerator[Json, None]:
        """Yield the latest overview, then each newer one, ``limit`` in all.

        Counted in :meth:`statistics` while it runs; ends (and stops counting) when the
        caller stops iterating or is cancelled.
        """
        self._watchers += 1
        try:
            seen = 0
            for _ in range(limit):
                while self._version == seen or self._latest is None:
                    await self._changed.wait()
                seen = self._version
                yield self._latest
        finally:
            self._watchers -= 1
