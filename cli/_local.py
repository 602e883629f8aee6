"""The log commands over a data directory: in this process, or through the directory's owner.

Theory of operation
-------------------
Every call claims the directory (``_datadir.py``). Either nobody has it, and the call
opens the store and does its work in this process (``_store_reads.py``), closing the
store when done: a writer for ``produce`` (for its whole run) and for a group member (to
commit), a reader otherwise. Or its owner serves it (an app, ``headwater broker``; see
``_owner.py``), and the call works through the owner's address with the Kafka-protocol
implementation (``_kafka.py``), exactly as ``--bootstrap`` would, without waiting. Or
another command holds it for a moment, and the call waits for it to let go.

A reader that follows cannot hold the store and wait there when nobody serves the
directory: a ``Partition.wait_for`` only wakes for appends made in this process, and
other processes could not produce meanwhile. So once caught up it lets go of the
directory, waits (on inotify, see ``_watch.py``) until a writer has used it or an owner
has announced itself, then claims it again and reads on from where it stopped. Through an
owner it follows live, as any Kafka consumer does, until the owner goes away (stopped or
killed: :func:`~headwater.cli._owner.while_served`); then it claims the directory again
and goes on from the positions it had reached, in this process or through the next
owner. A group member goes on from the group's committed offsets the same way.

A group member in this process is the group's only live member (nobody else has the
directory), so it reads what the group has not committed and commits each delivery once
the sink took it. A group follower checks for news with a read-only open before it
claims the directory to read, so that its own commits do not wake it in a loop.

A writer through an owner stops at once with an error that says so when the owner goes
away with records in flight (those acknowledged before stay acknowledged); a record is
given ``OWNER_DELIVERY_S`` to be taken, whatever happens (the owner is on this machine).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from headwater.groups import GroupCoordinator
from headwater.store import IsolationLevel, NewRecord, Store

from ._access import GroupAdmin, RecordLookup, RecordSink, TopicWriter
from ._datadir import LOCK_WAIT_S, check_exists, claim_waiting, claimed, watch
from ._local_groups import LocalGroups
from ._owner import Served, while_served
from ._start import Start
from ._store_reads import (
    StoreLookup,
    StoreReader,
    StoreWriter,
    drain_group,
    group_has_news,
)
from ._watch import LockWatcher

if TYPE_CHECKING:
    from ._kafka import KafkaAccess

#: How long a record produced through the directory's owner may wait to be taken.
OWNER_DELIVERY_S = 15.0

_Local = Callable[[Store], Awaitable[None]]
_Remote = Callable[["KafkaAccess"], Awaitable[None]]
_News = Callable[[Store], Awaitable[bool]]


def through(served: Served) -> KafkaAccess:
    """Return the Kafka-protocol access to the log ``served``'s owner serves."""
    from ._kafka import KafkaAccess  # noqa: PLC0415 - keeps librdkafka out of local runs

    return KafkaAccess(served.bootstrap, served.description)


class LocalAccess:
    """A data directory, reached by opening its store here or through its owner.

    :param directory: the data directory.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    @property
    def description(self) -> str:
        """``data directory DIR``."""
        return f"data directory {self.directory}"

    @contextlib.asynccontextmanager
    async def writer(self, topic: str) -> AsyncIterator[TopicWriter]:
        """Open ``topic`` for appending (see :meth:`LogAccess.writer`)."""
        check_exists(self.directory)
        with watch(self.directory) as watcher:
            async with claim_waiting(self.directory, watcher, writer=True) as claim:
                if isinstance(claim, Served):
                    access = through(claim)
                    async with access.writer(topic, delivery_timeout_s=OWNER_DELIVERY_S) as w:
                        yield _OwnerWriter(w, claim, watcher)
                    return
                store_writer = StoreWriter(claim, topic)
                await claim.append(topic, [])  # refuses an internal topic before any input
                yield store_writer

    async def read(
        self,
        topic: str,
        *,
        partition: int | None,
        start: Start,
        follow: bool,
        sink: RecordSink,
        isolation: IsolationLevel = IsolationLevel.READ_UNCOMMITTED,
    ) -> None:
        """Deliver ``topic``'s records from ``start`` (see :meth:`LogAccess.read`)."""
        positions: dict[int, int] = {}  # shared by every way the read goes
        reader = StoreReader(topic, partition, sink, positions, isolation)

        async def local(store: Store) -> None:
            await reader.drain(store, start)

        async def remote(access: KafkaAccess) -> None:
            await access.read(
                topic,
                partition=partition,
                start=start,
                follow=follow,
                sink=sink,
                positions=positions,
                isolation=isolation,
            )

        await self._follow(local, remote, follow, sink, news=None)

    async def read_group(
        self,
        topic: str,
        group: str,
        *,
        start: Start,
        follow: bool,
        sink: RecordSink,
        isolation: IsolationLevel = IsolationLevel.READ_UNCOMMITTED,
    ) -> None:
        """Read as a member of ``group`` (see :meth:`LogAccess.read_group`)."""

        async def local(store: Store) -> None:
            await drain_group(store, topic, group, start, sink, isolation=isolation)

        async def remote(access: KafkaAccess) -> None:
            await access.read_group(
                topic, group, start=start, follow=follow, sink=sink, isolation=isolation
            )

        async def news(store: Store) -> bool:
            return await group_has_news(store, topic, group, start)

        await self._follow(local, remote, follow, sink, news=news, writer=True)

    async def _follow(
        self,
        local: _Local,
        remote: _Remote,
        follow: bool,
        sink: RecordSink,
        *,
        news: _News | None,
        writer: bool = False,
    ) -> None:
        directory = self.directory
        check_exists(directory)
        # The watcher exists before the first look, so no writer or owner that comes
        # after is missed.
        with watch(directory) as watcher:
            # Every command gives up on a directory that stays taken (and not served),
            # a follower too: one that started while another process held the directory
            # would print nothing until that process ended, maybe never. Once reading, it
            # waits as long as it takes.
            timeout_s, notice = LOCK_WAIT_S, True
            while True:
                async with claim_waiting(
                    directory, watcher, writer=writer, timeout_s=timeout_s, notice=notice
                ) as claim:
                    timeout_s, notice = math.inf, False
                    if isinstance(claim, Served):
                        if await while_served(claim, watcher, lambda: remote(through(claim))):
                            return
                        continue  # the owner went away: on from where it stopped
                    await local(claim)
                if not follow or sink.done():
                    return
                await _news(directory, watcher, news)

    @contextlib.asynccontextmanager
    async def lookup(self) -> AsyncIterator[RecordLookup]:
        """Open the log for single records: the store read-only, or through its owner."""
        async with claimed(self.directory, writer=False) as claim:
            if isinstance(claim, Served):
                async with through(claim).lookup() as lookup:
                    yield lookup
            else:
                yield StoreLookup(claim)

    @contextlib.asynccontextmanager
    async def groups(self, *, writer: bool) -> AsyncIterator[GroupAdmin]:
        """Open the log's consumer groups: the group coordinator over the store, or through
        the owner (whose groups have their live members)."""
        async with claimed(self.directory, writer=writer) as claim:
            if isinstance(claim, Served):
                async with through(claim).groups(writer=writer) as admin:
                    yield admin
                return
            async with GroupCoordinator(claim) as coordinator:
                yield LocalGroups(claim, coordinator)


async def _news(directory: Path, watcher: LockWatcher, news: _News | None) -> None:
    """Wait until there may be something new to read: a writer let go of the directory
    (and, for a group, the group has records past its commits), or an owner announced
    itself."""
    while True:
        if not await watcher.wait():
            continue  # a reader let go: nothing new
        if news is None:
            return
        # Our own commits count as writes: look before claiming the directory to read.
        async with claim_waiting(
            directory, watcher, writer=False, timeout_s=math.inf, notice=False
        ) as claim:
            if isinstance(claim, Served) or await news(claim):
                return


class _OwnerWriter:
    """Appends through the directory's owner; stops at once when the owner goes away."""

    def __init__(self, writer: TopicWriter, served: Served, watcher: LockWatcher) -> None:
        self._writer = writer
        self._served = served
        self._watcher = watcher
        self.partitions = writer.partitions
        self.max_message_bytes = writer.max_message_bytes

    async def append(
        self, records: Sequence[NewRecord], partition: int | None
    ) -> list[tuple[int, int]]:
        placed: list[tuple[int, int]] = []

        async def work() -> None:
            placed.extend(await self._writer.append(records, partition))

        if not await while_served(self._served, self._watcher, work):
            from headwater.broker import BrokerError  # noqa: PLC0415 - loaded with _kafka.py

            raise BrokerError(
                f"{self._served.description} stopped while records were being written to it"
            )
        return placed
