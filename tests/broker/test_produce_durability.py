"""Produce requests over real sockets under each durability, the broker in this process.

A request to several partitions at durability ``always`` appends them side by side, each
under its own partition's lock and with its own fsync: one partition whose lock is taken
(as by the append before it, still in its fsync) does not hold the others back.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio

from headwater.broker import ApiKey, serve_data_directory
from headwater.groups import GroupCoordinator
from headwater.store import Durability, NewRecord, TopicConfig, encode_batch, open_store

from .running import AsyncConnection
from .test_transactions_order import wait_until


def batch(value: bytes) -> bytes:
    return bytes(encode_batch([NewRecord(value=value)]))


def produce(batches: list[tuple[str, int, bytes]]) -> dict[str, Any]:
    """A Produce body with one entry per (topic, partition, batch), in that order."""
    return {
        "transactional_id": None,
        "acks": -1,
        "timeout_ms": 10_000,
        "topic_data": [
            {"name": topic, "partition_data": [{"index": index, "records": records}]}
            for topic, index, records in batches
        ],
    }


def outcomes(response: dict[str, Any]) -> list[tuple[str, int, int, int]]:
    return [
        (topic["name"], p["index"], p["error_code"], p["base_offset"])
        for topic in response["responses"]
        for p in topic["partition_responses"]
    ]


async def test_always_partitions_of_one_request_do_not_wait_for_each_other(
    tmp_path: Path,
) -> None:
    with anyio.fail_after(30):
        async with open_store(tmp_path / "data") as store, GroupCoordinator(store) as groups:
            config = TopicConfig(partitions=2, durability=Durability.ALWAYS)
            await store.create_topic("a", config)
            first, second = store.partition("a", 0), store.partition("a", 1)
            async with (
                serve_data_directory(store, groups) as broker,
                await AsyncConnection.open(broker.node.port) as conn,
            ):
                lock = first._lock()
                await lock.acquire()  # the append before, still in its fsync
                try:
                    sent = await conn.send(
                        ApiKey.PRODUCE,
                        9,
                        produce([("a", 0, batch(b"x")), ("a", 1, batch(b"y"))]),
                    )
                    # Partition 1 is written and durable while partition 0 waits.
                    await wait_until(lambda: second.high_watermark == 1)
                    assert first.log_end_offset == 0
                finally:
                    lock.release()
                answer = await conn.receive(sent)
            assert outcomes(answer) == [("a", 0, 0, 0), ("a", 1, 0, 0)]
            assert first.high_watermark == second.high_watermark == 1


async def test_a_request_across_durabilities_is_answered_in_its_order(tmp_path: Path) -> None:
    with anyio.fail_after(30):
        async with open_store(tmp_path / "data") as store, GroupCoordinator(store) as groups:
            await store.create_topic("a", TopicConfig(partitions=2, durability=Durability.ALWAYS))
            await store.create_topic("b", TopicConfig(durability=Durability.BATCH))
            await store.create_topic("n", TopicConfig(durability=Durability.NEVER))
            async with (
                serve_data_directory(store, groups) as broker,
                await AsyncConnection.open(broker.node.port) as conn,
            ):
                for round_ in range(3):
                    body = produce(
                        [
                            ("a", 1, batch(b"a1")),
                            ("b", 0, batch(b"b0")),
                            ("n", 0, batch(b"n0")),
                            ("a", 0, batch(b"a0")),
                            ("missing", 0, batch(b"m")),
                        ]
                    )
                    answer = await conn.request(ApiKey.PRODUCE, 9, body)
                    assert outcomes(answer) == [
                        ("a", 1, 0, round_),
                        ("b", 0, 0, round_),
                        ("n", 0, 0, round_),
                        ("a", 0, 0, round_),
                        ("missing", 0, 3, -1),  # UNKNOWN_TOPIC_OR_PARTITION
                    ]
            for topic, index in (("a", 0), ("a", 1), ("b", 0), ("n", 0)):
                assert store.partition(topic, index).high_watermark == 3
