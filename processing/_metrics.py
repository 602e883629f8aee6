"""The processing runtime's metrics (see ``headwater.store``'s ``_metrics.py``).

Theory of operation. Each operator (a live graph node) has one :class:`OperatorCounts`
per pipeline, shared by its step in every task, so its totals outlive the tasks that a
rebalance closes. A step adds a batch's size when it passes the batch on (its own
``records_out``, each child's ``records_in``); a source counts what it reads, a sink what
it writes; a failing record counts once under its node's policy (skipped or dead
lettered). These are plain integers, kept whether or not metrics are on: one addition
per batch and step.

Measured when metrics are on: ``headwater_app_batch_seconds{app}``, a batch from the
moment its task takes it to its outputs being durable;
``headwater_app_write_seconds{app}``, the last part of that: from a batch's outputs being
handed to the backend to their being durable (a batch that writes nothing is not
counted); and ``headwater_app_commit_seconds{app}``, one commit of positions. Read at
scrape time from every running app: the operators' counts, the run's totals, the lag of
each task (the records its partitions have yet to read, behind the end offsets the
runtime last looked up, every commit interval, only while metrics are on), and how far
each task's stores got in restoring from their changelogs (records restored, and the
total to read).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from headwater.store import MetricSet, Tracked

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry, Histogram
    from prometheus_client.metrics_core import Metric

    from ._runtime import Runtime

#: A batch takes from well under a millisecond (a few records) to seconds (a slow
#: operator, a long fsync).
BATCH_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


class OperatorCounts:
    """What went through one operator, across every task of a run."""

    __slots__ = ("dead_lettered", "records_in", "records_out", "skipped")

    def __init__(self) -> None:
        self.records_in = 0
        self.records_out = 0
        self.skipped = 0
        self.dead_lettered = 0


@dataclass(frozen=True, slots=True)
class ProcessingMetrics:
    """The runtime's metrics in the process's registry."""

    batch_seconds: Histogram
    commit_seconds: Histogram
    write_seconds: Histogram
    #: The running apps that the collector reads.
    runtimes: Tracked[Runtime]


def _define(registry: CollectorRegistry) -> ProcessingMetrics:
    from prometheus_client import Histogram  # noqa: PLC0415 - only once metrics are on

    runtimes: Tracked[Runtime] = Tracked()
    registry.register(_RuntimeCollector(runtimes))
    return ProcessingMetrics(
        Histogram(
            "headwater_app_batch_seconds",
            "Time from a task taking a batch to its outputs being durable.",
            ["app"],
            buckets=BATCH_BUCKETS,
            registry=registry,
        ),
        Histogram(
            "headwater_app_commit_seconds",
            "Time one commit of an app's positions took.",
            ["app"],
            buckets=BATCH_BUCKETS,
            registry=registry,
        ),
        Histogram(
            "headwater_app_write_seconds",
            "Time from a batch's outputs being handed to the backend to their being durable.",
            ["app"],
            buckets=BATCH_BUCKETS,
            registry=registry,
        ),
        runtimes,
    )


#: The runtime's metrics, or None while metrics are off.
PROCESSING_METRICS = MetricSet(_define)


class _RuntimeCollector:
    """Reads every tracked runtime at scrape time."""

    def __init__(self, runtimes: Tracked[Runtime]) -> None:
        self._runtimes = runtimes

    def collect(self) -> Iterator[Metric]:
        """Yield the metric families (called by the registry, in the event loop's thread)."""
        from prometheus_client.core import (  # noqa: PLC0415
            CounterMetricFamily,
            GaugeMetricFamily,
        )

        operator = ["app", "operator"]
        per_operator = {
            field: CounterMetricFamily(f"headwater_app_operator_{field}", text, labels=operator)
            for field, text in (
                ("records_in", "Records that reached an operator."),
                ("records_out", "Records an operator passed on (a sink: wrote)."),
                ("skipped", "Records an operator failed on and skipped (policy skip)."),
                ("dead_lettered", "Records an operator failed on and dead-lettered."),
            )
        }
        app = ["app"]
        totals = {
            field: CounterMetricFamily(f"headwater_app_{field}", text, labels=app)
            for field, text in (
                ("records_in", "Records an app read from its input topics."),
                ("records_out", "Records an app wrote to its output topics."),
                ("batches", "Batches an app processed."),
                ("commits", "Commits of an app's positions."),
                ("commit_failures", "Commits of an app's positions that failed."),
                ("late", "Records that reached a window after it had closed."),
            )
        }
        lag = GaugeMetricFamily(
            "headwater_app_task_lag",
            "Records a task's partitions have yet to read (behind the end offsets last looked up).",
            labels=["app", "task"],
        )
        store = ["app", "task", "store"]
        restored = GaugeMetricFamily(
            "headwater_app_store_restored_records",
            "Changelog records a task's store has restored (its last restore).",
            labels=store,
        )
        restore_total = GaugeMetricFamily(
            "headwater_app_store_restore_total_records",
            "Changelog records a task's store's last restore had to read.",
            labels=store,
        )
        for runtime in self._runtimes:
            name = runtime.name
            for (task, store_name), progress in sorted(runtime.restore_progress().items()):
                restored.add_metric([name, task, store_name], progress.restored)
                restore_total.add_metric([name, task, store_name], progress.total)
            for label, counts in runtime.operator_counts().items():
                for field, family in per_operator.items():
                    family.add_metric([name, label], getattr(counts, field))
            stats = runtime.statistics()
            for field, family in totals.items():
                family.add_metric([name], getattr(stats, field))
            for task, behind in sorted(runtime.task_lag().items()):
                lag.add_metric([name, task], behind)
        yield from per_operator.values()
        yield from totals.values()
        yield lag
        yield restored
        yield restore_total
