"""Group commit for batches the broker wrote itself: one fsync covers every waiting append.

Theory of operation
-------------------
The Produce handler writes a batch at once (``PartitionLog.append_batch``, in request
order) and waits for durability later, so that the requests a client pipelines are all
written before the first fsync finishes (see ``_handlers_produce.py``). This module is
that wait. Per partition at most one *flusher* runs: the first waiter becomes it and
calls :meth:`Partition.flush` (an fsync of everything written so far, in a worker thread)
until the high watermark reaches the highest offset any waiter asked for; the others
raise that mark and wake after each fsync round to see whether it covered them. So
appends that arrive during an fsync share the next one, each is released by the first
fsync that covers it, and there is never more than one fsync per partition in flight --
the store's ``batch`` policy, for appends made outside :meth:`Partition.append_batch`.

A flush that fails fails every waiter of that flusher with the same error; the next
waiter starts a new flusher (the store refuses to acknowledge anything after a failed
fsync, so it fails again).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import anyio

from headwater.store import LogClosedError, Partition


@dataclass(slots=True, eq=False)
class _Flusher:
    wanted: int
    flushed: anyio.Event = field(default_factory=anyio.Event)  # replaced every round
    error: Exception | None = None


class GroupCommit:
    """Wait until appended offsets are durable, sharing fsyncs per partition.

    Not thread-safe: tasks of one event loop use it.
    """

    def __init__(self) -> None:
        self._flushers: dict[Partition, _Flusher] = {}

    async def wait_durable(self, partition: Partition, next_offset: int) -> None:
        """Return once every record below ``next_offset`` is durable (the high watermark).

        :raises StoreError: if the fsync fails; ``LogClosedError`` if the partition closes.
        """
        while partition.high_watermark < next_offset:
            flusher = self._flushers.get(partition)
            if flusher is None:
                await self._flush(partition, next_offset)
                return
            flusher.wanted = max(flusher.wanted, next_offset)
            await flusher.flushed.wait()  # one round; then look at the high watermark again
            if flusher.error is not None:
                raise flusher.error

    async def _flush(self, partition: Partition, next_offset: int) -> None:
        """Be the partition's flusher: fsync until every waiter's offset is durable."""
        flusher = self._flushers[partition] = _Flusher(next_offset)
        try:
            while partition.high_watermark < flusher.wanted:
                if partition.log.closed:
                    raise LogClosedError(f"{partition.topic}-{partition.index} is closed")
                await partition.flush()
                # Wake the waiters this round covered; the others wait for the next one.
                done, flusher.flushed = flusher.flushed, anyio.Event()
                done.set()
        except Exception as exc:
            flusher.error = exc
            raise
        finally:
            del self._flushers[partition]
            flusher.flushed.set()
