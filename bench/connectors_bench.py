"""Throughput figures for the connectors (connectors/).

Prints:

* HTTP ingest requests/s and records/s: ``headwater connect http-ingest`` in its own
  process, driven by a client in this one (h11 over trio sockets) over several keep-alive
  connections, with NDJSON bodies of 1,000 records and with single-record requests (each
  answered once durable), and the CPU each side spent per request;
* file source lines/s: a 1,000,000-line JSON lines file read from its start into a topic
  (in this process, position saved after every chunk);
* webhook sink records/s: a topic's records POSTed in batches to a local server that
  answers 200 (another process), offsets committed after each batch.

Values are JSON objects of about 100 bytes. Targets: ingest >= 200,000 records/s with
NDJSON batches; file source >= 300,000 lines/s. The figures are wall-clock on a machine
that may be shared: the endpoint's CPU per request says what it costs whatever else runs.

Usage: ``python bench/connectors_bench.py [--lines N] [--requests N] [--connections N]
[--webhook-records N] [--dir DIR] [--only ingest|file|webhook]``.
"""

from __future__ import annotations

import argparse
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import anyio
import anyio.abc
import h11
import orjson

from headwater.connectors import (
    FileSource,
    FileSourceConfig,
    LogPositionStore,
    SinkRunner,
    StoreLog,
    WebhookConfig,
    WebhookSink,
)
from headwater.groups import GroupCoordinator
from headwater.store import NewRecord, TopicConfig, open_store

HEADWATER = str(Path(sys.executable).with_name("headwater"))
BATCH = 1_000

RECEIVER = """
import sys
import trio
from hypercorn.config import Config
from hypercorn.trio import serve


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            await send({"type": message["type"] + ".complete"})
            if message["type"] == "lifespan.shutdown":
                return
    while (await receive()).get("more_body"):
        pass
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b""})


async def main():
    config = Config()
    config.bind = ["127.0.0.1:0"]
    config.accesslog = config.errorlog = None
    async with trio.open_nursery() as nursery:
        [bound] = await nursery.start(serve, app, config)
        print(bound, flush=True)

trio.run(main)
"""


def value(i: int) -> bytes:
    """A JSON object of about 100 bytes."""
    event = {"user": f"u{i % 10_000}", "page": f"/p/{i % 100}", "i": i, "pad": "x" * 40}
    return orjson.dumps(event)


# -- ingest ---------------------------------------------------------------------------------


def start_ingest(data: Path) -> tuple[subprocess.Popen[str], str]:
    server = subprocess.Popen(
        [HEADWATER, "--data", str(data), "connect", "http-ingest", "--listen", "127.0.0.1:0",
         "--max-inflight", "256"],
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    assert server.stderr is not None
    line = server.stderr.readline()
    found = re.search(r"listening on (http://\S+),", line)
    if not found:
        server.kill()
        raise SystemExit(f"the ingest endpoint did not start: {line}{server.stderr.read()}")
    return server, found.group(1)


async def drive(url: str, body: bytes, requests: int, connections: int) -> tuple[float, int]:
    """POST ``body`` ``requests`` times over ``connections`` keep-alive connections; return
    seconds and records acknowledged.

    The client is h11 (the sans-I/O HTTP/1.1 library under httpx and hypercorn) over trio
    sockets: it costs a fraction of httpx's CPU per request, so the figure measures the
    endpoint rather than the client sharing its machine.
    """
    host, port = url.removeprefix("http://").rsplit(":", 1)
    head = [("host", host), ("content-type", "application/x-ndjson"),
            ("content-length", str(len(body)))]  # fmt: skip
    acknowledged = 0
    left = requests

    async def post(stream: anyio.abc.SocketStream, conn: h11.Connection) -> int:
        request = h11.Request(method="POST", target="/topics/bench/records", headers=head)
        data = conn.send(request) + conn.send(h11.Data(data=body)) + conn.send(h11.EndOfMessage())
        await stream.send(data)
        status, chunks = 0, []
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(await stream.receive(1 << 16))
            elif isinstance(event, h11.Response):
                status = event.status_code
            elif isinstance(event, h11.Data):
                chunks.append(event.data)
            elif isinstance(event, h11.EndOfMessage):
                break
        answer = b"".join(chunks)
        if status != 200:
            raise SystemExit(f"ingest answered {status}: {answer!r}")
        if conn.our_state is h11.DONE and conn.their_state is h11.DONE:
            conn.start_next_cycle()
        count: int = orjson.loads(answer)["count"]
        return count

    async def connect() -> tuple[anyio.abc.SocketStream, h11.Connection]:
        stream = await anyio.connect_tcp(host, int(port))
        conn = h11.Connection(h11.CLIENT)
        await post(stream, conn)  # warm up: the connection is open before the clock starts
        return stream, conn

    async def worker(stream: anyio.abc.SocketStream, conn: h11.Connection) -> None:
        nonlocal acknowledged, left
        while left > 0:
            if conn.our_state is not h11.IDLE:
                # The server ends a keep-alive connection after its request limit (hypercorn's
                # keep_alive_max_requests) by answering "Connection: close": open another.
                await stream.aclose()
                stream = await anyio.connect_tcp(host, int(port))
                conn = h11.Connection(h11.CLIENT)
            left -= 1
            count = await post(stream, conn)
            acknowledged += count  # after the await: the tasks take turns
        await stream.aclose()

    opened = [await connect() for _ in range(connections)]
    started = time.perf_counter()
    async with anyio.create_task_group() as tg:
        for stream, conn in opened:
            tg.start_soon(worker, stream, conn)
    return time.perf_counter() - started, acknowledged


def cpu_seconds(pid: int) -> float:
    """Return the CPU time (user + system) process ``pid`` has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def bench_ingest(root: Path, requests: int, connections: int) -> None:
    data = root / "ingest"
    subprocess.run([HEADWATER, "--data", str(data), "topics", "create", "bench"], check=True,
                   capture_output=True)  # fmt: skip
    server, url = start_ingest(data)
    try:
        batch = b"".join(value(i) + b"\n" for i in range(BATCH))
        single = value(0) + b"\n"
        for name, body, count in (
            (f"NDJSON batches of {BATCH:,}", batch, requests),
            ("single-record requests", single, requests * 10),
        ):
            cpu, client = cpu_seconds(server.pid), time.process_time()
            elapsed, records = anyio.run(drive, url, body, count, connections, backend="trio")
            cpu, client = cpu_seconds(server.pid) - cpu, time.process_time() - client
            print(f"ingest, {name} ({connections} connections): {count / elapsed:>9,.0f}"
                  f" requests/s {records / elapsed:>12,.0f} records/s; CPU per request:"
                  f" endpoint {cpu / count * 1e3:.2f} ms ({records / cpu:,.0f} records per CPU"
                  f" second), client {client / count * 1e3:.2f} ms")  # fmt: skip
        print("  (target >= 200,000 records/s with NDJSON batches)")
    finally:
        server.terminate()
        server.wait(timeout=60)


# -- file source ----------------------------------------------------------------------------


def bench_file_source(root: Path, lines: int) -> None:
    path = root / "events.jsonl"
    with path.open("wb") as f:
        for start in range(0, lines, 100_000):
            f.write(b"".join(value(i) + b"\n" for i in range(start, min(start + 100_000, lines))))
    size = path.stat().st_size

    async def main() -> tuple[float, int]:
        async with open_store(root / "file", maintenance_interval_s=math.inf) as store:
            config = FileSourceConfig(path=str(path), topic="events", from_beginning=True)
            source = FileSource(StoreLog(store), LogPositionStore(store), config)
            started = time.perf_counter()
            await source.run(until_caught_up=True)
            elapsed = time.perf_counter() - started
            stored = sum(p.log_end_offset for p in store.partitions("events"))
            return elapsed, stored

    elapsed, stored = anyio.run(main, backend="trio")
    assert stored == lines, (stored, lines)
    print(f"file source, {lines:,}-line JSON file ({size / 1e6:,.0f} MB):"
          f"       {lines / elapsed:>12,.0f} lines/s {size / elapsed / 1e6:>8,.1f} MB/s"
          "   (target >= 300,000 lines/s)")  # fmt: skip


# -- webhook sink ---------------------------------------------------------------------------


def bench_webhook(root: Path, records: int) -> None:
    receiver = subprocess.Popen([sys.executable, "-c", RECEIVER], stdout=subprocess.PIPE, text=True)
    try:
        assert receiver.stdout is not None
        url = receiver.stdout.readline().strip() + "/hook"

        async def main() -> float:
            async with open_store(root / "webhook", maintenance_interval_s=math.inf) as store:
                await store.create_topic("out", TopicConfig())
                for start in range(0, records, BATCH):
                    stop = min(start + BATCH, records)
                    await store.append("out", [NewRecord(value(i)) for i in range(start, stop)])
                async with (
                    GroupCoordinator(store) as groups,
                    WebhookSink(StoreLog(store), WebhookConfig(topic="out", url=url)) as sink,
                ):
                    runner = SinkRunner(groups, "out", "bench", sink)
                    started = time.perf_counter()
                    await runner.run(until_caught_up=True)
                    elapsed = time.perf_counter() - started
                    assert sink.statistics().delivered == records
                    return elapsed

        elapsed = anyio.run(main, backend="trio")
        print(f"webhook sink, batches of 500 to a local 200 server:"
              f"      {records / elapsed:>12,.0f} records/s")  # fmt: skip
    finally:
        receiver.terminate()
        receiver.wait(timeout=60)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--webhook-records", type=int, default=200_000)
    parser.add_argument("--dir", type=Path, help="where to put the data (default: a temp dir)")
    parser.add_argument("--only", choices=["ingest", "file", "webhook"])
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="connectors-bench-", dir=args.dir))
    try:
        print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs")
        if args.only in (None, "ingest"):
            bench_ingest(root, args.requests, args.connections)
        if args.only in (None, "file"):
            bench_file_source(root, args.lines)
        if args.only in (None, "webhook"):
            bench_webhook(root, args.webhook_records)
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
