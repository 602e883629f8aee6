"""The file work of a file source: finding files, knowing them again, reading chunks.

Everything here runs in a worker thread (:class:`FileTail` blocks), and every call that
opens or reads a file goes through a :class:`~headwater.store.FileSystem` (the operating
system by default), so that failures can be injected. :mod:`._file_source` says what a
scan and a chunk are for; this module does them.

A file is known by its identity (device and inode) and a fingerprint: the length and
CRC-32 of its first bytes, up to :data:`FINGERPRINT_BYTES`. A file that cannot be opened
for now (its permissions, an I/O error) is skipped with a warning, once, and tried again
at every scan; the other files are read meanwhile.
"""

from __future__ import annotations

import glob
import logging
import os
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from headwater.store import FileSystem, OsFileSystem

from ._line_formats import LineFormat, ParsedLines, parse_lines

logger = logging.getLogger("headwater.connectors")

#: Bytes of a file's start that identify it along with its inode.
FINGERPRINT_BYTES = 1024


@dataclass(slots=True)
class KnownFile:
    """A file the source knows, by identity."""

    path: Path
    dev: int
    ino: int
    offset: int = 0
    line: int = 0
    fingerprint: tuple[int, int] = (0, 0)  # (length, CRC-32 of that many first bytes)
    fd: int | None = None
    gone: bool = False
    header: list[str] | None = None  # CSV
    last_growth: float = field(default_factory=time.monotonic)

    @property
    def identity(self) -> tuple[int, int]:
        """``(device, inode)``: what tells this file from the next one at the same path."""
        return (self.dev, self.ino)

    def document(self) -> dict[str, Any]:
        """The file's position as the source stores it (JSON-ready)."""
        return {
            "path": str(self.path),
            "dev": self.dev,
            "ino": self.ino,
            "offset": self.offset,
            "line": self.line,
            "fp": list(self.fingerprint),
        }


@dataclass(slots=True)
class Chunk:
    """One step's worth of a file: its parsed lines and where the file stands after them."""

    file: KnownFile
    parsed: ParsedLines
    first_line: int
    lines: int
    end_offset: int
    size: int
    fingerprint: tuple[int, int]
    last: bool = False  # the file's final read: a gone file at its end
    header: list[str] | None = field(default=None)


class FileTail:
    """The blocking file work of one source (call from a worker thread, one at a time).

    :param fs: the file system (the operating system by default).
    """

    def __init__(self, fs: FileSystem | None = None) -> None:
        self.fs: FileSystem = fs if fs is not None else OsFileSystem()
        self._unreadable: set[Path] = set()

    def close(self, f: KnownFile) -> None:
        """Close ``f``'s descriptor (a file read to its end, to be forgotten)."""
        if f.fd is not None:
            fd, f.fd = f.fd, None
            self.fs.close(fd)

    def reopen_all(self, entries: list[dict[str, Any]]) -> list[KnownFile]:
        """Reopen the files of a saved position: each one found at its path, or at a
        sibling's (rotated meanwhile), with the same identity and fingerprint."""
        files = []
        for entry in entries:
            try:
                path = Path(entry["path"])
                identity = (int(entry["dev"]), int(entry["ino"]))
                f = KnownFile(
                    path,
                    *identity,
                    offset=int(entry["offset"]),
                    line=int(entry["line"]),
                    fingerprint=(int(entry["fp"][0]), int(entry["fp"][1])),
                )
            except (KeyError, TypeError, ValueError, IndexError):
                logger.warning("file source: skipped a saved file entry that does not decode")
                continue
            found = self._find(f, [path, *self._siblings(path)])
            if found is None:
                logger.warning(
                    "file source: %s (read up to line %d) is gone; lines written to it after "
                    "that were not read",
                    path,
                    f.line,
                )
                continue
            f.path, f.fd = found
            f.gone = f.path != path  # rotated while the source was down: read it to its end
            files.append(f)
        return files

    def scan(
        self, pattern: str, files: dict[tuple[int, int], KnownFile], start_at_end: bool
    ) -> int:
        """Update ``files`` from the file system: new files, gone ones, truncated ones;
        return the bytes left to read.

        :param start_at_end: new files start at their end (not read from their start).
        """
        seen = set()
        for path in _matches(pattern):
            try:
                st = os.stat(path)
            except OSError:
                continue
            identity = (st.st_dev, st.st_ino)
            known = files.get(identity)
            if known is not None:
                seen.add(identity)
                known.path = path
                known.gone = False
                continue
            opened = self._open(path)
            if opened is None:
                continue
            fd, st = opened
            f = KnownFile(path, st.st_dev, st.st_ino, fd=fd)
            seen.add(f.identity)
            if start_at_end:
                f.offset = st.st_size
                f.line = self._count_lines(fd, st.st_size)
                f.fingerprint = self._fingerprint(fd, st.st_size)
            files[f.identity] = f
        left = 0
        for identity, f in files.items():
            if identity not in seen:
                f.gone = True
            if f.fd is None:
                continue
            size = self.fs.fstat(f.fd).st_size
            if size < f.offset:
                logger.warning(
                    "file source: %s was truncated to %d bytes (read up to %d); reading it "
                    "again from its start",
                    f.path,
                    size,
                    f.offset,
                )
                f.offset = f.line = 0
                f.fingerprint = (0, 0)
                f.header = None
            left += size - f.offset
        return left

    def read_chunk(
        self,
        f: KnownFile,
        offset: int,
        line: int,
        *,
        header: list[str] | None,
        fmt: LineFormat,
        chunk_bytes: int,
        max_record_bytes: int,
        closing: bool,
    ) -> Chunk | None:
        """Read and parse the complete lines of ``f`` from ``offset``; None at its end.

        With ``closing`` (a gone file read for the last time) the chunk that reaches the
        file's end is its last: an unterminated last line is taken as it is.
        """
        fd = f.fd
        if fd is None:
            return None
        pread = self.fs.pread
        data = pread(fd, chunk_bytes, offset)
        # A line longer than a chunk: read on until it ends (or the file does).
        while b"\n" not in data and len(data) >= chunk_bytes:
            more = pread(fd, len(data), offset + len(data))
            if not more:
                break
            data += more
        last = False
        if closing and len(data) < chunk_bytes:
            # The file has moved away and grows no more: what is left is its last line.
            last = True
            if not data:
                return Chunk(f, ParsedLines([]), line + 1, 0, offset, 0, f.fingerprint, last)
            size = len(data)
            if not data.endswith(b"\n"):
                data += b"\n"
            cut = len(data) - 1
        else:
            cut = data.rfind(b"\n")
            if cut < 0:
                return None
            size = cut + 1
        complete = data[:cut]
        lines = complete.split(b"\n")
        if b"\r" in complete:
            lines = [x[:-1] if x.endswith(b"\r") else x for x in lines]
        if fmt is LineFormat.CSV and header is None and line > 0:
            header = self._read_header(fd)
        parsed = parse_lines(fmt, lines, line + 1, header, max_record_bytes)
        end = offset + size
        fingerprint = f.fingerprint
        if fingerprint[0] < min(end, FINGERPRINT_BYTES):
            fingerprint = self._fingerprint(fd, end)
        return Chunk(f, parsed, line + 1, len(lines), end, size, fingerprint, last, parsed.header)

    # -- helpers ---------------------------------------------------------------------

    def _fingerprint(self, fd: int, length: int) -> tuple[int, int]:
        length = min(length, FINGERPRINT_BYTES)
        if length <= 0:
            return (0, 0)
        head = self.fs.pread(fd, length, 0)
        return (len(head), zlib.crc32(head))

    def _open(self, path: Path) -> tuple[int, os.stat_result] | None:
        """Open ``path``; None if it is gone, or cannot be opened for now (warned once)."""
        try:
            fd = self.fs.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as exc:
            if path not in self._unreadable:
                self._unreadable.add(path)
                logger.warning(
                    "file source: cannot open %s (%s); it is tried again at every scan",
                    path,
                    exc.strerror or exc,
                )
            return None
        if self._unreadable:
            self._unreadable.discard(path)
        return fd, self.fs.fstat(fd)

    def _siblings(self, path: Path) -> list[Path]:
        try:
            names = self.fs.listdir(path.parent or Path("."))
        except OSError:
            return []
        return [path.parent / name for name in sorted(names)]

    def _find(self, f: KnownFile, candidates: list[Path]) -> tuple[Path, int] | None:
        """Open the first of ``candidates`` that is ``f`` (identity and fingerprint)."""
        for candidate in candidates:
            try:
                st = os.stat(candidate)
            except OSError:
                continue
            if (st.st_dev, st.st_ino) != f.identity:
                continue
            opened = self._open(candidate)
            if opened is None:
                continue
            fd, st = opened
            if (st.st_dev, st.st_ino) == f.identity and (
                f.fingerprint[0] == 0 or self._fingerprint(fd, f.fingerprint[0]) == f.fingerprint
            ):
                return candidate, fd
            self.fs.close(fd)
        return None

    def _count_lines(self, fd: int, size: int) -> int:
        count = 0
        position = 0
        while position < size:
            block = self.fs.pread(fd, min(1 << 22, size - position), position)
            if not block:
                break
            count += block.count(b"\n")
            position += len(block)
        return count

    def _read_header(self, fd: int) -> list[str] | None:
        head = self.fs.pread(fd, 1 << 16, 0)
        first = head.split(b"\n", 1)[0].rstrip(b"\r")
        parsed = parse_lines(LineFormat.CSV, [first], 1)
        return parsed.header


def _matches(pattern: str) -> list[Path]:
    if glob.has_magic(pattern):
        return [Path(p) for p in sorted(glob.glob(pattern)) if os.path.isfile(p)]
    return [Path(pattern)] if os.path.isfile(pattern) else []
