"""A write that wakes waiting fetches lets them answer before it is acknowledged: the
consumers' end-to-end latency does not wait for the producer's response to be sent.

The broker runs in this process (the test waits on its count of waiting fetches); the
clients run in a child process, on blocking sockets, so that nothing in the broker's
process delays them. The child looks at the consumer's socket the moment the write is
acknowledged: a send on the loopback interface puts the bytes in the peer's receive
buffer before it returns, so the fetch's response is there if, and only if, the broker
sent it first.
"""

from __future__ import annotations

import multiprocessing
import select
from multiprocessing.connection import Connection as Pipe
from pathlib import Path

import anyio
import anyio.to_thread

from headwater.broker import ApiKey, serve_data_directory
from headwater.groups import GroupCoordinator
from headwater.store import NewRecord, TopicConfig, encode_batch, open_store

from .running import Connection, fetch_body, produce_body
from .test_transactions_order import wait_until

ROUNDS = 20


def clients(port: int, pipe: Pipe) -> None:
    """In the child: each round, a fetch that waits, then a write; report whether the
    fetch's response had arrived when the write's did."""
    with Connection(port) as consumer, Connection(port) as producer:
        for round_ in range(ROUNDS):
            fetch = consumer.send(
                ApiKey.FETCH, 12, fetch_body("t", {0: round_}, max_wait_ms=30_000)
            )
            pipe.send("fetching")
            pipe.recv()  # the broker holds the fetch
            records = bytes(encode_batch([NewRecord(value=b"%d" % round_)]))
            producer.request(ApiKey.PRODUCE, 9, produce_body("t", [(0, records)]))
            readable, _, _ = select.select([consumer.sock], [], [], 0)
            answer = consumer.receive(fetch)
            got = bool(answer["responses"][0]["partitions"][0]["records"])
            pipe.send((bool(readable), got))


async def test_the_fetches_a_write_wakes_answer_before_the_write(tmp_path: Path) -> None:
    context = multiprocessing.get_context("spawn")
    with anyio.fail_after(120):
        async with open_store(tmp_path / "data") as store, GroupCoordinator(store) as groups:
            await store.create_topic("t", TopicConfig(partitions=1))
            async with serve_data_directory(store, groups) as broker:
                ours, theirs = context.Pipe()
                child = context.Process(target=clients, args=(broker.node.port, theirs))
                child.start()
                try:
                    for round_ in range(ROUNDS):
                        assert await anyio.to_thread.run_sync(ours.recv) == "fetching"
                        await wait_until(lambda: broker.statistics().fetches_waiting == 1)
                        ours.send("go")
                        fetched_first, got = await anyio.to_thread.run_sync(ours.recv)
                        assert got, f"round {round_}: the fetch came back empty"
                        assert fetched_first, f"round {round_}: the write was answered first"
                finally:
                    await anyio.to_thread.run_sync(child.join, 5)  # done, or failed: waiting
                    if child.is_alive():
                        child.kill()
