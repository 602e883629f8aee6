"""broker/_serving.py: the owner of a data directory serves it, to real Kafka clients."""

from __future__ import annotations

import logging
import os
import socket
from pathlib import Path

import anyio
import anyio.to_thread
import pytest
from confluent_kafka import Consumer, KafkaError, Producer

from headwater.broker import BrokerConfig, serve_data_directory
from headwater.groups import GroupCoordinator, TopicPartition
from headwater.store import ADDRESS_FILE, ServedAddress, open_store, served_address


def produce(
    bootstrap: str, topic: str, values: list[bytes], timeout_ms: int = 30_000
) -> list[KafkaError | None]:
    """Produce ``values`` with confluent-kafka (blocking); return each delivery's error."""
    errors: list[KafkaError | None] = []
    producer = Producer(
        {"bootstrap.servers": bootstrap, "acks": "all", "message.timeout.ms": timeout_ms}
    )
    for value in values:
        producer.produce(topic, value, on_delivery=lambda err, _msg: errors.append(err))
    producer.flush(30)
    return errors


def consume_as_group(bootstrap: str, topic: str, group: str, count: int) -> list[bytes]:
    """Join ``group``, read ``count`` records of ``topic``, commit them and leave."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([topic])
    values: list[bytes] = []
    try:
        for _ in range(300):  # polls of 0.1 s: up to 30 s to join and fetch
            message = consumer.poll(0.1)
            if message is None or message.error() is not None:
                continue
            value = message.value()
            assert value is not None
            values.append(value)
            if len(values) == count:
                consumer.commit(asynchronous=False)
                break
    finally:
        consumer.close()
    return values


async def test_the_address_is_announced_before_the_broker_says_it_listens(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Whoever waits for "listening on" (a script, a supervisor) then finds the owner."""
    announced_when_listening: list[bool] = []

    class Witness(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if "listening on" in record.getMessage():
                announced_when_listening.append(served_address(tmp_path) is not None)

    witness = Witness()
    logging.getLogger("headwater.broker").addHandler(witness)
    caplog.set_level(logging.INFO, logger="headwater.broker")
    try:
        async with (
            open_store(tmp_path) as store,
            GroupCoordinator(store) as coordinator,
            serve_data_directory(store, coordinator),
        ):
            pass
    finally:
        logging.getLogger("headwater.broker").removeHandler(witness)
    assert announced_when_listening == [True]
    assert served_address(tmp_path) is None  # withdrawn at the end of the block


async def test_clients_use_the_owners_store_and_groups(tmp_path: Path) -> None:
    async with open_store(tmp_path) as store, GroupCoordinator(store) as coordinator:
        await store.create_topic("t")
        async with serve_data_directory(store, coordinator) as broker:
            bootstrap = f"127.0.0.1:{broker.node.port}"
            assert served_address(tmp_path) == ServedAddress(os.getpid(), bootstrap)
            values = [b"a", b"b", b"c"]
            errors = await anyio.to_thread.run_sync(produce, bootstrap, "t", values)
            assert errors == [None, None, None]
            # Appended to this process's store.
            records = await store.partition("t", 0).read_records(0, 1 << 20)
            assert [r.value for r in records] == values
            got = await anyio.to_thread.run_sync(consume_as_group, bootstrap, "t", "g", 3)
            assert got == values
            # Committed through the owner's own coordinator.
            assert coordinator.committed("g")[TopicPartition("t", 0)].offset == 3
            # A data directory's topics are made on purpose, never by a metadata request.
            errors = await anyio.to_thread.run_sync(produce, bootstrap, "missing", [b"x"], 1000)
            assert len(errors) == 1 and errors[0] is not None
            assert not store.has_topic("missing")
        assert not (tmp_path / ADDRESS_FILE).exists()
        assert served_address(tmp_path) is None


async def test_the_blocks_own_error_comes_out_as_it_is(tmp_path: Path) -> None:
    async with open_store(tmp_path) as store, GroupCoordinator(store) as coordinator:
        with pytest.raises(ValueError, match="the block's") as raised:
            async with serve_data_directory(store, coordinator):
                assert served_address(tmp_path) is not None
                raise ValueError("the block's")
        assert type(raised.value) is ValueError
        assert served_address(tmp_path) is None


async def test_an_address_in_use_fails_and_announces_nothing(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = BrokerConfig(host="127.0.0.1", port=port)
        async with open_store(tmp_path) as store, GroupCoordinator(store) as coordinator:
            with pytest.raises(OSError):
                async with serve_data_directory(store, coordinator, config):
                    pytest.fail("served on a taken port")
            assert not (tmp_path / ADDRESS_FILE).exists()
