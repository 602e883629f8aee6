"""The graph: validation, the printed topology, and the topics an app will create."""

from __future__ import annotations

import pytest

from headwater.processing import (
    App,
    AppConfig,
    MissingSourceTopicError,
    StrSerde,
    TopologyError,
    WallClock,
)
from headwater.processing._graph import KINDS, Role, plan_topics
from headwater.processing._operators import Step
from headwater.processing._pipeline import Pipeline
from headwater.processing._tasks import TaskId, plan_topic_groups


def sample_app() -> App:
    app = App("shop")
    clicks = app.stream("clicks", on_error="dead_letter")
    fast, slow = clicks.branch(lambda e: e["ms"] < 100)
    slow.map(lambda e: e["user"]).to("slow-users", serde=StrSerde())
    fast.key_by(lambda e: e["user"]).repartition("by-user", partitions=6).to("fast-by-user")
    clicks.filter(lambda e: True)  # leads nowhere
    return app


def test_describe_shows_sources_operators_sinks_and_internal_topics() -> None:
    text = sample_app().describe()
    assert text.startswith("app 'shop' (consumer group 'shop')")
    assert "#1 source clicks [json] on_error=dead_letter" in text
    assert "#2 split" in text
    assert "route 'matching'" in text and "route 'rest'" in text
    assert "to slow-users [str]" in text
    assert "through shop-by-user-repartition [json] → read back as #" in text
    assert "internal shop-by-user-repartition" in text
    assert "(unused: leads to no sink)" in text
    assert "sinks:          slow-users, fast-by-user" in text
    assert "internal topics: shop-by-user-repartition" in text
    assert "dead letters:   clicks-dlq" in text


def test_describe_marks_merges_seen_above() -> None:
    app = App("m")
    a = app.stream("a")
    left, right = a.branch(lambda v: v)
    left.merge(right).to("out")
    assert "(above)" in app.describe()


def test_plan_topics() -> None:
    app = sample_app()
    counts = plan_topics(app.graph, {"clicks": 3})
    assert counts == {
        "clicks": 3,
        "slow-users": 3,
        "shop-by-user-repartition": 6,
        "fast-by-user": 6,
        "clicks-dlq": 3,
    }
    existing = plan_topics(app.graph, {"clicks": None, "slow-users": 9}, default_partitions=2)
    assert existing["clicks"] == 2 and existing["slow-users"] == 9
    with pytest.raises(MissingSourceTopicError, match="'clicks'") as caught:
        plan_topics(app.graph, {"slow-users": 9})
    assert caught.value.topics == ["clicks"]


def test_a_source_may_declare_its_partition_count() -> None:
    app = App("declared")
    app.stream("a", partitions=4).to("out")
    app.stream("b").map(lambda v: v).to("out-b")
    app.stream("b", partitions=2).to("out-b2")  # one declaration covers the topic
    counts = plan_topics(app.graph, {})
    assert counts == {"a": 4, "out": 4, "b": 2, "out-b": 2, "out-b2": 2}
    assert plan_topics(app.graph, {"a": 7, "b": 1})["out"] == 7
    with pytest.raises(TopologyError, match="differs"):
        app.stream("a", partitions=5)
    with pytest.raises(TopologyError, match="partitions"):
        app.stream("c", partitions=0)


def test_validation() -> None:
    app = App("v")
    app.stream("in").map(lambda v: v)
    with pytest.raises(TopologyError, match="writes nothing"):
        app.graph.validate()
    loop = App("v")
    loop.stream("in").to("in")
    with pytest.raises(TopologyError, match="both read and written"):
        loop.graph.validate()


@pytest.mark.parametrize("name", ["", "a b", "-x", "x" * 201, 3])
def test_bad_app_names(name: object) -> None:
    with pytest.raises(TopologyError, match="invalid app name"):
        App(name)  # type: ignore[arg-type]


def test_bad_topics_and_partitions() -> None:
    stream = App("v").stream("in")
    with pytest.raises(TopologyError, match="invalid topic name"):
        stream.to("a/b")
    with pytest.raises(TopologyError, match="partitions"):
        stream.to("out", partitions=0)
    with pytest.raises(TopologyError, match="invalid topic name"):
        App("v").stream("")


def test_config_validation() -> None:
    with pytest.raises(TopologyError, match="commit_interval_ms"):
        AppConfig(commit_interval_ms=0)
    with pytest.raises(TopologyError, match="max_batch_bytes"):
        AppConfig(max_batch_bytes=10)
    with pytest.raises(TopologyError, match="AppConfig"):
        App("v", config={"x": 1})  # type: ignore[arg-type]


def test_the_table_of_node_kinds() -> None:
    for name, kind in KINDS.items():
        # A step class, or a builder that imports a stateful step's module when used.
        assert kind.name == name and callable(kind.step)
        if isinstance(kind.step, type):
            assert issubclass(kind.step, Step)
    by = {role: {n for n, k in KINDS.items() if k.role is role} for role in Role}
    assert by[Role.SOURCE] == {"source", "internal"}
    assert by[Role.SINK] == {"to", "through"}
    assert {n for n, k in KINDS.items() if k.effect} == {"to", "through", "peek"}
    assert {n for n, k in KINDS.items() if not k.can_fail} == {
        "merge",
        "route",
        "final",
        "updates",
        "late",
        "to_stream",
        "table_side",
        "join_side",
    }
    assert {n for n, k in KINDS.items() if k.copartitioned} == {
        "stream_table_join",
        "stream_stream_join",
        "table_join",
    }
    assert {n for n, k in KINDS.items() if k.internal} == {"internal", "through"}


def test_each_task_gets_its_own_instance_of_every_step() -> None:
    app = sample_app()
    counts = plan_topics(app.graph, {"clicks": 2})
    groups = plan_topic_groups(app.graph, counts)
    pipeline = Pipeline(app.graph, groups[0], counts)
    first = pipeline.task(TaskId(0, 0), WallClock())
    second = pipeline.task(TaskId(0, 1), WallClock())
    # The live nodes above the repartition topic (its reader is another group's).
    assert len(first.steps) == len(second.steps) == 8
    assert not {id(s) for s in first.steps} & {id(s) for s in second.steps}
    assert [type(s) for s in first.steps] == [type(s) for s in second.steps]


def test_describe_names_the_stateful_steps_and_their_stores() -> None:
    from headwater.processing import windows

    app = App("stats")
    keyed = app.stream("clicks").key_by(lambda e: e["user"])
    keyed.window(windows.tumbling(seconds=10), grace_ms=5, idle_ms=None).count(
        name="per-user", store="disk"
    ).final().to("out")
    keyed.count().to_stream().to("totals")  # named from its place in the graph
    text = app.describe()
    assert "window_aggregate 'per-user' tumbling" in text
    assert "grace=5ms idle=off [store 'per-user' disk -> stats-per-user-changelog]" in text
    assert "internal topics: stats-per-user-repartition, stats-aggregate-" in text
    assert "state stores:   per-user (disk, changelog stats-per-user-changelog), aggregate-" in text
    assert {n for n, k in KINDS.items() if k.adds_rows} == {
        "process",
        "window_aggregate",
        "stream_stream_join",
    }


def test_a_sink_below_a_repartition_is_as_wide_as_it() -> None:
    from headwater.processing.testing import TestDriver

    app = App("wide")
    counted = app.stream("in").key_by(lambda e: e["k"]).count(name="n")
    counted.to_stream().to("out")
    left, right = (app.stream(t).key_by(lambda e: e["k"]) for t in ("a", "b"))
    left.join(right, lambda x, y: x, within_ms=5, name="j").to("joined")
    driver = TestDriver(app, partitions={"in": 3, "a": 4, "b": 2})
    assert driver.partitions("wide-n-repartition") == 3 and driver.partitions("out") == 3
    assert driver.partitions("wide-j-left-repartition") == 4
    assert driver.partitions("joined") == 4  # was 1: sized before the repartition topics
