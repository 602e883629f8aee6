"""A scripted webhook receiver for the tests: a real HTTP server on 127.0.0.1 (a small ASGI
app served by hypercorn) that records every request and answers each as a script says."""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import anyio
import orjson
from hypercorn.config import Config
from hypercorn.trio import serve


@dataclass(frozen=True, slots=True)
class Received:
    """One request the server got."""

    headers: dict[str, str]
    body: bytes

    @property
    def key(self) -> str:
        return self.headers["idempotency-key"]


@dataclass(slots=True)
class Answer:
    """How to answer a request: a status and headers, or ``hang`` until released."""

    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b"{}"
    hang: bool = False


#: Given how many requests came before this one and the request, say how to answer.
Script = Callable[[int, Received], Answer]


class ScriptedServer:
    """Serves ``script``; ``received`` lists every request in arrival order."""

    def __init__(self, script: Script) -> None:
        self.script = script
        self.received: list[Received] = []
        self.released = anyio.Event()
        self._arrived = anyio.Event()

    async def wait_for(self, count: int) -> None:
        """Wait until ``count`` requests have arrived."""
        with anyio.fail_after(120):
            while len(self.received) < count:
                await self._arrived.wait()

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:  # type: ignore[type-arg]
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                await send({"type": message["type"] + ".complete"})
                if message["type"] == "lifespan.shutdown":
                    return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        request = Received(headers, body)
        answer = self.script(len(self.received), request)
        self.received.append(request)
        self._arrived.set()
        self._arrived = anyio.Event()
        if answer.hang:
            await self.released.wait()
        await send(
            {
                "type": "http.response.start",
                "status": answer.status,
                "headers": [(k.encode(), v.encode()) for k, v in answer.headers.items()],
            }
        )
        await send({"type": "http.response.body", "body": answer.body})


@asynccontextmanager
async def scripted_server(script: Script) -> AsyncIterator[tuple[ScriptedServer, str]]:
    """Serve ``script`` on 127.0.0.1 for a block; yield the server and its URL."""
    server = ScriptedServer(script)
    config = Config()
    config.bind = ["127.0.0.1:0"]
    config.accesslog = None
    config.errorlog = None
    async with anyio.create_task_group() as tg:
        [bound] = await tg.start(serve, server, config)
        yield server, f"{bound}/hook"
        server.released.set()
        tg.cancel_scope.cancel()


def assert_sent_again_and_nothing_else(server: ScriptedServer, held: int, records: int) -> None:
    """Check that the batch of request ``held`` (the one a sink died in) came again
    right after it, the same (key and body), that no other batch came twice, and that
    the records ``{"i": 0}`` to ``{"i": records - 1}`` all came."""
    first = server.received[held]
    again = server.received[held + 1]
    assert (again.key, again.body) == (first.key, first.body)  # that batch, the same
    keys = Counter(r.key for r in server.received)
    assert keys.pop(first.key) == 2
    assert set(keys.values()) == {1}  # nothing else was sent twice
    values = [v["i"] for r in server.received if r is not first for v in orjson.loads(r.body)]
    assert sorted(values) == list(range(records))
