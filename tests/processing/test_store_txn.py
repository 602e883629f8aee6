"""An exactly-once run's writer on the embedded log (processing/_backends/_store_txn.py),
over a real store, group coordinator and transaction coordinator: what read_committed
readers and the group's offsets show after commits, aborts, fencing and refusals."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import pytest

from headwater.groups import TopicPartition
from headwater.processing import OutRecords, ProducerFencedError, TransactionAbortedError
from headwater.processing._backends import Membership, Transactions
from headwater.processing._backends._store_txn import StoreTransactions
from headwater.processing._backends.in_process import InProcessBackend, open_in_process
from headwater.store import IsolationLevel, Store, TopicConfig

RC = IsolationLevel.READ_COMMITTED
IN = TopicPartition("in", 0)


def out(values: list[bytes]) -> OutRecords:
    count = len(values)
    return OutRecords(list(values), [None] * count, [7] * count, b"in/0/", list(range(count)))


async def committed(store: Store, topic: str, index: int = 0) -> list[bytes | None]:
    records = await store.partition(topic, index).read_records(0, 1 << 24, isolation=RC)
    return [r.value for r in records]


@asynccontextmanager
async def member(backend: InProcessBackend) -> AsyncIterator[Membership]:
    """The group "g" reading "in", once this member holds its partitions."""
    assigned = anyio.Event()

    async def on_assigned(_: list[TopicPartition]) -> None:
        assigned.set()

    async def nothing(_: list[TopicPartition]) -> None:
        pass

    async with backend.join(
        "g", ["in"], on_assigned=on_assigned, on_revoked=nothing, on_lost=nothing
    ) as membership:
        await assigned.wait()
        yield membership


@asynccontextmanager
async def transactional(data: Path, tid: str = "app") -> AsyncIterator[InProcessBackend]:
    async with open_in_process(data, serve=False, transactional_id=tid) as backend:
        for topic in ("in", "out"):
            await backend.create_topic(topic, 2)
        yield backend


async def test_a_commit_shows_the_outputs_and_the_offsets_together(data: Path) -> None:
    async with transactional(data) as backend, member(backend) as membership:
        store = backend.store
        assert isinstance(membership, Transactions)
        await backend.produce("out", 0, out([b"a", b"b"]))
        await backend.produce("out", 1, out([b"c"]))
        # Written and durable, but not committed: a read_committed reader sees nothing,
        # and the partition ends (for the app's own reads) before the transaction.
        assert store.partition("out", 0).high_watermark == 2
        assert await committed(store, "out", 0) == []
        assert await backend.end_offset("out", 0) == 0
        assert await membership.committed([IN]) == {}

        await membership.commit_transaction({IN: 12}, {IN: "t=5"})

        assert await committed(store, "out", 0) == [b"a", b"b"]
        assert await committed(store, "out", 1) == [b"c"]
        assert await backend.end_offset("out", 0) == 3  # past the commit marker
        offset = (await membership.committed([IN]))[IN]
        assert (offset.offset, offset.metadata) == (12, "t=5")
        # The next transaction goes on in the same partitions (sequences continue).
        await backend.produce("out", 0, out([b"d"]))
        await membership.commit_transaction({IN: 13}, {})
        assert await committed(store, "out", 0) == [b"a", b"b", b"d"]


async def test_an_abort_hides_the_outputs_and_keeps_the_offsets(data: Path) -> None:
    async with transactional(data) as backend, member(backend) as membership:
        assert isinstance(membership, Transactions)
        store = backend.store
        await backend.produce("out", 0, out([b"kept"]))
        await membership.commit_transaction({IN: 1}, {})
        await backend.produce("out", 0, out([b"dropped"]))
        await membership.abort_transaction()
        assert await committed(store, "out", 0) == [b"kept"]
        assert await backend.end_offset("out", 0) == store.partition("out", 0).high_watermark
        assert (await membership.committed([IN]))[IN].offset == 1
        # The app's own fetch steps past the aborted records and the markers.
        fetched = await backend.fetch("out", 0, 1, 1 << 20)
        assert not fetched and fetched.offsets == range(4, 4)
        await backend.produce("out", 0, out([b"again"]))
        await membership.commit_transaction({IN: 2}, {})
        assert await committed(store, "out", 0) == [b"kept", b"again"]
        # Aborting with nothing written is nothing.
        await membership.abort_transaction()


async def test_a_new_producer_fences_the_old_and_aborts_its_transaction(data: Path) -> None:
    async with transactional(data, "app") as backend:
        store, coordinator = backend.store, backend.transactions.coordinator  # type: ignore[union-attr]
        old = backend.transactions
        assert old is not None
        await backend.produce("out", 0, out([b"zombie"]))
        assert store.partition("out", 0).last_stable_offset == 0  # open

        new = StoreTransactions(store, coordinator, "app", timeout_ms=60_000)
        await new.start()
        assert (new.producer_id, new.producer_epoch) == (old.producer_id, old.producer_epoch + 1)
        # Its open transaction was aborted: nothing of it is ever read committed, and it
        # holds readers back no longer.
        partition = store.partition("out", 0)
        assert partition.last_stable_offset == partition.high_watermark
        assert await committed(store, "out", 0) == []
        with pytest.raises(ProducerFencedError, match="fenced"):
            await old.produce("out", 0, out([b"late"]))
        with pytest.raises(ProducerFencedError, match="fenced"):
            await old.produce("out", 1, out([b"elsewhere"]))  # a partition it never wrote
        with pytest.raises(ProducerFencedError):
            await old.commit("g", {}, {}, member_id="", generation_id=-1)

        await new.produce("out", 0, out([b"new"]))
        await new.commit("g", {}, {}, member_id="", generation_id=-1)
        assert await committed(store, "out", 0) == [b"new"]


async def test_a_restarted_app_aborts_what_the_one_before_left_open(data: Path) -> None:
    async with transactional(data) as backend, member(backend) as membership:
        assert isinstance(membership, Transactions)
        await backend.produce("out", 0, out([b"one"]))
        await membership.commit_transaction({IN: 1}, {})
        await backend.produce("out", 0, out([b"left open"]))
    async with transactional(data) as backend:
        assert await committed(backend.store, "out", 0) == [b"one"]
        partition = backend.store.partition("out", 0)
        assert partition.last_stable_offset == partition.high_watermark
        assert backend.coordinator.committed("g")[IN].offset == 1


async def test_concurrent_writes_keep_each_partitions_sequence(data: Path) -> None:
    async with transactional(data) as backend, member(backend) as membership:
        assert isinstance(membership, Transactions)
        store = backend.store
        await store.create_topic("small", TopicConfig(partitions=1, max_message_bytes=300))
        big = [b"%03d" % i + b"x" * 60 for i in range(40)]  # several batches per write
        async with anyio.create_task_group() as tg:
            for n in range(6):
                tg.start_soon(backend.produce, "small", 0, out(big[n::6]))
                tg.start_soon(backend.produce, "out", n % 2, out([b"%d" % n]))
        await membership.commit_transaction({IN: 40}, {})
        got = await committed(store, "small")
        assert sorted(got) == sorted(big)  # type: ignore[type-var]
        assert store.partition("small", 0).high_watermark > 7  # many batches, one marker
        assert sorted(await committed(store, "out", 0)) == [b"0", b"2", b"4"]


async def test_offsets_of_a_member_no_longer_current_abort_the_transaction(data: Path) -> None:
    async with transactional(data) as backend, member(backend):
        writer = backend.transactions
        assert writer is not None
        await backend.produce("out", 0, out([b"stale"]))
        with pytest.raises(TransactionAbortedError, match="refused the offsets"):
            await writer.commit("g", {IN: 5}, {}, member_id="someone-else", generation_id=99)
        assert await committed(backend.store, "out", 0) == []
        assert not writer.open
        assert backend.coordinator.committed("g") == {}


async def test_a_client_of_the_served_directory_meets_the_apps_transactions(data: Path) -> None:
    """One transaction coordinator per directory: a Kafka client that takes the app's
    transactional id over through the served broker fences the app everywhere at once,
    even in a partition its transaction had not written yet."""
    import confluent_kafka as ck

    from headwater.store import served_address

    async with open_in_process(data, transactional_id="app") as backend:
        await backend.create_topic("out", 2)
        writer = backend.transactions
        assert writer is not None
        await backend.produce("out", 0, out([b"zombie"]))
        served = served_address(data)
        assert served is not None

        def take_over() -> None:
            producer = ck.Producer(
                {"bootstrap.servers": served.bootstrap, "transactional.id": "app"}
            )
            producer.init_transactions(60)

        await anyio.to_thread.run_sync(take_over)
        state = writer.coordinator.describe("app")
        assert state is not None and state.producer_epoch == writer.producer_epoch + 1
        with pytest.raises(ProducerFencedError):
            await backend.produce("out", 1, out([b"late"]))
        assert await committed(backend.store, "out", 0) == []
