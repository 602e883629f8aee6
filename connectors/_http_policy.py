"""What the ingest endpoint accepts, decided without I/O: limits, credentials, bodies.

:class:`IngestPolicy` holds the limits (:class:`IngestLimits`) and the tokens, and turns
each part of a request into either what the endpoint needs next or a :class:`Refusal`
(an HTTP status, a machine-readable code and a message a person can act on). The ASGI
app (:mod:`._http_ingest`) only moves bytes and applies these answers, so every rule
here is tested synchronously.

Bodies. ``application/json`` holds one record, or an array of records; NDJSON
(``application/x-ndjson``, also ``application/jsonl``) holds one record per non-blank
line. A record is any JSON value; NDJSON lines are stored as sent, JSON records
re-serialised compactly (integers beyond 64 bits, which orjson reads as floats, kept
exact). With a key field, a record that is an object with that field
gets it as its key (a string as its UTF-8 bytes, anything else as compact JSON; null or
missing: no key). Nesting deeper than ``max_depth`` is refused: a cheap count of
brackets finds the records that might be that deep, and only those are walked.
"""

from __future__ import annotations

import hmac
import json
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from headwater.processing import JsonSerde
from headwater.store import (
    MAX_JSON_DEPTH,
    exact_dumps,
    exact_json,
    exact_loads_each,
    has_wide_integer,
)

from ._errors import ConnectorConfigError

_NDJSON_TYPES = frozenset(
    {"application/x-ndjson", "application/ndjson", "application/jsonl", "application/x-jsonlines"}
)
_JSON_TYPE = "application/json"
#: The head's share of a receive deadline long enough to give the rest to the body.
_HEAD_DEADLINE_S = 5.0
#: Every byte but brackets and the line end, for ``bytes.translate`` to delete.
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}\n")
#: How a JSON body's records are written anew: compact, as orjson writes them, in one
#: call for the whole body.
_JSON = JsonSerde()


@dataclass(frozen=True, kw_only=True, slots=True)
class IngestLimits:
    """Limits of the ingest endpoint.

    :param max_body_bytes: the largest request body (413 beyond it).
    :param receive_deadline_s: the longest a client may take to send a whole request,
        however steadily it trickles bytes: the head gets :attr:`head_deadline_s` of it
        (the connection is closed beyond), the body the rest (408 beyond).
    :param max_depth: the deepest nesting of arrays and objects in a record (400 beyond;
        at most :data:`~headwater.store.MAX_JSON_DEPTH`, the deepest a record of a JSON
        body can be written, since it is written anew).
    :param max_inflight: how many requests may be appending at once (429 beyond).
    :param retry_after_s: what ``Retry-After`` says when the endpoint is busy.
    """

    max_body_bytes: int = 8 << 20
    receive_deadline_s: float = 10.0
    max_depth: int = 64
    max_inflight: int = 64
    retry_after_s: int = 1

    def __post_init__(self) -> None:
        for name in ("max_body_bytes", "max_depth", "max_inflight", "retry_after_s"):
            if getattr(self, name) < 1:
                raise ConnectorConfigError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.max_depth > MAX_JSON_DEPTH:
            raise ConnectorConfigError(
                f"max_depth must be at most {MAX_JSON_DEPTH} (the deepest nesting a record of a "
                f"JSON body can be written with), got {self.max_depth}"
            )
        if not self.receive_deadline_s > 0:
            raise ConnectorConfigError(
                f"receive_deadline_s must be > 0, got {self.receive_deadline_s}"
            )

    @property
    def head_deadline_s(self) -> float:
        """The head's share of the receive deadline: 5 s (a usual keep-alive timeout, and
        plenty for at most 16 KiB of headers), or half the deadline if that is shorter.
        It also bounds how long a connection may stay idle between requests."""
        return min(_HEAD_DEADLINE_S, self.receive_deadline_s / 2)

    @property
    def body_deadline_s(self) -> float:
        """The body's share of the receive deadline: what the head's leaves."""
        return self.receive_deadline_s - self.head_deadline_s


@dataclass(frozen=True, slots=True)
class Refusal:
    """An answer other than 200: status, a code for programs, a message for people."""

    status: int
    code: str
    message: str
    headers: tuple[tuple[str, str], ...] = ()

    def body(self) -> bytes:
        """Return the JSON error body."""
        return orjson.dumps(
            {"error": {"status": self.status, "code": self.code, "message": self.message}}
        )


@dataclass(slots=True)
class ParsedBody:
    """The records of a request body, as columns: values, and keys (None: no keys)."""

    values: Sequence[bytes]
    keys: list[bytes | None] | None = field(default=None)


@dataclass(frozen=True, slots=True)
class IngestPolicy:
    """The rules of the ingest endpoint (see the module). Pure; safe from any thread.

    :param limits: the limits.
    :param tokens: bearer tokens any one of which a request must present; none: no
        authentication.
    """

    limits: IngestLimits = IngestLimits()
    tokens: tuple[bytes, ...] = ()

    def check_token(self, authorization: str | None) -> Refusal | None:
        """Refuse a request without a configured bearer token (compared in constant time)."""
        if not self.tokens:
            return None
        scheme, _, presented = (authorization or "").partition(" ")
        given = presented.strip().encode()
        # Every token is compared, so the time taken does not say which one came close.
        matched = False
        for token in self.tokens:
            matched |= hmac.compare_digest(given, token)
        if scheme.lower() == "bearer" and given and matched:
            return None
        what = "a wrong bearer token" if authorization else "no bearer token"
        return Refusal(
            401,
            "unauthorized",
            f"the request has {what}: send 'Authorization: Bearer <token>'",
            (("WWW-Authenticate", 'Bearer realm="headwater"'),),
        )

    def body_kind(self, content_type: str | None) -> str | Refusal:
        """Return ``"json"`` or ``"ndjson"`` for a request's content type, or refuse it."""
        media, _, parameters = (content_type or "").partition(";")
        media = media.strip().lower()
        charset = parameters.strip().lower()
        if charset and charset.replace(" ", "") not in ("charset=utf-8", "charset=utf8"):
            return Refusal(
                415, "unsupported_media_type", f"only UTF-8 bodies are taken, not {charset}"
            )
        if media == _JSON_TYPE:
            return "json"
        if media in _NDJSON_TYPES:
            return "ndjson"
        return Refusal(
            415,
            "unsupported_media_type",
            f"content type {media or '(none)'!r} is not taken: send application/json "
            "(one record or an array) or application/x-ndjson (one record per line)",
        )

    def check_length(self, content_length: str | None) -> Refusal | None:
        """Refuse a declared body larger than ``max_body_bytes`` (before reading it)."""
        if content_length is None:
            return None
        try:
            length = int(content_length)
        except ValueError:
            return Refusal(400, "bad_request", f"Content-Length {content_length!r} is not a number")
        if length > self.limits.max_body_bytes:
            return self.too_large()
        return None

    def too_large(self) -> Refusal:
        """The refusal of a body over ``max_body_bytes``."""
        return Refusal(
            413,
            "body_too_large",
            f"the body exceeds {self.limits.max_body_bytes} bytes: send fewer records per request",
        )

    def too_slow(self) -> Refusal:
        """The refusal of a body not received within its share of the deadline."""
        limits = self.limits
        return Refusal(
            408,
            "request_timeout",
            f"the body did not arrive within {limits.body_deadline_s:g} s of the request's "
            f"head (a request must arrive whole within {limits.receive_deadline_s:g} s)",
        )

    def busy(self, status: int, why: str) -> Refusal:
        """A refusal that asks the client to come back (429: too many requests, 503: the
        log cannot take writes now)."""
        code = "too_many_requests" if status == 429 else "unavailable"
        return Refusal(status, code, why, (("Retry-After", str(self.limits.retry_after_s)),))

    def parse(self, kind: str, body: bytes, key_field: str | None) -> ParsedBody | Refusal:
        """Return the records of ``body`` (``kind`` from :meth:`body_kind`), or refuse it."""
        if kind == "ndjson":
            return self._parse_ndjson(body, key_field)
        try:
            document = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            return _malformed(f"the body is not JSON: {exc}")
        items = document if isinstance(document, list) else [document]
        if not items:
            return _malformed("the body holds no records (an empty array)")
        nested = isinstance(document, list)
        try:
            values = _JSON.serialize_many(items)
        except orjson.JSONEncodeError:  # nested past what orjson writes, so past max_depth
            return self._too_deep(items, nested=nested)
        if has_wide_integer(body):  # orjson read an integer as a float: write them exactly
            exact = json.loads(body)  # within its digit limit: orjson refused longer ones
            items = exact if nested else [exact]  # the keys too
            values = list(map(exact_json, items))
        refusal = self._check_depth(values, items, nested=nested)
        if refusal is not None:
            return refusal
        return ParsedBody(values, _keys(items, key_field))

    def _parse_ndjson(self, body: bytes, key_field: str | None) -> ParsedBody | Refusal:
        if b"\r" in body:
            body = body.replace(b"\r\n", b"\n")
        lines = body.split(b"\n")
        if not lines[-1]:
            lines.pop()
        if not all(lines):
            lines = [line for line in lines if line.strip()]
        if not lines:
            return _malformed("the body holds no records (no line holds JSON)")
        try:
            if key_field is None:
                deque(map(orjson.loads, lines), maxlen=0)
                items: list[Any] | None = None
            else:
                items = exact_loads_each(lines)  # keys are taken exactly
        except orjson.JSONDecodeError:
            for number, line in enumerate(lines, 1):
                try:
                    orjson.loads(line)
                except orjson.JSONDecodeError as exc:
                    return _malformed(f"line {number} is not JSON: {exc}")
            raise  # pragma: no cover - every line parsed the second time
        # The body's lines are the records when none was dropped: its brackets are theirs.
        whole = body if len(lines) == body.count(b"\n") + (not body.endswith(b"\n")) else None
        refusal = self._check_depth(lines, items, nested=False, joined=whole)
        if refusal is not None:
            return refusal
        return ParsedBody(lines, None if items is None else _keys(items, key_field))

    def _check_depth(
        self,
        values: Sequence[bytes],
        items: Sequence[Any] | None,
        *,
        nested: bool,
        joined: bytes | None = None,
    ) -> Refusal | None:
        """Refuse a record nested deeper than ``max_depth``; ``joined`` is ``values``
        joined by line ends, when the caller has it."""
        limit = self.limits.max_depth
        # A record nests at most as deep as it has opening brackets, and its brackets
        # alone (strings' included) are at least twice that long: one pass in C over
        # the records' brackets clears every record shorter than that.
        if joined is None:
            joined = b"\n".join(values)
        skeletons = joined.translate(None, _NOT_BRACKETS).split(b"\n")
        if skeletons and not skeletons[-1] and len(skeletons) > len(values):
            skeletons.pop()
        if max(map(len, skeletons)) <= 2 * limit:
            return None
        for index, skeleton in enumerate(skeletons):
            if skeleton.count(b"[") + skeleton.count(b"{") <= limit:
                continue
            item = items[index] if items is not None else orjson.loads(values[index])
            if _depth(item) > limit:
                where = f"record {index + 1}" if nested or len(values) > 1 else "the record"
                return _malformed(f"{where} is nested deeper than {limit} levels")
        return None

    def _too_deep(self, items: Sequence[Any], *, nested: bool) -> Refusal:
        """Refuse the first of ``items`` that orjson cannot write (nested deeper than
        ``MAX_JSON_DEPTH``, and so than ``max_depth``)."""
        index = 0
        for index, item in enumerate(items):  # noqa: B007 - the index is the answer
            try:
                orjson.dumps(item)
            except orjson.JSONEncodeError:
                break
        where = f"record {index + 1}" if nested or len(items) > 1 else "the record"
        return _malformed(f"{where} is nested deeper than {self.limits.max_depth} levels")


def _malformed(message: str) -> Refusal:
    return Refusal(400, "malformed_body", message)


def _keys(items: Sequence[Any], key_field: str | None) -> list[bytes | None] | None:
    if key_field is None:
        return None
    keys: list[bytes | None] = []
    for item in items:
        key = item.get(key_field) if isinstance(item, dict) else None
        if key is None:
            keys.append(None)
        elif isinstance(key, str):
            keys.append(key.encode())
        else:
            keys.append(exact_dumps(key))
    return keys if keys.count(None) != len(keys) else None


def _depth(value: Any) -> int:
    """Return how deeply arrays and objects nest in ``value`` (a scalar: 0)."""
    deepest = 0
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        deepest = max(deepest, depth)
        stack.extend((child, depth + 1) for child in children)
    return deepest
