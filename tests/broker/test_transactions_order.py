"""EndTxn while the transaction's produce to a partition waits, over real sockets.

Under ``durability="always"`` a Produce handler waits for the partition's write lock
(held here by the test, as the append before it would hold it through its fsync) after
its batch passed every check, the transaction coordinator's included. An EndTxn that
arrives meanwhile on another connection decides the transaction and writes its marker
through the same lock, which hands itself over in arrival order: the batch goes in
first, and the marker ends a transaction that holds it. A batch of the transaction that
arrives after the EndTxn is refused with ``INVALID_TXN_STATE``, Kafka's answer.
"""

from __future__ import annotations

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

from .running import AsyncConnection, produce_body


def txn_produce(topic: str, pid: int, epoch: int, value: bytes, sequence: int) -> dict[str, Any]:
    batch = encode_transactional_batch(
        [NewRecord(value=value)], producer_id=pid, producer_epoch=epoch, base_sequence=sequence
    )
    body = produce_body(topic, [(0, bytes(batch))])
    body["transactional_id"] = "tx"
    return body


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
                    ApiKey.ADD_PARTITIONS_TO_TXN,
                    3,
                    {
                        "v3_and_below_transactional_id": "tx",
                        "v3_and_below_producer_id": pid,
                        "v3_and_below_producer_epoch": epoch,
                        "v3_and_below_topics": [{"name": "out", "partitions": [0]}],
                    },
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
                    end = await coordinator.send(
                        ApiKey.END_TXN,
                        3,
                        {
                            "transactional_id": "tx",
                            "producer_id": pid,
                            "producer_epoch": epoch,
                            "committed": False,
                        },
                    )
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
