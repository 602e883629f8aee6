"""fsync off the event loop, without a trip through the GIL on the way back.

Theory of operation
-------------------
A flush's fsyncs must not block the event loop (a slow disk would stall every reader and
writer of the store), so they run in another thread. A Python worker thread, though,
needs the GIL again the moment its fsync returns, and a busy event loop holds the GIL
for up to the interpreter's switch interval (5 ms) before it yields it: on a loaded
broker the acknowledgement of a write then waits on the GIL for longer than the fsync
took. :func:`fsync_all` therefore hands the descriptors to a thread in C
(``_speedups.start_fsync``) that never takes the GIL: it fsyncs them in order and writes
the outcome, 0 or the first failure's errno, to a pipe the event loop waits on. The C
module keeps such threads waiting between flushes (waking one is quicker than starting
one), and starts another whenever all are busy.

:func:`start_fsync` only starts the fsyncs: a caller that knows a wait will follow (the
broker, which has just written a producer's batch) starts them at once, and whoever
waits first takes over (see ``Partition.begin_flush``).

Without the C build, or for a file system whose ``fsync`` is not the operating system's
(one that injects failures or records what became durable), the fsyncs run in a worker
thread through that file system as before.

The wait is not cancellable: an fsync under way finishes, whoever stopped waiting for it,
and its descriptors must stay open until it has (the caller's flush holds them).
"""

from __future__ import annotations

import errno
import os
import sys
from collections.abc import Callable, Sequence

import anyio
import anyio.to_thread

from ._fs import FileSystem

_start_fsync: Callable[[Sequence[int], int], None] | None
try:  # the C build (store/_speedups.c), when it was compiled
    from ._speedups import start_fsync as _start_fsync
except ImportError:  # pragma: no cover - the pure-Python install
    _start_fsync = None

_OUTCOME_BYTES = 4


def native_fsync(fs: FileSystem) -> bool:
    """Whether :func:`fsync_all` can sync ``fs``'s descriptors in a thread without the GIL:
    the C build is there and ``fs`` syncs with the operating system's own ``fsync``."""
    return _start_fsync is not None and fs.fsync is os.fsync


class StartedFsync:
    """fsyncs under way in a thread without the GIL (see :func:`start_fsync`); their
    outcome is read once, by :meth:`wait` or :meth:`wait_blocking`."""

    __slots__ = ("_read_end",)

    def __init__(self, fds: Sequence[int]) -> None:
        assert _start_fsync is not None
        read_end, write_end = os.pipe2(os.O_CLOEXEC)
        try:
            _start_fsync(fds, write_end)  # the thread owns write_end from here on
        except BaseException:
            os.close(read_end)
            os.close(write_end)
            raise
        self._read_end = read_end

    async def wait(self) -> None:
        """Return once the fsyncs are done; not cancellable (they finish regardless).

        :raises OSError: from the first fsync that failed.
        """
        with anyio.CancelScope(shield=True):
            try:
                await anyio.wait_readable(self._read_end)
                raw = os.read(self._read_end, _OUTCOME_BYTES)
            finally:
                os.close(self._read_end)
        _raise_for(raw)

    def wait_blocking(self) -> None:
        """:meth:`wait`, blocking the calling thread (for code that cannot await).

        :raises OSError: from the first fsync that failed.
        """
        try:
            raw = os.read(self._read_end, _OUTCOME_BYTES)  # the pipe blocks
        finally:
            os.close(self._read_end)
        _raise_for(raw)


def start_fsync(fs: FileSystem, fds: Sequence[int]) -> StartedFsync | None:
    """Start fsyncing each of ``fds`` in order, in a thread without the GIL, and return
    at once; ``None`` (nothing started) when ``fs`` cannot sync that way (see
    :func:`native_fsync`). The descriptors must stay open until the outcome is read.

    :raises OSError: if no pipe or thread could be had.
    """
    if not native_fsync(fs):
        return None
    return StartedFsync(fds)


async def fsync_all(fs: FileSystem, fds: Sequence[int]) -> None:
    """fsync each of ``fds`` in order, off the event loop; return once all are durable.

    :raises OSError: from the first fsync that failed (those after it are not tried).
    """
    started = start_fsync(fs, fds)
    if started is not None:
        await started.wait()
        return
    with anyio.CancelScope(shield=True):
        await anyio.to_thread.run_sync(_fsync_each, fs, fds)


def _raise_for(raw: bytes) -> None:
    if len(raw) != _OUTCOME_BYTES:  # the thread could not report: assume the worst
        raise OSError(errno.EIO, "the fsync thread ended without saying how it went")
    outcome = int.from_bytes(raw, sys.byteorder)
    if outcome:
        raise OSError(outcome, os.strerror(outcome))


def _fsync_each(fs: FileSystem, fds: Sequence[int]) -> None:
    for fd in fds:
        fs.fsync(fd)
