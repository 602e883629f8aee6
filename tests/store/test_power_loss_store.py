"""Power-loss crash tests through the store's async face (``open_store``, ``Partition``).

The same method as ``test_power_loss.py`` (read its docstring), one level up: a data
directory with a topic under ``durability=always``, one under ``batch`` with two
partitions and concurrent writers (so appends share fsyncs), and a compacted one. A
record is acknowledged when ``Store.append`` returned. Writers run concurrently, so a
record's offset is only known once acknowledged; each record therefore carries its own
identity (``uid``) and is a pure function of it, so that any record read back can be
checked, acknowledged or not.
"""

from __future__ import annotations

import hashlib
import os
import random
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import anyio
import pytest
from faultfs import FaultFS, PowerLoss, ProcessKilled

from headwater.store import (
    CleanupPolicy,
    Durability,
    NewRecord,
    PartitionLog,
    Record,
    Store,
    TopicConfig,
    open_store,
)

SEED = int(os.environ.get("HEADWATER_POWER_LOSS_SEED", "6061"))
BASE_TIMESTAMP = 1_700_000_000_000
KEYS = 11

TOPICS = {
    "always": TopicConfig(
        durability=Durability.ALWAYS, segment_bytes=2048, retention_ms=-1, retention_bytes=12000
    ),
    "batch": TopicConfig(
        durability=Durability.BATCH,
        partitions=2,
        segment_bytes=4096,
        index_interval_bytes=512,
        retention_ms=-1,
        retention_bytes=30000,
    ),
    "compact": TopicConfig(
        durability=Durability.ALWAYS,
        cleanup_policy=CleanupPolicy.COMPACT,
        segment_bytes=1024,
        delete_retention_ms=0,
    ),
}


def record(uid: int) -> NewRecord:
    """Record number ``uid``: a pure function of it."""
    digest = hashlib.blake2b(uid.to_bytes(8, "big"), digest_size=8).hexdigest().encode()
    return NewRecord(
        value=b"%d:" % uid + digest * (1 + uid % 6),
        key=b"k%d" % (int(digest[:4], 16) % KEYS),
        timestamp=BASE_TIMESTAMP + uid,
    )


def uid_of(found: Record) -> int:
    """The uid a record read back claims, after checking that it is exactly that record."""
    uid = int(found.value.split(b":", 1)[0]) if found.value else -1
    want = record(uid)
    assert (found.key, found.value, found.timestamp) == (want.key, want.value, want.timestamp), (
        f"offset {found.offset} holds a record no writer wrote"
    )
    return uid


@dataclass
class Ledger:
    """What writers were told, per partition, across every life of the data directory."""

    next_uid: int = 0
    #: (topic, partition) -> offset -> uid of every acknowledged record.
    acked: dict[tuple[str, int], dict[int, int]] = field(default_factory=lambda: defaultdict(dict))
    #: The log start offset each partition had reached.
    start: dict[tuple[str, int], int] = field(default_factory=lambda: defaultdict(int))
    power_losses: int = 0
    kills: int = 0
    clean_closes: int = 0
    segments_retired: int = 0
    records_compacted: int = 0
    lost: list[tuple[str, int, int]] = field(default_factory=list)

    def uids(self, count: int) -> list[int]:
        first = self.next_uid
        self.next_uid += count
        return list(range(first, first + count))


def start_after_retention(log: PartitionLog) -> int:
    """Where retention by size will make ``log`` start (a model of the rule)."""
    segments = log.segments
    limit = log.config.retention_bytes
    if log.config.cleanup_policy is CleanupPolicy.COMPACT or limit < 0:
        return log.log_start_offset
    total = sum(s.size for s in segments)
    i = 0
    while i < len(segments) - 1 and total - segments[i].size >= limit:
        total -= segments[i].size
        i += 1
    return segments[i].base_offset


async def check_store(store: Store, ledger: Ledger) -> None:
    """Check every partition against the ledger (see the module docstring)."""
    for topic, config in TOPICS.items():
        if not store.has_topic(topic):
            assert not any(t == topic for t, _ in ledger.acked), f"topic {topic} vanished"
            continue
        for partition in store.partitions(topic):
            where = (topic, partition.index)
            start = partition.log_start_offset
            assert start <= ledger.start[where], f"{where}: starts at {start}: records lost"
            found: dict[int, int] = {}
            offset = start
            while offset < partition.high_watermark:
                records = await partition.read_records(offset, 1 << 16)
                assert records, f"{where}: nothing at {offset}"
                for r in records:
                    found[r.offset] = uid_of(r)
                offset = records[-1].offset + 1
            assert len(set(found.values())) == len(found), f"{where}: a record appears twice"
            acked = {o: u for o, u in ledger.acked[where].items() if o >= start}
            if config.cleanup_policy is CleanupPolicy.DELETE:
                lost = [o for o, u in acked.items() if found.get(o) != u]
            else:
                key_of = {o: record(u).key for o, u in found.items()}
                latest: dict[bytes | None, int] = {}
                for o in sorted(acked):
                    latest[record(acked[o]).key] = o
                lost = [
                    o
                    for k, o in latest.items()
                    if found.get(o) != acked[o]
                    and not any(fo > o and key_of[fo] == k for fo in found)
                ]
            ledger.lost.extend((topic, partition.index, o) for o in lost)
            assert not lost, f"{where}: acknowledged records lost at offsets {lost[:20]}"


async def create_topics(store: Store) -> None:
    for topic, config in TOPICS.items():
        if not store.has_topic(topic):
            await store.create_topic(topic, config)


async def write_some(store: Store, ledger: Ledger, rng: random.Random) -> None:
    """Concurrent writers, each appending a few batches to random partitions."""

    async def writer(seed: int) -> None:
        wrng = random.Random(seed)
        for _ in range(wrng.randint(1, 3)):
            topic = wrng.choice(list(TOPICS))
            partition = wrng.randrange(TOPICS[topic].partitions)
            uids = ledger.uids(wrng.choice((1, 2, 5, 12)))
            placed = await store.append(topic, [record(u) for u in uids], partition=partition)
            for (p, o), u in zip(placed, uids, strict=True):
                ledger.acked[(topic, p)][o] = u

    async with anyio.create_task_group() as tg:
        for _ in range(rng.randint(1, 4)):
            tg.start_soon(writer, rng.getrandbits(32))


@dataclass
class Machine:
    """The file system the next process on the simulated machine sees."""

    fs: FaultFS


async def one_open(machine: Machine, data: Path, ledger: Ledger, rng: random.Random) -> None:
    """Open the store, check it and work on it, until a clean close or a kill."""
    async with open_store(data, fs=machine.fs, maintenance_interval_s=3600) as store:
        await check_store(store, ledger)
        await create_topics(store)
        for topic, config in TOPICS.items():
            for i in range(config.partitions):
                ledger.start[(topic, i)] = store.partition(topic, i).log_start_offset
        for _ in range(rng.randint(5, 30)):
            action = rng.random()
            if action < 0.75:
                await write_some(store, ledger, rng)
            elif action < 0.85:
                # A cut part-way may leave any of the deletions retention decided on.
                planned = {}
                for topic in TOPICS:
                    for partition in store.partitions(topic):
                        planned[(topic, partition.index)] = start_after_retention(partition.log)
                ledger.start.update(planned)
                ledger.segments_retired += store.enforce_retention()
                for (topic, index), start in planned.items():
                    assert store.partition(topic, index).log_start_offset == start
            elif action < 0.93:
                ledger.records_compacted += await store.compact()
            elif action < 0.96:
                break  # a clean close
            else:
                # kill -9: the page cache survives; the store's own close is refused.
                machine.fs = machine.fs.kill_process()
                ledger.kills += 1
                return
    ledger.clean_closes += 1


async def one_life(root: Path, ledger: Ledger, rng: random.Random, crash_at: int) -> None:
    """Open and use the data directory until the power goes at operation ``crash_at``."""
    machine = Machine(FaultFS(root, seed=rng.getrandbits(32)))
    data = root / "data"
    machine.fs.crash_after(crash_at)  # which may fall in recovery, or in the next open
    try:
        while True:
            try:
                await one_open(machine, data, ledger, rng)
            except* ProcessKilled:
                pass  # the killed process's own close, refused
    except* PowerLoss:
        pass
    machine.fs.power_loss()
    ledger.power_losses += 1


async def run_cycles(root: Path, cycles: int, seed: int) -> Ledger:
    rng = random.Random(seed)
    ledger = Ledger()
    for cycle in range(cycles):
        crash_at = rng.randint(0, 400)
        try:
            await one_life(root, ledger, rng, crash_at)
        except Exception as exc:
            raise AssertionError(f"seed {seed}, cycle {cycle}: {exc!r}") from exc
    async with open_store(root / "data", fs=FaultFS(root)) as store:
        await check_store(store, ledger)
    return ledger


def summary(ledger: Ledger) -> str:
    acked = sum(len(v) for v in ledger.acked.values())
    return (
        f"{ledger.power_losses} simulated power losses, {acked} records acknowledged,"
        f" {len(ledger.lost)} lost, {ledger.kills} kills, {ledger.clean_closes} clean closes,"
        f" {ledger.segments_retired} segments retired, {ledger.records_compacted} compacted away"
    )


@pytest.mark.parametrize("variant", range(2))
async def test_power_loss_through_the_store(tmp_path: Path, variant: int) -> None:
    ledger = await run_cycles(tmp_path, 30, SEED + variant)
    print(summary(ledger))
    assert ledger.lost == []
    assert ledger.power_losses == 30
    assert sum(len(v) for v in ledger.acked.values()) > 300, summary(ledger)
