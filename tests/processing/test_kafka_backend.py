"""The Kafka-protocol backend: the same apps on ``headwater broker`` and on Apache Kafka.

Each test runs against both clusters (the ``cluster`` fixture); what the app wrote and
committed is read back with plain confluent-kafka clients (``cluster.py``), not through
the backend under test.
"""

from __future__ import annotations

import functools
import socket
from collections.abc import Callable, Sequence
from typing import Any

import anyio
import orjson
import pytest

from headwater.groups import GroupError, TopicPartition
from headwater.processing import (
    App,
    AppConfig,
    ClusterError,
    MissingSourceTopicError,
    OutRecords,
    SourcePosition,
    TopologyError,
    source_of,
)
from headwater.processing._backends import kafka
from headwater.processing._backends.kafka import KafkaBackend, open_kafka
from headwater.store import InvalidConfigError

from .cluster import (
    committed,
    count_records,
    create_topic,
    produce,
    read_topic,
    topic_config,
    topic_exists,
    unique,
    wait_for_records,
)

PARTITIONS = 4
#: How long a test may wait for a cluster to do what it waits for (a safety net: the
#: waits themselves are on events).
PATIENCE_S = 60


def events(count: int, start: int = 0) -> list[bytes]:
    """W1-like events, numbered from ``start``."""
    return [
        orjson.dumps({"i": i, "user": f"u{i % 37}", "ms": (i * 7919) % 1001})
        for i in range(start, start + count)
    ]


def w1(name: str, **options: Any) -> App:
    """W1 (filter ms > 100, add "slow", write) from ``<name>-in`` to ``<name>-out``."""
    app = App(name, **options)
    (
        app.stream(f"{name}-in")
        .filter(lambda e: e["ms"] > 100)
        .map(lambda e: {**e, "slow": e["ms"] > 500})
        .to(f"{name}-out")
    )
    return app


def w1_expected(values: Sequence[bytes]) -> list[dict[str, Any]]:
    decoded = [orjson.loads(v) for v in values]
    return [{**e, "slow": e["ms"] > 500} for e in decoded if e["ms"] > 100]


async def test_w1_runs_unchanged_on_a_cluster_and_resumes_at_its_commit(cluster: str) -> None:
    name = unique("w1")
    create_topic(cluster, f"{name}-in", PARTITIONS)
    first = events(2000)
    produce(cluster, f"{name}-in", first, partitions=PARTITIONS)

    stats = await w1(name, bootstrap=cluster).run_async(until_caught_up=True)

    assert stats.records_in == 2000
    out = read_topic(cluster, f"{name}-out")
    for p in range(PARTITIONS):  # an unkeyed output stays in its input's partition, in order
        assert [orjson.loads(m.value() or b"") for m in out[p]] == w1_expected(first[p::4])
        sources = [source_of(m.headers() or []) for m in out[p]]  # type: ignore[arg-type]
        assert all(s is not None and (s.topic, s.partition) == (f"{name}-in", p) for s in sources)
        offsets = [s.offset for s in sources if s is not None]
        assert offsets == sorted(offsets) and len(set(offsets)) == len(offsets)
    commits = committed(cluster, name, f"{name}-in", PARTITIONS)
    assert {p: offset for p, (offset, _) in commits.items()} == dict.fromkeys(range(4), 500)

    # A restart (a new App, as a new process would build it) reads only what is new.
    second = events(400, start=2000)
    produce(cluster, f"{name}-in", second, partitions=PARTITIONS)
    stats = await w1(name, bootstrap=cluster).run_async(until_caught_up=True)

    assert stats.records_in == 400
    out = read_topic(cluster, f"{name}-out")
    for p in range(PARTITIONS):
        expected = w1_expected(first[p::4] + second[p::4])
        assert [orjson.loads(m.value() or b"") for m in out[p]] == expected


async def test_small_batches_keep_every_record_in_order(cluster: str) -> None:
    # Batches far smaller than what librdkafka fetches: each partition's buffer fills, and
    # is paused and resumed several times over.
    name = unique("small")
    create_topic(cluster, f"{name}-in", 2)
    values = [orjson.dumps({"i": i, "pad": "x" * 900}) for i in range(6000)]
    produce(cluster, f"{name}-in", values, partitions=2)
    app = App(name, bootstrap=cluster, config=AppConfig(max_batch_bytes=2048))
    app.stream(f"{name}-in").map(lambda e: e["i"]).to(f"{name}-out")

    stats = await app.run_async(until_caught_up=True)

    assert stats.records_in == 6000
    assert stats.batches >= 6000 // 3
    out = read_topic(cluster, f"{name}-out")
    assert [[orjson.loads(m.value() or b"") for m in part] for part in out] == [
        list(range(0, 6000, 2)),
        list(range(1, 6000, 2)),
    ]


class Watched:
    """A backend whose group membership the test can follow: ``partitions`` is what its
    member holds, ``changed`` fires whenever that changes."""

    def __init__(self, backend: KafkaBackend) -> None:
        self.backend = backend
        self.partitions: set[TopicPartition] = set()
        self.changed = anyio.Event()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.backend, name)

    def _notify(self) -> None:
        self.changed.set()
        self.changed = anyio.Event()

    def join(self, group_id: str, topics: Sequence[str], **handlers: Any) -> Any:
        def watch(name: str, held: Callable[[set[TopicPartition]], None]) -> Any:
            async def handler(tps: list[TopicPartition]) -> None:
                await handlers[name](tps)
                held(set(tps))
                self._notify()

            return handler

        return self.backend.join(
            group_id,
            topics,
            on_assigned=watch("on_assigned", self.partitions.update),
            on_revoked=watch("on_revoked", self.partitions.difference_update),
            on_lost=watch("on_lost", self.partitions.difference_update),
        )


async def until(condition: Callable[[], bool], *members: Watched) -> None:
    """Wait until ``condition()`` holds, looking again whenever a member's partitions
    change."""
    with anyio.fail_after(PATIENCE_S):
        while not condition():
            # The events are taken with the look: a change made before a waiter first runs
            # (trio runs ready tasks in any order) still sets the event it waits on.
            changes = [member.changed for member in members]
            async with anyio.create_task_group() as tg:

                async def wake(changed: anyio.Event, tg: Any = tg) -> None:
                    await changed.wait()
                    tg.cancel_scope.cancel()

                for changed in changes:
                    tg.start_soon(wake, changed)


async def read_until(bootstrap: str, topic: str, done: Callable[[list[Any]], bool]) -> list[Any]:
    """Read ``topic`` (in a thread) until ``done(values)`` holds; return the values."""

    def values() -> list[Any]:
        return [
            orjson.loads(m.value() or b"") for part in read_topic(bootstrap, topic) for m in part
        ]

    with anyio.fail_after(PATIENCE_S):
        while True:  # each wait ends when a record is written
            found = await anyio.to_thread.run_sync(values)
            if done(found):
                return found
            await anyio.to_thread.run_sync(wait_for_records, bootstrap, topic, len(found) + 1)


async def test_two_members_share_the_tasks_and_one_takes_over_when_the_other_leaves(
    cluster: str,
) -> None:
    name = unique("pair")
    a, b = f"{name}-a", f"{name}-b"
    for topic in (a, b):
        create_topic(cluster, topic, PARTITIONS)

    def load(start: int, count: int) -> None:
        for topic in (a, b):
            values = [orjson.dumps({"topic": topic, "i": i}) for i in range(start, start + count)]
            produce(cluster, topic, values, partitions=PARTITIONS)

    def build() -> App:
        app = App(name, config=AppConfig(session_timeout_ms=6000, commit_interval_ms=200))
        app.stream(a).merge(app.stream(b)).to(f"{name}-out")
        return app

    everything = {TopicPartition(t, p) for t in (a, b) for p in range(PARTITIONS)}
    load(0, 100)
    async with open_kafka(cluster) as first, open_kafka(cluster) as second:
        one, two = Watched(first), Watched(second)
        stop_one, stop_two = anyio.Event(), anyio.Event()
        async with anyio.create_task_group() as tg:
            tg.start_soon(functools.partial(build().run_async, backend=one, stop=stop_one))
            await until(lambda: one.partitions == everything, one)
            tg.start_soon(functools.partial(build().run_async, backend=two, stop=stop_two))
            await until(
                lambda: (
                    bool(one.partitions and two.partitions)
                    and one.partitions | two.partitions == everything
                ),
                one,
                two,
            )
            assert not one.partitions & two.partitions
            for member in (one, two):  # range keeps a task's partitions together
                numbers = {
                    t: {tp.partition for tp in member.partitions if tp.topic == t} for t in (a, b)
                }
                assert numbers[a] == numbers[b]
            load(100, 100)
            stop_one.set()
            await until(lambda: two.partitions == everything, two)
            load(200, 100)
            wanted = {(t, i) for t in (a, b) for i in range(300)}
            found = await read_until(
                cluster, f"{name}-out", lambda vs: {(v["topic"], v["i"]) for v in vs} >= wanted
            )
            stop_two.set()
    # Every partition was given up with a commit (none was lost): nothing was read twice.
    assert sorted((v["topic"], v["i"]) for v in found) == sorted(wanted)
    for topic in (a, b):
        commits = committed(cluster, name, topic, PARTITIONS)
        assert {p: offset for p, (offset, _) in commits.items()} == dict.fromkeys(range(4), 75)


async def test_a_transaction_committed_after_the_membership_ended_is_a_group_error(
    cluster: str,
) -> None:
    # A commit that lands while the membership closes (the run's periodic commit, as the
    # run ends) fails as a commit of offsets would, with a GroupError the runtime retries
    # or aborts on, not with the consumer's ClosedResourceError.
    group, topic = unique("txn-group"), unique("txn-closed")
    create_topic(cluster, topic, 1)

    async def handled(tps: list[TopicPartition]) -> None:
        pass

    async with open_kafka(cluster, transactional_id=unique("txn")) as backend:
        async with backend.join(
            group, [topic], on_assigned=handled, on_revoked=handled, on_lost=handled
        ) as membership:
            pass
        with pytest.raises(GroupError, match="consumer is closed"):
            await membership.commit_transaction({TopicPartition(topic, 0): 0}, {})


async def test_a_member_commits_offsets_with_their_metadata(cluster: str) -> None:
    group, topic = unique("group"), unique("meta")
    create_topic(cluster, topic, 2)
    held: list[list[TopicPartition]] = []

    async def assigned(tps: list[TopicPartition]) -> None:
        held.append(tps)

    async def given_up(tps: list[TopicPartition]) -> None:
        pass

    mine = [TopicPartition(topic, 0), TopicPartition(topic, 1)]
    async with (
        open_kafka(cluster) as backend,
        backend.join(
            group, [topic], on_assigned=assigned, on_revoked=given_up, on_lost=given_up
        ) as membership,
    ):
        assert held == [mine]  # join returns once the first assignment is handled
        assert await membership.committed(mine) == {}
        await membership.commit({mine[0]: 7}, {mine[0]: '{"v":1,"stream_time_ms":5}'})
        found = await membership.committed(mine)
        assert {tp: (o.offset, o.metadata) for tp, o in found.items()} == {
            mine[0]: (7, '{"v":1,"stream_time_ms":5}')
        }
    assert committed(cluster, group, topic, 2) == {0: (7, '{"v":1,"stream_time_ms":5}')}
    produce(cluster, topic, [b"%d" % i for i in range(10)], partitions=1)
    # A new member reads from where the last one left.
    async with (
        open_kafka(cluster) as backend,
        backend.join(
            group, [topic], on_assigned=assigned, on_revoked=given_up, on_lost=given_up
        ) as membership,
    ):
        found = await membership.committed(mine)
        assert {tp: o.offset for tp, o in found.items()} == {mine[0]: 7}
        records = await backend.fetch(topic, 0, 7, 1000)
        assert (list(records.offsets), records.values) == ([7, 8, 9], [b"7", b"8", b"9"])


async def test_topics_are_created_with_their_configs(cluster: str) -> None:
    compacted, bad = unique("changelog"), unique("bad")
    async with open_kafka(cluster) as backend:
        await backend.create_topic(compacted, 3, {"cleanup.policy": "compact"})
        await backend.create_topic(compacted, 5, {})  # it exists: nothing changes
        assert await backend.partition_count(compacted) == 3
        assert await backend.partition_count(unique("missing")) is None
        with pytest.raises(InvalidConfigError, match=bad):
            await backend.create_topic(bad, 1, {"cleanup.policy": "sometimes"})
        assert await backend.partition_count(bad) is None
    assert topic_config(cluster, compacted)["cleanup.policy"] == "compact"


async def test_fetch_reads_any_partition_from_any_offset(cluster: str) -> None:
    topic = unique("fetch")
    create_topic(cluster, topic, 1)
    produce(cluster, topic, [b"%d" % i for i in range(3000)], partitions=1)
    async with open_kafka(cluster) as backend:
        assert await backend.start_offset(topic, 0) == 0
        assert await backend.end_offset(topic, 0) == 3000
        seen: list[int] = []
        while len(seen) < 3000:
            records = await backend.fetch(topic, 0, len(seen), 1000)
            assert list(records.offsets) == [int(v or b"") for v in records.values]
            seen += records.offsets
        assert seen == list(range(3000))
        back = await backend.fetch(topic, 0, 10, 1 << 20)  # a move back
        assert back.offsets[0] == 10
        with anyio.move_on_after(0.2) as waiting:  # at the end: it waits, and may be cancelled
            await backend.fetch(topic, 0, 3000, 1000)
        assert waiting.cancelled_caught
        produce(cluster, topic, [b"3000"], partitions=1)
        after = await backend.fetch(topic, 0, 3000, 1000)
        assert list(after.values) == [b"3000"]
        # A partition nobody reads any more is let go; asked for again, it is read again.
        reader = backend._reader
        assert reader is not None
        assert reader.release_idle(anyio.current_time() + 1) == [TopicPartition(topic, 0)]
        assert not reader.holds(TopicPartition(topic, 0))
        again = await backend.fetch(topic, 0, 2999, 1000)
        assert list(again.values) == [b"2999", b"3000"]


async def test_a_reader_waiting_when_the_backend_closes_is_told_so(cluster: str) -> None:
    topic = unique("closing")
    create_topic(cluster, topic, 1)
    produce(cluster, topic, [b"first"], partitions=1)
    outcome: list[BaseException] = []

    async def read_past_the_end(backend: KafkaBackend) -> None:
        try:
            await backend.fetch(topic, 0, 1, 1000)  # nothing there: waits
        except anyio.ClosedResourceError as exc:
            outcome.append(exc)

    with anyio.fail_after(60):
        async with anyio.create_task_group() as tg, open_kafka(cluster) as backend:
            assert (await backend.fetch(topic, 0, 0, 1000)).values == [b"first"]
            tg.start_soon(read_past_the_end, backend)
            await anyio.wait_all_tasks_blocked()
            reader = backend._reader
            assert reader is not None and reader._buffers[TopicPartition(topic, 0)].waiting
    # The consumer closed under the waiting reader: it was woken, not left waiting forever.
    assert len(outcome) == 1


async def test_a_write_larger_than_the_producer_queue_waits_for_room(cluster: str) -> None:
    topic = unique("room")
    create_topic(cluster, topic, 1)
    count = 3000
    records = OutRecords(
        [b"%d" % i for i in range(count)], [None] * count, [1_700_000_000_000] * count,
        b"src/0/", list(range(count)),
    )  # fmt: skip
    # librdkafka's queue holds 100 records: the write waits for room 29 times over.
    async with open_kafka(cluster, {"queue.buffering.max.messages": 100}) as backend:
        await backend.produce(topic, 0, records)
    (written,) = read_topic(cluster, topic)
    assert [m.value() for m in written] == records.values
    assert [source_of(m.headers() or []) for m in written][-1] == SourcePosition(
        "src", 0, count - 1
    )  # type: ignore[arg-type]


async def test_a_missing_source_topic_names_the_cluster(cluster: str) -> None:
    name = unique("missing")
    app = w1(name, bootstrap=cluster)
    with pytest.raises(MissingSourceTopicError, match=f"in the cluster at {cluster}") as caught:
        await app.run_async(until_caught_up=True)
    assert f"--bootstrap {cluster}" in str(caught.value)
    assert not topic_exists(cluster, f"{name}-out")  # nothing was created


def test_a_cluster_is_named_by_a_valid_address(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ClusterError, match="use HOST:PORT"):
        App("a", bootstrap="localhost:http")
    with pytest.raises(ClusterError, match="use HOST:PORT"):
        App("a", bootstrap="127.0.0.1:9092,")
    with pytest.raises(TopologyError, match="not both"):
        App("a", bootstrap="127.0.0.1:9092", data_dir="data")
    assert App("a", bootstrap="[::1]:9092,kafka-2.example:9093").bootstrap is not None
    monkeypatch.setenv("HEADWATER_BOOTSTRAP", "127.0.0.1:9092")
    assert App("a").bootstrap == "127.0.0.1:9092"
    assert App("a", data_dir="data").bootstrap is None  # the app's own choice wins


async def test_an_unreachable_cluster_is_an_error_that_names_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(kafka, "CONNECT_TIMEOUT_S", 1.0)
    with socket.socket() as closed:  # a port nobody listens on
        closed.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{closed.getsockname()[1]}"
    app = w1(unique("unreachable"), bootstrap=address)
    with pytest.raises(ClusterError, match=f"cannot reach the Kafka cluster at {address}"):
        await app.run_async(until_caught_up=True)


async def test_a_cluster_that_refuses_connections_is_reported_at_once() -> None:
    # Not after librdkafka's connection timeout: no address accepts a connection.
    with socket.socket() as closed, socket.socket() as other:
        closed.bind(("127.0.0.1", 0))
        other.bind(("127.0.0.1", 0))
        first = f"127.0.0.1:{closed.getsockname()[1]}"
        second = f"localhost:{other.getsockname()[1]}"
    app = w1(unique("refused"), bootstrap=f"{first},{second}")
    with pytest.raises(ClusterError) as raised:
        await app.run_async(until_caught_up=True)
    assert str(raised.value) == (
        f"connecting: cannot reach the Kafka cluster at {first},{second} "
        f"({first}: connection refused; {second}: connection refused)"
    )


def test_runs_on_asyncio_too(headwater_broker: Any) -> None:
    name = unique("asyncio")
    create_topic(headwater_broker.bootstrap, f"{name}-in", 2)
    produce(headwater_broker.bootstrap, f"{name}-in", events(300), partitions=2)

    async def main() -> int:
        stats = await w1(name, bootstrap=headwater_broker.bootstrap).run_async(until_caught_up=True)
        return stats.records_in

    assert anyio.run(main, backend="asyncio") == 300
    assert count_records(headwater_broker.bootstrap, f"{name}-out") == len(w1_expected(events(300)))
