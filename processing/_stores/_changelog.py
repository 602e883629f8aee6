"""A task's stores and their changelogs: opening, flushing before a commit, restoring.

See the package docstring for the protocol. :class:`StoreRegistry` opens a task's
stores (reusing those a task closed cleanly in this process, so an eager rebalance that
gives a task back reads only its changelog's tail), :func:`flush_writes` turns a task's
changes into changelog writes before a commit, and :func:`restore` brings a task's
stores up to date with their changelogs after an assignment. All of it goes through the
:class:`~headwater.processing.Backend`, so every backend gets state stores.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from headwater.groups import TopicPartition

from .._encoding import OutRecords
from .._lineage import source_prefix
from . import MemoryStore, StoreKind, StoreSpec

if TYPE_CHECKING:
    from .._backends import Backend
    from .._pipeline import Write
    from .._tasks import Task, TaskId

logger = logging.getLogger("headwater.processing")

#: How much of a changelog one restore fetch reads.
_RESTORE_FETCH_BYTES = 8 << 20


class StoreRegistry:
    """Opens the stores of one worker's tasks, and keeps those of tasks closed cleanly.

    :param state_dir: where disk stores keep their local copies (None: disk stores are
        kept in memory, as the test driver does without a directory).
    """

    def __init__(self, state_dir: Path | None, app_name: str) -> None:
        self.state_dir = state_dir
        self.app_name = app_name
        self._kept: dict[tuple[TaskId, str], MemoryStore] = {}

    def open(self, task_id: TaskId, spec: StoreSpec) -> MemoryStore:
        """Return task ``task_id``'s store ``spec``: the one kept from the task's last
        clean close here, else a new one (a disk store opens its local copy)."""
        kept = self._kept.pop((task_id, spec.name), None)
        if kept is not None:
            return kept
        if spec.kind is StoreKind.DISK and self.state_dir is not None:
            from ._disk import DiskStore  # noqa: PLC0415 - lmdb loads only if a disk store is used

            return DiskStore(spec, self.state_dir / self.app_name / str(task_id) / spec.name)
        return MemoryStore(spec)

    def keep(self, task: Task) -> None:
        """Keep ``task``'s stores (flushed, the task closed cleanly) for its return."""
        for store in task.stores.values():
            if store.dirty:  # not flushed: its state is ahead of its changelog
                store.close()
                continue
            self._kept[(task.id, store.spec.name)] = store

    def drop(self, task: Task) -> None:
        """Close ``task``'s stores without keeping them (the task closed dirty)."""
        for store in task.stores.values():
            store.close()

    def close(self) -> None:
        """Close every kept store."""
        for store in self._kept.values():
            store.close()
        self._kept.clear()


def flush_writes(task: Task, positions: Mapping[TopicPartition, int]) -> list[Write]:
    """Return the changelog writes of ``task``'s changes since its last flush, each store's
    ending with a checkpoint record of ``positions`` (the task's input positions now);
    the caller writes them, durably, before committing ``positions``."""
    from .._pipeline import Write  # noqa: PLC0415 - the pipeline imports the steps that import this

    if not task.stores:
        return []
    writes = []
    now = task.clock.now_ms()
    first = next(iter(positions), None) or next(iter(task.partitions), None)
    prefix = source_prefix(first.topic, first.partition) if first else b"-/0/"
    offset = positions.get(first, 0) if first else 0
    for store in task.stores.values():
        if not store.dirty and store.checkpoint_positions == positions:
            continue  # nothing new to say
        keys, values = store.flush(dict(positions))
        count = len(keys)
        records = OutRecords(values, keys, [now] * count, prefix, [offset] * count)
        writes.append(Write(store.spec.changelog, task.id.partition, records))
    return writes


async def checkpointed(task: Task, backend: Backend) -> None:
    """Note, for each of ``task``'s stores, the changelog offset its state now reflects
    (after its flush's writes are durable)."""
    for store in task.stores.values():
        store.checkpointed(await backend.end_offset(store.spec.changelog, task.id.partition))


async def restore(
    task: Task,
    backend: Backend,
    *,
    progress_every: int = 500_000,
    fetch_bytes: int = _RESTORE_FETCH_BYTES,
) -> None:
    """Bring ``task``'s stores up to date with their changelogs (see the package
    docstring), reading ``fetch_bytes`` at a time; logs its progress every
    ``progress_every`` records (records restored of the total to read, so a long restore
    is seen to move), and what it read and how long it took at the end."""
    for store in task.stores.values():
        topic, partition = store.spec.changelog, task.id.partition
        started = time.perf_counter()
        first = await backend.start_offset(topic, partition)
        end = await backend.end_offset(topic, partition)
        offset = store.local_offset()
        if offset is None or not first <= offset <= end:
            store.wipe()  # no usable local copy: the whole changelog
            offset = first
        store.restored = 0
        store.restore_total = end - offset
        reported = 0
        while offset < end:
            records = await backend.fetch(topic, partition, offset, fetch_bytes)
            if not records:  # only transaction markers and aborted records up to the end
                offset = records.offsets.start  # type: ignore[attr-defined]
                continue
            store.apply_changelog(records.keys, records.values)
            offset = records.offsets[-1] + 1
            if store.restored - reported >= progress_every and offset < end:
                reported = store.restored
                logger.info(
                    "task %s: restoring store %r from %s/%d: %d of %d records",
                    task.id, store.spec.name, topic, partition, store.restored,
                    store.restore_total,
                )  # fmt: skip
        store.checkpointed(end)
        store.dirty = set()
        if store.restore_total:
            logger.info(
                "task %s: restored store %r from %s/%d: %d of %d records in %.2f s (%d keys)",
                task.id, store.spec.name, topic, partition, store.restored,
                store.restore_total, time.perf_counter() - started, len(store),
            )  # fmt: skip
    for step in task.steps:
        step.restored()
