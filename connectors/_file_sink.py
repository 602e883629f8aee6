"""File sink: a topic's records into files of a directory, rolled by size and by time.

Theory of operation
-------------------
Each input partition has at most one open file, written under a temporary name::

    .<topic>-<partition>-<first offset>.<ext>.tmp

Records are appended to it as they arrive (JSON lines: each value as one line; CSV: one
row per JSON object, under a header row). The file is *rolled* once it holds
``roll_bytes`` or has been open ``roll_s``: fsynced, closed, renamed to its final name
and the directory fsynced, so that a final file is complete and durable the moment its
name can be seen::

    <topic>-<partition>-<first offset>-<last offset>.<ext>      (offsets 20 digits)

Only then is the input offset after it committed, with the file's name in the commit's
metadata. A crash before the rename leaves a temporary file (removed when the partition
is next assigned; its records are read again from the committed offset); a crash after
the rename and before the commit leaves a final file whose records the group's offset
does not cover yet: when the partition is next assigned, the sink finds the final file
with the highest last offset, resumes after it and commits that. So after any crash
the final files together hold every committed record once, and nothing is written
twice (a record already in a final file is never written to another).

A file operation that fails (a full disk, an I/O error) is handled the same way without
a crash: the :class:`SinkRunner` has the sink drop the partition's open file and recover
it as at an assignment, then retries from there after a backoff.

Every file operation goes through a :class:`~headwater.store.FileSystem` (the operating
system by default), in a worker thread. Records the format cannot hold (a value that is
not JSON; for CSV one that is not an object) go to the dead-letter topic.
"""

from __future__ import annotations

import bisect
import csv
import enum
import io
import itertools
import math
import os
import re
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import anyio
import anyio.to_thread
import orjson

from headwater.groups import ConsumerBatch, OffsetAndMetadata, TopicPartition
from headwater.store import (
    FileSystem,
    OsFileSystem,
    Record,
    exact_dumps,
    exact_loads,
    validate_topic_name,
)

from ._dead_letters import DeadLetters, dead_letter_topic
from ._errors import ConnectorConfigError
from ._log import ConnectorLog
from ._sink_runner import Checkpoint, Committer

_FINAL = re.compile(r"^(?P<topic>.+)-(?P<partition>\d+)-(?P<first>\d{20})-(?P<last>\d{20})\.")


class FileFormat(enum.StrEnum):
    """How a file sink writes records."""

    JSONL = "jsonl"
    CSV = "csv"


@dataclass(frozen=True, kw_only=True, slots=True)
class FileSinkConfig:
    """Settings of a :class:`FileSink`.

    :param topic: the input topic.
    :param directory: where files go (created if missing).
    :param format: ``jsonl`` or ``csv``.
    :param columns: CSV columns (by default the keys of each file's first object).
    :param roll_bytes: roll a file once it holds this many bytes.
    :param roll_s: roll a file once it has been open this long.
    :param dead_letter_topic: where records the format cannot hold go.
    """

    topic: str
    directory: str
    format: FileFormat = FileFormat.JSONL
    columns: tuple[str, ...] | None = None
    roll_bytes: int = 64 << 20
    roll_s: float = 60.0
    dead_letter_topic: str | None = None

    def __post_init__(self) -> None:
        if not self.topic:
            raise ConnectorConfigError("a file sink needs a topic")
        validate_topic_name(self.topic)
        if self.dead_letter_topic is not None:
            validate_topic_name(self.dead_letter_topic)
        if not self.directory:
            raise ConnectorConfigError("a file sink needs a directory")
        try:
            object.__setattr__(self, "format", FileFormat(self.format))
        except ValueError:
            choices = ", ".join(f.value for f in FileFormat)
            raise ConnectorConfigError(
                f"unknown file format {self.format!r} (choose {choices})"
            ) from None
        if self.roll_bytes < 1:
            raise ConnectorConfigError(f"roll_bytes must be at least 1, got {self.roll_bytes}")
        if not self.roll_s > 0:
            raise ConnectorConfigError(f"roll_s must be > 0, got {self.roll_s}")
        if self.columns is not None and not self.columns:
            raise ConnectorConfigError("columns, when given, must name at least one column")

    @property
    def dead_letters(self) -> str:
        """The dead-letter topic."""
        return self.dead_letter_topic or dead_letter_topic(self.topic)


def final_name(topic: str, partition: int, first: int, last: int, suffix: str) -> str:
    """Return the name of a finished file holding offsets ``first`` to ``last``."""
    return f"{topic}-{partition}-{first:020d}-{last:020d}.{suffix}"


def temporary_name(topic: str, partition: int, first: int, suffix: str) -> str:
    """Return the name a file has while it is written."""
    return f".{topic}-{partition}-{first:020d}.{suffix}.tmp"


def parse_final_name(name: str) -> tuple[str, int, int, int] | None:
    """Return ``(topic, partition, first, last)`` of a finished file's name, or None."""
    match = _FINAL.match(name)
    if match is None or name.startswith("."):
        return None
    return (
        match["topic"],
        int(match["partition"]),
        int(match["first"]),
        int(match["last"]),
    )


@dataclass(slots=True)
class _OpenFile:
    """The file being written for one partition."""

    fd: int
    temporary: Path
    first: int
    last: int
    size: int
    deadline: float
    columns: list[str] | None = None


class FileSink:
    """The destination side of a file sink (a :class:`SinkWriter`; see the module).

    :param log: where dead letters go.
    :param config: the sink's settings.
    :param fs: the file system (the operating system by default).
    """

    def __init__(
        self, log: ConnectorLog, config: FileSinkConfig, *, fs: FileSystem | None = None
    ) -> None:
        self.config = config
        self.fs: FileSystem = fs if fs is not None else OsFileSystem()
        self.directory = Path(config.directory)
        self.dead_letters = DeadLetters(log, config.dead_letters)
        self._suffix = config.format.value
        self._open: dict[TopicPartition, _OpenFile] = {}
        self.files_written = 0

    # -- SinkWriter ------------------------------------------------------------------

    async def assigned(
        self, partition: TopicPartition, committed: OffsetAndMetadata | None
    ) -> Checkpoint | None:
        """Remove the partition's temporary files; resume after its last final file."""
        last = await anyio.to_thread.run_sync(self._recover, partition)
        if last is None:
            return None
        name, offset = last
        if committed is not None and committed.offset > offset:
            return None
        return Checkpoint(offset + 1, {"file": name})

    async def write(self, batch: ConsumerBatch, commit: Committer) -> Checkpoint | None:
        """Append the batch's records to the partition's file, rolling it whenever it
        reaches ``roll_bytes`` (a file exceeds it only by a record larger than that)."""
        tp = batch.topic_partition
        records = batch.records
        current = self._open.get(tp)
        if self.config.format is FileFormat.JSONL:
            encoded = _encode_json_lines(records)
        else:
            known = current.columns if current is not None else None
            encoded = _encode_csv(records, known or self.config.columns)
        if encoded.rejected:
            await self._dead_letter(tp, encoded.rejected)
        checkpoint = None
        ends, offsets, data = encoded.ends, encoded.offsets, encoded.data
        start = position = 0
        while start < len(ends):
            current = self._open.get(tp)
            if current is None:
                current = await self._create(tp, offsets[start])
            header = b""
            if current.columns is None and encoded.columns is not None:
                current.columns = encoded.columns
                header = _csv_row(encoded.columns)
            room = self.config.roll_bytes - current.size - len(header)
            stop = bisect.bisect_right(ends, position + room, start)
            if stop == start:
                if current.size:
                    checkpoint = await self._roll(tp)  # full: the record opens the next file
                    continue
                stop = start + 1  # a record larger than a whole file gets one of its own
            piece = header + data[position : ends[stop - 1]]
            await anyio.to_thread.run_sync(self._write_all, current.fd, piece)
            current.size += len(piece)
            current.last = offsets[stop - 1]
            start, position = stop, ends[stop - 1]
            if current.size >= self.config.roll_bytes:
                checkpoint = await self._roll(tp)
        current = self._open.get(tp)
        if current is not None:
            current.last = records[-1].offset  # dead-lettered records at the end included
        elif not ends or offsets[-1] != records[-1].offset:
            checkpoint = Checkpoint(records[-1].offset + 1)  # those went to the dead letters
        return checkpoint

    def next_deadline(self) -> float | None:
        """Return when the oldest open file is due to roll."""
        return min((f.deadline for f in self._open.values()), default=None)

    async def tick(self) -> dict[TopicPartition, Checkpoint]:
        """Roll every file that has been open ``roll_s``."""
        now = anyio.current_time()
        due = [tp for tp, f in self._open.items() if f.deadline <= now]
        return {tp: await self._roll(tp) for tp in due}

    async def revoked(self, partition: TopicPartition, *, lost: bool) -> Checkpoint | None:
        """Roll the partition's file (``lost``: remove it; its records come again)."""
        if partition not in self._open:
            return None
        if lost:
            current = self._open.pop(partition)
            await anyio.to_thread.run_sync(self._discard, current)
            return None
        return await self._roll(partition)

    async def _dead_letter(self, tp: TopicPartition, rejected: list[Record]) -> None:
        what = "not a JSON object" if self.config.format is FileFormat.CSV else "not JSON"
        await self.dead_letters.write_from_partition(
            tp.topic,
            tp.partition,
            offsets=[r.offset for r in rejected],
            values=[r.value for r in rejected],
            keys=[r.key for r in rejected],
            reasons=[f"the value is {what}: a {self._suffix} file cannot hold it".encode()]
            * len(rejected),
        )

    # -- files (worker threads) ------------------------------------------------------

    async def _create(self, tp: TopicPartition, first: int) -> _OpenFile:
        deadline = anyio.current_time() + self.config.roll_s
        current = await anyio.to_thread.run_sync(self._create_file, tp, first)
        current.deadline = deadline
        self._open[tp] = current
        return current

    async def _roll(self, tp: TopicPartition) -> Checkpoint:
        current = self._open.pop(tp)
        name = final_name(tp.topic, tp.partition, current.first, current.last, self._suffix)
        await anyio.to_thread.run_sync(self._finish, current, name)
        self.files_written += 1
        return Checkpoint(current.last + 1, {"file": name})

    def _create_file(self, tp: TopicPartition, first: int) -> _OpenFile:
        self.fs.mkdir(self.directory, parents=True, exist_ok=True)
        path = self.directory / temporary_name(tp.topic, tp.partition, first, self._suffix)
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC
        fd = self.fs.open(path, flags, 0o644)
        return _OpenFile(fd, path, first, first, 0, math.inf)

    def _write_all(self, fd: int, data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[self.fs.write(fd, view) :]

    def _finish(self, current: _OpenFile, name: str) -> None:
        fs = self.fs
        try:
            fs.fsync(current.fd)
        finally:
            # Closed even when the fsync failed: the file is not finished, and what is
            # left of it under its temporary name is removed at the next recovery.
            fs.close(current.fd)
        fs.rename(current.temporary, self.directory / name)
        self._fsync_directory()

    def _fsync_directory(self) -> None:
        fd = self.fs.open(self.directory, os.O_RDONLY | os.O_CLOEXEC)
        try:
            self.fs.fsync(fd)
        finally:
            self.fs.close(fd)

    def _discard(self, current: _OpenFile) -> None:
        self.fs.close(current.fd)
        self.fs.unlink(current.temporary)

    def _recover(self, tp: TopicPartition) -> tuple[str, int] | None:
        """Remove ``tp``'s temporary files; return its final file with the highest last offset."""
        try:
            names = self.fs.listdir(self.directory)
        except FileNotFoundError:
            return None
        prefix = f".{tp.topic}-{tp.partition}-"
        best: tuple[str, int] | None = None
        removed = False
        for name in names:
            if name.startswith(prefix) and name.endswith(".tmp"):
                rest = name[len(prefix) :].split(".", 1)[0]
                if rest.isdigit() and len(rest) == 20:
                    self.fs.unlink(self.directory / name)
                    removed = True
                continue
            parsed = parse_final_name(name)
            if parsed is None or (parsed[0], parsed[1]) != (tp.topic, tp.partition):
                continue
            if best is None or parsed[3] > best[1]:
                best = (name, parsed[3])
        if removed or best is not None:
            # Also makes the name of a file renamed just before a crash (or a failed
            # directory fsync) durable before an offset past it is committed.
            self._fsync_directory()
        return best


@dataclass(slots=True)
class _Encoded:
    """Records as the bytes of a file: ``data`` holds the kept records one after the
    other, record ``i`` ending at ``ends[i]`` with input offset ``offsets[i]``."""

    data: bytes
    ends: list[int]
    offsets: Sequence[int]
    rejected: list[Record]
    columns: list[str] | None = None


def _encode_json_lines(records: list[Record]) -> _Encoded:
    """Return ``records`` as JSON lines, and the records whose value is not JSON."""
    values = [b"null" if r.value is None else r.value for r in records]
    data = b"\n".join(values) + b"\n"
    if data.count(b"\n") == len(values):  # no value holds a line end of its own
        try:
            deque(map(orjson.loads, values), maxlen=0)
        except orjson.JSONDecodeError:
            pass
        else:
            ends = [end + i for i, end in enumerate(itertools.accumulate(map(len, values)), 1)]
            return _Encoded(data, ends, _offsets(records), [])
    lines = []
    kept = []
    rejected = []
    for record, value in zip(records, values, strict=True):
        try:
            orjson.loads(value)
        except orjson.JSONDecodeError:
            rejected.append(record)
            continue
        # A JSON value may hold line ends between its tokens: it is written on one line.
        lines.append((_one_line(value) if b"\n" in value else value) + b"\n")
        kept.append(record.offset)
    return _Encoded(b"".join(lines), list(itertools.accumulate(map(len, lines))), kept, rejected)


def _one_line(value: bytes) -> bytes:
    """Return JSON text ``value`` on one line: written anew (its integers as written), or,
    nested deeper than orjson writes (it reads deeper), with its line ends, which JSON
    text holds only between tokens, made spaces."""
    try:
        return exact_dumps(exact_loads(value))
    except orjson.JSONEncodeError:
        return value.replace(b"\n", b" ")


def _encode_csv(records: list[Record], columns: Sequence[str] | None) -> _Encoded:
    """Return ``records`` as CSV rows under ``columns`` (by default the first object's
    keys), and the records that are not JSON objects."""
    rows = []
    kept = []
    rejected = []
    chosen = list(columns) if columns is not None else None
    for record in records:
        try:
            value = exact_loads(record.value or b"null")
        except orjson.JSONDecodeError:
            value = None
        if not isinstance(value, dict):
            rejected.append(record)
            continue
        if chosen is None:
            chosen = list(value)
        try:
            rows.append(_csv_row([_cell(value.get(c)) for c in chosen]))
        except orjson.JSONEncodeError:  # a cell nested deeper than orjson writes
            rejected.append(record)
            continue
        kept.append(record.offset)
    ends = list(itertools.accumulate(map(len, rows)))
    return _Encoded(b"".join(rows), ends, kept, rejected, chosen)


def _offsets(records: list[Record]) -> Sequence[int]:
    first, last = records[0].offset, records[-1].offset
    if last - first == len(records) - 1:
        return range(first, last + 1)
    return [r.offset for r in records]


def _cell(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return exact_dumps(value).decode()


def _csv_row(columns: list[str]) -> bytes:
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerow(columns)
    return out.getvalue().encode()
