"""The transaction coordinator in-process, over a real store and group coordinator."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

from headwater.groups import (
    TRANSACTION_STATE_TOPIC,
    GroupCoordinator,
    PendingOffset,
    ProducerIds,
    TopicPartition,
    TransactionCoordinator,
    TxnCode,
    TxnMetadata,
    TxnState,
)
from headwater.store import (
    InvalidProducerEpochError,
    IsolationLevel,
    NewRecord,
    Store,
    TopicConfig,
    encode_transactional_batch,
    open_store,
)

E = TxnCode
RC = IsolationLevel.READ_COMMITTED


def txn_batch(pid: int, epoch: int, value: bytes, sequence: int = 0) -> bytearray:
    return encode_transactional_batch(
        [NewRecord(value=value)], producer_id=pid, producer_epoch=epoch, base_sequence=sequence
    )


def coordinator(store: Store, groups: GroupCoordinator, first: int = 1) -> TransactionCoordinator:
    return TransactionCoordinator(store, groups, ProducerIds(first_producer_id=first))


async def committed_values(store: Store, topic: str, index: int) -> list[bytes]:
    partition = store.partition(topic, index)
    records = await partition.read_records(0, 1 << 20, isolation=RC)
    return [r.value for r in records if r.value is not None]


async def test_a_decided_transaction_is_finished_after_a_restart(tmp_path: Path) -> None:
    """The coordinator stops right after its commit decision is durable (as a crash
    would leave it): the next one writes the markers and commits the offsets."""
    async with open_store(tmp_path) as store:
        await store.create_topic("out", TopicConfig(partitions=2))
        await store.create_topic("in", TopicConfig())
        async with GroupCoordinator(store) as groups:
            async with TransactionCoordinator(
                store, groups, ProducerIds(first_producer_id=7)
            ) as tc:
                code, pid, epoch = await tc.init_producer_id("t", 60_000)
                assert (code, pid, epoch) == (E.NONE, 7, 0)
                added = await tc.add_partitions("t", pid, epoch, [("out", 0), ("out", 1)])
                assert set(added.values()) == {E.NONE}
                assert await tc.add_offsets("t", pid, epoch, "g") == E.NONE
                offsets = {("in", 0): PendingOffset(5, "m")}
                assert await tc.txn_offset_commit("t", "g", pid, epoch, offsets) == {
                    ("in", 0): E.NONE
                }
                for index in (0, 1):
                    await store.partition("out", index).append_batch(txn_batch(pid, epoch, b"v"))
                meta = tc.describe("t")
                assert meta is not None
                meta.state = TxnState.PREPARE_COMMIT
                decision = NewRecord(value=meta.encode(), key=b"t")
                state_log = store.partition(TRANSACTION_STATE_TOPIC, 0)
                await state_log.append([decision], internal=True)
            # Nothing of it shows yet: no marker, no offsets.
            assert await committed_values(store, "out", 0) == []
            assert groups.committed("g") == {}
            async with TransactionCoordinator(
                store, groups, ProducerIds(first_producer_id=9)
            ) as tc:
                # Finished by entering, before anything could read the group's offsets
                # (a restarted app resumes from them) or ask anything.
                assert groups.committed("g")[TopicPartition("in", 0)].offset == 5
                for index in (0, 1):
                    assert await committed_values(store, "out", index) == [b"v"]
                # A retry of the EndTxn returns once everything is finished.
                assert await tc.end_txn("t", pid, epoch, True) == E.NONE
                assert tc.describe("t").state is TxnState.COMPLETE_COMMIT  # type: ignore[union-attr]
            for index in (0, 1):
                assert await committed_values(store, "out", index) == [b"v"]
            assert groups.committed("g")[TopicPartition("in", 0)].offset == 5


async def test_a_transaction_past_its_timeout_is_aborted_and_its_producer_fenced(
    tmp_path: Path,
) -> None:
    async with open_store(tmp_path) as store:
        await store.create_topic("out", TopicConfig())
        partition = store.partition("out", 0)
        async with (
            GroupCoordinator(store) as groups,
            TransactionCoordinator(store, groups, ProducerIds(first_producer_id=1)) as tc,
        ):
            _, pid, epoch = await tc.init_producer_id("t", 200)
            await tc.add_partitions("t", pid, epoch, [("out", 0)])
            await partition.append_batch(txn_batch(pid, epoch, b"late"))
            assert partition.last_stable_offset == 0
            # The timer aborts it: the abort marker moves the LSO past the record.
            await partition.wait_for(1, isolation=RC)
            assert await committed_values(store, "out", 0) == []
            assert [t.first_offset for t in partition.aborted_transactions(0, 10)] == [0]
            assert await tc.end_txn("t", pid, epoch, True) == E.INVALID_PRODUCER_EPOCH
            with pytest.raises(InvalidProducerEpochError):
                await partition.append_batch(txn_batch(pid, epoch, b"zombie", 1))


async def test_a_new_producer_aborts_the_open_transaction_of_its_id(tmp_path: Path) -> None:
    async with open_store(tmp_path) as store:
        await store.create_topic("out", TopicConfig())
        partition = store.partition("out", 0)
        async with (
            GroupCoordinator(store) as groups,
            TransactionCoordinator(store, groups, ProducerIds(first_producer_id=1)) as tc,
        ):
            _, pid, old = await tc.init_producer_id("t", 60_000)
            await tc.add_partitions("t", pid, old, [("out", 0)])
            await partition.append_batch(txn_batch(pid, old, b"zombie"))
            code, same_pid, new = await tc.init_producer_id("t", 60_000)
            assert (code, same_pid, new) == (E.NONE, pid, old + 1)
            assert partition.last_stable_offset == partition.high_watermark == 2
            assert tc.verify("t", pid, old, "out", 0) == E.INVALID_PRODUCER_EPOCH
            assert await tc.add_partitions("t", pid, old, [("out", 0)]) == {
                ("out", 0): E.INVALID_PRODUCER_EPOCH
            }
            assert tc.verify("t", pid, new, "out", 0) == E.INVALID_TXN_STATE  # not added
            await tc.add_partitions("t", pid, new, [("out", 0)])
            await partition.append_batch(txn_batch(pid, new, b"new"))
            assert await tc.end_txn("t", pid, new, True) == E.NONE
            assert await committed_values(store, "out", 0) == [b"new"]


async def test_a_transactional_id_unused_past_its_expiration_is_forgotten(tmp_path: Path) -> None:
    now = [0]  # the coordinator's clock (epoch ms), moved by the test
    async with open_store(tmp_path) as store:
        await store.create_topic("out", TopicConfig())
        async with GroupCoordinator(store) as groups:
            ids = ProducerIds(first_producer_id=1)
            async with TransactionCoordinator(
                store, groups, ids, clock=lambda: now[0], expiration_ms=300
            ) as tc:
                _, pid, epoch = await tc.init_producer_id("t", 60_000)
                for at in (100, 350):  # each use restarts the expiration
                    now[0] = at
                    await tc.add_partitions("t", pid, epoch, [("out", 0)])
                    assert await tc.end_txn("t", pid, epoch, True) == E.NONE
                now[0] = 600  # 250 ms after the last use
                await anyio.sleep(0.5)  # the timer looks several times (every 50 ms here)
                assert tc.describe("t") is not None
                state_log = store.partition(TRANSACTION_STATE_TOPIC, 0)
                end = state_log.high_watermark
                now[0] = 700  # past it: forgotten, durably, by a tombstone
                with anyio.fail_after(10):
                    await state_log.wait_for(end)
                tombstone = await state_log.read_records(end, 1 << 20)
                assert [(r.key, r.value) for r in tombstone] == [(b"t", None)]
                assert tc.describe("t") is None
                assert await tc.add_partitions("t", pid, epoch, [("out", 0)]) == {
                    ("out", 0): E.INVALID_PRODUCER_ID_MAPPING
                }
            async with TransactionCoordinator(store, groups, ids) as tc:  # after a restart
                assert tc.describe("t") is None
                code, new_pid, new_epoch = await tc.init_producer_id("t", 60_000)
                assert (code, new_epoch) == (E.NONE, 0) and new_pid != pid


def test_only_an_idle_transactional_id_expires() -> None:
    meta = TxnMetadata("t", 1, 0, 60_000, updated_ms=1000)
    for state in TxnState:
        meta.state = state
        idle = state is not TxnState.ONGOING and not state.deciding
        assert meta.expires_ms(500) == (1500 if idle else None), state
    meta.state, meta.updated_ms = TxnState.EMPTY, -1  # not known: never
    assert meta.expires_ms(500) is None
    assert TxnMetadata.decode("t", meta.encode()).updated_ms == -1
