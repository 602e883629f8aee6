"""The consumer groups' metrics (see ``headwater.store``'s ``_metrics.py``).

Read at scrape time from every running group coordinator: per group, its members,
generation and the rebalances it completed; per group and partition, the committed
offset and the lag behind the partition's high watermark (the records the group has
yet to read, as ``kafka-consumer-groups --describe`` reports it).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from headwater.store import MetricSet, StoreError, Tracked

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry
    from prometheus_client.metrics_core import Metric

    from ._host import GroupCoordinator


@dataclass(frozen=True, slots=True)
class GroupMetrics:
    """The groups' metrics in the process's registry."""

    #: The running coordinators that the collector reads.
    coordinators: Tracked[GroupCoordinator]


def _define(registry: CollectorRegistry) -> GroupMetrics:
    coordinators: Tracked[GroupCoordinator] = Tracked()
    registry.register(_GroupCollector(coordinators))
    return GroupMetrics(coordinators)


#: The groups' metrics, or None while metrics are off.
GROUP_METRICS = MetricSet(_define)


class _GroupCollector:
    """Reads every tracked coordinator's groups at scrape time."""

    def __init__(self, coordinators: Tracked[GroupCoordinator]) -> None:
        self._coordinators = coordinators

    def collect(self) -> Iterator[Metric]:
        """Yield the metric families (called by the registry, in the event loop's thread)."""
        from prometheus_client.core import (  # noqa: PLC0415
            CounterMetricFamily,
            GaugeMetricFamily,
        )

        group, partition = ["group"], ["group", "topic", "partition"]
        members = GaugeMetricFamily("headwater_group_members", "Members of a group.", labels=group)
        generation = GaugeMetricFamily(
            "headwater_group_generation", "Generation id of a group.", labels=group
        )
        rebalances = CounterMetricFamily(
            "headwater_group_rebalances",
            "Rebalances a group completed since its coordinator started.",
            labels=group,
        )
        committed = GaugeMetricFamily(
            "headwater_group_committed_offset",
            "Offset a group committed for a partition (the next one it reads).",
            labels=partition,
        )
        lag = GaugeMetricFamily(
            "headwater_group_lag",
            "Records of a partition a group has yet to read: the high watermark minus "
            "the committed offset.",
            labels=partition,
        )
        for coordinator in self._coordinators:
            store = coordinator.store
            for stats in coordinator.statistics():
                name = stats.group_id
                members.add_metric([name], stats.members)
                generation.add_metric([name], stats.generation_id)
                rebalances.add_metric([name], stats.rebalances)
                for (topic, index), offset in sorted(stats.committed.items()):
                    labels = [name, topic, str(index)]
                    committed.add_metric(labels, offset)
                    try:
                        end = store.partition(topic, index).high_watermark
                    except StoreError:  # the topic was deleted since
                        continue
                    lag.add_metric(labels, max(end - offset, 0))
        yield from (members, generation, rebalances, committed, lag)
