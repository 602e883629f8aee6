"""Helpers of the connector tests: read topics (of a store, of a cluster), wait for
records, run subprocesses."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import time
from pathlib import Path

import anyio
from confluent_kafka import Consumer, TopicPartition

from headwater.store import Partition, Record, Store, open_store

#: A test that waits longer than this for something has hung (the guard never decides
#: a pass: a slow machine only makes the wait longer).
HANG_S = 120
HEADWATER = str(Path(sys.executable).with_name("headwater"))


async def records_of(store: Store, topic: str) -> list[Record]:
    """Return every record of ``topic`` below the high watermark, partition after partition."""
    out: list[Record] = []
    for partition in store.partitions(topic):
        position = partition.log_start_offset
        while position < partition.high_watermark:
            batch = await partition.read_records(position, 1 << 24)
            if not batch:
                break
            out.extend(batch)
            position = batch[-1].offset + 1
    return out


async def values_of(store: Store, topic: str) -> list[bytes | None]:
    """Return the values of every record of ``topic`` (see :func:`records_of`)."""
    return [r.value for r in await records_of(store, topic)]


async def read_topic(data: Path, topic: str) -> list[Record]:
    """Open the data directory and return every record of ``topic`` (none if missing)."""
    async with open_store(data, maintenance_interval_s=math.inf) as store:
        if not store.has_topic(topic):
            return []
        return await records_of(store, topic)


async def wait_for_count(store: Store, topic: str, count: int) -> None:
    """Wait until ``topic`` holds at least ``count`` readable records (woken by appends)."""
    partitions = store.partitions(topic)
    with anyio.fail_after(HANG_S):
        while True:
            # The marks counted are the ones waited past: a task started later would read
            # a mark that appends made meanwhile, and wait for records that never come.
            marks = [p.high_watermark for p in partitions]
            if sum(m - p.log_start_offset for p, m in zip(partitions, marks, strict=True)) >= count:
                return
            async with anyio.create_task_group() as tg:

                async def wake(partition: Partition, mark: int) -> None:
                    await partition.wait_for(mark)
                    tg.cancel_scope.cancel()

                for p, mark in zip(partitions, marks, strict=True):
                    tg.start_soon(wake, p, mark)


def wait_for_line(process: subprocess.Popen[bytes], text: bytes) -> bytes:
    """Read the process's stdout until a line contains ``text``; return that line."""
    assert process.stdout is not None
    deadline = time.monotonic() + HANG_S
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            status = process.wait()
            errors = process.stderr.read().decode() if process.stderr is not None else ""
            raise AssertionError(f"the process ended (status {status}) before {text!r}: {errors}")
        if text in line:
            return line
    raise AssertionError(f"no line with {text!r}")


def python(script: str, *args: str, **kwargs: object) -> subprocess.Popen[bytes]:
    """Start ``script`` in a new Python process with stdout piped."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(  # type: ignore[call-overload, no-any-return]
        [sys.executable, "-c", script, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        **kwargs,
    )


def read_cluster_topic(bootstrap: str, topic: str) -> dict[int, list[Record]]:
    """Every record of ``topic`` on the cluster, by partition (blocking)."""
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": "test-reader", "enable.auto.commit": False}
    )
    try:
        metadata = consumer.list_topics(topic, timeout=10)
        out: dict[int, list[Record]] = {}
        for p in metadata.topics[topic].partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            records = out.setdefault(p, [])
            if high <= low:
                continue
            consumer.assign([TopicPartition(topic, p, low)])
            while not records or records[-1].offset < high - 1:
                message = consumer.poll(1.0)
                if message is None:
                    continue
                assert message.error() is None, message.error()
                headers = tuple(message.headers() or ())
                records.append(
                    Record(message.offset(), 0, message.key(), message.value(), headers)  # type: ignore[arg-type]
                )
        return out
    finally:
        consumer.close()


async def values_on(bootstrap: str, topic: str) -> list[bytes | None]:
    """Return the values of every record of ``topic`` on the cluster, partition after
    partition."""
    by_partition = await anyio.to_thread.run_sync(read_cluster_topic, bootstrap, topic)
    return [r.value for p in sorted(by_partition) for r in by_partition[p]]
