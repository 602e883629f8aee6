"""File source: tail a file or a glob of files into a topic, line by line.

Theory of operation
-------------------
A file is known by its identity (device and inode), not its name, so that rotation is
followed: ``app.log`` renamed to ``app.log.1`` and a new ``app.log`` created is one file
that moved away, to be read to its end, and one new file, read from its start. Each
known file has an open descriptor and a position: the byte offset of its next unread
line and how many lines lie before it. Every ``poll_interval_s`` (files give no wake-up
without a watcher library, so a tailer polls, as Filebeat and Fluent Bit do) the source:

1. matches the pattern; a match with an unknown identity is a new file, read from its
   start (from its end for files that existed when a source without a saved position
   started, unless ``from_beginning``); a known file no longer matched is *gone*: it is
   still read while its writer may hold it open, and once it has not grown for
   ``close_inactive_s`` it is read to its end, its last line taken even without a line
   end, and forgotten;
2. checks each file's size: smaller than the position means the file was truncated in
   place (copytruncate), and reading starts again at 0;
3. reads each file (gone ones first, so a rotated file's lines precede its successor's)
   in chunks of ``chunk_bytes``, cut after the last complete line.

A chunk is one step: its lines are parsed (:mod:`._line_formats`), the good ones
appended to the topic and the malformed ones to the dead-letter topic (with file name
and line number), and only once both appends are durable is the position saved
(:mod:`._position`). Reading, cutting and parsing run in a worker thread; the event loop
appends. The next chunk is read and parsed while the previous one is appended, so
parsing overlaps the fsyncs.

Restart. The saved position lists every known file: its path, identity, offset, line
count and a fingerprint (a CRC of its first bytes, up to 1 KiB). A file is resumed only
if the file at its path, or a sibling in the same folder (rotated while the source was
down), has the same identity and fingerprint; an inode reused by another file fails the
fingerprint and is read as new. Files that appeared while the source was down are new.

Guarantee: every complete line is appended at least once, in file order; a line is
appended twice only if the process died after its chunk was durable and before the
position after it was saved, so duplicates are at most the last chunk before a crash.
What cannot be seen is not read: a file written and deleted while the source was down,
and lines written to a truncated file beyond the old position before the truncation
was noticed (a size check cannot see those).
"""

from __future__ import annotations

import functools
import glob
import logging
import os
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import orjson
from anyio.abc import TaskStatus
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, wait_random_exponential

from headwater.store import DecimalColumn, StorageFullError, validate_topic_name

from ._dead_letters import FILE_HEADER, LINE_HEADER, DeadLetters, dead_letter_topic
from ._errors import ConnectorConfigError
from ._line_formats import LineFormat, ParsedLines, parse_lines
from ._log import ConnectorLog
from ._position import PositionStore

logger = logging.getLogger("headwater.connectors")

#: Bytes of a file's start that identify it along with its inode.
FINGERPRINT_BYTES = 1024
_POSITION_VERSION = 1


@dataclass(frozen=True, kw_only=True, slots=True)
class FileSourceConfig:
    """Settings of a :class:`FileSource`.

    :param path: a file, or a glob pattern (``logs/*.jsonl``) of files.
    :param topic: the topic lines go to.
    :param format: ``jsonl``, ``csv`` or ``text`` (see :class:`LineFormat`).
    :param name: the name the position is saved under (by default from topic and path;
        two sources must not share one).
    :param from_beginning: read files that exist at the first start from their start
        (a backfill) rather than only what is written after.
    :param dead_letter_topic: where malformed lines go (``<topic>-dlq`` by default).
    :param poll_interval_s: how often files are checked for new lines.
    :param chunk_bytes: how much of a file one step reads; a step's lines are one
        append and one position save (and the most that a crash may write twice).
    :param close_inactive_s: how long a file that moved away is still read after it
        last grew (a writer may hold it open for a while after the rename).
    """

    path: str
    topic: str
    format: LineFormat = LineFormat.JSONL
    name: str | None = None
    from_beginning: bool = False
    dead_letter_topic: str | None = None
    poll_interval_s: float = 0.25
    chunk_bytes: int = 1 << 20
    close_inactive_s: float = 5.0

    def __post_init__(self) -> None:
        if not self.path:
            raise ConnectorConfigError("a file source needs a path or glob pattern")
        if not self.topic:
            raise ConnectorConfigError("a file source needs a topic")
        validate_topic_name(self.topic)
        if self.dead_letter_topic is not None:
            validate_topic_name(self.dead_letter_topic)
        try:
            object.__setattr__(self, "format", LineFormat(self.format))
        except ValueError:
            choices = ", ".join(f.value for f in LineFormat)
            raise ConnectorConfigError(
                f"unknown line format {self.format!r} (choose {choices})"
            ) from None
        if not self.poll_interval_s > 0:
            raise ConnectorConfigError(f"poll_interval_s must be > 0, got {self.poll_interval_s}")
        if self.close_inactive_s < 0:
            raise ConnectorConfigError(
                f"close_inactive_s must be >= 0, got {self.close_inactive_s}"
            )
        if self.chunk_bytes < 1024:
            raise ConnectorConfigError(f"chunk_bytes must be at least 1024, got {self.chunk_bytes}")

    @property
    def source_name(self) -> str:
        """The name the position is saved under."""
        return self.name or f"file:{self.topic}:{os.path.abspath(self.path)}"

    @property
    def dead_letters(self) -> str:
        """The dead-letter topic."""
        return self.dead_letter_topic or dead_letter_topic(self.topic)


@dataclass(frozen=True, slots=True)
class FileSourceStatistics:
    """Counters of a :class:`FileSource` since it started."""

    lines: int
    bytes: int
    malformed: int
    chunks: int
    files: int
    retries: int


@dataclass(slots=True)
class _File:
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
        return (self.dev, self.ino)

    def document(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "dev": self.dev,
            "ino": self.ino,
            "offset": self.offset,
            "line": self.line,
            "fp": list(self.fingerprint),
        }


@dataclass(slots=True)
class _Chunk:
    """One step's worth of a file: its parsed lines and where the file stands after them."""

    file: _File
    parsed: ParsedLines
    first_line: int
    lines: int
    end_offset: int
    size: int
    fingerprint: tuple[int, int]
    last: bool = False  # the file's final read: a gone file at its end
    header: list[str] | None = field(default=None)


class BackfillProgress:
    """How a :class:`FileSource` reports a backfill (reading what files held at start).

    The default reports nothing; the CLI's draws a progress bar.
    """

    def start(self, total_bytes: int) -> None:
        """A backfill of ``total_bytes`` begins."""

    def advance(self, lines: int, size: int) -> None:
        """``lines`` more lines (``size`` bytes) were stored."""

    def finish(self) -> None:
        """The backfill is done: the source has caught up with the files."""


class FileSource:
    """Tails a file or a glob of files into a topic (see the module for how).

    :param log: the log the lines go to.
    :param positions: where the position is saved.
    :param config: the source's settings.
    :param progress: told about the backfill.

    Concurrency: :meth:`run` once, from one task.
    """

    def __init__(
        self,
        log: ConnectorLog,
        positions: PositionStore,
        config: FileSourceConfig,
        *,
        progress: BackfillProgress | None = None,
    ) -> None:
        self.log = log
        self.positions = positions
        self.config = config
        self.dead_letters = DeadLetters(log, config.dead_letters)
        self._progress = progress or BackfillProgress()
        self._files: dict[tuple[int, int], _File] = {}
        self._resumed = False
        self._stop_scope = anyio.CancelScope()
        self._stopping = self._storing = False
        self._lines = self._bytes = self._malformed = self._chunks = self._retries = 0

    def statistics(self) -> FileSourceStatistics:
        """Return the counters so far."""
        return FileSourceStatistics(
            self._lines, self._bytes, self._malformed, self._chunks, len(self._files),
            self._retries,
        )  # fmt: skip

    async def run(
        self,
        *,
        until_caught_up: bool = False,
        task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        """Tail the files until cancelled or stopped; with ``until_caught_up``, return
        once every file has been read to its end.

        ``task_status.started()`` is called once the position is restored, the topic
        exists and the files are found: lines written after it are read. Failures to read
        a file or to append are retried with capped, jittered backoff and logged; the
        position never moves past what is durable.

        :raises TopicNotFoundError: never for the topic (it is created if missing).
        :raises LogClosedError: if the store closes under the source.
        """
        await self.log.ensure_topic(self.config.topic)
        await self._retrying(self._restore)
        # The first scan decides where files that exist now start: before started(), so
        # that "now" is when the caller was told the source runs.
        total = await self._retrying(self._scan, True)
        if not self._resumed:
            # What the first start decided (where each file starts) holds from now on.
            await self._retrying(self._save)
        task_status.started()
        self._progress.start(total)
        with self._stop_scope:
            await self._retrying(self._read_all, until_caught_up)
            self._progress.finish()
            while not until_caught_up:
                await anyio.sleep(self.config.poll_interval_s)
                await self._retrying(self._scan, False)
                await self._retrying(self._read_all, until_caught_up)

    def stop(self) -> None:
        """Make :meth:`run` return after the chunk it is storing (its position saved)."""
        self._stopping = True
        if not self._storing:
            self._stop_scope.cancel()

    async def _retrying(self, fn: Callable[..., Any], *args: Any) -> Any:
        def report(state: RetryCallState) -> None:
            self._retries += 1
            exc = state.outcome.exception() if state.outcome is not None else None
            logger.warning(
                "file source %s: %s; retrying in %.1f s",
                self.config.source_name,
                exc,
                state.next_action.sleep if state.next_action is not None else 0.0,
            )

        retrying = AsyncRetrying(
            retry=retry_if_exception_type((OSError, StorageFullError)),
            wait=wait_random_exponential(multiplier=0.2, max=30),
            sleep=anyio.sleep,
            before_sleep=report,
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                return await fn(*args)
        raise AssertionError("unreachable: tenacity retries for ever")  # pragma: no cover

    # -- restoring -------------------------------------------------------------------

    async def _restore(self) -> None:
        saved = await self.positions.load(self.config.source_name)
        if saved is None:
            return
        self._resumed = True
        try:
            document = orjson.loads(saved)
            entries = document["files"] if document.get("v") == _POSITION_VERSION else None
        except (orjson.JSONDecodeError, AttributeError, KeyError):
            entries = None
        if not isinstance(entries, list):
            logger.warning(
                "file source %s: the saved position does not decode; reading files as new",
                self.config.source_name,
            )
            return
        files = await anyio.to_thread.run_sync(_reopen_all, entries)
        self._files = {f.identity: f for f in files}

    # -- scanning --------------------------------------------------------------------

    async def _scan(self, first: bool) -> int:
        """Find new, gone and truncated files; return the bytes left to read."""
        start_at_end = first and not self._resumed and not self.config.from_beginning
        return await anyio.to_thread.run_sync(_scan, self.config.path, self._files, start_at_end)

    # -- reading ---------------------------------------------------------------------

    async def _read_all(self, until_caught_up: bool) -> None:
        """Read every file to its end, a chunk at a time, overlapping reads and appends.

        A gone file is finished (its last line taken, then forgotten) once it has not
        grown for ``close_inactive_s``, or at once with ``until_caught_up``.
        """
        order = sorted(self._files.values(), key=lambda f: (not f.gone, str(f.path)))
        send, receive = anyio.create_memory_object_stream[_Chunk | None](1)
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._produce_chunks, order, send, until_caught_up)
            async with receive:
                async for chunk in receive:
                    if chunk is None:
                        break
                    # A stop waits for the chunk in hand: its position is saved first.
                    self._storing = True
                    try:
                        with anyio.CancelScope(shield=True):
                            await self._store(chunk)
                    finally:
                        self._storing = False
                    if self._stopping:
                        self._stop_scope.cancel()
        for f in [f for f in self._files.values() if f.gone and f.fd is None]:
            del self._files[f.identity]

    async def _produce_chunks(self, files: list[_File], send: Any, until_caught_up: bool) -> None:
        limit = self.log.max_record_bytes(self.config.topic)
        close_after = self.config.close_inactive_s
        async with send:
            for f in files:
                offset, line, header = f.offset, f.line, f.header
                closing = f.gone and (
                    until_caught_up or time.monotonic() - f.last_growth >= close_after
                )
                while True:
                    read = functools.partial(
                        _read_chunk,
                        f,
                        offset,
                        line,
                        header=header,
                        config=self.config,
                        max_record_bytes=limit,
                        closing=closing,
                    )
                    chunk = await anyio.to_thread.run_sync(read)
                    if chunk is None:
                        break
                    if chunk.lines:
                        f.last_growth = time.monotonic()
                    await send.send(chunk)
                    offset, line = chunk.end_offset, chunk.first_line - 1 + chunk.lines
                    header = chunk.header or header
                    if chunk.last:
                        break
            await send.send(None)

    async def _store(self, chunk: _Chunk) -> None:
        f = chunk.file
        parsed = chunk.parsed
        if parsed.values:
            await self.log.append(self.config.topic, parsed.values)
        if parsed.bad_lines:
            count = len(parsed.bad_lines)
            await self.dead_letters.write(
                parsed.bad_values,
                parsed.bad_reasons,
                header_columns=[
                    (FILE_HEADER, [str(f.path).encode()] * count),
                    (LINE_HEADER, DecimalColumn(b"", parsed.bad_lines)),
                ],
            )
        f.offset = chunk.end_offset
        f.line = chunk.first_line - 1 + chunk.lines
        f.fingerprint = chunk.fingerprint
        if chunk.header is not None:
            f.header = chunk.header
        if chunk.last and f.fd is not None:
            os.close(f.fd)
            f.fd = None
        await self._save()
        self._lines += len(parsed.values)
        self._malformed += len(parsed.bad_lines)
        self._bytes += chunk.size
        self._chunks += 1
        self._progress.advance(chunk.lines, chunk.size)

    async def _save(self) -> None:
        files = [f.document() for f in self._files.values() if not (f.gone and f.fd is None)]
        document = orjson.dumps({"v": _POSITION_VERSION, "files": files})
        await self.positions.save(self.config.source_name, document)


# -- file work (worker threads) --------------------------------------------------------


def _fingerprint(fd: int, length: int) -> tuple[int, int]:
    length = min(length, FINGERPRINT_BYTES)
    if length <= 0:
        return (0, 0)
    head = os.pread(fd, length, 0)
    return (len(head), zlib.crc32(head))


def _open(path: Path) -> tuple[int, os.stat_result] | None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except (FileNotFoundError, NotADirectoryError):
        return None
    return fd, os.fstat(fd)


def _reopen_all(entries: list[dict[str, Any]]) -> list[_File]:
    """Reopen the files of a saved position (see the module: identity and fingerprint)."""
    files = []
    for entry in entries:
        try:
            path = Path(entry["path"])
            identity = (int(entry["dev"]), int(entry["ino"]))
            f = _File(
                path,
                *identity,
                offset=int(entry["offset"]),
                line=int(entry["line"]),
                fingerprint=(int(entry["fp"][0]), int(entry["fp"][1])),
            )
        except (KeyError, TypeError, ValueError, IndexError):
            logger.warning("file source: skipped a saved file entry that does not decode")
            continue
        found = _find(f, [path, *_siblings(path)])
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


def _siblings(path: Path) -> list[Path]:
    try:
        return [path.parent / name for name in sorted(os.listdir(path.parent or "."))]
    except OSError:
        return []


def _find(f: _File, candidates: list[Path]) -> tuple[Path, int] | None:
    """Open the first of ``candidates`` that is ``f`` (identity and fingerprint)."""
    for candidate in candidates:
        try:
            st = os.stat(candidate)
        except OSError:
            continue
        if (st.st_dev, st.st_ino) != f.identity:
            continue
        opened = _open(candidate)
        if opened is None:
            continue
        fd, st = opened
        if (st.st_dev, st.st_ino) == f.identity and (
            f.fingerprint[0] == 0 or _fingerprint(fd, f.fingerprint[0]) == f.fingerprint
        ):
            return candidate, fd
        os.close(fd)
    return None


def _matches(pattern: str) -> list[Path]:
    if glob.has_magic(pattern):
        return [Path(p) for p in sorted(glob.glob(pattern)) if os.path.isfile(p)]
    return [Path(pattern)] if os.path.isfile(pattern) else []


def _count_lines(fd: int, size: int) -> int:
    count = 0
    position = 0
    while position < size:
        block = os.pread(fd, min(1 << 22, size - position), position)
        if not block:
            break
        count += block.count(b"\n")
        position += len(block)
    return count


def _scan(pattern: str, files: dict[tuple[int, int], _File], start_at_end: bool) -> int:
    """Update ``files`` from the file system (see the module); return bytes left to read."""
    seen = set()
    for path in _matches(pattern):
        try:
            st = os.stat(path)
        except OSError:
            continue
        identity = (st.st_dev, st.st_ino)
        seen.add(identity)
        known = files.get(identity)
        if known is not None:
            known.path = path
            known.gone = False
            continue
        opened = _open(path)
        if opened is None:
            continue
        fd, st = opened
        f = _File(path, st.st_dev, st.st_ino, fd=fd)
        if start_at_end:
            f.offset = st.st_size
            f.line = _count_lines(fd, st.st_size)
            f.fingerprint = _fingerprint(fd, st.st_size)
        files[f.identity] = f
    left = 0
    for identity, f in files.items():
        if identity not in seen:
            f.gone = True
        if f.fd is None:
            continue
        size = os.fstat(f.fd).st_size
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


def _read_chunk(
    f: _File,
    offset: int,
    line: int,
    *,
    header: list[str] | None,
    config: FileSourceConfig,
    max_record_bytes: int,
    closing: bool,
) -> _Chunk | None:
    """Read and parse the complete lines of ``f`` from ``offset``; None at its end.

    With ``closing`` (a gone file read for the last time) the chunk that reaches the
    file's end is its last: an unterminated last line is taken as it is.
    """
    fd = f.fd
    if fd is None:
        return None
    data = os.pread(fd, config.chunk_bytes, offset)
    # A line longer than a chunk: read on until it ends (or the file does).
    while b"\n" not in data and len(data) >= config.chunk_bytes:
        more = os.pread(fd, len(data), offset + len(data))
        if not more:
            break
        data += more
    last = False
    if closing and len(data) < config.chunk_bytes:
        # The file has moved away and grows no more: what is left is its last line.
        last = True
        if not data:
            return _Chunk(f, ParsedLines([]), line + 1, 0, offset, 0, f.fingerprint, last)
        if not data.endswith(b"\n"):
            data += b"\n"
        cut = len(data) - 1
    else:
        cut = data.rfind(b"\n")
        if cut < 0:
            return None
    complete = data[:cut]
    lines = complete.split(b"\n")
    if b"\r" in complete:
        lines = [x[:-1] if x.endswith(b"\r") else x for x in lines]
    if config.format is LineFormat.CSV and header is None and line > 0:
        header = _read_header(fd)
    parsed = parse_lines(config.format, lines, line + 1, header, max_record_bytes)
    end = offset + cut + 1
    fingerprint = f.fingerprint
    if fingerprint[0] < min(end, FINGERPRINT_BYTES):
        fingerprint = _fingerprint(fd, end)
    return _Chunk(f, parsed, line + 1, len(lines), end, cut + 1, fingerprint, last, parsed.header)


def _read_header(fd: int) -> list[str] | None:
    head = os.pread(fd, 1 << 16, 0)
    first = head.split(b"\n", 1)[0].rstrip(b"\r")
    parsed = parse_lines(LineFormat.CSV, [first], 1)
    return parsed.header
