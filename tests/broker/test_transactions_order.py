"""EndTxn while the transaction's produce to a partition waits, over real sockets.

Under ``durability="always"`` a Produce handler waits for the partition's write lock
(held here by the test, as the append before it would hold it through its fsync) after
its batch passed every check, the transaction coordinator's included. An EndTxn that
arrives meanwhile on another connection decides the transaction and writes its marker
through the same lock, which hands itself over in arrival order: the batch goes in
first, and the marker ends a transaction that holds it. A batch of the transaction that
arrives after the EndTxn is refused with ``INVALID_TXN_STATE``.

That refusal is Kafka's too: the last test sends the same requests to ``headwater
broker`` and to Apache Kafka 4.1 and expects the same answers. (Kafka answers EndTxn
before it writes the markers, and until they are written it still takes a batch of the
transaction, before the marker; headwater refuses it from the decision on. Either way
no batch of a transaction lies after its marker.)
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio

from headwater.broker import ApiKey, KafkaErrorCode, serve_data_directory
from headwater.groups import GroupCoordinator
from headwater.store import (
    AbortedTransaction,
    Durability,
    IsolationLevel,
    NewRecord,
    TopicConfig,
    encode_transactional_batch,
    open_store,
    parse_batch_header,
)

from .running import AsyncConnection, Connection, produce_body
from .test_transactions import new_topic, read_all
from .test_transactions_log_start import list_offset, port_of, wait_for_high_watermark


def txn_produce(
    topic: str, pid: int, epoch: int, value: bytes, sequence: int, *, transactional_id: str = "tx"
) -> dict[str, Any]:
    batch = encode_transactional_batch(
        [NewRecord(value=value)], producer_id=pid, producer_epoch=epoch, base_sequence=sequence
    )
    body = produce_body(topic, [(0, bytes(batch))])
    body["transactional_id"] = transactional_id
    return body


def add_body(transactional_id: str, pid: int, epoch: int, topic: str) -> dict[str, Any]:
    """AddPartitionsToTxn (v3) of ``topic``'s partition 0."""
    return {
        "v3_and_below_transactional_id": transactional_id,
        "v3_and_below_producer_id": pid,
        "v3_and_below_producer_epoch": epoch,
        "v3_and_below_topics": [{"name": topic, "partitions": [0]}],
    }


def end_body(transactional_id: str, pid: int, epoch: int) -> dict[str, Any]:
    """EndTxn (v3) aborting the transaction."""
    return {
        "transactional_id": transactional_id,
        "producer_id": pid,
        "producer_epoch": epoch,
        "committed": False,
    }


async def wait_until(condition: Callable[[], bool]) -> None:
    """Wait until ``condition()`` holds (checked every millisecond; 60 s at most)."""
    with anyio.fail_after(60):
        while not condition():
            await anyio.sleep(0.001)


def produce_code(response: dict[str, Any]) -> int:
    return int(response["responses"][0]["partition_responses"][0]["error_code"])


async def test_end_txn_while_the_produce_waits_for_the_partition(tmp_path: Path) -> None:
    with anyio.fail_after(30):
        await run(tmp_path)


async def run(tmp_path: Path) -> None:
    async with open_store(tmp_path / "data") as store, GroupCoordinator(store) as groups:
        await store.create_topic("out", TopicConfig(durability=Durability.ALWAYS))
        partition = store.partition("out", 0)
        async with serve_data_directory(store, groups) as broker:
            port = broker.node.port
            async with (
                await AsyncConnection.open(port) as producer,
                await AsyncConnection.open(port) as coordinator,
            ):
                init = await coordinator.request(
                    ApiKey.INIT_PRODUCER_ID,
                    4,
                    {"transactional_id": "tx", "transaction_timeout_ms": 60_000},
                )
                assert init["error_code"] == 0, init
                pid, epoch = init["producer_id"], init["producer_epoch"]
                added = await coordinator.request(
                    ApiKey.ADD_PARTITIONS_TO_TXN, 3, add_body("tx", pid, epoch, "out")
                )
                [result] = added["results_by_topic_v3_and_below"][0]["results_by_partition"]
                assert result["partition_error_code"] == 0
                first = await producer.request(
                    ApiKey.PRODUCE, 9, txn_produce("out", pid, epoch, b"t0", 0)
                )
                assert produce_code(first) == 0

                lock = partition._lock()
                await lock.acquire()  # the append before them, still in its fsync
                try:
                    produce = await producer.send(
                        ApiKey.PRODUCE, 9, txn_produce("out", pid, epoch, b"t1", 1)
                    )
                    await wait_until(lambda: lock.statistics().tasks_waiting == 1)
                    end = await coordinator.send(ApiKey.END_TXN, 3, end_body("tx", pid, epoch))
                    # The decision is made durable, then the marker waits behind the batch.
                    await wait_until(lambda: lock.statistics().tasks_waiting == 2)
                    assert partition.log_end_offset == 1
                finally:
                    if lock.statistics().owner is not None:
                        lock.release()
                assert produce_code(await producer.receive(produce)) == 0
                assert (await coordinator.receive(end))["error_code"] == 0

                # A batch of the ended transaction is refused, as Kafka refuses it.
                late = await producer.request(
                    ApiKey.PRODUCE, 9, txn_produce("out", pid, epoch, b"t2", 2)
                )
                assert produce_code(late) == KafkaErrorCode.INVALID_TXN_STATE

        raw = await partition.read(0, 1 << 20)
        kinds = []
        position = 0
        while position < len(raw):
            header = parse_batch_header(raw, position)
            kinds.append((header.base_offset, header.is_control))
            position += header.size
        assert kinds == [(0, False), (1, False), (2, True)]
        assert partition.aborted_transactions(0, 3) == [AbortedTransaction(pid, 0, 2)]
        assert (
            await partition.read_records(0, 1 << 20, isolation=IsolationLevel.READ_COMMITTED) == []
        )


# -- a late batch, against headwater broker and Apache Kafka ---------------------------------


def until_ready(call: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Call until the coordinator has loaded (a fresh Kafka answers these meanwhile)."""
    retried = (
        KafkaErrorCode.COORDINATOR_LOAD_IN_PROGRESS,
        KafkaErrorCode.COORDINATOR_NOT_AVAILABLE,
        KafkaErrorCode.NOT_COORDINATOR,
    )
    deadline = time.monotonic() + 60
    while (body := call())["error_code"] in retried and time.monotonic() < deadline:
        time.sleep(0.1)
    return body


def test_a_batch_of_a_transaction_that_ended_is_refused(bootstrap: str) -> None:
    topic = new_topic(bootstrap, "tx-late")
    tid = f"tx-{uuid.uuid4().hex[:8]}"
    with Connection(port_of(bootstrap)) as conn:
        until_ready(lambda: conn.request(ApiKey.FIND_COORDINATOR, 3, {"key": tid, "key_type": 1}))
        init = until_ready(
            lambda: conn.request(
                ApiKey.INIT_PRODUCER_ID,
                4,
                {"transactional_id": tid, "transaction_timeout_ms": 60_000},
            )
        )
        assert init["error_code"] == 0, init
        pid, epoch = init["producer_id"], init["producer_epoch"]
        added = conn.request(ApiKey.ADD_PARTITIONS_TO_TXN, 3, add_body(tid, pid, epoch, topic))
        [result] = added["results_by_topic_v3_and_below"][0]["results_by_partition"]
        assert result["partition_error_code"] == 0
        first = txn_produce(topic, pid, epoch, b"t0", 0, transactional_id=tid)
        assert produce_code(conn.request(ApiKey.PRODUCE, 9, first)) == 0
        end = conn.request(ApiKey.END_TXN, 3, end_body(tid, pid, epoch))
        assert end["error_code"] == 0
        # Kafka answers EndTxn before it writes the markers: wait for the abort's.
        wait_for_high_watermark(bootstrap, topic, 2)
        late = txn_produce(topic, pid, epoch, b"t1", 1, transactional_id=tid)
        assert (
            produce_code(conn.request(ApiKey.PRODUCE, 9, late)) == KafkaErrorCode.INVALID_TXN_STATE
        )
    assert list_offset(bootstrap, topic, -1, 0) == 2
    assert read_all(bootstrap, topic, "read_committed") == []
    assert read_all(bootstrap, topic, "read_uncommitted") == [(0, b"t0")]
