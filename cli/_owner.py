"""The process that serves a data directory, as a command finds it and sees it go.

A long-running owner of a data directory (an app, ``headwater broker``) serves it over the
Kafka protocol and announces the address in the directory (``headwater.store``'s
``served_address`` reads it, and returns only a true announcement, never a stale one). A
command that finds the directory held asks :func:`find_served` whether its holder serves
it; if so, it works through that address as with ``--bootstrap``, instead of waiting for
the holder to let go.

An owner can go away while a command works through it (stopped, restarted, killed). A
command that follows (``consume --follow``) goes on through whoever has the directory
next, from where it was: :func:`while_served` runs its work until the owner it was given
is no longer the one that serves the directory, woken by the directory's
:class:`~headwater.cli._watch.LockWatcher` (the owner's close of the lock file, whether it
stopped or was killed) and never by polling; :func:`owner_left` tells a failure caused by
the owner going away from any other.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import anyio

from headwater.store import ServedAddress, read_holder, served_address

from ._watch import LockWatcher


@dataclass(frozen=True, slots=True)
class Served:
    """A data directory whose owner serves it over the Kafka protocol.

    :param directory: the data directory.
    :param address: the owner's process id and address.
    """

    directory: Path
    address: ServedAddress

    @property
    def bootstrap(self) -> str:
        """``HOST:PORT`` of the owner's broker."""
        return self.address.bootstrap

    @property
    def description(self) -> str:
        """``data directory DIR (served by pid N at HOST:PORT)``, for messages."""
        return (
            f"data directory {self.directory} "
            f"(served by pid {self.address.pid} at {self.address.bootstrap})"
        )

    def owner(self) -> str:
        """Return ``pid N (command line)`` of the owner, for messages."""
        holder = read_holder(self.directory)
        if holder is None or holder.pid != self.address.pid:
            return f"pid {self.address.pid}"
        return holder.describe()


#: How long :func:`address_answers` waits for a connection (the owner is on this machine).
ANSWER_TIMEOUT_S = 5.0


async def address_answers(bootstrap: str) -> bool:
    """Whether something accepts connections at ``bootstrap`` (``HOST:PORT``)."""
    host, _, port = bootstrap.rpartition(":")
    with anyio.move_on_after(ANSWER_TIMEOUT_S):
        try:
            stream = await anyio.connect_tcp(host.strip("[]"), int(port))
        except (OSError, ValueError):
            return False
        await stream.aclose()
        return True
    return False


async def find_served(directory: Path) -> Served | None:
    """Return the directory's owner if it serves the directory and its address answers."""
    address = served_address(directory)
    if address is None or not await address_answers(address.bootstrap):
        return None
    return Served(directory, address)


async def owner_left(served: Served) -> bool:
    """Whether ``served``'s owner no longer serves the directory (it stopped or died)."""
    if served_address(served.directory) != served.address:
        return True
    return not await address_answers(served.bootstrap)


async def while_served(
    served: Served, watcher: LockWatcher, work: Callable[[], Awaitable[None]]
) -> bool:
    """Run ``work`` while ``served``'s owner serves the directory; return whether it finished.

    ``work`` is cancelled once the owner has let go of the directory or another process
    serves it, and this returns ``False``; a failure of ``work`` caused by the owner going
    away counts as the same, any other is raised. ``watcher`` must watch the directory
    since before ``served`` was found, so that no close of the lock file in between is
    missed; nothing else may wait on it meanwhile.
    """
    outcome: list[Exception | None] = []
    async with anyio.create_task_group() as tg:

        async def run() -> None:
            try:
                await work()
            except Exception as exc:
                outcome.append(exc)
            else:
                outcome.append(None)
            tg.cancel_scope.cancel()

        async def look() -> None:
            while True:
                await watcher.wait()
                if served_address(served.directory) != served.address:
                    tg.cancel_scope.cancel()
                    return

        tg.start_soon(run)
        tg.start_soon(look)
    if not outcome:
        return False  # the owner went away
    failure = outcome[0]
    if failure is None:
        return True
    if await owner_left(served):
        return False
    raise failure
