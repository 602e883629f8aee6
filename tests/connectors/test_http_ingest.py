"""The HTTP ingest endpoint, served by hypercorn on 127.0.0.1 over a real store and driven
by a real HTTP client (httpx) and raw sockets: bodies, keys, durability, every error
status, the receive deadline, idempotency under concurrent retries."""

from __future__ import annotations

import contextlib
import errno
import importlib.util
import math
import socket
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from types import ModuleType
from typing import Any

import anyio
import httpx
import orjson
import pytest

from headwater.connectors import HttpIngest, IngestConfig, IngestLimits, StoreLog
from headwater.store import Store, TopicConfig, open_store, partition_for_key

from .helpers import HANG_S, records_of

NDJSON = {"content-type": "application/x-ndjson"}
JSON = {"content-type": "application/json"}


@asynccontextmanager
async def serving(store: Store, config: IngestConfig | None = None) -> AsyncIterator[str]:
    """Serve an endpoint over ``store`` for the duration of a block; yield its base URL."""
    ingest = HttpIngest(StoreLog(store), config)
    async with anyio.create_task_group() as tg:
        host, port = await tg.start(ingest.serve, "127.0.0.1", 0)
        yield f"http://{host}:{port}"
        tg.cancel_scope.cancel()


@asynccontextmanager
async def client(
    store: Store, config: IngestConfig | None = None
) -> AsyncIterator[httpx.AsyncClient]:
    async with (
        serving(store, config) as url,
        httpx.AsyncClient(base_url=url, timeout=HANG_S) as http,
    ):
        yield http


def error_of(response: httpx.Response) -> dict[str, Any]:
    assert response.headers["content-type"] == "application/json"
    error: dict[str, Any] = response.json()["error"]
    assert error["status"] == response.status_code
    return error


async def test_ndjson_json_arrays_and_single_records_are_appended(store: Store) -> None:
    await store.create_topic("t")
    async with client(store) as http:
        a = await http.post("/topics/t/records", content=b'{"a":1}\r\n\n{"a":2}\n', headers=NDJSON)
        b = await http.post("/topics/t/records", content=b'[{"b": 1}, [2], "three"]', headers=JSON)
        c = await http.post("/topics/t/records", content=b' {"c" : 1} ', headers=JSON)
    assert [r.status_code for r in (a, b, c)] == [200, 200, 200]
    assert a.json() == {"topic": "t", "count": 2, "offsets": [[0, 0], [0, 1]]}
    assert b.json()["offsets"] == [[0, 2], [0, 3], [0, 4]]
    assert c.json()["offsets"] == [[0, 5]]
    assert [r.value for r in await records_of(store, "t")] == [
        b'{"a":1}', b'{"a":2}', b'{"b":1}', b"[2]", b'"three"', b'{"c":1}',
    ]  # fmt: skip


async def test_the_answer_comes_once_the_records_are_durable(store: Store) -> None:
    await store.create_topic("t", TopicConfig(partitions=3))
    async with client(store) as http:
        for _ in range(5):
            response = await http.post("/topics/t/records", content=b"{}\n" * 50, headers=NDJSON)
            for partition, offset in response.json()["offsets"]:
                # The high watermark is the durable end: the record is below it already.
                assert store.partition("t", partition).high_watermark > offset


async def test_a_key_field_keys_records_as_a_java_producer_would_place_them(store: Store) -> None:
    await store.create_topic("t", TopicConfig(partitions=4))
    body = b"".join(orjson.dumps({"user": f"u{i % 5}", "i": i}) + b"\n" for i in range(40))
    async with client(store) as http:
        response = await http.post("/topics/t/records?key=user", content=body, headers=NDJSON)
        plain = await http.post("/topics/t/records", content=b'{"user":"x"}', headers=JSON)
    placed = response.json()["offsets"]
    for i, (partition, _) in enumerate(placed):
        assert partition == partition_for_key(f"u{i % 5}".encode(), 4)
    stored = {(r.offset, p): r for p in range(4) for r in await records_of_partition(store, p)}
    for i, (partition, offset) in enumerate(placed):
        assert stored[(offset, partition)].key == f"u{i % 5}".encode()
    [[partition, offset]] = plain.json()["offsets"]
    assert stored[(offset, partition)].key is None  # no ?key=: no key


async def records_of_partition(store: Store, partition: int) -> list[Any]:
    return await store.partition("t", partition).read_records(0, 1 << 24)


async def test_auto_create_makes_a_missing_topic(store: Store) -> None:
    async with client(store, IngestConfig(auto_create=True)) as http:
        response = await http.post("/topics/fresh/records", content=b"{}", headers=JSON)
    assert response.status_code == 200
    assert store.has_topic("fresh")


@pytest.mark.parametrize(
    ("path", "body", "headers", "status", "code"),
    [
        ("/topics/t/records", b"{oops", JSON, 400, "malformed_body"),
        ("/topics/t/records", b'{"a":1}\nnope\n', NDJSON, 400, "malformed_body"),
        ("/topics/t/records", b"[]", JSON, 400, "malformed_body"),
        ("/topics/t/records", b"\n \n", NDJSON, 400, "malformed_body"),
        ("/topics/t/records", b"[" * 70 + b"]" * 70, JSON, 400, "malformed_body"),
        ("/topics/t/records", b'{"a":' * 65 + b"1" + b"}" * 65, NDJSON, 400, "malformed_body"),
        ("/topics/t/records", b"\xff\xfe", JSON, 400, "malformed_body"),
        ("/topics/bad%20name/records", b"{}", JSON, 400, "invalid_topic"),
        ("/topics/__consumer_offsets/records", b"{}", JSON, 400, "invalid_topic"),
        ("/topics/missing/records", b"{}", JSON, 404, "unknown_topic"),
        ("/nowhere", b"{}", JSON, 404, "not_found"),
        ("/topics/t/records", b"{}", {"content-type": "text/plain"}, 415, "unsupported_media_type"),
        ("/topics/t/records", b"{}", {}, 415, "unsupported_media_type"),
        (
            "/topics/t/records",
            b"{}",
            {"content-type": "application/json; charset=latin-1"},
            415,
            "unsupported_media_type",
        ),
        (
            "/topics/t/records",
            b"{}",
            {**JSON, "idempotency-key": "k" * 256},
            400,
            "bad_idempotency_key",
        ),
    ],
)
async def test_bad_requests_get_a_json_error(
    store: Store, *, path: str, body: bytes, headers: dict[str, str], status: int, code: str
) -> None:
    await store.create_topic("t")
    async with client(store) as http:
        response = await http.post(path, content=body, headers=headers)
    assert response.status_code == status, response.text
    assert error_of(response)["code"] == code
    assert await records_of(store, "t") == []


async def test_wrong_method_is_405(store: Store) -> None:
    async with client(store) as http:
        response = await http.get("/topics/t/records")
    assert response.status_code == 405
    assert error_of(response)["code"] == "method_not_allowed"


async def test_bearer_tokens_are_required_when_configured(store: Store) -> None:
    await store.create_topic("t")
    config = IngestConfig(tokens=("first-token", "second-token"))
    async with client(store, config) as http:
        missing = await http.post("/topics/t/records", content=b"{}", headers=JSON)
        wrong = await http.post(
            "/topics/t/records", content=b"{}", headers={**JSON, "authorization": "Bearer nope"}
        )
        scheme = await http.post(
            "/topics/t/records",
            content=b"{}",
            headers={**JSON, "authorization": "Basic second-token"},
        )
        # Refused before the topic is looked at: no probing for topic names.
        unknown = await http.post("/topics/zzz/records", content=b"{}", headers=JSON)
        good = await http.post(
            "/topics/t/records",
            content=b"{}",
            headers={**JSON, "authorization": "Bearer second-token"},
        )
    for response in (missing, wrong, scheme, unknown):
        assert response.status_code == 401
        assert error_of(response)["code"] == "unauthorized"
        assert response.headers["www-authenticate"].startswith("Bearer")
    assert good.status_code == 200
    assert len(await records_of(store, "t")) == 1


async def test_bodies_over_the_limit_are_413_declared_or_streamed(store: Store) -> None:
    await store.create_topic("t")
    config = IngestConfig(limits=IngestLimits(max_body_bytes=1000))
    body = b"{}\n" * 400

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: chunked encoding
        for start in range(0, len(body), 100):
            yield body[start : start + 100]

    async with client(store, config) as http:
        declared = await http.post("/topics/t/records", content=body, headers=NDJSON)
        streamed = await http.post("/topics/t/records", content=chunks(), headers=NDJSON)
        fits = await http.post("/topics/t/records", content=body[:999], headers=NDJSON)
    assert declared.status_code == streamed.status_code == 413
    assert error_of(streamed)["code"] == "body_too_large"
    assert fits.status_code == 200
    assert len(await records_of(store, "t")) == 333


async def test_a_record_too_large_for_the_topic_is_413(store: Store) -> None:
    await store.create_topic("t", TopicConfig(max_message_bytes=2048))
    async with client(store) as http:
        response = await http.post(
            "/topics/t/records", content=orjson.dumps({"pad": "x" * 5000}), headers=JSON
        )
        many = await http.post("/topics/t/records", content=b'{"a":1}\n' * 1000, headers=NDJSON)
    assert response.status_code == 413
    assert error_of(response)["code"] == "record_too_large"
    assert many.status_code == 200  # split into batches that fit
    assert len(await records_of(store, "t")) == 1000


async def test_a_full_disk_is_503_with_retry_after_and_loses_nothing(data: Path) -> None:
    faultfs = load_faultfs()
    data.mkdir()
    fs = faultfs.FaultFS(data)
    async with open_store(data, fs=fs, maintenance_interval_s=math.inf) as store:
        await store.create_topic("t")
        async with client(store) as http:
            fs.inject(faultfs.Fault("write", errno.ENOSPC, path_suffix=".log", times=-1))
            full = await http.post("/topics/t/records", content=b"{}", headers=JSON)
            fs.faults.clear()
            recovered = await http.post("/topics/t/records", content=b"{}", headers=JSON)
        assert [r.value for r in await records_of(store, "t")] == [b"{}"]
    assert full.status_code == 503, full.text
    assert error_of(full)["code"] == "unavailable"
    assert full.headers["retry-after"] == "1"
    assert recovered.status_code == 200


async def test_a_failed_fsync_across_partitions_is_503(data: Path) -> None:
    """Records keyed to two partitions wait for both fsyncs; both fail: one 503 names it."""
    faultfs = load_faultfs()
    data.mkdir()
    fs = faultfs.FaultFS(data)
    body = b'{"k":"a"}\n{"k":"b"}\n{"k":"c"}\n{"k":"d"}\n'
    async with open_store(data, fs=fs, maintenance_interval_s=math.inf) as store:
        await store.create_topic("t", TopicConfig(partitions=2))
        async with client(store) as http:
            fs.inject(faultfs.Fault("fsync", errno.EIO, path_suffix=".log", times=-1))
            failed = await http.post("/topics/t/records?key=k", content=body, headers=NDJSON)
            fs.faults.clear()
    assert failed.status_code == 503, failed.text
    assert error_of(failed)["code"] == "unavailable"
    assert "fsync" in error_of(failed)["message"]


def load_faultfs() -> ModuleType:
    """Import the store tests' FaultFS (tests/store is not a package)."""
    if "faultfs" in sys.modules:
        return sys.modules["faultfs"]
    path = Path(__file__).parents[1] / "store" / "faultfs.py"
    spec = importlib.util.spec_from_file_location("faultfs", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["faultfs"] = module
    spec.loader.exec_module(module)
    return module


def raw_connection(url: str) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)))


async def read_until_closed(sock: socket.socket) -> bytes:
    def read() -> bytes:
        out = b""
        while chunk := sock.recv(65536):
            out += chunk
        return out

    return await anyio.to_thread.run_sync(read)


async def test_too_many_requests_at_once_are_429(store: Store) -> None:
    await store.create_topic("t")
    config = IngestConfig(limits=IngestLimits(max_inflight=1))
    async with (
        serving(store, config) as url,
        httpx.AsyncClient(base_url=url, timeout=HANG_S) as http,
    ):
        # One request holds the only place: its body is still on its way.
        with raw_connection(url) as slow:
            slow.sendall(
                b"POST /topics/t/records HTTP/1.1\r\nHost: x\r\n"
                b"Content-Type: application/json\r\nContent-Length: 2\r\n\r\n{"
            )
            busy = await wait_for_status(http, 429)
            slow.sendall(b"}")
            answer = await anyio.to_thread.run_sync(slow.recv, 65536)
        after = await http.post("/topics/t/records", content=b"{}", headers=JSON)
    assert error_of(busy)["code"] == "too_many_requests"
    assert busy.headers["retry-after"] == "1"
    assert answer.startswith(b"HTTP/1.1 200")
    assert after.status_code == 200


async def wait_for_status(http: httpx.AsyncClient, status: int) -> httpx.Response:
    """Post until the answer has ``status`` (the slow request's headers must arrive first)."""
    with anyio.fail_after(60):
        while True:
            response = await http.post("/topics/t/records", content=b"{}", headers=JSON)
            if response.status_code == status:
                return response
            assert response.status_code == 200
            await anyio.sleep(0.01)


async def test_a_trickled_request_head_is_cut_off_at_the_deadline(store: Store) -> None:
    config = IngestConfig(limits=IngestLimits(receive_deadline_s=0.5))
    head = b"POST /topics/t/records HTTP/1.1\r\nHost: x\r\n" + b"X-Pad: " + b"a" * 5000
    async with serving(store, config) as url:
        with raw_connection(url) as sock:
            sent = 0
            with anyio.fail_after(60):
                while sent < len(head):
                    try:
                        sock.sendall(head[sent : sent + 1])
                    except OSError:  # the server closed the connection
                        break
                    sent += 1
                    if await anyio.to_thread.run_sync(_closed, sock):
                        break
                    await anyio.sleep(0.005)  # the client's pace, not a wait for the server
    # One byte every 5 ms would take 25 s; the deadline is 0.5 s.
    assert sent < len(head)


def _closed(sock: socket.socket) -> bool:
    sock.setblocking(False)
    try:
        return sock.recv(1, socket.MSG_PEEK) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True
    finally:
        sock.setblocking(True)


async def test_a_trickled_body_gets_408(store: Store) -> None:
    await store.create_topic("t")
    config = IngestConfig(limits=IngestLimits(receive_deadline_s=0.5))
    async with serving(store, config) as url:
        with raw_connection(url) as sock:
            sock.sendall(
                b"POST /topics/t/records HTTP/1.1\r\nHost: x\r\n"
                b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{"
            )
            answer = await read_until_closed_or_answer(sock)
    assert answer.startswith(b"HTTP/1.1 408")
    assert b'"request_timeout"' in answer
    assert await records_of(store, "t") == []


async def test_a_whole_request_must_arrive_within_the_deadline(store: Store) -> None:
    # The head's share is 1.5 s and the body's 1.5 s: a head that takes 1.2 s leaves the
    # body 1.5 s, not a fresh 3 s, so the request ends within 3 s of the connection.
    await store.create_topic("t")
    config = IngestConfig(limits=IngestLimits(receive_deadline_s=3.0))
    head = (
        b"POST /topics/t/records HTTP/1.1\r\nHost: x\r\n"
        b"Content-Type: application/json\r\nContent-Length: 100\r\n"
    )
    async with serving(store, config) as url:
        with raw_connection(url) as sock:
            started = time.monotonic()
            sent = 0
            while time.monotonic() - started < 1.2:
                sock.sendall(head[sent : sent + 1])
                sent += 1
                await anyio.sleep(0.02)  # the client's pace, not a wait for the server
            with contextlib.suppress(OSError):  # the server may have closed it already
                sock.sendall(head[sent:] + b"\r\n{")
            answer = await read_until_closed_or_answer(sock)
            elapsed = time.monotonic() - started
    assert answer == b"" or answer.startswith(b"HTTP/1.1 408")
    assert elapsed < 3.6, f"the request held its connection for {elapsed:.2f} s"
    assert await records_of(store, "t") == []


async def read_until_closed_or_answer(sock: socket.socket) -> bytes:
    def read() -> bytes:
        out = b""
        while b"\r\n\r\n" not in out or not out.rstrip().endswith(b"}"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            out += chunk
        return out

    with anyio.fail_after(60):
        return await anyio.to_thread.run_sync(read)


async def test_an_idempotency_key_appends_once_under_concurrent_retries(store: Store) -> None:
    await store.create_topic("t", TopicConfig(partitions=2))
    body = b"".join(orjson.dumps({"i": i}) + b"\n" for i in range(100))
    answers: list[httpx.Response] = []
    async with client(store) as http:

        async def post() -> None:
            headers = {**NDJSON, "idempotency-key": "order-17"}
            answers.append(await http.post("/topics/t/records", content=body, headers=headers))

        async with anyio.create_task_group() as tg:
            for _ in range(20):
                tg.start_soon(post)
        later = await http.post(
            "/topics/t/records", content=body, headers={**NDJSON, "idempotency-key": "order-17"}
        )
        conflict = await http.post(
            "/topics/t/records", content=b"{}", headers={**JSON, "idempotency-key": "order-17"}
        )
        other_topic = await http.post(
            "/topics/missing/records", content=body, headers={**NDJSON, "idempotency-key": "x"}
        )
    assert {a.status_code for a in answers} == {200}
    assert len({a.content for a in answers}) == 1
    assert later.content == answers[0].content
    assert later.headers["idempotent-replayed"] == "true"
    assert sum(a.headers.get("idempotent-replayed") == "true" for a in answers) == 19
    assert conflict.status_code == 422
    assert error_of(conflict)["code"] == "idempotency_key_reused"
    assert other_topic.status_code == 404
    assert len(await records_of(store, "t")) == 100


async def test_a_failed_append_releases_its_idempotency_key(store: Store) -> None:
    config = IngestConfig(limits=IngestLimits(max_depth=2))
    headers = {**JSON, "idempotency-key": "k"}
    await store.create_topic("t")
    async with client(store, config) as http:
        refused = await http.post("/topics/t/records", content=b"[[[[1]]]]", headers=headers)
        accepted = await http.post("/topics/t/records", content=b"[[1]]", headers=headers)
    assert refused.status_code == 400
    assert accepted.status_code == 200


async def test_a_record_nested_past_what_json_encodes_is_refused_and_the_endpoint_serves_on(
    store: Store,
) -> None:
    # 300 levels: orjson reads it, but no record of a JSON body that deep can be stored.
    await store.create_topic("t")
    deep = b'{"a":' * 300 + b"1" + b"}" * 300
    async with client(store) as http:
        alone = await http.post("/topics/t/records", content=deep, headers=JSON)
        in_array = await http.post("/topics/t/records", content=b"[1," + deep + b"]", headers=JSON)
        after = await http.post("/topics/t/records", content=b"[1,2]", headers=JSON)
    assert alone.status_code == in_array.status_code == 400
    assert error_of(alone)["code"] == error_of(in_array)["code"] == "malformed_body"
    assert "the record is nested deeper than 64 levels" in error_of(alone)["message"]
    assert "record 2 is nested deeper than 64 levels" in error_of(in_array)["message"]
    assert after.status_code == 200
    assert [r.value for r in await records_of(store, "t")] == [b"1", b"2"]


async def test_health_and_openapi(store: Store) -> None:
    async with client(store, IngestConfig(tokens=("t0ken",))) as http:
        health = await http.get("/healthz")
        document = (await http.get("/openapi.json")).json()
    assert health.json() == {"status": "ok"}
    assert document["openapi"].startswith("3.")
    operation = document["paths"]["/topics/{topic}/records"]["post"]
    assert set(operation["responses"]) >= {"200", "400", "401", "404", "408", "413", "415", "429"}
    assert operation["security"] == [{"bearer": []}]
