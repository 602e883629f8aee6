"""Internal topics, colliding names and config changes, through real Kafka clients.

A Kafka client that creates, deletes, produces to or reconfigures ``__consumer_offsets``
(or any ``__`` name) gets INVALID_TOPIC_EXCEPTION, the code Kafka answers a client that
writes to an internal topic; a name that collides with an existing one once ``.`` and
``_`` are read alike gets the same, with Kafka's words. Config changes go through
AlterConfigs (kafka-python, confluent's ``alter_configs``) and IncrementalAlterConfigs.
"""

from __future__ import annotations

import uuid
import warnings
from collections.abc import Iterator
from typing import Any

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import (
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    NewTopic,
)

from .running import BrokerProcess, assert_one_line_error, run_cli

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import kafka.admin
    import kafka.errors

OFFSETS = "__consumer_offsets"
TIMEOUT_S = 30
SET = AlterConfigOpType.SET
DELETE = AlterConfigOpType.DELETE


# confluent-kafka marks AlterConfigs deprecated; the broker serves it for the clients that use it.
pytestmark = pytest.mark.filterwarnings("ignore:alter_configs has been deprecated")


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    process = BrokerProcess(tmp_path_factory.mktemp("rules") / "data").start()
    yield process
    assert process.stop() == 0, process.log()


@pytest.fixture
def admin(broker: BrokerProcess) -> AdminClient:
    return AdminClient({"bootstrap.servers": broker.bootstrap})


def code_of(future: Any) -> int:
    with pytest.raises(KafkaException) as info:
        future.result(TIMEOUT_S)
    return int(info.value.args[0].code())


def topic_resource(name: str, **configs: str) -> ConfigResource:
    return ConfigResource(ConfigResource.Type.TOPIC, name, set_config=configs)


def described(admin: AdminClient, name: str) -> dict[str, str]:
    resource = ConfigResource(ConfigResource.Type.TOPIC, name)
    return {k: v.value for k, v in admin.describe_configs([resource])[resource].result(10).items()}


def test_the_offsets_topic_is_reported_internal_and_refused_to_clients(
    broker: BrokerProcess, admin: AdminClient
) -> None:
    metadata = admin.list_topics(timeout=TIMEOUT_S)
    assert OFFSETS in metadata.topics  # the group coordinator made it at start
    before = described(admin, OFFSETS)
    assert before["cleanup.policy"] == "compact"

    [(_, created)] = admin.create_topics([NewTopic(OFFSETS, 1, 1)]).items()
    assert code_of(created) == KafkaError.TOPIC_EXCEPTION
    [(_, deleted)] = admin.delete_topics([OFFSETS], operation_timeout=10).items()
    assert code_of(deleted) == KafkaError.TOPIC_EXCEPTION
    resource = topic_resource(OFFSETS, **{"cleanup.policy": "delete"})
    [(_, altered)] = admin.alter_configs([resource]).items()
    assert code_of(altered) == KafkaError.TOPIC_EXCEPTION
    incremental = ConfigResource(
        ConfigResource.Type.TOPIC,
        OFFSETS,
        incremental_configs=[ConfigEntry("retention.ms", "1", incremental_operation=SET)],
    )
    [(_, altered)] = admin.incremental_alter_configs([incremental]).items()
    assert code_of(altered) == KafkaError.TOPIC_EXCEPTION

    errors: list[KafkaError] = []
    producer = Producer({"bootstrap.servers": broker.bootstrap, "message.send.max.retries": 0})
    producer.produce(OFFSETS, b"not an offset", on_delivery=lambda err, _: errors.append(err))
    assert producer.flush(TIMEOUT_S) == 0
    assert [e.code() for e in errors] == [KafkaError.TOPIC_EXCEPTION]

    assert OFFSETS in admin.list_topics(timeout=TIMEOUT_S).topics  # still there, unchanged
    assert described(admin, OFFSETS) == before
    consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "rules"})
    try:
        _low, high = consumer.get_watermark_offsets(TopicPartition(OFFSETS, 0), TIMEOUT_S)
    finally:
        consumer.close()
    assert high == 0  # nothing was appended


def test_any_double_underscore_name_is_reserved(admin: AdminClient) -> None:
    name = f"__mine-{uuid.uuid4().hex[:8]}"
    [(_, created)] = admin.create_topics([NewTopic(name, 1, 1)]).items()
    assert code_of(created) == KafkaError.TOPIC_EXCEPTION
    assert name not in admin.list_topics(timeout=TIMEOUT_S).topics


def test_colliding_names_are_refused_as_kafka_does(admin: AdminClient) -> None:
    stem = uuid.uuid4().hex[:8]
    dotted, underscored = f"c.{stem}", f"c_{stem}"
    admin.create_topics([NewTopic(dotted, 1, 1)])[dotted].result(TIMEOUT_S)
    with pytest.raises(KafkaException) as info:
        admin.create_topics([NewTopic(underscored, 1, 1)])[underscored].result(TIMEOUT_S)
    error = info.value.args[0]
    assert error.code() == KafkaError.TOPIC_EXCEPTION
    assert f"collides with existing topic '{dotted}'" in error.str()
    assert underscored not in admin.list_topics(timeout=TIMEOUT_S).topics


def test_kafka_python_gets_invalid_topic_for_internal_and_colliding_names(
    broker: BrokerProcess,
) -> None:
    client = kafka.admin.KafkaAdminClient(bootstrap_servers=broker.bootstrap)
    try:
        stem = uuid.uuid4().hex[:8]
        client.create_topics([kafka.admin.NewTopic(f"k.{stem}", 1, 1)])
        for name in (f"k_{stem}", "__reserved"):
            with pytest.raises(kafka.errors.InvalidTopicError):
                client.create_topics([kafka.admin.NewTopic(name, 1, 1)])
        with pytest.raises(kafka.errors.InvalidTopicError):
            client.delete_topics([OFFSETS])
        resource = kafka.admin.ConfigResource("TOPIC", OFFSETS, {"retention.ms": "1"})
        for incremental in (True, False):  # IncrementalAlterConfigs, then AlterConfigs
            response = client.alter_configs([resource], incremental=incremental)
            outcome = str(response["topic"][OFFSETS])
            assert outcome.startswith("[Error 17] InvalidTopicError"), outcome
    finally:
        client.close()


def test_incremental_alter_configs_sets_and_resets(admin: AdminClient) -> None:
    name = f"alter-{uuid.uuid4().hex[:8]}"
    create = NewTopic(name, 2, 1, config={"retention.ms": "60000", "segment.ms": "70000"})
    admin.create_topics([create])[name].result(TIMEOUT_S)
    default_retention = described(admin, name)["delete.retention.ms"]

    resource = ConfigResource(
        ConfigResource.Type.TOPIC,
        name,
        incremental_configs=[
            ConfigEntry("max.message.bytes", "4096", incremental_operation=SET),
            ConfigEntry("retention.ms", None, incremental_operation=DELETE),
        ],
    )
    admin.incremental_alter_configs([resource])[resource].result(TIMEOUT_S)
    after = described(admin, name)
    assert after["max.message.bytes"] == "4096"
    assert after["retention.ms"] == "604800000"  # back to the broker's default
    assert after["segment.ms"] == "70000"  # untouched
    assert after["delete.retention.ms"] == default_retention
    assert len(admin.list_topics(name, timeout=TIMEOUT_S).topics[name].partitions) == 2

    bad = ConfigResource(
        ConfigResource.Type.TOPIC,
        name,
        incremental_configs=[
            ConfigEntry("max.message.bytes", "1", incremental_operation=SET),
            ConfigEntry("retention.ms", "5", incremental_operation=SET),
        ],
    )
    assert code_of(admin.incremental_alter_configs([bad])[bad]) == KafkaError.INVALID_CONFIG
    assert described(admin, name) == after  # one bad entry changed nothing


def test_alter_configs_replaces_every_setting(admin: AdminClient, broker: BrokerProcess) -> None:
    name = f"replace-{uuid.uuid4().hex[:8]}"
    create = NewTopic(name, 1, 1, config={"retention.ms": "60000", "segment.ms": "70000"})
    admin.create_topics([create])[name].result(TIMEOUT_S)
    resource = topic_resource(name, **{"cleanup.policy": "compact"})
    admin.alter_configs([resource])[resource].result(TIMEOUT_S)
    after = described(admin, name)
    assert after["cleanup.policy"] == "compact"
    assert after["retention.ms"] == "604800000"  # not named: the default again
    assert after["segment.ms"] == "604800000"
    partitions = topic_resource(name, partitions="3")
    assert code_of(admin.alter_configs([partitions])[partitions]) == KafkaError.INVALID_CONFIG
    missing = topic_resource(f"missing-{uuid.uuid4().hex[:8]}", **{"retention.ms": "1"})
    code = code_of(admin.alter_configs([missing])[missing])
    assert code == KafkaError.UNKNOWN_TOPIC_OR_PART


def test_the_cli_over_the_protocol_gets_the_same_refusals(
    broker: BrokerProcess, admin: AdminClient
) -> None:
    bootstrap = ["--bootstrap", broker.bootstrap]
    for args in (
        ["topics", "create", OFFSETS],
        ["topics", "delete", OFFSETS],
        ["topics", "alter", OFFSETS, "-c", "retention.ms=1"],
    ):
        result = run_cli(*args, *bootstrap)
        assert_one_line_error(result, "INVALID_TOPIC_EXCEPTION", "reserved")
    stem = uuid.uuid4().hex[:8]
    assert run_cli("topics", "create", f"cli.{stem}", *bootstrap).returncode == 0
    assert_one_line_error(
        run_cli("topics", "create", f"cli_{stem}", *bootstrap),
        f"collides with existing topic 'cli.{stem}'",
    )
    altered = run_cli(
        "topics", "alter", f"cli.{stem}", "-c", "retention.ms=5000", "-c", "segment.ms=", *bootstrap
    )
    assert altered.returncode == 0, altered.stderr
    after = described(admin, f"cli.{stem}")
    assert (after["retention.ms"], after["segment.ms"]) == ("5000", "604800000")
