"""Tasks as partition groups: topic groups, per-task steps, assignment, co-partitioning."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from headwater.groups import Subscription, TopicPartition, range_assign
from headwater.processing import App, TopologyError
from headwater.processing._graph import KINDS, NodeKind, Role, plan_topics
from headwater.processing._operators import Step
from headwater.processing._tasks import (
    TaskId,
    TaskPlan,
    check_copartitioning,
    decode_metadata,
    encode_metadata,
    plan_topic_groups,
)
from headwater.processing.testing import TestDriver

from .kinds import derive, register


def groups_of(app: App, counts: dict[str, int]) -> list[tuple[tuple[str, ...], int]]:
    planned = plan_topics(app.graph, counts, default_partitions=1)
    return [(g.topics, g.partitions) for g in plan_topic_groups(app.graph, planned)]


def test_a_merge_of_co_partitioned_topics_is_one_group() -> None:
    app = App("g")
    app.stream("a").merge(app.stream("b")).to("out")
    assert groups_of(app, {"a": 3, "b": 3}) == [(("a", "b"), 3)]


def test_topics_with_other_counts_get_tasks_of_their_own() -> None:
    app = App("g")
    app.stream("a").merge(app.stream("b")).to("out")
    assert groups_of(app, {"a": 3, "b": 2}) == [(("a",), 3), (("b",), 2)]


def test_a_repartition_topic_starts_a_sub_topology() -> None:
    app = App("g")
    app.stream("a").key_by(lambda v: v).repartition("r", partitions=5).to("out")
    app.stream("c").to("out-c")  # independent: its own group
    assert groups_of(app, {"a": 2, "c": 2}) == [(("a",), 2), (("g-r-repartition",), 5), (("c",), 2)]


def test_two_streams_of_one_topic_share_its_tasks() -> None:
    app = App("g")
    app.stream("a").to("x")
    app.stream("a").map(lambda v: v).to("y")
    app.stream("a").filter(bool)  # leads nowhere: not read for it
    ((topics, count),) = groups_of(app, {"a": 4})
    assert topics == ("a",) and count == 4


def test_tasks_of_an_assignment() -> None:
    app = App("g")
    app.stream("a").merge(app.stream("b")).to("out")
    counts = plan_topics(app.graph, {"a": 2, "b": 2})
    plan = TaskPlan(plan_topic_groups(app.graph, counts))
    tps = [TopicPartition("b", 1), TopicPartition("a", 1), TopicPartition("out", 0)]
    assert plan.tasks_of(tps) == {TaskId(0, 1): [TopicPartition("a", 1), TopicPartition("b", 1)]}
    assert plan.missing(TaskId(0, 0), [TopicPartition("a", 0)]) == [TopicPartition("b", 0)]
    assert str(TaskId(0, 1)) == "0_1"


@settings(max_examples=100, deadline=None)
@given(
    members=st.integers(min_value=1, max_value=6),
    partitions=st.integers(min_value=1, max_value=12),
    topics=st.integers(min_value=1, max_value=4),
)
def test_range_keeps_every_task_on_one_member(members: int, partitions: int, topics: int) -> None:
    names = [f"t{i}" for i in range(topics)]
    subscriptions = {f"m{i}": Subscription(topics=tuple(names)) for i in range(members)}
    shares = range_assign(subscriptions, {name: partitions for name in names})
    owner: dict[int, str] = {}
    for member, tps in shares.items():
        for tp in tps:
            assert owner.setdefault(tp.partition, member) == member  # task N: one member


def test_each_task_has_its_own_steps_and_a_merge_feeds_one_set(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    register(monkeypatch)
    app = App("g")
    derive(app.stream("a").merge(app.stream("b")), "count").to("out")
    driver = TestDriver(app, partitions={"a": 2, "b": 2})
    driver.send("a", "a0", partition=0)
    driver.send("b", "b0", partition=0)
    driver.send("a", "a1", partition=1)
    driver.send("b", "b0'", partition=0)
    seen = {(v["task"], v["value"]): v["n"] for v in driver.values("out")}
    # Task 0_0 saw a/0 and b/0 (one counter for both), task 0_1 counts on its own.
    assert seen == {("0_0", "a0"): 1, ("0_0", "b0"): 2, ("0_0", "b0'"): 3, ("0_1", "a1"): 1}
    assert driver.tasks() == ["0_0", "0_1"]


def test_a_kind_that_needs_co_partitioned_inputs_is_checked(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(KINDS, "join", NodeKind("join", Role.OPERATOR, Step, copartitioned=True))
    app = App("g")
    app.stream("a").merge(app.stream("b"))._derive("join").to("out")
    check_copartitioning(app.graph, {"a": 4, "b": 4, "out": 4})
    with pytest.raises(TopologyError, match=r"#4 join reads 'a' \(4 partitions\), 'b' \(2"):
        check_copartitioning(app.graph, {"a": 4, "b": 2, "out": 4})
    with pytest.raises(TopologyError, match="co-partitioned"):
        TestDriver(app, partitions={"a": 3, "b": 1})


def test_commit_metadata_round_trips_and_ignores_what_is_not_ours() -> None:
    text = encode_metadata({"stream_time_ms": 1234})
    assert text == '{"v":1,"stream_time_ms":1234}'
    assert decode_metadata(text) == {"v": 1, "stream_time_ms": 1234}
    for other in ("", "hello", "{", "[1]", '{"v":2,"stream_time_ms":1}'):
        assert decode_metadata(other) == {}
