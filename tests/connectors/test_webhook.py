"""The webhook sink against a scripted receiver on 127.0.0.1: retries (500s, timeouts, 429
with Retry-After, refused connections) until a 2xx with the same idempotency key and
body on every try, permanent refusals to the dead-letter topic, signatures, offsets
committed only after delivery."""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import anyio.abc
import orjson
import pytest

from headwater.connectors import (
    ConnectorConfigError,
    SinkRunner,
    StoreLog,
    WebhookConfig,
    WebhookSink,
)
from headwater.groups import GroupCoordinator, OffsetAndMetadata, TopicPartition
from headwater.store import NewRecord, Store, TopicConfig

from .helpers import records_of
from .scripted_server import Answer, Received, Script, ScriptedServer, scripted_server

GROUP = "hook"
FAST = {"backoff_s": 0.01, "max_backoff_s": 0.05}


async def produce(store: Store, values: list[bytes], partitions: int = 1) -> None:
    if not store.has_topic("t"):
        await store.create_topic("t", TopicConfig(partitions=partitions))
    for p in range(partitions):
        mine = values[p::partitions]
        if mine:
            await store.append("t", [NewRecord(v) for v in mine], partition=p)


@asynccontextmanager
async def webhook(store: Store, url: str, **options: Any) -> AsyncIterator[SinkRunner]:
    config = WebhookConfig(topic="t", url=url, **{**FAST, **options})
    async with GroupCoordinator(store) as groups, WebhookSink(StoreLog(store), config) as sink:
        yield SinkRunner(groups, "t", GROUP, sink)


async def run_once(
    store: Store, script: Script, **options: Any
) -> tuple[ScriptedServer, dict[TopicPartition, OffsetAndMetadata]]:
    """Serve ``script``; run a webhook sink to it until caught up; return what it got and
    the group's committed offsets."""
    async with scripted_server(script) as (server, url), webhook(store, url, **options) as runner:
        await runner.run(until_caught_up=True)
        return server, runner.groups.committed(GROUP)


def ok(n: int, request: Received) -> Answer:
    return Answer(200)


def delivered(requests: list[Received]) -> list[Any]:
    """The values of every request, flattened."""
    return [v for r in requests for v in orjson.loads(r.body)]


async def test_retries_500_timeout_429_until_200_with_one_key_and_body(store: Store) -> None:
    await produce(store, [orjson.dumps({"i": i}) for i in range(10)])

    def script(n: int, request: Received) -> Answer:
        return (
            [
                Answer(500),
                Answer(hang=True),  # the sink's timeout gives up on it
                Answer(429, {"Retry-After": "1"}),
                Answer(503),
            ][n]
            if n < 4
            else Answer(200)
        )

    server, committed = await run_once(store, script, timeout_s=0.2)
    tries = server.received
    assert len(tries) == 5
    assert {r.key for r in tries} == {"t-0-0"}
    assert {r.body for r in tries} == {tries[0].body}
    assert orjson.loads(tries[0].body) == [{"i": i} for i in range(10)]
    assert tries[0].headers["headwater-first-offset"] == "0"
    assert tries[0].headers["headwater-last-offset"] == "9"
    assert committed[TopicPartition("t", 0)].offset == 10
    assert committed[TopicPartition("t", 0)].metadata == ""


async def test_retry_after_is_honoured(store: Store) -> None:
    await produce(store, [b"1"])
    seen: list[float] = []

    def script(n: int, request: Received) -> Answer:
        seen.append(time.monotonic())
        return Answer(429, {"Retry-After": "1"}) if n == 0 else Answer(200)

    async with scripted_server(script) as (_, url), webhook(store, url) as runner:
        await runner.run(until_caught_up=True)
    # Backoff alone would wait at most 0.05 s; Retry-After asked for 1 s.
    assert seen[1] - seen[0] >= 1.0


async def test_a_receiver_that_is_down_is_retried_until_it_is_up(store: Store) -> None:
    await produce(store, [b"1", b"2"])
    # First a port that takes connections and drops them at once, three times.
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    dropped = 0
    three_dropped = anyio.Event()

    async def drop(stream: anyio.abc.SocketStream) -> None:
        nonlocal dropped
        await stream.aclose()
        dropped += 1
        if dropped == 3:
            three_dropped.set()

    async with webhook(store, f"http://127.0.0.1:{port}/hook") as runner:
        async with anyio.create_task_group() as tg:
            tg.start_soon(runner.run)
            async with anyio.create_task_group() as serving:
                serving.start_soon(listener.serve, drop)
                with anyio.fail_after(60):
                    await three_dropped.wait()
                serving.cancel_scope.cancel()
            await listener.aclose()
            runner.stop()
        [committed] = runner.groups.committed(GROUP).values()
    # Nothing was delivered, so nothing was committed past the batch being sent.
    assert (committed.offset, orjson.loads(committed.metadata)) == (0, {"batch": [0, 1]})
    server, _ = await run_once(store, ok)
    assert delivered(server.received) == [1, 2]
    assert server.received[0].key == "t-0-0"


async def test_permanent_refusals_go_to_the_dead_letter_topic(store: Store) -> None:
    await produce(store, [b'{"i":%d}' % i for i in range(6)])

    def script(n: int, request: Received) -> Answer:
        refuse = any(v["i"] == 2 for v in orjson.loads(request.body))
        return Answer(422, body=b'{"error":"i=2 is bad"}') if refuse else Answer(200)

    server, committed = await run_once(store, script, max_batch_records=2)
    assert [r.key for r in server.received] == ["t-0-0", "t-0-2", "t-0-4"]
    dead = await records_of(store, "t-dlq")
    assert [r.value for r in dead] == [b'{"i":2}', b'{"i":3}']
    headers = dict(dead[0].headers)
    assert headers["headwater.status"] == b"422"
    assert headers["headwater.offset"] == b"2"
    assert headers["headwater.error"].startswith(b'HTTP 422: {"error":"i=2 is bad"}')
    assert committed[TopicPartition("t", 0)].offset == 6


async def test_values_that_are_not_json_are_dead_lettered_and_the_rest_sent(
    store: Store,
) -> None:
    await produce(store, [b"1", b"oops", b"3"])
    server, _ = await run_once(store, ok)
    assert delivered(server.received) == [1, 3]
    assert [r.value for r in await records_of(store, "t-dlq")] == [b"oops"]


async def test_each_body_is_signed_with_the_secret(store: Store) -> None:
    await produce(store, [b'{"a":1}', b'{"b":2}'])
    server, _ = await run_once(store, ok, secret="s3cret", headers=(("X-Extra", "1"),))
    [request] = server.received
    expected = hmac.new(b"s3cret", request.body, hashlib.sha256).hexdigest()
    assert request.headers["headwater-signature"] == f"sha256={expected}"
    assert request.headers["x-extra"] == "1"
    assert request.headers["content-type"] == "application/json"


async def test_batches_split_by_count_and_bytes_per_partition(store: Store) -> None:
    await produce(store, [orjson.dumps({"i": i, "pad": "x" * 50}) for i in range(40)], 2)
    server, _ = await run_once(store, ok, max_batch_records=7, max_batch_bytes=400)
    sizes = [len(orjson.loads(r.body)) for r in server.received]
    assert max(sizes) <= 5  # 400 bytes hold 5 of these values
    assert sorted(v["i"] for v in delivered(server.received)) == list(range(40))
    for partition in (0, 1):
        keys = [
            r.key for r in server.received if r.headers["headwater-partition"] == str(partition)
        ]
        firsts = [int(k.rsplit("-", 1)[1]) for k in keys]
        assert firsts == sorted(firsts) and firsts[0] == 0


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"url": "ftp://x/y"}, "not an http"),
        ({"url": "http://"}, "not an http"),
        ({"url": "http://[::1"}, "not valid"),
        ({"max_batch_records": 0}, "max_batch_records"),
        ({"timeout_s": 0}, "timeout_s"),
    ],
)
def test_bad_settings_are_refused(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ConnectorConfigError, match=message):
        WebhookConfig(**{"topic": "t", "url": "http://127.0.0.1/h", **options})
