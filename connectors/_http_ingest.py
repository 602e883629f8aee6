"""HTTP ingest: an ASGI app (starlette) that appends request bodies to topics, served by
hypercorn on the running event loop (trio, or asyncio).

``POST /topics/{topic}/records`` goes through the policy's checks in an order that
costs the least for a request that will be refused: the bearer token (401), the content
type (415), the declared length (413), the topic (404, or created with ``auto_create``),
the number of requests appending at once (429); then the body is read within the
receive deadline (408) and at most ``max_body_bytes`` (413), parsed (400), and appended
as one batch per partition (:class:`~headwater.connectors.ConnectorLog`). The answer,
200 with each record's partition and offset, is sent only once every record is durable.
A log that cannot take writes (disk full, closing, a broker out of reach) answers 503
with ``Retry-After``; the records of such a request may have been appended in part (those
of one partition, say, and not another's), and its ``Idempotency-Key`` is released, so a
retry may append that part again: at least once, never lost.

The receive deadline bounds a whole request, in two shares that add up to it: hypercorn
closes a connection that has not sent a whole request head within the head's share (its
keep-alive timer runs from the connection's start, or the previous answer, however the
bytes trickle in), and the app answers 408 to a body that is not all there within the
rest. Hypercorn does not say when a head began to arrive, so the body cannot have what
the head left unused. Every error has a JSON body (``{"error": {"status",
"code", "message"}}``), 404 and 405 from routing included.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import socket
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import anyio
import orjson
from anyio.abc import TaskStatus
from hypercorn.asyncio import serve as serve_on_asyncio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve as serve_on_trio
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route

from headwater.store import (
    InvalidTopicError,
    RecordTooLargeError,
    StoreError,
    TopicNotFoundError,
    is_internal_topic,
    validate_topic_name,
)

from ._errors import ConnectorConfigError, LogUnavailableError
from ._http_policy import IngestLimits, IngestPolicy, ParsedBody, Refusal
from ._idempotency import IdempotencyWindow
from ._log import ConnectorLog
from ._openapi import openapi_document

logger = logging.getLogger("headwater.connectors.http")

_MAX_IDEMPOTENCY_KEY = 255


@dataclass(frozen=True, kw_only=True, slots=True)
class IngestConfig:
    """Settings of an :class:`HttpIngest` endpoint.

    :param limits: body size, receive deadline, nesting depth, concurrency.
    :param tokens: bearer tokens a request must present one of (none: no authentication).
    :param auto_create: create a topic on its first request instead of answering 404.
    :param key_field: the default key field of object records (a request's ``?key=``
        overrides it).
    :param idempotency_window_s: how long an ``Idempotency-Key`` is remembered.
    :param topics: the only topics requests may write (404 for others); none: any.
    """

    limits: IngestLimits = field(default_factory=IngestLimits)
    tokens: tuple[str, ...] = ()
    auto_create: bool = False
    key_field: str | None = None
    idempotency_window_s: float = 600.0
    topics: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for topic in self.topics:
            validate_topic_name(topic)
        if any(not token or token != token.strip() for token in self.tokens):
            raise ConnectorConfigError("a bearer token may be neither empty nor padded with spaces")
        if self.idempotency_window_s < 0:
            raise ConnectorConfigError(
                f"idempotency_window_s must be >= 0, got {self.idempotency_window_s}"
            )


@dataclass(frozen=True, slots=True)
class IngestStatistics:
    """Counters of an :class:`HttpIngest` endpoint since it started."""

    requests: int
    records: int
    refused: dict[int, int]
    replayed: int
    inflight: int


class HttpIngest:
    """The ingest endpoint over ``log`` (see the module).

    :attr:`app` is the ASGI app, to mount anywhere; :meth:`serve` serves it with
    hypercorn. Concurrency: one event loop.
    """

    def __init__(self, log: ConnectorLog, config: IngestConfig | None = None) -> None:
        self.log = log
        self.config = config if config is not None else IngestConfig()
        self.policy = IngestPolicy(
            self.config.limits, tuple(token.encode() for token in self.config.tokens)
        )
        self._window = IdempotencyWindow(window_s=self.config.idempotency_window_s)
        self._openapi = orjson.dumps(
            openapi_document(self.config.limits, authenticated=bool(self.config.tokens))
        )
        self._inflight = 0
        self._requests = self._records = self._replayed = 0
        self._refused: dict[int, int] = {}
        self._shutdown = anyio.Event()
        self.app = Starlette(
            routes=[
                Route("/topics/{topic}/records", self._post_records, methods=["POST"]),
                Route("/healthz", self._health, methods=["GET"]),
                Route("/openapi.json", self._openapi_json, methods=["GET"]),
            ],
            exception_handlers={HTTPException: self._http_error},  # type: ignore[dict-item]
        )

    def statistics(self) -> IngestStatistics:
        """Return the counters so far."""
        return IngestStatistics(
            self._requests, self._records, dict(self._refused), self._replayed, self._inflight
        )

    # -- serving ---------------------------------------------------------------------

    async def serve(
        self,
        host: str = "127.0.0.1",
        port: int = 8080,
        *,
        task_status: TaskStatus[tuple[str, int]] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        """Serve the app on ``host``:``port`` until cancelled or :meth:`stop` is called.

        ``task_status.started()`` gets the address listened on (port 0 picks a free one).

        :raises OSError: if the address cannot be bound.
        """
        sock = socket.create_server((host, port), family=_family(host), backlog=1024)
        address = sock.getsockname()[:2]
        config = HypercornConfig()
        config.bind = [f"fd://{sock.detach()}"]
        config.keep_alive_timeout = self.config.limits.head_deadline_s
        config.accesslog = None
        config.errorlog = logger
        config.graceful_timeout = 5.0
        serve = _hypercorn_serve()
        async with anyio.create_task_group() as tg:
            tg.start_soon(
                functools.partial(
                    serve, self.app, config, shutdown_trigger=self._shutdown.wait, mode="asgi"
                )
            )
            task_status.started((address[0], address[1]))

    def stop(self) -> None:
        """Stop accepting connections; requests in flight finish (up to 5 s)."""
        self._shutdown.set()

    # -- routes ----------------------------------------------------------------------

    async def _health(self, request: Request) -> Response:
        return _json(200, b'{"status":"ok"}')

    async def _openapi_json(self, request: Request) -> Response:
        return _json(200, self._openapi)

    async def _http_error(self, request: Request, exc: HTTPException) -> Response:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return self._refuse(Refusal(exc.status_code, code, exc.detail, tuple(_headers(exc))))

    async def _post_records(self, request: Request) -> Response:
        self._requests += 1
        headers = request.headers
        policy = self.policy
        refusal = policy.check_token(headers.get("authorization"))
        kind = policy.body_kind(headers.get("content-type")) if refusal is None else None
        if isinstance(kind, Refusal):
            refusal = kind
        refusal = refusal or policy.check_length(headers.get("content-length"))
        topic = request.path_params["topic"]
        refusal = refusal or await self._check_topic(topic)
        idempotency_key = headers.get("idempotency-key")
        if refusal is None and idempotency_key is not None:
            refusal = _check_idempotency_key(idempotency_key)
        if refusal is None and self._inflight >= self.config.limits.max_inflight:
            refusal = policy.busy(429, "too many requests are being appended: retry later")
        if refusal is not None:
            return self._refuse(refusal, body_unread=True)
        assert isinstance(kind, str)
        self._inflight += 1
        try:
            return await self._append(request, topic, kind, idempotency_key)
        finally:
            self._inflight -= 1

    async def _append(
        self, request: Request, topic: str, kind: str, idempotency_key: str | None
    ) -> Response:
        body = await self._read_body(request)
        if isinstance(body, Refusal):
            return self._refuse(body, body_unread=True)
        claim = None
        if idempotency_key is not None:
            claim = await self._window.claim(topic, idempotency_key, body)
            if claim.answer is not None:
                self._replayed += 1
                return _json(200, claim.answer, (("Idempotent-Replayed", "true"),))
            if claim.conflict:
                return self._refuse(
                    Refusal(
                        422,
                        "idempotency_key_reused",
                        "this Idempotency-Key was used for another body within the window",
                    )
                )
        try:
            answer = await self._parse_and_append(request, topic, kind, body)
        except BaseException:
            if claim is not None:
                self._window.release(claim)
            raise
        if isinstance(answer, Refusal):
            if claim is not None:
                self._window.release(claim)
            return self._refuse(answer)
        if claim is not None:
            self._window.complete(claim, answer)
        return _json(200, answer)

    async def _parse_and_append(
        self, request: Request, topic: str, kind: str, body: bytes
    ) -> bytes | Refusal:
        key_field = request.query_params.get("key", self.config.key_field)
        parsed = self.policy.parse(kind, body, key_field or None)
        if isinstance(parsed, Refusal):
            return parsed
        # Shielded: once written, the append's outcome is what the answer must say.
        with anyio.CancelScope(shield=True):
            answer = await self._append_parsed(topic, parsed)
        return answer

    async def _append_parsed(self, topic: str, parsed: ParsedBody) -> bytes | Refusal:
        try:
            appended = await self.log.append(topic, parsed.values, keys=parsed.keys)
        except TopicNotFoundError:
            return Refusal(404, "unknown_topic", f"topic {topic!r} does not exist")
        except RecordTooLargeError as exc:
            return Refusal(413, "record_too_large", str(exc))
        except InvalidTopicError as exc:
            return Refusal(400, "invalid_topic", str(exc))
        except (StoreError, OSError, LogUnavailableError) as exc:
            logger.warning("ingest into %s refused by the log: %s", topic, exc)
            return self.policy.busy(503, f"the log cannot take records now: {exc}")
        self._records += appended.count
        return orjson.dumps(
            {"topic": topic, "count": appended.count, "offsets": appended.offsets()}
        )

    async def _check_topic(self, topic: str) -> Refusal | None:
        try:
            validate_topic_name(topic)
        except InvalidTopicError as exc:
            return Refusal(400, "invalid_topic", str(exc))
        if is_internal_topic(topic):
            return Refusal(
                400, "invalid_topic", f"topic {topic!r} is internal: records cannot be sent to it"
            )
        if self.config.topics and topic not in self.config.topics:
            return Refusal(
                404, "unknown_topic", f"this endpoint takes no records for topic {topic!r}"
            )
        try:
            if await self.log.has_topic(topic):
                return None
            if not self.config.auto_create:
                return Refusal(
                    404, "unknown_topic", f"topic {topic!r} does not exist (create it first)"
                )
            await self.log.ensure_topic(topic)
        except InvalidTopicError as exc:
            return Refusal(400, "invalid_topic", str(exc))
        except (StoreError, OSError, LogUnavailableError) as exc:
            return self.policy.busy(503, f"topic {topic!r} cannot be created now: {exc}")
        return None

    async def _read_body(self, request: Request) -> bytes | Refusal:
        limit = self.config.limits.max_body_bytes
        chunks: list[bytes] = []
        size = 0
        with anyio.move_on_after(self.config.limits.body_deadline_s) as scope:
            try:
                async for chunk in request.stream():
                    size += len(chunk)
                    if size > limit:
                        return self.policy.too_large()
                    chunks.append(chunk)
            except ClientDisconnect:
                return Refusal(400, "client_disconnected", "the client went away")
        if scope.cancelled_caught:
            return self.policy.too_slow()
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    def _refuse(self, refusal: Refusal, *, body_unread: bool = False) -> Response:
        """Answer ``refusal``; with ``body_unread`` (refused before the whole body was
        read) close the connection after it, so that no client sends its next request
        on a connection that still holds the rest of this one's body."""
        self._refused[refusal.status] = self._refused.get(refusal.status, 0) + 1
        headers = refusal.headers + ((("Connection", "close"),) if body_unread else ())
        return _json(refusal.status, refusal.body(), headers)


def _json(status: int, body: bytes, headers: Sequence[tuple[str, str]] = ()) -> Response:
    return Response(body, status, dict(headers), media_type="application/json")


def _headers(exc: HTTPException) -> list[tuple[str, str]]:
    return list((exc.headers or {}).items())


def _check_idempotency_key(key: str) -> Refusal | None:
    if not key or len(key) > _MAX_IDEMPOTENCY_KEY:
        return Refusal(
            400,
            "bad_idempotency_key",
            f"an Idempotency-Key holds 1 to {_MAX_IDEMPOTENCY_KEY} characters",
        )
    return None


def _hypercorn_serve() -> Any:
    """Return hypercorn's ``serve`` for the event loop running this (asyncio or trio)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return serve_on_trio
    return serve_on_asyncio


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET
