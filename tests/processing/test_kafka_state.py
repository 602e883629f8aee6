"""Stateful steps on a Kafka-protocol cluster (``headwater broker`` and Apache Kafka): a
windowed count through a repartition topic, its changelog created compacted through the
admin API, and its state restored from that changelog by the next run."""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any

import orjson
import pytest

from headwater.processing import App, AppConfig, TopologyError, windows
from headwater.processing._backends.kafka import open_kafka

from .cluster import (
    alter_topic,
    create_topic,
    produce,
    read_topic,
    topic_config,
    topic_exists,
    unique,
)

SIZE_MS = 1_000


def event(i: int) -> dict[str, Any]:
    return {"i": i, "k": f"k{i % 7}", "t": i * 7}


def windowed_count(name: str, cluster: str) -> App:
    app = App(name, bootstrap=cluster, config=AppConfig(commit_interval_ms=100))
    counted = (
        app.stream(f"{name}-in")
        .key_by(lambda e: e["k"])  # not the input's key: through a repartition topic
        .window(
            windows.tumbling(ms=SIZE_MS), timestamp=lambda e: e["t"], grace_ms=2000, idle_ms=None
        )
        .count(name="counts")
    )
    counted.final().to(f"{name}-out")
    counted.late().to(f"{name}-late")
    return app


def values(cluster: str, topic: str) -> list[Any]:
    return [orjson.loads(m.value() or b"") for part in read_topic(cluster, topic) for m in part]


async def test_a_windowed_count_keeps_its_state_across_runs(cluster: str) -> None:
    name = unique("windows")
    create_topic(cluster, f"{name}-in", 2)
    first = [orjson.dumps(event(i)) for i in range(1200)]
    produce(cluster, f"{name}-in", first, partitions=2)

    stats = await windowed_count(name, cluster).run_async(until_caught_up=True)

    assert stats.records_in >= 1200  # its own repartition topic's records count too
    changelog = f"{name}-counts-changelog"
    assert topic_config(cluster, changelog)["cleanup.policy"] == "compact"
    closed_first = {(r["key"], r["start"]) for r in values(cluster, f"{name}-out")}

    # The next run (a new process would build the same App) restores the counts of the
    # windows still open from the changelog, and closes them with the new records.
    second = [orjson.dumps(event(i)) for i in range(1200, 2400)]
    produce(cluster, f"{name}-in", second, partitions=2)
    await windowed_count(name, cluster).run_async(until_caught_up=True)

    model: Counter[tuple[str, int]] = Counter()
    for i in range(2400):
        e = event(i)
        model[(e["k"], e["t"] // SIZE_MS * SIZE_MS)] += 1
    late: Counter[tuple[str, int]] = Counter()
    for e in values(cluster, f"{name}-late"):
        late[(e["k"], e["t"] // SIZE_MS * SIZE_MS)] += 1
    finals: dict[tuple[str, int], list[int]] = defaultdict(list)
    for result in values(cluster, f"{name}-out"):
        finals[(result["key"], result["start"])].append(result["value"])
    assert len(finals) >= 7 * 10
    for window, counts in finals.items():
        assert counts == [model[window] - late[window]], window  # once, and right
    straddling = [w for w in finals if w not in closed_first and w[1] < 1200 * 7 - SIZE_MS]
    assert straddling  # windows counted partly by each run: their state was restored


async def test_a_changelog_that_is_not_compacted_is_refused(cluster: str) -> None:
    name = unique("retained")
    create_topic(cluster, f"{name}-in", 2)
    changelog = f"{name}-counts-changelog"
    create_topic(cluster, changelog, 2, {"cleanup.policy": "delete"})  # made by hand, wrongly
    with pytest.raises(TopologyError, match=rf"{changelog}.*cleanup\.policy=delete") as refused:
        await windowed_count(name, cluster).run_async(until_caught_up=True)
    assert f"headwater topics alter {changelog} -c cleanup.policy=compact" in str(refused.value)
    assert not topic_exists(cluster, f"{name}-out")  # refused before anything ran
    async with open_kafka(cluster) as backend:
        found = await backend.topic_config(changelog)
        assert found is not None and found["cleanup.policy"] == "delete"
        assert await backend.topic_config(unique("missing")) is None


async def test_a_repartition_topic_with_retention_is_refused(cluster: str) -> None:
    name = unique("retained")
    create_topic(cluster, f"{name}-in", 1)
    produce(cluster, f"{name}-in", [orjson.dumps(event(i)) for i in range(20)], partitions=1)
    internal = f"{name}-by-k-repartition"
    create_topic(cluster, internal, 1)  # made by hand, with the cluster's week of retention

    def rekeyed() -> App:
        app = App(name, bootstrap=cluster)
        app.stream(f"{name}-in").key_by(lambda e: e["k"]).repartition("by-k").to(f"{name}-out")
        return app

    with pytest.raises(TopologyError, match=rf"{internal}.*retention\.ms=604800000"):
        await rekeyed().run_async(until_caught_up=True)
    assert not topic_exists(cluster, f"{name}-out")  # refused before anything ran
    alter_topic(cluster, internal, {"retention.ms": "-1"})
    stats = await rekeyed().run_async(until_caught_up=True)
    assert stats.records_in == 20 + 20
    assert sorted(e["i"] for e in values(cluster, f"{name}-out")) == list(range(20))
