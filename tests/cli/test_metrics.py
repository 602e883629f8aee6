"""``headwater broker --metrics``: a scraper gets the process's metrics over HTTP.

The broker runs as a subprocess; real Kafka clients (confluent-kafka) produce, consume and
commit through it; httpx scrapes ``/metrics`` and prometheus_client's own parser reads
what came back, as Prometheus would.
"""

from __future__ import annotations

import re
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from broker.running import HEADWATER, BrokerProcess, Connection, produce_body
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from prometheus_client.parser import text_string_to_metric_families

from headwater.broker import ApiKey
from headwater.store import NewRecord, encode_batch

_URL = re.compile(r"serving metrics at (http://\S+/metrics)")

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(url: str) -> Samples:
    """GET ``url`` and parse it: {(sample name, labels): value}."""
    response = httpx.get(url, timeout=10)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    """The value of one sample (KeyError if it is not there)."""
    return samples[(name, frozenset(labels.items()))]


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[tuple[BrokerProcess, str]]:
    """A broker serving its metrics on a free port; its Kafka address and metrics URL."""
    process = BrokerProcess(tmp_path / "data", "--metrics", "127.0.0.1:0").start()
    found = _URL.search(process.log())
    assert found, process.log()
    yield process, found[1]
    assert process.stop() == 0, process.log()


def test_a_scrape_shows_requests_the_log_and_the_groups(
    broker: tuple[BrokerProcess, str],
) -> None:
    process, url = broker
    bootstrap = process.bootstrap
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for future in admin.create_topics([NewTopic("clicks", 2, 1)]).values():
        future.result(timeout=30)
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 0})
    for i in range(50):
        producer.produce("clicks", b"%d" % i, partition=0)
    assert producer.flush(30) == 0

    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "readers",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.assign([TopicPartition("clicks", 0, 0)])
    seen = 0
    while seen < 30:
        seen += sum(m.error() is None for m in consumer.consume(30 - seen, 10))
    consumer.commit(offsets=[TopicPartition("clicks", 0, 30)], asynchronous=False)
    consumer.close()
    with Connection(process.port) as connection:  # a produce the broker refuses
        records = encode_batch([NewRecord(b"x")], base_offset=0)
        answer = connection.request(
            ApiKey.PRODUCE, 8, produce_body("no-such-topic", [(0, records)])
        )
        [[partition]] = [t["partition_responses"] for t in answer["responses"]]
        assert partition["error_code"] == 3  # UNKNOWN_TOPIC_OR_PARTITION

    samples = scrape(url)

    produced = value(samples, "headwater_broker_requests_total", api="PRODUCE", error="NONE")
    assert produced >= 1
    refused = "UNKNOWN_TOPIC_OR_PARTITION"
    assert value(samples, "headwater_broker_requests_total", api="PRODUCE", error=refused) == 1
    timed = value(samples, "headwater_broker_request_seconds_count", api="PRODUCE")
    assert timed == produced + 1
    assert value(samples, "headwater_broker_requests_total", api="OFFSET_COMMIT", error="NONE") == 1
    assert value(samples, "headwater_broker_connections_accepted_total") >= 3
    assert value(samples, "headwater_broker_received_bytes_total") > 50
    assert value(samples, "headwater_broker_sent_bytes_total") > 30  # the fetched records

    assert value(samples, "headwater_store_appended_records_total", topic="clicks") == 50
    assert value(samples, "headwater_store_appends_total", topic="clicks") == produced
    end = {"topic": "clicks", "partition": "0"}
    assert value(samples, "headwater_store_log_end_offset", **end) == 50
    assert value(samples, "headwater_store_high_watermark", **end) == 50
    assert value(samples, "headwater_store_log_end_offset", topic="clicks", partition="1") == 0
    assert value(samples, "headwater_store_segments", **end) == 1
    assert value(samples, "headwater_store_size_bytes", **end) > 50
    assert value(samples, "headwater_store_fsync_seconds_count") >= 1
    assert ("headwater_store_open_seconds", frozenset()) in samples

    group = {"group": "readers", "topic": "clicks", "partition": "0"}
    assert value(samples, "headwater_group_committed_offset", **group) == 30
    assert value(samples, "headwater_group_lag", **group) == 20
    assert value(samples, "headwater_group_members", group="readers") == 0

    assert httpx.get(url.removesuffix("/metrics") + "/other", timeout=10).status_code == 404


def test_a_taken_metrics_port_is_refused_at_once(tmp_path: Path) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        result = subprocess.run(
            [HEADWATER, "broker", "--data", str(tmp_path / "data"), "--listen", "127.0.0.1:0",
             "--metrics", f"127.0.0.1:{port}"],
            check=False,
            capture_output=True,
            text=True,
            timeout=60,
        )  # fmt: skip
    assert result.returncode == 1
    assert f"headwater: error: cannot serve metrics on 127.0.0.1:{port}" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("address", ["9100", "127.0.0.1:", "127.0.0.1:99999", ":9100"])
def test_a_bad_metrics_address_is_a_usage_error(tmp_path: Path, address: str) -> None:
    result = subprocess.run(
        [HEADWATER, "broker", "--data", str(tmp_path / "data"), "--metrics", address],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "headwater: error: Invalid value for '--metrics'" in result.stderr
