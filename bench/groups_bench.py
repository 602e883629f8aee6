"""Figures for consumer groups (groups/).

Prints:

* rebalance time: 10 members joining a group over a 100-partition topic, from the first
  JoinGroup to the last SyncGroup answer, driven on the sans-I/O :class:`Group` with a
  fake clock (so the initial rebalance delay costs nothing: this is the coordinator's and
  the leader's work), per assignor;
* commits/s through :meth:`GroupCoordinator.commit` (each acknowledged once durable), one
  committer at a time and eight at once, under each durability policy of the offsets topic;
* consumer throughput: records/s through ``async for batch in consumer`` with a commit per
  batch, on one partition and on eight, next to the raw read rate of the log (a
  ``Partition.read_records`` loop over the same partitions, 1 MiB per read as the
  consumer's default ``max_bytes``); the best of five interleaved rounds of each, and the
  ratio of the medians.

Usage: ``python bench/groups_bench.py [--records N] [--dir DIR]``.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import anyio
import orjson

from headwater.groups import (
    Group,
    GroupConfig,
    GroupCoordinator,
    GroupProtocol,
    JoinRequest,
    JoinResult,
    MemberIdRequiredError,
    Pending,
    Subscription,
    SyncRequest,
    TopicPartition,
    assign_partitions,
    encode_subscription,
)
from headwater.store import Durability, NewRecord, Store, TopicConfig, open_store

BATCH = 1_000
ROUNDS = 5
MEMBERS = 10
PARTITIONS = 100


# -- rebalance -----------------------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 0

    def __call__(self) -> int:
        return self.now


def one_rebalance(strategy: str) -> float:
    """Return the wall seconds of 10 members forming a group over 100 partitions."""
    clock = FakeClock()
    config = GroupConfig(initial_rebalance_delay_ms=100)
    group = Group("bench", clock=clock, config=config)
    metadata = encode_subscription(Subscription(topics=("t",)))

    def request(member_id: str) -> JoinRequest:
        return JoinRequest(
            client_id="bench",
            session_timeout_ms=45_000,
            rebalance_timeout_ms=60_000,
            protocol_type="consumer",
            protocols=(GroupProtocol(strategy, metadata),),
            member_id=member_id,
        )

    started = time.perf_counter()
    pendings = {}
    for _ in range(MEMBERS):
        try:
            group.join(request(""))
        except MemberIdRequiredError as exc:
            pendings[group.join(request(exc.member_id))] = exc.member_id
    results: dict[str, JoinResult] = {}
    while len(results) < MEMBERS:  # the clock passes the (extended) initial delay
        clock.now = group.next_deadline_ms() or clock.now
        for pending, outcome in group.poll():
            assert isinstance(outcome, JoinResult)
            results[pendings[pending]] = outcome
    leader = next(r for r in results.values() if r.is_leader)
    assignments = assign_partitions(strategy, leader.members, {"t": PARTITIONS})
    answered = 0
    for member_id, result in results.items():
        answer = group.sync(
            SyncRequest(
                member_id=member_id,
                generation_id=result.generation_id,
                assignments=assignments if result.is_leader else {},
            )
        )
        answered += not isinstance(answer, Pending)
    answered += len(group.poll())
    elapsed = time.perf_counter() - started
    assert answered == MEMBERS and str(group.state) == "Stable", (answered, group.state)
    return elapsed


def bench_rebalance() -> None:
    for strategy in ("range", "roundrobin", "cooperative-sticky"):
        times = [one_rebalance(strategy) for _ in range(200)]
        print(
            f"rebalance, {MEMBERS} members join over {PARTITIONS} partitions ({strategy}): "
            f"median {statistics.median(times) * 1e3:.2f} ms, "
            f"p99 {sorted(times)[int(len(times) * 0.99)] * 1e3:.2f} ms"
        )


# -- commits -------------------------------------------------------------------------------


async def bench_commits(root: Path, durability: Durability, committers: int, total: int) -> float:
    folder = root / f"commits-{durability}-{committers}"
    async with open_store(folder, default_config=TopicConfig(durability=durability)) as store:
        await store.create_topic("t", TopicConfig(partitions=committers, durability="never"))
        async with GroupCoordinator(store) as coordinator:
            per = total // committers

            async def commit_loop(index: int) -> None:
                tp = TopicPartition("t", index)
                for offset in range(per):
                    await coordinator.commit(f"g{index}", {tp: offset})

            started = time.perf_counter()
            async with anyio.create_task_group() as tg:
                for index in range(committers):
                    tg.start_soon(commit_loop, index)
            elapsed = time.perf_counter() - started
    shutil.rmtree(folder)
    return per * committers / elapsed


# -- consumption -----------------------------------------------------------------------------


def make_values(count: int) -> list[bytes]:
    """Return ``count`` JSON values of exactly 100 bytes."""
    values = []
    for i in range(count):
        event = {"user": f"u{i % 10_000}", "page": f"/p/{i % 100}", "i": i}
        raw = orjson.dumps(event)
        event["pad"] = "x" * (100 - len(raw) - len(',"pad":""'))
        values.append(orjson.dumps(event))
    return values


async def fill(store: Store, topic: str, partitions: int, total: int) -> None:
    await store.create_topic(topic, TopicConfig(partitions=partitions, durability="never"))
    values = make_values(BATCH)
    batch = [NewRecord(value=v) for v in values]
    for p in range(partitions):
        partition = store.partition(topic, p)
        for _ in range(total // partitions // BATCH):
            await partition.append(batch)


async def raw_read_rate(store: Store, topic: str) -> float:
    started = time.perf_counter()
    count = 0
    for partition in store.partitions(topic):
        position, end = partition.log_start_offset, partition.high_watermark
        while position < end:
            records = await partition.read_records(position, 1 << 20)
            count += len(records)
            position = records[-1].offset + 1
    return count / (time.perf_counter() - started)


async def consumer_rate(store: Store, topic: str, group: str, total: int) -> float:
    config = GroupConfig(initial_rebalance_delay_ms=0)
    async with GroupCoordinator(store, config=config) as coordinator:
        started = time.perf_counter()
        count = 0
        async with coordinator.consumer(group, [topic], auto_offset_reset="earliest") as consumer:
            async for batch in consumer:
                count += len(batch.records)
                await consumer.commit()
                if count >= total:
                    break
        elapsed = time.perf_counter() - started
    assert count == total, count
    return total / elapsed


async def bench_consume(root: Path, total: int) -> None:
    for durability in (Durability.BATCH, Durability.NEVER):
        folder = root / f"consume-{durability}"
        async with open_store(folder, default_config=TopicConfig(durability=durability)) as store:
            for partitions in (1, 8):
                topic = f"t{partitions}"
                await fill(store, topic, partitions, total)
                raw, group = [], []
                for i in range(ROUNDS):  # interleaved, best of each: robust to a busy host
                    raw.append(await raw_read_rate(store, topic))
                    group.append(await consumer_rate(store, topic, f"g{partitions}-{i}", total))
                best_raw, best_group = max(raw), max(group)
                median = statistics.median(group) / statistics.median(raw)
                print(
                    f"consume {total:,} records, {partitions} partition(s), offsets durability "
                    f"{durability}: raw read {best_raw:,.0f} records/s, consumer with a commit "
                    f"per batch {best_group:,.0f} records/s ({best_group / best_raw:.0%} of raw; "
                    f"medians {median:.0%})"
                )
        shutil.rmtree(folder)


async def main(root: Path, total: int) -> None:
    bench_rebalance()
    for durability in (Durability.ALWAYS, Durability.BATCH, Durability.NEVER):
        single = await bench_commits(root, durability, 1, 300 if durability != "never" else 5000)
        many = await bench_commits(root, durability, 8, 1600 if durability != "never" else 8000)
        print(
            f"commits, offsets durability {durability}: one committer {single:,.0f}/s, "
            f"eight at once {many:,.0f}/s"
        )
    await bench_consume(root, total)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--dir", type=Path, default=None, help="where to write (default: tmp)")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="groups-bench-", dir=args.dir))
    try:
        anyio.run(main, root, args.records, backend="trio")
    finally:
        shutil.rmtree(root, ignore_errors=True)
