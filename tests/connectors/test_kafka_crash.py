"""``headwater connect ... --bootstrap`` under ``kill -9``, against a cluster
(``headwater broker``, Apache Kafka): the file source stores every line, a line twice
only within the chunk in flight when it died (its position is kept on the cluster); the
webhook sink killed mid-batch sends that batch again and nothing else (its batch's extent
is committed in the cluster's consumer group)."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import anyio
import anyio.to_thread
import orjson
from confluent_kafka import Consumer, TopicPartition

from headwater.connectors import KafkaCluster, KafkaLog

from .helpers import HANG_S, HEADWATER, read_cluster_topic
from .scripted_server import Answer, Received, assert_sent_again_and_nothing_else, scripted_server

LINES = 150_000
CHUNK_BYTES = 1 << 20  # the command's chunk (FileSourceConfig's default)
KILL_AT = (30_000, 80_000)  # records stored when each run is killed


async def create(bootstrap: str, topic: str) -> None:
    async with KafkaLog(KafkaCluster(bootstrap)) as log:
        await log.ensure_topic(topic, partitions=1)


def wait_for_records(bootstrap: str, topic: str, count: int) -> None:
    """Return once ``topic`` (one partition) holds ``count`` records: a consumer reads
    them as they come (each poll returns as soon as there is one)."""
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": "test-watch", "enable.auto.commit": False}
    )
    try:
        consumer.assign([TopicPartition(topic, 0, 0)])
        seen = 0
        deadline = time.monotonic() + HANG_S
        while seen < count:
            assert time.monotonic() < deadline, f"only {seen} of {count} records came"
            messages = consumer.consume(10_000, 1.0)
            seen += sum(1 for m in messages if m.error() is None)
    finally:
        consumer.close()


def connect(*args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [HEADWATER, "connect", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )


def line(i: int) -> bytes:
    return orjson.dumps({"i": i, "pad": "x" * 40}) + b"\n"


def test_kill_9_of_a_file_source_on_a_cluster_loses_nothing_and_repeats_at_most_a_chunk(
    bootstrap: str, tmp_path: Path, topic: str
) -> None:
    path = tmp_path / "app.log"
    path.write_bytes(b"".join(line(i) for i in range(LINES)))
    per_chunk = CHUNK_BYTES // len(line(0))  # the most lines a chunk holds
    anyio.run(create, bootstrap, topic, backend="trio")
    args = ["file-source", str(path), "--topic", topic, "--from-beginning",
            "--bootstrap", bootstrap]  # fmt: skip

    for count in KILL_AT:
        process = connect(*args)
        wait_for_records(bootstrap, topic, count)
        process.send_signal(signal.SIGKILL)
        process.communicate()

    last = connect(*args, "--until-caught-up")
    _, err = last.communicate(timeout=HANG_S)
    assert last.returncode == 0, err.decode()

    got = [orjson.loads(r.value or b"")["i"] for r in read_cluster_topic(bootstrap, topic)[0]]
    assert set(got) == set(range(LINES))
    # Runs of consecutive lines; each restart may go back at most one chunk.
    restarts = [(got[k], got[k + 1]) for k in range(len(got) - 1) if got[k + 1] != got[k] + 1]
    assert len(restarts) <= len(KILL_AT)
    for end, start in restarts:
        assert end + 1 - per_chunk <= start <= end, (end, start)
    assert len(got) - LINES <= len(KILL_AT) * per_chunk


RECORDS = 60
FIRST_RUN = 25  # records there when the first run starts: its third batch is 20-24
HELD = 2  # the request the first run dies in


async def append(bootstrap: str, topic: str, start: int, stop: int) -> None:
    async with KafkaLog(KafkaCluster(bootstrap)) as log:
        await log.ensure_topic(topic, partitions=1)
        await log.append(topic, [b'{"i":%d}' % i for i in range(start, stop)])


async def test_kill_9_of_a_webhook_sink_on_a_cluster_redelivers_that_batch_and_nothing_else(
    bootstrap: str, topic: str
) -> None:
    await append(bootstrap, topic, 0, FIRST_RUN)

    def script(n: int, request: Received) -> Answer:
        return Answer(hang=True) if n == HELD else Answer(200)

    def sink(url: str) -> subprocess.Popen[bytes]:
        return connect("webhook", topic, "--url", url, "--batch-records", "10",
                       "--until-caught-up", "--bootstrap", bootstrap)  # fmt: skip

    async with scripted_server(script) as (server, url):
        first = sink(url)
        await server.wait_for(HELD + 1)  # it is sending the batch that will hang
        first.send_signal(signal.SIGKILL)
        await anyio.to_thread.run_sync(first.communicate)
        held = server.received[HELD]
        await append(bootstrap, topic, FIRST_RUN, RECORDS)

        # It joins once the group has given up on the killed member (its session).
        second = sink(url)
        # Waited for in a thread: the server answers it on this event loop meanwhile.
        _, err = await anyio.to_thread.run_sync(second.communicate)
        assert second.returncode == 0, err.decode()

    assert [v["i"] for v in orjson.loads(held.body)] == list(range(20, 25))
    assert_sent_again_and_nothing_else(server, HELD, RECORDS)
