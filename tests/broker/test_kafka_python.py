"""Known-answer tests against kafka-python's independent protocol classes, both directions.

kafka-python (3.x) builds its classes from Kafka's message schemas with its own code
generator. For every API, advertised version and direction: bytes we encode decode with
kafka-python to the same values, and kafka-python re-encodes them to the same bytes, which
we decode back. Hand-built kafka-python messages (a real record batch, the ApiVersions
fallback) check the same from their side.
"""

from __future__ import annotations

import uuid
import warnings
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from headwater.broker import (
    ApiKey,
    KafkaErrorCode,
    RequestHeader,
    decode_request,
    decode_response,
    encode_request,
    encode_response,
)
from headwater.broker._protocol._messages import APIS
from headwater.broker._protocol._schema import INT32, Api, Array, Struct

from .strategies import message

with warnings.catch_warnings():
    # kafka-python reads its schema files with a deprecated importlib.resources call.
    warnings.simplefilter("ignore", DeprecationWarning)
    from kafka.protocol import admin, consumer, metadata, producer
    from kafka.record.memory_records import MemoryRecordsBuilder

_MODULES = (admin, consumer, metadata, producer)
# kafka-python renames these int32 bit sets (and reads them as Python sets).
_RENAMED = {
    "cluster_authorized_operations": "authorized_operations",
    "topic_authorized_operations": "authorized_operations",
}


def their_class(api: Api, response: bool) -> Any:
    name = api.name + ("Response" if response else "Request")
    return next(getattr(m, name) for m in _MODULES if hasattr(m, name))


def plain(value: Any) -> Any:
    """Return ``value`` with buffers as bytes, recursively."""
    if isinstance(value, memoryview | bytearray):
        return bytes(value)
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value


def as_theirs(kind: Any, version: int, flexible: bool, value: Any, name: str = "") -> Any:
    """Return our decoded ``value`` as kafka-python's ``to_dict(json=False)`` shows it."""
    if isinstance(kind, Struct):
        return {
            _RENAMED.get(f.name, f.name) if f.type is INT32 else f.name: _their_field(
                f, version, flexible, value[f.name]
            )
            for f in kind.fields
            if f.exists(version) and (f.tag is None or flexible)
        }
    if isinstance(kind, Array):
        return (
            None if value is None else [as_theirs(kind.item, version, flexible, v) for v in value]
        )
    if kind.name == "uuid" and value == uuid.UUID(int=0):
        return None  # kafka-python reads the zero UUID as None
    if name.endswith("authorized_operations") and kind.name == "int32":
        bits = {i for i in range(32) if (value & 0xFFFFFFFF) >> i & 1}
        return None if bits == {31} else bits
    return plain(value)


def _their_field(f: Any, version: int, flexible: bool, value: Any) -> Any:
    if f.tag is not None and isinstance(f.type, Struct) and value == f.default_value():
        return None  # kafka-python's default for a tagged struct
    return as_theirs(f.type, version, flexible, value, f.name)


CASES = [
    pytest.param(api, version, response, id=f"{api.name}-v{version}-{kind}")
    for api in APIS.values()
    for version in api.versions()
    for response, kind in ((False, "request"), (True, "response"))
]


@pytest.mark.parametrize(("api", "version", "response"), CASES)
@settings(max_examples=5, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_kafka_python_agrees(api: Api, version: int, response: bool, data: st.DataObject) -> None:
    flexible = api.is_flexible(version)
    body = data.draw(message(api.response if response else api.request, version, flexible))
    if api.key == ApiKey.API_VERSIONS and response and body["error_code"] != 0:
        body["error_code"] = 0  # kafka-python then reads the body as v0
    header = RequestHeader(api.key, version, correlation_id=99, client_id="kat")
    cls = their_class(api, response)

    ours = b"".join(encode_response(header, body) if response else encode_request(header, body))
    theirs = cls.decode(ours, version=version, header=True, framed=True)
    assert plain(theirs.to_dict(json=False)) == as_theirs(
        api.response if response else api.request, version, flexible, body
    )
    assert theirs.header.correlation_id == 99

    if response:
        header_size = 4 if api.key == ApiKey.API_VERSIONS or not flexible else 5
        again = bytes(cls.decode(ours[4 + header_size :], version=version).encode())
        assert again == ours[4 + header_size :]
        assert plain(decode_response(header, ours[4:])) == plain(body)
    else:
        again = bytes(theirs.encode(version=version, header=True, framed=True))
        assert again == ours
        assert plain(decode_request(again[4:]).body) == plain(body)


def _batch(count: int) -> bytes:
    builder = MemoryRecordsBuilder(magic=2, compression_type=0, batch_size=1 << 20)
    for i in range(count):
        builder.append(timestamp=1_700_000_000_000 + i, key=b"k%d" % i, value=b"v" * 100)
    builder.close()
    return bytes(builder.buffer())


@pytest.mark.parametrize("version", [3, 7, 9, 11])
def test_their_produce_request_decodes_with_records_untouched(version: int) -> None:
    batch = _batch(5)
    request = producer.ProduceRequest(
        version=version,
        transactional_id=None,
        acks=-1,
        timeout_ms=1500,
        topic_data=[
            producer.ProduceRequest.TopicProduceData(
                name="clicks",
                partition_data=[
                    producer.ProduceRequest.TopicProduceData.PartitionProduceData(
                        index=2, records=batch
                    )
                ],
            )
        ],
    )
    request.with_header(correlation_id=17, client_id="kafka-python")
    frame = bytes(request.encode(header=True, framed=True))
    decoded = decode_request(frame[4:])
    assert decoded.header == RequestHeader(ApiKey.PRODUCE, version, 17, "kafka-python")
    topic = decoded.body["topic_data"][0]
    assert (topic["name"], topic["partition_data"][0]["index"]) == ("clicks", 2)
    assert topic["partition_data"][0]["records"] == batch
    assert (decoded.body["acks"], decoded.body["timeout_ms"]) == (-1, 1500)


@pytest.mark.parametrize("version", [4, 11, 12])
def test_our_fetch_response_decodes_with_theirs(version: int) -> None:
    batch = _batch(30)
    body = {
        "responses": [
            {
                "topic": "clicks",
                "partitions": [
                    {
                        "partition_index": 0,
                        "high_watermark": 30,
                        "last_stable_offset": 30,
                        "log_start_offset": 0,
                        "records": [batch[:1000], memoryview(batch)[1000:]],
                    }
                ],
            }
        ]
    }
    header = RequestHeader(ApiKey.FETCH, version, 5)
    frame = b"".join(encode_response(header, body))
    theirs = consumer.FetchResponse.decode(frame, version=version, header=True, framed=True)
    partition = theirs.responses[0].partitions[0]
    assert (partition.high_watermark, partition.last_stable_offset) == (30, 30)
    assert bytes(partition.records) == batch


@pytest.mark.parametrize("version", [0, 1, 4, 9, 12])
def test_their_metadata_request_decodes(version: int) -> None:
    topic = metadata.MetadataRequest.MetadataRequestTopic
    request = metadata.MetadataRequest(
        version=version,
        topics=[topic(name="a"), topic(name="b")],
        allow_auto_topic_creation=False,
    )
    request.with_header(correlation_id=3, client_id=None)
    frame = bytes(request.encode(header=True, framed=True))
    decoded = decode_request(frame[4:])
    assert decoded.header.client_id is None
    assert [t["name"] for t in decoded.body["topics"]] == ["a", "b"]
    assert decoded.body["allow_auto_topic_creation"] is (version < 4)


def test_their_join_group_request_decodes() -> None:
    protocol = consumer.JoinGroupRequest.JoinGroupRequestProtocol
    request = consumer.JoinGroupRequest(
        version=5,
        group_id="g",
        session_timeout_ms=10_000,
        rebalance_timeout_ms=30_000,
        member_id="",
        group_instance_id=None,
        protocol_type="consumer",
        protocols=[protocol(name="range", metadata=b"\x00\x01meta")],
    )
    request.with_header(correlation_id=8, client_id="c")
    decoded = decode_request(bytes(request.encode(header=True, framed=True))[4:])
    assert decoded.body["protocols"] == [{"name": "range", "metadata": b"\x00\x01meta"}]
    assert decoded.body["rebalance_timeout_ms"] == 30_000


def test_their_api_versions_request_uses_header_v2() -> None:
    request = metadata.ApiVersionsRequest(
        version=3, client_software_name="kafka-python", client_software_version="3.0"
    )
    request.with_header(correlation_id=1, client_id="c")
    frame = bytes(request.encode(header=True, framed=True))
    ours = b"".join(
        encode_request(RequestHeader(ApiKey.API_VERSIONS, 3, 1, "c"), request.to_dict())
    )
    assert frame == ours
    assert decode_request(frame[4:]).body["client_software_version"] == "3.0"


def test_api_versions_error_answer_reads_as_v0_in_kafka_python() -> None:
    header = RequestHeader(ApiKey.API_VERSIONS, 3, 12)
    body = {
        "error_code": KafkaErrorCode.UNSUPPORTED_VERSION,
        "api_keys": [{"api_key": 18, "min_version": 0, "max_version": 3}],
    }
    frame = b"".join(encode_response(header, body, api_version=0))
    theirs = metadata.ApiVersionsResponse.decode(frame, version=3, header=True, framed=True)
    assert theirs.error_code == 35
    assert [(k.api_key, k.min_version, k.max_version) for k in theirs.api_keys] == [(18, 0, 3)]
    assert decode_response(header, frame[4:])["api_keys"] == body["api_keys"]
