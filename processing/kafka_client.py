"""Talking to a Kafka-protocol cluster through confluent-kafka: what the CLI's commands
and the connectors share.

librdkafka's calls block, and its delivery and rebalance callbacks run in the thread that
polls: :func:`blocking` runs a call in a worker thread (``anyio.to_thread``), and
:func:`finish` runs a closing call (``close``, ``flush``) to its end even when the task
is being cancelled. :func:`to_record` turns a consumed message into a store
:class:`~headwater.store.Record`.

:class:`ClusterClient` is one cluster as its clients see it: their configuration (the
bootstrap addresses, librdkafka's log lines on the ``headwater.kafka`` logger, silent
unless ``HEADWATER_DEBUG`` is set, and an error callback that notes why no broker can be
reached), and metadata requests that fail within about ``PROBE_S`` once librdkafka has
found no broker reachable, instead of waiting out ``TIMEOUT_S``. Each user says which of
its own errors a failure becomes (:meth:`ClusterClient.failure`,
:meth:`ClusterClient.unreachable`).

A module of its own, not re-exported by ``headwater.processing``: importing it loads
librdkafka, which an app on a data directory never needs.
"""

from __future__ import annotations

import functools
import logging
import os
import sys
from collections.abc import Callable, Mapping
from typing import Any, TypeVar, cast

import anyio
import anyio.to_thread
from confluent_kafka import Consumer, KafkaError, KafkaException, Message
from confluent_kafka.admin import ClusterMetadata  # type: ignore[attr-defined]  # not in __all__

from headwater.store import HeadwaterError, Record

from ._errors import ClusterError

__all__ = (
    "CONSUMER_SETTINGS",
    "PROBE_S",
    "TIMEOUT_S",
    "ClusterClient",
    "blocking",
    "finish",
    "to_record",
)

#: Settings of every consumer headwater makes. librdkafka postpones a partition's next
#: fetch by ``fetch.queue.backoff.ms`` (1 s by default) whenever its local queue is over
#: ``queued.min.messages``, which happens as soon as the cluster is ahead of the Python
#: code reading it; the queue's thresholds still bound its memory, so a short backoff
#: only stops idling partitions that are about to be read.
CONSUMER_SETTINGS: Mapping[str, Any] = {"fetch.queue.backoff.ms": 10}

T = TypeVar("T")
_Headers = tuple[tuple[str, bytes | None], ...]

#: How long a request to the cluster may take, librdkafka's retries included.
TIMEOUT_S = 15.0
#: How long one metadata request may wait before the cluster's reachability is checked.
PROBE_S = 0.5

_logger = logging.getLogger("headwater.kafka")
_logger.propagate = False
if os.environ.get("HEADWATER_DEBUG"):
    _logger.addHandler(logging.StreamHandler(sys.stderr))
else:
    _logger.addHandler(logging.NullHandler())

_UNREACHABLE = (KafkaError._TRANSPORT, KafkaError._RESOLVE, KafkaError._ALL_BROKERS_DOWN)


async def blocking(fn: Callable[..., T], *args: Any) -> T:
    """Run a blocking librdkafka call in a worker thread."""
    return await anyio.to_thread.run_sync(functools.partial(fn, *args))


async def finish(fn: Callable[..., T], *args: Any) -> T:
    """Run a closing call (``close``, ``flush``) in a worker thread to its end, even when
    the task is being cancelled: a consumer that is not closed does not leave its group,
    and a producer not flushed loses what it holds."""
    with anyio.CancelScope(shield=True):
        result = await blocking(fn, *args)
    return result


def to_record(message: Message) -> Record:
    """Return a consumed message as a store :class:`~headwater.store.Record`."""
    _, timestamp = message.timestamp()
    headers = cast(_Headers, tuple(message.headers() or ()))
    return Record(message.offset() or 0, timestamp, message.key(), message.value(), headers)


class ClusterClient:
    """A Kafka-protocol cluster as its clients see it (see the module).

    :param bootstrap: ``HOST:PORT[,HOST:PORT...]`` (checked by the caller).
    :param description: what to call it in messages (default: ``the broker at BOOTSTRAP``).
    :param settings: librdkafka settings for every client (a client's own come after).
    """

    def __init__(
        self,
        bootstrap: str,
        *,
        description: str | None = None,
        settings: Mapping[str, Any] | None = None,
    ) -> None:
        self.bootstrap = bootstrap
        self.settings = dict(settings or {})
        self._description = description or f"the broker at {bootstrap}"
        #: Why no broker could be reached (set by librdkafka's error callback, in
        #: whichever thread polls; the first reason says the most).
        self.unreachable_reason: str | None = None

    @property
    def description(self) -> str:
        """``the broker at HOST:PORT``, or the description given."""
        return self._description

    def config(self, **settings: Any) -> dict[str, Any]:
        """Return a librdkafka configuration for this cluster with ``settings``."""
        return {
            **self.settings,
            "bootstrap.servers": self.bootstrap,
            "logger": _logger,
            "error_cb": self._on_error,
            **settings,
        }

    def consumer_config(self, **settings: Any) -> dict[str, Any]:
        """Return :meth:`config` for a consumer: with :data:`CONSUMER_SETTINGS` under
        ``settings``."""
        return self.config(**{**CONSUMER_SETTINGS, **settings})

    def _on_error(self, error: KafkaError) -> None:
        if error.code() in _UNREACHABLE and self.unreachable_reason is None:
            self.unreachable_reason = error.str()
        _logger.debug("librdkafka error: %s", error)

    def failure(self, action: str, error: KafkaError | KafkaException) -> HeadwaterError:
        """Return the error to raise when ``action`` failed on this cluster (a user of
        this class raises its own)."""
        err: KafkaError = error.args[0] if isinstance(error, KafkaException) else error
        return ClusterError(f"{action} on {self.description} failed: {err.str()}")

    def unreachable(self, reason: str, code: int) -> HeadwaterError:
        """Return the error to raise when no broker of the cluster can be reached (a
        user of this class raises its own)."""
        return ClusterError(f"cannot reach {self.description}: {reason}")

    def list_metadata(self, client: Consumer, topic: str | None, action: str) -> ClusterMetadata:
        """Return the cluster's metadata (``topic``'s only, when given) as ``client`` gets
        it, blocking (see the module); a failure other than reachability is ``action``'s.
        """
        attempts = max(1, int(TIMEOUT_S / PROBE_S))
        for attempt in range(attempts):
            try:
                metadata: ClusterMetadata = client.list_topics(topic, timeout=PROBE_S)
                return metadata
            except KafkaException as exc:
                code = exc.args[0].code()
                if code not in (*_UNREACHABLE, KafkaError._TIMED_OUT):
                    raise self.failure(action, exc) from None
                client.poll(0)  # serves the error callback, which says why
                if self.unreachable_reason is not None or attempt == attempts - 1:
                    reason = self.unreachable_reason or exc.args[0].str()
                    raise self.unreachable(reason, code) from None
        raise AssertionError("unreachable")
