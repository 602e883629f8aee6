"""The connectors against a Kafka-protocol cluster: a real ``headwater broker`` subprocess
on 127.0.0.1, reached through confluent-kafka, with the same connector code as on a data
directory: the ingest endpoint, the file source (its position kept on the cluster), the
file sink and the webhook sink (consumer groups of the cluster)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import httpx
import orjson
import pytest
from confluent_kafka import Consumer, TopicPartition

from headwater.connectors import (
    FileSink,
    FileSinkConfig,
    FileSource,
    FileSourceConfig,
    HttpIngest,
    IngestConfig,
    KafkaCluster,
    KafkaGroups,
    KafkaLog,
    KafkaPositionStore,
    LogUnavailableError,
    SinkRunner,
    WebhookConfig,
    WebhookSink,
    parse_final_name,
)
from headwater.store import TopicNotFoundError

from .helpers import HANG_S, read_cluster_topic, values_on
from .scripted_server import Answer, Received, scripted_server


@pytest.fixture
async def log(bootstrap: str) -> AsyncIterator[KafkaLog]:
    async with KafkaLog(KafkaCluster(bootstrap)) as opened:
        yield opened


def numbers(values: list[bytes | None]) -> list[int]:
    return [orjson.loads(v or b"null")["i"] for v in values]


async def test_the_log_creates_appends_and_places_keys_as_the_store_does(
    bootstrap: str, log: KafkaLog, topic: str
) -> None:
    assert not await log.has_topic(topic)
    with pytest.raises(TopicNotFoundError):
        await log.append(topic, [b"x"])
    await log.ensure_topic(topic)
    await log.ensure_topic(topic)  # already there: nothing happens
    assert await log.has_topic(topic)
    assert await log.max_record_bytes(topic) > 1000
    keys = [b"a", b"b", None, b"a"]
    appended = await log.append(topic, [b"1", b"2", b"3", b"4"], keys=keys)
    offsets = appended.offsets()
    stored = await anyio.to_thread.run_sync(read_cluster_topic, bootstrap, topic)
    assert [stored[p][o].value for p, o in [(p, o - stored[p][0].offset) for p, o in offsets]] == [
        b"1",
        b"2",
        b"3",
        b"4",
    ]
    assert offsets[0][0] == offsets[3][0]  # one key, one partition


async def test_an_unreachable_cluster_is_log_unavailable() -> None:
    async with KafkaLog(KafkaCluster("127.0.0.1:1")) as log:
        with pytest.raises(LogUnavailableError, match=r"127\.0\.0\.1:1"):
            await log.has_topic("t")


async def test_ingest_appends_to_the_cluster(bootstrap: str, log: KafkaLog, topic: str) -> None:
    await log.ensure_topic(topic)
    ingest = HttpIngest(log)
    async with anyio.create_task_group() as tg:
        host, port = await tg.start(ingest.serve, "127.0.0.1", 0)
        async with httpx.AsyncClient(base_url=f"http://{host}:{port}", timeout=HANG_S) as http:
            body = b"".join(b'{"i":%d}\n' % i for i in range(100))
            answer = await http.post(
                f"/topics/{topic}/records",
                content=body,
                headers={"content-type": "application/x-ndjson"},
            )
            missing = await http.post(
                "/topics/no-such-topic/records",
                content=b"{}",
                headers={"content-type": "application/json"},
            )
        tg.cancel_scope.cancel()
    assert answer.status_code == 200, answer.text
    assert answer.json()["count"] == 100
    assert missing.status_code == 404
    assert numbers(await values_on(bootstrap, topic)) == list(range(100))


async def test_ingest_with_auto_create_creates_the_topic_on_the_cluster(
    bootstrap: str, log: KafkaLog, topic: str
) -> None:
    ingest = HttpIngest(log, IngestConfig(auto_create=True))
    async with anyio.create_task_group() as tg:
        host, port = await tg.start(ingest.serve, "127.0.0.1", 0)
        async with httpx.AsyncClient(base_url=f"http://{host}:{port}", timeout=HANG_S) as http:
            answer = await http.post(
                f"/topics/{topic}/records",
                content=b'{"i":0}',
                headers={"content-type": "application/json"},
            )
        tg.cancel_scope.cancel()
    assert answer.status_code == 200, answer.text
    assert await values_on(bootstrap, topic) == [b'{"i":0}']


async def test_a_file_source_keeps_its_position_on_the_cluster(
    bootstrap: str, tmp_path: Path, topic: str
) -> None:
    path = tmp_path / "app.jsonl"
    path.write_bytes(b"".join(b'{"i":%d}\n' % i for i in range(50)))
    config = FileSourceConfig(
        path=str(path), topic=topic, from_beginning=True, chunk_bytes=1024, name=topic
    )
    for more in (range(50, 80), range(80, 81)):
        async with KafkaLog(KafkaCluster(bootstrap)) as log:
            source = FileSource(log, KafkaPositionStore(log), config)
            await source.run(until_caught_up=True)
        with path.open("ab") as f:
            f.write(b"".join(b'{"i":%d}\n' % i for i in more))
    assert numbers(await values_on(bootstrap, topic)) == list(range(80))


async def test_a_file_sink_reads_a_cluster_topic_as_a_group(
    bootstrap: str, log: KafkaLog, tmp_path: Path, topic: str
) -> None:
    await log.ensure_topic(topic)
    out = tmp_path / "out"
    groups = KafkaGroups(KafkaCluster(bootstrap))
    config = FileSinkConfig(topic=topic, directory=str(out), roll_bytes=200)
    for start in (0, 30):
        await log.append(topic, [b'{"i":%d}' % i for i in range(start, start + 30)])
        runner = SinkRunner(groups, topic, f"{topic}-files", FileSink(log, config))
        with anyio.fail_after(HANG_S):
            await runner.run(until_caught_up=True)
    got = []
    for path in sorted(out.iterdir()):
        assert parse_final_name(path.name) is not None, path.name
        got.extend(orjson.loads(line)["i"] for line in path.read_bytes().splitlines())
    assert got == list(range(60))  # each record once, though the sink ran twice


async def test_a_webhook_sink_delivers_a_cluster_topic_and_dead_letters_refusals(
    bootstrap: str, log: KafkaLog, topic: str
) -> None:
    await log.ensure_topic(topic)
    await log.append(topic, [b'{"i":%d}' % i for i in range(20)] + [b"not json"])
    groups = KafkaGroups(KafkaCluster(bootstrap))

    def script(n: int, request: Received) -> Answer:
        return Answer(500 if n == 0 else 200)

    async with scripted_server(script) as (server, url):
        config = WebhookConfig(topic=topic, url=url, backoff_s=0.01)
        async with WebhookSink(log, config) as sink:
            runner = SinkRunner(groups, topic, f"{topic}-hook", sink)
            with anyio.fail_after(HANG_S):
                await runner.run(until_caught_up=True)
    bodies = [orjson.loads(r.body) for r in server.received]
    assert len(bodies) == 2
    assert bodies[0] == bodies[1] == [{"i": i} for i in range(20)]
    assert server.received[0].key == server.received[1].key
    assert await values_on(bootstrap, f"{topic}-dlq") == [b"not json"]


def committed_offsets(bootstrap: str, group: str, topic: str, count: int) -> list[int]:
    """The group's committed offset of each partition of ``topic`` (negative: none)."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        asked = [TopicPartition(topic, p) for p in range(count)]
        return [tp.offset for tp in consumer.committed(asked, timeout=HANG_S)]
    finally:
        consumer.close()


def final_files(directory: Path) -> list[int]:
    """The numbers in the final files under ``directory`` (none if it does not exist)."""
    got: list[int] = []
    for path in sorted(directory.iterdir()) if directory.exists() else []:
        assert parse_final_name(path.name) is not None, path.name
        got.extend(orjson.loads(line)["i"] for line in path.read_bytes().splitlines())
    return got


def test_a_rebalance_commits_what_a_file_sink_had_in_hand_exactly_once(
    bootstrap: str, tmp_path: Path, topic: str
) -> None:
    """A second member joins while the first holds open files of both partitions: the
    first finishes them and commits from inside the rebalance (librdkafka's callback),
    so the members go on from there: every record in exactly one final file, and the
    group's offsets at the ends (see ``rebalance_members.py``)."""

    async def prepare() -> None:
        async with KafkaLog(KafkaCluster(bootstrap)) as log:
            await log.ensure_topic(topic, partitions=2)
            numbers = range(40)
            await log.append(
                topic, [b'{"i":%d}' % i for i in numbers], keys=[b"k%d" % i for i in numbers]
            )

    anyio.run(prepare, backend="trio")
    script = Path(__file__).with_name("rebalance_members.py")
    members = subprocess.Popen(
        [sys.executable, str(script), bootstrap, topic, str(tmp_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        out, err = members.communicate(timeout=HANG_S)
    except subprocess.TimeoutExpired:
        members.kill()
        out, err = members.communicate()
        pytest.fail(f"the members hung in the rebalance: {err.decode()[-2000:]}")
    assert members.returncode == 0, err.decode()
    assert out.split()[0] == b"done"
    assert int(out.split()[1]) >= 1  # the first member committed what it gave up
    got = final_files(tmp_path / "first") + final_files(tmp_path / "second")
    assert sorted(got) == list(range(60))
    ends = read_cluster_topic(bootstrap, topic)
    expected = [ends[p][-1].offset + 1 for p in range(2)]
    assert committed_offsets(bootstrap, f"{topic}-files", topic, 2) == expected
