"""What ``headwater ui`` answers, as JSON-ready values: pure, no I/O.

* :func:`overview` turns one look at the log (a ``headwater top``
  :class:`~headwater.cli._top_view.Sample`) and the one before it into topics with their
  partitions' offsets and rates, consumer groups with their lag per partition, and apps
  with their operators' rates;
* :func:`topology` turns an app's operator graph -- the graph ``headwater describe``
  prints -- into nodes, edges and a layered layout (each node's layer is its longest path
  from a source, so every edge points down);
* :func:`record_json` turns a record into what the record browser shows: its value
  decoded as JSON when it is JSON (else as text, else as base64), its headers, and the
  source record its lineage header names.

Rates need two samples: without the one before, they are ``None``.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Mapping
from typing import Any

import orjson

from headwater.processing import App, source_of
from headwater.store import MAX_JSON_DEPTH, Record, exact_dumps, exact_loads, is_internal_topic

from ._top_view import Sample, consumed_per_topic

#: The JSON the endpoints answer: plain dicts and lists.
Json = dict[str, Any]


def _rate(now: float, before: float | None, seconds: float | None) -> float | None:
    if before is None or seconds is None:
        return None
    return max(now - before, 0) / seconds


def _lag(committed: int | None, end: int | None) -> int | None:
    if committed is None or end is None:
        return None
    return max(end - committed, 0)


def overview(current: Sample, previous: Sample | None, *, wall_ms: int) -> Json:
    """Return the topics, groups and apps of ``current``, with rates since ``previous``.

    :param wall_ms: when ``current`` was taken, in epoch milliseconds (its ``at`` is
        monotonic).
    """
    seconds = None if previous is None else current.at - previous.at
    if seconds is not None and seconds <= 0:
        seconds = None
    return {
        "at": wall_ms,
        "topics": _topics(current, previous, seconds),
        "groups": _groups(current, previous),
        "apps": _apps(current, previous, seconds),
        "unreachable": dict(current.unreachable),
    }


def _topics(current: Sample, previous: Sample | None, seconds: float | None) -> list[Json]:
    consumed = consumed_per_topic(current)
    consumed_before = None if previous is None else consumed_per_topic(previous)
    rows = []
    for name, partitions in sorted(current.topics.items()):
        ends = sum(end for _, end in partitions)
        before = None
        if previous is not None and name in previous.topics:
            before = sum(end for _, end in previous.topics[name])
        out_before = None if consumed_before is None else consumed_before.get(name, 0)
        rows.append(
            {
                "name": name,
                "internal": is_internal_topic(name),
                "records": sum(end - start for start, end in partitions),
                "rate_in": _rate(ends, before, seconds),
                "rate_out": _rate(consumed.get(name, 0), out_before, seconds),
                "partitions": [
                    {"partition": i, "log_start_offset": start, "high_watermark": end}
                    for i, (start, end) in enumerate(partitions)
                ],
            }
        )
    return rows


def _groups(current: Sample, previous: Sample | None) -> list[Json]:
    rows = []
    for group_id, group in sorted(current.groups.items()):
        before = None if previous is None else previous.groups.get(group_id)
        partitions: list[Json] = []
        for tp, (committed, end) in sorted(group.partitions.items()):
            lag_before = None
            if before is not None and tp in before.partitions:
                lag_before = _lag(*before.partitions[tp])
            partitions.append(
                {
                    "topic": tp.topic,
                    "partition": tp.partition,
                    "committed": committed,
                    "log_end_offset": end,
                    "lag": _lag(committed, end),
                    "lag_before": lag_before,
                }
            )
        known = [p["lag"] for p in partitions if p["lag"] is not None]
        rows.append(
            {
                "group": group_id,
                "state": group.state,
                "members": group.members,
                "lag": sum(known) if known else None,
                "partitions": partitions,
            }
        )
    return rows


def _apps(current: Sample, previous: Sample | None, seconds: float | None) -> list[Json]:
    rows = []
    for name, app in sorted(current.apps.items()):
        before = None if previous is None else previous.apps.get(name)
        operators = []
        for operator, (records_in, records_out, skipped, dead) in app.operators.items():
            was = None if before is None else before.operators.get(operator)
            operators.append(
                {
                    "operator": operator,
                    "records_in": records_in,
                    "records_out": records_out,
                    "skipped": skipped,
                    "dead_lettered": dead,
                    "rate_in": _rate(records_in, None if was is None else was[0], seconds),
                    "rate_out": _rate(records_out, None if was is None else was[1], seconds),
                }
            )
        rows.append({"name": name, "operators": operators, "lag": dict(sorted(app.lag.items()))})
    return rows


def chart_point(view: Json) -> Json:
    """Return what the charts plot from one :func:`overview`: records/s into each topic
    (not the system's own) and each group's total lag, at ``view["at"]``."""
    return {
        "at": view["at"],
        "rate_in": {
            t["name"]: t["rate_in"]
            for t in view["topics"]
            if not t["internal"] and t["rate_in"] is not None
        },
        "lag": {g["group"]: g["lag"] for g in view["groups"] if g["lag"] is not None},
    }


def topology(app: App) -> Json:
    """Return the app's operator graph as nodes, edges and a layered layout.

    Each node carries its label (``#id kind detail``, as ``headwater describe`` and the
    operators' metrics name it), its role, its topic, and whether it leads to an effect;
    ``layer`` is the length of its longest path from a source, ``slot`` its place in the
    layer (in the order nodes were added).
    """
    name, graph = app.name, app.graph
    live = graph.live_nodes()
    layer: dict[int, int] = {}
    for node in graph.nodes:  # parents always come before their children
        layer[node.id] = max((layer[p.id] + 1 for p in node.parents), default=0)
    slots: dict[int, int] = {}
    nodes = []
    for node in graph.nodes:
        slot = slots.get(layer[node.id], 0)
        slots[layer[node.id]] = slot + 1
        nodes.append(
            {
                "id": node.id,
                "label": node.label,
                "detail": node.spec.detail(node).strip(),
                "kind": node.kind,
                "role": node.spec.role.value,
                "topic": node.topic,
                "internal": node.spec.internal,
                "live": node.id in live,
                "layer": layer[node.id],
                "slot": slot,
            }
        )
    edges = [[parent.id, node.id] for node in graph.nodes for parent in node.parents]
    return {
        "name": name,
        "description": graph.describe(name),
        "nodes": nodes,
        "edges": edges,
        "layers": max(layer.values(), default=-1) + 1,
        "width": max(slots.values(), default=0),
    }


#: How deep JSON may nest to be shown as JSON: orjson writes ``MAX_JSON_DEPTH`` levels at
#: most, and the answers that carry a record wrap its key and value a few levels down.
#: JSON nested deeper (orjson reads 1024) is shown as its text.
MAX_SHOWN_DEPTH = 240


#: Digits enough for an integer a browser's ``JSON.parse`` may round (beyond 2**53).
_LONG_DIGITS = re.compile(rb"\d{16}")


def _bytes_json(data: bytes | None) -> Json | None:
    """Show bytes as JSON when they parse as JSON (and nest no deeper than
    ``MAX_SHOWN_DEPTH``), else as text, else as base64.

    Integers keep every digit (``exact_loads``). A browser reads integers beyond 2**53
    rounded, so a value that may hold one carries its indented text too (``shown``),
    which the page prints instead of its own rendering of ``json``.
    """
    if data is None:
        return None
    try:
        parsed = exact_loads(data)
    except orjson.JSONDecodeError:
        pass
    else:
        # A value nests at most as deep as it has opening brackets: most need no check.
        if data.count(b"[") + data.count(b"{") <= MAX_SHOWN_DEPTH or _shallow(parsed):
            if _LONG_DIGITS.search(data) is None:
                return {"json": parsed}
            return {"json": parsed, "shown": json.dumps(parsed, indent=2, ensure_ascii=False)}
    try:
        text = data.decode()
    except UnicodeDecodeError:
        return {"base64": base64.b64encode(data).decode()}
    return {"text": text}


def _text_or_base64(data: bytes | None) -> Json | None:
    if data is None:
        return None
    try:
        return {"text": data.decode()}
    except UnicodeDecodeError:
        return {"base64": base64.b64encode(data).decode()}


def _shallow(value: Any) -> bool:
    """Return whether ``value`` nests no deeper than ``MAX_SHOWN_DEPTH``: whether orjson
    writes it wrapped in lists up to its own limit."""
    for _ in range(MAX_JSON_DEPTH - MAX_SHOWN_DEPTH):
        value = [value]
    try:
        exact_dumps(value)
    except orjson.JSONEncodeError:
        return False
    return True


def record_json(topic: str, partition: int, record: Record) -> Json:
    """Return ``record`` (of ``topic/partition``) as the record browser shows it."""
    source = source_of(record.headers)
    return {
        "topic": topic,
        "partition": partition,
        "offset": record.offset,
        "timestamp": record.timestamp,
        "key": _bytes_json(record.key),
        "value": _bytes_json(record.value),
        "headers": [{"name": n, "value": _text_or_base64(v)} for n, v in record.headers],
        "source": None
        if source is None
        else {"topic": source.topic, "partition": source.partition, "offset": source.offset},
    }


def partition_offsets(
    topics: Mapping[str, tuple[tuple[int, int], ...]], topic: str, partition: int
) -> tuple[int, int] | str:
    """Return ``(log start, end)`` of ``topic/partition``, or a sentence saying why there
    is no such partition."""
    partitions = topics.get(topic)
    if partitions is None:
        return f"no topic named {topic!r}"
    if not 0 <= partition < len(partitions):
        return f"topic {topic!r} has no partition {partition} (it has {len(partitions)})"
    return partitions[partition]
