"""Fuzzing the broker over real sockets: bad frames drop one connection, bad batches append nothing.

The module's broker accepts frames of at most 1 MiB. Every hypothesis example opens a
connection, sends its bytes, half-closes and reads until the broker answers or hangs up;
then a second connection must still be answered, and the broker's memory must stay
bounded. 5,000 mutated produce batches, each with the error it must get, follow.
"""

from __future__ import annotations

import random
import socket
import struct
from collections.abc import Iterator

import pytest
from crc32c import crc32c
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from headwater.broker import ApiKey, KafkaErrorCode, RequestHeader, encode_request
from headwater.broker._protocol._messages import APIS
from headwater.store import Compression, NewRecord, encode_batch

from .running import BrokerProcess, Connection, create_topics_body, fetch_body, produce_body
from .strategies import message

E = KafkaErrorCode
MAX_FRAME = 1 << 20
SERVED = sorted(
    int(k)
    for k in (
        ApiKey.PRODUCE, ApiKey.FETCH, ApiKey.LIST_OFFSETS, ApiKey.METADATA,
        ApiKey.FIND_COORDINATOR, ApiKey.API_VERSIONS, ApiKey.CREATE_TOPICS,
        ApiKey.DELETE_TOPICS, ApiKey.INIT_PRODUCER_ID, ApiKey.DESCRIBE_CONFIGS,
        ApiKey.ALTER_CONFIGS, ApiKey.INCREMENTAL_ALTER_CONFIGS, ApiKey.DELETE_RECORDS,
        ApiKey.CREATE_PARTITIONS,
    )
)  # fmt: skip
FUZZ = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    process = BrokerProcess(
        tmp_path_factory.mktemp("fuzz") / "data", "--max-frame-bytes", str(MAX_FRAME)
    ).start()
    yield process
    assert process.alive(), process.log()
    assert process.stop() == 0, process.log()


def rss_kib(broker: BrokerProcess) -> int:
    assert broker.proc is not None
    with open(f"/proc/{broker.proc.pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def exchange(broker: BrokerProcess, data: bytes, timeout_s: float = 5.0) -> bytes:
    """Send ``data``, half-close, and return whatever the broker sends before closing."""
    with socket.create_connection(("127.0.0.1", broker.port), timeout=timeout_s) as sock:
        try:
            sock.sendall(data)
            sock.shutdown(socket.SHUT_WR)
        except (BrokenPipeError, ConnectionResetError):
            return b""  # closed on the first bad bytes, before we finished sending
        received = bytearray()
        try:
            while chunk := sock.recv(65536):
                received += chunk
        except ConnectionResetError:
            pass
        except TimeoutError:
            pytest.fail(f"the broker neither answered nor closed after {data[:40]!r}")
        return bytes(received)


def assert_still_serving(broker: BrokerProcess) -> None:
    assert broker.alive(), broker.log()
    with Connection(broker.port) as conn:
        assert conn.request(ApiKey.API_VERSIONS, 3, {})["error_code"] == 0


def framed(body: bytes) -> bytes:
    return struct.pack(">i", len(body)) + body


@st.composite
def header_bytes(draw: st.DrawFn) -> bytes:
    """A request header for a served API at any version, valid or not."""
    api_key = draw(st.sampled_from(SERVED) | st.integers(-5, 80))
    version = draw(st.integers(-2, 20))
    client_id = draw(st.none() | st.text(max_size=10))
    raw_id = b"\xff\xff" if client_id is None else (
        struct.pack(">h", len(client_id.encode())) + client_id.encode()
    )  # fmt: skip
    tags = draw(st.sampled_from([b"", b"\x00", b"\x01\x00\x00"]))
    return struct.pack(">hhi", api_key, version, draw(st.integers(0, 2**31 - 1))) + raw_id + tags


@st.composite
def valid_requests(draw: st.DrawFn) -> tuple[bytes, RequestHeader]:
    """A well-formed request of a served API, encoded by our codec."""
    api = APIS[draw(st.sampled_from(SERVED))]
    version = draw(st.sampled_from(list(api.versions())))
    body = draw(message(api.request, version, api.is_flexible(version)))
    # Keep it quick and small: no long polls, no topics created or auto-created.
    body.update(max_wait_ms=0, validate_only=True, allow_auto_topic_creation=False)
    if api.key == ApiKey.PRODUCE:
        body["acks"] = draw(st.sampled_from([0, 1, -1]))
    header = RequestHeader(api.key, version, draw(st.integers(0, 2**31 - 1)), "fuzz")
    return b"".join(encode_request(header, body)), header


@st.composite
def mutated_requests(draw: st.DrawFn) -> bytes:
    """A valid request cut short, with bytes flipped, or with a huge array count inside."""
    frame, _ = draw(valid_requests())
    body = bytearray(frame[4:])
    how = draw(st.sampled_from(["truncate", "flip", "huge-count", "extend"]))
    if how == "truncate":
        body = body[: draw(st.integers(0, max(len(body) - 1, 0)))]
    elif how == "flip" and body:
        for _ in range(draw(st.integers(1, 4))):
            position = draw(st.integers(0, len(body) - 1))
            body[position] ^= draw(st.integers(1, 255))
    elif how == "huge-count" and len(body) > 12:
        position = draw(st.integers(8, len(body) - 4))
        body[position : position + 4] = struct.pack(">i", draw(st.integers(2**20, 2**31 - 1)))
    else:
        body += draw(st.binary(min_size=1, max_size=20))
    return framed(bytes(body))


FRAMES = st.one_of(
    st.binary(max_size=200),  # anything at all, framed or not
    st.builds(framed, st.binary(max_size=300)),  # a good size, random contents
    st.builds(lambda h, b: framed(h + b), header_bytes(), st.binary(max_size=100)),
    mutated_requests(),
    st.builds(lambda n: struct.pack(">i", n), st.integers(MAX_FRAME + 1, 2**31 - 1)),
    st.builds(lambda n: struct.pack(">i", n), st.integers(-(2**31), -1)),
    st.just(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: curl\r\n\r\n"),
)


@FUZZ
@given(data=FRAMES)
def test_random_frames_drop_only_their_connection(broker: BrokerProcess, data: bytes) -> None:
    exchange(broker, data)
    assert broker.alive(), broker.log()


@FUZZ
@given(request=valid_requests())
def test_well_formed_random_requests_are_answered_or_refused(
    broker: BrokerProcess, request: tuple[bytes, RequestHeader]
) -> None:
    frame, header = request
    reply = exchange(broker, frame)
    if reply:  # an answer to exactly this request (a handler may refuse values it gets)
        assert struct.unpack_from(">i", reply, 4)[0] == header.correlation_id
    assert broker.alive(), broker.log()


def test_the_broker_keeps_serving_and_its_memory_stays_bounded(broker: BrokerProcess) -> None:
    before = rss_kib(broker)
    # Connections that announce a large frame and send half of it, all open at once.
    open_sockets = []
    try:
        for _ in range(20):
            sock = socket.create_connection(("127.0.0.1", broker.port), timeout=5)
            sock.sendall(struct.pack(">i", MAX_FRAME) + b"\0" * (MAX_FRAME // 2))
            open_sockets.append(sock)
        for _ in range(200):
            exchange(broker, struct.pack(">i", 1195725856))  # "GET " as a size: refused at once
        assert_still_serving(broker)
        during = rss_kib(broker)
    finally:
        for sock in open_sockets:
            sock.close()
    assert during - before < 20 * MAX_FRAME // 1024 + 64 * 1024, (before, during)
    assert_still_serving(broker)
    # The refusals were logged, one line per connection.
    log = broker.log()
    assert "frame of 1195725856 bytes exceeds the maximum" in log


# -- 5,000 mutated produce batches ---------------------------------------------------------

PARTITIONS = 50
MUTATIONS = 5000


def _with_crc(data: bytearray) -> bytearray:
    struct.pack_into(">I", data, 17, crc32c(bytes(data[21:])))
    return data


def _batch(rng: random.Random) -> bytes:
    count = rng.randint(1, 5)
    records = [
        NewRecord(value=rng.randbytes(rng.randint(0, 40)), key=rng.choice([None, b"k"]))
        for _ in range(count)
    ]
    codec = rng.choice([Compression.NONE, Compression.NONE, Compression.GZIP, Compression.LZ4])
    return encode_batch(records, base_offset=0, compression=codec)


def mutate(rng: random.Random) -> tuple[bytes, KafkaErrorCode]:
    """A broken batch and the error the broker must answer it with."""
    data = bytearray(_batch(rng))
    kind = rng.randrange(12)
    if kind == 0:  # flip bytes the CRC covers
        for position in rng.sample(range(21, len(data)), rng.randint(1, 3)):
            data[position] ^= rng.randint(1, 255)
        return bytes(data), E.CORRUPT_MESSAGE
    if kind == 1:  # damage the CRC itself
        data[rng.randrange(17, 21)] ^= rng.randint(1, 255)
        return bytes(data), E.CORRUPT_MESSAGE
    if kind == 2:  # another magic
        data[16] = rng.choice([0, 1, 3, 0xFF])
        return bytes(data), E.CORRUPT_MESSAGE
    if kind == 3:  # cut short
        cut = rng.randrange(0, len(data))
        return bytes(data[:cut]), E.INVALID_RECORD if cut == 0 else E.CORRUPT_MESSAGE
    if kind == 4:  # a length that runs past the end, or below a header
        length = rng.choice([len(data) - 12 + rng.randint(1, 1000), rng.randint(-5, 48)])
        struct.pack_into(">i", data, 8, length)
        return bytes(data), E.CORRUPT_MESSAGE
    if kind == 5:  # bytes after the batch (a second batch, or garbage)
        return bytes(data) + rng.choice([_batch(rng), rng.randbytes(rng.randint(1, 30))]), (
            E.INVALID_RECORD
        )
    if kind == 6:  # a base offset: the broker assigns offsets
        struct.pack_into(">q", data, 0, rng.choice([1, -1, 2**40]))
        return bytes(data), E.INVALID_RECORD
    if kind == 7:  # a count that disagrees with the last offset delta (CRC kept valid)
        count = struct.unpack_from(">i", data, 57)[0]
        struct.pack_into(">i", data, 57, rng.choice([0, -1, count + rng.randint(1, 9)]))
        return bytes(_with_crc(data)), E.INVALID_RECORD
    if kind == 8:  # control or transactional batches from a client
        attributes = struct.unpack_from(">h", data, 21)[0] | rng.choice([0x10, 0x20, 0x30])
        struct.pack_into(">h", data, 21, attributes)
        return bytes(_with_crc(data)), E.INVALID_RECORD
    if kind == 9:  # an unknown codec
        attributes = (struct.unpack_from(">h", data, 21)[0] & ~7) | rng.randint(5, 7)
        struct.pack_into(">h", data, 21, attributes)
        return bytes(_with_crc(data)), E.CORRUPT_MESSAGE
    if kind == 10:  # a producer id without a sequence
        struct.pack_into(">qhi", data, 43, rng.randint(0, 2**40), 0, -1)
        return bytes(_with_crc(data)), E.INVALID_RECORD
    # kind 11: larger than the topic allows
    records = [NewRecord(value=rng.randbytes(600)) for _ in range(rng.randint(2, 4))]
    return encode_batch(records, base_offset=0), E.MESSAGE_TOO_LARGE


def test_mutated_produce_batches_are_refused_and_append_nothing(broker: BrokerProcess) -> None:
    rng = random.Random(20261126)
    cases = [mutate(rng) for _ in range(MUTATIONS)]
    with Connection(broker.port) as conn:
        name = "mutations"
        created = conn.request(
            ApiKey.CREATE_TOPICS,
            7,
            create_topics_body(name, PARTITIONS, {"max.message.bytes": "1024"}),
        )
        assert created["topics"][0]["error_code"] == 0
        pending = []
        for start in range(0, MUTATIONS, PARTITIONS):
            chunk = cases[start : start + PARTITIONS]
            batches = [(p, data) for p, (data, _) in enumerate(chunk)]
            pending.append((conn.send(ApiKey.PRODUCE, 9, produce_body(name, batches)), chunk))
        for header, chunk in pending:
            results = conn.receive(header)["responses"][0]["partition_responses"]
            for result, (data, expected) in zip(results, chunk, strict=True):
                assert result["error_code"] == expected, (data.hex(), result)
                assert result["base_offset"] == -1
        body = conn.request(ApiKey.FETCH, 12, fetch_body(name, dict.fromkeys(range(PARTITIONS), 0)))
        for partition in body["responses"][0]["partitions"]:
            assert (partition["high_watermark"], bytes(partition["records"])) == (0, b"")
    assert_still_serving(broker)
