"""Who holds a data directory: the record its lock holder leaves beside the lock.

Theory of operation
-------------------
One process owns a data directory at a time, by an exclusive ``flock`` on ``.lock`` (see
``_store.py``). A process that finds the directory taken can wait, but the lock itself
does not say who holds it, and "in use by another process" leaves the user guessing. So
the holder, once it has the lock, writes ``.lock.holder`` beside it::

    {"pid": 4242, "argv": ["python", "app.py"], "lock": [2049, 131077]}

its process id, its command line (``sys.orig_argv``), and the device and inode of the
lock file it locked. It is written under a temporary name then renamed, so a reader sees
a whole record or none; only the lock's holder writes it, so one temporary name does.
It is removed by the holder before it lets go of the lock.

Only a store opened for writing records itself: a reading store writes nothing in the
directory it reads (not even on a writable file system). Where the kernel lists its
locks (``/proc/locks`` on Linux) the holder is found there without any record, readers
included: the ``FLOCK`` entry on the lock file's device and inode gives the process id,
and ``/proc/<pid>/cmdline`` its command line (the record's, when it has one for that
process). Elsewhere the record is all there is.

The record is advice, never a condition: writing it is best effort (a store on a
read-only file system, or in a directory it may not write to, runs without one) and
nothing is fsynced, since a crash makes it stale anyway. So a reader trusts a record only
when it describes the lock that is there now (same device and inode: a copy or snapshot
of a directory carries its owner's record, but not its lock file's identity) and its
process is alive. Otherwise the holder is unknown, and messages say so.

Pure of the store's state: functions of a directory path and a lock descriptor, doing
their file work through the store's :class:`~headwater.store.FileSystem` like the rest.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

import orjson

from ._fs import OS_FILE_SYSTEM, FileSystem

LOCK_FILE = ".lock"  # the file whose flock is the directory's ownership
HOLDER_FILE = LOCK_FILE + ".holder"
PROC_LOCKS = Path("/proc/locks")
_TMP = HOLDER_FILE + ".tmp"
_COMMAND_CHARS = 200


@dataclass(frozen=True, slots=True)
class LockHolder:
    """The process that holds a data directory's lock, as it recorded itself."""

    pid: int
    argv: tuple[str, ...]

    def describe(self) -> str:
        """Return ``pid N (command line)`` on one line, for messages (long ones cut)."""
        command = " ".join(shlex.join(self.argv).split()) or "command line unknown"
        if len(command) > _COMMAND_CHARS:
            command = command[: _COMMAND_CHARS - 3] + "..."
        return f"pid {self.pid} ({command})"


def record_holder(fs: FileSystem, directory: Path, lock_fd: int) -> bool:
    """Record this process as the holder of ``directory``'s lock, held on ``lock_fd``.

    Best effort: returns whether the record was written (``False`` when the file system
    refuses, e.g. read-only).
    """
    tmp = directory / _TMP
    try:
        st = fs.fstat(lock_fd)
        record = orjson.dumps(
            {"pid": os.getpid(), "argv": list(sys.orig_argv), "lock": [st.st_dev, st.st_ino]}
        )
        fd = fs.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
        try:
            fs.write(fd, record)  # a few hundred bytes: one write
        finally:
            fs.close(fd)
        fs.replace(tmp, directory / HOLDER_FILE)
    except OSError:
        with contextlib.suppress(OSError):
            fs.unlink(tmp)
        return False
    return True


def clear_holder(fs: FileSystem, directory: Path) -> None:
    """Remove this process's record (call before letting go of the lock); best effort."""
    with contextlib.suppress(OSError):
        fs.unlink(directory / HOLDER_FILE)


def read_holder(
    directory: str | os.PathLike[str], *, fs: FileSystem = OS_FILE_SYSTEM
) -> LockHolder | None:
    """Return who holds the data directory's lock, from the kernel's lock table or the record.

    ``None`` when nobody holds it, or when the kernel lists no locks here and no record is
    there or still true. Reads only; safe from any process.
    """
    directory = Path(directory)
    try:
        # Only the lock file's identity, not its bytes: a stat, which the layer leaves to os.
        lock = os.stat(directory / LOCK_FILE)
    except OSError:
        return None
    record = _read_record(fs, directory, lock)
    listed = _listed_holder(lock)
    if listed == _UNLISTED:
        return record if record is not None and _alive(record.pid) else None
    if listed is None:
        return None
    if record is not None and record.pid == listed:
        return record
    return LockHolder(listed, _command_line(listed))


def _read_record(fs: FileSystem, directory: Path, lock: os.stat_result) -> LockHolder | None:
    """The holder record, if it is about the lock file that is there now."""
    try:
        data = orjson.loads(fs.read_bytes(directory / HOLDER_FILE))
    except (OSError, orjson.JSONDecodeError):
        return None
    if not isinstance(data, dict):
        return None
    pid, argv, identity = data.get("pid"), data.get("argv"), data.get("lock")
    if not isinstance(pid, int) or pid <= 0 or identity != [lock.st_dev, lock.st_ino]:
        return None
    if not isinstance(argv, list) or not all(isinstance(a, str) for a in argv):
        argv = []
    return LockHolder(pid, tuple(argv))


#: ``_listed_holder``'s answer where the kernel does not list its locks.
_UNLISTED = -1


def _listed_holder(lock: os.stat_result) -> int | None:
    """The pid holding a ``flock`` on the file ``lock`` describes, as ``/proc/locks`` says.

    ``None`` when the table lists no such lock; ``_UNLISTED`` without a readable table.
    Lines read ``1: FLOCK  ADVISORY  WRITE 4242 fd:01:131077 0 EOF``: the device as hex
    major:minor, then the inode.
    """
    try:
        table = PROC_LOCKS.read_text()
    except OSError:
        return _UNLISTED
    wanted = f"{os.major(lock.st_dev):02x}:{os.minor(lock.st_dev):02x}:{lock.st_ino}"
    for line in table.splitlines():
        fields = line.split()
        # Blocked waiters are listed too, after "->": they do not hold the lock.
        if len(fields) >= 6 and fields[1] == "FLOCK" and fields[5] == wanted:
            with contextlib.suppress(ValueError):
                return int(fields[4])
    return None


def _command_line(pid: int) -> tuple[str, ...]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return ()
    return tuple(os.fsdecode(arg) for arg in raw.split(b"\0") if arg)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    return True
