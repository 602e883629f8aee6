"""The data directory a command works on: where it is, and waiting for it when busy.

One process owns a data directory at a time: the store takes an exclusive ``flock`` on
``DATA/.lock`` while it is open and refuses a second owner. An owner that runs for long
(an app, ``headwater broker``) serves the directory and announces its address there: a
command that finds the directory so owned works through that address (``_owner.py``)
without waiting. Other ``headwater`` commands running at once (a ``consume`` piped into a
``produce``, a follower and a producer) take turns: a command that finds the directory
taken and not served waits up to ``LOCK_WAIT_S`` for it, asleep until
:class:`LockWatcher` sees the holder let go or announce an address; after
``LOCK_NOTICE_S`` it says whom it waits for, and at the end it stops with an error that
names the holder (its pid and command line, as the store records them) and what to do.

Commands that may change records (create, delete, produce) open the store for writing,
the others read-only, which opens the lock file read-only: that is how a follower tells
"a writer finished" from "a reader finished" (see ``_watch.py``).
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, TypeVar

import anyio
import click

from headwater.store import (
    ADDRESS_FILE,
    DataDirectoryLockedError,
    Store,
    is_data_directory,
    read_holder,
)

from ._output import info
from ._owner import Served, find_served
from ._watch import LockWatcher

F = TypeVar("F", bound=Callable[..., Any])

LOCK_FILE = ".lock"  # the file the store locks
LOCK_WAIT_S = 10.0
LOCK_NOTICE_S = 1.0
ENV_VAR = "HEADWATER_DATA"
DEFAULT_DIR = "headwater-data"


def data_option(f: F) -> F:
    """Add ``--data DIR`` to a command or group."""
    return click.option(
        "--data",
        type=click.Path(file_okay=False, path_type=Path),
        default=None,
        metavar="DIR",
        help=f"Data directory (default: ${ENV_VAR}, else ./{DEFAULT_DIR}).",
    )(f)


def data_dir(ctx: click.Context) -> Path:
    """Return the data directory: the innermost ``--data``, else $HEADWATER_DATA, else default."""
    current: click.Context | None = ctx
    while current is not None:
        value = current.params.get("data")
        if value is not None:
            return Path(value)
        current = current.parent
    return Path(os.environ.get(ENV_VAR) or DEFAULT_DIR)


@contextlib.asynccontextmanager
async def claim_waiting(
    directory: Path,
    watcher: LockWatcher,
    *,
    writer: bool,
    timeout_s: float = LOCK_WAIT_S,
    notice: bool = True,
) -> AsyncIterator[Store | Served]:
    """Open the store in ``directory``, or find that its owner serves it; wait up to
    ``timeout_s`` while another process has it without serving it.

    Yields the open store (closed when the block ends), or the :class:`Served` owner to
    work through. The store itself refuses a second owner
    (:class:`DataDirectoryLockedError`); this waits for the holder to let go or to
    announce an address, asleep until ``watcher`` reports a close of the lock file or an
    announcement, and opens the store only when the lock is free (see ``_watch.py``:
    trying to open it would wake this very wait). With ``notice``, says on stderr who it
    waits for once the wait has lasted ``LOCK_NOTICE_S``.

    :raises click.ClickException: if the directory stays taken, naming the process that
        has it and what to do.
    """
    claimed = await _acquire(directory, watcher, writer=writer, timeout_s=timeout_s, notice=notice)
    if isinstance(claimed, Served):
        yield claimed
        return
    try:
        yield claimed
    finally:
        await claimed.aclose()


@contextlib.asynccontextmanager
async def open_waiting(
    directory: Path,
    watcher: LockWatcher,
    *,
    writer: bool,
    timeout_s: float = LOCK_WAIT_S,
    notice: bool = True,
) -> AsyncIterator[Store]:
    """Open the store in ``directory``, waiting as :func:`claim_waiting` does, for work
    that needs the store in this process.

    :raises click.ClickException: if the directory stays taken, or its owner serves it
        (naming the address to use instead).
    """
    async with claim_waiting(
        directory, watcher, writer=writer, timeout_s=timeout_s, notice=notice
    ) as claimed:
        if isinstance(claimed, Served):
            raise click.ClickException(served_message(claimed))
        yield claimed


async def _acquire(
    directory: Path, watcher: LockWatcher, *, writer: bool, timeout_s: float, notice: bool
) -> Store | Served:
    started = anyio.current_time()
    deadline = started + timeout_s
    notice_at = started + LOCK_NOTICE_S if notice else math.inf
    while True:
        served = await find_served(directory)
        if served is not None:
            return served
        if not watcher.held_elsewhere():
            # No await between the look and the store's own lock: nothing of ours runs
            # in between, though another process may still come first.
            store = Store(directory, read_only=not writer)
            try:
                await store.__aenter__()
            except DataDirectoryLockedError:
                pass  # it did: wait for that one
            else:
                return store
        now = anyio.current_time()
        if now >= deadline:
            raise click.ClickException(busy_message(directory, timeout_s))
        if now >= notice_at:
            info(waiting_message(directory, timeout_s))
            notice_at = math.inf
        with anyio.move_on_after(min(deadline, notice_at) - now):
            await watcher.wait()


def _who(directory: Path) -> tuple[str, str]:
    """Return who holds ``directory`` and how to stop it, for messages."""
    holder = read_holder(directory)
    if holder is None:
        return "another process (it did not record which)", "stop it"
    return holder.describe(), f"stop it (kill {holder.pid})"


def busy_message(directory: Path, waited_s: float) -> str:
    """Say that ``directory`` stayed taken: by whom, and what to do."""
    who, stop = _who(directory)
    return (
        f"data directory {directory} is in use by {who}, and one process may use it at a "
        f"time; it did not let go within {waited_s:g} s: {stop} or let it finish, then run "
        "this again"
    )


def served_message(served: Served) -> str:
    """Say that ``served``'s directory is in use by a process that serves it, and where."""
    return (
        f"data directory {served.directory} is in use by {served.owner()}, which serves it "
        f"at {served.bootstrap}: use the log there (--bootstrap {served.bootstrap})"
    )


def waiting_message(directory: Path, timeout_s: float) -> str:
    """Say that this command waits for ``directory``: for whom, and for how long."""
    who, _ = _who(directory)
    until = "until it lets go" if math.isinf(timeout_s) else f"up to {timeout_s:g} s"
    return f"waiting for {directory}: in use by {who} (waiting {until})"


def nested_data_directories(directory: Path) -> list[Path]:
    """Return the data directories inside ``directory`` (never topics of it), sorted."""
    try:
        entries = sorted(directory.iterdir())
    except OSError:
        return []
    return [e for e in entries if not e.name.startswith(".") and is_data_directory(e)]


def check_exists(directory: Path) -> None:
    """Raise a one-line error unless ``directory`` is a data directory that exists."""
    if not directory.is_dir():
        raise click.ClickException(
            f"no data directory at {directory} (create a topic first, or pass --data DIR)"
        )


def watch(directory: Path) -> LockWatcher:
    """Return a watcher of ``directory``'s lock and of its owner's announcements."""
    return LockWatcher(directory, LOCK_FILE, ADDRESS_FILE)


@contextlib.asynccontextmanager
async def claimed(
    directory: Path, *, writer: bool, create: bool = False
) -> AsyncIterator[Store | Served]:
    """Open the store in ``directory``, or find the owner that serves it (see
    :func:`claim_waiting`).

    :param create: create the directory when missing (otherwise that is an error).
    """
    if create:
        directory.mkdir(parents=True, exist_ok=True)
    else:
        check_exists(directory)
    with watch(directory) as watcher:
        async with claim_waiting(directory, watcher, writer=writer) as claim:
            yield claim


@contextlib.asynccontextmanager
async def locked_store(
    directory: Path, *, writer: bool, create: bool = False
) -> AsyncIterator[Store]:
    """Open the store in ``directory`` while holding its lock.

    :param create: create the directory when missing (otherwise that is an error).
    """
    if create:
        directory.mkdir(parents=True, exist_ok=True)
    else:
        check_exists(directory)
    with watch(directory) as watcher:
        async with open_waiting(directory, watcher, writer=writer) as store:
            yield store
