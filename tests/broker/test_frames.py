"""Headers, frames and hostile bytes: the codec's entry points never crash on input."""

from __future__ import annotations

import contextlib
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from headwater.broker import (
    ApiKey,
    FrameReader,
    FrameTooLargeError,
    KafkaErrorCode,
    MalformedMessageError,
    MalformedRequestError,
    MalformedResponseError,
    ProtocolError,
    RequestHeader,
    UnsupportedVersionError,
    decode_request,
    decode_response,
    encode_request,
    encode_response,
)
from headwater.store import HeadwaterError


def _frame(header: RequestHeader, body: dict[str, object]) -> bytes:
    return b"".join(encode_request(header, body))


# --- headers -----------------------------------------------------------------------------


def test_request_header_v1_for_classic_versions() -> None:
    frame = _frame(RequestHeader(ApiKey.HEARTBEAT, 3, 0x01020304, "ab"), {})
    assert frame[4:16] == b"\x00\x0c\x00\x03\x01\x02\x03\x04\x00\x02ab"
    assert frame[16:18] == b"\x00\x00"  # body: group_id "" (int16 length), no tag section


def test_request_header_v2_for_flexible_versions_keeps_a_classic_client_id() -> None:
    frame = _frame(RequestHeader(ApiKey.HEARTBEAT, 4, 7, "ab"), {})
    assert frame[4:18] == b"\x00\x0c\x00\x04\x00\x00\x00\x07\x00\x02ab\x00\x01"
    # header: ..., client_id int16 "ab", empty tags (0); body: compact group_id "" (1)


def test_null_client_id() -> None:
    frame = _frame(RequestHeader(ApiKey.HEARTBEAT, 0, 7, None), {})
    assert frame[12:14] == b"\xff\xff"
    assert decode_request(frame[4:]).header.client_id is None


@pytest.mark.parametrize(("version", "header_size"), [(0, 4), (3, 4), (4, 5)])
def test_response_header_v1_only_for_flexible_versions(version: int, header_size: int) -> None:
    header = RequestHeader(ApiKey.HEARTBEAT, version, 9)
    frame = b"".join(encode_response(header, {"error_code": 27}))
    assert frame[4:8] == b"\x00\x00\x00\x09"
    assert frame[4 + header_size :].startswith(b"\x00\x00\x00\x00" if version else b"\x00\x1b")


@pytest.mark.parametrize("version", [0, 1, 2, 3])
def test_api_versions_response_always_uses_header_v0(version: int) -> None:
    header = RequestHeader(ApiKey.API_VERSIONS, version, 9)
    frame = b"".join(encode_response(header, {"error_code": 0, "api_keys": []}))
    assert frame[4:8] == b"\x00\x00\x00\x09"
    assert frame[8:10] == b"\x00\x00"  # error_code straight after the correlation id
    assert decode_response(header, frame[4:])["error_code"] == 0


def test_api_versions_above_the_maximum_is_answered_in_v0() -> None:
    frame = _frame(RequestHeader(ApiKey.API_VERSIONS, 3, 77, "rdkafka"), {})
    raw = bytearray(frame[4:])
    raw[2:4] = (9).to_bytes(2, "big")  # a version from the future, header v2
    raw += b"\x05future"  # a body the codec cannot know
    with pytest.raises(UnsupportedVersionError) as caught:
        decode_request(raw)
    header = caught.value.header
    assert header == RequestHeader(ApiKey.API_VERSIONS, 9, 77, "rdkafka")
    body = {
        "error_code": KafkaErrorCode.UNSUPPORTED_VERSION,
        "api_keys": [{"api_key": 18, "min_version": 0, "max_version": 3}],
    }
    answer = b"".join(encode_response(header, body, api_version=0))
    # size 16 | correlation id 77 | error 35 | one entry: ApiVersions 0-3
    assert answer.hex() == "000000100000004d002300000001001200000003"
    assert decode_response(RequestHeader(18, 3, 77), answer[4:])["api_keys"] == body["api_keys"]


@pytest.mark.parametrize(
    ("api_key", "version"), [(ApiKey.PRODUCE, 12), (ApiKey.FETCH, 13), (99, 0)]
)
def test_unknown_apis_and_versions_raise_unsupported_version(api_key: int, version: int) -> None:
    raw = struct.pack(">hhih", api_key, version, 5, -1) + b"\x00" * 8
    with pytest.raises(UnsupportedVersionError) as caught:
        decode_request(raw)
    assert caught.value.header is not None
    assert caught.value.header.correlation_id == 5
    with pytest.raises(UnsupportedVersionError):
        encode_response(RequestHeader(api_key, version, 5), {})


def test_response_with_another_correlation_id_is_rejected() -> None:
    frame = b"".join(encode_response(RequestHeader(ApiKey.HEARTBEAT, 1, 1), {}))
    with pytest.raises(MalformedResponseError, match="correlation id 1"):
        decode_response(RequestHeader(ApiKey.HEARTBEAT, 1, 2), frame[4:])


def test_errors_belong_to_the_headwater_tree() -> None:
    assert issubclass(MalformedRequestError, MalformedMessageError)
    assert issubclass(MalformedMessageError, ProtocolError)
    assert issubclass(FrameTooLargeError, ProtocolError)
    assert issubclass(ProtocolError, HeadwaterError)


# --- malformed bodies --------------------------------------------------------------------

PRODUCE = _frame(
    RequestHeader(ApiKey.PRODUCE, 9, 1, "p"),
    {
        "acks": -1,
        "topic_data": [{"name": "t", "partition_data": [{"index": 0, "records": b"x" * 70}]}],
    },
)
METADATA = _frame(RequestHeader(ApiKey.METADATA, 12, 1, "m"), {"topics": [{"name": "a"}]})
JOIN = _frame(
    RequestHeader(ApiKey.JOIN_GROUP, 5, 1, "j"),
    {"group_id": "g", "protocols": [{"name": "range", "metadata": b"m"}]},
)


@pytest.mark.parametrize("frame", [PRODUCE, METADATA, JOIN], ids=["produce", "metadata", "join"])
def test_every_truncation_is_malformed(frame: bytes) -> None:
    body = frame[4:]
    assert decode_request(body)
    for cut in range(len(body)):
        with pytest.raises(MalformedRequestError):
            decode_request(body[:cut])


def test_bytes_left_over_are_malformed() -> None:
    with pytest.raises(MalformedRequestError, match="1 bytes left over"):
        decode_request(JOIN[4:] + b"\x00")


def _metadata_v0(payload: bytes) -> bytes:
    return struct.pack(">hhih", ApiKey.METADATA, 0, 1, -1) + payload


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (_metadata_v0(b"\x7f\xff\xff\xff"), "runs past the end"),  # 2**31 - 1 topics
        # 2 topics, 1 sent:
        (_metadata_v0(b"\x00\x00\x00\x02\x00\x01a\x00"), "unpack_from requires"),
        (_metadata_v0(b"\xff\xff\xff\xff"), "invalid length -1"),  # null: not in v0
        (_metadata_v0(b"\x00\x00\x00\x01\xff\xfe"), "invalid length -2"),
        (_metadata_v0(b"\x00\x00\x00\x01\x7f\xffabc"), "runs past the end"),
        (_metadata_v0(b"\x00\x00\x00\x01\x00\x02\xc3\x28"), "utf-8"),
        # Metadata v9 (flexible): compact array count of 2**32 - 2, then an endless varint.
        (struct.pack(">hhih", 3, 9, 1, -1) + b"\x00\xff\xff\xff\xff\x0f", "runs past the end"),
        (struct.pack(">hhih", 3, 9, 1, -1) + b"\x00" + b"\xff" * 6, "longer than 5 bytes"),
        # OffsetFetch v1: an int32 array of 2**31 - 1 partition indexes.
        (struct.pack(">hhih", 9, 1, 1, -1) + b"\x00\x00\x00\x00\x00\x01\x00\x00\x7f\xff\xff\xff",
         "runs past the end"),
        (b"\x00\x03\x00", "unpack_from requires"),  # a header cut short
    ],
    ids=lambda value: value if isinstance(value, str) else None,
)  # fmt: skip
def test_lengths_and_counts_are_never_trusted(raw: bytes, reason: str) -> None:
    with pytest.raises(MalformedRequestError, match=reason):
        decode_request(raw)


def test_tagged_field_sizes_are_checked() -> None:
    raw = bytearray(METADATA[4:])
    raw[-1:] = b"\x01\x00\x05ab"  # one tagged field claiming 5 bytes, 2 present
    with pytest.raises(MalformedRequestError, match="tagged field 0 runs past"):
        decode_request(raw)
    fetch = bytearray(_frame(RequestHeader(ApiKey.FETCH, 12, 1), {})[4:])
    fetch[-1:] = b"\x01\x00\x03\x02ab"  # cluster_id (tag 0) "a" in 3 bytes
    with pytest.raises(MalformedRequestError, match="does not fill its 3 bytes"):
        decode_request(fetch)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=64))
def test_random_bytes_raise_only_protocol_errors(raw: bytes) -> None:
    with contextlib.suppress(MalformedRequestError, UnsupportedVersionError):
        decode_request(raw)


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from([PRODUCE, METADATA, JOIN]),
    st.lists(st.tuples(st.integers(0, 200), st.integers(0, 255)), min_size=1, max_size=4),
)
def test_mutated_requests_raise_only_protocol_errors(
    frame: bytes, mutations: list[tuple[int, int]]
) -> None:
    raw = bytearray(frame[4:])
    for at, value in mutations:
        raw[at % len(raw)] = value
    with contextlib.suppress(MalformedRequestError, UnsupportedVersionError):
        decode_request(raw)


# --- FrameReader -------------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.binary(max_size=300), max_size=8),
    st.lists(st.integers(1, 400), min_size=1, max_size=20),
)
def test_frames_survive_any_chunking(bodies: list[bytes], cuts: list[int]) -> None:
    stream = b"".join(struct.pack(">i", len(b)) + b for b in bodies)
    reader = FrameReader(max_frame_bytes=300)
    frames: list[bytes] = []
    pos = 0
    for size in cuts * (len(stream) // sum(cuts) + 1):
        chunk = stream[pos : pos + size]
        pos += size
        frames.extend(bytes(f) for f in reader.feed(chunk))
        assert reader.buffered_bytes <= 4 + 300
    assert frames == bodies
    assert reader.buffered_bytes == 0


def test_whole_frames_are_views_of_the_received_bytes() -> None:
    received = struct.pack(">i", 3) + b"abc" + struct.pack(">i", 2) + b"de"
    first, second = FrameReader().feed(received)
    assert (first.obj, second.obj) == (received, received)
    assert (bytes(first), bytes(second)) == (b"abc", b"de")


def test_mutable_buffers_are_copied_before_slicing() -> None:
    received = bytearray(struct.pack(">i", 3) + b"abc")
    (frame,) = FrameReader().feed(received)
    received[4:7] = b"xyz"
    assert bytes(frame) == b"abc"


def test_http_is_rejected_from_its_first_four_bytes() -> None:
    reader = FrameReader()
    for byte in b"GET":
        assert reader.feed(bytes([byte])) == []
    with pytest.raises(FrameTooLargeError) as caught:
        reader.feed(b" / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert caught.value.size == 1195725856
    assert reader.buffered_bytes <= 4


def test_oversize_frame_is_rejected_before_its_body_is_buffered() -> None:
    reader = FrameReader(max_frame_bytes=1000)
    assert len(reader.feed(struct.pack(">i", 1000) + b"x" * 1000)) == 1
    with pytest.raises(FrameTooLargeError, match="1001 bytes exceeds the maximum of 1000"):
        reader.feed(struct.pack(">i", 1001) + b"x" * 10)


def test_negative_frame_size_is_malformed() -> None:
    with pytest.raises(MalformedMessageError, match="negative frame size -2"):
        FrameReader().feed(struct.pack(">i", -2))


def test_a_large_frame_is_buffered_as_it_arrives() -> None:
    reader = FrameReader()
    assert reader.feed(struct.pack(">i", 50 * 1024 * 1024) + b"x" * 10) == []
    assert reader.buffered_bytes == 10  # not 50 MiB
    for _ in range(3):
        reader.feed(b"y" * 1000)
    assert reader.buffered_bytes == 3010


def test_package_docstring_example_runs() -> None:
    import doctest

    import headwater.broker

    assert doctest.testmod(headwater.broker).failed == 0
