"""A broker installed without the ``compression`` extra refuses what it could not read.

snappy, lz4 and zstd need cramjam. Such a broker answers a batch in one of them with
UNSUPPORTED_COMPRESSION_TYPE (as Kafka does for a codec it cannot take), says in its log
which package to install, stores nothing of it, and goes on serving every other batch.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import KafkaError, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from .running import BrokerProcess

HINT = "pip install 'headwater[compression]'"


@pytest.fixture
def broker(tmp_path: Path, env_without_cramjam: dict[str, str]) -> Iterator[BrokerProcess]:
    process = BrokerProcess(tmp_path / "data", env=env_without_cramjam).start()
    yield process
    assert process.stop() == 0, process.log()


def produce(broker: BrokerProcess, topic: str, codec: str, values: list[bytes]) -> list[Any]:
    """Produce ``values`` with ``codec``; return what each delivery report said (error or None)."""
    producer = Producer(
        {
            "bootstrap.servers": broker.bootstrap,
            "compression.type": codec,
            "linger.ms": 5,
            "message.timeout.ms": 30_000,
        }
    )
    reports: list[Any] = []
    for value in values:
        producer.produce(topic, value, on_delivery=lambda err, _msg: reports.append(err))
    assert producer.flush(60) == 0
    return reports


def test_a_codec_without_cramjam_is_refused_and_the_broker_keeps_serving(
    broker: BrokerProcess,
) -> None:
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    admin.create_topics([NewTopic("t", 1, 1)])["t"].result(timeout=30)
    values = [b'{"n": %d, "pad": "%s"}' % (i, b"x" * 40) for i in range(200)]
    for codec in ("snappy", "lz4", "zstd"):
        reports = produce(broker, "t", codec, values)
        assert len(reports) == len(values)
        assert all(
            err is not None and err.code() == KafkaError.UNSUPPORTED_COMPRESSION_TYPE
            for err in reports
        ), {str(err) for err in reports}
    assert broker.alive()
    for codec in ("none", "gzip"):
        assert produce(broker, "t", codec, values) == [None] * len(values)
    low, high = _watermarks(broker, "t")
    assert (low, high) == (0, 2 * len(values))  # only the batches it could read are stored
    # The operator is told what to install, once, not for every refused batch.
    warnings = [line for line in broker.log().splitlines() if " WARNING " in line]
    assert len(warnings) == 1 and HINT in warnings[0], warnings


def _watermarks(broker: BrokerProcess, topic: str) -> tuple[int, int]:
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "watermarks"})
    try:
        low, high = consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=30)
    finally:
        consumer.close()
    return int(low), int(high)
