"""The web application of ``headwater ui``: one page, its assets, and read-only JSON.

Routes (every one ``GET``; anything else is a 405)::

    /                      the page (ui_assets/index.html), with ui.js and ui.css
    /assets/{name}         the page's script and style, vendored: the page works offline
    /api/overview          topics and their partitions' offsets, groups and their lag, apps
    /api/apps              each app's topology: the graph ``headwater describe`` prints
    /api/records           a partition's records from an offset or a time (the browser)
    /api/lineage           a record and each one its lineage headers name (``trace``)
    /api/events            server-sent events: ``history`` (chart points), then an
                           ``overview`` each time the log is looked at

Errors answer 4xx (or 5xx) with a JSON body ``{"error": "...", "status": N}``.

With a token, every ``/api/`` request must carry ``Authorization: Bearer TOKEN``
(compared in constant time); the page and its assets hold no data and are served to
anyone, and the page asks for the token. Without a token (loopback only, see ``_ui.py``)
a request must name a loopback host in its ``Host`` header, so that a web page elsewhere
cannot reach the log through a name that resolves to 127.0.0.1 (DNS rebinding).
"""

from __future__ import annotations

import contextlib
import hmac
import importlib.resources
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import click
import orjson
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from headwater.store import HeadwaterError, Record, exact_dumps

from ._access import LogAccess, RecordSink
from ._app_commands import lineage
from ._start import Start
from ._ui_feed import Feed, failure_message
from ._ui_model import Json, partition_offsets, record_json

#: Most records one browser request returns.
MAX_RECORDS = 500
#: Most overviews one event stream sends before it ends (the page then reconnects):
#: no stream is held open for ever by a page left open.
MAX_EVENTS = 1800
#: The assets the page loads, with their media types.
ASSETS = {
    "index.html": "text/html; charset=utf-8",
    "ui.js": "text/javascript; charset=utf-8",
    "ui.css": "text/css; charset=utf-8",
}
_LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1", "[::1]"})


@dataclass(frozen=True, slots=True)
class UiContext:
    """What the application serves: the log, its feed, the apps' topologies."""

    access: LogAccess
    feed: Feed
    apps: Sequence[Json]
    title: str


def create_app(context: UiContext, token: str | None) -> Starlette:
    """Return the starlette application serving ``context`` (see the module docstring)."""
    handlers = _Handlers(context)
    app = Starlette(
        routes=[
            Route("/", handlers.page),
            Route("/assets/{name}", handlers.asset),
            Route("/api/overview", handlers.overview),
            Route("/api/apps", handlers.apps),
            Route("/api/records", handlers.records),
            Route("/api/lineage", handlers.lineage),
            Route("/api/events", handlers.events),
        ],
        exception_handlers={
            HTTPException: _http_error,
            HeadwaterError: _unavailable,
            click.ClickException: _unavailable,
            OSError: _unavailable,
            Exception: _internal_error,
        },
    )
    app.add_middleware(_Guard, token=token)
    return app


def _json(content: Any, status: int = 200) -> Response:
    # exact_dumps: a record's JSON value may hold integers beyond 64 bits.
    return Response(exact_dumps(content), status, media_type="application/json")


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return JSONResponse(
        {"error": exc.detail, "status": exc.status_code}, exc.status_code, headers=exc.headers
    )


async def _unavailable(request: Request, exc: Exception) -> Response:
    # The log refused or could not be reached (busy, gone, damaged): not the request's fault.
    return JSONResponse({"error": failure_message(exc), "status": 503}, 503)


async def _internal_error(request: Request, exc: Exception) -> Response:
    return JSONResponse({"error": failure_message(exc), "status": 500}, 500)


class _Guard:
    """Refuses ``/api/`` requests without the bearer token, and any request naming a
    foreign host when there is no token (see the module docstring)."""

    def __init__(self, app: Callable[..., Any], token: str | None) -> None:
        self._app = app
        self._token = None if token is None else token.encode()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            refusal = self._refusal(scope)
            if refusal is not None:
                await refusal(scope, receive, send)
                return
        await self._app(scope, receive, send)

    def _refusal(self, scope: Any) -> Response | None:
        headers = dict(scope["headers"])
        if self._token is None:
            host = headers.get(b"host", b"").decode("latin-1")
            name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
            if name not in _LOOPBACK_HOSTS:
                return JSONResponse(
                    {"error": f"this server answers on loopback only, not {host!r}", "status": 421},
                    421,
                )
            return None
        if not scope["path"].startswith("/api/"):
            return None
        given = headers.get(b"authorization", b"")
        scheme, _, credentials = given.partition(b" ")
        if scheme.lower() == b"bearer" and hmac.compare_digest(credentials.strip(), self._token):
            return None
        why = "a bearer token is required" if not given else "the bearer token is wrong"
        return JSONResponse(
            {"error": why, "status": 401}, 401, headers={"WWW-Authenticate": "Bearer"}
        )


def _integer(request: Request, name: str, *, default: int | None = None, low: int = 0) -> int:
    text = request.query_params.get(name)
    if text is None or text == "":
        if default is None:
            raise HTTPException(400, f"{name} is required")
        return default
    try:
        value = int(text)
    except ValueError:
        raise HTTPException(400, f"{name} must be an integer, got {text!r}") from None
    if value < low:
        raise HTTPException(400, f"{name} must be at least {low}, got {value}")
    return value


def _time_ms(text: str) -> int:
    """Read a time: epoch milliseconds, or ISO 8601 (UTC unless it says otherwise)."""
    if text.isdigit():
        return int(text)
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise HTTPException(
            400, f"time must be ISO 8601 (2026-01-31T12:00:00Z) or epoch ms, got {text!r}"
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return int(when.timestamp() * 1000)


def _topic(request: Request) -> str:
    topic = request.query_params.get("topic", "")
    if not topic:
        raise HTTPException(400, "topic is required")
    return topic


class _Collect(RecordSink):
    """Keeps up to ``limit`` records of one partition."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.records: list[Record] = []
        self.damage: list[str] = []

    def done(self) -> bool:
        return len(self.records) >= self.limit

    def write(self, partition: int, records: Sequence[Record]) -> int:
        taken = list(records[: self.limit - len(self.records)])
        self.records.extend(taken)
        return len(taken)

    def damaged(self, partition: int, report: str) -> None:
        self.damage.append(report)


class _Handlers:
    def __init__(self, context: UiContext) -> None:
        self._context = context

    async def page(self, request: Request) -> Response:
        return await self.asset(request, "index.html")

    async def asset(self, request: Request, name: str | None = None) -> Response:
        name = name or request.path_params["name"]
        media_type = ASSETS.get(name)
        if media_type is None:
            raise HTTPException(404, f"no asset named {name!r}")
        body = importlib.resources.files(__package__).joinpath("ui_assets", name).read_bytes()
        return Response(body, media_type=media_type, headers={"Cache-Control": "no-cache"})

    async def overview(self, request: Request) -> Response:
        view = self._context.feed.latest
        if view is None:
            view = await self._context.feed.look_now()
        return _json({"title": self._context.title, **view})

    async def apps(self, request: Request) -> Response:
        return _json(list(self._context.apps))

    async def _offsets(self, topic: str, partition: int, *, fresh: bool) -> tuple[int, int]:
        """Return the partition's (log start, end): from the last look, else (or when it
        knows no such partition: it may be new) from a look now."""
        feed = self._context.feed
        view = None if fresh else feed.latest
        why = ""
        for _ in range(1 if view is None else 2):
            if view is None:
                view = await feed.look_now()
            if "error" in view:
                raise HTTPException(503, f"the log cannot be read now: {view['error']}")
            found = partition_offsets(_topics_of(view), topic, partition)
            if not isinstance(found, str):
                return found
            why, view = found, None
        raise HTTPException(404, why)

    async def records(self, request: Request) -> Response:
        topic = _topic(request)
        partition = _integer(request, "partition", default=0)
        limit = _integer(request, "limit", default=50, low=1)
        if limit > MAX_RECORDS:
            raise HTTPException(400, f"limit must be at most {MAX_RECORDS}, got {limit}")
        offset_text = request.query_params.get("offset")
        time_text = request.query_params.get("time")
        if offset_text and time_text:
            raise HTTPException(400, "give offset or time, not both")
        log_start, end = await self._offsets(topic, partition, fresh=False)
        if time_text:
            start = Start("time", _time_ms(time_text))
        else:
            offset = _integer(request, "offset", default=log_start)
            if offset > end:
                log_start, end = await self._offsets(topic, partition, fresh=True)
            if offset > end:
                raise HTTPException(
                    400,
                    f"offset {offset} is past the end of {topic}/{partition} "
                    f"(its next offset is {end})",
                )
            if offset < log_start:
                raise HTTPException(
                    400,
                    f"offset {offset} of {topic}/{partition} is gone (retention or "
                    f"compaction); its earliest is {log_start}",
                )
            start = Start("offset", offset)
        sink = _Collect(limit)
        await self._context.access.read(
            topic, partition=partition, start=start, follow=False, sink=sink
        )
        if sink.records:  # the last look may be older than what was read
            end = max(end, sink.records[-1].offset + 1)
        return _json(
            {
                "topic": topic,
                "partition": partition,
                "log_start_offset": log_start,
                "high_watermark": end,
                "records": [record_json(topic, partition, r) for r in sink.records],
                "damaged": sink.damage,
            }
        )

    async def lineage(self, request: Request) -> Response:
        topic = _topic(request)
        partition = _integer(request, "partition")
        offset = _integer(request, "offset")
        async with self._context.access.lookup() as lookup:
            steps = await lineage(lookup, topic, partition, offset)
        first = steps[0][1]
        if isinstance(first, str):
            raise HTTPException(404, first)
        shown = []
        for (t, p, o), record in steps:
            position = {"topic": t, "partition": p, "offset": o}
            if isinstance(record, str):
                shown.append({"position": position, "record": None, "missing": record})
            else:
                shown.append({"position": position, "record": record_json(t, p, record)})
        return _json({"steps": shown})

    async def events(self, request: Request) -> Response:
        limit = _integer(request, "limit", default=MAX_EVENTS, low=1)
        limit = min(limit, MAX_EVENTS)
        feed = self._context.feed

        async def stream() -> AsyncIterator[bytes]:
            yield b"retry: 2000\n\n"
            yield _event("history", feed.history())
            async with contextlib.aclosing(feed.watch(limit)) as views:
                async for view in views:
                    yield _event("overview", {"title": self._context.title, **view})

        return StreamingResponse(
            stream(),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )


def _topics_of(view: Json) -> dict[str, tuple[tuple[int, int], ...]]:
    return {
        t["name"]: tuple((p["log_start_offset"], p["high_watermark"]) for p in t["partitions"])
        for t in view["topics"]
    }


def _event(name: str, data: Any) -> bytes:
    # orjson writes no newlines, so the data fits one `data:` line.
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"
