"""Kafka's consumer protocol: the subscription and assignment bytes members exchange.

Theory of operation
-------------------
The group coordinator treats a member's protocol metadata and assignment as opaque bytes;
only the members (the leader, when it assigns) read them. For ``protocol_type ==
"consumer"`` those bytes are Kafka's ``ConsumerProtocolSubscription`` (sent in JoinGroup,
one per assignor the member supports) and ``ConsumerProtocolAssignment`` (sent by the
leader in SyncGroup, handed to each member). Both use the classic, non-flexible encoding
with an int16 version prefix; all integers are big-endian::

    Subscription  version:int16
                  topics:[string]                 array = int32 count + elements
                  user_data:nullable bytes        int32 length, -1 = null
                  owned_partitions:[topic:string, partitions:[int32]]   v1+
                  generation_id:int32                                   v2+ (default -1)
                  rack_id:nullable string         int16 length, -1 = null  v3+
    Assignment    version:int16
                  assigned_partitions:[topic:string, partitions:[int32]]
                  user_data:nullable bytes        (the same layout in v0-v3)

Newer fields are "ignorable": encoding at an older version drops them. Decoding a version
newer than 3 reads it as version 3 and ignores bytes that follow, as Kafka's Java client
does (its schema promises later versions only append fields). Decoding trusts no length:
every count and size is checked against the bytes that remain before anything is read or
allocated, and bad input raises :class:`InvalidProtocolMetadataError`.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from dataclasses import dataclass
from typing import NamedTuple

from ._errors import InvalidProtocolMetadataError

#: The highest ConsumerProtocol version this module writes and reads field by field.
HIGHEST_VERSION = 3

_INT16 = struct.Struct(">h")
_INT32 = struct.Struct(">i")
_INT16_MAX = 2**15 - 1
_INT32_MIN = -(2**31)
_INT32_MAX = 2**31 - 1


class TopicPartition(NamedTuple):
    """One partition of one topic; orders by topic, then partition."""

    topic: str
    partition: int


@dataclass(frozen=True, slots=True)
class Subscription:
    """What a member asks for: the topics it reads and, for cooperative assignors, what it owns.

    ``generation_id`` is the generation in which the member last received
    ``owned_partitions`` (-1 when unknown); ``rack_id`` names the member's rack.
    """

    topics: tuple[str, ...]
    user_data: bytes | None = None
    owned_partitions: tuple[TopicPartition, ...] = ()
    generation_id: int = -1
    rack_id: str | None = None


@dataclass(frozen=True, slots=True)
class Assignment:
    """What the leader gives one member: its partitions, and optional assignor data."""

    partitions: tuple[TopicPartition, ...]
    user_data: bytes | None = None


def encode_subscription(subscription: Subscription, version: int = HIGHEST_VERSION) -> bytes:
    """Encode ``subscription`` as ConsumerProtocolSubscription ``version`` (0-3).

    Fields newer than ``version`` are dropped, as Kafka drops ignorable fields.

    :raises InvalidProtocolMetadataError: if ``version`` is not 0-3 or a value does not fit
        its wire type (a name over 32767 bytes, a partition outside int32).
    """
    _check_version(version)
    out = bytearray(_INT16.pack(version))
    _write_count(out, len(subscription.topics))
    for topic in subscription.topics:
        _write_string(out, topic)
    _write_bytes(out, subscription.user_data)
    if version >= 1:
        _write_topic_partitions(out, subscription.owned_partitions)
    if version >= 2:
        _write_int32(out, subscription.generation_id)
    if version >= 3:
        _write_string(out, subscription.rack_id)
    return bytes(out)


def decode_subscription(data: bytes | bytearray | memoryview) -> Subscription:
    """Decode ConsumerProtocolSubscription bytes of any version.

    :raises InvalidProtocolMetadataError: if the bytes are truncated, a count or length is
        negative or larger than what remains, a string is not UTF-8, or the version is
        negative.
    """
    reader = _Reader(data)
    version = reader.version()
    topics = tuple(reader.string("topic") for _ in range(reader.count("topics", 2)))
    user_data = reader.nullable_bytes("user_data")
    owned: tuple[TopicPartition, ...] = ()
    generation_id = -1
    rack_id = None
    if version >= 1:
        owned = reader.topic_partitions("owned_partitions")
    if version >= 2:
        generation_id = reader.int32("generation_id")
    if version >= 3:
        rack_id = reader.nullable_string("rack_id")
    return Subscription(topics, user_data, owned, generation_id, rack_id)


def encode_assignment(assignment: Assignment, version: int = HIGHEST_VERSION) -> bytes:
    """Encode ``assignment`` as ConsumerProtocolAssignment ``version`` (0-3; one layout).

    Partitions are grouped by topic in the order topics first appear.

    :raises InvalidProtocolMetadataError: if ``version`` is not 0-3 or a value does not fit
        its wire type.
    """
    _check_version(version)
    out = bytearray(_INT16.pack(version))
    _write_topic_partitions(out, assignment.partitions)
    _write_bytes(out, assignment.user_data)
    return bytes(out)


def decode_assignment(data: bytes | bytearray | memoryview) -> Assignment:
    """Decode ConsumerProtocolAssignment bytes of any version.

    Empty bytes decode to an empty assignment: the coordinator hands a member that the
    leader left out ``b""``, and Kafka's clients read that as "no partitions".

    :raises InvalidProtocolMetadataError: on truncated or malformed bytes.
    """
    if len(data) == 0:
        return Assignment(())
    reader = _Reader(data)
    reader.version()
    partitions = reader.topic_partitions("assigned_partitions")
    return Assignment(partitions, reader.nullable_bytes("user_data"))


def _check_version(version: int) -> None:
    if not 0 <= version <= HIGHEST_VERSION:
        raise InvalidProtocolMetadataError(
            f"cannot encode consumer protocol version {version}; versions are 0-{HIGHEST_VERSION}"
        )


def _write_int32(out: bytearray, value: int) -> None:
    if not _INT32_MIN <= value <= _INT32_MAX:
        raise InvalidProtocolMetadataError(f"{value} does not fit an int32")
    out += _INT32.pack(value)


def _write_count(out: bytearray, count: int) -> None:
    _write_int32(out, count)


def _write_string(out: bytearray, value: str | None) -> None:
    if value is None:
        out += _INT16.pack(-1)
        return
    raw = value.encode()
    if len(raw) > _INT16_MAX:
        raise InvalidProtocolMetadataError(f"string of {len(raw)} bytes exceeds {_INT16_MAX}")
    out += _INT16.pack(len(raw))
    out += raw


def _write_bytes(out: bytearray, value: bytes | None) -> None:
    if value is None:
        out += _INT32.pack(-1)
        return
    _write_int32(out, len(value))
    out += value


def _write_topic_partitions(out: bytearray, partitions: Iterable[TopicPartition]) -> None:
    by_topic: dict[str, list[int]] = {}
    for topic, partition in partitions:
        by_topic.setdefault(topic, []).append(partition)
    _write_count(out, len(by_topic))
    for topic, indexes in by_topic.items():
        _write_string(out, topic)
        _write_count(out, len(indexes))
        for index in indexes:
            _write_int32(out, index)


class _Reader:
    """A cursor over untrusted bytes; every read checks what remains first."""

    __slots__ = ("_data", "_position")

    def __init__(self, data: bytes | bytearray | memoryview) -> None:
        self._data = bytes(data)
        self._position = 0

    def _take(self, size: int, what: str) -> bytes:
        start = self._position
        if size > len(self._data) - start:
            raise InvalidProtocolMetadataError(
                f"truncated {what}: needs {size} bytes at byte {start}, "
                f"{len(self._data) - start} remain"
            )
        self._position = start + size
        return self._data[start : start + size]

    def version(self) -> int:
        version: int = _INT16.unpack(self._take(2, "version"))[0]
        if version < 0:
            raise InvalidProtocolMetadataError(f"negative consumer protocol version {version}")
        return version

    def int32(self, what: str) -> int:
        value: int = _INT32.unpack(self._take(4, what))[0]
        return value

    def count(self, what: str, min_element_size: int) -> int:
        start = self._position
        count = self.int32(f"{what} count")
        if count < 0:
            raise InvalidProtocolMetadataError(f"{what} at byte {start}: null or negative count")
        if count * min_element_size > len(self._data) - self._position:
            raise InvalidProtocolMetadataError(
                f"{what} at byte {start}: count {count} exceeds the bytes that remain"
            )
        return count

    def nullable_string(self, what: str) -> str | None:
        start = self._position
        length: int = _INT16.unpack(self._take(2, f"{what} length"))[0]
        if length == -1:
            return None
        if length < 0:
            raise InvalidProtocolMetadataError(f"{what} at byte {start}: negative length")
        raw = self._take(length, what)
        try:
            return raw.decode()
        except UnicodeDecodeError as exc:
            raise InvalidProtocolMetadataError(f"{what} at byte {start}: not UTF-8") from exc

    def string(self, what: str) -> str:
        start = self._position
        value = self.nullable_string(what)
        if value is None:
            raise InvalidProtocolMetadataError(f"{what} at byte {start}: null where required")
        return value

    def nullable_bytes(self, what: str) -> bytes | None:
        start = self._position
        length = self.int32(f"{what} length")
        if length == -1:
            return None
        if length < 0:
            raise InvalidProtocolMetadataError(f"{what} at byte {start}: negative length")
        return self._take(length, what)

    def topic_partitions(self, what: str) -> tuple[TopicPartition, ...]:
        result: list[TopicPartition] = []
        # The smallest entry is an empty topic name (2 bytes) and an empty array (4 bytes).
        for _ in range(self.count(what, 6)):
            topic = self.string(f"{what} topic")
            for _ in range(self.count(f"{what} partitions", 4)):
                result.append(TopicPartition(topic, self.int32(f"{what} partition")))
        return tuple(result)
