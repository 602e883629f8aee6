"""W1's and W2's outputs on the embedded log, byte for byte, on a fixed sample.

The pipeline's hot path (reading, decoding, lineage, encoding, writing) is tuned for
speed; these digests were taken before it was, so any change to what the runtime writes
(values, keys, timestamps, lineage headers, order, partitions) fails here. W2's repartition
topic is digested too: it is what its windows read back. (``test_windowed_output.py``
checks the windowed step's own output in the test driver, late records included.)
"""

from __future__ import annotations

import hashlib
import random
from pathlib import Path

import orjson
import pytest

from headwater.processing import App, AppConfig, windows
from headwater.store import NewRecord, TopicConfig, open_store

SEED = 20240601


def sample(count: int) -> list[tuple[int, bytes]]:
    """W1's events as pipeline_bench.py makes them: (timestamp, JSON bytes)."""
    rng = random.Random(SEED)
    out = []
    ts = 1_717_200_000_000
    for _ in range(count):
        ts += rng.choice((0, 1, 1, 2))
        event = {
            "user": f"u{rng.randrange(500)}",
            "page": f"/p/{rng.randrange(100)}",
            "ts": ts,
            "ms": rng.randrange(1001),
        }
        out.append((ts, orjson.dumps(event)))
    return out


async def load(data: Path, count: int, partitions: int) -> None:
    """Append the sample to ``clicks``, spread over its partitions, 500 per append."""
    events = sample(count)
    async with open_store(data) as store:
        await store.create_topic("clicks", TopicConfig(partitions=partitions))
        for p in range(partitions):
            mine = events[p::partitions]
            for start in range(0, len(mine), 500):
                chunk = [NewRecord(v, timestamp=ts) for ts, v in mine[start : start + 500]]
                await store.append("clicks", chunk, partition=p)


async def digest(data: Path, topic: str) -> tuple[int, str]:
    """Return how many records ``topic`` holds and a digest of every one: partition,
    offset, key, value, timestamp and headers, in order."""
    h = hashlib.sha256()
    count = 0
    async with open_store(data, read_only=True) as store:
        for p, partition in enumerate(store.partitions(topic)):
            for r in await partition.read_records(0, 1 << 26):
                count += 1
                h.update(orjson.dumps([p, r.offset, r.key, r.value, r.timestamp, r.headers],
                                      default=lambda b: b.hex()))  # fmt: skip
    return count, h.hexdigest()


def w1(config: AppConfig) -> App:
    app = App("w1", config=config)
    clicks = app.stream("clicks")
    clicks.filter(lambda e: e["ms"] > 100).map(lambda e: {**e, "slow": e["ms"] > 500}).to("out")
    return app


def w2(config: AppConfig) -> App:
    app = App("w2", config=config)
    (
        app.stream("clicks")
        .filter(lambda e: e["ms"] > 100)
        .key_by(lambda e: e["user"])
        .window(windows.tumbling(seconds=2), timestamp=lambda e: e["ts"], grace_ms=0)
        .aggregate(
            initial=lambda: {"count": 0, "sum": 0},
            add=lambda acc, e: {"count": acc["count"] + 1, "sum": acc["sum"] + e["ms"]},
            name="per-user-10s",
        )
        .final()
        .to("out")
    )
    return app


# Batches of about 100 and about 2,000 records: the outputs must not depend on either.
BATCH_BYTES = [8 << 10, 160 << 10]


@pytest.mark.parametrize("batch_bytes", BATCH_BYTES)
async def test_w1_writes_the_same_bytes(data: Path, batch_bytes: int) -> None:
    await load(data, 20_000, partitions=4)
    stats = await w1(AppConfig(max_batch_bytes=batch_bytes)).run_async(
        until_caught_up=True, data_dir=data
    )
    assert stats.records_in == 20_000
    assert await digest(data, "out") == W1_OUT


@pytest.mark.parametrize("batch_bytes", BATCH_BYTES)
async def test_w2_writes_the_same_bytes(data: Path, batch_bytes: int) -> None:
    # One input partition: the repartition topic's records are in the one order its one
    # upstream task wrote them (with four, the tasks' turns would order them).
    await load(data, 20_000, partitions=1)
    # The repartition topic is read below: the run keeps its records.
    config = AppConfig(max_batch_bytes=batch_bytes, repartition_purge_interval_ms=None)
    stats = await w2(config).run_async(until_caught_up=True, data_dir=data)
    assert stats.records_in > 20_000  # the repartition topic's records too
    assert await digest(data, "w2-per-user-10s-repartition") == W2_REPARTITION
    assert await digest(data, "out") == W2_OUT


W1_OUT = (18015, "e6f895b3f78d528261f99e1b122062e4eb19b68b1a8af2d14153ea6db6759e53")
W2_REPARTITION = (18015, "60aea478d2dcea9dbe0aedaa4c2375fae43b2e7053abff56f4700a23bf47ccb1")
W2_OUT = (4375, "e6a39f4894e8252dd06ba1a92de17a00ec0edf4f2218d4f6d6d3b4ef97c27e1a")
