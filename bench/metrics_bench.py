"""What the metrics add to one unit of hot-path work, measured in this process.

The end-to-end comparisons (``pipeline_bench.py --metrics-cost``, ``broker_bench.py
--metrics-cost``) are the figures that count, but on a busy machine their run-to-run
spread is wider than the few percent they look for. This prints the other side of the
ledger, which a busy machine disturbs far less: the time the metrics' own work takes per
unit it is done for, with metrics on, against the same code path with metrics off --

* per broker request: counting it by API and error code (the error code found in the
  response) and observing its latency;
* per processed batch: observing its latency (and the commit's, per commit);
* per flush: observing its fsync time;
* per scrape: rendering the registry of a broker-sized process.

Multiply by the units per second of a run (the W1 run does a few hundred batches a
second; a producer with ``linger.ms=5`` sends a few hundred requests a second) for the
share of a core the metrics take.

Usage: ``python bench/metrics_bench.py [--calls N]``.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

from prometheus_client import generate_latest

from headwater.broker._metrics import BROKER_METRICS, RequestMeter
from headwater.broker._protocol import ApiKey
from headwater.processing._metrics import PROCESSING_METRICS
from headwater.store import enable_metrics
from headwater.store._store_metrics import STORE_METRICS

#: A Produce response for one partition, as the broker answers a librdkafka producer.
PRODUCE_RESPONSE = {
    "responses": [
        {
            "name": "bench",
            "partition_responses": [
                {
                    "index": 0,
                    "error_code": 0,
                    "base_offset": 1234,
                    "log_append_time_ms": -1,
                    "log_start_offset": 0,
                    "record_errors": [],
                    "error_message": None,
                }
            ],
        }
    ],
    "throttle_time_ms": 0,
}


def per_call_us(fn: Callable[[], object], calls: int) -> float:
    """Return the best of 5 timings of ``calls`` calls of ``fn``, in µs per call."""
    best = float("inf")
    for _ in range(5):
        started = time.perf_counter()
        for _ in range(calls):
            fn()
        best = min(best, time.perf_counter() - started)
    return best / calls * 1e6


def main() -> None:
    """Print the per-unit costs."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=200_000)
    args = parser.parse_args()
    registry = enable_metrics()
    broker = BROKER_METRICS.get()
    processing = PROCESSING_METRICS.get()
    store = STORE_METRICS.get()
    assert broker is not None and processing is not None and store is not None
    meter = RequestMeter(broker)
    batch = processing.batch_seconds.labels("bench")
    perf_counter = time.perf_counter

    request = per_call_us(
        lambda: meter.record(ApiKey.PRODUCE, PRODUCE_RESPONSE, perf_counter() - 1.0), args.calls
    )
    timed_batch = per_call_us(lambda: batch.observe(perf_counter() - 1.0), args.calls)
    fsync = per_call_us(lambda: store.fsync_seconds.observe(0.002), args.calls)
    print(f"per broker request (count by API and error, observe latency): {request:.2f} µs")
    print(f"per processed batch (observe its latency):                    {timed_batch:.2f} µs")
    print(f"per flush (observe its fsync time):                           {fsync:.2f} µs")
    for api in ApiKey:  # a scrape of a broker that has answered every API
        meter.record(api, {"error_code": 0}, 0.001)
    scrape = per_call_us(lambda: generate_latest(registry), 200) / 1000
    print(f"per scrape of a broker-sized registry (no open store):        {scrape:.2f} ms")


if __name__ == "__main__":
    main()
