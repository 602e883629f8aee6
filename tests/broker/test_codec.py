"""Round trips over every declared API, version and direction; defaults; tagged fields."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from headwater.broker import (
    ApiKey,
    EncodeError,
    FrameReader,
    RequestHeader,
    decode_request,
    decode_response,
    encode_request,
    encode_response,
)
from headwater.broker._protocol._codec import struct_reader, struct_writer
from headwater.broker._protocol._messages import APIS
from headwater.broker._protocol._schema import (
    BOOL,
    BYTES,
    FLOAT64,
    INT8,
    INT16,
    INT32,
    INT64,
    RECORDS,
    STRING,
    UINT16,
    UINT32,
    UUID,
    Api,
    Array,
    Field,
    Struct,
)
from headwater.broker._protocol._types import Output

from .strategies import message

CASES = [
    pytest.param(api, version, response, id=f"{api.name}-v{version}-{kind}")
    for api in APIS.values()
    for version in api.versions()
    for response, kind in ((False, "request"), (True, "response"))
]


def _frame(parts: list[Any]) -> memoryview:
    frames = FrameReader().feed(b"".join(parts))
    assert len(frames) == 1
    return frames[0]


def round_trip(api: Api, version: int, response: bool, body: dict[str, Any]) -> dict[str, Any]:
    """Encode ``body`` as a framed request or response and decode it back."""
    header = RequestHeader(api.key, version, correlation_id=42, client_id="tests")
    if response:
        return decode_response(header, _frame(encode_response(header, body)))
    request = decode_request(_frame(encode_request(header, body)))
    assert request.header == header
    return request.body


@pytest.mark.parametrize(("api", "version", "response"), CASES)
@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_round_trip(api: Api, version: int, response: bool, data: st.DataObject) -> None:
    struct = api.response if response else api.request
    body = data.draw(message(struct, version, api.is_flexible(version)))
    if api.key == ApiKey.API_VERSIONS and response:
        assume(body["error_code"] != 35)  # read as v0, as a broker answers that error
    assert round_trip(api, version, response, body) == body


@pytest.mark.parametrize(("api", "version", "response"), CASES)
def test_empty_body_encodes_defaults(api: Api, version: int, response: bool) -> None:
    struct = api.response if response else api.request
    decoded = round_trip(api, version, response, {})
    assert decoded == {f.name: f.default_value() for f in struct.fields}


def test_decoded_dicts_keep_declaration_order_and_fresh_defaults() -> None:
    first = round_trip(APIS[ApiKey.FETCH], 3, False, {})
    second = round_trip(APIS[ApiKey.FETCH], 3, False, {})
    assert list(first) == [f.name for f in APIS[ApiKey.FETCH].request.fields]
    assert first["max_bytes"] == 0x7FFFFFFF  # carried by v3, default encoded
    assert first["rack_id"] == ""  # not carried by v3: its default
    first["forgotten_topics_data"].append("x")
    assert second["forgotten_topics_data"] == []


def test_fields_a_version_does_not_carry_are_ignored() -> None:
    body = {"acks": -1, "timeout_ms": 5, "transactional_id": "tx", "topic_data": []}
    decoded = round_trip(APIS[ApiKey.PRODUCE], 2, False, body)
    assert decoded["transactional_id"] is None
    assert decoded["acks"] == -1


def test_tagged_fields_are_written_only_when_not_default() -> None:
    api = APIS[ApiKey.API_VERSIONS]
    header = RequestHeader(api.key, 3, 1)
    plain = b"".join(encode_response(header, {}))
    tagged = b"".join(encode_response(header, {"finalized_features_epoch": 9}))
    assert plain.endswith(b"\x00")  # empty tagged-field section
    assert tagged.endswith(b"\x01\x01\x08" + (9).to_bytes(8, "big"))  # 1 field, tag 1, 8 bytes
    assert decode_response(header, tagged[4:])["finalized_features_epoch"] == 9


def test_unknown_tagged_fields_are_skipped() -> None:
    api = APIS[ApiKey.HEARTBEAT]
    header = RequestHeader(api.key, 4, 3, "c")
    frame = bytearray(b"".join(encode_request(header, {"group_id": "g", "member_id": "m"})))
    assert frame[-1] == 0
    frame[-1:] = b"\x02\x05\x02hi\x07\x00"  # tags 5 and 7, unknown to the declaration
    frame[:4] = (len(frame) - 4).to_bytes(4, "big")
    body = decode_request(frame[4:]).body
    assert (body["group_id"], body["member_id"]) == ("g", "m")


def test_records_decode_as_views_of_the_frame() -> None:
    header = RequestHeader(ApiKey.PRODUCE, 9, 5)
    batch = bytes(range(256)) * 8
    body = {"acks": 1, "topic_data": [{"name": "t", "partition_data": [{"records": batch}]}]}
    frame = _frame(encode_request(header, body))
    records = decode_request(frame).body["topic_data"][0]["partition_data"][0]["records"]
    assert isinstance(records, memoryview)
    assert records.obj is frame.obj  # no copy
    assert records == batch


def test_fetch_response_keeps_stored_batches_out_of_line() -> None:
    header = RequestHeader(ApiKey.FETCH, 12, 6)
    batches: list[bytes | memoryview] = [b"a" * 5000, b"b" * 10, memoryview(b"c" * 3000)]
    partition = {"partition_index": 0, "high_watermark": 3, "records": batches}
    parts = encode_response(header, {"responses": [{"topic": "t", "partitions": [partition]}]})
    assert any(part is batches[0] for part in parts)
    assert any(part is batches[2] for part in parts)
    joined = b"".join(parts)
    assert int.from_bytes(joined[:4], "big") == len(joined) - 4
    decoded = decode_response(header, joined[4:])
    assert decoded["responses"][0]["partitions"][0]["records"] == b"".join(batches)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"group_id": None}, "v0: group_id: null in a field that is not nullable"),
        ({"generation_id": 2**31}, "generation_id: 'i' format requires"),
        ({"member_id": 5}, "member_id: expected a str, not int"),
        ({"group_id": "x" * 40000}, "group_id: string longer than 32767 bytes"),
    ],
)
def test_values_that_do_not_fit_raise_encode_error(body: dict[str, Any], message: str) -> None:
    with pytest.raises(EncodeError, match=message):
        encode_request(RequestHeader(ApiKey.HEARTBEAT, 0, 1), body)


def test_encode_errors_name_the_path_of_the_field() -> None:
    partition = {"partition_index": 0, "committed_offset": None}
    body = {"topics": [{"name": "t", "partitions": [partition]}]}
    with pytest.raises(EncodeError, match=r"topics\.partitions\.committed_offset: required"):
        encode_request(RequestHeader(ApiKey.OFFSET_COMMIT, 8, 1), body)


SINK = Struct(
    Field("i8", INT8), Field("u16", UINT16), Field("u32", UINT32), Field("f64", FLOAT64),
    Field("flag", BOOL), Field("id", UUID), Field("blob", BYTES, nullable_since=1),
    Field("text", STRING, nullable_since=0), Field("longs", Array(INT64), nullable_since=0),
    Field("names", Array(STRING)), Field("batches", RECORDS),
    Field("nested", Struct(Field("x", INT32), Field("y", STRING))),
    Field("later", INT16, since=2, default=-7),
    Field("tagged_int", INT32, since=1, tag=3), Field("tagged_text", STRING, since=1, tag=1),
    Field("tagged_list", Array(Struct(Field("z", INT64))), since=1, tag=2),
)  # fmt: skip
"""A struct with every primitive and shape, to run the codec beyond the real layouts."""


@pytest.mark.parametrize("version", [0, 1, 2])
@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_every_primitive_round_trips(version: int, data: st.DataObject) -> None:
    flexible = version >= 1
    value = data.draw(message(SINK, version, flexible))
    out = Output()
    struct_writer(SINK, version, flexible)(out, value)
    frame = memoryview(b"".join(out.parts()))
    decoded, end = struct_reader(SINK, version, flexible)(frame, 0)
    assert end == len(frame)
    assert decoded == value
