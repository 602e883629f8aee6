"""The backend contract, run against each implementation: the embedded log
(InProcessBackend) and the test driver's (MemoryBackend)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import anyio
import pytest

from headwater.groups import TopicPartition
from headwater.processing import Backend, OutRecords, open_in_process
from headwater.processing._backends.memory import MemoryBackend
from headwater.store import CleanupPolicy, InvalidConfigError, OffsetOutOfRangeError


@pytest.fixture(params=["in_process", "memory"])
async def backend(request: pytest.FixtureRequest, data: Path) -> AsyncIterator[Backend]:
    if request.param == "memory":
        yield MemoryBackend()
        return
    async with open_in_process(data) as local:
        yield local


def out(values: list[bytes], source: bytes = b"src/0/") -> OutRecords:
    count = len(values)
    return OutRecords(list(values), [None] * count, [7] * count, source, list(range(count)))


async def test_topics_with_configs(backend: Backend) -> None:
    assert await backend.partition_count("t") is None
    await backend.create_topic("t", 3, {"cleanup.policy": "compact", "retention.ms": "1000"})
    await backend.create_topic("t", 5)  # exists: nothing changes
    assert await backend.partition_count("t") == 3
    config = (
        backend.configs["t"]
        if isinstance(backend, MemoryBackend)
        else backend.store.topic_config("t")  # type: ignore[attr-defined]
    )
    assert config.cleanup_policy is CleanupPolicy.COMPACT and config.retention_ms == 1000
    found = await backend.topic_config("t")
    assert found is not None
    assert (found["cleanup.policy"], found["retention.ms"]) == ("compact", "1000")
    await backend.create_topic("d", 1)
    defaults = await backend.topic_config("d")
    assert defaults is not None
    assert (defaults["cleanup.policy"], defaults["retention.bytes"]) == ("delete", "-1")
    assert await backend.topic_config("missing") is None
    with pytest.raises(InvalidConfigError, match="unknown"):
        await backend.create_topic("u", 1, {"no.such.config": "1"})
    assert await backend.partition_count("u") is None


async def test_produce_fetch_and_offsets(backend: Backend) -> None:
    await backend.create_topic("t", 1)
    assert (await backend.start_offset("t", 0), await backend.end_offset("t", 0)) == (0, 0)
    await backend.produce("t", 0, out([b"a", b"b"]))
    await backend.produce("t", 0, out([b"c"]))
    assert await backend.end_offset("t", 0) == 3
    records = await backend.fetch("t", 0, 1, 1 << 20)
    assert list(records.offsets) == [1, 2] and records.values == [b"b", b"c"]
    assert records.headers[0] == (("headwater.source", b"src/0/1"),)
    with pytest.raises(OffsetOutOfRangeError):
        await backend.fetch("t", 0, 10, 1 << 20)


async def test_a_fetch_waits_and_a_cancelled_one_loses_nothing(backend: Backend) -> None:
    await backend.create_topic("t", 1)
    with anyio.move_on_after(0.01):
        await backend.fetch("t", 0, 0, 1 << 20)  # nothing yet: cancelled while waiting
    got: list[bytes | None] = []

    async def reader() -> None:
        got.extend((await backend.fetch("t", 0, 0, 1 << 20)).values)

    async with anyio.create_task_group() as tg:
        tg.start_soon(reader)
        await anyio.wait_all_tasks_blocked()
        await backend.produce("t", 0, out([b"x"]))
    assert got == [b"x"]


class Recorder:
    """Records membership callbacks, and lets a test wait until they say something."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str, list[TopicPartition]]] = []
        self._changed = anyio.Event()

    def callbacks(self, member: str) -> dict[str, Any]:
        def record(what: str) -> Any:
            async def handler(partitions: list[TopicPartition]) -> None:
                self.events.append((member, what, partitions))
                self._changed.set()
                self._changed = anyio.Event()

            return handler

        return {
            "on_assigned": record("assigned"),
            "on_revoked": record("revoked"),
            "on_lost": record("lost"),
        }

    def held(self) -> dict[str, list[TopicPartition]]:
        """Return what each member holds after the events so far."""
        held: dict[str, list[TopicPartition]] = {}
        for member, what, partitions in self.events:
            mine = held.setdefault(member, [])
            if what == "assigned":
                mine.extend(partitions)
            else:
                held[member] = [p for p in mine if p not in partitions]
        return {m: sorted(p) for m, p in held.items()}

    async def until(self, condition: Callable[[], bool]) -> None:
        while not condition():
            await self._changed.wait()


async def test_join_commit_with_metadata_and_rebalance(backend: Backend) -> None:
    await backend.create_topic("t", 4)
    log = Recorder()
    tp = [TopicPartition("t", p) for p in range(4)]
    async with backend.join("g", ["t"], **log.callbacks("a")) as a:
        assert log.held() == {"a": tp}
        await a.commit({tp[0]: 5, tp[1]: 7}, {tp[0]: "meta-0"})
        committed = await a.committed(tp)
        assert {k: (v.offset, v.metadata) for k, v in committed.items()} == {
            tp[0]: (5, "meta-0"),
            tp[1]: (7, ""),
        }
        async with backend.join("g", ["t"], **log.callbacks("b")) as b:
            await log.until(lambda: len(log.held().get("a", [])) == 2)
            # Eager range: a gave up everything first; each holds whole partition numbers.
            assert ("a", "revoked", tp) in log.events
            held = log.held()
            assert sorted(held["a"] + held["b"]) == tp and len(held["b"]) == 2
            await b.commit({tp[2]: 1}, {tp[2]: "from-b"})
        await log.until(lambda: log.held()["a"] == tp)  # b left: a has everything again
        assert log.held()["b"] == []
        assert (await a.committed([tp[2]]))[tp[2]].metadata == "from-b"


async def test_an_in_process_fetch_at_a_transaction_marker_steps_past_it_then_waits(
    data: Path,
) -> None:
    """A marker is never a record: a fetch there says where to read on (no records, an
    empty range from past the marker), and a fetch from there waits (it once spun
    without yielding)."""
    from headwater.store import ControlType, NewRecord, encode_transactional_batch

    async with open_in_process(data, serve=False) as local:
        await local.create_topic("t", 1)
        partition = local.store.partition("t", 0)
        batch = encode_transactional_batch(
            [NewRecord(value=b"in-txn")], producer_id=5, producer_epoch=0, base_sequence=0
        )
        await partition.append_batch(batch)
        await partition.write_marker(
            ControlType.COMMIT, producer_id=5, producer_epoch=0, coordinator_epoch=0
        )
        at_marker = await local.fetch("t", 0, 1, 1 << 20)
        assert not at_marker
        assert at_marker.offsets == range(2, 2)
        assert await local.end_offset("t", 0) == 2
        got: list[bytes | None] = []

        async def reader() -> None:
            got.extend((await local.fetch("t", 0, 2, 1 << 20)).values)

        with anyio.fail_after(60):  # a hang would otherwise never end
            async with anyio.create_task_group() as tg:
                tg.start_soon(reader)
                await anyio.wait_all_tasks_blocked()
                await local.produce("t", 0, out([b"after"]))
        assert got == [b"after"]


async def test_delete_records_moves_the_start_offset(backend: Backend) -> None:
    await backend.create_topic("t", 1)
    await backend.produce("t", 0, out([b"a", b"b", b"c"]))
    await backend.delete_records("t", 0, 2)
    await backend.delete_records("t", 0, 1)  # behind the start: nothing moves back
    assert await backend.start_offset("t", 0) == 2
    assert (await backend.fetch("t", 0, 2, 1 << 20)).values == [b"c"]
    with pytest.raises(OffsetOutOfRangeError):
        await backend.fetch("t", 0, 1, 1 << 20)
    with pytest.raises(OffsetOutOfRangeError):
        await backend.delete_records("t", 0, 4)  # past the end
