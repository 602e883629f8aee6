"""The broker's metrics (see ``headwater.store``'s ``_metrics.py``).

Theory of operation. Measured per request, by the connection that answered it:
``headwater_broker_requests_total{api, error}`` (the response's error code: its top-level
one, else the first one of its topics and partitions that is not NONE, else NONE) and
``headwater_broker_request_seconds{api}`` (from the request's frame being decoded to its
response being handed to the socket, so a Produce's wait for its fsync counts). The
labelled children are looked up once per API and error, then kept
(:class:`RequestMeter`): a request costs a dict lookup, a counter increment and a
histogram observation.

Read at scrape time from every serving broker: connections open and accepted,
connections closed for bad input or a failed handler, fetches waiting, and the bytes
received and sent (counted by the connections as plain integers, ``statistics()``).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from headwater.store import MetricSet, Tracked

from ._protocol import ApiKey, KafkaErrorCode

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry, Counter, Histogram
    from prometheus_client.metrics_core import Metric

    from ._server import Broker

#: From a Metadata answered from memory (~100 µs) to a long-polling Fetch (its max wait).
REQUEST_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5,
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class BrokerMetrics:
    """The broker's metrics in the process's registry."""

    requests: Counter
    request_seconds: Histogram
    #: The serving brokers that the collector reads.
    brokers: Tracked[Broker]


def _define(registry: CollectorRegistry) -> BrokerMetrics:
    from prometheus_client import Counter, Histogram  # noqa: PLC0415 - only once metrics are on

    brokers: Tracked[Broker] = Tracked()
    registry.register(_BrokerCollector(brokers))
    return BrokerMetrics(
        Counter(
            "headwater_broker_requests",
            "Requests answered, by API and the response's error code (NONE: no error).",
            ["api", "error"],
            registry=registry,
        ),
        Histogram(
            "headwater_broker_request_seconds",
            "Time from a request's arrival to its response being sent, by API.",
            ["api"],
            buckets=REQUEST_BUCKETS,
            registry=registry,
        ),
        brokers,
    )


#: The broker's metrics, or None while metrics are off.
BROKER_METRICS = MetricSet(_define)


def response_error_code(body: Mapping[str, Any]) -> int:
    """Return a response's error code: its own, else the first non-zero one nested in its
    lists (topics, partitions, ...), else 0."""
    code = body.get("error_code", 0)
    if code:
        return int(code)
    for value in body.values():
        if type(value) is list:
            for item in value:
                if type(item) is not dict:
                    break
                code = response_error_code(item)
                if code:
                    return code
    return 0


class RequestMeter:
    """Counts and times one broker's requests, keeping the labelled children it uses."""

    __slots__ = ("_counts", "_metrics", "_timers")

    def __init__(self, metrics: BrokerMetrics) -> None:
        self._metrics = metrics
        self._counts: dict[tuple[int, int], Counter] = {}
        self._timers: dict[int, Histogram] = {}

    def record(self, api_key: int, body: Mapping[str, Any] | None, seconds: float) -> None:
        """Note one request of ``api_key`` answered with ``body`` (None: no response)."""
        error = 0 if body is None else response_error_code(body)
        counter = self._counts.get((api_key, error))
        if counter is None:
            counter = self._counts[(api_key, error)] = self._metrics.requests.labels(
                _name(ApiKey, api_key), _name(KafkaErrorCode, error)
            )
        counter.inc()
        timer = self._timers.get(api_key)
        if timer is None:
            timer = self._timers[api_key] = self._metrics.request_seconds.labels(
                _name(ApiKey, api_key)
            )
        timer.observe(seconds)


def _name(codes: type[ApiKey] | type[KafkaErrorCode], value: int) -> str:
    try:
        return codes(value).name
    except ValueError:
        return str(value)


class _BrokerCollector:
    """Reads every tracked broker's counters at scrape time."""

    def __init__(self, brokers: Tracked[Broker]) -> None:
        self._brokers = brokers

    def collect(self) -> Iterator[Metric]:
        """Yield the metric families (called by the registry, in the event loop's thread)."""
        from prometheus_client.core import (  # noqa: PLC0415
            CounterMetricFamily,
            GaugeMetricFamily,
        )

        brokers = [broker.statistics() for broker in self._brokers]
        if not brokers:
            return

        def total(field: str) -> int:
            return sum(getattr(stats, field) for stats in brokers)

        yield GaugeMetricFamily(
            "headwater_broker_connections", "Client connections open.", total("connections_open")
        )
        yield CounterMetricFamily(
            "headwater_broker_connections_accepted",
            "Client connections accepted.",
            total("connections_total"),
        )
        yield CounterMetricFamily(
            "headwater_broker_rejected_connections",
            "Connections closed for bad input (a frame over the limit, a malformed "
            "request, an API or version not served).",
            total("rejected_connections"),
        )
        yield CounterMetricFamily(
            "headwater_broker_handler_failures",
            "Connections closed because a request handler failed (a bug).",
            total("handler_failures"),
        )
        yield GaugeMetricFamily(
            "headwater_broker_fetches_waiting",
            "Fetch requests waiting for data (long polls).",
            total("fetches_waiting"),
        )
        yield CounterMetricFamily(
            "headwater_broker_received_bytes", "Bytes received from clients.", total("bytes_in")
        )
        yield CounterMetricFamily(
            "headwater_broker_sent_bytes", "Bytes sent to clients.", total("bytes_out")
        )
