"""The data directory a command works on: where it is, and waiting for it when busy.

One process owns a data directory at a time: the store takes an exclusive ``flock`` on
``DATA/.lock`` while it is open and refuses a second owner. Two ``headwater`` commands
running at once (a ``consume`` piped into a ``produce``, a follower and a producer) take
turns: a command that finds the directory taken waits up to ``LOCK_WAIT_S`` for it (woken
by :class:`LockWatcher` when the owner lets go), then stops with a clear error.

Commands that may change records (create, delete, produce) open the store for writing,
the others read-only, which opens the lock file read-only: that is how a follower tells
"a writer finished" from "a reader finished" (see ``_watch.py``).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, TypeVar

import anyio
import click

from headwater.store import DataDirectoryLockedError, Store

from ._output import info
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
async def open_waiting(
    directory: Path,
    watcher: LockWatcher,
    *,
    writer: bool,
    timeout_s: float = LOCK_WAIT_S,
    notice: bool = True,
) -> AsyncIterator[Store]:
    """Open the store in ``directory``, waiting up to ``timeout_s`` while another process has it.

    The store itself refuses a second owner (:class:`DataDirectoryLockedError`); this
    waits for the owner to let go, woken by ``watcher``. With ``notice``, says on stderr
    that it is waiting when that lasts ``LOCK_NOTICE_S``.

    :raises click.ClickException: if the directory stays taken.
    """
    deadline = anyio.current_time() + timeout_s
    noticed = not notice
    while True:
        try:
            store = Store(directory, read_only=not writer)
            await store.__aenter__()
        except DataDirectoryLockedError:
            if anyio.current_time() >= deadline:
                raise click.ClickException(
                    f"data directory {directory} is in use by another headwater process "
                    f"(one process may use it at a time; waited {timeout_s:g} s)"
                ) from None
            with anyio.move_on_after(min(LOCK_NOTICE_S, deadline - anyio.current_time())):
                await watcher.wait()
            if not noticed and anyio.current_time() < deadline:
                info(f"waiting for {directory}: another headwater process is using it")
                noticed = True
            continue
        try:
            yield store
        finally:
            await store.aclose()
        return


def check_exists(directory: Path) -> None:
    """Raise a one-line error unless ``directory`` is a data directory that exists."""
    if not directory.is_dir():
        raise click.ClickException(
            f"no data directory at {directory} (create a topic first, or pass --data DIR)"
        )


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
    with LockWatcher(directory, LOCK_FILE) as watcher:
        async with open_waiting(directory, watcher, writer=writer) as store:
            yield store
