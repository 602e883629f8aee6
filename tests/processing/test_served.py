"""An embedded app serves its data directory while it runs (processing/_backends/in_process.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import anyio
import anyio.to_thread
import orjson
from confluent_kafka import Consumer, Producer, TopicPartition

from headwater.cli._watch import LockWatcher
from headwater.processing import App
from headwater.store import ADDRESS_FILE, NewRecord, ServedAddress, open_store, served_address


async def until_served(data: Path) -> ServedAddress:
    """Wait (on inotify, never a timer) until the directory's owner announces its address."""
    with LockWatcher(data, ".lock", ADDRESS_FILE) as watcher:
        while (address := served_address(data)) is None:
            await watcher.wait()
    return address


def produce(bootstrap: str, topic: str, values: list[dict[str, int]]) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all"})
    for value in values:
        producer.produce(topic, orjson.dumps(value))
    assert producer.flush(30) == 0


def read(bootstrap: str, topic: str, count: int) -> list[object]:
    """Read ``count`` records of partition 0 of ``topic`` through the app's broker."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "reader"})
    consumer.assign([TopicPartition(topic, 0, 0)])
    values: list[object] = []
    try:
        for _ in range(300):  # polls of 0.1 s, each returning as soon as records are there
            message = consumer.poll(0.1)
            if message is not None and message.error() is None:
                values.append(orjson.loads(message.value() or b""))
                if len(values) == count:
                    break
    finally:
        consumer.close()
    return values


async def test_a_running_app_serves_its_data_directory(data: Path) -> None:
    async with open_store(data) as store:
        await store.create_topic("in")
    app = App("served", data_dir=data)
    app.stream("in").map(lambda e: {**e, "seen": True}).to("out", partitions=1)
    stop = anyio.Event()
    async with anyio.create_task_group() as tg:
        tg.start_soon(lambda: app.run_async(stop=stop))
        address = await until_served(data)
        # Records from a Kafka client in another thread go in, the app's output comes out.
        await anyio.to_thread.run_sync(produce, address.bootstrap, "in", [{"n": 1}, {"n": 2}])
        got = await anyio.to_thread.run_sync(read, address.bootstrap, "out", 2)
        assert got == [{"n": 1, "seen": True}, {"n": 2, "seen": True}]
        stop.set()
    assert not (data / ADDRESS_FILE).exists()
    statistics = app.statistics()
    assert statistics is not None and statistics.records_in == 2


UNVISITED = """
import sys

from headwater.processing import App
from headwater.store import served_address

data = sys.argv[1]
seen = []
app = App("unvisited", data_dir=data)
app.stream("in").map(lambda e: seen.append(served_address(data)) or e).to("out")
app.run(until_caught_up=True)
print(seen[0] is not None and seen[0].pid > 0, "headwater.broker" in sys.modules)
"""


async def test_an_app_nobody_visits_never_loads_the_broker(data: Path) -> None:
    async with open_store(data) as store:
        await store.create_topic("in")
        await store.append("in", [NewRecord(b"{}")])
    result = await anyio.run_process([sys.executable, "-c", UNVISITED, str(data)])
    # Announced while it ran, yet the broker was never imported: nobody came.
    assert result.stdout.decode().split() == ["True", "False"]
