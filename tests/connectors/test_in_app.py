"""Connectors inside an app (``app.source(...)``, ``stream.sink(...)``): files in, a
pipeline, files out; HTTP in, a pipeline, a webhook out; on the app's data directory,
and on a Kafka-protocol cluster (``headwater broker``, Apache Kafka)."""

from __future__ import annotations

import json
from pathlib import Path

import anyio
import httpx
import orjson
import pytest

from headwater.connectors import (
    ConnectorError,
    FileSinkConfig,
    FileSinkConnector,
    FileSourceConfig,
    FileSourceConnector,
    HttpIngestConnector,
    WebhookConfig,
    WebhookConnector,
    parse_final_name,
)
from headwater.processing import App
from headwater.processing.testing import TestDriver

from .helpers import HANG_S
from .scripted_server import Answer, scripted_server


def lines(start: int, stop: int) -> bytes:
    return b"".join(orjson.dumps({"i": i, "ms": i * 10}) + b"\n" for i in range(start, stop))


def read_final_files(directory: Path) -> list[dict[str, int]]:
    out = []
    for path in sorted(directory.iterdir()):
        if parse_final_name(path.name) is not None:
            out.extend(json.loads(line) for line in path.read_text().splitlines())
    return out


def files_app(source: Path, out: Path, prefix: str = "") -> App:
    app = App(f"{prefix}files")
    clicks = app.source(
        FileSourceConnector(
            FileSourceConfig(path=str(source), topic=f"{prefix}clicks", from_beginning=True)
        )
    )
    clicks.filter(lambda e: e["ms"] >= 100).map(lambda e: {**e, "slow": True}).sink(
        FileSinkConnector(FileSinkConfig(topic=f"{prefix}slow-clicks", directory=str(out)))
    )
    return app


async def files_in_files_out(tmp_path: Path, where: dict[str, str], prefix: str = "") -> None:
    source, out = tmp_path / "clicks.jsonl", tmp_path / "out"
    source.write_bytes(lines(0, 30))
    await files_app(source, out, prefix).run_async(until_caught_up=True, **where)
    assert read_final_files(out) == [{"i": i, "ms": i * 10, "slow": True} for i in range(10, 30)]

    # The next run goes on from both connectors' positions: nothing twice.
    with source.open("ab") as f:
        f.write(lines(30, 35))
    await files_app(source, out, prefix).run_async(until_caught_up=True, **where)
    assert [e["i"] for e in read_final_files(out)] == list(range(10, 35))


async def test_files_in_a_pipeline_files_out(tmp_path: Path) -> None:
    await files_in_files_out(tmp_path, {"data_dir": str(tmp_path / "data")})


async def test_files_in_a_pipeline_files_out_on_a_cluster(
    bootstrap: str, tmp_path: Path, topic: str
) -> None:
    """The source keeps its position on the cluster, the sink commits in the cluster's
    group: the second run goes on from both."""
    await files_in_files_out(tmp_path, {"bootstrap": bootstrap}, prefix=f"{topic}-")


async def http_in_webhook_out(where: dict[str, str], prefix: str = "") -> None:
    async with scripted_server(lambda n, request: Answer(200)) as (server, url):
        ingest = HttpIngestConnector(f"{prefix}orders", port=0)
        app = App(f"{prefix}orders")
        orders = app.source(ingest)
        orders.map(lambda o: {"order": o["id"], "total": o["price"] * o["qty"]}).sink(
            WebhookConnector(WebhookConfig(topic=f"{prefix}order-totals", url=url))
        )
        stop = anyio.Event()
        async with anyio.create_task_group() as tg:
            tg.start_soon(lambda: app.run_async(stop=stop, **where))
            with anyio.fail_after(60):
                host, port = await ingest.wait_serving()
            body = b'{"id":1,"price":2.5,"qty":4}\n{"id":2,"price":1,"qty":3}\n'
            async with httpx.AsyncClient(base_url=f"http://{host}:{port}", timeout=HANG_S) as http:
                answer = await http.post(
                    f"/topics/{prefix}orders/records",
                    content=body,
                    headers={"content-type": "application/x-ndjson"},
                )
                other = await http.post(
                    "/topics/elsewhere/records",
                    content=b"{}",
                    headers={"content-type": "application/json"},
                )
            assert answer.status_code == 200
            assert other.status_code == 404  # the endpoint takes records for its topic only
            await server.wait_for(1)
            stop.set()
    delivered = [v for r in server.received for v in orjson.loads(r.body)]
    assert delivered == [{"order": 1, "total": 10.0}, {"order": 2, "total": 3}]


async def test_http_in_a_pipeline_a_webhook_out(tmp_path: Path) -> None:
    await http_in_webhook_out({"data_dir": str(tmp_path / "data")})


async def test_http_in_a_pipeline_a_webhook_out_on_a_cluster(bootstrap: str, topic: str) -> None:
    await http_in_webhook_out({"bootstrap": bootstrap}, prefix=f"{topic}-")


def test_connectors_refuse_a_backend_other_than_the_embedded_log(tmp_path: Path) -> None:
    app = App("files")
    clicks = app.source(
        FileSourceConnector(FileSourceConfig(path=str(tmp_path / "x"), topic="clicks"))
    )
    clicks.to("copy")
    backend = TestDriver(app).backend  # the test driver's log, in memory

    async def run() -> None:
        await app.run_async(until_caught_up=True, backend=backend)

    with pytest.raises(ConnectorError, match="embedded log"):
        anyio.run(run, backend="trio")
