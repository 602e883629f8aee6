"""A file system that remembers what fsync made durable, and can lose power.

``FaultFS`` is a :class:`headwater.store.FileSystem` for tests, built on the technique of
RocksDB's ``FaultInjectionTestFS`` and SQLite's crash-test VFS. Every operation is carried
out for real on real files under one root directory, so the store under test reads back
exactly what it wrote; beside that, FaultFS keeps a model of what a power cut would leave:

* per file, its content as of its last successful ``fsync`` and the writes and truncations
  made since, in order;
* per directory, its entries as of its last ``fsync`` and the creations, renames and
  unlinks made since, in order. A new name, a rename or an unlink is durable only once
  its directory has been fsynced, as on Linux.

:meth:`FaultFS.power_loss` rewrites the tree under the root to a state a power cut could
leave. Each directory keeps its synced entries plus a random prefix of the changes made
since (a journal commits metadata in order, and may have committed some on its own); so
a rename or a new file whose directory was not fsynced may be undone, and an unlink that
was not made durable may be undone, bringing the file back. Each file keeps its synced
content plus a random prefix of its later writes, the last of them torn at an arbitrary
byte. The choices come from a seeded ``random.Random``, so a failure replays.

A power cut happens at a chosen operation: :meth:`FaultFS.crash_after` arms a countdown
over the operations that change the disk (writes, fsyncs, truncations, creations,
renames, unlinks, directories made or removed); the operation that reaches zero is not
carried out and raises :class:`PowerLoss`, as does every later call (the machine is
off). ``PowerLoss`` derives from ``BaseException`` so that no ``except OSError`` or
``except Exception`` in the code under test can carry on past it.

Faults: :class:`Fault` rules make chosen operations fail with an ``OSError`` (``EIO``,
``ENOSPC``, ...). A failed fsync behaves as Linux's does since 4.13 (PostgreSQL's
"fsyncgate"): the writes it should have made durable are dropped from the durable
future of the file for good, even though reads still return them (they sit in the page
cache), and a later fsync that succeeds does not bring them back.

Only renames within one directory are supported; the store makes no others.
"""

from __future__ import annotations

import errno as errno_codes
import fcntl
import os
import random
import shutil
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

#: Operations that change what is on disk: the points at which power can be lost.
MUTATING_OPS = frozenset(
    {"write", "fsync", "ftruncate", "create", "replace", "rename", "unlink", "mkdir", "rmtree"}
)


class PowerLoss(BaseException):
    """The simulated machine lost power: nothing from here on reaches the disk."""


class ProcessKilled(BaseException):
    """The simulated process was killed (``kill -9``): it makes no more calls."""


@dataclass(eq=False)
class _File:
    #: The content as of the last successful fsync.
    durable: bytearray = field(default_factory=bytearray)
    #: Writes ``(offset, data)`` and truncations ``(length, None)`` since then, in order.
    pending: list[tuple[int, bytes | None]] = field(default_factory=list)


@dataclass(eq=False)
class _Dir:
    durable: dict[str, _File | _Dir] = field(default_factory=dict)
    current: dict[str, _File | _Dir] = field(default_factory=dict)
    #: ("link", name, node) / ("unlink", name, None) / ("rename", src, dst) since the last fsync.
    pending: list[tuple[str, str, object]] = field(default_factory=list)

    def link(self, name: str, node: _File | _Dir) -> None:
        self.current[name] = node
        self.pending.append(("link", name, node))

    def unlink(self, name: str) -> None:
        del self.current[name]
        self.pending.append(("unlink", name, None))

    def rename(self, src: str, dst: str) -> None:
        self.current[dst] = self.current.pop(src)
        self.pending.append(("rename", src, dst))


@dataclass
class Fault:
    """Fail matching operations with ``OSError(errno)``.

    ``op`` is one of ``open``, ``create`` (an open that creates a file), ``write``,
    ``fsync``, ``ftruncate``, ``replace``, ``rename``, ``unlink``, ``mkdir``, ``pread``.
    A rule matches an operation whose path (for descriptors: the path they were opened
    with) ends with ``path_suffix``; it lets ``skip`` matches through, then fails the next
    ``times`` ones (``-1``: all of them). With ``partial``, a failing write first writes
    half of its data and returns that count, as a filling disk does; the write after it
    then fails.
    """

    op: str
    errno: int
    path_suffix: str = ""
    skip: int = 0
    times: int = 1
    partial: bool = False
    #: How many operations this rule has failed so far.
    hits: int = 0
    _partial_pending: bool = False

    def matches(self, op: str, path: str) -> bool:
        return op == self.op and path.endswith(self.path_suffix)

    @property
    def exhausted(self) -> bool:
        return self.times >= 0 and self.hits >= self.times


@dataclass(frozen=True)
class PowerLossReport:
    """What :meth:`FaultFS.power_loss` did to the tree."""

    #: Directory changes not fsynced: undone, and kept.
    entries_undone: int
    entries_kept: int
    #: Files that lost unsynced writes, and how many bytes of unsynced writes survived.
    files_cut: int
    unsynced_bytes_kept: int


@dataclass(eq=False)
class _Open:
    node: _File | _Dir
    path: str
    flags: int = 0


class _Machine:
    """What one simulated machine holds: its disk's model, its clock of operations, faults."""

    def __init__(self, root: str, seed: int) -> None:
        self.root = root
        self.rng = random.Random(seed)
        self.faults: list[Fault] = []
        self.counts: dict[str, int] = {}
        self.lock = threading.RLock()
        self.countdown: int | None = None
        self.off = False
        self.tree = _Dir()


class FaultFS:
    """A :class:`headwater.store.FileSystem` over real files under ``root`` that can lose power.

    Whatever is under ``root`` when it is created counts as durable. Every path the store
    uses must lie under ``root``. Thread-safe: one lock serialises operations.

    One ``FaultFS`` is what one process sees; :meth:`kill_process` ends that process (its
    descriptors close, the page cache and so everything not yet fsynced stays) and returns
    the view of the next process on the same machine.
    """

    def __init__(self, root: Path, *, seed: int = 0, _machine: _Machine | None = None) -> None:
        if _machine is None:
            _machine = _Machine(os.path.abspath(root), seed)
            _machine.tree = _scan(_machine.root)
        self._m = _machine
        self.root = _machine.root
        self._fds: dict[int, _Open] = {}
        self._killed = False

    @property
    def rng(self) -> random.Random:
        """The machine's random choices (seeded)."""
        return self._m.rng

    @property
    def faults(self) -> list[Fault]:
        """The fault rules in force."""
        return self._m.faults

    @property
    def counts(self) -> dict[str, int]:
        """Operations that changed the disk so far, by name."""
        return self._m.counts

    @property
    def _lock(self) -> threading.RLock:
        return self._m.lock

    @property
    def _tree(self) -> _Dir:
        return self._m.tree

    @property
    def _off(self) -> bool:
        return self._m.off or self._killed

    def kill_process(self) -> FaultFS:
        """End this process as ``kill -9`` would; return the file system of a new one.

        The descriptors close (releasing locks); nothing is lost, since the page cache
        outlives the process. Every later call on this object raises
        :class:`ProcessKilled`, so objects of the dead process cannot act any more.
        """
        with self._lock:
            self._killed = True
            for fd in self._fds:
                os.close(fd)
            self._fds.clear()
            return FaultFS(Path(self.root), _machine=self._m)

    # -- control ---------------------------------------------------------------------------

    @property
    def operations(self) -> int:
        """How many operations changed the disk so far."""
        return sum(self.counts.values())

    @property
    def powered_off(self) -> bool:
        """Whether power was lost (every operation now raises :class:`PowerLoss`)."""
        return self._m.off

    def crash_after(self, operations: int | None) -> None:
        """Lose power at the ``operations``-th disk-changing operation from now (0: the next).

        ``None`` disarms the countdown.
        """
        self._m.countdown = operations

    def inject(self, fault: Fault) -> Fault:
        """Add a fault rule; return it (its ``hits`` count the failures it caused)."""
        self._m.faults.append(fault)
        return fault

    def unsynced_bytes(self, path: Path) -> int:
        """How many bytes written to file ``path`` no fsync has made durable yet."""
        with self._lock:
            node = self._node(path)
            assert isinstance(node, _File), f"{path} is not a file"
            return sum(len(data) for _, data in node.pending if data is not None)

    def durable_entries(self, path: Path) -> set[str]:
        """The names in directory ``path`` that a power cut cannot take away."""
        with self._lock:
            node = self._node(path)
            assert isinstance(node, _Dir), f"{path} is not a directory"
            return set(node.durable) & {
                n for n, v in node.current.items() if node.durable.get(n) is v
            }

    def power_loss(self) -> PowerLossReport:
        """Cut the power now (if not already) and rewrite the tree as the cut left it.

        Every descriptor opened through this file system is closed; the instance stays
        off. Open the tree again with a new ``FaultFS`` (or the real file system).
        """
        with self._lock:
            self._m.off = True
            for fd in self._fds:
                os.close(fd)
            self._fds.clear()
            stats = [0, 0, 0, 0]
            contents: dict[int, bytes] = {}
            tree = self._survivor(self._tree, contents, stats)
            for name in os.listdir(self.root):
                _remove(os.path.join(self.root, name))
            _materialise(self.root, tree)
            return PowerLossReport(*stats)

    # -- the model -------------------------------------------------------------------------

    def _split(self, path: Path | str) -> tuple[_Dir, str, str]:
        """The model's parent directory of ``path``, the name in it, and the full path."""
        full = os.path.abspath(path)
        rel = os.path.relpath(full, self.root)
        if rel == "." or rel.startswith(".."):
            raise AssertionError(f"{full} is not below the FaultFS root {self.root}")
        parts = rel.split(os.sep)
        directory = self._tree
        for part in parts[:-1]:
            child = directory.current.get(part)
            if not isinstance(child, _Dir):
                raise FileNotFoundError(errno_codes.ENOENT, "no such directory", full)
            directory = child
        return directory, parts[-1], full

    def _node(self, path: Path | str) -> _File | _Dir:
        full = os.path.abspath(path)
        if full == self.root:
            return self._tree
        directory, name, _ = self._split(full)
        try:
            return directory.current[name]
        except KeyError:
            raise FileNotFoundError(errno_codes.ENOENT, "no such file", full) from None

    def _opened(self, fd: int) -> _Open | None:
        """The open file behind ``fd``; ``None`` once the process or the power is gone."""
        if self._off:
            return None
        try:
            return self._fds[fd]
        except KeyError:
            raise OSError(errno_codes.EBADF, "not opened through this FaultFS") from None

    def _check(self, op: str, path: str) -> None:
        """Power off, count down to a power cut, and apply fault rules, for one operation."""
        m = self._m
        if self._killed:
            raise ProcessKilled(f"{op} {path}: the process was killed")
        if m.off:
            raise PowerLoss(f"{op} {path}: the power is off")
        if op in MUTATING_OPS:
            if m.countdown is not None:
                if m.countdown == 0:
                    m.off = True
                    m.countdown = None
                    raise PowerLoss(f"power lost before {op} {path}")
                m.countdown -= 1
            m.counts[op] = m.counts.get(op, 0) + 1
        for fault in self.faults:
            if fault.exhausted or not fault.matches(op, path):
                continue
            if fault.skip:
                fault.skip -= 1
                continue
            if fault.partial and op == "write" and not fault._partial_pending:
                fault._partial_pending = True
                raise _PartialWriteError(fault)
            fault._partial_pending = False
            fault.hits += 1
            raise OSError(fault.errno, f"{os.strerror(fault.errno)} (injected)", path)

    # -- FileSystem ------------------------------------------------------------------------

    def open(self, path: Path, flags: int, mode: int = 0o777) -> int:
        """Open ``path`` as ``os.open`` does."""
        with self._lock:
            if os.path.abspath(path) == self.root:
                self._check("open", self.root)
                fd = os.open(self.root, flags, mode)
                self._fds[fd] = _Open(self._tree, self.root)
                return fd
            directory, name, full = self._split(path)
            existing = directory.current.get(name)
            creating = existing is None and bool(flags & os.O_CREAT)
            self._check("open", full)
            if creating:
                self._check("create", full)
            elif existing is not None and flags & os.O_TRUNC:
                self._check("ftruncate", full)
            fd = os.open(full, flags, mode)
            if creating:
                node: _File | _Dir = _File()
                directory.link(name, node)
            else:
                node = self._node(full)
                if flags & os.O_TRUNC and isinstance(node, _File):
                    node.pending.append((0, None))
            self._fds[fd] = _Open(node, full, flags)
            return fd

    def close(self, fd: int) -> None:
        """Close a descriptor (also after a power cut: closing writes nothing)."""
        with self._lock:
            if self._fds.pop(fd, None) is not None:
                os.close(fd)
            elif not self._off:
                raise OSError(errno_codes.EBADF, "not opened through this FaultFS")

    def write(self, fd: int, data: bytes | bytearray | memoryview) -> int:
        """Write as ``os.write`` does, and remember the write as not yet durable."""
        with self._lock:
            opened = self._opened(fd)
            try:
                self._check("write", _path_of(opened))
            except _PartialWriteError:
                data = memoryview(data)[: max(1, len(data) // 2)]
            assert opened is not None and isinstance(opened.node, _File)
            written = os.write(fd, data)
            end = os.lseek(fd, 0, os.SEEK_CUR)
            opened.node.pending.append((end - written, bytes(memoryview(data)[:written])))
            return written

    def pwrite(self, fd: int, data: bytes | bytearray | memoryview, offset: int) -> int:
        """Write at ``offset`` as ``os.pwrite`` does, and remember it as not yet durable."""
        with self._lock:
            opened = self._opened(fd)
            try:
                self._check("write", _path_of(opened))
            except _PartialWriteError:
                data = memoryview(data)[: max(1, len(data) // 2)]
            assert opened is not None and isinstance(opened.node, _File)
            written = os.pwrite(fd, data, offset)
            if opened.flags & os.O_APPEND:  # Linux appends whatever the offset says
                offset = os.fstat(fd).st_size - written
            opened.node.pending.append((offset, bytes(memoryview(data)[:written])))
            return written

    def pread(self, fd: int, size: int, offset: int) -> bytes:
        """Read as ``os.pread`` does."""
        with self._lock:
            self._check("pread", _path_of(self._opened(fd)))
            return os.pread(fd, size, offset)

    def fsync(self, fd: int) -> None:
        """fsync for real, and count what it covered as durable."""
        with self._lock:
            opened = self._opened(fd)
            node = opened.node if opened else None
            try:
                self._check("fsync", _path_of(opened))
            except OSError:
                if isinstance(node, _File):
                    # fsyncgate: the dirty pages were dropped; they never reach the disk.
                    node.pending.clear()
                raise
            os.fsync(fd)
            if isinstance(node, _File):
                for change in node.pending:
                    _apply(node.durable, change)
                node.pending.clear()
            elif isinstance(node, _Dir):
                node.durable = dict(node.current)
                node.pending.clear()

    def ftruncate(self, fd: int, length: int) -> None:
        """Truncate as ``os.ftruncate`` does (not durable until an fsync)."""
        with self._lock:
            opened = self._opened(fd)
            self._check("ftruncate", _path_of(opened))
            assert opened is not None and isinstance(opened.node, _File)
            os.ftruncate(fd, length)
            opened.node.pending.append((length, None))

    def fstat(self, fd: int) -> os.stat_result:
        """Status of an open file."""
        with self._lock:
            self._check("fstat", _path_of(self._opened(fd)))
            return os.fstat(fd)

    def replace(self, src: Path, dst: Path) -> None:
        """Rename atomically within one directory (durable once the directory is fsynced)."""
        self._rename("replace", src, dst, os.replace)

    def rename(self, src: Path, dst: Path) -> None:
        """Rename within one directory (durable once the directory is fsynced)."""
        self._rename("rename", src, dst, os.rename)

    def _rename(self, op: str, src: Path, dst: Path, do: Callable[[str, str], None]) -> None:
        with self._lock:
            src_dir, src_name, src_full = self._split(src)
            dst_dir, dst_name, dst_full = self._split(dst)
            self._check(op, dst_full)
            if src_dir is not dst_dir:
                raise AssertionError(f"FaultFS renames within one directory only: {src} -> {dst}")
            do(src_full, dst_full)
            src_dir.rename(src_name, dst_name)

    def unlink(self, path: Path) -> None:
        """Remove a file (durable once its directory is fsynced)."""
        with self._lock:
            directory, name, full = self._split(path)
            self._check("unlink", full)
            os.unlink(full)
            directory.unlink(name)

    def listdir(self, path: Path) -> list[str]:
        """Names in a directory."""
        with self._lock:
            self._check("listdir", str(path))
            return os.listdir(path)

    def mkdir(self, path: Path, *, parents: bool = False, exist_ok: bool = False) -> None:
        """Make a directory, as ``Path.mkdir`` does (durable once its parent is fsynced)."""
        with self._lock:
            full = os.path.abspath(path)
            if full == self.root:
                if not exist_ok:
                    raise FileExistsError(errno_codes.EEXIST, "exists", full)
                return
            directory, name, _ = self._split(full) if not parents else self._parents(full, exist_ok)
            if name in directory.current:
                if exist_ok and isinstance(directory.current[name], _Dir):
                    return
                raise FileExistsError(errno_codes.EEXIST, "exists", full)
            self._check("mkdir", full)
            os.mkdir(full)
            directory.link(name, _Dir())

    def _parents(self, full: str, exist_ok: bool) -> tuple[_Dir, str, str]:
        parent = os.path.dirname(full)
        if parent != self.root and not isinstance(self._node_or_none(parent), _Dir):
            self.mkdir(Path(parent), parents=True, exist_ok=True)
        return self._split(full)

    def _node_or_none(self, path: str) -> _File | _Dir | None:
        try:
            return self._node(path)
        except FileNotFoundError:
            return None

    def rmtree(self, path: Path) -> None:
        """Remove a directory tree, ignoring errors (durable once its parent is fsynced)."""
        with self._lock:
            directory, name, full = self._split(path)
            self._check("rmtree", full)
            shutil.rmtree(full, ignore_errors=True)
            if name in directory.current and not os.path.exists(full):
                directory.unlink(name)

    def read_bytes(self, path: Path) -> bytes:
        """The whole content of a file."""
        with self._lock:
            self._check("read", str(path))
            return Path(path).read_bytes()

    def exists(self, path: Path) -> bool:
        """Whether ``path`` names anything."""
        with self._lock:
            self._check("stat", str(path))
            return os.path.exists(path)

    def is_file(self, path: Path) -> bool:
        """Whether ``path`` names a regular file."""
        with self._lock:
            self._check("stat", str(path))
            return os.path.isfile(path)

    def flock(self, fd: int, operation: int) -> None:
        """Advisory lock, as ``fcntl.flock`` (a lock does not outlive a power cut anyway)."""
        with self._lock:
            self._check("flock", _path_of(self._opened(fd)))
            fcntl.flock(fd, operation)

    # -- power loss ------------------------------------------------------------------------

    def _survivor(
        self, directory: _Dir, contents: dict[int, bytes], stats: list[int]
    ) -> dict[str, object]:
        """The entries of ``directory`` after a power cut: name -> bytes or a nested dict."""
        keep = self.rng.randint(0, len(directory.pending))
        stats[0] += len(directory.pending) - keep
        stats[1] += keep
        entries = dict(directory.durable)
        for kind, a, b in directory.pending[:keep]:
            if kind == "link":
                assert isinstance(b, _File | _Dir)
                entries[a] = b
            elif kind == "unlink":
                entries.pop(a, None)
            else:
                assert isinstance(b, str)
                entries[b] = entries.pop(a)
        out: dict[str, object] = {}
        for name in sorted(entries):
            node = entries[name]
            if isinstance(node, _Dir):
                out[name] = self._survivor(node, contents, stats)
            else:
                if id(node) not in contents:
                    contents[id(node)] = self._file_survivor(node, stats)
                out[name] = contents[id(node)]
        return out

    def _file_survivor(self, node: _File, stats: list[int]) -> bytes:
        content = bytearray(node.durable)
        if not node.pending:
            return bytes(content)
        keep = self.rng.randint(0, len(node.pending))
        kept = 0
        for change in node.pending[:keep]:
            _apply(content, change)
            kept += len(change[1] or b"")
        if keep < len(node.pending):
            stats[2] += 1
            offset, data = node.pending[keep]
            if data is not None and len(data) > 1:
                torn = self.rng.randint(0, len(data) - 1)
                if torn:  # nothing of a write torn at its first byte reached the file
                    _apply(content, (offset, data[:torn]))
                    kept += torn
        stats[3] += kept
        return bytes(content)


class _PartialWriteError(Exception):
    def __init__(self, fault: Fault) -> None:
        super().__init__(fault.op)
        self.fault = fault


def _apply(content: bytearray, change: tuple[int, bytes | None]) -> None:
    """Apply one write ``(offset, data)`` or truncation ``(length, None)`` to ``content``."""
    offset, data = change
    if data is None:
        if offset < len(content):
            del content[offset:]
        else:
            content.extend(bytes(offset - len(content)))
        return
    if offset > len(content):
        content.extend(bytes(offset - len(content)))
    content[offset : offset + len(data)] = data


def _path_of(opened: _Open | None) -> str:
    return opened.path if opened is not None else ""


def _scan(path: str) -> _Dir:
    """Model the tree under ``path`` as it is, all of it durable."""
    directory = _Dir()
    for name in sorted(os.listdir(path)):
        full = os.path.join(path, name)
        if os.path.isdir(full):
            node: _File | _Dir = _scan(full)
        else:
            with open(full, "rb") as f:
                node = _File(bytearray(f.read()))
        directory.durable[name] = node
        directory.current[name] = node
    return directory


def _remove(path: str) -> None:
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    else:
        os.unlink(path)


def _materialise(path: str, tree: dict[str, object]) -> None:
    for name, entry in tree.items():
        full = os.path.join(path, name)
        if isinstance(entry, dict):
            os.mkdir(full)
            _materialise(full, entry)
        else:
            assert isinstance(entry, bytes)
            with open(full, "wb") as f:
                f.write(entry)
