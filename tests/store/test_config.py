"""Tests for store/_config.py: validation, CLI strings, Kafka names, the JSON file."""

from __future__ import annotations

import contextlib
import dataclasses
import json
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from headwater.store._config import (
    CleanupPolicy,
    Durability,
    TopicConfig,
    kafka_config_entries,
    setting_keys,
)
from headwater.store._errors import InvalidConfigError
from headwater.store._records import TimestampType

INT32_MAX = (1 << 31) - 1
INT64_MAX = (1 << 63) - 1
DAY_MS = 24 * 3600 * 1000

valid_configs = st.builds(
    TopicConfig,
    partitions=st.integers(1, 10_000),
    retention_ms=st.integers(1, INT64_MAX) | st.just(-1),
    retention_bytes=st.integers(1, INT64_MAX) | st.just(-1),
    segment_bytes=st.integers(1024, INT32_MAX),
    segment_ms=st.integers(1, INT64_MAX),
    durability=st.sampled_from(Durability),
    cleanup_policy=st.sampled_from(CleanupPolicy),
    delete_retention_ms=st.integers(0, INT64_MAX),
    max_message_bytes=st.integers(64, INT32_MAX),
    timestamp_type=st.sampled_from(TimestampType),
    index_interval_bytes=st.integers(0, INT32_MAX),
)


def build(**fields: Any) -> TopicConfig:
    """Construct from fields chosen at run time, some deliberately of the wrong type."""
    return TopicConfig(**fields)


# Construction and validation


def test_defaults_are_the_contracts() -> None:
    config = TopicConfig()
    assert config.partitions == 1
    assert config.retention_ms == 7 * DAY_MS
    assert config.retention_bytes == -1
    assert config.segment_bytes == 1 << 30
    assert config.segment_ms == 7 * DAY_MS
    assert config.durability is Durability.BATCH
    assert config.cleanup_policy is CleanupPolicy.DELETE
    assert config.delete_retention_ms == DAY_MS
    assert config.max_message_bytes == 1048588
    assert config.timestamp_type is TimestampType.CREATE_TIME
    assert config.index_interval_bytes == 4096


def test_config_is_frozen_and_keyword_only() -> None:
    config = TopicConfig()
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.partitions = 2  # type: ignore[misc]
    with pytest.raises(TypeError):
        TopicConfig(2)  # type: ignore[call-arg]


# (field, valid boundary values, invalid values)
INT_RULES = [
    ("partitions", [1, 10_000], [0, -1, 10_001]),
    ("retention_ms", [-1, 1, INT64_MAX], [0, -2, INT64_MAX + 1]),
    ("retention_bytes", [-1, 1, INT64_MAX], [0, -2, INT64_MAX + 1]),
    ("segment_bytes", [1024, INT32_MAX], [1023, 0, -1, INT32_MAX + 1]),
    ("segment_ms", [1, INT64_MAX], [0, -1, INT64_MAX + 1]),
    ("delete_retention_ms", [0, INT64_MAX], [-1, INT64_MAX + 1]),
    ("max_message_bytes", [64, INT32_MAX], [63, 0, -1, INT32_MAX + 1]),
    ("index_interval_bytes", [0, INT32_MAX], [-1, INT32_MAX + 1]),
]


@pytest.mark.parametrize(("name", "good", "bad"), INT_RULES)
def test_integer_limits(name: str, good: list[int], bad: list[int]) -> None:
    for value in good:
        assert getattr(build(**{name: value}), name) == value
    for value in bad:
        with pytest.raises(InvalidConfigError) as info:
            build(**{name: value})
        message = str(info.value)
        assert name in message
        assert str(value) in message
        assert "must be" in message


@pytest.mark.parametrize(("name", "good", "bad"), INT_RULES)
@pytest.mark.parametrize("wrong", [True, False, 1.0, "5", None])
def test_integer_fields_reject_other_types(
    name: str, good: list[int], bad: list[int], wrong: object
) -> None:
    with pytest.raises(InvalidConfigError, match=name):
        build(**{name: wrong})


def test_error_messages_say_what_is_allowed() -> None:
    with pytest.raises(InvalidConfigError) as info:
        TopicConfig(segment_bytes=100)
    assert str(info.value) == "segment_bytes must be an integer from 1024 to 2147483647, got 100"
    with pytest.raises(InvalidConfigError) as info:
        TopicConfig(retention_ms=0)
    assert str(info.value).startswith("retention_ms must be -1 (keep forever) or an integer from 1")
    with pytest.raises(InvalidConfigError) as info:
        TopicConfig(partitions=True)
    assert "got True (bool)" in str(info.value)


@pytest.mark.parametrize(
    ("name", "given", "expected"),
    [
        ("durability", "always", Durability.ALWAYS),
        ("durability", Durability.NEVER, Durability.NEVER),
        ("cleanup_policy", "compact", CleanupPolicy.COMPACT),
        ("timestamp_type", 1, TimestampType.LOG_APPEND_TIME),
        ("timestamp_type", TimestampType.CREATE_TIME, TimestampType.CREATE_TIME),
    ],
)
def test_enum_fields_store_members(name: str, given: object, expected: object) -> None:
    value = getattr(build(**{name: given}), name)
    assert value is expected


@pytest.mark.parametrize(
    ("name", "bad", "allowed"),
    [
        ("durability", "sometimes", "always, batch, never"),
        ("durability", 1, "always, batch, never"),
        ("cleanup_policy", "compact,delete", "delete, compact"),
        ("cleanup_policy", None, "delete, compact"),
        ("timestamp_type", 2, "CreateTime or LogAppendTime"),
        ("timestamp_type", True, "CreateTime or LogAppendTime"),
        ("timestamp_type", "CreateTime", "CreateTime or LogAppendTime"),
    ],
)
def test_enum_fields_reject_other_values(name: str, bad: object, allowed: str) -> None:
    with pytest.raises(InvalidConfigError) as info:
        build(**{name: bad})
    message = str(info.value)
    assert name in message
    assert repr(bad) in message
    assert allowed in message


def test_replace_revalidates() -> None:
    with pytest.raises(InvalidConfigError, match="partitions"):
        dataclasses.replace(TopicConfig(), partitions=0)


# from_strings / to_strings / kafka_config_entries

# (snake_case key, Kafka key or None, text, expected value)
STRING_KEYS = [
    ("retention_ms", "retention.ms", "-1", -1),
    ("retention_bytes", "retention.bytes", "1073741824", 1 << 30),
    ("segment_bytes", "segment.bytes", "1048576", 1 << 20),
    ("segment_ms", "segment.ms", "3600000", 3600000),
    ("durability", None, "always", Durability.ALWAYS),
    ("cleanup_policy", "cleanup.policy", "compact", CleanupPolicy.COMPACT),
    ("delete_retention_ms", "delete.retention.ms", "0", 0),
    ("max_message_bytes", "max.message.bytes", "65536", 65536),
    ("timestamp_type", "message.timestamp.type", "LogAppendTime", TimestampType.LOG_APPEND_TIME),
    ("index_interval_bytes", "index.interval.bytes", "1024", 1024),
]


@pytest.mark.parametrize(("name", "kafka_key", "text", "expected"), STRING_KEYS)
def test_from_strings_accepts_both_spellings(
    name: str, kafka_key: str | None, text: str, expected: object
) -> None:
    for key in [name, kafka_key, name.upper(), name.replace("_", "-")]:
        if key is None:
            continue
        config = TopicConfig.from_strings({key: text})
        assert getattr(config, name) == expected
        assert config == build(**{name: expected})


def test_from_strings_accepts_headwater_durability_kafka_name() -> None:
    config = TopicConfig.from_strings({"headwater.durability": "never"})
    assert config.durability is Durability.NEVER


def test_from_strings_changes_only_the_named_keys_of_the_base() -> None:
    base = TopicConfig(partitions=6, durability=Durability.ALWAYS)
    config = TopicConfig.from_strings({"retention.ms": "60000"}, base=base)
    assert config == dataclasses.replace(base, retention_ms=60000)
    assert TopicConfig.from_strings({}, base=base) == base
    assert TopicConfig.from_strings({}) == TopicConfig()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("CreateTime", TimestampType.CREATE_TIME),
        ("createtime", TimestampType.CREATE_TIME),
        ("create_time", TimestampType.CREATE_TIME),
        ("LogAppendTime", TimestampType.LOG_APPEND_TIME),
        ("log-append-time", TimestampType.LOG_APPEND_TIME),
        (" LOGAPPENDTIME ", TimestampType.LOG_APPEND_TIME),
    ],
)
def test_from_strings_timestamp_type_spellings(text: str, expected: TimestampType) -> None:
    config = TopicConfig.from_strings({"message.timestamp.type": text})
    assert config.timestamp_type is expected


def test_from_strings_enum_values_are_case_insensitive() -> None:
    config = TopicConfig.from_strings({"durability": "Always", "cleanup.policy": "COMPACT"})
    assert config.durability is Durability.ALWAYS
    assert config.cleanup_policy is CleanupPolicy.COMPACT


def test_from_strings_unknown_key_lists_the_known_keys() -> None:
    with pytest.raises(InvalidConfigError) as info:
        TopicConfig.from_strings({"retention.hours": "5"})
    message = str(info.value)
    assert "'retention.hours'" in message
    for known in ["retention.ms", "retention_ms", "message.timestamp.type"]:
        assert known in message
    assert "partitions" not in message  # not a setting: given when a topic is created
    assert message.endswith(", ".join(setting_keys()))


@pytest.mark.parametrize("key", ["partitions", "Partitions", "num.partitions"])
def test_the_partition_count_is_not_a_setting(key: str) -> None:
    with pytest.raises(InvalidConfigError, match="not a topic setting"):
        TopicConfig.from_strings({key: "3"})
    with pytest.raises(InvalidConfigError, match="not a topic setting"):
        TopicConfig(partitions=2).changed({key: "3"}, TopicConfig())
    assert "partitions" not in setting_keys()
    assert "partitions" not in TopicConfig().to_strings()


@pytest.mark.parametrize("text", ["7d", "1.5", "", " ", "1e6", "0x10", "1_000", "٣", "--1"])
def test_from_strings_rejects_non_integers(text: str) -> None:
    with pytest.raises(InvalidConfigError) as info:
        TopicConfig.from_strings({"retention.ms": text})
    message = str(info.value)
    assert message.startswith("retention.ms must be -1 (keep forever) or an integer")
    assert repr(text.strip()) in message


def test_from_strings_names_the_key_as_the_user_spelled_it() -> None:
    with pytest.raises(InvalidConfigError) as info:
        TopicConfig.from_strings({"segment.bytes": "100"})
    assert str(info.value) == "segment.bytes must be an integer from 1024 to 2147483647, got 100"
    with pytest.raises(InvalidConfigError) as info:
        TopicConfig.from_strings({"cleanup.policy": "compact,delete"})
    assert str(info.value) == "cleanup.policy must be delete, compact, got 'compact,delete'"


def test_from_strings_accepts_a_plus_sign_and_surrounding_spaces() -> None:
    config = TopicConfig.from_strings({"segment.ms": " +3 "})
    assert config.segment_ms == 3


def test_changed_sets_and_resets_keys_and_keeps_the_rest() -> None:
    defaults = TopicConfig(retention_ms=1000)
    current = TopicConfig(partitions=4, retention_ms=5, durability="always", segment_ms=9)
    changed = current.changed({"retention.ms": None, "headwater.durability": "never"}, defaults)
    assert changed == TopicConfig(partitions=4, retention_ms=1000, durability="never", segment_ms=9)
    with pytest.raises(InvalidConfigError, match="given twice"):
        current.changed({"retention.ms": None, "retention_ms": "3"}, defaults)
    with pytest.raises(InvalidConfigError, match="unknown config key"):
        current.changed({"retention.hours": None}, defaults)


def test_from_strings_rejects_a_key_given_twice() -> None:
    with pytest.raises(InvalidConfigError, match="given twice"):
        TopicConfig.from_strings({"retention.ms": "1", "retention_ms": "2"})


def test_from_strings_rejects_a_non_string_value() -> None:
    with pytest.raises(InvalidConfigError, match=r"retention\.ms must be given as a string"):
        TopicConfig.from_strings({"retention.ms": None})  # type: ignore[dict-item]


def test_to_strings_of_defaults() -> None:
    assert TopicConfig().to_strings() == {
        "retention_ms": "604800000",
        "retention_bytes": "-1",
        "segment_bytes": "1073741824",
        "segment_ms": "604800000",
        "durability": "batch",
        "cleanup_policy": "delete",
        "delete_retention_ms": "86400000",
        "max_message_bytes": "1048588",
        "timestamp_type": "CreateTime",
        "index_interval_bytes": "4096",
    }


def test_kafka_config_entries_of_defaults() -> None:
    assert kafka_config_entries(TopicConfig()) == {
        "retention.ms": "604800000",
        "retention.bytes": "-1",
        "segment.bytes": "1073741824",
        "segment.ms": "604800000",
        "headwater.durability": "batch",
        "cleanup.policy": "delete",
        "delete.retention.ms": "86400000",
        "max.message.bytes": "1048588",
        "message.timestamp.type": "CreateTime",
        "index.interval.bytes": "4096",
    }


@given(valid_configs)
def test_strings_round_trip(config: TopicConfig) -> None:
    partitions_only = TopicConfig(partitions=config.partitions)
    assert TopicConfig.from_strings(config.to_strings(), base=partitions_only) == config
    assert TopicConfig.from_strings(kafka_config_entries(config), base=partitions_only) == config


# JSON


@given(valid_configs)
def test_json_round_trip(config: TopicConfig) -> None:
    data = config.to_json()
    assert isinstance(data, bytes)
    restored = TopicConfig.from_json(data)
    assert restored == config
    assert restored.to_json() == data
    for name in ["durability", "cleanup_policy", "timestamp_type"]:
        assert type(getattr(restored, name)) is type(getattr(config, name))


def test_json_is_readable() -> None:
    document = orjson.loads(TopicConfig(timestamp_type=TimestampType.LOG_APPEND_TIME).to_json())
    assert document["version"] == 1
    assert document["partitions"] == 1
    assert document["durability"] == "batch"
    assert document["timestamp_type"] == "LogAppendTime"


def _document(**changes: Any) -> dict[str, Any]:
    document: dict[str, Any] = orjson.loads(TopicConfig().to_json())
    document.update(changes)
    return document


def _without(key: str) -> dict[str, Any]:
    document = _document()
    del document[key]
    return document


DAMAGED = [
    pytest.param(b"", "not valid JSON", id="empty"),
    pytest.param(b"{", "not valid JSON", id="truncated"),
    pytest.param(b"\xff\xfe", "not valid JSON", id="not-utf8"),
    pytest.param(b"[]", "must be a JSON object, got list", id="list"),
    pytest.param(b"null", "must be a JSON object, got NoneType", id="null"),
    pytest.param(_without("version"), "version None", id="no-version"),
    pytest.param(_document(version=2), "version 2", id="newer-version"),
    pytest.param(_document(version=True), "version True", id="bool-version"),
    pytest.param(_document(version="1"), "version '1'", id="string-version"),
    pytest.param(_without("partitions"), "missing partitions", id="no-partitions"),
    pytest.param(_document(retention="1"), "unknown key(s) 'retention'", id="unknown-key"),
    pytest.param(_document(partitions="3"), "partitions must be", id="string-int"),
    pytest.param(_document(partitions=3.0), "partitions must be", id="float-int"),
    pytest.param(_document(partitions=True), "partitions must be", id="bool-int"),
    pytest.param(_document(partitions=None), "partitions must be", id="null-int"),
    pytest.param(_document(partitions=0), "partitions must be", id="out-of-range"),
    pytest.param(_document(durability=1), "durability must be a string", id="int-enum"),
    pytest.param(_document(durability="sometimes"), "durability must be", id="bad-enum"),
    pytest.param(_document(timestamp_type=0), "timestamp_type must be a string", id="int-ts"),
    pytest.param(b'{"version": 1, "segment_ms": 1e400}', "not valid JSON", id="inf"),
]


@pytest.mark.parametrize(("data", "reason"), DAMAGED)
def test_from_json_rejects_damaged_files(data: bytes | dict[str, Any], reason: str) -> None:
    raw = data if isinstance(data, bytes) else orjson.dumps(data)
    with pytest.raises(InvalidConfigError) as info:
        TopicConfig.from_json(raw)
    assert reason in str(info.value)


def test_from_json_rejects_a_huge_integer() -> None:
    # orjson reads an integer past 64 bits as a float; it must still be refused.
    raw = (
        TopicConfig().to_json().replace(b'"segment_ms": 604800000', b'"segment_ms": 1' + b"0" * 30)
    )
    assert raw != TopicConfig().to_json()
    with pytest.raises(InvalidConfigError, match="segment_ms must be"):
        TopicConfig.from_json(raw)


def test_from_json_accepts_hand_edited_enum_spellings() -> None:
    raw = orjson.dumps(_document(durability="Always", timestamp_type="log_append_time"))
    config = TopicConfig.from_json(raw)
    assert config.durability is Durability.ALWAYS
    assert config.timestamp_type is TimestampType.LOG_APPEND_TIME


def test_from_json_rejects_every_truncation() -> None:
    data = TopicConfig(partitions=3).to_json()
    for end in range(len(data.rstrip())):
        with pytest.raises(InvalidConfigError):
            TopicConfig.from_json(data[:end])


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=5,
)


@given(st.sampled_from([f.name for f in dataclasses.fields(TopicConfig)]), json_values)
def test_from_json_of_any_edited_value_is_a_config_or_invalid_config_error(
    name: str, value: object
) -> None:
    # stdlib json: it writes integers past 64 bits and NaN, which orjson cannot.
    raw = json.dumps(_document(**{name: value})).encode()
    try:
        config = TopicConfig.from_json(raw)
    except InvalidConfigError:
        return
    assert config == TopicConfig.from_json(config.to_json())


@given(st.binary(max_size=64))
def test_from_json_of_arbitrary_bytes_raises_only_invalid_config_error(data: bytes) -> None:
    with contextlib.suppress(InvalidConfigError):
        TopicConfig.from_json(data)
