"""The settings every cluster client of headwater shares (``processing/kafka_client.py``)."""

from __future__ import annotations

from headwater.processing.kafka_client import CONSUMER_SETTINGS, ClusterClient


def test_consumers_do_not_idle_a_partition_for_a_second_when_their_queue_fills() -> None:
    # librdkafka's default (1 s) halved `headwater consume`'s rate over a broker: 500,000
    # records took 4.7 s, against 2.0 s with the short backoff.
    cluster = ClusterClient("127.0.0.1:9092", settings={"client.id": "mine"})
    config = cluster.consumer_config(**{"group.id": "g"})
    assert config["fetch.queue.backoff.ms"] == CONSUMER_SETTINGS["fetch.queue.backoff.ms"] <= 100
    assert (config["group.id"], config["client.id"]) == ("g", "mine")
    # A consumer property: the producers and admin clients made from config() would warn.
    assert "fetch.queue.backoff.ms" not in cluster.config()
    assert (
        cluster.consumer_config(**{"fetch.queue.backoff.ms": 500})["fetch.queue.backoff.ms"] == 500
    )
