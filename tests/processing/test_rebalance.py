"""Two members of one app's group: one leaves (cleanly, crashed, or expired) mid-run and the
other takes over its partitions with nothing lost; a revoked partition's failed commit is
retried or reported. On the embedded log, on the in-memory backend, and in the driver;
and, on the embedded log, a windowed task that moves to the other member with its state
(restored there from its changelog)."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import orjson
import pytest

from headwater.groups import RebalanceInProgressError, TopicPartition, UnknownMemberError
from headwater.processing import (
    App,
    AppConfig,
    Backend,
    Event,
    Membership,
    RunStatistics,
    encode_key,
    open_in_process,
    source_of,
    windows,
)
from headwater.processing._backends import PartitionsHandler
from headwater.processing._backends.memory import MemoryBackend
from headwater.processing.testing import TestDriver
from headwater.store import NewRecord, Record, TopicConfig

PARTITIONS = 4
PER_PARTITION = 300
TOTAL = PARTITIONS * PER_PARTITION


class Progress:
    """What the members processed, and a way to wait until it says something."""

    def __init__(self) -> None:
        self.seen: dict[str, list[tuple[int, int]]] = {"a": [], "b": []}
        self.held: dict[int, list[TopicPartition]] = {}
        self.stop_after: dict[str, tuple[int, anyio.Event]] = {}
        self._changed = anyio.Event()

    def pulse(self) -> None:
        self._changed.set()
        self._changed = anyio.Event()

    async def until(self, condition: Callable[[], bool]) -> None:
        while not condition():
            await self._changed.wait()

    def distinct(self) -> int:
        return len(set(self.seen["a"]) | set(self.seen["b"]))


def member_app(
    name: str,
    progress: Progress,
    *,
    commit_interval_ms: int = 50,
    hold: Callable[[Any], Awaitable[Any]] | None = None,
) -> App:
    config = AppConfig(max_batch_bytes=64, commit_interval_ms=commit_interval_ms)
    app = App("rebalance", config=config)

    def note(event: Event[Any]) -> None:
        seen = progress.seen[name]
        seen.append((event.partition, event.offset))
        count, stop = progress.stop_after.get(name, (0, None))
        if stop is not None and len(seen) == count:
            stop.set()  # as SIGTERM would, in the middle of the run
        progress.pulse()

    stream = app.stream("in").with_metadata().peek(note)
    if hold is not None:
        stream = stream.map_async(hold, concurrency=1)
    stream.map(lambda e: e.value).to("out")
    return app


class Watched:
    """A backend that tells a test what each member of a group holds (it delegates
    everything to the backend it wraps, and wraps the membership callbacks)."""

    def __init__(self, inner: Backend, progress: Progress) -> None:
        self._inner = inner
        self._progress = progress
        self._members = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    @asynccontextmanager
    async def join(
        self,
        group_id: str,
        topics: Sequence[str],
        *,
        on_assigned: PartitionsHandler,
        on_revoked: PartitionsHandler,
        on_lost: PartitionsHandler,
    ) -> AsyncIterator[Membership]:
        member = self._members
        self._members += 1
        held = self._progress.held.setdefault(member, [])

        async def assigned(partitions: list[TopicPartition]) -> None:
            await on_assigned(partitions)
            held.extend(partitions)
            self._progress.pulse()

        async def revoked(partitions: list[TopicPartition]) -> None:
            await on_revoked(partitions)
            held[:] = [p for p in held if p not in partitions]
            self._progress.pulse()

        async with self._inner.join(
            group_id, topics, on_assigned=assigned, on_revoked=revoked, on_lost=on_lost
        ) as membership:
            yield membership


def check_outputs(out: list[Record], *, duplicates_allowed: bool) -> Counter[tuple[int, int]]:
    sources: Counter[tuple[int, int]] = Counter()
    for record in out:
        where = source_of(record.headers)
        assert where is not None and where.topic == "in"
        sources[(where.partition, where.offset)] += 1
    expected = {(p, o) for p in range(PARTITIONS) for o in range(PER_PARTITION)}
    assert set(sources) == expected  # nothing lost
    if not duplicates_allowed:
        assert max(sources.values()) == 1
    return sources


def input_batches() -> list[tuple[int, list[NewRecord]]]:
    return [
        (p, [NewRecord(b'{"p": %d, "i": %d}' % (p, i)) for i in range(start, start + 10)])
        for start in range(0, PER_PARTITION, 10)
        for p in range(PARTITIONS)
    ]


async def test_embedded_member_leaves_mid_run_and_the_other_takes_over(data: Path) -> None:
    progress = Progress()
    stop_a, stop_b = anyio.Event(), anyio.Event()
    results: dict[str, RunStatistics] = {}
    async with open_in_process(data) as local:
        await local.store.create_topic("in", TopicConfig(partitions=PARTITIONS))
        backend: Any = Watched(local, progress)

        async def run(name: str, stop: anyio.Event) -> None:
            app = member_app(name, progress)
            results[name] = await app.run_async(stop=stop, backend=backend)

        async with anyio.create_task_group() as tg:
            tg.start_soon(run, "a", stop_a)
            await progress.until(lambda: len(progress.held.get(0, [])) == PARTITIONS)
            tg.start_soon(run, "b", stop_b)
            await progress.until(
                lambda: len(progress.held.get(1, [])) == 2 and len(progress.held[0]) == 2
            )
            progress.stop_after["a"] = (100, stop_a)  # then a leaves gracefully
            for partition, records in input_batches():
                await local.store.append("in", records, partition=partition)
            await progress.until(lambda: len(progress.held[1]) == PARTITIONS)
            await progress.until(lambda: progress.distinct() == TOTAL)
            stop_b.set()
        out = [r for p in local.store.partitions("out") for r in await p.read_records(0, 1 << 24)]
    check_outputs(out, duplicates_allowed=False)  # a committed what it did before leaving
    a_partitions = {p for p, _ in progress.seen["a"]}
    b_partitions = {p for p, _ in progress.seen["b"]}
    assert a_partitions & b_partitions  # b took over partitions a had been processing
    assert results["a"].records_in + results["b"].records_in == TOTAL


def load_memory(backend: MemoryBackend) -> None:
    backend.create_topic_now("in", PARTITIONS)
    for partition, records in input_batches():
        start = len(backend.records("in", partition))
        backend.append(
            "in",
            partition,
            [Record(start + i, 0, None, r.value, ()) for i, r in enumerate(records)],
        )


async def test_a_member_whose_session_expires_loses_its_partitions_to_the_other() -> None:
    progress = Progress()
    backend = MemoryBackend()
    load_memory(backend)
    stop_a, stop_b = anyio.Event(), anyio.Event()
    gate = anyio.Event()

    async def hold(event: Any) -> Any:
        if len(progress.seen["a"]) >= 50:
            await gate.wait()  # a holds a batch while its session expires
        return event

    # a never commits on time, and stops in the middle of a batch.
    app_a = member_app("a", progress, commit_interval_ms=1_000_000, hold=hold)

    async with anyio.create_task_group() as tg:
        tg.start_soon(lambda: app_a.run_async(stop=stop_a, backend=backend))
        await progress.until(lambda: len(progress.seen["a"]) >= 50)
        group = backend.group("rebalance")
        (member_a,) = group.members()
        await group.expire(member_a)  # on_lost: a drops its tasks mid-batch, uncommitted
        assert group.members() == []
        tg.start_soon(lambda: member_app("b", progress).run_async(stop=stop_b, backend=backend))
        await progress.until(lambda: progress.distinct() == TOTAL)
        gate.set()
        stop_a.set()
        stop_b.set()
    assert backend.committed("rebalance")  # b's commits; a's were never made
    out = [r for p in range(PARTITIONS) for r in backend.records("out", p)]
    sources = check_outputs(out, duplicates_allowed=True)
    # Only what a processed and never committed was processed twice.
    repeated = {key for key, count in sources.items() if count > 1}
    assert repeated <= set(progress.seen["a"])


async def test_a_revoked_partitions_failed_commit_is_retried() -> None:
    progress = Progress()
    backend = MemoryBackend()
    load_memory(backend)
    stop_a, stop_b = anyio.Event(), anyio.Event()
    results: dict[str, RunStatistics] = {}

    watched: Any = Watched(backend, progress)

    async def run(name: str, stop: anyio.Event) -> None:
        app = member_app(name, progress, commit_interval_ms=1_000_000)
        results[name] = await app.run_async(stop=stop, backend=watched)

    async with anyio.create_task_group() as tg:
        tg.start_soon(run, "a", stop_a)
        await progress.until(lambda: progress.distinct() == TOTAL)
        backend.commit_errors = [RebalanceInProgressError("busy"), RebalanceInProgressError("busy")]
        tg.start_soon(run, "b", stop_b)  # a's partitions are revoked: its commit fails twice
        await progress.until(lambda: len(progress.held.get(1, [])) == 2)
        stop_a.set()
        stop_b.set()
    assert not backend.commit_errors
    assert results["a"].commit_failures == 0
    committed = backend.committed("rebalance")
    assert {tp: c.offset for tp, c in committed.items()} == {
        TopicPartition("in", p): PER_PARTITION for p in range(PARTITIONS)
    }
    assert progress.seen["b"] == []  # b resumed where a committed: nothing again
    out = [r for p in range(PARTITIONS) for r in backend.records("out", p)]
    check_outputs(out, duplicates_allowed=False)


async def test_a_revoked_partitions_commit_that_cannot_succeed_is_reported(
    caplog: pytest.LogCaptureFixture,
) -> None:
    progress = Progress()
    backend = MemoryBackend()
    load_memory(backend)
    stop_a, stop_b = anyio.Event(), anyio.Event()
    results: dict[str, RunStatistics] = {}

    watched: Any = Watched(backend, progress)

    async def run(name: str, stop: anyio.Event) -> None:
        app = member_app(name, progress, commit_interval_ms=1_000_000)
        results[name] = await app.run_async(stop=stop, backend=watched)

    with caplog.at_level(logging.ERROR, logger="headwater.processing"):
        async with anyio.create_task_group() as tg:
            tg.start_soon(run, "a", stop_a)
            await progress.until(lambda: progress.distinct() == TOTAL)
            backend.commit_errors = [UnknownMemberError("fenced")]  # not worth retrying
            tg.start_soon(run, "b", stop_b)
            # Nothing was committed: a and b process their new shares from the start.
            await progress.until(
                lambda: len(progress.seen["a"]) + len(progress.seen["b"]) == 2 * TOTAL
            )
            stop_a.set()
            stop_b.set()
    assert results["a"].commit_failures == 1
    (message,) = [r.getMessage() for r in caplog.records if "could not commit" in r.getMessage()]
    assert "in/0 at 300" in message and "before they are given up: fenced" in message
    assert "processed again" in message
    out = [r for p in range(PARTITIONS) for r in backend.records("out", p)]
    sources = check_outputs(out, duplicates_allowed=True)
    assert set(sources.values()) == {2}  # all processed again; nothing was lost


def driver_app() -> App:
    app = App("rebalance")
    app.stream("in").map(lambda v: v).to("out")
    return app


def driver_outputs(driver: TestDriver) -> Counter[int]:
    return Counter(r.value for r in driver.records("out"))


def test_driver_two_members_one_leaves_mid_run() -> None:
    driver = TestDriver(driver_app(), partitions={"in": PARTITIONS}, members=2)
    a, b = driver.members()
    assert len(driver.assignment(a)) == len(driver.assignment(b)) == 2
    assert sorted(driver.tasks(a) + driver.tasks(b)) == ["0_0", "0_1", "0_2", "0_3"]
    for i in range(40):
        driver.send("in", i, partition=i % PARTITIONS)
    driver.remove_member(a)  # cleanly: it commits, b takes over its tasks
    assert driver.members() == [b] and len(driver.assignment(b)) == PARTITIONS
    for i in range(40, 80):
        driver.send("in", i, partition=i % PARTITIONS)
    assert driver_outputs(driver) == Counter(range(80))  # each exactly once


def test_driver_crashed_member_loses_only_uncommitted_work_to_duplicates() -> None:
    driver = TestDriver(driver_app(), partitions={"in": PARTITIONS}, members=2)
    a, _b = driver.members()
    for i in range(8):
        driver.send("in", i, partition=i % PARTITIONS)
    driver.commit()
    for i in range(8, 16):
        driver.send("in", i, partition=i % PARTITIONS)
    a_partitions = {tp.partition for tp in driver.assignment(a)}
    driver.remove_member(a, clean=False)  # a crash: nothing more is committed
    counts = driver_outputs(driver)
    assert set(counts) == set(range(16))  # nothing lost
    assert {i for i, n in counts.items() if n == 2} == {
        i for i in range(8, 16) if i % PARTITIONS in a_partitions
    }


def test_driver_restart_rebuilds_tasks_from_the_commits() -> None:
    driver = TestDriver(driver_app(), partitions={"in": 2})
    driver.send("in", 1, partition=0)
    driver.restart()  # clean: committed first, so nothing repeats
    driver.send("in", 2, partition=1)
    assert driver_outputs(driver) == Counter({1: 1, 2: 1})
    driver.restart(clean=False)  # 2 was never committed
    assert driver_outputs(driver) == Counter({1: 1, 2: 2})
    driver.advance(driver_app().config.commit_interval_ms)  # commits on the clock
    driver.restart(clean=False)
    assert driver_outputs(driver) == Counter({1: 1, 2: 2})


def test_driver_expired_member_does_not_commit() -> None:
    driver = TestDriver(driver_app(), members=2)
    a, b = driver.members()
    owner = a if driver.assignment(a) else b
    driver.send("in", 1)
    driver.expire_member(owner)
    assert driver_outputs(driver) == Counter({1: 2})  # re-processed by the other member


WINDOW_KEYS = [f"k{i}" for i in range(6)]  # 4 on partition 0, 2 on partition 1
FAR_FUTURE = 10_000_000  # a record this late closes every window before it


def window_app(
    seen: list[str] | None = None,
    progress: Progress | None = None,
    emitted: list[Any] | None = None,
) -> App:
    """A windowed sum per key of a 2-partition keyed topic; ``seen`` gets each value's id
    as it reaches the window, ``emitted`` each window result, and both pulse
    ``progress``."""
    app = App("moving", config=AppConfig(max_batch_bytes=256, commit_interval_ms=20))
    stream = app.stream("in")
    if seen is not None and progress is not None:

        def note(value: Any) -> None:
            seen.append(value["id"])
            progress.pulse()

        stream = stream.peek(note)
    final = (
        stream.key_by(lambda v: v["key"])
        .window(windows.tumbling(ms=1_000), timestamp=lambda v: v["ts"], idle_ms=None)
        .sum(lambda v: v["n"], name="sums")
        .final()
    )
    if emitted is not None and progress is not None:

        def emit(window: Any) -> None:
            emitted.append(window)
            progress.pulse()

        final = final.peek(emit)
    final.to("final")
    return app


def window_input(half: int) -> list[NewRecord]:
    """Half 0 or 1 of the input: each key's records at 0-590 ms, then 600-1190 ms (so the
    window [0, 1000) holds records of both halves); the second half ends with a record
    per key far later, which closes every window before it."""
    records = [
        NewRecord(
            orjson.dumps({"id": f"{key}/{t}", "key": key, "ts": t, "n": t % 7 + i}), encode_key(key)
        )
        for t in range(half * 600, half * 600 + 600, 10)
        for i, key in enumerate(WINDOW_KEYS)
    ]
    if half == 1:
        for key in WINDOW_KEYS:
            end = {"id": f"{key}/end", "key": key, "ts": FAR_FUTURE, "n": 0}
            records.append(NewRecord(orjson.dumps(end), encode_key(key)))
    return records


async def final_windows(local: Any) -> dict[tuple[Any, int], Any]:
    """Each (key, start)'s final value (a window emitted twice must say the same)."""
    found: dict[tuple[Any, int], Any] = {}
    for partition in local.store.partitions("final"):
        for record in await partition.read_records(0, 1 << 24):
            window = orjson.loads(record.value)
            where = (window["key"], window["start"])
            assert found.setdefault(where, window["value"]) == window["value"]
    return found


async def test_a_task_moves_to_another_member_with_its_state(tmp_path: Path) -> None:
    """Member a processes the first half (its state reaches the changelog as it commits);
    b joins, and the rebalance gives it one of a's tasks, whose store b restores from the
    changelog; a leaves, and b processes the second half. Every window's final value
    equals an uninterrupted run's."""
    async with open_in_process(tmp_path / "alone") as local:
        await local.store.create_topic("in", TopicConfig(partitions=2))
        for half in (0, 1):
            await local.store.append("in", window_input(half))
        await window_app().run_async(until_caught_up=True, backend=local)
        expected = await final_windows(local)
    assert len(expected) == len(WINDOW_KEYS) * 2  # each key's [0, 1000) and [1000, 2000)

    progress = Progress()
    seen: dict[str, list[str]] = {"a": [], "b": []}
    emitted: list[Any] = []
    apps = {name: window_app(seen[name], progress, emitted) for name in seen}
    stops = {name: anyio.Event() for name in seen}
    async with open_in_process(tmp_path / "moved") as local:
        await local.store.create_topic("in", TopicConfig(partitions=2))
        backend: Any = Watched(local, progress)

        async def run(name: str) -> None:
            await apps[name].run_async(stop=stops[name], backend=backend)

        async with anyio.create_task_group() as tg:
            tg.start_soon(run, "a")
            # Two tasks read the input, two its repartition topic (the window's).
            await progress.until(lambda: len(progress.held.get(0, [])) == 4)
            await local.store.append("in", window_input(0))
            await progress.until(lambda: len(seen["a"]) == len(window_input(0)))
            tg.start_soon(run, "b")
            await progress.until(lambda: len(progress.held.get(1, [])) == 2)
            restored = apps["b"].restore_progress() or {}
            [(task, moved_task)] = [(where, p) for where, p in restored.items() if p.total]
            assert task[1] == "sums" and moved_task.done  # b restored a's state first
            stops["a"].set()  # a leaves: b takes the other task too
            await progress.until(lambda: len(progress.held[1]) == 4)
            await local.store.append("in", window_input(1))
            await progress.until(lambda: len(emitted) >= len(expected))
            stops["b"].set()  # after the batch in hand, written: the windows just emitted
        moved = await final_windows(local)
    assert not set(seen["a"]) & set(seen["b"])  # a committed all it did before b took over
    assert moved == expected
