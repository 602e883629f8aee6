"""An exactly-once run's writes on the embedded log: the store's own transactions.

Theory of operation
-------------------
The same transactions a Kafka client makes through ``headwater broker``, made in
process: :class:`StoreTransactions` is one transactional producer, and it calls the data
directory's :class:`~headwater.groups.TransactionCoordinator` directly where a client
would send a request (InitProducerId, AddPartitionsToTxn, AddOffsetsToTxn,
TxnOffsetCommit, EndTxn), so the coordinator's rules, its durable state in
``__transaction_state`` and its recovery after a crash are the broker's own.

- :meth:`StoreTransactions.start` gets the transactional id's producer id and a new
  epoch, which fences the previous producer of that id (the app before a crash or a
  restart) and aborts the transaction it left open.
- :meth:`StoreTransactions.produce` adds a partition to the transaction before its first
  write there (partitions first written at the same time are added in one call, and the
  coordinator's record of them is durable before any of their records is written, so no
  partition holds records that no marker would end), then encodes the records as
  batches of the transaction -- producer id, epoch, the partition's next sequence
  numbers, the transactional bit -- and appends them in the same step as they are
  numbered (no wait between), so that concurrent writes to one partition keep their
  sequences in order; it returns once they are durable. The partition checks the epoch:
  a fenced producer's batch is refused.
- :meth:`StoreTransactions.commit` sends the group's offsets into the transaction (with
  the member and generation, so a member a rebalance left behind cannot commit them) and
  ends it: the coordinator writes its decision, a commit marker to every partition
  written, then the offsets to the group. After a crash anywhere in that, the decision
  decides: a decided commit is finished when the coordinator is next entered (before
  the restarted app reads its offsets), an undecided one is aborted by the restarted
  app's :meth:`start`. So a read_committed reader sees all of a transaction's records
  and its offsets, or none.

The caller (the runtime) writes nothing while it commits or aborts (it holds every
task's lock). Codes that say the producer is no longer current raise
:class:`ProducerFencedError`; a transient code (the coordinator still finishing a
decided transaction, or unable to write its state) is retried with backoff.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping

import anyio
from tenacity import AsyncRetrying, retry_if_result, stop_after_delay, wait_exponential

from headwater.groups import PendingOffset, TopicPartition, TransactionCoordinator, TxnCode
from headwater.store import InvalidProducerEpochError, Store, StoreError

from .._encoding import OutRecords, ProducerStamp, encode_within
from .._errors import ProducerFencedError, TransactionAbortedError

#: Codes that say another producer of the transactional id took over.
_FENCED = (
    TxnCode.PRODUCER_FENCED,
    TxnCode.INVALID_PRODUCER_EPOCH,
    TxnCode.INVALID_PRODUCER_ID_MAPPING,
)
#: Codes worth asking again: the coordinator is finishing a decided transaction, or could
#: not write its state this time.
_TRANSIENT = (TxnCode.CONCURRENT_TRANSACTIONS, TxnCode.COORDINATOR_NOT_AVAILABLE)
#: How long a transient code is retried before the call fails.
RETRY_FOR_S = 30.0


class StoreTransactions:
    """One transactional producer on the embedded log (see the module docstring).

    :param store: the open store.
    :param coordinator: the directory's transaction coordinator (entered).
    :param transactional_id: the producer's stable identity (one per app instance).
    :param timeout_ms: how long a transaction may stay open before the coordinator
        aborts it (and fences this producer).

    Concurrency: one event loop; writes may run concurrently, commits and aborts not.
    """

    def __init__(
        self,
        store: Store,
        coordinator: TransactionCoordinator,
        transactional_id: str,
        *,
        timeout_ms: int,
    ) -> None:
        self.store = store
        self.coordinator = coordinator
        self.transactional_id = transactional_id
        self.timeout_ms = timeout_ms
        self.producer_id = -1
        self.producer_epoch = -1
        #: The next sequence number per partition, in this epoch.
        self._sequences: dict[tuple[str, int], int] = {}
        #: Partitions in the open transaction, and those waiting to be added.
        self._added: set[tuple[str, int]] = set()
        self._wanted: set[tuple[str, int]] = set()
        self._adding: anyio.Event | None = None
        self._add_failure: BaseException | None = None
        #: Whether the coordinator holds an open transaction of this producer.
        self.open = False

    async def start(self) -> None:
        """Take the transactional id over: a new epoch, the previous producer fenced and
        its open transaction aborted.

        :raises ProducerFencedError: if the coordinator refuses (an invalid timeout).
        """
        coordinator, tid = self.coordinator, self.transactional_id

        async def init() -> TxnCode:
            code, producer_id, epoch = await coordinator.init_producer_id(tid, self.timeout_ms)
            if code == TxnCode.NONE:
                self.producer_id, self.producer_epoch = producer_id, epoch
            return code

        code = await self._retrying(init, "starting transactions")
        if code != TxnCode.NONE:
            raise ProducerFencedError(
                f"transactional id {tid!r}: the transaction coordinator refused it ({code.name})"
            )
        self._sequences.clear()

    # -- writing -------------------------------------------------------------------------

    async def produce(self, topic: str, partition: int, records: OutRecords) -> None:
        """Write ``records`` to one partition in the open transaction; return once durable.

        :raises ProducerFencedError: if another producer took the transactional id over.
        :raises StoreError: if the records or the coordinator's state cannot be written.
        """
        tp = (topic, partition)
        if tp not in self._added:
            await self._add(tp)
        code = self.coordinator.verify(
            self.transactional_id, self.producer_id, self.producer_epoch, topic, partition
        )
        if code != TxnCode.NONE:
            raise self._refused(code, f"writing to {topic}/{partition}")
        target = self.store.partition(topic, partition)
        stamp = ProducerStamp(self.producer_id, self.producer_epoch, self._sequences.get(tp, 0))
        info = None
        for batch in encode_within(records, target.config.max_message_bytes, stamp):
            try:
                info = target.append_batch_nowait(batch)
            except InvalidProducerEpochError as exc:
                raise self._fenced(str(exc)) from None
            stamp = stamp.after(info.next_offset - info.base_offset)
            self._sequences[tp] = stamp.base_sequence
        if info is not None:
            await target.wait_durable(info.next_offset)

    async def _add(self, tp: tuple[str, int]) -> None:
        """Add ``tp`` to the open transaction (opening it), with the partitions other
        writes want added meanwhile: one call to the coordinator for them all."""
        while tp not in self._added:
            self._wanted.add(tp)
            if self._adding is not None:
                await self._adding.wait()
                if tp not in self._added and self._add_failure is not None:
                    raise self._add_failure
                continue  # added, or the call was cancelled: this one adds it
            wanted = sorted(self._wanted - self._added)
            self._wanted.clear()
            done = self._adding = anyio.Event()
            self._add_failure = None
            try:
                await self._add_now(wanted)
            except Exception as exc:
                self._add_failure = exc
                raise
            finally:
                self._adding = None
                done.set()

    async def _add_now(self, partitions: list[tuple[str, int]]) -> None:
        coordinator, tid = self.coordinator, self.transactional_id
        pid, epoch = self.producer_id, self.producer_epoch

        async def add() -> TxnCode:
            codes = set((await coordinator.add_partitions(tid, pid, epoch, partitions)).values())
            # OPERATION_NOT_ATTEMPTED: refused for another partition's sake.
            reasons = codes - {TxnCode.NONE, TxnCode.OPERATION_NOT_ATTEMPTED}
            return min(reasons) if reasons else max(codes)

        code = await self._retrying(add, "adding partitions to a transaction")
        if code != TxnCode.NONE:
            raise self._refused(code, "adding " + ", ".join(f"{t}/{p}" for t, p in partitions))
        self.open = True
        self._added.update(partitions)

    # -- ending --------------------------------------------------------------------------

    async def commit(
        self,
        group_id: str,
        offsets: Mapping[TopicPartition, int],
        metadata: Mapping[TopicPartition, str],
        *,
        member_id: str,
        generation_id: int,
    ) -> None:
        """Commit the open transaction with ``offsets`` (and their ``metadata``) as
        ``group_id``'s offsets, sent as its member ``member_id`` of ``generation_id``.

        :raises TransactionAbortedError: if the group refused the offsets (the member is
            no longer current): the transaction was aborted.
        :raises ProducerFencedError: if another producer took the transactional id over.
        :raises StoreError: if the coordinator could not finish it (it stays decided, and
            the coordinator finishes it once it can).
        """
        if not offsets and not self.open:
            return  # nothing written, nothing read: no transaction to end
        coordinator, tid = self.coordinator, self.transactional_id
        pid, epoch = self.producer_id, self.producer_epoch
        if offsets:
            code = await self._retrying(
                lambda: coordinator.add_offsets(tid, pid, epoch, group_id), "adding offsets"
            )
            if code != TxnCode.NONE:
                raise self._refused(code, f"adding group {group_id!r}'s offsets")
            self.open = True
            pending = {
                (tp.topic, tp.partition): PendingOffset(offset, metadata.get(tp, ""))
                for tp, offset in offsets.items()
            }
            codes = await coordinator.txn_offset_commit(
                tid, group_id, pid, epoch, pending, member_id=member_id, generation_id=generation_id
            )
            refused = {c for c in codes.values() if c != TxnCode.NONE}
            if refused & set(_FENCED):
                raise self._fenced("sending offsets")
            if refused:
                await self.abort()
                raise TransactionAbortedError(
                    f"group {group_id!r} refused the offsets of a transaction (Kafka error "
                    f"code {', '.join(map(str, sorted(refused)))}: this member is no longer "
                    "current), so it was aborted"
                )
        await self._end(commit=True)

    async def abort(self) -> None:
        """Abort the open transaction, if any: its records are never read committed.

        :raises ProducerFencedError: if another producer took the transactional id over.
        :raises StoreError: if the coordinator could not finish it.
        """
        if self.open:
            await self._end(commit=False)

    async def _end(self, *, commit: bool) -> None:
        coordinator, tid = self.coordinator, self.transactional_id
        pid, epoch = self.producer_id, self.producer_epoch
        what = "committing a transaction" if commit else "aborting a transaction"
        code = await self._retrying(lambda: coordinator.end_txn(tid, pid, epoch, commit), what)
        if code != TxnCode.NONE:
            raise self._refused(code, what)
        self.open = False
        self._added.clear()

    # -- answers -------------------------------------------------------------------------

    async def _retrying(self, call: Callable[[], Awaitable[TxnCode]], what: str) -> TxnCode:
        """Return ``call``'s code, asked again while it is transient.

        :raises StoreError: if it stays transient for ``RETRY_FOR_S``.
        """
        retrying = AsyncRetrying(
            sleep=anyio.sleep,
            stop=stop_after_delay(RETRY_FOR_S),
            wait=wait_exponential(multiplier=0.01, max=1.0),
            retry=retry_if_result(lambda code: code in _TRANSIENT),
            retry_error_callback=lambda state: state.outcome.result(),  # type: ignore[union-attr]
        )

        async def ask() -> TxnCode:  # a coroutine function, which tenacity awaits
            return await call()

        code: TxnCode = await retrying(ask)
        if code in _TRANSIENT:
            raise StoreError(
                f"transactional id {self.transactional_id!r}: {what}: the transaction "
                f"coordinator still answers {code.name} after {RETRY_FOR_S:g} s"
            )
        return code

    def _refused(self, code: int, what: str) -> StoreError | ProducerFencedError:
        if code in _FENCED:
            return self._fenced(what)
        name = TxnCode(code).name if code in TxnCode._value2member_map_ else str(code)
        return StoreError(
            f"transactional id {self.transactional_id!r}: {what}: the transaction "
            f"coordinator refused it ({name})"
        )

    def _fenced(self, what: str) -> ProducerFencedError:
        return ProducerFencedError(
            f"{what}: this app's transactional producer {self.transactional_id!r} was fenced "
            "(another instance with its transactional id took over, or its transaction "
            "stayed open past its timeout)"
        )
