"""The store's metrics (see ``_metrics.py`` for how metrics are made and read).

Measured where it happens: ``headwater_store_fsync_seconds``, each flush's fsyncs
(segments, directory, checkpoint), observed on the partition's owner once the flush is
done.

Read at scrape time from every open writing store, per topic: appends (batches), records
and bytes appended since the store opened; per partition: segments, bytes, log start and
end offsets, high watermark, and the seconds its open took (recovery included); per store:
the seconds its open took.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ._metrics import MetricSet, Tracked

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry, Histogram
    from prometheus_client.metrics_core import Metric

    from ._store import Store

#: Flushes take from tens of microseconds (nothing new to write back) to seconds (a
#: congested disk).
FSYNC_BUCKETS = (0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5)


@dataclass(frozen=True, slots=True)
class StoreMetrics:
    """The store's metrics in the process's registry."""

    fsync_seconds: Histogram
    #: The open writing stores that the collector reads.
    stores: Tracked[Store]


def _define(registry: CollectorRegistry) -> StoreMetrics:
    from prometheus_client import Histogram  # noqa: PLC0415 - only once metrics are on

    stores: Tracked[Store] = Tracked()
    registry.register(_StoreCollector(stores))
    return StoreMetrics(
        Histogram(
            "headwater_store_fsync_seconds",
            "Time one flush of a partition took to fsync its data (group commit: one "
            "flush covers every append that waited for it).",
            buckets=FSYNC_BUCKETS,
            registry=registry,
        ),
        stores,
    )


#: The store's metrics, or None while metrics are off.
STORE_METRICS = MetricSet(_define)


class _StoreCollector:
    """Reads every tracked store's partitions at scrape time."""

    def __init__(self, stores: Tracked[Store]) -> None:
        self._stores = stores

    def collect(self) -> Iterator[Metric]:
        """Yield the metric families (called by the registry, in the event loop's thread)."""
        from prometheus_client.core import (  # noqa: PLC0415
            CounterMetricFamily,
            GaugeMetricFamily,
        )

        topic, partition = ["topic"], ["topic", "partition"]
        appends = CounterMetricFamily(
            "headwater_store_appends", "Batches appended, since the store opened.", labels=topic
        )
        records = CounterMetricFamily(
            "headwater_store_appended_records",
            "Records appended, since the store opened.",
            labels=topic,
        )
        appended = CounterMetricFamily(
            "headwater_store_appended_bytes",
            "Bytes of record batches appended, since the store opened.",
            labels=topic,
        )
        segments = GaugeMetricFamily(
            "headwater_store_segments", "Segments of a partition.", labels=partition
        )
        size = GaugeMetricFamily(
            "headwater_store_size_bytes", "Bytes of a partition's segments.", labels=partition
        )
        start = GaugeMetricFamily(
            "headwater_store_log_start_offset",
            "First offset a partition still stores.",
            labels=partition,
        )
        end = GaugeMetricFamily(
            "headwater_store_log_end_offset",
            "Offset the next record appended to a partition will get.",
            labels=partition,
        )
        watermark = GaugeMetricFamily(
            "headwater_store_high_watermark",
            "End of what readers of a partition see (its durable end, unless durability is never).",
            labels=partition,
        )
        recovery = GaugeMetricFamily(
            "headwater_store_recovery_seconds",
            "Seconds a partition's open took when its store opened (recovery included: "
            "the scan after the last checkpoint, after a crash).",
            labels=partition,
        )
        opened = GaugeMetricFamily(
            "headwater_store_open_seconds",
            "Seconds the store took to open (every partition, recovery included).",
        )
        per_topic: dict[str, list[int]] = {}
        for store in self._stores:
            opened.add_metric([], store.open_seconds)
            for name in store.list_topics():
                totals = per_topic.setdefault(name, [0, 0, 0])
                for p in store.partitions(name):
                    stats = p.log.statistics()
                    totals[0] += stats.appended_batches
                    totals[1] += stats.appended_records
                    totals[2] += stats.appended_bytes
                    labels = [name, str(p.index)]
                    segments.add_metric(labels, stats.segments)
                    size.add_metric(labels, stats.size_bytes)
                    start.add_metric(labels, stats.log_start_offset)
                    end.add_metric(labels, stats.log_end_offset)
                    watermark.add_metric(labels, p.high_watermark)
                    recovery.add_metric(labels, p.log.open_seconds)
        for name, (batches, count, total) in sorted(per_topic.items()):
            appends.add_metric([name], batches)
            records.add_metric([name], count)
            appended.add_metric([name], total)
        yield from (appends, records, appended, segments, size, start, end, watermark)
        yield from (recovery, opened)
