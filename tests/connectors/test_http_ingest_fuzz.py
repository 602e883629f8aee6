"""Generated requests against a running ingest endpoint (hypothesis): whatever the body,
content type, topic, key field and headers, the answer is never a 5xx; it is one of the
documented statuses with a JSON error body; and what a 200 says was stored is exactly
what the body held."""

from __future__ import annotations

import math
import queue
import tempfile
import threading
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import httpx
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from headwater.connectors import HttpIngest, IngestConfig, IngestLimits, StoreLog
from headwater.store import Store, TopicConfig, open_store

from .helpers import HANG_S

DOCUMENTED = {200, 400, 401, 404, 405, 408, 413, 415, 422, 429}
LIMITS = IngestLimits(max_body_bytes=4096, max_depth=6)

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=30,
)


def nested(depth: int) -> bytes:
    return b'{"a":' * depth + b"1" + b"}" * depth


bodies = st.one_of(
    st.binary(max_size=600),
    json_values.map(orjson.dumps),
    st.lists(json_values, max_size=20).map(orjson.dumps),
    st.lists(st.one_of(json_values.map(orjson.dumps), st.binary(max_size=40)), max_size=20).map(
        b"\n".join
    ),
    st.integers(0, 12).map(nested),
    st.integers(1, 3000).map(lambda n: b"{}\n" * n),
)
content_types = st.sampled_from(
    [
        None,
        "application/json",
        "application/x-ndjson",
        "application/jsonl",
        "application/json; charset=utf-8",
        "application/json; charset=latin-1",
        "text/plain",
        "multipart/form-data",
        "APPLICATION/JSON",
    ]
)
topics = st.one_of(st.sampled_from(["t", "missing", "__consumer_offsets"]), st.text(max_size=30))
header_text = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=300).map(
    str.strip
)


@pytest.fixture(scope="module")
def endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """An endpoint served from a thread of its own (its own event loop and store), so
    that every generated request of the module goes to one running server."""
    data = tmp_path_factory.mktemp("fuzz") / "data"
    address: queue.Queue[str] = queue.Queue()
    stop = threading.Event()

    async def serve() -> None:
        async with open_store(data, maintenance_interval_s=math.inf) as store:
            await store.create_topic("t", TopicConfig(partitions=2, max_message_bytes=2048))
            ingest = HttpIngest(StoreLog(store), IngestConfig(limits=LIMITS))
            async with anyio.create_task_group() as tg:
                host, port = await tg.start(ingest.serve, "127.0.0.1", 0)
                address.put(f"http://{host}:{port}")
                await anyio.to_thread.run_sync(stop.wait)
                tg.cancel_scope.cancel()

    thread = threading.Thread(target=anyio.run, args=(serve,), kwargs={"backend": "trio"})
    thread.start()
    try:
        yield address.get(timeout=60)
    finally:
        stop.set()
        thread.join()


@pytest.fixture(scope="module")
def http(endpoint: str) -> Iterator[httpx.Client]:
    """A client that opens a connection per request. The endpoint closes a connection
    left idle for its receive deadline, and on a busy machine the gap between two
    generated requests can reach it: a request sent on a connection as the server closes
    it gets no answer at all, which says nothing about the endpoint's answers."""
    limits = httpx.Limits(max_keepalive_connections=0)
    with httpx.Client(base_url=endpoint, timeout=HANG_S, limits=limits) as client:
        yield client


@settings(
    max_examples=300, suppress_health_check=[HealthCheck.function_scoped_fixture], deadline=None
)
@given(
    body=bodies,
    content_type=content_types,
    topic=topics,
    key=st.none() | st.text(max_size=10),
    idempotency_key=st.none() | header_text,
    method=st.sampled_from(["POST", "POST", "POST", "PUT", "GET"]),
)
def test_no_request_gets_a_5xx(
    http: httpx.Client,
    *,
    body: bytes,
    content_type: str | None,
    topic: str,
    key: str | None,
    idempotency_key: str | None,
    method: str,
) -> None:
    headers = {}
    if content_type is not None:
        headers["content-type"] = content_type
    if idempotency_key is not None:
        headers["idempotency-key"] = idempotency_key
    path = f"/topics/{urllib.parse.quote(topic, safe='')}/records"
    params = {} if key is None else {"key": key}
    response = http.request(method, path, content=body, headers=headers, params=params)
    assert response.status_code in DOCUMENTED, response.text
    if response.status_code != 200:
        error = response.json()["error"]
        assert error["status"] == response.status_code
        assert error["message"]


@settings(max_examples=40, deadline=None)
@given(records=st.lists(json_values, min_size=1, max_size=30))
def test_what_a_200_reports_is_what_is_stored(records: list[Any]) -> None:
    """NDJSON of any JSON values: the answer's offsets name records holding the lines."""
    lines = [orjson.dumps(r) for r in records]

    async def main(data: Path) -> None:
        async with open_store(data, maintenance_interval_s=math.inf) as store:
            await store.create_topic("t", TopicConfig(partitions=2))
            ingest = HttpIngest(StoreLog(store), IngestConfig(limits=LIMITS))
            async with anyio.create_task_group() as tg:
                host, port = await tg.start(ingest.serve, "127.0.0.1", 0)
                async with httpx.AsyncClient(
                    base_url=f"http://{host}:{port}", timeout=HANG_S
                ) as client:
                    response = await client.post(
                        "/topics/t/records",
                        content=b"\n".join(lines),
                        headers={"content-type": "application/x-ndjson"},
                    )
                tg.cancel_scope.cancel()
            if response.status_code != 200:  # too deep for the limits: refused whole
                assert response.status_code == 400
                assert records_stored(store) == 0
                return
            stored = {
                (p, r.offset): r.value
                for p in (0, 1)
                for r in await store.partition("t", p).read_records(0, 1 << 24)
            }
            assert [stored[(p, o)] for p, o in response.json()["offsets"]] == lines
            assert len(stored) == len(lines)

    with tempfile.TemporaryDirectory() as folder:
        anyio.run(main, Path(folder) / "data", backend="trio")


def records_stored(store: Store) -> int:
    return sum(p.log_end_offset for p in store.partitions("t"))
