"""The file-system operations the store performs, behind one interface.

Theory of operation. Every byte the store puts on disk or takes from it, every name it
creates, renames or removes, and every fsync goes through a :class:`FileSystem`: the
store's modules never call ``os`` or ``pathlib`` for file work themselves. The default,
:class:`OsFileSystem`, is the operating system with nothing in between (its methods are
the ``os`` functions themselves, so the layer costs one attribute lookup per call).

The layer exists so that a different implementation can stand in for the operating
system: one that records which writes an fsync has made durable and can then leave a
directory as a power cut would, or one that fails a chosen operation with ``EIO`` or
``ENOSPC``. Such an implementation must keep the operating system's contract for every
operation (same arguments, same results, ``OSError`` with the same ``errno`` on failure),
because the store relies on it: a write to a descriptor opened with ``O_APPEND`` lands at
the end of the file, a ``replace`` is atomic, a name is durable once its directory has
been fsynced.

Descriptors are plain ``int``\\ s as ``os.open`` returns them.
"""

from __future__ import annotations

import fcntl
import os
import shutil
from pathlib import Path
from typing import Protocol


class FileSystem(Protocol):
    """The operations the store performs on files and directories (``os`` semantics).

    Concurrency: the store calls these from its owner's thread and from worker threads
    (fsyncs, reads, compaction); an implementation must be thread-safe.
    """

    def open(self, path: Path, flags: int, mode: int = 0o777) -> int:
        """Open ``path`` as ``os.open`` does; return the descriptor."""
        ...

    def close(self, fd: int) -> None:
        """Close a descriptor."""
        ...

    def write(self, fd: int, data: bytes | bytearray | memoryview) -> int:
        """Write to ``fd`` as ``os.write`` does; return how many bytes were written."""
        ...

    def pread(self, fd: int, size: int, offset: int) -> bytes:
        """Read up to ``size`` bytes at ``offset`` without moving the file position."""
        ...

    def pwrite(self, fd: int, data: bytes | bytearray | memoryview, offset: int) -> int:
        """Write ``data`` at ``offset`` without moving the file position, as ``os.pwrite``
        does (the recovery checkpoint overwrites its slots in place); return the count."""
        ...

    def fsync(self, fd: int) -> None:
        """Make the file (or, for a directory, its entries) durable."""
        ...

    def ftruncate(self, fd: int, length: int) -> None:
        """Cut or extend the file to ``length`` bytes."""
        ...

    def fstat(self, fd: int) -> os.stat_result:
        """Return the status of an open file."""
        ...

    def replace(self, src: Path, dst: Path) -> None:
        """Rename ``src`` to ``dst`` atomically, replacing ``dst`` if it exists."""
        ...

    def rename(self, src: Path, dst: Path) -> None:
        """Rename ``src`` to ``dst`` (a directory onto an empty one or a new name)."""
        ...

    def unlink(self, path: Path) -> None:
        """Remove a file."""
        ...

    def listdir(self, path: Path) -> list[str]:
        """Return the names in a directory."""
        ...

    def mkdir(self, path: Path, *, parents: bool = False, exist_ok: bool = False) -> None:
        """Create a directory, as ``Path.mkdir`` does."""
        ...

    def rmtree(self, path: Path) -> None:
        """Remove a directory and everything in it, ignoring errors."""
        ...

    def read_bytes(self, path: Path) -> bytes:
        """Return the whole content of a file."""
        ...

    def exists(self, path: Path) -> bool:
        """Whether ``path`` names anything."""
        ...

    def is_file(self, path: Path) -> bool:
        """Whether ``path`` names a regular file."""
        ...

    def flock(self, fd: int, operation: int) -> None:
        """Apply or remove an advisory lock, as ``fcntl.flock`` does."""
        ...


def _mkdir(path: Path, *, parents: bool = False, exist_ok: bool = False) -> None:
    Path(path).mkdir(parents=parents, exist_ok=exist_ok)


def _rmtree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def _read_bytes(path: Path) -> bytes:
    return Path(path).read_bytes()


def _is_file(path: Path) -> bool:
    return Path(path).is_file()


class OsFileSystem:
    """The operating system's file system, unchanged: the store's default :class:`FileSystem`."""

    open = staticmethod(os.open)
    close = staticmethod(os.close)
    write = staticmethod(os.write)
    pread = staticmethod(os.pread)
    pwrite = staticmethod(os.pwrite)
    fsync = staticmethod(os.fsync)
    ftruncate = staticmethod(os.ftruncate)
    fstat = staticmethod(os.fstat)
    replace = staticmethod(os.replace)
    rename = staticmethod(os.rename)
    unlink = staticmethod(os.unlink)
    listdir = staticmethod(os.listdir)
    mkdir = staticmethod(_mkdir)
    rmtree = staticmethod(_rmtree)
    read_bytes = staticmethod(_read_bytes)
    exists = staticmethod(os.path.exists)
    is_file = staticmethod(_is_file)
    flock = staticmethod(fcntl.flock)


#: The default file system of every store, log and segment.
OS_FILE_SYSTEM: FileSystem = OsFileSystem()
