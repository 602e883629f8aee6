"""A real ``headwater broker`` in a subprocess, and tiny clients over our codec.

:class:`BrokerProcess` starts the command on ``127.0.0.1:0`` (any free port: no race for
a port) and reads the port from its start-up line; :class:`Connection` speaks the Kafka
protocol with :mod:`headwater.broker`'s codec over a plain socket, so tests can send
exactly the bytes they want -- pipelined requests, malformed frames, old versions.
:class:`AsyncConnection` is the same client for a :class:`~headwater.broker.Broker` served
in the test's own event loop, where the broker's statistics can be watched.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import anyio
from anyio.abc import SocketStream

from headwater.broker import ApiKey, RequestHeader, decode_response, encode_request

HEADWATER = str(Path(sys.executable).with_name("headwater"))
_LISTENING = re.compile(r"listening on 127\.0\.0\.1:(\d+)")
_SIZE = struct.Struct(">i")


class BrokerProcess:
    """``headwater broker --data DATA --listen 127.0.0.1:0`` as a subprocess."""

    def __init__(self, data: Path, *args: str, env: Mapping[str, str] | None = None) -> None:
        self.data = data
        self.args = args
        self.env = os.environ if env is None else env
        self.log_path = data.parent / f"{data.name}-broker.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0

    @property
    def bootstrap(self) -> str:
        """``127.0.0.1:PORT`` of the running broker."""
        return f"127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 30.0) -> BrokerProcess:
        """Start the broker and wait until it listens."""
        log = open(self.log_path, "ab")  # noqa: SIM115 - the child keeps it open
        start_at = log.tell()
        env = {k: v for k, v in self.env.items() if not k.startswith("HEADWATER_")}
        self.proc = subprocess.Popen(
            [HEADWATER, "broker", "--data", str(self.data), "--listen", "127.0.0.1:0",
             "--log-level", "debug", *self.args],
            stdout=subprocess.DEVNULL,
            stderr=log,
            env=env,
        )  # fmt: skip
        log.close()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            text = self.log()[start_at:]
            found = _LISTENING.search(text)
            if found:
                self.port = int(found[1])
                return self
            if self.proc.poll() is not None:
                raise RuntimeError(f"the broker exited with {self.proc.returncode}:\n{text}")
            time.sleep(0.02)
        self.proc.kill()
        raise RuntimeError(f"the broker did not listen within {timeout_s} s:\n{self.log()}")

    def log(self) -> str:
        """Everything the broker has logged (stderr), across restarts."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self, timeout_s: float = 20.0) -> int:
        """SIGTERM the broker and wait for it; return its exit status."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise

    def kill(self) -> None:
        """SIGKILL the broker (a crash) and reap it."""
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait()

    def alive(self) -> bool:
        """Whether the process is still running."""
        return self.proc is not None and self.proc.poll() is None


class Connection:
    """One blocking connection speaking the Kafka protocol with headwater's codec."""

    def __init__(self, port: int, *, client_id: str = "test", timeout_s: float = 10.0) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout_s)
        self.client_id = client_id
        self._correlation = 0

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the socket."""
        self.sock.close()

    def header(self, api_key: ApiKey, version: int) -> RequestHeader:
        """Return a header with the next correlation id."""
        self._correlation += 1
        return RequestHeader(api_key, version, self._correlation, self.client_id)

    def send(self, api_key: ApiKey, version: int, body: Mapping[str, Any]) -> RequestHeader:
        """Send one request; return its header (to read the response with)."""
        header = self.header(api_key, version)
        self.sock.sendall(b"".join(encode_request(header, body)))
        return header

    def receive(self, header: RequestHeader) -> dict[str, Any]:
        """Read the response to the request with ``header``."""
        return decode_response(header, self.read_frame())

    def request(self, api_key: ApiKey, version: int, body: Mapping[str, Any]) -> dict[str, Any]:
        """Send one request and return its decoded response."""
        return self.receive(self.send(api_key, version, body))

    def read_frame(self) -> bytes:
        """Read one response frame (without its size)."""
        (size,) = _SIZE.unpack(self.read_exactly(4))
        return self.read_exactly(size)

    def read_exactly(self, size: int) -> bytes:
        """Read ``size`` bytes; raise ConnectionError if the broker closes first."""
        data = bytearray()
        while len(data) < size:
            chunk = self.sock.recv(size - len(data))
            if not chunk:
                raise ConnectionError("the broker closed the connection")
            data += chunk
        return bytes(data)

    def closed_by_broker(self, timeout_s: float = 5.0) -> bool:
        """Whether the broker closes the connection (reads until EOF or timeout)."""
        self.sock.settimeout(timeout_s)
        try:
            while self.sock.recv(65536):
                pass
        except TimeoutError:
            return False
        except ConnectionResetError:
            return True
        return True


class AsyncConnection:
    """One connection speaking the Kafka protocol with headwater's codec, for async tests."""

    def __init__(self, stream: SocketStream, client_id: str = "test") -> None:
        self.stream = stream
        self.client_id = client_id
        self._correlation = 0
        self._buffer = bytearray()

    @classmethod
    async def open(cls, port: int, *, client_id: str = "test") -> AsyncConnection:
        """Connect to ``127.0.0.1:port``."""
        return cls(await anyio.connect_tcp("127.0.0.1", port), client_id)

    async def __aenter__(self) -> AsyncConnection:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stream.aclose()

    async def send(self, api_key: ApiKey, version: int, body: Mapping[str, Any]) -> RequestHeader:
        """Send one request; return its header (to read the response with)."""
        self._correlation += 1
        header = RequestHeader(api_key, version, self._correlation, self.client_id)
        await self.stream.send(b"".join(encode_request(header, body)))
        return header

    async def receive(self, header: RequestHeader) -> dict[str, Any]:
        """Read the response to the request with ``header``."""
        while len(self._buffer) < 4 or len(self._buffer) < 4 + _SIZE.unpack_from(self._buffer)[0]:
            self._buffer += await self.stream.receive()
        size = 4 + _SIZE.unpack_from(self._buffer)[0]
        frame, self._buffer = bytes(self._buffer[4:size]), self._buffer[size:]
        return decode_response(header, frame)

    async def request(
        self, api_key: ApiKey, version: int, body: Mapping[str, Any]
    ) -> dict[str, Any]:
        """Send one request and return its decoded response."""
        return await self.receive(await self.send(api_key, version, body))

    async def closed_by_broker(self) -> bool:
        """Whether the broker closes the connection with nothing more to say."""
        try:
            data = await self.stream.receive()
        except (anyio.EndOfStream, anyio.BrokenResourceError):
            return True
        raise AssertionError(f"the broker sent more: {data!r}")


def produce_body(
    topic: str, batches: Sequence[tuple[int, bytes | None]], *, acks: int = -1
) -> dict[str, Any]:
    """A Produce request body sending ``(partition, records)`` pairs to ``topic``."""
    return {
        "transactional_id": None,
        "acks": acks,
        "timeout_ms": 10_000,
        "topic_data": [
            {
                "name": topic,
                "partition_data": [{"index": p, "records": r} for p, r in batches],
            }
        ],
    }


def fetch_body(
    topic: str,
    offsets: Mapping[int, int],
    *,
    max_wait_ms: int = 0,
    min_bytes: int = 1,
    max_bytes: int = 50 << 20,
    partition_max_bytes: int = 1 << 20,
) -> dict[str, Any]:
    """A Fetch request body for ``{partition: fetch_offset}`` of ``topic``."""
    return {
        "replica_id": -1,
        "max_wait_ms": max_wait_ms,
        "min_bytes": min_bytes,
        "max_bytes": max_bytes,
        "isolation_level": 1,
        "session_id": 0,
        "session_epoch": -1,
        "topics": [
            {
                "topic": topic,
                "partitions": [
                    {"partition": p, "fetch_offset": o, "partition_max_bytes": partition_max_bytes}
                    for p, o in offsets.items()
                ],
            }
        ],
        "forgotten_topics_data": [],
        "rack_id": "",
    }


def create_topics_body(
    name: str, partitions: int = 1, configs: Mapping[str, str] | None = None, **extra: Any
) -> dict[str, Any]:
    """A CreateTopics request body for one topic."""
    topic = {
        "name": name,
        "num_partitions": partitions,
        "replication_factor": -1,
        "assignments": [],
        "configs": [{"name": k, "value": v} for k, v in (configs or {}).items()],
    }
    topic.update(extra)
    return {"topics": [topic], "timeout_ms": 10_000, "validate_only": False}


def run_cli(*args: str, timeout_s: float = 60.0) -> subprocess.CompletedProcess[str]:
    """Run ``headwater ARGS...`` to completion and capture its output."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HEADWATER_")}
    return subprocess.run(
        [HEADWATER, *args], capture_output=True, text=True, timeout=timeout_s, env=env, check=False
    )


def assert_one_line_error(result: subprocess.CompletedProcess[str], *fragments: str) -> None:
    """Check that a command failed with exactly one ``headwater: error:`` line."""
    assert result.returncode != 0, result
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("headwater: error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
