"""The runtime on the embedded log: outputs, commits, resumption, stopping, backpressure."""

from __future__ import annotations

import contextlib
import functools
from collections import defaultdict
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import anyio
import orjson
import pytest

from headwater.groups import OffsetAndMetadata, TopicPartition
from headwater.processing import (
    App,
    AppConfig,
    InProcessBackend,
    MissingSourceTopicError,
    OperatorError,
    TopologyError,
    open_in_process,
)
from headwater.processing._backends import (
    CLUSTER_BATCH_BYTES,
    LOCAL_BATCH_BYTES,
    Membership,
    PartitionsHandler,
)
from headwater.processing._backends.kafka import KafkaBackend
from headwater.processing._encoding import OutRecords
from headwater.store import RecordColumns, TopicConfig, open_store, partition_for_key

from .helpers import committed, load, read, run_until_caught_up, values


def events(count: int, start: int = 0) -> list[dict[str, Any]]:
    return [
        {"i": i, "user": f"u{i % 13}", "ms": (i * 37) % 1000} for i in range(start, start + count)
    ]


def w1(name: str = "w1", config: AppConfig | None = None) -> App:
    app = App(name) if config is None else App(name, config=config)
    clicks = app.stream("clicks")
    clicks.filter(lambda e: e["ms"] > 100).map(lambda e: {**e, "slow": e["ms"] > 500}).to("out")
    return app


async def test_runs_until_caught_up_and_commits(data: Path) -> None:
    await load(data, "clicks", events(1000), partitions=3, batch=100)
    stats = await run_until_caught_up(w1(), data)
    assert stats.records_in == 1000
    expected = [{**e, "slow": e["ms"] > 500} for e in events(1000) if e["ms"] > 100]
    got = await values(data, "out")
    assert sorted(got, key=lambda e: e["i"]) == expected
    assert stats.records_out == len(expected)
    parts = await read(data, "out")
    assert len(parts) == 3  # as many partitions as the source
    for p, records in enumerate(parts):  # unkeyed: partition p of the source went to p
        for record in records:
            assert dict(record.headers)["headwater.source"].startswith(f"clicks/{p}/".encode())
    offsets = await committed(data, "w1")
    ends = [len(part) for part in await read(data, "clicks")]
    assert offsets == {TopicPartition("clicks", p): ends[p] for p in range(3)}


async def test_a_second_run_resumes_where_the_first_committed(data: Path) -> None:
    await load(data, "clicks", events(300), partitions=2)
    await run_until_caught_up(w1(), data)
    await load(data, "clicks", events(100, start=300), partitions=2)
    stats = await run_until_caught_up(w1(), data)
    assert stats.records_in == 100
    got = [e["i"] for e in await values(data, "out")]
    assert sorted(got) == [e["i"] for e in events(400) if e["ms"] > 100]  # each exactly once


async def test_a_missing_source_topic_is_an_error_and_nothing_is_created(data: Path) -> None:
    await load(data, "clicks", events(10))
    app = App("typo")
    app.stream("clickz").to("out")
    app.stream("clicks").to("out2")
    with pytest.raises(MissingSourceTopicError, match=r"'clickz' in data directory") as caught:
        await run_until_caught_up(app, data)
    assert caught.value.topics == ["clickz"]
    async with open_store(data, read_only=True) as store:
        assert sorted(store.list_topics()) == ["__consumer_offsets", "clicks"]  # no output created


async def test_a_missing_data_directory_is_not_created(data: Path) -> None:
    with pytest.raises(MissingSourceTopicError, match="no such data directory"):
        await run_until_caught_up(w1(), data)
    assert not data.exists()


async def test_a_declared_source_topic_is_created(data: Path) -> None:
    app = App("declared")
    app.stream("clicks", partitions=3).to("out")
    stats = await run_until_caught_up(app, data)
    assert stats.records_in == 0
    assert await read(data, "clicks") == [[], [], []]
    assert await read(data, "out") == [[], [], []]
    await load(data, "clicks", events(30))  # an existing topic keeps its count
    again = App("declared")
    again.stream("clicks", partitions=5).to("out")
    assert (await run_until_caught_up(again, data)).records_in == 30


async def test_repartition_through_the_log(data: Path) -> None:
    await load(data, "clicks", events(500), partitions=3, batch=50)
    app = App("rp")
    (
        app.stream("clicks")
        .key_by(lambda e: e["user"])
        .repartition("by-user", partitions=4)
        .with_metadata()
        .map(lambda e: {**e.value, "read_from": e.partition})
        .to("located")
    )
    stats = await run_until_caught_up(app, data)
    assert stats.records_in == 1000  # 500 from clicks, 500 read back from the internal topic
    located = await values(data, "located")
    assert sorted(e["i"] for e in located) == list(range(500))
    partitions_of: dict[str, set[int]] = defaultdict(set)
    for event in located:
        partitions_of[event["user"]].add(event["read_from"])
    assert all(len(found) == 1 for found in partitions_of.values())
    for event in located:  # placed by its key
        assert partition_for_key(orjson.dumps(event["user"]), 4) == event["read_from"]
    offsets = await committed(data, "rp")
    async with open_store(data, read_only=True) as store:  # read to the end, then purged
        internal = store.partitions("rp-by-user-repartition")
        assert len(internal) == 4
        for p, partition in enumerate(internal):
            end = offsets.get(TopicPartition("rp-by-user-repartition", p), 0)
            assert partition.log_start_offset == partition.high_watermark == end
        assert sum(p.high_watermark for p in internal) == 500


async def test_dead_letters_are_written_and_committed(data: Path) -> None:
    await load(data, "clicks", [b'{"ms": 5}', b"not json", b'{"x": 1}'], raw=True)
    app = App("dl")
    app.stream("clicks", on_error="dead_letter").map(lambda e: e["ms"]).to("ms")
    stats = await run_until_caught_up(app, data)
    assert stats.dead_lettered == 2
    assert await values(data, "ms") == [5]
    (letters,) = await read(data, "clicks-dlq")
    assert [r.value for r in letters] == [b"not json", b'{"x": 1}']
    assert await committed(data, "dl") == {TopicPartition("clicks", 0): 3}


async def test_operator_error_stops_the_run_after_committing_what_is_durable(data: Path) -> None:
    good = [{"ms": 200}] * 30
    await load(data, "clicks", good, batch=10)
    await load(data, "clicks", [{"no-ms": 1}, *good], batch=10)  # offset 30 is bad
    small_batches = AppConfig(max_batch_bytes=64)  # one stored batch (10 records) per read
    app = App("fails", config=small_batches)
    app.stream("clicks").map(lambda e: e["ms"]).to("ms")
    with pytest.raises(OperatorError, match=r"clicks/0 offset 30: KeyError: 'ms'"):
        await run_until_caught_up(app, data)
    assert await committed(data, "fails") == {TopicPartition("clicks", 0): 30}
    assert len(await values(data, "ms")) == 30
    fixed = App("fails", config=small_batches)
    fixed.stream("clicks", on_error="skip").map(lambda e: e["ms"]).to("ms")
    stats = await run_until_caught_up(fixed, data)
    assert stats.records_in == 31 and stats.skipped == 1
    assert len(await values(data, "ms")) == 60


async def test_graceful_stop_finishes_the_batch_in_hand(data: Path) -> None:
    await load(data, "clicks", events(400), partitions=2, batch=20)
    app = App("stop", config=AppConfig(max_batch_bytes=64))
    stop = anyio.Event()
    seen = 0

    async def slow(event: dict[str, Any]) -> dict[str, Any]:
        nonlocal seen
        seen += 1
        if seen == 50:
            stop.set()  # as SIGINT would
        await anyio.sleep(0.001)
        return event

    app.stream("clicks").map_async(slow, concurrency=4).to("out")
    stats = await app.run_async(stop=stop, data_dir=data)
    assert 50 <= stats.records_in < 400
    assert stats.records_in % 20 == 0  # whole batches only
    offsets = await committed(data, "stop")
    assert sum(offsets.values()) == stats.records_in  # everything processed is committed
    out = await read(data, "out")
    for p in range(2):  # and every committed input has its output
        sources = {int(dict(r.headers)["headwater.source"].split(b"/")[2]) for r in out[p]}
        assert sources == set(range(offsets[TopicPartition("clicks", p)]))


class CountingBackend(InProcessBackend):
    """Counts what the runtime has fetched and written, to observe its read-ahead."""

    def __init__(self, backend: InProcessBackend) -> None:
        super().__init__(backend.store, backend.coordinator)
        self.fetched = 0
        self.written = 0
        self.fetch_calls = 0

    async def fetch(self, topic: str, partition: int, offset: int, max_bytes: int) -> RecordColumns:
        self.fetch_calls += 1
        records = await super().fetch(topic, partition, offset, max_bytes)
        self.fetched += len(records)
        return records

    async def produce(self, topic: str, partition: int, records: OutRecords) -> None:
        await super().produce(topic, partition, records)
        self.written += records.count()


async def test_a_slow_operator_slows_reading(data: Path) -> None:
    await load(data, "clicks", events(300), partitions=2, batch=10)
    app = App("bp", config=AppConfig(max_batch_bytes=64))
    ahead: list[int] = []
    backend: CountingBackend | None = None

    async def slow(event: dict[str, Any]) -> dict[str, Any]:
        assert backend is not None
        ahead.append(backend.fetched - backend.written)
        await anyio.sleep(0.0005)
        return event

    app.stream("clicks").map_async(slow, concurrency=2).to("out")
    async with open_in_process(data) as local:
        backend = CountingBackend(local)
        stats = await app.run_async(until_caught_up=True, backend=backend)
    assert stats.records_in == 300
    assert max(ahead) <= 2 * 10  # at most the batch in hand per partition, never more


class AskedBytes(InProcessBackend):
    """Notes how many bytes the runtime asks each fetch for."""

    def __init__(self, backend: InProcessBackend) -> None:
        super().__init__(backend.store, backend.coordinator)
        self.asked: set[int] = set()

    async def fetch(self, topic: str, partition: int, offset: int, max_bytes: int) -> RecordColumns:
        self.asked.add(max_bytes)
        return await super().fetch(topic, partition, offset, max_bytes)


async def test_the_batch_size_is_the_backends_unless_the_app_says(data: Path) -> None:
    await load(data, "clicks", events(30), partitions=1, batch=10)
    assert AppConfig().max_batch_bytes is None
    for config, expected in ((None, LOCAL_BATCH_BYTES), (AppConfig(max_batch_bytes=300), 300)):
        async with open_in_process(data) as local:
            backend = AskedBytes(local)
            stats = await w1(f"asked-{expected}", config).run_async(
                until_caught_up=True, backend=backend
            )
        assert stats.records_in == 30
        assert backend.asked == {expected}
    # A cluster's writes wait a round trip each: it reads in larger batches.
    assert KafkaBackend.batch_bytes == CLUSTER_BATCH_BYTES > LOCAL_BATCH_BYTES


class SlowWrites(InProcessBackend):
    """A log whose every write takes at least ``WRITE_S`` to be acknowledged."""

    WRITE_S = 0.02

    def __init__(self, backend: InProcessBackend) -> None:
        super().__init__(backend.store, backend.coordinator)
        self.writes = 0

    async def produce(self, topic: str, partition: int, records: OutRecords) -> None:
        await super().produce(topic, partition, records)
        await anyio.sleep(self.WRITE_S)
        self.writes += 1


async def test_the_statistics_say_how_long_the_loops_waited_for_their_writes(data: Path) -> None:
    await load(data, "clicks", events(300), partitions=2, batch=10)
    async with open_in_process(data) as local:
        backend = SlowWrites(local)
        stats = await w1("slow").run_async(until_caught_up=True, backend=backend)
    assert stats.records_out > 0 and backend.writes > 0
    # Every write (W1's batches each write one partition) waited at least WRITE_S, and
    # the two partitions' loops waited side by side for no longer than the run lasted.
    assert backend.writes * SlowWrites.WRITE_S <= stats.write_seconds <= 2 * stats.elapsed_s

    nothing = App("nothing")
    nothing.stream("clicks").filter(lambda e: False).to("none")
    async with open_in_process(data) as local:
        stats = await nothing.run_async(until_caught_up=True, backend=local)
    assert stats.records_in == 300 and stats.write_seconds == 0.0


class RevokedWhileCommitting(InProcessBackend):
    """Holds the runtime's first commit of all four partitions until a revocation starts.

    The commit itself goes through; only its return waits, as a commit waiting for its
    fsync would while the group rebalances.
    """

    def __init__(self, backend: InProcessBackend) -> None:
        super().__init__(backend.store, backend.coordinator)
        self.committed_once = anyio.Event()
        self.revoking = anyio.Event()
        self.revoked = anyio.Event()

    @contextlib.asynccontextmanager
    async def join(
        self,
        group_id: str,
        topics: Sequence[str],
        *,
        on_assigned: PartitionsHandler,
        on_revoked: PartitionsHandler,
        on_lost: PartitionsHandler,
    ) -> AsyncIterator[Membership]:
        async def revoked(partitions: list[TopicPartition]) -> None:
            self.revoking.set()
            await on_revoked(partitions)
            self.revoked.set()

        joined = super().join(
            group_id, topics, on_assigned=on_assigned, on_revoked=revoked, on_lost=on_lost
        )
        async with joined as membership:
            outer = self

            class Held:
                async def committed(
                    self, partitions: Sequence[TopicPartition]
                ) -> dict[TopicPartition, OffsetAndMetadata]:
                    return await membership.committed(partitions)

                async def commit(
                    self,
                    offsets: Mapping[TopicPartition, int],
                    metadata: Mapping[TopicPartition, str],
                ) -> None:
                    await membership.commit(offsets, metadata)
                    if len(offsets) == 4 and not outer.committed_once.is_set():
                        outer.committed_once.set()
                        await outer.revoking.wait()

            yield Held()


async def test_partitions_revoked_during_a_commit(data: Path) -> None:
    await load(data, "clicks", events(4000), partitions=4, batch=10)
    app = App("moving", config=AppConfig(max_batch_bytes=64, commit_interval_ms=10))
    app.stream("clicks").to("out")
    stop = anyio.Event()
    with anyio.fail_after(60):
        async with open_in_process(data) as local, anyio.create_task_group() as tg:
            backend = RevokedWhileCommitting(local)
            tg.start_soon(functools.partial(app.run_async, stop=stop, backend=backend))
            await backend.committed_once.wait()
            # A second member joins: the app gives up half of its partitions meanwhile.
            async with local.coordinator.consumer(
                "moving", ["clicks"], partition_assignment_strategy="range"
            ):
                await backend.revoked.wait()
                stop.set()
    # The run ended without an error, and committed only what it had processed.
    statistics = app.statistics()
    assert statistics is not None and statistics.commits >= 1
    offsets = await committed(data, "moving")
    assert len(offsets) == 4 and all(0 < offset <= 1000 for offset in offsets.values())


def test_runs_on_asyncio_too(data: Path) -> None:
    async def main() -> None:
        await load(data, "clicks", events(50))
        stats = await run_until_caught_up(w1("aio"), data)
        assert stats.records_in == 50
        assert len(await values(data, "out")) == sum(e["ms"] > 100 for e in events(50))

    anyio.run(main, backend="asyncio")


def test_run_raises_the_operator_error_itself(data: Path) -> None:
    anyio.run(load, data, "clicks", [{"no-ms": 1}])
    app = App("sync-run")
    app.stream("clicks").map(lambda e: e["ms"]).to("ms")
    with pytest.raises(OperatorError, match="KeyError") as caught:
        app.run(until_caught_up=True, data_dir=data)
    assert isinstance(caught.value.__cause__, KeyError)
    assert app.statistics() is not None


def test_run_raises_an_os_error_itself(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    app = App("os-error")
    app.stream("clicks", partitions=1).to("out")
    with pytest.raises(OSError) as caught:  # was NoEventLoopError, hiding it
        app.run(until_caught_up=True, data_dir=blocker / "data")
    assert isinstance(caught.value, NotADirectoryError | FileExistsError)


async def test_a_repartition_writes_values_as_read_until_a_step_makes_new_ones(data: Path) -> None:
    read_as = [b'{"user": "ada",  "ms": 200}', b'{ "user":"bob", "ms":300, "x":1.50 }']
    await load(data, "clicks", read_as, raw=True)
    app = App("as-read", config=AppConfig(repartition_purge_interval_ms=None))  # read below
    clicks = app.stream("clicks")
    rekeyed = clicks.filter(lambda e: e["ms"] > 100).key_by(lambda e: e["user"])
    rekeyed.repartition("kept").to("kept-out")
    clicks.map(lambda e: e).key_by(lambda e: e["user"]).repartition("mapped").to("mapped-out")
    clicks.peek(lambda e: None).key_by(lambda e: e["user"]).repartition("peeked").to("peeked-out")
    await run_until_caught_up(app, data)
    (kept,) = await read(data, "as-read-kept-repartition")
    assert sorted(r.value for r in kept) == sorted(read_as)  # the bytes read, as they were
    encoded = sorted(orjson.dumps(orjson.loads(v)) for v in read_as)
    for name in ("mapped", "peeked"):  # values a step made (or may have changed): encoded
        (records,) = await read(data, f"as-read-{name}-repartition")
        assert sorted(r.value for r in records) == encoded
    for name in ("kept", "mapped", "peeked"):  # what reads the topics sees the same values
        assert sorted(await values(data, f"{name}-out"), key=str) == sorted(
            map(orjson.loads, read_as), key=str
        )


class LeavesSlowly(InProcessBackend):
    """Counts the transactions the app's membership commits after the run is done with
    it, and waits 20 of the app's commit intervals before it leaves its group, as a
    LeaveGroup round trip to a busy coordinator may."""

    def __init__(self, backend: InProcessBackend) -> None:
        super().__init__(backend.store, backend.coordinator, backend.transactions)
        self.leaving = False
        self.committed_while_leaving = 0
        self.committed = 0

    @contextlib.asynccontextmanager
    async def join(
        self,
        group_id: str,
        topics: Sequence[str],
        *,
        on_assigned: PartitionsHandler,
        on_revoked: PartitionsHandler,
        on_lost: PartitionsHandler,
    ) -> AsyncIterator[Membership]:
        joined = super().join(
            group_id, topics, on_assigned=on_assigned, on_revoked=on_revoked, on_lost=on_lost
        )
        async with joined as membership:
            outer = self

            class Counted:
                def __getattr__(self, name: str) -> Any:
                    return getattr(membership, name)

                async def commit_transaction(
                    self,
                    offsets: Mapping[TopicPartition, int],
                    metadata: Mapping[TopicPartition, str],
                ) -> None:
                    outer.committed += 1
                    outer.committed_while_leaving += outer.leaving
                    await membership.commit_transaction(offsets, metadata)  # type: ignore[attr-defined]

            try:
                yield Counted()  # type: ignore[misc]
            finally:
                # The run is done with the membership; the group has not yet revoked its
                # partitions (which commits them, as a graceful leave does).
                self.leaving = True
                with anyio.CancelScope(shield=True):
                    await anyio.sleep(0.2)
                self.leaving = False


async def test_no_periodic_commit_lands_while_the_run_leaves_its_group(data: Path) -> None:
    await load(data, "clicks", events(500), partitions=2)
    config = AppConfig(commit_interval_ms=10, guarantee="exactly_once")
    app = App("leaving", config=config)
    app.stream("clicks").to("out")
    with anyio.fail_after(60):
        async with open_in_process(data, transactional_id="leaving") as local:
            backend = LeavesSlowly(local)
            await app.run_async(until_caught_up=True, backend=backend)

    assert backend.committed >= 1  # the final commit, at least
    assert backend.committed_while_leaving == 0
    assert sorted(v["i"] for v in await values(data, "out")) == list(range(500))


def counted(name: str) -> App:
    app = App(name)
    app.stream("clicks").key_by(lambda e: e["user"]).count(name="counts").to_stream().to("n")
    return app


async def test_a_changelog_that_is_not_compacted_is_refused(data: Path) -> None:
    await load(data, "clicks", events(50), partitions=1)
    async with open_store(data) as store:  # made by hand, with the default delete policy
        await store.create_topic("tally-counts-changelog", TopicConfig(partitions=1))
    with pytest.raises(TopologyError, match=r"cleanup\.policy=delete") as refused:
        await run_until_caught_up(counted("tally"), data)
    assert "headwater topics alter tally-counts-changelog -c cleanup.policy=compact" in str(
        refused.value
    )
    async with open_store(data) as store:  # as `headwater topics alter` does
        await store.alter_topic_config("tally-counts-changelog", {"cleanup.policy": "compact"})
    stats = await run_until_caught_up(counted("tally"), data)
    assert stats.records_in == 50 + 50  # its repartition topic's records count too


def rekeyed(name: str) -> App:
    app = App(name)
    app.stream("clicks").key_by(lambda e: e["user"]).repartition("by-user").to("located")
    return app


@pytest.mark.parametrize(
    ("made_with", "wrong"),
    [
        ({}, "retention.ms=604800000"),  # the store's default: a week
        ({"retention.ms": "-1", "retention.bytes": "1000000"}, "retention.bytes=1000000"),
        ({"retention.ms": "-1", "cleanup.policy": "compact"}, "cleanup.policy=compact"),
    ],
)
async def test_a_repartition_topic_that_could_lose_records_is_refused(
    data: Path, made_with: dict[str, str], wrong: str
) -> None:
    await load(data, "clicks", events(50), partitions=1)
    internal = "moved-by-user-repartition"
    async with open_store(data) as store:  # made by hand, wrongly
        await store.create_topic(
            internal, TopicConfig.from_strings(made_with, TopicConfig(partitions=1))
        )
    with pytest.raises(TopologyError, match=rf"{internal}.*{wrong}") as refused:
        await run_until_caught_up(rekeyed("moved"), data)
    fix = "-c cleanup.policy=delete -c retention.ms=-1 -c retention.bytes=-1"
    assert f"headwater topics alter {internal} {fix}" in str(refused.value)
    async with open_store(data, read_only=True) as store:
        assert not store.has_topic("located")  # refused before anything was created
    async with open_store(data) as store:  # as `headwater topics alter` does
        await store.alter_topic_config(
            internal, {"cleanup.policy": "delete", "retention.ms": "-1", "retention.bytes": "-1"}
        )
    stats = await run_until_caught_up(rekeyed("moved"), data)
    assert stats.records_in == 50 + 50
    assert sorted(e["i"] for e in await values(data, "located")) == list(range(50))


async def test_a_repartition_topic_made_by_an_earlier_run_is_accepted(data: Path) -> None:
    await load(data, "clicks", events(30), partitions=1)
    assert (await run_until_caught_up(rekeyed("again"), data)).records_in == 60
    await load(data, "clicks", events(30, start=30), partitions=1)
    assert (await run_until_caught_up(rekeyed("again"), data)).records_in == 60
