"""Webhook sink: POST a topic's records in batches (a JSON array) to a URL.

Theory of operation
-------------------
Each partition's records go out in order, in batches of at most ``max_batch_records``
records and ``max_batch_bytes`` bytes, one request at a time. A request carries:

- the body ``[value, value, ...]``: each record's value as stored (a value that is not
  JSON goes to the dead-letter topic instead; a null value is ``null``);
- ``Idempotency-Key: <topic>-<partition>-<first offset>``, the same on every retry of
  the batch and after a restart, so a receiver can drop a batch it has already taken;
- ``Headwater-Topic``, ``Headwater-Partition``, ``Headwater-First-Offset``,
  ``Headwater-Last-Offset``;
- with a secret, ``Headwater-Signature: sha256=<hex>``, the HMAC-SHA256 of the body.

Answers. 2xx: delivered. Connection errors, timeouts, 408, 429 and 5xx: retried (with
tenacity) for as long as it takes, each wait a capped exponential backoff with full
jitter, or what ``Retry-After`` asks for when the answer has one; every failure is
logged. Any other answer (a 4xx, a 3xx): refused for good, and the batch's records go
to the dead-letter topic with the status and the start of the answer's body.

Offsets. A partition's offset is committed only after a 2xx or a dead-letter write. So
that a batch is the same batch on every try, even after the process died while sending
it, its extent is committed first, as the commit's note (``{"batch": [first, last]}``
at offset ``first``): riding on the commit of the batch before it when that batch was
followed by more records in hand, and as a commit of its own otherwise. A restarted sink
finds the note and sends exactly that batch again, under the same key.
"""

from __future__ import annotations

import email.utils
import hashlib
import hmac
import logging
import time
from collections import deque
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import anyio
import httpx
import orjson
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, wait_random_exponential

from headwater.groups import ConsumerBatch, OffsetAndMetadata, TopicPartition
from headwater.store import Record, validate_topic_name

from ._dead_letters import STATUS_HEADER, DeadLetters, dead_letter_topic
from ._errors import ConnectorConfigError
from ._log import ConnectorLog
from ._position import decode_checkpoint
from ._sink_runner import Checkpoint, Committer

logger = logging.getLogger("headwater.connectors")

SIGNATURE_HEADER = "Headwater-Signature"
_KEPT_ANSWER_BYTES = 512


@dataclass(frozen=True, kw_only=True, slots=True)
class WebhookConfig:
    """Settings of a :class:`WebhookSink`.

    :param topic: the input topic.
    :param url: where batches are POSTed (http or https).
    :param secret: signs each body (HMAC-SHA256) when given.
    :param max_batch_records: the most records in one request.
    :param max_batch_bytes: the most bytes of values in one request (a larger record is
        sent alone).
    :param timeout_s: how long one request may take.
    :param backoff_s: the first retry's largest wait; each retry doubles it.
    :param max_backoff_s: the largest wait between retries (Retry-After aside).
    :param max_retry_after_s: the longest ``Retry-After`` honoured.
    :param headers: further headers sent with every request.
    :param dead_letter_topic: where refused records go.
    """

    topic: str
    url: str
    secret: str | None = None
    max_batch_records: int = 500
    max_batch_bytes: int = 1 << 20
    timeout_s: float = 30.0
    backoff_s: float = 0.5
    max_backoff_s: float = 60.0
    max_retry_after_s: float = 300.0
    headers: tuple[tuple[str, str], ...] = ()
    dead_letter_topic: str | None = None

    def __post_init__(self) -> None:
        if not self.topic:
            raise ConnectorConfigError("a webhook sink needs a topic")
        validate_topic_name(self.topic)
        if self.dead_letter_topic is not None:
            validate_topic_name(self.dead_letter_topic)
        try:
            url = httpx.URL(self.url)
        except httpx.InvalidURL as exc:
            raise ConnectorConfigError(f"webhook URL {self.url!r} is not valid: {exc}") from None
        if url.scheme not in ("http", "https") or not url.host:
            raise ConnectorConfigError(
                f"webhook URL {self.url!r} is not an http:// or https:// URL with a host"
            )
        for name in ("max_batch_records", "max_batch_bytes"):
            if getattr(self, name) < 1:
                raise ConnectorConfigError(f"{name} must be at least 1, got {getattr(self, name)}")
        for name in ("timeout_s", "backoff_s", "max_backoff_s"):
            if not getattr(self, name) > 0:
                raise ConnectorConfigError(f"{name} must be > 0, got {getattr(self, name)}")
        if self.max_retry_after_s < 0:
            raise ConnectorConfigError(
                f"max_retry_after_s must be >= 0, got {self.max_retry_after_s}"
            )

    @property
    def dead_letters(self) -> str:
        """The dead-letter topic."""
        return self.dead_letter_topic or dead_letter_topic(self.topic)


@dataclass(frozen=True, slots=True)
class WebhookStatistics:
    """Counters of a :class:`WebhookSink` since it started."""

    requests: int
    delivered: int
    retries: int
    dead_lettered: int


class _RetryableError(Exception):
    """An answer or failure worth retrying; ``retry_after_s`` is the wait asked for."""

    def __init__(self, reason: str, retry_after_s: float | None = None) -> None:
        super().__init__(reason)
        self.retry_after_s = retry_after_s


@dataclass(slots=True)
class _Outcome:
    delivered: bool
    status: int = 0
    reason: str = ""


@dataclass(slots=True)
class _Partition:
    """Per assigned partition: the last offset of a batch whose extent is committed."""

    pending_last: int | None = None
    notes: dict[str, Any] = field(default_factory=dict)


class WebhookSink:
    """The destination side of a webhook sink (a :class:`SinkWriter`; see the module).

    Use as an async context manager: it owns its HTTP client (or uses ``client``).

    :param log: where dead letters go.
    :param config: the sink's settings.
    :param client: an httpx client to send with (one is made and closed otherwise).
    """

    def __init__(
        self, log: ConnectorLog, config: WebhookConfig, *, client: httpx.AsyncClient | None = None
    ) -> None:
        self.config = config
        self.dead_letters = DeadLetters(log, config.dead_letters)
        self._own_client = client is None
        self._client = client or httpx.AsyncClient(timeout=config.timeout_s)
        self._secret = config.secret.encode() if config.secret else None
        self._partitions: dict[TopicPartition, _Partition] = {}
        self._requests = self._delivered = self._retries = self._dead = 0

    async def __aenter__(self) -> WebhookSink:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the HTTP client (if this sink made it)."""
        if self._own_client:
            await self._client.aclose()

    def statistics(self) -> WebhookStatistics:
        """Return the counters so far."""
        return WebhookStatistics(self._requests, self._delivered, self._retries, self._dead)

    # -- SinkWriter ------------------------------------------------------------------

    async def assigned(
        self, partition: TopicPartition, committed: OffsetAndMetadata | None
    ) -> Checkpoint | None:
        """Pick up the extent of a batch that was being sent when the last owner stopped."""
        state = self._partitions[partition] = _Partition()
        if committed is not None:
            extent = decode_checkpoint(committed.metadata).get("batch")
            if (
                isinstance(extent, list)
                and len(extent) == 2
                and extent[0] == committed.offset
                and isinstance(extent[1], int)
            ):
                state.pending_last = extent[1]
        return None

    async def write(self, batch: ConsumerBatch, commit: Committer) -> Checkpoint | None:
        """Send the batch's records, batch after batch; return the offset after them."""
        tp = batch.topic_partition
        state = self._partitions.setdefault(tp, _Partition())
        records = batch.records
        start = 0
        while start < len(records):
            stop = self._batch_end(records, start, state.pending_last)
            first, last = records[start].offset, records[stop - 1].offset
            if state.pending_last is None:
                # The extent goes on record before the first try (see the module).
                await commit(tp, Checkpoint(first, {"batch": [first, last]}))
            state.pending_last = None
            await self._deliver(tp, records[start:stop])
            start = stop
            if start < len(records):
                following = records[self._batch_end(records, start, None) - 1].offset
                note = {"batch": [records[start].offset, following]}
                if await commit(tp, Checkpoint(records[start].offset, note)):
                    state.pending_last = following
        return Checkpoint(records[-1].offset + 1)

    def next_deadline(self) -> float | None:
        """A webhook sink has no timed work."""
        return None

    async def tick(self) -> dict[TopicPartition, Checkpoint]:
        """Nothing is due."""
        return {}

    async def revoked(self, partition: TopicPartition, *, lost: bool) -> Checkpoint | None:
        """Forget the partition (nothing is held back: every batch is sent or not)."""
        self._partitions.pop(partition, None)
        return None

    # -- sending ---------------------------------------------------------------------

    def _batch_end(self, records: list[Record], start: int, last: int | None) -> int:
        """Return where the batch starting at ``start`` ends (exclusive)."""
        if last is not None:
            stop = start
            while stop < len(records) and records[stop].offset <= last:
                stop += 1
            return max(stop, start + 1)
        limit = self.config.max_batch_bytes
        size = 0
        stop = start
        end = min(len(records), start + self.config.max_batch_records)
        while stop < end:
            size += len(records[stop].value or b"null") + 1
            if size > limit and stop > start:
                break
            stop += 1
        return stop

    async def _deliver(self, tp: TopicPartition, records: list[Record]) -> None:
        values = [b"null" if r.value is None else r.value for r in records]
        good, bad = _split_json(records, values)
        if bad:
            await self._dead_letter(
                tp, bad, 0, "the value is not JSON: a webhook body cannot hold it"
            )
        if not good:
            return
        body = b"[" + b",".join(v for _, v in good) + b"]"
        first, last = records[0].offset, records[-1].offset
        headers = {
            "Content-Type": "application/json",
            "Idempotency-Key": f"{tp.topic}-{tp.partition}-{first}",
            "Headwater-Topic": tp.topic,
            "Headwater-Partition": str(tp.partition),
            "Headwater-First-Offset": str(first),
            "Headwater-Last-Offset": str(last),
            **dict(self.config.headers),
        }
        if self._secret is not None:
            digest = hmac.new(self._secret, body, hashlib.sha256).hexdigest()
            headers[SIGNATURE_HEADER] = f"sha256={digest}"
        outcome = await self._send_retrying(body, headers, tp, first)
        if outcome.delivered:
            self._delivered += len(good)
            return
        refused = [record for record, _ in good]
        await self._dead_letter(tp, refused, outcome.status, outcome.reason)

    async def _send_retrying(
        self, body: bytes, headers: dict[str, str], tp: TopicPartition, first: int
    ) -> _Outcome:
        def report(state: RetryCallState) -> None:
            self._retries += 1
            exc = state.outcome.exception() if state.outcome is not None else None
            wait = state.next_action.sleep if state.next_action is not None else 0.0
            logger.warning(
                "webhook %s: batch %s-%d from offset %d: %s; try %d in %.2f s",
                self.config.url,
                tp.topic,
                tp.partition,
                first,
                exc,
                state.attempt_number + 1,
                wait,
            )

        retrying = AsyncRetrying(
            retry=retry_if_exception_type(_RetryableError),
            wait=_RetryableErrorAfterOrJitter(self.config),
            sleep=anyio.sleep,
            before_sleep=report,
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                return await self._send(body, headers)
        raise AssertionError("unreachable: tenacity retries for ever")  # pragma: no cover

    async def _send(self, body: bytes, headers: dict[str, str]) -> _Outcome:
        self._requests += 1
        try:
            response = await self._client.post(self.config.url, content=body, headers=headers)
        except httpx.TransportError as exc:  # connection refused or reset, timeouts
            raise _RetryableError(f"{type(exc).__name__}: {exc or 'no answer'}") from exc
        status = response.status_code
        if 200 <= status < 300:
            return _Outcome(True, status)
        reason = f"HTTP {status}: {response.text[:_KEPT_ANSWER_BYTES]}"
        if status in (408, 429) or status >= 500:
            raise _RetryableError(reason, _retry_after_s(response.headers.get("retry-after")))
        return _Outcome(False, status, reason)

    async def _dead_letter(
        self, tp: TopicPartition, records: list[Record], status: int, reason: str
    ) -> None:
        self._dead += len(records)
        count = len(records)
        await self.dead_letters.write_from_partition(
            tp.topic,
            tp.partition,
            offsets=[r.offset for r in records],
            values=[r.value for r in records],
            keys=[r.key for r in records],
            reasons=[reason.encode()] * count,
            extra=[(STATUS_HEADER, [b"%d" % status] * count)] if status else (),
        )


class _RetryableErrorAfterOrJitter:
    """Tenacity's wait: ``Retry-After`` when the answer had one (capped), otherwise a
    capped exponential backoff with full jitter."""

    def __init__(self, config: WebhookConfig) -> None:
        self._jitter = wait_random_exponential(
            multiplier=config.backoff_s, max=config.max_backoff_s
        )
        self._cap = config.max_retry_after_s

    def __call__(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome is not None else None
        if isinstance(exc, _RetryableError) and exc.retry_after_s is not None:
            return min(exc.retry_after_s, self._cap)
        return float(self._jitter(state))


def _retry_after_s(value: str | None) -> float | None:
    """Read ``Retry-After``: seconds, or an HTTP date; None when absent or unreadable."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _split_json(
    records: list[Record], values: list[bytes]
) -> tuple[list[tuple[Record, bytes]], list[Record]]:
    """Return the records whose value is JSON (with it) and those whose value is not."""
    try:
        deque(map(orjson.loads, values), maxlen=0)
    except orjson.JSONDecodeError:
        pass
    else:
        return list(zip(records, values, strict=True)), []
    good = []
    bad = []
    for record, value in zip(records, values, strict=True):
        try:
            orjson.loads(value)
        except orjson.JSONDecodeError:
            bad.append(record)
        else:
            good.append((record, value))
    return good, bad
