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
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import anyio
import anyio.to_thread
import orjson
from anyio.abc import TaskStatus
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, wait_random_exponential

from headwater.store import DecimalColumn, FileSystem, validate_topic_name

from ._dead_letters import FILE_HEADER, LINE_HEADER, DeadLetters, dead_letter_topic
from ._errors import RETRYABLE, ConnectorConfigError
from ._file_tail import Chunk, FileTail, KnownFile
from ._line_formats import LineFormat
from ._log import ConnectorLog
from ._position import PositionStore

logger = logging.getLogger("headwater.connectors")

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
    :param backoff_s: after a failure (a read, an append), the first retry's largest
        wait; each further retry doubles it, up to 30 s (full jitter).
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
    backoff_s: float = 0.2

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
        if not self.backoff_s > 0:
            raise ConnectorConfigError(f"backoff_s must be > 0, got {self.backoff_s}")
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
    :param fs: the file system files are opened and read through (the operating system
        by default).

    Concurrency: :meth:`run` once, from one task.
    """

    def __init__(
        self,
        log: ConnectorLog,
        positions: PositionStore,
        config: FileSourceConfig,
        *,
        progress: BackfillProgress | None = None,
        fs: FileSystem | None = None,
    ) -> None:
        self.log = log
        self.positions = positions
        self.config = config
        self.dead_letters = DeadLetters(log, config.dead_letters)
        self._progress = progress or BackfillProgress()
        self._tail = FileTail(fs)
        self._files: dict[tuple[int, int], KnownFile] = {}
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
            retry=retry_if_exception_type(RETRYABLE),
            wait=wait_random_exponential(multiplier=self.config.backoff_s, max=30),
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
        files = await anyio.to_thread.run_sync(self._tail.reopen_all, entries)
        self._files = {f.identity: f for f in files}

    # -- scanning --------------------------------------------------------------------

    async def _scan(self, first: bool) -> int:
        """Find new, gone and truncated files; return the bytes left to read."""
        start_at_end = first and not self._resumed and not self.config.from_beginning
        scan = self._tail.scan
        return await anyio.to_thread.run_sync(scan, self.config.path, self._files, start_at_end)

    # -- reading ---------------------------------------------------------------------

    async def _read_all(self, until_caught_up: bool) -> None:
        """Read every file to its end, a chunk at a time, overlapping reads and appends.

        A gone file is finished (its last line taken, then forgotten) once it has not
        grown for ``close_inactive_s``, or at once with ``until_caught_up``. A failure of
        either half is raised as itself (not as a task group's), for :meth:`_retrying`.
        """
        order = sorted(self._files.values(), key=lambda f: (not f.gone, str(f.path)))
        send, receive = anyio.create_memory_object_stream[Chunk | Exception | None](1)
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._produce_chunks, order, send, until_caught_up)
            async with receive:
                failure = await self._store_chunks(receive)
                tg.cancel_scope.cancel()  # a failure leaves the reader waiting to send
        if failure is not None:
            raise failure
        for f in [f for f in self._files.values() if f.gone and f.fd is None]:
            del self._files[f.identity]

    async def _store_chunks(
        self, receive: MemoryObjectReceiveStream[Chunk | Exception | None]
    ) -> Exception | None:
        """Store the chunks read until the last; return the failure that ended it, if any."""
        async for chunk in receive:
            if chunk is None:
                return None
            if isinstance(chunk, Exception):
                return chunk
            # A stop waits for the chunk in hand: its position is saved first.
            self._storing = True
            try:
                with anyio.CancelScope(shield=True):
                    await self._store(chunk)
            except Exception as exc:  # raised by _read_all, outside the task group
                return exc
            finally:
                self._storing = False
            if self._stopping:
                self._stop_scope.cancel()
        return None

    async def _produce_chunks(
        self,
        files: list[KnownFile],
        send: MemoryObjectSendStream[Chunk | Exception | None],
        until_caught_up: bool,
    ) -> None:
        async with send:
            try:
                await self._read_chunks(files, send, until_caught_up)
            except Exception as exc:  # handed over: _read_all raises it
                await send.send(exc)
            else:
                await send.send(None)

    async def _read_chunks(
        self,
        files: list[KnownFile],
        send: MemoryObjectSendStream[Chunk | Exception | None],
        until_caught_up: bool,
    ) -> None:
        limit = await self.log.max_record_bytes(self.config.topic)
        close_after = self.config.close_inactive_s
        for f in files:
            offset, line, header = f.offset, f.line, f.header
            closing = f.gone and (
                until_caught_up or time.monotonic() - f.last_growth >= close_after
            )
            while True:
                read = functools.partial(
                    self._tail.read_chunk,
                    f,
                    offset,
                    line,
                    header=header,
                    fmt=self.config.format,
                    chunk_bytes=self.config.chunk_bytes,
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

    async def _store(self, chunk: Chunk) -> None:
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
        if chunk.last:
            self._tail.close(f)
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
