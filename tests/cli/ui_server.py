"""``headwater ui`` as a subprocess on 127.0.0.1, and a reader of its event stream."""

from __future__ import annotations

import os
import re
import select
import signal
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import httpx
import orjson

from .helpers import HEADWATER, env_without_data

_SERVING = re.compile(r"serving the ui of .* at (http://\S+/)")

#: How long a condition on the page or the feed may take before a test gives up.
WAIT_S = 60.0


class UiProcess:
    """``headwater [GLOBAL...] ui --listen 127.0.0.1:0 ARGS...`` as a subprocess.

    :meth:`start` returns once the command has said where it serves (its log line, read
    as it comes: no sleeping).
    """

    def __init__(self, global_args: Sequence[str], *args: str) -> None:
        self.command = [HEADWATER, *global_args, "ui", "--listen", "127.0.0.1:0", *args]
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = ""
        self.stderr = b""

    def start(self, timeout_s: float = WAIT_S) -> UiProcess:
        """Start the command and wait until it serves."""
        self.proc = subprocess.Popen(
            self.command,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=env_without_data(),
        )
        assert self.proc.stderr is not None
        fd = self.proc.stderr.fileno()
        deadline = time.monotonic() + timeout_s
        while (found := _SERVING.search(self.stderr.decode(errors="replace"))) is None:
            left = deadline - time.monotonic()
            assert left > 0, f"the ui did not serve in time: {self.stderr!r}"
            if select.select([fd], [], [], left)[0]:
                chunk = os.read(fd, 65536)
                assert chunk, f"the ui exited: {self.stderr!r}"
                self.stderr += chunk
        self.url = found[1]
        return self

    def stop(self, timeout_s: float = 30.0) -> tuple[int, str]:
        """SIGINT the command (as Ctrl-C) and wait; return its status and what it logged."""
        assert self.proc is not None and self.proc.stderr is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        try:
            rest, _ = self.proc.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rest, _ = self.proc.communicate()
        self.stderr += rest or b""
        return self.proc.returncode, self.stderr.decode(errors="replace")

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        """``GET`` a path of the server (relative to its root)."""
        return httpx.get(self.url + path.lstrip("/"), timeout=WAIT_S, **kwargs)


def events(
    url: str, *, headers: dict[str, str] | None = None, limit: int = 1000
) -> Iterator[tuple[str, Any]]:
    """Yield ``(event, data)`` from the server-sent events at ``url``."""
    with httpx.stream(
        "GET", url, params={"limit": limit}, headers=headers or {}, timeout=WAIT_S
    ) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        name, data = "message", b""
        for line in response.iter_lines():
            if line.startswith("event:"):
                name = line[6:].strip()
            elif line.startswith("data:"):
                data += line[5:].strip().encode()
            elif not line:
                if data:
                    yield name, orjson.loads(data)
                name, data = "message", b""


def wait_for_overview(ui: UiProcess, check: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    """Follow the ui's overviews until one passes ``check``; return it.

    Each overview comes from a new look at the log, so this waits on the feed's events,
    for at most :data:`WAIT_S`.
    """
    deadline = time.monotonic() + WAIT_S
    seen: dict[str, Any] = {}
    for name, data in events(ui.url + "api/events"):
        if name == "overview":
            seen = data
            if check(data):
                return data
        assert time.monotonic() < deadline, f"no overview passed the check; the last: {seen}"
    raise AssertionError(f"the event stream ended; the last overview: {seen}")


def topic_end(view: dict[str, Any], topic: str, partition: int = 0) -> int | None:
    """The end offset of ``topic/partition`` in an overview (None: no such topic)."""
    for t in view["topics"]:
        if t["name"] == topic:
            end: int = t["partitions"][partition]["high_watermark"]
            return end
    return None


def group_lag(view: dict[str, Any], group: str) -> int | None:
    """The total lag of ``group`` in an overview (None: no such group, or not known)."""
    for g in view["groups"]:
        if g["group"] == group:
            lag: int | None = g["lag"]
            return lag
    return None
