"""``headwater produce`` and ``headwater consume``: round trips and the ways to start reading.

Each test that uses ``log`` runs twice with the same assertions: on a data directory, and
over the Kafka protocol against a ``headwater broker`` (``--bootstrap``).
"""

from __future__ import annotations

import json
import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from headwater.store import NewRecord, canonical_key, open_store, partition_for_key

from .helpers import Headwater, Log

USERS = [f"user-{i}" for i in range(40)]


def events(count: int, start: int = 0) -> list[dict[str, object]]:
    return [
        {"n": i, "user": USERS[i % len(USERS)], "page": "/p"} for i in range(start, start + count)
    ]


def jsonl(docs: list[dict[str, object]]) -> str:
    # Spaced out (json.dumps' default) so that re-serialising compactly shows.
    return "".join(json.dumps(doc) + "\n" for doc in docs)


@pytest.fixture
def clicks(log: Log, name: str) -> str:
    """A topic of 3 partitions."""
    assert log("topics", "create", name, "--partitions", "3").returncode == 0
    return name


def test_keyed_round_trip(log: Log, clicks: str) -> None:
    docs = events(2500)
    produced = log("produce", clicks, "--key", "user", input=jsonl(docs))
    assert produced.returncode == 0, produced.stderr
    assert produced.stderr == ""
    acks = [tuple(map(int, line.split(":"))) for line in produced.stdout.splitlines()]
    assert len(acks) == len(docs)
    # Each record went where Kafka's murmur2 partitioner puts its key (the field as JSON,
    # as key_by writes keys); offsets are dense per partition, in input order.
    for doc, (partition, _offset) in zip(docs, acks, strict=True):
        assert partition == partition_for_key(canonical_key(doc["user"]), 3)
    for p in range(3):
        offsets = [o for q, o in acks if q == p]
        assert offsets == list(range(len(offsets)))

    consumed = log("consume", clicks, "--show-meta")
    assert consumed.returncode == 0, consumed.stderr
    lines = consumed.stdout.splitlines()
    metas = [json.loads(line) for line in lines]
    assert sorted(m["value"]["n"] for m in metas) == list(range(2500))
    assert {(m["partition"], m["offset"]) for m in metas} == set(acks)
    for m in metas:
        assert set(m) == {"topic", "partition", "offset", "timestamp", "key", "value", "headers"}
        assert (m["topic"], m["headers"]) == (clicks, [])
        assert m["key"] == json.dumps(m["value"]["user"])
        assert abs(m["timestamp"] - time.time() * 1000) < 600_000
    # Partition after partition, each in offset order.
    assert [(m["partition"], m["offset"]) for m in metas] == sorted(acks)
    # The stored value is the line re-serialised compactly.
    plain = log("consume", clicks, "--partition", "1", "--max", "1").stdout
    assert plain.startswith('{"n":') and ", " not in plain


def test_quiet_unkeyed_and_max(log: Log, clicks: str) -> None:
    produced = log("produce", clicks, "--quiet", input=jsonl(events(3000)) + "\n\n")
    assert produced.returncode == 0
    assert produced.stdout == ""
    assert produced.stderr.startswith(f"stored 3000 records in {clicks!r} (partition ")
    assert len(log("consume", clicks).stdout.splitlines()) == 3000
    assert len(log("consume", clicks, "--max", "7").stdout.splitlines()) == 7


def test_from_offset_time_and_latest(log: Log, clicks: str) -> None:
    assert log("produce", clicks, "--key", "user", input=jsonl(events(600))).returncode == 0
    time.sleep(0.05)
    midpoint = datetime.now(UTC)
    time.sleep(0.05)
    assert log("produce", clicks, "--key", "user", input=jsonl(events(300, 600))).returncode == 0

    def consume(*args: str) -> list[dict[str, int]]:
        result = log("consume", clicks, "--show-meta", *args)
        assert result.returncode == 0, result.stderr
        return [json.loads(line) for line in result.stdout.splitlines()]

    # An offset applies to each partition.
    from_offset = consume("--from", "100")
    assert len(from_offset) == 900 - 3 * 100
    assert min(m["offset"] for m in from_offset) == 100
    # A time with a timezone, and one without (taken as UTC), give the same records.
    later = list(range(600, 900))
    assert sorted(m["value"]["n"] for m in consume("--from", midpoint.isoformat())) == later
    naive = midpoint.replace(tzinfo=None).isoformat()
    assert sorted(m["value"]["n"] for m in consume("--from", naive)) == later
    assert consume("--from", "latest") == []
    one = consume("--partition", "1", "--from", "5", "--max", "3")
    assert [(m["partition"], m["offset"]) for m in one] == [(1, 5), (1, 6), (1, 7)]


async def test_values_that_are_not_json_print_as_strings(hw: Headwater, data: Path) -> None:
    async with open_store(data) as store:
        await store.create_topic("raw")
        await store.append(
            "raw",
            [
                NewRecord(value=b"plain text"),
                NewRecord(value=b'{"a":\n 1}'),
                NewRecord(value=None),
                NewRecord(value=b"\xff\xfe"),
                NewRecord(value=b"[1,2]", key=b"k"),
                NewRecord(value=b'{"id":\n 123456789012345678901}'),  # kept exactly
            ],
        )
    out = hw("consume", "raw").stdout.splitlines()
    assert out == [
        '"plain text"',
        '{"a":1}',
        "null",
        '"\\\\xff\\\\xfe"',
        "[1,2]",
        '{"id":123456789012345678901}',
    ]


def test_consume_into_a_closed_pipe_is_quiet(log: Log, clicks: str) -> None:
    log("produce", clicks, "--quiet", input=jsonl(events(5000)))
    with subprocess.Popen(
        log.command("consume", clicks),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    ) as proc:
        assert proc.stdout is not None and proc.stderr is not None
        proc.stdout.readline()
        proc.stdout.close()  # as `| head -1` does
        status = proc.wait(timeout=30)
        stderr = proc.stderr.read()
    assert status == 0
    assert stderr == b""


def test_integers_beyond_64_bits_go_in_and_come_out_exactly(log: Log, name: str) -> None:
    assert log("topics", "create", name).returncode == 0
    lines = '{"id": 123456789012345678901}\n{"id": -9223372036854775809, "ok": 1.5}\n'
    assert log("produce", name, input=lines).returncode == 0
    consumed = log("consume", name)
    assert consumed.stdout.splitlines() == [
        '{"id":123456789012345678901}',
        '{"id":-9223372036854775809,"ok":1.5}',
    ]
