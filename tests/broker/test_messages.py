"""The declarations: versions from NOTES.md, and fields checked against Kafka's schemas.

kafka-python ships Kafka's message schemas; for every advertised version each declared
field must exist there with the same type, nullability, tag and default.
"""

from __future__ import annotations

import uuid
import warnings
from typing import Any

import pytest

from headwater.broker import API_VERSIONS, ApiKey, KafkaErrorCode
from headwater.broker._protocol._messages import APIS
from headwater.broker._protocol._schema import Api, Array, Field, Struct

from .test_kafka_python import their_class

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    from kafka.protocol.schemas.fields.codecs.types import BitField

# NOTES.md: API -> (advertise, accept, first flexible version).
NOTES_TABLE = {
    ApiKey.PRODUCE: ((0, 11), (3, 11), 9),
    ApiKey.FETCH: ((0, 12), (4, 12), 12),
    ApiKey.LIST_OFFSETS: ((0, 7), (1, 7), 6),
    ApiKey.METADATA: ((0, 12), (0, 12), 9),
    ApiKey.OFFSET_COMMIT: ((0, 8), (0, 8), 8),
    ApiKey.OFFSET_FETCH: ((0, 7), (0, 7), 6),
    ApiKey.FIND_COORDINATOR: ((0, 3), (0, 3), 3),
    ApiKey.JOIN_GROUP: ((0, 7), (0, 7), 6),
    ApiKey.HEARTBEAT: ((0, 4), (0, 4), 4),
    ApiKey.LEAVE_GROUP: ((0, 4), (0, 4), 4),
    ApiKey.SYNC_GROUP: ((0, 5), (0, 5), 4),
    ApiKey.DESCRIBE_GROUPS: ((0, 5), (0, 5), 5),
    ApiKey.LIST_GROUPS: ((0, 4), (0, 4), 3),
    ApiKey.API_VERSIONS: ((0, 3), (0, 3), 3),
    ApiKey.CREATE_TOPICS: ((0, 7), (0, 7), 5),
    ApiKey.DELETE_TOPICS: ((0, 5), (0, 5), 4),
    ApiKey.INIT_PRODUCER_ID: ((0, 4), (0, 4), 2),
    ApiKey.DESCRIBE_CONFIGS: ((0, 4), (0, 4), 4),
    ApiKey.ALTER_CONFIGS: ((0, 2), (0, 2), 2),
    ApiKey.INCREMENTAL_ALTER_CONFIGS: ((0, 1), (0, 1), 1),
    ApiKey.DELETE_GROUPS: ((0, 2), (0, 2), 2),
    ApiKey.DELETE_RECORDS: ((0, 2), (0, 2), 2),
    ApiKey.CREATE_PARTITIONS: ((0, 3), (0, 3), 2),
    ApiKey.OFFSET_DELETE: ((0, 0), (0, 0), 1 << 15),  # never flexible
    ApiKey.ADD_PARTITIONS_TO_TXN: ((0, 3), (0, 3), 3),
    ApiKey.ADD_OFFSETS_TO_TXN: ((0, 3), (0, 3), 3),
    ApiKey.END_TXN: ((0, 3), (0, 3), 3),
    ApiKey.TXN_OFFSET_COMMIT: ((0, 3), (0, 3), 3),
    ApiKey.WRITE_TXN_MARKERS: ((0, 1), (0, 1), 1),
    ApiKey.DESCRIBE_PRODUCERS: ((0, 0), (0, 0), 0),
    ApiKey.DESCRIBE_TRANSACTIONS: ((0, 0), (0, 0), 0),
    ApiKey.LIST_TRANSACTIONS: ((0, 1), (0, 1), 0),
}

# kafka-python patches a few schema entries; these are Kafka's own values.
_THEIR_PATCHES = {
    ("ListOffsetsRequest", "replica_id"): "default -1 instead of 0",
    ("MetadataResponse", "topic_authorized_operations"): "renamed, read as a bit set",
    ("MetadataResponse", "cluster_authorized_operations"): "renamed, read as a bit set",
    ("DescribeGroupsResponse", "authorized_operations"): "read as a bit set",
}
_THEIR_NAMES = {"topic_authorized_operations", "cluster_authorized_operations"}


def test_versions_are_those_of_the_notes() -> None:
    assert {key: (r.advertised, r.accepted) for key, r in API_VERSIONS.items()} == {
        key: (advertise, accept) for key, (advertise, accept, _) in NOTES_TABLE.items()
    }
    assert {key: APIS[key].flexible_since for key in NOTES_TABLE} == {
        key: flexible for key, (_, _, flexible) in NOTES_TABLE.items()
    }
    assert API_VERSIONS[ApiKey.PRODUCE].is_accepted(3)
    assert not API_VERSIONS[ApiKey.PRODUCE].is_accepted(2)


def test_error_codes_the_notes_name() -> None:
    assert int(KafkaErrorCode.UNSUPPORTED_VERSION) == 35
    assert int(KafkaErrorCode.DUPLICATE_SEQUENCE_NUMBER) == 46
    assert int(KafkaErrorCode.MEMBER_ID_REQUIRED) == 79
    assert int(KafkaErrorCode.INVALID_RECORD) == 87
    required = {0, 1, 2, 3, 6, 7, 10, 14, 15, 16, 22, 25, 27, 35, 36, 41, 42, 44, 45, 46, 47}
    assert required | {79, 82, 87} <= {int(code) for code in KafkaErrorCode}


def _type_name(kind: Any) -> str:
    if isinstance(kind, Array):
        return "[]" + _type_name(kind.item)
    if isinstance(kind, Struct):
        return "struct"
    return str(kind.name)


def _their_type_name(field: Any) -> str:
    name = str(field.type_str)
    if field.is_struct_array():
        return "[]struct"
    if field.is_struct():
        return "struct"
    return name


def _their_default(field: Any) -> Any:
    default = field.default
    if default is None and field.type_str == "uuid":
        return uuid.UUID(int=0)
    return default


def _compare(owner: str, ours: Struct, theirs: Any, version: int, flexible: bool) -> None:
    if isinstance(theirs, dict):
        theirs = theirs.values()
    their_fields = {f.name: f for f in theirs if f.for_version_q(version)}
    our_fields: dict[str, Field] = {f.name: f for f in ours.fields if f.exists(version)}
    renamed = {n for n in _THEIR_NAMES if n in our_fields}
    their_renamed = {"authorized_operations"} if renamed else set()
    assert set(our_fields) - renamed == set(their_fields) - their_renamed, owner
    for name, f in our_fields.items():
        if (owner, name) in _THEIR_PATCHES or name in renamed:
            continue
        t = their_fields[name]
        where = f"{owner}.{name} v{version}"
        assert _type_name(f.type) == _their_type_name(t), where
        assert f.nullable(version) == t.nullable_for_version_q(version), where
        their_tag = t.tag if t.tagged_field_q(version) else None
        assert (f.tag if flexible else None) == their_tag, where
        if isinstance(f.type, Struct):
            _compare(owner, f.type, t.fields, version, flexible)
        elif isinstance(f.type, Array) and isinstance(f.type.item, Struct):
            _compare(owner, f.type.item, t.fields, version, flexible)
        elif not isinstance(f.type, Array) and t.type_str != "bitfield":
            assert f.default_value() == _their_default(t), where


@pytest.mark.parametrize("api", APIS.values(), ids=lambda api: api.name)
def test_declarations_match_kafkas_schemas(api: Api) -> None:
    for response in (False, True):
        cls = their_class(api, response)
        for version in api.versions():
            assert cls.flexible_version_q(version) == api.is_flexible(version)
            body = api.response if response else api.request
            _compare(cls.__name__, body, cls._struct.fields, version, api.is_flexible(version))


def test_bit_sets_kafka_python_reads_are_plain_int32_here() -> None:
    assert BitField.to_32_bit_field({31}) == 2**31  # our NO_AUTHORIZED_OPERATIONS, unsigned
