"""The transaction coordinator's read-only queries: what ListTransactions and
DescribeTransactions answer, on a clock the test moves."""

from __future__ import annotations

from pathlib import Path

from headwater.groups import (
    GroupCoordinator,
    ProducerIds,
    TransactionCoordinator,
    TxnCode,
    TxnState,
)
from headwater.store import TopicConfig, open_store

E = TxnCode


async def test_list_transactions_filters_and_when_each_transaction_began(tmp_path: Path) -> None:
    now = [1_000]  # the coordinator's clock (epoch ms), moved by the test
    async with open_store(tmp_path) as store:
        await store.create_topic("out", TopicConfig())
        async with (
            GroupCoordinator(store) as groups,
            TransactionCoordinator(
                store, groups, ProducerIds(first_producer_id=1), clock=lambda: now[0]
            ) as tc,
        ):
            _, idle_pid, _ = await tc.init_producer_id("idle", 60_000)
            _, done_pid, epoch = await tc.init_producer_id("done", 60_000)
            _, open_pid, open_epoch = await tc.init_producer_id("open", 60_000)
            assert tc.describe("idle").started_ms == -1  # type: ignore[union-attr]
            now[0] = 2_000
            await tc.add_partitions("done", done_pid, epoch, [("out", 0)])
            now[0] = 2_500
            assert await tc.end_txn("done", done_pid, epoch, True) == E.NONE
            now[0] = 3_000
            await tc.add_partitions("open", open_pid, open_epoch, [("out", 0)])
            now[0] = 4_000

            def ids(**filters: object) -> list[str]:
                return [m.transactional_id for m in tc.list_transactions(**filters)]  # type: ignore[arg-type]

            assert ids() == ["done", "idle", "open"]
            assert ids(states={TxnState.ONGOING}) == ["open"]
            assert ids(states={TxnState.COMPLETE_COMMIT, TxnState.EMPTY}) == ["done", "idle"]
            assert ids(producer_ids={open_pid, idle_pid}) == ["idle", "open"]
            assert ids(producer_ids={10**9}) == []
            # Longer than: "done" began 2000 ms ago, "open" 1000 ms ago; "idle" began
            # none, which Kafka's comparison lets through every filter.
            assert ids(min_duration_ms=999) == ["done", "idle", "open"]
            assert ids(min_duration_ms=1_000) == ["done", "idle"]
            assert ids(min_duration_ms=2_000) == ["idle"]
            assert ids(min_duration_ms=-1) == ["done", "idle", "open"]
            assert ids(states={TxnState.ONGOING}, min_duration_ms=1_000) == []

            done = tc.describe("done")
            assert done is not None
            assert (done.state, done.started_ms, done.partitions) == (
                TxnState.COMPLETE_COMMIT,
                2_000,
                set(),
            )
            # A new producer of the id: no transaction since, as Kafka shows it.
            code, _, new_epoch = await tc.init_producer_id("done", 60_000)
            assert (code, new_epoch) == (E.NONE, epoch + 1)
            assert tc.describe("done").started_ms == -1  # type: ignore[union-attr]
        # The start of a finished transaction is kept across a restart too.
        async with (
            GroupCoordinator(store) as groups,
            TransactionCoordinator(
                store, groups, ProducerIds(first_producer_id=50), clock=lambda: now[0]
            ) as tc,
        ):
            assert tc.describe("open").started_ms == 3_000  # type: ignore[union-attr]
            assert tc.describe("done").started_ms == -1  # type: ignore[union-attr]
