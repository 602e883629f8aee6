"""What ``headwater top`` shows, from two samples of a log: pure, no I/O.

A :class:`Sample` is what one look at a log found: each topic's partitions' start and end
offsets, each consumer group's state, members and committed offsets, and each app's
counters (read from its ``/metrics``). :func:`render` turns the latest sample, and the one
before it, into tables:

* topics: partitions, records, records/s in (the end offsets' growth) and out (the
  growth of every group's committed offsets on the topic);
* groups: per partition, the committed offset, the end, the lag and its trend (``▼``
  shrinking, ``▲`` growing, ``=`` steady);
* apps: per operator, records/s in and out, and what it skipped and dead-lettered; the lag
  of each task.

Rates need two samples: in the first frame they are ``-``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from headwater.groups import TopicPartition
from headwater.store import is_internal_topic

_NONE = "-"


@dataclass(frozen=True, slots=True)
class GroupSample:
    """One consumer group: its state, members and, per partition, (committed, end)."""

    state: str
    members: int
    partitions: Mapping[TopicPartition, tuple[int | None, int | None]]


@dataclass(frozen=True, slots=True)
class AppSample:
    """One app's counters from its metrics: per operator (in, out, skipped, dead-lettered),
    and per task its lag."""

    operators: Mapping[str, tuple[float, float, float, float]]
    lag: Mapping[str, float]


@dataclass(frozen=True, slots=True)
class Sample:
    """One look at a log (and its apps), taken at ``at`` (monotonic seconds)."""

    at: float
    topics: Mapping[str, tuple[tuple[int, int], ...]]
    groups: Mapping[str, GroupSample]
    apps: Mapping[str, AppSample] = field(default_factory=dict)
    #: Apps whose metrics could not be read, with why.
    unreachable: Mapping[str, str] = field(default_factory=dict)


def render(current: Sample, previous: Sample | None, *, title: str) -> RenderableType:
    """Return the tables for ``current``, with rates since ``previous`` (if any)."""
    seconds = None if previous is None else current.at - previous.at
    if seconds is not None and seconds <= 0:
        seconds = None
    parts: list[RenderableType] = [Text(title, style="bold")]
    parts.append(_topics(current, previous, seconds))
    parts.append(_groups(current, previous))
    if current.apps or current.unreachable:
        parts.append(_apps(current, previous, seconds))
    return Group(*parts)


def _rate(now: float, before: float | None, seconds: float | None) -> str:
    if before is None or seconds is None:
        return _NONE
    return f"{max(now - before, 0) / seconds:,.0f}"


def _topics(current: Sample, previous: Sample | None, seconds: float | None) -> Table:
    table = Table("topic", "partitions", "records", "in/s", "out/s", title="topics")
    consumed = consumed_per_topic(current)
    consumed_before = None if previous is None else consumed_per_topic(previous)
    for name, partitions in sorted(current.topics.items()):
        if is_internal_topic(name):
            continue
        ends = sum(end for _, end in partitions)
        records = sum(end - start for start, end in partitions)
        before = None
        if previous is not None and name in previous.topics:
            before = sum(end for _, end in previous.topics[name])
        out_before = None if consumed_before is None else consumed_before.get(name, 0)
        table.add_row(
            name,
            str(len(partitions)),
            f"{records:,}",
            _rate(ends, before, seconds),
            _rate(consumed.get(name, 0), out_before, seconds),
        )
    return table


def consumed_per_topic(sample: Sample) -> dict[str, int]:
    """Every group's committed offsets summed per topic."""
    totals: dict[str, int] = {}
    for group in sample.groups.values():
        for tp, (committed, _) in group.partitions.items():
            if committed is not None:
                totals[tp.topic] = totals.get(tp.topic, 0) + committed
    return totals


def lag_trend(lag: int | None, before: int | None) -> str:
    """``▼`` when the lag shrank since the last sample, ``▲`` when it grew, ``=`` when not."""
    if lag is None or before is None:
        return ""
    if lag < before:
        return "▼"
    return "▲" if lag > before else "="


def _lag(committed: int | None, end: int | None) -> int | None:
    if committed is None or end is None:
        return None
    return max(end - committed, 0)


def _groups(current: Sample, previous: Sample | None) -> Table:
    table = Table(
        "group", "state", "members", "partition", "committed", "end", "lag", "", title="groups"
    )
    for group_id, group in sorted(current.groups.items()):
        before = None if previous is None else previous.groups.get(group_id)
        first = True
        for tp, (committed, end) in sorted(group.partitions.items()):
            lag = _lag(committed, end)
            lag_before = None
            if before is not None and tp in before.partitions:
                lag_before = _lag(*before.partitions[tp])
            table.add_row(
                group_id if first else "",
                group.state if first else "",
                str(group.members) if first else "",
                f"{tp.topic}/{tp.partition}",
                _NONE if committed is None else f"{committed:,}",
                _NONE if end is None else f"{end:,}",
                _NONE if lag is None else f"{lag:,}",
                lag_trend(lag, lag_before),
            )
            first = False
        if first:
            table.add_row(group_id, group.state, str(group.members), _NONE, "", "", "", "")
    return table


def _apps(current: Sample, previous: Sample | None, seconds: float | None) -> Table:
    table = Table(
        "app", "operator / task", "in/s", "out/s", "skipped", "dead-lettered", "lag", title="apps"
    )
    for name, app in sorted(current.apps.items()):
        before = None if previous is None else previous.apps.get(name)
        first = True
        for operator, (records_in, records_out, skipped, dead) in app.operators.items():
            was = None if before is None else before.operators.get(operator)
            table.add_row(
                name if first else "",
                operator,
                _rate(records_in, None if was is None else was[0], seconds),
                _rate(records_out, None if was is None else was[1], seconds),
                f"{skipped:,.0f}",
                f"{dead:,.0f}",
                "",
            )
            first = False
        for task, lag in sorted(app.lag.items()):
            table.add_row(name if first else "", f"task {task}", "", "", "", "", f"{lag:,.0f}")
            first = False
    for url, why in sorted(current.unreachable.items()):
        table.add_row(url, f"(metrics not read: {why})", "", "", "", "", "")
    return table
