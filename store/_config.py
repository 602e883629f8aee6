"""Topic configuration: one frozen value, validated where it is built.

Theory of operation
-------------------

A :class:`TopicConfig` is immutable and always valid: ``__post_init__`` checks every
field, so code holding one never re-checks it. Configs enter from three places, each a
boundary where bad input must become an :class:`InvalidConfigError` a user can act on:

* the CLI (``--config retention.ms=60000``): :meth:`TopicConfig.from_strings` accepts both
  our snake_case names and Kafka's dotted names, so a Kafka user's habits work;
  :meth:`TopicConfig.changed` applies the changes of ``topics alter`` and of Kafka's
  (Incremental)AlterConfigs, where a key may also go back to its default;
* the topic's file in the data directory: :meth:`TopicConfig.to_json` writes every field
  with a format ``version``; :meth:`TopicConfig.from_json` requires all of them, because a
  silently defaulted field (``partitions`` above all) would misplace data;
* the Kafka wire protocol: :func:`kafka_config_entries` gives Kafka's names and value
  spellings (``CreateTime``), which is what DescribeConfigs answers; ``from_strings``
  parses them back, so a CreateTopics request's entries can be read the same way.

The partition count is a field (the store needs it to open the topic) but not a setting:
as in Kafka, it is given when a topic is created and never by ``KEY=VALUE``, so
``from_strings`` and ``changed`` refuse it and the keys they list leave it out.

Integer limits follow Kafka's where it has them (``segment.ms`` at least 1,
``delete.retention.ms`` at least 0) and the on-disk format where it is tighter: a segment
holds at most 2 GiB - 1 bytes because index entries store 32-bit file positions.
"""

from __future__ import annotations

import dataclasses
import enum
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from ._batch import TimestampType
from ._errors import InvalidConfigError

__all__ = ["CleanupPolicy", "Durability", "TopicConfig", "kafka_config_entries", "setting_keys"]

_INT32_MAX = (1 << 31) - 1
_INT64_MAX = (1 << 63) - 1
_JSON_VERSION = 1
_INTEGER = re.compile(r"[+-]?[0-9]+")


class Durability(enum.StrEnum):
    """When an append is acknowledged, relative to fsync.

    ``always``: after an fsync of that append. ``batch``: after the group-commit fsync
    that covers it (appends arriving together share one). ``never``: at once; the OS
    writes the data back when it likes, so a power loss may lose acknowledged records.
    """

    ALWAYS = "always"
    BATCH = "batch"
    NEVER = "never"


class CleanupPolicy(enum.StrEnum):
    """How old records leave a partition: by retention, or by keeping the latest per key."""

    DELETE = "delete"
    COMPACT = "compact"


# Kafka spells the timestamp types in CamelCase on the wire and in its tools.
_TIMESTAMP_TYPE_NAMES = {
    TimestampType.CREATE_TIME: "CreateTime",
    TimestampType.LOG_APPEND_TIME: "LogAppendTime",
}


@dataclass(frozen=True, slots=True)
class _IntRule:
    low: int
    high: int
    minus_one: str | None = None  # what -1 means, when -1 is allowed

    def allowed(self) -> str:
        span = f"an integer from {self.low} to {self.high}"
        return f"-1 ({self.minus_one}) or {span}" if self.minus_one else span


_INT_RULES: dict[str, _IntRule] = {
    "partitions": _IntRule(1, 10_000),
    "retention_ms": _IntRule(1, _INT64_MAX, "keep forever"),
    "retention_bytes": _IntRule(1, _INT64_MAX, "unlimited"),
    "segment_bytes": _IntRule(1024, _INT32_MAX),
    "segment_ms": _IntRule(1, _INT64_MAX),
    "delete_retention_ms": _IntRule(0, _INT64_MAX),
    "max_message_bytes": _IntRule(64, _INT32_MAX),
    "index_interval_bytes": _IntRule(0, _INT32_MAX),
}

_ENUM_FIELDS: dict[str, type[enum.Enum]] = {
    "durability": Durability,
    "cleanup_policy": CleanupPolicy,
    "timestamp_type": TimestampType,
}

# Kafka's topic-level name for each field. `partitions` is not a topic config in Kafka
# (it is a CreateTopics argument) and durability has no Kafka equivalent, so it gets a
# name in our own namespace rather than a misleading mapping onto flush.messages.
_KAFKA_NAMES: dict[str, str] = {
    "retention_ms": "retention.ms",
    "retention_bytes": "retention.bytes",
    "segment_bytes": "segment.bytes",
    "segment_ms": "segment.ms",
    "durability": "headwater.durability",
    "cleanup_policy": "cleanup.policy",
    "delete_retention_ms": "delete.retention.ms",
    "max_message_bytes": "max.message.bytes",
    "timestamp_type": "message.timestamp.type",
    "index_interval_bytes": "index.interval.bytes",
}


@dataclass(frozen=True, kw_only=True, slots=True)
class TopicConfig:
    """The settings of one topic; every partition of the topic shares them.

    Build it with keywords; every field is checked on construction. Enum fields also
    accept their value (``durability="always"``, ``timestamp_type=1``) and store the
    enum member. Instances are immutable and safe to share between tasks and threads.

    :raises InvalidConfigError: if a field has the wrong type or is out of range; the
        message names the field, the value given and what is allowed.
    """

    partitions: int = 1
    retention_ms: int = 7 * 24 * 3600 * 1000  # -1: keep forever
    retention_bytes: int = -1  # per partition; -1: unlimited
    segment_bytes: int = 1 << 30
    segment_ms: int = 7 * 24 * 3600 * 1000
    durability: Durability = Durability.BATCH
    cleanup_policy: CleanupPolicy = CleanupPolicy.DELETE
    delete_retention_ms: int = 24 * 3600 * 1000  # how long tombstones survive compaction
    max_message_bytes: int = 1048588  # largest batch accepted
    timestamp_type: TimestampType = TimestampType.CREATE_TIME
    index_interval_bytes: int = 4096

    def __post_init__(self) -> None:
        for name, rule in _INT_RULES.items():
            _check_int(name, getattr(self, name), rule)
        for name, enum_type in _ENUM_FIELDS.items():
            member = _coerce_enum(name, getattr(self, name), enum_type)
            # Frozen: storing the coerced member needs object.__setattr__.
            object.__setattr__(self, name, member)

    @classmethod
    def from_strings(cls, pairs: Mapping[str, str], base: TopicConfig | None = None) -> TopicConfig:
        """Parse ``KEY=VALUE`` settings, as given on the command line, over a base config.

        A key is a field name (``retention_ms``) or Kafka's name for it (``retention.ms``,
        ``message.timestamp.type``); names are matched case-insensitively, and ``-`` may
        stand for ``_``. Integers are plain decimal; ``durability`` is ``always``,
        ``batch`` or ``never``; ``cleanup.policy`` is ``delete`` or ``compact``;
        ``message.timestamp.type`` is ``CreateTime`` or ``LogAppendTime``.

        :param pairs: the settings to change, as strings.
        :param base: the config to change; the defaults when ``None``.
        :returns: a new config; fields not named keep the base's values.
        :raises InvalidConfigError: if a key is unknown (the message lists the known
            keys) or is ``partitions``, a key is given twice under two spellings, or a
            value does not parse or is out of range.
        """
        changes: dict[str, Any] = {}
        for name, (key, text) in _fields_named(pairs).items():
            changes[name] = _parse_value(key, name, text)
        return dataclasses.replace(base if base is not None else cls(), **changes)

    def changed(self, changes: Mapping[str, str | None], defaults: TopicConfig) -> TopicConfig:
        """Return this config with ``changes``: a string sets a key, ``None`` resets it.

        Keys and values are read as :meth:`from_strings` reads them; a key mapped to
        ``None`` takes its value in ``defaults``. The partition count never changes.

        :raises InvalidConfigError: as :meth:`from_strings` does.
        """
        named = _fields_named(changes)
        resets = {name: getattr(defaults, name) for name, (_, v) in named.items() if v is None}
        sets = {key: v for key, v in named.values() if v is not None}
        return TopicConfig.from_strings(sets, dataclasses.replace(self, **resets))

    def to_strings(self) -> dict[str, str]:
        """Return the settings as ``{field_name: text}``, in the spelling ``from_strings`` reads.

        ``partitions`` is not a setting and is left out:
        ``TopicConfig.from_strings(config.to_strings(), TopicConfig(partitions=n))`` gives
        back ``config`` when it has ``n`` partitions.
        """
        return {name: _format_value(getattr(self, name)) for name in SETTING_NAMES}

    def to_json(self) -> bytes:
        """Serialize to a UTF-8 JSON object that :meth:`from_json` reads back exactly.

        The object carries a format ``version`` and every field; integers stay JSON
        integers and enums are written as the strings ``to_strings`` uses, so the file is
        readable and editable by hand.
        """
        document: dict[str, Any] = {"version": _JSON_VERSION}
        for field in _FIELDS:
            value = getattr(self, field.name)
            document[field.name] = value if field.name in _INT_RULES else _format_value(value)
        return orjson.dumps(document, option=orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE)

    @classmethod
    def from_json(cls, data: bytes) -> TopicConfig:
        """Read a config written by :meth:`to_json`, possibly edited by hand since.

        Every field must be present (a missing one is an error, not a default: a
        defaulted ``partitions`` would silently misplace records) and no unknown key may
        appear.

        :raises InvalidConfigError: if the bytes are not JSON, not an object, of another
            format version, miss a field, carry an unknown key, or hold a value of the
            wrong type or out of range.
        """
        try:
            document = orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            raise InvalidConfigError(f"topic config is not valid JSON: {exc}") from exc
        if not isinstance(document, dict):
            raise InvalidConfigError(
                f"topic config must be a JSON object, got {type(document).__name__}"
            )
        version = document.pop("version", None)
        if type(version) is not int or version != _JSON_VERSION:
            raise InvalidConfigError(
                f"topic config has version {version!r}; this headwater reads version "
                f"{_JSON_VERSION} (was it written by a newer release?)"
            )
        names = [field.name for field in _FIELDS]
        unknown = sorted(set(document) - set(names))
        if unknown:
            raise InvalidConfigError(
                f"topic config has unknown key(s) {', '.join(map(repr, unknown))}; "
                f"known keys: {', '.join(names)}"
            )
        missing = [name for name in names if name not in document]
        if missing:
            raise InvalidConfigError(f"topic config is missing {', '.join(missing)}")
        values: dict[str, Any] = {}
        for name in names:
            value = document[name]
            if name in _ENUM_FIELDS:
                if not isinstance(value, str):
                    raise InvalidConfigError(
                        f"{name} must be a string ({_allowed_enum(name)}), got {value!r}"
                    )
                value = _parse_value(name, name, value)
            values[name] = value  # integers are type- and range-checked by the constructor
        return cls(**values)


_FIELDS = dataclasses.fields(TopicConfig)
#: The fields that ``KEY=VALUE`` settings may name: all but the partition count.
SETTING_NAMES = tuple(field.name for field in _FIELDS if field.name != "partitions")

# Every accepted spelling of a setting, normalized, to the field it names.
_KEY_ALIASES: dict[str, str] = {name: name for name in SETTING_NAMES}
_KEY_ALIASES.update({kafka: name for name, kafka in _KAFKA_NAMES.items()})


def setting_keys() -> list[str]:
    """Return every key a ``KEY=VALUE`` setting may use (snake_case and Kafka's), sorted."""
    return sorted(set(SETTING_NAMES) | set(_KAFKA_NAMES.values()))


def kafka_config_entries(config: TopicConfig) -> dict[str, str]:
    """Return the config as Kafka topic-config entries: ``{"retention.ms": "604800000", ...}``.

    Names and value spellings are Kafka's (``message.timestamp.type`` is ``CreateTime`` or
    ``LogAppendTime``), as a DescribeConfigs response carries them; durability, which
    Kafka lacks, appears as ``headwater.durability``. ``partitions`` is not included: in
    Kafka it is a property of the topic, not a config entry.
    """
    return {kafka: _format_value(getattr(config, name)) for name, kafka in _KAFKA_NAMES.items()}


def _check_int(name: str, value: object, rule: _IntRule) -> None:
    # bool is an int subclass; `partitions=True` is a mistake, not 1.
    if not isinstance(value, int) or isinstance(value, bool):
        raise InvalidConfigError(
            f"{name} must be {rule.allowed()}, got {value!r} ({type(value).__name__})"
        )
    if rule.low <= value <= rule.high or (rule.minus_one is not None and value == -1):
        return
    raise InvalidConfigError(f"{name} must be {rule.allowed()}, got {value}")


def _coerce_enum(name: str, value: object, enum_type: type[enum.Enum]) -> enum.Enum:
    if isinstance(value, enum_type):
        return value
    # bool would pass as 0 or 1 for the IntEnum.
    if not isinstance(value, bool):
        try:
            return enum_type(value)
        except ValueError:
            pass
    raise InvalidConfigError(f"{name} must be {_allowed_enum(name)}, got {value!r}")


def _allowed_enum(name: str) -> str:
    if name == "timestamp_type":
        return " or ".join(_TIMESTAMP_TYPE_NAMES.values())
    return ", ".join(str(member.value) for member in _ENUM_FIELDS[name])


def _field_for_key(key: str) -> str:
    normalized = key.strip().lower().replace("-", "_")
    name = _KEY_ALIASES.get(normalized)
    if name is None:
        if normalized in ("partitions", "num_partitions", "num.partitions"):
            raise InvalidConfigError(
                f"{key} is not a topic setting: the partition count is given when the topic "
                "is created"
            )
        raise InvalidConfigError(
            f"unknown config key {key!r}; known keys: {', '.join(setting_keys())}"
        )
    return name


def _fields_named(pairs: Mapping[str, str | None]) -> dict[str, tuple[str, str | None]]:
    """Map each key of ``pairs`` to its field: ``{field: (key as given, value)}``.

    :raises InvalidConfigError: for an unknown key, or a field named twice.
    """
    named: dict[str, tuple[str, str | None]] = {}
    for key, text in pairs.items():
        name = _field_for_key(key)
        if name in named:
            raise InvalidConfigError(
                f"{name} is given twice (as {named[name][0]!r} and {key!r}); give it once"
            )
        named[name] = (key, text)
    return named


def _parse_value(key: str, name: str, text: str | None) -> int | enum.Enum:
    """Parse one value and check it, naming the key as the user spelled it."""
    if not isinstance(text, str):  # a Kafka request may carry a null value
        raise InvalidConfigError(f"{key} must be given as a string, got {text!r}")
    text = text.strip()
    rule = _INT_RULES.get(name)
    if rule is not None:
        if not _INTEGER.fullmatch(text):
            raise InvalidConfigError(f"{key} must be {rule.allowed()}, got {text!r}")
        value = int(text)
        _check_int(key, value, rule)
        return value
    wanted = text.lower().replace("_", "").replace("-", "")
    if name == "timestamp_type":
        for member, spelling in _TIMESTAMP_TYPE_NAMES.items():
            if wanted == spelling.lower():
                return member
    else:
        for enum_member in _ENUM_FIELDS[name]:
            if wanted == enum_member.value:
                return enum_member
    raise InvalidConfigError(f"{key} must be {_allowed_enum(name)}, got {text!r}")


def _format_value(value: object) -> str:
    if isinstance(value, TimestampType):
        return _TIMESTAMP_TYPE_NAMES[value]
    if isinstance(value, enum.Enum):
        return str(value.value)
    return str(value)
