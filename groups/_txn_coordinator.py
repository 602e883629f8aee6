"""The transaction coordinator: transactional ids, their transactions, and how they end.

Theory of operation
-------------------
One coordinator serves every transactional id of the data directory (a one-node cluster
is the coordinator of everything). Its state per id is a :class:`TxnMetadata`
(``_txn_state.py``), written to the compacted internal topic ``__transaction_state``
(made by the first transactional id) before any request that changed it is answered,
so that it is exactly as durable as the log: entering the coordinator replays the topic.

* InitProducerId gives a transactional id its producer id (new, or the one it had) and
  bumps the epoch, which fences every older producer of that id: their batches, markers
  and requests carry the old epoch and are refused. An open transaction of the old
  producer is aborted first (with the bumped epoch), so the new one starts clean.
* AddPartitionsToTxn and AddOffsetsToTxn open the transaction (``ONGOING``) and name the
  partitions it writes and the groups whose offsets it commits. A transactional batch
  for a partition not added is refused (:meth:`TransactionCoordinator.verify`, called by
  the produce path), so that no partition holds a transaction no marker would end.
* TxnOffsetCommit records the group's offsets in the transaction; the group sees them
  only once the transaction commits.
* EndTxn writes ``PREPARE_COMMIT`` or ``PREPARE_ABORT`` -- the decision -- then a marker
  to every partition of the transaction (concurrently), then, for a commit, the offsets
  to their groups, then ``COMPLETE_*``; it answers once all that is durable.
* A transaction open longer than its timeout is aborted by the timer task, with the
  epoch bumped so that the producer that left it is fenced. The task sleeps until the
  earliest deadline, and is woken when a transaction opens.
* A transactional id unused for ``expiration_ms`` (Kafka's
  ``transactional.id.expiration.ms``, 7 days by default) while no transaction of it is
  open is forgotten: a tombstone in ``__transaction_state``, so compaction drops it too.
  A producer that comes back later gets a new producer id from InitProducerId; one that
  never went away gets ``INVALID_PRODUCER_ID_MAPPING`` and must initialise again.
* After a crash, entering finishes every decided transaction (a marker written twice
  changes nothing, nor do offsets committed twice); an open one stays open, for its
  producer to end or its timeout to abort. So a transaction is never half-visible to a
  read_committed reader.

Requests of one transactional id are handled one at a time (a lock per id); different
ids run concurrently. Use it as an async context manager on the event loop of the
store's owner: the broker drives it from Kafka's requests (answering with the codes it
returns, ``_txn_codes.py``), an embedded exactly-once app calls it directly, and an app
that serves its directory hands its own to the broker (one coordinator per directory).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Iterable

import anyio
from anyio.abc import TaskGroup

from headwater.store import (
    CleanupPolicy,
    ControlType,
    LogClosedError,
    NewRecord,
    Partition,
    ProducerStateError,
    Store,
    StoreError,
    TopicConfig,
    TopicNotFoundError,
)

from ._consumer_protocol import TopicPartition
from ._errors import GroupError
from ._host import GroupCoordinator, wall_clock_ms
from ._offsets import OffsetAndMetadata
from ._producer_ids import ProducerIds
from ._txn_codes import TxnCode
from ._txn_state import (
    DEFAULT_MAX_TIMEOUT_MS,
    TRANSACTION_STATE_TOPIC,
    PendingOffset,
    TxnMetadata,
    TxnState,
)

logger = logging.getLogger("headwater.groups")

#: The coordinator epoch written into markers: one coordinator, which never moves.
COORDINATOR_EPOCH = 0
#: After a failed attempt to finish a decided transaction, try again this much later.
RETRY_MS = 1000
#: How long an unused transactional id is kept (Kafka's default: 7 days).
DEFAULT_EXPIRATION_MS = 7 * 24 * 3600 * 1000
_LOAD_BYTES = 1 << 20
_SEGMENT_BYTES = 8 << 20

E = TxnCode


class TransactionCoordinator:
    """Transactional ids and their transactions over ``store`` (module docstring).

    :param store: the open store (writable).
    :param groups: the group coordinator that receives committed transactional offsets.
    :param producer_ids: hands out producer ids (shared with idempotent producers).
    :param clock: epoch milliseconds, for transaction timeouts.
    :param max_timeout_ms: the longest transaction timeout a producer may ask for.
    :param expiration_ms: how long a transactional id is kept after its last use.
    """

    def __init__(
        self,
        store: Store,
        groups: GroupCoordinator,
        producer_ids: ProducerIds,
        *,
        clock: Callable[[], int] = wall_clock_ms,
        max_timeout_ms: int = DEFAULT_MAX_TIMEOUT_MS,
        expiration_ms: int = DEFAULT_EXPIRATION_MS,
    ) -> None:
        self.store = store
        self.groups = groups
        self.producer_ids = producer_ids
        self.max_timeout_ms = max_timeout_ms
        self.expiration_ms = expiration_ms
        self._clock = clock
        self._txns: dict[str, TxnMetadata] = {}
        self._locks: dict[str, anyio.Lock] = {}
        self._retry_at: dict[str, int] = {}
        self._partition: Partition | None = None
        self._wakeup = anyio.Event()
        self._task_group: TaskGroup | None = None

    # -- life cycle ----------------------------------------------------------------------

    async def __aenter__(self) -> TransactionCoordinator:
        await self._load()
        for meta in [m for m in self._txns.values() if m.state.deciding]:
            # Before anything reads the group offsets a decided commit carries (failures
            # are left to the timer).
            async with self._lock(meta.transactional_id):
                await self._finish(meta)
        self._task_group = anyio.create_task_group()
        await self._task_group.__aenter__()
        self._task_group.start_soon(self._run_timer)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Stop the timer task; transactions stay as they are, for the next start."""
        group, self._task_group = self._task_group, None
        if group is not None:
            group.cancel_scope.cancel()
            await group.__aexit__(None, None, None)

    async def _load(self) -> None:
        store = self.store
        if not store.has_topic(TRANSACTION_STATE_TOPIC):
            return  # made by the first transactional id's first write
        self._partition = store.partition(TRANSACTION_STATE_TOPIC, 0)
        self._txns = await read_transaction_states(store, self._clock())
        decided = [m for m in self._txns.values() if m.state.deciding]
        if self._txns:
            logger.info(
                "transactions: %d transactional id(s) loaded, %d to finish, %d open",
                len(self._txns),
                len(decided),
                sum(m.state is TxnState.ONGOING for m in self._txns.values()),
            )

    async def _write(self, meta: TxnMetadata) -> None:
        """Append ``meta`` to ``__transaction_state``; return once durable."""
        meta.updated_ms = self._clock()
        try:
            await self._append(meta.transactional_id, meta.encode())
        finally:
            self._wakeup.set()  # its deadline or expiration may have moved

    async def _append(self, transactional_id: str, value: bytes | None) -> None:
        if self._partition is None:
            store = self.store
            config = TopicConfig(
                partitions=1,
                cleanup_policy=CleanupPolicy.COMPACT,
                durability=store.default_config.durability,
                retention_ms=-1,
                retention_bytes=-1,
                segment_bytes=_SEGMENT_BYTES,
            )
            await store.create_topic(TRANSACTION_STATE_TOPIC, config, internal=True)
            self._partition = store.partition(TRANSACTION_STATE_TOPIC, 0)
        record = NewRecord(value=value, key=transactional_id.encode())
        with anyio.CancelScope(shield=True):
            await self._partition.append([record], internal=True)

    def _lock(self, transactional_id: str) -> anyio.Lock:
        lock = self._locks.get(transactional_id)
        if lock is None:
            lock = self._locks[transactional_id] = anyio.Lock()
        return lock

    # -- requests ------------------------------------------------------------------------

    async def init_producer_id(
        self, transactional_id: str, timeout_ms: int, producer_id: int = -1, epoch: int = -1
    ) -> tuple[TxnCode, int, int]:
        """InitProducerId with a transactional id: return (error, producer id, epoch)."""
        if not 0 < timeout_ms <= self.max_timeout_ms:
            return E.INVALID_TRANSACTION_TIMEOUT, -1, -1
        async with self._lock(transactional_id):
            meta = self._txns.get(transactional_id)
            if meta is None:
                new_id, _ = self.producer_ids.new_producer()
                meta = TxnMetadata(transactional_id, new_id, 0, timeout_ms)
                await self._write(meta)
                self._txns[transactional_id] = meta
                return E.NONE, meta.producer_id, meta.producer_epoch
            if producer_id >= 0 and (producer_id, epoch) != (
                meta.producer_id,
                meta.producer_epoch,
            ):
                return E.PRODUCER_FENCED, -1, -1
            if meta.state.deciding and not await self._finish(meta):
                return E.CONCURRENT_TRANSACTIONS, -1, -1
            meta.bump_epoch(self.producer_ids.new_producer()[0])
            if meta.state is TxnState.ONGOING:
                # Aborted with the new epoch: the old producer is fenced in every partition.
                meta.state = TxnState.PREPARE_ABORT
                await self._write(meta)
                if not await self._finish(meta):
                    return E.CONCURRENT_TRANSACTIONS, -1, -1
            meta.timeout_ms = timeout_ms
            meta.state = TxnState.EMPTY
            meta.started_ms = -1
            await self._write(meta)
            return E.NONE, meta.producer_id, meta.producer_epoch

    def _current(self, transactional_id: str, producer_id: int, epoch: int) -> TxnMetadata | E:
        meta = self._txns.get(transactional_id)
        if meta is None:
            return E.INVALID_PRODUCER_ID_MAPPING
        code = meta.check_producer(producer_id, epoch)
        if code != E.NONE:
            return code
        if meta.state.deciding:
            return E.CONCURRENT_TRANSACTIONS
        return meta

    async def add_partitions(
        self,
        transactional_id: str,
        producer_id: int,
        epoch: int,
        partitions: list[tuple[str, int]],
    ) -> dict[tuple[str, int], TxnCode]:
        """AddPartitionsToTxn: return an error code per partition."""
        async with self._lock(transactional_id):
            meta = self._current(transactional_id, producer_id, epoch)
            if not isinstance(meta, TxnMetadata):
                return dict.fromkeys(partitions, meta)
            unknown = {tp for tp in partitions if not self._exists(*tp)}
            if unknown:
                return {
                    tp: E.UNKNOWN_TOPIC_OR_PARTITION if tp in unknown else E.OPERATION_NOT_ATTEMPTED
                    for tp in partitions
                }
            if meta.state is not TxnState.ONGOING or not meta.partitions.issuperset(partitions):
                self._open(meta)
                meta.partitions.update(partitions)
                await self._write(meta)
            return dict.fromkeys(partitions, E.NONE)

    async def add_offsets(
        self, transactional_id: str, producer_id: int, epoch: int, group_id: str
    ) -> TxnCode:
        """AddOffsetsToTxn: the transaction will commit offsets of ``group_id``."""
        if not group_id:
            return E.INVALID_GROUP_ID
        async with self._lock(transactional_id):
            meta = self._current(transactional_id, producer_id, epoch)
            if not isinstance(meta, TxnMetadata):
                return meta
            if meta.state is not TxnState.ONGOING or group_id not in meta.groups:
                self._open(meta)
                meta.groups.add(group_id)
                await self._write(meta)
            return E.NONE

    async def txn_offset_commit(
        self,
        transactional_id: str,
        group_id: str,
        producer_id: int,
        epoch: int,
        offsets: dict[tuple[str, int], PendingOffset],
        *,
        member_id: str = "",
        generation_id: int = -1,
        group_instance_id: str | None = None,
    ) -> dict[tuple[str, int], int]:
        """TxnOffsetCommit: hold ``offsets`` in the transaction; an error code per partition."""
        async with self._lock(transactional_id):
            meta = self._current(transactional_id, producer_id, epoch)
            if not isinstance(meta, TxnMetadata):
                return dict.fromkeys(offsets, meta)
            if meta.state is not TxnState.ONGOING or group_id not in meta.groups:
                return dict.fromkeys(offsets, E.INVALID_TXN_STATE)
            try:
                await self.groups.check_member(
                    group_id,
                    member_id=member_id,
                    generation_id=generation_id,
                    group_instance_id=group_instance_id,
                )
            except GroupError as exc:
                return dict.fromkeys(offsets, exc.code)
            codes: dict[tuple[str, int], int] = {
                tp: E.NONE if self._exists(*tp) and o.offset >= 0 else E.UNKNOWN_TOPIC_OR_PARTITION
                for tp, o in offsets.items()
            }
            held = meta.offsets.setdefault(group_id, {})
            held.update((tp, o) for tp, o in offsets.items() if codes[tp] == E.NONE)
            await self._write(meta)
            return codes

    async def end_txn(
        self, transactional_id: str, producer_id: int, epoch: int, commit: bool
    ) -> TxnCode:
        """EndTxn: commit or abort the open transaction; answer once it is finished."""
        async with self._lock(transactional_id):
            meta = self._txns.get(transactional_id)
            if meta is None:
                return E.INVALID_PRODUCER_ID_MAPPING
            code = meta.check_producer(producer_id, epoch)
            if code != E.NONE:
                return code
            wanted = (
                (TxnState.PREPARE_COMMIT, TxnState.COMPLETE_COMMIT)
                if commit
                else (TxnState.PREPARE_ABORT, TxnState.COMPLETE_ABORT)
            )
            if meta.state is TxnState.ONGOING:
                meta.state = wanted[0]
                await self._write(meta)  # the decision
            elif meta.state is wanted[1]:
                return E.NONE  # a retry of an EndTxn that finished
            elif meta.state is not wanted[0]:
                return E.INVALID_TXN_STATE
            return E.NONE if await self._finish(meta) else E.COORDINATOR_NOT_AVAILABLE

    def verify(
        self, transactional_id: str | None, producer_id: int, epoch: int, topic: str, index: int
    ) -> TxnCode:
        """Check a transactional batch before it is appended: it must belong to the open
        transaction of ``transactional_id``'s current producer, which added the partition."""
        meta = None if transactional_id is None else self._txns.get(transactional_id)
        if meta is None or meta.producer_id != producer_id:
            return E.INVALID_PRODUCER_ID_MAPPING
        if epoch != meta.producer_epoch:
            return E.INVALID_PRODUCER_EPOCH
        if meta.state is not TxnState.ONGOING or (topic, index) not in meta.partitions:
            return E.INVALID_TXN_STATE
        return E.NONE

    def describe(self, transactional_id: str) -> TxnMetadata | None:
        """Return the state of ``transactional_id`` (for inspection), or ``None``.

        The state is the coordinator's own object, as last changed: read it, never change it.
        """
        return self._txns.get(transactional_id)

    def list_transactions(
        self,
        states: Collection[TxnState] = (),
        producer_ids: Collection[int] = (),
        min_duration_ms: int = -1,
    ) -> list[TxnMetadata]:
        """Return the states of the known transactional ids, by id, that match every filter
        given (Kafka's ListTransactions; read them, never change them).

        :param states: only ids in one of these states (empty: any state).
        :param producer_ids: only ids whose current producer id is one of these (empty: any).
        :param min_duration_ms: only ids whose current or last transaction began longer
            ago than this, by the coordinator's clock (negative: no filter); Kafka's
            comparison, in which an id with no transaction since its producer started
            passes every filter.
        """
        now = self._clock()
        wanted_states = frozenset(states)
        wanted_ids = frozenset(producer_ids)
        found = []
        for transactional_id in sorted(self._txns):
            meta = self._txns[transactional_id]
            if wanted_states and meta.state not in wanted_states:
                continue
            if wanted_ids and meta.producer_id not in wanted_ids:
                continue
            # As Kafka compares: an id whose producer began no transaction yet (-1) counts
            # as running since the epoch, so it passes every duration filter.
            if min_duration_ms >= 0 and now - meta.started_ms <= min_duration_ms:
                continue
            found.append(meta)
        return found

    # -- finishing -----------------------------------------------------------------------

    def _exists(self, topic: str, index: int) -> bool:
        try:
            self.store.partition(topic, index)
        except (TopicNotFoundError, LogClosedError):
            return False
        return not topic.startswith("__")

    def _open(self, meta: TxnMetadata) -> None:
        if meta.state is not TxnState.ONGOING:
            meta.begin(self._clock())  # a new deadline: the write that follows wakes the timer

    async def _finish(self, meta: TxnMetadata) -> bool:
        """Write the markers (and, for a commit, the offsets) of a decided transaction,
        then record it complete. Returns ``False`` if that failed (retried later)."""
        commit = meta.state is TxnState.PREPARE_COMMIT
        try:
            with anyio.CancelScope(shield=True):
                await self._write_markers(meta, commit)
                if commit:
                    for group_id, offsets in meta.offsets.items():
                        await self._commit_offsets(group_id, offsets)
                meta.finish()
                await self._write(meta)
        except (StoreError, GroupError, OSError) as exc:
            logger.error(
                "transaction of %r: cannot finish the %s yet: %s",
                meta.transactional_id,
                "commit" if commit else "abort",
                exc,
            )
            self._retry_at[meta.transactional_id] = self._clock() + RETRY_MS
            self._wakeup.set()
            return False
        self._retry_at.pop(meta.transactional_id, None)
        return True

    async def _write_markers(self, meta: TxnMetadata, commit: bool) -> None:
        kind = ControlType.COMMIT if commit else ControlType.ABORT
        failures: list[BaseException] = []

        async def write(topic: str, index: int) -> None:
            try:
                partition = self.store.partition(topic, index)
            except (TopicNotFoundError, LogClosedError):
                return  # deleted meanwhile: nothing left to mark
            try:
                await partition.write_marker(
                    kind,
                    producer_id=meta.producer_id,
                    producer_epoch=meta.producer_epoch,
                    coordinator_epoch=COORDINATOR_EPOCH,
                )
            except ProducerStateError as exc:
                # The partition knows a newer producer epoch: nothing of this one is open.
                logger.warning("marker for %s-%d not written: %s", topic, index, exc)
            except (StoreError, OSError) as exc:
                failures.append(exc)

        async with anyio.create_task_group() as tg:
            for topic, index in sorted(meta.partitions):
                tg.start_soon(write, topic, index)
        if failures:
            raise StoreError(f"{len(failures)} marker(s) not written: {failures[0]}")

    async def _commit_offsets(
        self, group_id: str, offsets: dict[tuple[str, int], PendingOffset]
    ) -> None:
        committed = {
            TopicPartition(t, p): OffsetAndMetadata(
                o.offset, o.metadata, leader_epoch=o.leader_epoch
            )
            for (t, p), o in offsets.items()
            if self._exists(t, p)
        }
        if committed:
            await self.groups.commit_transaction(group_id, committed)

    # -- the timer -----------------------------------------------------------------------

    async def _run_timer(self) -> None:
        """Finish decided transactions, abort timed-out ones and forget expired ids, each
        at its time."""
        while True:
            now = self._clock()
            due: list[str] = []
            next_ms: int | None = None
            for transactional_id, meta in self._txns.items():
                at = self._retry_at.get(transactional_id)
                if at is None:
                    at = meta.deadline_ms()
                if at is None:
                    at = meta.expires_ms(self.expiration_ms)
                if at is None:
                    continue
                if at <= now:
                    due.append(transactional_id)
                elif next_ms is None or at < next_ms:
                    next_ms = at
            for transactional_id in due:
                await self._expire(transactional_id)
            if due:
                continue
            self._wakeup = anyio.Event()
            delay = None if next_ms is None else max(next_ms - self._clock(), 0) / 1000
            with anyio.move_on_after(delay if delay is not None else float("inf")):
                await self._wakeup.wait()

    async def _expire(self, transactional_id: str) -> None:
        async with self._lock(transactional_id):
            meta = self._txns.get(transactional_id)
            self._retry_at.pop(transactional_id, None)  # set again by what fails below
            if meta is None:
                return
            if meta.state.deciding:
                await self._finish(meta)
                return
            expires = meta.expires_ms(self.expiration_ms)
            if expires is not None:
                if expires <= self._clock():
                    await self._forget(meta)
                return
            deadline = meta.deadline_ms()
            if deadline is None or deadline > self._clock():
                return
            logger.info(
                "transaction of %r open past its timeout (%d ms): aborting it",
                transactional_id,
                meta.timeout_ms,
            )
            meta.bump_epoch(self.producer_ids.new_producer()[0])
            meta.state = TxnState.PREPARE_ABORT
            try:
                await self._write(meta)
            except (StoreError, OSError) as exc:
                logger.error(
                    "transaction of %r: cannot record its abort yet: %s", transactional_id, exc
                )
                self._retry_at[transactional_id] = self._clock() + RETRY_MS
                return
            await self._finish(meta)

    async def _forget(self, meta: TxnMetadata) -> None:
        """Drop the expired id of ``meta``, durably (called under its lock)."""
        transactional_id = meta.transactional_id
        logger.info(
            "transactional id %r unused for %d ms: forgotten",
            transactional_id,
            self.expiration_ms,
        )
        try:
            await self._append(transactional_id, None)
        except (StoreError, OSError) as exc:
            logger.error("transactional id %r: cannot forget it yet: %s", transactional_id, exc)
            self._retry_at[transactional_id] = self._clock() + RETRY_MS
            return
        del self._txns[transactional_id]
        if not self._locks[transactional_id].statistics().tasks_waiting:
            del self._locks[transactional_id]  # nothing waits for it: no leak per id


async def read_transaction_states(store: Store, now_ms: int) -> dict[str, TxnMetadata]:
    """Return every transactional id's state as ``__transaction_state`` holds it (empty
    when it does not exist): its latest record per id, tombstones dropping the id.

    Reads only: what a coordinator loads on entering, and what a tool shows of a data
    directory no coordinator serves. A state written before states said when they were
    written is taken as written at ``now_ms``.
    """
    txns: dict[str, TxnMetadata] = {}
    if not store.has_topic(TRANSACTION_STATE_TOPIC):
        return txns
    partition = store.partition(TRANSACTION_STATE_TOPIC, 0)
    position, end = partition.log_start_offset, partition.high_watermark
    while position < end:
        records = await partition.read_records(position, _LOAD_BYTES)
        if not records:
            break
        for record in records:
            if record.offset >= end or record.key is None:
                continue
            transactional_id = record.key.decode(errors="replace")
            if record.value is None:
                txns.pop(transactional_id, None)
                continue
            try:
                meta = TxnMetadata.decode(transactional_id, record.value)
            except ValueError as exc:
                logger.warning(
                    "%s offset %d: skipped: %s", TRANSACTION_STATE_TOPIC, record.offset, exc
                )
                continue
            if meta.updated_ms < 0:  # its time runs from now
                meta.updated_ms = now_ms
            txns[transactional_id] = meta
        position = records[-1].offset + 1
    return txns


def pending_offsets(
    partitions: Iterable[tuple[str, int, int, str | None, int]],
) -> dict[tuple[str, int], PendingOffset]:
    """Turn TxnOffsetCommit's (topic, partition, offset, metadata, leader epoch) into the
    offsets a transaction holds."""
    return {
        (topic, index): PendingOffset(offset, metadata or "", None if epoch < 0 else epoch)
        for topic, index, offset, metadata, epoch in partitions
    }
