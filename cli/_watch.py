"""Wake a process when another headwater process lets go of a data directory.

A data directory has one owner at a time (see ``_datadir.py``), so a process that follows
a topic cannot see another process's appends while that process owns the directory; it
learns they are there when the writer closes the lock file. Writers open the lock file
for writing and readers read-only, so closing it raises an inotify ``IN_CLOSE_WRITE``
event (data may have changed) or ``IN_CLOSE_NOWRITE`` (only the lock was freed). The
kernel closes the file for a process that dies, so a crashed writer wakes followers too.

An owner that serves the directory (see ``_owner.py``) announces its address by renaming
a file into place; a watcher given that file's name wakes for it too (``IN_MOVED_TO``), so
that a command waiting for the directory learns at once that it can connect instead.

The inotify calls go through ctypes (the standard library has no binding) and the event
loop waits on the inotify descriptor, so nothing polls. Where inotify is missing (not
Linux), :class:`LockWatcher` falls back to checking every ``FALLBACK_INTERVAL_S``.

A process waiting for the directory must not wake itself. Trying to open the store while
another process has it opens and closes the lock file, and that close is an event like any
other: a waiter that tried on every event would spin on its own closes. So a waiter first
looks with :meth:`LockWatcher.held_elsewhere`, which tries the lock on a descriptor it
keeps open (a refusal closes nothing), and opens the store only once the lock is free.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import fcntl
import os
import struct
from pathlib import Path

import anyio

_IN_CLOSE_WRITE = 0x00000008
_IN_CLOSE_NOWRITE = 0x00000010
_IN_MOVED_TO = 0x00000080
_IN_Q_OVERFLOW = 0x00004000
_EVENT = struct.Struct("iIII")  # wd, mask, cookie, len; then len bytes of name
FALLBACK_INTERVAL_S = 0.5


def _inotify_fd(directory: Path) -> int | None:
    """Return an inotify descriptor watching close and rename events in ``directory``, or
    ``None``."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name, use_errno=True)
        init, add_watch = libc.inotify_init1, libc.inotify_add_watch
    except (OSError, AttributeError):
        return None
    fd: int = init(os.O_NONBLOCK | os.O_CLOEXEC)
    if fd < 0:
        return None
    mask = _IN_CLOSE_WRITE | _IN_CLOSE_NOWRITE | _IN_MOVED_TO
    if add_watch(fd, os.fsencode(directory), mask) < 0:
        os.close(fd)
        return None
    return fd


class LockWatcher:
    """Report when processes close ``file_name`` in ``directory``, or rename a file to
    ``announce_name`` there (an owner announcing the address it serves the directory at).

    Create it *before* looking at the lock, so that no close in between is missed; close
    it with :meth:`close`. One task waits on it at a time.
    """

    def __init__(self, directory: Path, file_name: str, announce_name: str | None = None) -> None:
        self._path = directory / file_name
        self._name = os.fsencode(file_name)
        self._announce = None if announce_name is None else os.fsencode(announce_name)
        self._fd = _inotify_fd(directory)
        self._probe_fd: int | None = None

    def close(self) -> None:
        """Stop watching."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        if self._probe_fd is not None:
            os.close(self._probe_fd)
            self._probe_fd = None

    def held_elsewhere(self) -> bool:
        """Whether another open file holds the ``flock`` on the watched file right now.

        Tries the lock on a read-only descriptor that stays open, and lets go at once if
        it got it; so a refusal raises no close event to wake this watcher. A file that
        does not exist is not held.
        """
        try:
            current = os.stat(self._path)
        except FileNotFoundError:
            return False
        if self._probe_fd is not None and not os.path.samestat(os.fstat(self._probe_fd), current):
            # The file was replaced (the directory was made anew): look at the new one.
            os.close(self._probe_fd)
            self._probe_fd = None
        if self._probe_fd is None:
            try:
                self._probe_fd = os.open(self._path, os.O_RDONLY | os.O_CLOEXEC)
            except FileNotFoundError:
                return False
        try:
            fcntl.flock(self._probe_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(self._probe_fd, fcntl.LOCK_UN)
        return False

    def __enter__(self) -> LockWatcher:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    async def wait(self) -> bool:
        """Wait until the file is closed by someone, or an address is announced; return
        whether there is something to look at: a writer closed the file, or an announcement.

        Without inotify this waits ``FALLBACK_INTERVAL_S`` and answers ``True``.
        """
        if self._fd is None:
            await anyio.sleep(FALLBACK_INTERVAL_S)
            return True
        while True:
            await anyio.wait_readable(self._fd)
            closed, written = self._read_events()
            if closed:
                return written

    def _read_events(self) -> tuple[bool, bool]:
        assert self._fd is not None
        closed = written = False
        with contextlib.suppress(BlockingIOError):
            while True:
                data = os.read(self._fd, 64 << 10)
                position = 0
                while position < len(data):
                    _wd, mask, _cookie, length = _EVENT.unpack_from(data, position)
                    start = position + _EVENT.size
                    name = data[start : start + length].rstrip(b"\0")
                    position = start + length
                    if mask & _IN_Q_OVERFLOW:
                        # Events were dropped: assume the worst.
                        closed = written = True
                    elif name == self._name and mask & (_IN_CLOSE_WRITE | _IN_CLOSE_NOWRITE):
                        closed = True
                        written = written or bool(mask & _IN_CLOSE_WRITE)
                    elif name == self._announce and mask & _IN_MOVED_TO:
                        closed = written = True
        return closed, written
