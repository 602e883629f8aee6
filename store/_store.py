"""Store: a data directory of topics, each a set of partition logs.

Theory of operation. The data directory holds one folder per topic; in it ``topic.json``
(the topic's configuration, replaced atomically) and one folder per partition, named by
its number, holding that partition's segments::

    headwater-data/
      clicks/
        topic.json
        0/00000000000000000000.log ...
        1/...

A topic exists once its ``topic.json`` does: creation builds the folder under a
temporary name and renames it into place, and deletion renames it away before removing
it, so a crash never leaves half a topic. Opening the store opens (and if need be
recovers) every partition. Anything else in the directory (a folder without
``topic.json``, another data directory nested in this one) is not a topic: it is left
alone, and only a topic of the same name cannot be created over it.

One process owns a data directory at a time: opening the store takes an exclusive
``flock`` on ``.lock`` in it (released when the store closes, or by the kernel when the
process dies). A store opened ``read_only`` opens that file read-only, so that watchers of
the directory can tell a writer's close from a reader's, and refuses changes. The holder
records who it is beside the lock when it can (``_holder.py``), so that a process refused
the directory can say which one has it.

A read-only store writes nothing at all, so that a backup or a mounted snapshot (a
read-only file system) can be read: it creates no lock file (a directory without one was
never opened by a writer, so there is nobody to wait for), settles no leftovers of
interrupted work, runs no retention or compaction, and opens every log read-only (see
``_loader.py``: a torn tail is cut in memory only, a finished compaction is read from its
swap file, indexes are rebuilt in memory, and damage is reported to the readers that meet
it instead of refusing the open).

Topics whose names start with ``__`` are the system's own (see ``_topic_names.py``):
creating, appending to, deleting and reconfiguring one takes ``internal=True``, which
only headwater's own code passes (the groups' offset log). Names that collide once ``.``
and ``_`` are read alike are refused, as Kafka refuses them.

A topic's settings can change while it is open (:meth:`Store.alter_topic_config`): the
new ``topic.json`` replaces the old one atomically, then every partition's log takes the
new config, which later appends, rolls and retention read.

A topic's partition count can grow, never shrink (:meth:`Store.create_partitions`, Kafka's
CreatePartitions): the new partitions' folders are made first, then ``topic.json`` names
the new count (the commit point: a crash before it leaves empty folders that the store
ignores and the next growth reuses), then the new partitions open. Records already
written stay where they are; murmur2 maps keys over the new count from then on, so a key
written before and after the change may live in two partitions, as in Kafka.

Records can be deleted from the front of a partition up to any offset below its high
watermark (:meth:`Store.delete_records`, Kafka's DeleteRecords; see ``_log_start.py``).

A background task owned by the store applies retention and compaction every
``maintenance_interval_s``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import fcntl
import logging
import os
import time
import uuid
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import anyio
import anyio.to_thread
from anyio.abc import TaskGroup

from ._cleaner import plan_cleaning, swap_in, write_swap_files
from ._compression import check_codec
from ._config import CleanupPolicy, TopicConfig
from ._errors import (
    CorruptRecordError,
    DataDirectoryLockedError,
    InvalidConfigError,
    InvalidPartitionsError,
    InvalidTopicError,
    LogClosedError,
    OffsetOutOfRangeError,
    StoreError,
    TopicExistsError,
    TopicNotFoundError,
)
from ._files import atomic_write, fsync_dir, make_dirs
from ._fs import OS_FILE_SYSTEM, FileSystem
from ._holder import LOCK_FILE, clear_holder, read_holder, record_holder
from ._log import PartitionLog, wall_clock_ms
from ._partition import Partition
from ._partitioner import StickyPartitioner, partition_for_key
from ._records import Compression, NewRecord
from ._store_metrics import STORE_METRICS
from ._topic_names import (
    check_not_internal,
    colliding_topic,
    is_internal_topic,
    validate_topic_name,
)

logger = logging.getLogger("headwater.store")

TOPIC_CONFIG_FILE = "topic.json"


def is_data_directory(path: str | os.PathLike[str], *, fs: FileSystem = OS_FILE_SYSTEM) -> bool:
    """Whether ``path`` is a data directory: a store has opened it (it holds the lock file).

    A data directory inside another one is not a topic of the outer one; this tells the
    two apart for messages.
    """
    return fs.is_file(Path(path) / LOCK_FILE)


def _in_the_way(fs: FileSystem, target: Path, name: str) -> str:
    """Say why topic ``name`` cannot take the folder ``target``, which is not a topic."""
    if is_data_directory(target, fs=fs):
        what = "a data directory of its own, not a topic"
    else:
        what = "not a topic (it has no topic.json)"
    return (
        f"cannot create topic {name!r}: {target} already exists and is {what}; "
        "move it away or pick another name"
    )


@dataclass(frozen=True, slots=True)
class PartitionDescription:
    """Offsets and size of one partition."""

    partition: int
    log_start_offset: int
    log_end_offset: int
    high_watermark: int
    size_bytes: int
    segments: int


@dataclass(frozen=True, slots=True)
class TopicDescription:
    """A topic's configuration and its partitions' offsets."""

    name: str
    config: TopicConfig
    partitions: tuple[PartitionDescription, ...]

    @property
    def internal(self) -> bool:
        """Whether this is one of the system's own topics."""
        return is_internal_topic(self.name)


class Store:
    """A data directory of topics.

    Use as an async context manager (``async with open_store(path) as store``): entering
    opens every topic, leaving closes them cleanly. Concurrency: any number of tasks of the
    owning event loop may use it; one process owns a data directory at a time. Every
    file operation goes through ``fs`` (the operating system by default).
    """

    def __init__(
        self,
        path: Path,
        *,
        clock: Callable[[], int] = wall_clock_ms,
        default_config: TopicConfig | None = None,
        maintenance_interval_s: float = 30.0,
        read_only: bool = False,
        fs: FileSystem = OS_FILE_SYSTEM,
    ) -> None:
        self.path = Path(path)
        self.fs = fs
        self.read_only = read_only
        self._lock_fd: int | None = None
        self._holder_recorded = False
        self.default_config = default_config or TopicConfig()
        self._clock = clock
        self._maintenance_interval_s = maintenance_interval_s
        self._topics: dict[str, list[Partition]] = {}
        self._configs: dict[str, TopicConfig] = {}
        self._sticky = StickyPartitioner()
        # Log end offsets at the last compaction: an unchanged partition is not re-read.
        self._compacted_at: dict[tuple[str, int], int] = {}
        self._task_group: TaskGroup | None = None
        self._config_lock: anyio.Lock | None = None
        self._creating: set[str] = set()  # names whose files are being made
        self._closed = False
        #: Seconds the store took to open (every partition, recovery included).
        self.open_seconds = 0.0

    # -- life cycle ------------------------------------------------------------------------

    async def __aenter__(self) -> Store:
        started = time.perf_counter()
        self._lock()
        try:
            await anyio.to_thread.run_sync(self._open_all)
        except BaseException:
            self._unlock()
            raise
        self.open_seconds = time.perf_counter() - started
        metrics = STORE_METRICS.get()
        if metrics is not None and not self.read_only:  # readers would count twice
            metrics.stores.add(self)
        self._task_group = anyio.create_task_group()
        await self._task_group.__aenter__()
        if not self.read_only:
            self._task_group.start_soon(self._maintain)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Stop background work and close every partition cleanly."""
        if self._closed:
            return
        self._closed = True
        metrics = STORE_METRICS.get()
        if metrics is not None:
            metrics.stores.discard(self)
        if self._task_group is not None:
            self._task_group.cancel_scope.cancel()
            await self._task_group.__aexit__(None, None, None)
        errors = []
        for partitions in self._topics.values():
            for partition in partitions:
                try:
                    partition.close()
                except (StoreError, OSError) as exc:
                    errors.append(exc)
        self._unlock()
        if errors:
            raise StoreError(f"{self.path}: closing failed: {errors[0]}") from errors[0]

    def _lock(self) -> None:
        if self.read_only:
            opened = self._open_lock_file_read_only()
            if opened is None:
                return
            fd = opened
        else:
            make_dirs(self.fs, self.path)
            fd = self.fs.open(self.path / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            self.fs.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.fs.close(fd)
            holder = read_holder(self.path, fs=self.fs)
            by = "another process" if holder is None else holder.describe()
            raise DataDirectoryLockedError(
                f"data directory {self.path} is in use by {by} (one process may open it at a time)"
            ) from None
        self._lock_fd = fd
        if not self.read_only:  # a reading store writes nothing; /proc/locks names it
            self._holder_recorded = record_holder(self.fs, self.path, fd)

    def _open_lock_file_read_only(self) -> int | None:
        """Open the lock file without creating anything; ``None`` if there is none.

        :raises StoreError: if there is no data directory.
        """
        try:
            return self.fs.open(self.path / LOCK_FILE, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            if not self.fs.exists(self.path):
                raise StoreError(f"no data directory at {self.path}") from None
            return None  # no writer ever used the directory, so none to exclude

    def _unlock(self) -> None:
        if self._lock_fd is not None:
            if self._holder_recorded:
                clear_holder(self.fs, self.path)
            self.fs.close(self._lock_fd)
            self._lock_fd = None

    def _open_all(self) -> None:
        if not self.read_only:
            make_dirs(self.fs, self.path)
        for entry in sorted(self.fs.listdir(self.path)):
            folder = self.path / entry
            if entry.startswith("."):
                deleted = entry.endswith(".deleted") or entry.endswith(".creating")
                if deleted and not self.read_only:
                    self.fs.rmtree(folder)
                continue
            if not self.fs.is_file(folder / TOPIC_CONFIG_FILE):
                continue
            try:
                config = TopicConfig.from_json(self.fs.read_bytes(folder / TOPIC_CONFIG_FILE))
            except InvalidConfigError as exc:
                raise InvalidConfigError(f"{folder / TOPIC_CONFIG_FILE}: {exc}") from exc
            self._open_topic(entry, config)

    def _open_topic(self, name: str, config: TopicConfig) -> None:
        folder = self.path / name
        partitions = []
        i = 0
        try:
            for i in range(config.partitions):
                log = PartitionLog.open(
                    folder / str(i), config, clock=self._clock, fs=self.fs, read_only=self.read_only
                )
                partitions.append(Partition(name, i, log, read_only=self.read_only))
        except BaseException as exc:
            for partition in partitions:
                partition.log.abandon()
            if isinstance(exc, CorruptRecordError) and exc.hint:
                command = f"headwater repair {name} --partition {i} --data {self.path}"
                raise exc.with_hint(
                    f"{exc.hint}: `{command}` shows what it would move, and does it with --yes"
                ) from exc
            raise
        self._topics[name] = partitions
        self._configs[name] = config

    async def _maintain(self) -> None:
        while True:
            await anyio.sleep(self._maintenance_interval_s)
            self.enforce_retention()
            await self.compact()

    async def compact(self) -> int:
        """Compact every ``cleanup_policy=compact`` topic now; return records removed.

        The reading and rewriting run in a worker thread; only the final swap of each
        partition runs on the event loop.

        :raises StorageFullError: if the disk has no room for a compacted segment.
        :raises StoreError: if the file system fails otherwise; a partition whose swap
            failed half-way is closed, and reopening the store finishes the swap.
        """
        removed = 0
        now = self._clock()
        if self.read_only:
            return removed
        for name, partitions in list(self._topics.items()):
            if self._configs[name].cleanup_policy is not CleanupPolicy.COMPACT:
                continue
            for partition in partitions:
                log = partition.log
                if self._compacted_at.get((name, partition.index)) == log.log_end_offset:
                    continue
                self._compacted_at[(name, partition.index)] = log.log_end_offset
                try:
                    plan = await anyio.to_thread.run_sync(plan_cleaning, log, now)
                except CorruptRecordError as exc:
                    # Compaction reads every record; damage waits for a repair.
                    logger.error("%s: not compacted: %s", log.directory, exc)
                    continue
                if plan is None or log.closed:
                    continue
                swaps = await anyio.to_thread.run_sync(write_swap_files, log, plan)
                try:
                    result = swap_in(log, plan, swaps)
                except StoreError as exc:
                    if log.closed:  # the swap failed half-way: recovery finishes it
                        raise
                    logger.info("%s: compaction postponed: %s", log.directory, exc)
                    continue
                removed += result.records_removed
        return removed

    def enforce_retention(self) -> int:
        """Apply every topic's retention now; return how many segments were deleted.

        Only records below a partition's high watermark are deleted: the log start never
        passes what readers may see (a segment that rolled is durable before its records
        are acknowledged, and stays until they are).
        """
        removed = 0
        now = self._clock()
        for partitions in self._topics.values():
            for partition in partitions:
                if not partition.log.closed:
                    removed += len(
                        partition.log.enforce_retention(now, upper_offset=partition.high_watermark)
                    )
        return removed

    def _check_open(self) -> None:
        if self._closed:
            raise LogClosedError(f"{self.path}: the store is closed")

    def _check_writable(self) -> None:
        self._check_open()
        if self.read_only:
            raise StoreError(f"{self.path}: the store was opened read-only")

    # -- topics ------------------------------------------------------------------------------

    def list_topics(self) -> list[str]:
        """Return the names of all topics, sorted."""
        return sorted(self._topics)

    def has_topic(self, name: str) -> bool:
        """Whether topic ``name`` exists."""
        return name in self._topics

    def topic_config(self, name: str) -> TopicConfig:
        """Return topic ``name``'s configuration.

        :raises TopicNotFoundError: if there is no such topic.
        """
        try:
            return self._configs[name]
        except KeyError:
            raise TopicNotFoundError(f"unknown topic {name!r}") from None

    async def create_topic(
        self, name: str, config: TopicConfig | None = None, *, internal: bool = False
    ) -> TopicConfig:
        """Create topic ``name`` (with the store's default config when none is given).

        :param internal: allow a name reserved for internal topics (``__...``); for
            headwater's own code.
        :raises InvalidTopicError: if the name is not allowed, is reserved, or collides
            with an existing topic's once ``.`` and ``_`` are read alike.
        :raises TopicExistsError: if the topic exists.
        """
        self._check_writable()
        self.check_new_topic(name, internal=internal)
        config = config or self.default_config
        # Claimed while the files are made, so that a concurrent create of the same or a
        # colliding name is refused too.
        self._creating.add(name)
        try:
            await anyio.to_thread.run_sync(self._create_files, name, config)
            self._open_topic(name, config)
        finally:
            self._creating.discard(name)
        return config

    def check_new_topic(self, name: str, *, internal: bool = False) -> None:
        """Raise what :meth:`create_topic` would raise for the name ``name``; change nothing.

        :raises InvalidTopicError: if the name is not allowed, is reserved (without
            ``internal``), or collides with an existing topic's.
        :raises TopicExistsError: if the topic exists.
        """
        validate_topic_name(name)
        if not internal:
            check_not_internal(name, "create")
        if name in self._topics or name in self._creating:
            raise TopicExistsError(f"topic {name!r} already exists")
        other = colliding_topic(name, [*self._topics, *self._creating])
        if other is not None:
            raise InvalidTopicError(
                f"topic {name!r} collides with existing topic {other!r} (names that differ "
                "only in '.' and '_' cannot both exist, as in Kafka)"
            )

    def _create_files(self, name: str, config: TopicConfig) -> None:
        staging = self.path / f".{name}.{uuid.uuid4().hex}.creating"
        fs = self.fs
        try:
            fs.mkdir(staging)
            for i in range(config.partitions):
                fs.mkdir(staging / str(i))
            atomic_write(fs, staging / TOPIC_CONFIG_FILE, config.to_json())
            fsync_dir(fs, staging)
            fs.rename(staging, self.path / name)
        except OSError as exc:
            fs.rmtree(staging)
            if exc.errno in (errno.EEXIST, errno.ENOTEMPTY):
                raise TopicExistsError(_in_the_way(fs, self.path / name, name)) from exc
            raise StoreError(f"{self.path}: cannot create topic {name!r}: {exc}") from exc
        try:
            fsync_dir(fs, self.path)
        except OSError as exc:
            raise StoreError(f"{self.path}: cannot create topic {name!r}: {exc}") from exc

    async def delete_topic(self, name: str, *, internal: bool = False) -> None:
        """Delete topic ``name`` and all its records. Waiting readers get LogClosedError.

        :param internal: allow deleting an internal topic; for headwater's own code.
        :raises TopicNotFoundError: if there is no such topic.
        :raises InvalidTopicError: if the topic is internal.
        """
        self._check_writable()
        if not internal:
            check_not_internal(name, "delete")
        partitions = self.partitions(name)
        del self._topics[name]
        del self._configs[name]
        for partition in partitions:
            partition.close()
        doomed = self.path / f".{name}.{uuid.uuid4().hex}.deleted"

        def remove() -> None:
            self.fs.rename(self.path / name, doomed)
            fsync_dir(self.fs, self.path)
            self.fs.rmtree(doomed)

        await anyio.to_thread.run_sync(remove)

    def altered_topic_config(
        self, name: str, changes: Mapping[str, str | None], *, internal: bool = False
    ) -> TopicConfig:
        """Return the config topic ``name`` would have after ``changes``, changing nothing.

        ``changes`` are ``KEY=VALUE`` settings as :meth:`TopicConfig.from_strings` reads
        them; a key mapped to ``None`` goes back to the store's default.

        :param internal: allow an internal topic; for headwater's own code.
        :raises InvalidTopicError: if the topic is internal.
        :raises TopicNotFoundError: if there is no such topic.
        :raises InvalidConfigError: if a key or value is not valid (``partitions`` is not
            a setting: the partition count changes only by :meth:`create_partitions`).
        """
        self._check_open()
        if not internal:
            check_not_internal(name, "change the configuration of")
        return self.topic_config(name).changed(changes, self.default_config)

    async def alter_topic_config(
        self, name: str, changes: Mapping[str, str | None], *, internal: bool = False
    ) -> TopicConfig:
        """Apply ``changes`` to topic ``name``'s settings (see :meth:`altered_topic_config`).

        Durable before it returns (the topic's file is replaced atomically); appends,
        rolls, retention and compaction that follow use the new settings. Returns the
        new config.

        :param internal: allow an internal topic; for headwater's own code.
        :raises InvalidTopicError: if the topic is internal.
        :raises TopicNotFoundError: if there is no such topic.
        :raises InvalidConfigError: if a key or value is not valid.
        """
        self._check_writable()
        if self._config_lock is None:
            self._config_lock = anyio.Lock()
        # One change at a time, so that the file and the open logs end with the same one.
        async with self._config_lock:
            config = self.altered_topic_config(name, changes, internal=internal)
            partitions = self.partitions(name)
            path = self.path / name / TOPIC_CONFIG_FILE
            await anyio.to_thread.run_sync(atomic_write, self.fs, path, config.to_json())
            if self._topics.get(name) is not partitions:
                raise TopicNotFoundError(f"topic {name!r} was deleted while it was changed")
            self._configs[name] = config
            for partition in partitions:
                partition.log.config = config
        return config

    def check_partition_count(self, name: str, count: int, *, internal: bool = False) -> None:
        """Raise what :meth:`create_partitions` would raise for ``count``; change nothing.

        :raises InvalidTopicError: if the topic is internal.
        :raises TopicNotFoundError: if there is no such topic.
        :raises InvalidPartitionsError: if ``count`` is not more than the topic has, or
            over the limit of a topic's partitions.
        """
        self._check_open()
        if not internal:
            check_not_internal(name, "add partitions to")
        current = len(self.partitions(name))
        if count <= current:
            raise InvalidPartitionsError(
                f"topic {name!r} has {current} partition(s): the count can only grow, so "
                f"give more than {current} (got {count})"
            )
        try:
            dataclasses.replace(self._configs[name], partitions=count)
        except InvalidConfigError as exc:
            raise InvalidPartitionsError(f"topic {name!r}: {exc}") from None

    async def create_partitions(
        self, name: str, count: int, *, internal: bool = False
    ) -> TopicConfig:
        """Grow topic ``name`` to ``count`` partitions; return its new config.

        Durable before it returns. Records already written stay in their partitions;
        keyed appends from now on go by murmur2 over the new count (so a key may now
        map to another partition than its earlier records, as in Kafka).

        :param internal: allow an internal topic; for headwater's own code.
        :raises InvalidTopicError: if the topic is internal.
        :raises TopicNotFoundError: if there is no such topic.
        :raises InvalidPartitionsError: if ``count`` is not more than the topic has (a
            topic never shrinks), or over the limit.
        :raises StoreError: if the file system refuses (the count then stays).
        """
        self._check_writable()
        if self._config_lock is None:
            self._config_lock = anyio.Lock()
        # One change of topic.json at a time (see alter_topic_config).
        async with self._config_lock:
            self.check_partition_count(name, count, internal=internal)
            partitions = self.partitions(name)
            config = dataclasses.replace(self._configs[name], partitions=count)
            first = len(partitions)
            await anyio.to_thread.run_sync(self._grow_files, name, first, config)
            if self._topics.get(name) is not partitions:
                raise TopicNotFoundError(f"topic {name!r} was deleted while it grew")
            grown = list(partitions)
            try:
                for i in range(first, count):
                    log = PartitionLog.open(
                        self.path / name / str(i), config, clock=self._clock, fs=self.fs
                    )
                    grown.append(Partition(name, i, log))
            except BaseException:
                for partition in grown[first:]:
                    partition.log.abandon()
                raise
            for partition in partitions:
                partition.log.config = config
            self._topics[name] = grown
            self._configs[name] = config
        return config

    def _grow_files(self, name: str, first: int, config: TopicConfig) -> None:
        folder = self.path / name
        fs = self.fs
        try:
            for i in range(first, config.partitions):
                if not fs.exists(folder / str(i)):  # an earlier growth may have left it
                    fs.mkdir(folder / str(i))
            fsync_dir(fs, folder)
            atomic_write(fs, folder / TOPIC_CONFIG_FILE, config.to_json())
        except OSError as exc:
            raise StoreError(f"{folder}: cannot add partitions to topic {name!r}: {exc}") from exc

    async def delete_records(
        self, topic: str, before: Mapping[int, int], *, internal: bool = False
    ) -> dict[int, int]:
        """Delete the records of ``topic`` before the given offsets (Kafka's DeleteRecords).

        ``before`` maps a partition to the offset before which its records go (-1: its
        high watermark, every record a reader can see). Returns each partition's new log
        start offset (its low watermark). A partition whose log start is already at or
        past the offset keeps it. Each move is durable before this returns; readers get
        :class:`OffsetOutOfRangeError` below the new log start, and retention deletes the
        segments left wholly behind. Every partition is checked before any moves.

        :param internal: allow an internal topic; for headwater's own code.
        :raises TopicNotFoundError: if there is no such topic or partition.
        :raises OffsetOutOfRangeError: if an offset is below -1 or past its partition's
            high watermark.
        :raises PolicyViolationError: if the topic is compacted.
        :raises InvalidTopicError: if the topic is internal.
        :raises StoreError: if the store is read-only or the file system refuses.
        """
        self._check_writable()
        if not internal:
            check_not_internal(topic, "delete records of")
        for index, offset in before.items():
            partition = self.partition(topic, index)
            if not -1 <= offset <= partition.high_watermark:
                raise OffsetOutOfRangeError(
                    f"cannot delete records of {topic}-{index} before offset {offset}: it must "
                    f"lie from 0 to the high watermark {partition.high_watermark} (or be -1)"
                )
        return {
            index: await self.partition(topic, index).delete_records(offset, internal=internal)
            for index, offset in before.items()
        }

    def describe_topic(self, name: str) -> TopicDescription:
        """Return topic ``name``'s configuration and per-partition offsets.

        :raises TopicNotFoundError: if there is no such topic.
        """
        partitions = self.partitions(name)
        described = []
        for p in partitions:
            stats = p.log.statistics()
            described.append(
                PartitionDescription(
                    p.index,
                    stats.log_start_offset,
                    stats.log_end_offset,
                    p.high_watermark,
                    stats.size_bytes,
                    stats.segments,
                )
            )
        return TopicDescription(name, self._configs[name], tuple(described))

    # -- partitions --------------------------------------------------------------------------

    def partitions(self, topic: str) -> list[Partition]:
        """Return the partitions of ``topic`` in order.

        :raises TopicNotFoundError: if there is no such topic.
        """
        self._check_open()
        try:
            return self._topics[topic]
        except KeyError:
            raise TopicNotFoundError(f"unknown topic {topic!r}") from None

    def partition(self, topic: str, index: int) -> Partition:
        """Return partition ``index`` of ``topic``.

        :raises TopicNotFoundError: if there is no such topic or partition.
        """
        partitions = self.partitions(topic)
        if not 0 <= index < len(partitions):
            raise TopicNotFoundError(
                f"topic {topic!r} has no partition {index} (it has {len(partitions)})"
            )
        return partitions[index]

    def partition_for(self, topic: str, key: bytes | None) -> int:
        """Choose a partition as Kafka's default partitioner does.

        Keyed records go by murmur2 of the key; unkeyed ones stick to one partition per
        :meth:`append` call.
        """
        count = len(self.partitions(topic))
        if key is not None:
            return partition_for_key(key, count)
        return self._sticky.partition(topic, count)

    async def append(
        self,
        topic: str,
        records: Sequence[NewRecord],
        *,
        partition: int | None = None,
        compression: Compression = Compression.NONE,
        internal: bool = False,
    ) -> list[tuple[int, int]]:
        """Append ``records`` to ``topic``; return (partition, offset) for each, in order.

        Without ``partition``, records are spread by the default partitioner. Returns once
        every batch is durable under the topic's policy.

        :param internal: allow appending to an internal topic; for headwater's own code.
        :raises TopicNotFoundError: if there is no such topic.
        :raises InvalidTopicError: if the topic is internal.
        :raises UnsupportedCompressionError: if ``compression`` needs a package that is not
            installed (nothing is appended).
        """
        self._check_writable()
        if not internal:
            check_not_internal(topic, "append to")
        check_codec(compression)
        if not records:
            return []
        groups: dict[int, list[int]] = {}
        if partition is not None:
            self.partition(topic, partition)
            groups[partition] = list(range(len(records)))
        else:
            count = len(self.partitions(topic))
            sticky: int | None = None
            for i, record in enumerate(records):
                if record.key is None:
                    sticky = self._sticky.partition(topic, count)
                    p = sticky
                else:
                    p = partition_for_key(record.key, count)
                groups.setdefault(p, []).append(i)
            if sticky is not None:
                self._sticky.batch_complete(topic, sticky, count)
        result: list[tuple[int, int]] = [(0, 0)] * len(records)

        async def append_one(p: int, indexes: list[int]) -> None:
            batch = [records[i] for i in indexes] if len(groups) > 1 else records
            info = await self.partition(topic, p).append(
                batch, compression=compression, internal=internal
            )
            for delta, i in enumerate(indexes):
                result[i] = (p, info.base_offset + delta)

        if len(groups) == 1:
            ((p, indexes),) = groups.items()
            await append_one(p, indexes)
        else:
            async with anyio.create_task_group() as tg:
                for p, indexes in groups.items():
                    tg.start_soon(append_one, p, indexes)
        return result


@contextlib.asynccontextmanager
async def open_store(
    path: str | os.PathLike[str],
    *,
    clock: Callable[[], int] = wall_clock_ms,
    default_config: TopicConfig | None = None,
    maintenance_interval_s: float = 30.0,
    read_only: bool = False,
    fs: FileSystem = OS_FILE_SYSTEM,
) -> AsyncIterator[Store]:
    """Open the data directory at ``path`` (created if missing) for the duration of a block.

    All file work goes through ``fs`` (the operating system by default).

    :raises DataDirectoryLockedError: if another process has the directory open.
    :raises CorruptRecordError: if a partition is damaged beyond a torn tail.
    :raises InvalidConfigError: if a topic's configuration file is unreadable.
    """
    store = Store(
        Path(path),
        clock=clock,
        default_config=default_config,
        maintenance_interval_s=maintenance_interval_s,
        read_only=read_only,
        fs=fs,
    )
    async with store:
        yield store
