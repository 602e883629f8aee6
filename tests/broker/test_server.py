"""The broker over real sockets, driven byte for byte with headwater's own codec.

One ``headwater broker`` subprocess serves the module (a few tests start their own, to
stop or kill it). Each test works on topics of its own.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from crc32c import crc32c

from headwater.broker import (
    API_VERSIONS,
    ApiKey,
    Broker,
    BrokerConfig,
    ClientInfo,
    KafkaErrorCode,
    Request,
    RequestHeader,
    decode_response,
    encode_request,
)
from headwater.store import (
    NewRecord,
    decode_records,
    encode_batch,
    encode_transactional_batch,
    open_store,
)

from .running import (
    AsyncConnection,
    BrokerProcess,
    Connection,
    assert_one_line_error,
    create_topics_body,
    fetch_body,
    produce_body,
    run_cli,
)

E = KafkaErrorCode
SERVED = {
    ApiKey.PRODUCE,
    ApiKey.FETCH,
    ApiKey.LIST_OFFSETS,
    ApiKey.METADATA,
    ApiKey.FIND_COORDINATOR,
    ApiKey.API_VERSIONS,
    ApiKey.CREATE_TOPICS,
    ApiKey.DELETE_TOPICS,
    ApiKey.INIT_PRODUCER_ID,
    ApiKey.DESCRIBE_CONFIGS,
    ApiKey.ALTER_CONFIGS,
    ApiKey.INCREMENTAL_ALTER_CONFIGS,
    ApiKey.DELETE_RECORDS,
    ApiKey.CREATE_PARTITIONS,
}
"""The broker's own APIs (a :class:`Broker` without ``extra_handlers``)."""
GROUP_APIS = {
    ApiKey.JOIN_GROUP,
    ApiKey.SYNC_GROUP,
    ApiKey.HEARTBEAT,
    ApiKey.LEAVE_GROUP,
    ApiKey.OFFSET_COMMIT,
    ApiKey.OFFSET_FETCH,
    ApiKey.DESCRIBE_GROUPS,
    ApiKey.LIST_GROUPS,
    ApiKey.DELETE_GROUPS,
    ApiKey.OFFSET_DELETE,
}
"""What ``headwater broker`` adds over its group coordinator."""
TXN_APIS = {
    ApiKey.ADD_PARTITIONS_TO_TXN,
    ApiKey.ADD_OFFSETS_TO_TXN,
    ApiKey.END_TXN,
    ApiKey.TXN_OFFSET_COMMIT,
}
"""What ``headwater broker`` adds over its transaction coordinator."""
TXN_ADMIN_APIS = {
    ApiKey.LIST_TRANSACTIONS,
    ApiKey.DESCRIBE_TRANSACTIONS,
    ApiKey.DESCRIBE_PRODUCERS,
    ApiKey.WRITE_TXN_MARKERS,
}
"""What ``headwater broker`` adds for Kafka's transaction tooling."""


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    process = BrokerProcess(tmp_path_factory.mktemp("server") / "data").start()
    yield process
    assert process.stop() == 0, process.log()


@pytest.fixture
def conn(broker: BrokerProcess) -> Iterator[Connection]:
    with Connection(broker.port) as connection:
        yield connection


def new_topic(conn: Connection, partitions: int = 1, configs: dict[str, str] | None = None) -> str:
    name = f"t-{uuid.uuid4().hex[:10]}"
    body = conn.request(ApiKey.CREATE_TOPICS, 7, create_topics_body(name, partitions, configs))
    assert body["topics"][0]["error_code"] == 0, body
    return name


def batch(count: int = 3, *, size: int = 10, start: int = 0, **kwargs: Any) -> bytes:
    records = [NewRecord(value=b"v%d-" % (start + i) + b"x" * size, key=b"k") for i in range(count)]
    return encode_batch(records, base_offset=0, **kwargs)


def produce(conn: Connection, topic: str, records: bytes | None, partition: int = 0) -> dict:
    body = conn.request(ApiKey.PRODUCE, 9, produce_body(topic, [(partition, records)]))
    return body["responses"][0]["partition_responses"][0]  # type: ignore[no-any-return]


def fetch_partition(conn: Connection, topic: str, offset: int, **kwargs: Any) -> dict:
    body = conn.request(ApiKey.FETCH, 12, fetch_body(topic, {0: offset}, **kwargs))
    return body["responses"][0]["partitions"][0]  # type: ignore[no-any-return]


def high_watermark(conn: Connection, topic: str, partition: int = 0) -> int:
    body = conn.request(
        ApiKey.LIST_OFFSETS,
        7,
        {
            "replica_id": -1,
            "isolation_level": 0,
            "topics": [
                {"name": topic, "partitions": [{"partition_index": partition, "timestamp": -1}]}
            ],
        },
    )
    return body["topics"][0]["partitions"][0]["offset"]  # type: ignore[no-any-return]


def wait_for_log(broker: BrokerProcess, seen: Callable[[str], bool]) -> None:
    """Wait until ``seen(log)`` holds of the broker's log, or the broker has exited."""
    deadline = time.monotonic() + 60  # a hung broker fails the test; a busy one does not
    while not seen(broker.log()) and broker.alive():
        assert time.monotonic() < deadline, broker.log()
        time.sleep(0.01)


@contextlib.asynccontextmanager
async def serving(data: Path) -> AsyncIterator[Broker]:
    """A :class:`Broker` over a new store, served in this event loop until the block ends."""
    async with open_store(data) as store, anyio.create_task_group() as tg:
        broker = Broker(store, BrokerConfig(port=0, shutdown_grace_s=5))
        await tg.start(broker.serve)
        try:
            yield broker
        finally:
            broker.shutdown()


async def wait_until(condition: Callable[[], bool]) -> None:
    """Wait until ``condition()`` holds (it is checked every millisecond; 60 s at most)."""
    with anyio.fail_after(60):
        while not condition():
            await anyio.sleep(0.001)


async def new_topic_async(conn: AsyncConnection, partitions: int = 1) -> str:
    name = f"t-{uuid.uuid4().hex[:10]}"
    body = await conn.request(ApiKey.CREATE_TOPICS, 7, create_topics_body(name, partitions))
    assert body["topics"][0]["error_code"] == 0, body
    return name


# -- ApiVersions, Metadata, FindCoordinator ------------------------------------------------


@pytest.mark.parametrize("version", [0, 1, 2, 3])
def test_api_versions_advertises_exactly_the_served_apis(conn: Connection, version: int) -> None:
    body = conn.request(ApiKey.API_VERSIONS, version, {"client_software_name": "t"})
    assert body["error_code"] == 0
    advertised = {e["api_key"]: (e["min_version"], e["max_version"]) for e in body["api_keys"]}
    assert set(advertised) == SERVED | GROUP_APIS | TXN_APIS | TXN_ADMIN_APIS
    for key, (low, high) in advertised.items():
        assert (low, high) == API_VERSIONS[ApiKey(key)].advertised
    # librdkafka enables features from these exact old versions.
    assert advertised[ApiKey.PRODUCE][0] == 0
    assert advertised[ApiKey.INIT_PRODUCER_ID][0] == 0
    assert advertised[ApiKey.FIND_COORDINATOR][0] == 0


def test_api_versions_above_the_maximum_is_answered_in_v0(conn: Connection) -> None:
    # ApiVersions v9 (unknown): header v2 (flexible), an empty body with no tags.
    client_id = b"future-client"
    frame = struct.pack(">hhih", ApiKey.API_VERSIONS, 9, 4242, len(client_id)) + client_id
    frame += b"\x00" + b"\x00\x00\x00"
    conn.sock.sendall(struct.pack(">i", len(frame)) + frame)
    response = conn.read_frame()
    correlation_id, error_code, count = struct.unpack_from(">ihi", response)
    assert (correlation_id, error_code, count) == (4242, E.UNSUPPORTED_VERSION, 1)
    assert struct.unpack_from(">hhh", response, 10) == (ApiKey.API_VERSIONS, 0, 3)
    # The connection stays usable: the client retries with a version the broker knows.
    assert conn.request(ApiKey.API_VERSIONS, 3, {})["error_code"] == 0


@pytest.mark.parametrize("version", [0, 1, 5, 7, 9, 12])
def test_metadata_names_this_node_as_broker_controller_and_leader(
    conn: Connection, broker: BrokerProcess, version: int
) -> None:
    name = new_topic(conn, partitions=3)
    body = conn.request(
        ApiKey.METADATA,
        version,
        {"topics": [{"name": name}], "allow_auto_topic_creation": False},
    )
    assert body["brokers"] == [
        {"node_id": 0, "host": "127.0.0.1", "port": broker.port, "rack": None}
    ]
    if version >= 1:
        assert body["controller_id"] == 0
    if version >= 2:
        assert body["cluster_id"]
    (topic,) = body["topics"]
    assert (topic["error_code"], topic["name"], topic["is_internal"]) == (0, name, False)
    assert [p["partition_index"] for p in topic["partitions"]] == [0, 1, 2]
    for p in topic["partitions"]:
        assert (p["leader_id"], p["replica_nodes"], p["isr_nodes"]) == (0, [0], [0])
        if version >= 7:
            assert p["leader_epoch"] == 0


def test_metadata_for_all_unknown_and_invalid_topics(conn: Connection) -> None:
    name = new_topic(conn)
    body = conn.request(ApiKey.METADATA, 12, {"topics": None, "allow_auto_topic_creation": False})
    assert name in {t["name"] for t in body["topics"]}
    missing = f"missing-{uuid.uuid4().hex[:8]}"
    body = conn.request(
        ApiKey.METADATA,
        12,
        {"topics": [{"name": missing}, {"name": "bad name!"}], "allow_auto_topic_creation": False},
    )
    codes = {t["name"]: t["error_code"] for t in body["topics"]}
    assert codes == {missing: E.UNKNOWN_TOPIC_OR_PARTITION, "bad name!": E.INVALID_TOPIC_EXCEPTION}


def test_metadata_with_librdkafkas_trailing_bytes_is_answered(conn: Connection) -> None:
    """librdkafka 2.16 sends Metadata v12 for every topic with 3 bytes too many.

    Its 4-byte placeholder for the topic count is left unshrunk when the array is null; a
    Kafka broker ignores what follows the body, and so does headwater's.
    """
    name = new_topic(conn)
    frame = bytes.fromhex("0003000c00000063000772646b61666b6100" + "00000000010000")
    conn.sock.sendall(struct.pack(">i", len(frame)) + frame)
    header = RequestHeader(ApiKey.METADATA, 12, 0x63, "rdkafka")
    body = decode_response(header, conn.read_frame())
    assert name in {t["name"] for t in body["topics"]}


def test_metadata_auto_creates_a_topic_with_the_default_config(conn: Connection) -> None:
    name = f"auto-{uuid.uuid4().hex[:8]}"
    body = conn.request(
        ApiKey.METADATA, 9, {"topics": [{"name": name}], "allow_auto_topic_creation": True}
    )
    assert body["topics"][0]["error_code"] == 0
    assert len(body["topics"][0]["partitions"]) == 1
    configs = describe_configs(conn, name)
    assert configs["headwater.durability"] == ("batch", True)
    # Internal names are never auto-created.
    body = conn.request(
        ApiKey.METADATA, 9, {"topics": [{"name": "__internal"}], "allow_auto_topic_creation": True}
    )
    assert body["topics"][0]["error_code"] == E.UNKNOWN_TOPIC_OR_PARTITION


@pytest.mark.parametrize("version", [0, 1, 2, 3])
def test_find_coordinator_names_this_node(
    conn: Connection, broker: BrokerProcess, version: int
) -> None:
    body = conn.request(ApiKey.FIND_COORDINATOR, version, {"key": "group", "key_type": 0})
    assert (body["error_code"], body["node_id"], body["port"]) == (0, 0, broker.port)
    if version >= 1:
        # ... and of every transactional id.
        body = conn.request(ApiKey.FIND_COORDINATOR, version, {"key": "tx", "key_type": 1})
        assert (body["error_code"], body["node_id"], body["port"]) == (0, 0, broker.port)
        unknown = conn.request(ApiKey.FIND_COORDINATOR, version, {"key": "x", "key_type": 2})
        assert unknown["error_code"] == E.COORDINATOR_NOT_AVAILABLE


# -- CreateTopics, DeleteTopics, DescribeConfigs -------------------------------------------


def describe_configs(conn: Connection, name: str) -> dict[str, tuple[str, bool]]:
    body = conn.request(
        ApiKey.DESCRIBE_CONFIGS,
        4,
        {"resources": [{"resource_type": 2, "resource_name": name, "configuration_keys": None}]},
    )
    (result,) = body["results"]
    assert result["error_code"] == 0, result
    return {c["name"]: (c["value"], c["config_source"] == 5) for c in result["configs"]}


def test_create_topics_applies_partitions_and_configs(conn: Connection) -> None:
    name = f"c-{uuid.uuid4().hex[:8]}"
    configs = {
        "retention.ms": "60000",
        "headwater.durability": "always",
        "cleanup.policy": "compact",
    }
    body = conn.request(ApiKey.CREATE_TOPICS, 7, create_topics_body(name, 4, configs))
    (result,) = body["topics"]
    assert (result["error_code"], result["num_partitions"], result["replication_factor"]) == (
        0,
        4,
        1,
    )
    returned = {c["name"]: c["value"] for c in result["configs"]}
    assert returned["retention.ms"] == "60000"
    described = describe_configs(conn, name)
    assert described["retention.ms"] == ("60000", False)
    assert described["headwater.durability"] == ("always", False)
    assert described["cleanup.policy"] == ("compact", False)
    assert described["segment.bytes"][1] is True  # untouched: the default
    body = conn.request(ApiKey.METADATA, 9, {"topics": [{"name": name}]})
    assert len(body["topics"][0]["partitions"]) == 4


@pytest.mark.parametrize(
    ("change", "code"),
    [
        ({"replication_factor": 3}, E.INVALID_REPLICATION_FACTOR),
        ({"num_partitions": 0}, E.INVALID_PARTITIONS),
        ({"configs": {"no.such.setting": "1"}}, E.INVALID_CONFIG),
        ({"configs": {"retention.ms": "soon"}}, E.INVALID_CONFIG),
        ({"name": "bad/name"}, E.INVALID_TOPIC_EXCEPTION),
        ({"name": "__reserved"}, E.INVALID_TOPIC_EXCEPTION),
        ({"assignments": [{"partition_index": 0, "broker_ids": [7]}], "num_partitions": -1},
         E.INVALID_REPLICA_ASSIGNMENT),
    ],
)  # fmt: skip
def test_create_topics_refuses_bad_requests(
    conn: Connection, change: dict[str, Any], code: KafkaErrorCode
) -> None:
    change = dict(change)
    name = change.pop("name", f"bad-{uuid.uuid4().hex[:8]}")
    body = create_topics_body(name, change.pop("num_partitions", 1), **change)
    (result,) = conn.request(ApiKey.CREATE_TOPICS, 7, body)["topics"]
    assert result["error_code"] == code, result
    assert result["error_message"]
    metadata = conn.request(
        ApiKey.METADATA, 9, {"topics": [{"name": name}], "allow_auto_topic_creation": False}
    )
    assert metadata["topics"][0]["error_code"] != 0  # nothing was created


def test_create_topics_validate_only_duplicates_and_existing(conn: Connection) -> None:
    name = f"v-{uuid.uuid4().hex[:8]}"
    body = create_topics_body(name, 2)
    body["validate_only"] = True
    (result,) = conn.request(ApiKey.CREATE_TOPICS, 7, body)["topics"]
    assert (result["error_code"], result["num_partitions"]) == (0, 2)
    metadata = conn.request(
        ApiKey.METADATA, 9, {"topics": [{"name": name}], "allow_auto_topic_creation": False}
    )
    assert metadata["topics"][0]["error_code"] == E.UNKNOWN_TOPIC_OR_PARTITION
    twice = create_topics_body(name)
    twice["topics"] *= 2
    codes = [t["error_code"] for t in conn.request(ApiKey.CREATE_TOPICS, 4, twice)["topics"]]
    assert codes == [E.INVALID_REQUEST, E.INVALID_REQUEST]
    assert (
        conn.request(ApiKey.CREATE_TOPICS, 0, create_topics_body(name))["topics"][0]["error_code"]
        == 0
    )
    again = conn.request(ApiKey.CREATE_TOPICS, 5, create_topics_body(name))["topics"][0]
    assert again["error_code"] == E.TOPIC_ALREADY_EXISTS


def test_delete_topics(conn: Connection) -> None:
    name = new_topic(conn)
    produce(conn, name, batch())
    missing = f"gone-{uuid.uuid4().hex[:8]}"
    body = conn.request(
        ApiKey.DELETE_TOPICS, 5, {"topic_names": [name, missing], "timeout_ms": 1000}
    )
    codes = {r["name"]: r["error_code"] for r in body["responses"]}
    assert codes == {name: 0, missing: E.UNKNOWN_TOPIC_OR_PARTITION}
    metadata = conn.request(
        ApiKey.METADATA, 9, {"topics": [{"name": name}], "allow_auto_topic_creation": False}
    )
    assert metadata["topics"][0]["error_code"] == E.UNKNOWN_TOPIC_OR_PARTITION
    assert produce(conn, name, batch())["error_code"] == E.UNKNOWN_TOPIC_OR_PARTITION


def test_describe_configs_of_unknown_topic_and_broker(conn: Connection) -> None:
    body = conn.request(
        ApiKey.DESCRIBE_CONFIGS,
        1,
        {
            "resources": [
                {"resource_type": 2, "resource_name": "nope-x", "configuration_keys": None},
                {"resource_type": 4, "resource_name": "0", "configuration_keys": None},
            ]
        },
    )
    codes = [r["error_code"] for r in body["results"]]
    assert codes == [E.UNKNOWN_TOPIC_OR_PARTITION, 0]


# -- Produce -------------------------------------------------------------------------------


def test_produce_assigns_dense_offsets_and_fetch_returns_the_stored_batches(
    conn: Connection,
) -> None:
    name = new_topic(conn)
    sent = [batch(5, start=0), batch(3, start=5, compression=2), batch(1, start=8)]
    offsets = [produce(conn, name, b)["base_offset"] for b in sent]
    assert offsets == [0, 5, 8]
    result = fetch_partition(conn, name, 0)
    assert (result["error_code"], result["high_watermark"], result["last_stable_offset"]) == (
        0,
        9,
        9,
    )
    assert result["log_start_offset"] == 0
    data = bytes(result["records"])
    # Stored as received: only the base offset differs (it sits outside the CRC).
    position = 0
    for sent_batch, base in zip(sent, offsets, strict=True):
        stored = data[position : position + len(sent_batch)]
        assert stored[8:] == sent_batch[8:]
        assert struct.unpack_from(">q", stored)[0] == base
        position += len(sent_batch)
    assert position == len(data)
    values = []
    position = 0
    while position < len(data):
        records = decode_records(data, position)
        values += [r.value for r in records]
        assert [r.offset for r in records] == list(range(records[0].offset, records[-1].offset + 1))
        position += struct.unpack_from(">i", data, position + 8)[0] + 12
    assert [v[: v.index(b"-")] for v in values] == [b"v%d" % i for i in range(9)]


def test_acks_zero_gets_no_response_and_acks_one_is_answered(conn: Connection) -> None:
    name = new_topic(conn)
    conn.send(ApiKey.PRODUCE, 9, produce_body(name, [(0, batch(2))], acks=0))
    header = conn.send(ApiKey.PRODUCE, 9, produce_body(name, [(0, batch(2))], acks=1))
    # The next frame answers the acks=1 request: the acks=0 one got nothing.
    body = conn.receive(header)
    assert body["responses"][0]["partition_responses"][0]["base_offset"] == 2
    assert high_watermark(conn, name) == 4


def corrupt(data: bytes, position: int) -> bytes:
    changed = bytearray(data)
    changed[position] ^= 0xFF
    return bytes(changed)


def with_crc(data: bytearray) -> bytes:
    struct.pack_into(">I", data, 17, crc32c(bytes(data[21:])))
    return bytes(data)


def patched(data: bytes, fmt: str, offset: int, value: int) -> bytes:
    changed = bytearray(data)
    struct.pack_into(fmt, changed, offset, value)
    return with_crc(changed) if offset >= 21 else bytes(changed)


@pytest.mark.parametrize(
    ("records", "code"),
    [
        (None, E.INVALID_RECORD),
        (b"", E.INVALID_RECORD),
        (batch() + batch(), E.INVALID_RECORD),
        (batch()[:40], E.CORRUPT_MESSAGE),
        (batch()[:-1], E.CORRUPT_MESSAGE),
        (corrupt(batch(), 70), E.CORRUPT_MESSAGE),
        (corrupt(batch(), 18), E.CORRUPT_MESSAGE),
        (patched(batch(), ">b", 16, 1), E.CORRUPT_MESSAGE),
        (patched(batch(), ">q", 0, 5), E.INVALID_RECORD),
        (patched(batch(), ">i", 57, 4), E.INVALID_RECORD),
        (patched(batch(), ">i", 57, 0), E.INVALID_RECORD),
        (patched(batch(), ">h", 21, 0x20), E.INVALID_RECORD),
        (patched(batch(), ">h", 21, 0x10), E.INVALID_RECORD),
        (patched(batch(), ">h", 21, 0x07), E.CORRUPT_MESSAGE),
        (patched(patched(batch(), ">q", 43, 7), ">i", 53, -1), E.INVALID_RECORD),
        (batch(3, size=2000), E.MESSAGE_TOO_LARGE),
    ],
    ids=[
        "null", "empty", "two-batches", "short-header", "truncated", "crc-body", "crc-field",
        "magic", "base-offset", "count", "no-records", "control", "transactional", "codec",
        "pid-without-sequence", "too-large",
    ],
)  # fmt: skip
def test_produce_refuses_bad_batches_and_appends_nothing(
    conn: Connection, records: bytes | None, code: KafkaErrorCode
) -> None:
    name = new_topic(conn, configs={"max.message.bytes": "4096"})
    result = produce(conn, name, records)
    assert result["error_code"] == code, result
    assert result["base_offset"] == -1
    assert result["error_message"]
    assert high_watermark(conn, name) == 0
    assert produce(conn, name, batch())["base_offset"] == 0  # the partition still works


@pytest.mark.parametrize(
    ("version", "acks", "transactional_id", "code"),
    [
        (2, -1, None, E.UNSUPPORTED_VERSION),
        (9, 2, None, E.INVALID_REQUIRED_ACKS),
    ],
)
def test_produce_refuses_bad_requests(
    conn: Connection, version: int, acks: int, transactional_id: str | None, code: int
) -> None:
    name = new_topic(conn)
    body = produce_body(name, [(0, batch())], acks=acks)
    body["transactional_id"] = transactional_id
    result = conn.request(ApiKey.PRODUCE, version, body)
    assert result["responses"][0]["partition_responses"][0]["error_code"] == code
    assert high_watermark(conn, name) == 0


def test_produce_to_unknown_topic_or_partition(conn: Connection) -> None:
    name = new_topic(conn)
    assert produce(conn, name, batch(), partition=1)["error_code"] == E.UNKNOWN_TOPIC_OR_PARTITION
    assert produce(conn, "no-such-x", batch())["error_code"] == E.UNKNOWN_TOPIC_OR_PARTITION


def test_idempotent_producer_sequences(conn: Connection) -> None:
    name = new_topic(conn)
    init = conn.request(ApiKey.INIT_PRODUCER_ID, 4, {"transactional_id": None})
    assert init["error_code"] == 0
    pid, epoch = init["producer_id"], init["producer_epoch"]
    assert pid >= 0 and epoch == 0

    def send(sequence: int, count: int = 2, producer_epoch: int = 0) -> dict:
        records = batch(
            count, producer_id=pid, producer_epoch=producer_epoch, base_sequence=sequence
        )
        return produce(conn, name, records)

    assert [send(s)["base_offset"] for s in (0, 2, 4)] == [0, 2, 4]
    retry = send(2)
    assert (retry["error_code"], retry["base_offset"]) == (E.DUPLICATE_SEQUENCE_NUMBER, 2)
    assert send(9)["error_code"] == E.OUT_OF_ORDER_SEQUENCE_NUMBER  # a gap
    assert send(6)["base_offset"] == 6
    assert send(3, producer_epoch=1)["error_code"] == E.OUT_OF_ORDER_SEQUENCE_NUMBER
    assert send(0, producer_epoch=1)["base_offset"] == 8  # a new epoch starts at 0
    assert send(8, producer_epoch=0)["error_code"] == E.INVALID_PRODUCER_EPOCH
    assert high_watermark(conn, name) == 10
    other = conn.request(ApiKey.INIT_PRODUCER_ID, 0, {"transactional_id": None})
    assert other["producer_id"] != pid


def test_transactions_over_the_wire(conn: Connection) -> None:
    """The transaction APIs and what Fetch answers read_committed and read_uncommitted."""
    name = new_topic(conn)
    txn_id = f"tx-{uuid.uuid4().hex[:8]}"
    init = {"transactional_id": txn_id, "transaction_timeout_ms": 60_000}
    first = conn.request(ApiKey.INIT_PRODUCER_ID, 4, init)
    again = conn.request(ApiKey.INIT_PRODUCER_ID, 4, init)
    assert (first["error_code"], first["producer_epoch"]) == (0, 0)
    assert (again["producer_id"], again["producer_epoch"]) == (first["producer_id"], 1)
    too_long = conn.request(ApiKey.INIT_PRODUCER_ID, 4, {**init, "transaction_timeout_ms": 10**9})
    assert too_long["error_code"] == E.INVALID_TRANSACTION_TIMEOUT
    pid = again["producer_id"]

    def txn_batch(sequence: int, count: int = 2, epoch: int = 1) -> bytes:
        return bytes(
            encode_transactional_batch(
                [NewRecord(value=b"t%d" % (sequence + i)) for i in range(count)],
                producer_id=pid,
                producer_epoch=epoch,
                base_sequence=sequence,
            )
        )

    def produce_txn(records: bytes) -> dict:
        body = produce_body(name, [(0, records)])
        body["transactional_id"] = txn_id
        response = conn.request(ApiKey.PRODUCE, 9, body)
        return response["responses"][0]["partition_responses"][0]  # type: ignore[no-any-return]

    def add_partition(epoch: int = 1) -> int:
        body = {
            "v3_and_below_transactional_id": txn_id,
            "v3_and_below_producer_id": pid,
            "v3_and_below_producer_epoch": epoch,
            "v3_and_below_topics": [{"name": name, "partitions": [0]}],
        }
        result = conn.request(ApiKey.ADD_PARTITIONS_TO_TXN, 3, body)
        return result["results_by_topic_v3_and_below"][0]["results_by_partition"][0][  # type: ignore[no-any-return]
            "partition_error_code"
        ]

    def end(commit: bool, epoch: int = 1) -> int:
        body = {
            "transactional_id": txn_id,
            "producer_id": pid,
            "producer_epoch": epoch,
            "committed": commit,
        }
        return conn.request(ApiKey.END_TXN, 3, body)["error_code"]  # type: ignore[no-any-return]

    # A transactional batch for a partition its transaction did not add is refused.
    assert produce_txn(txn_batch(0))["error_code"] == E.INVALID_TXN_STATE
    assert add_partition(epoch=0) == E.INVALID_PRODUCER_EPOCH  # the fenced epoch
    assert add_partition() == E.NONE
    assert produce_txn(txn_batch(0))["base_offset"] == 0
    assert end(commit=False) == E.NONE  # marker at 2
    assert end(commit=True) == E.INVALID_TXN_STATE  # it ended the other way
    assert add_partition() == E.NONE
    assert produce_txn(txn_batch(2))["base_offset"] == 3
    uncommitted = fetch_body(name, {0: 0})
    uncommitted["isolation_level"] = 0
    open_rc = fetch_partition(conn, name, 0)
    assert (open_rc["high_watermark"], open_rc["last_stable_offset"]) == (5, 3)
    assert open_rc["aborted_transactions"] == [{"producer_id": pid, "first_offset": 0}]
    assert end(commit=True) == E.NONE  # marker at 5
    assert end(commit=True) == E.NONE  # a retry of the same EndTxn
    committed = fetch_partition(conn, name, 0)
    assert (committed["high_watermark"], committed["last_stable_offset"]) == (6, 6)
    records = decode_records(bytes(committed["records"]))
    assert [r.offset for r in records] == [0, 1]  # the first batch; its markers follow
    ru = conn.request(ApiKey.FETCH, 12, uncommitted)["responses"][0]["partitions"][0]
    assert ru["aborted_transactions"] is None


def test_duplicates_are_detected_after_the_broker_is_killed(tmp_path: Path) -> None:
    """Sequence state lives with the log: a retry after kill -9 and restart is a duplicate."""
    broker = BrokerProcess(tmp_path / "data").start()
    try:
        with Connection(broker.port) as conn:
            name = new_topic(conn)
            init = conn.request(ApiKey.INIT_PRODUCER_ID, 4, {"transactional_id": None})
            pid = init["producer_id"]
            for sequence in (0, 2, 4):
                sent = batch(2, producer_id=pid, producer_epoch=0, base_sequence=sequence)
                assert produce(conn, name, sent)["base_offset"] == sequence
        broker.kill()
        broker.start()
        with Connection(broker.port) as conn:
            retry = produce(
                conn, name, batch(2, producer_id=pid, producer_epoch=0, base_sequence=4)
            )
            assert (retry["error_code"], retry["base_offset"]) == (E.DUPLICATE_SEQUENCE_NUMBER, 4)
            gap = produce(conn, name, batch(1, producer_id=pid, producer_epoch=0, base_sequence=7))
            assert gap["error_code"] == E.OUT_OF_ORDER_SEQUENCE_NUMBER
            follows = batch(1, producer_id=pid, producer_epoch=0, base_sequence=6)
            assert produce(conn, name, follows)["base_offset"] == 6
            assert high_watermark(conn, name) == 7
    finally:
        if broker.alive():
            broker.kill()


# -- Fetch ---------------------------------------------------------------------------------


def test_fetch_waits_max_wait_ms_when_there_is_nothing(conn: Connection) -> None:
    name = new_topic(conn)
    start = time.monotonic()
    result = fetch_partition(conn, name, 0, max_wait_ms=300)
    # Not before max_wait_ms (however long a busy machine makes it take).
    assert time.monotonic() - start >= 0.3
    assert (result["error_code"], bytes(result["records"]), result["high_watermark"]) == (
        0,
        b"",
        0,
    )


async def test_a_waiting_fetch_answers_as_soon_as_data_arrives(tmp_path: Path) -> None:
    async with (
        serving(tmp_path / "data") as broker,
        await AsyncConnection.open(broker.node.port) as conn,
        await AsyncConnection.open(broker.node.port) as producer,
    ):
        name = await new_topic_async(conn)
        # Far longer than the test: only the produce below can end this wait.
        header = await conn.send(ApiKey.FETCH, 11, fetch_body(name, {0: 0}, max_wait_ms=600_000))
        await wait_until(lambda: broker.statistics().fetches_waiting == 1)
        body = await producer.request(ApiKey.PRODUCE, 9, produce_body(name, [(0, batch(4))]))
        assert body["responses"][0]["partition_responses"][0]["error_code"] == 0
        result = (await conn.receive(header))["responses"][0]["partitions"][0]
        assert result["high_watermark"] == 4
        assert len(decode_records(bytes(result["records"]))) == 4
        assert broker.statistics().fetches_waiting == 0


def test_fetch_min_bytes_waits_for_enough(conn: Connection, broker: BrokerProcess) -> None:
    name = new_topic(conn)
    produce(conn, name, batch(1))
    start = time.monotonic()
    result = fetch_partition(conn, name, 0, max_wait_ms=400, min_bytes=1 << 20)
    assert time.monotonic() - start >= 0.4  # not answered before max_wait_ms
    assert len(decode_records(bytes(result["records"]))) == 1  # what there is, at the deadline


def test_fetch_lists_every_partition_and_reports_errors(conn: Connection) -> None:
    name = new_topic(conn, partitions=3)
    produce(conn, name, batch(2), partition=1)
    body = conn.request(ApiKey.FETCH, 12, fetch_body(name, {0: 0, 1: 0, 2: 5, 7: 0}))
    assert body["error_code"] == 0 and body["session_id"] == 0
    results = {p["partition_index"]: p for p in body["responses"][0]["partitions"]}
    assert results[0]["error_code"] == 0 and bytes(results[0]["records"]) == b""
    assert results[1]["error_code"] == 0 and results[1]["high_watermark"] == 2
    assert results[2]["error_code"] == E.OFFSET_OUT_OF_RANGE
    assert results[7]["error_code"] == E.UNKNOWN_TOPIC_OR_PARTITION
    epoch_body = fetch_body(name, {0: 0})
    epoch_body["topics"][0]["partitions"][0]["current_leader_epoch"] = 3
    result = conn.request(ApiKey.FETCH, 12, epoch_body)["responses"][0]["partitions"][0]
    assert result["error_code"] == E.UNKNOWN_LEADER_EPOCH
    session = fetch_body(name, {0: 0})
    session["session_id"] = 99
    assert conn.request(ApiKey.FETCH, 12, session)["error_code"] == E.FETCH_SESSION_ID_NOT_FOUND
    old = conn.request(ApiKey.FETCH, 3, fetch_body(name, {0: 0}))
    assert old["responses"][0]["partitions"][0]["error_code"] == E.UNSUPPORTED_VERSION


def test_fetch_sends_a_first_batch_whole_beyond_the_limits(conn: Connection) -> None:
    name = new_topic(conn, partitions=2, configs={"max.message.bytes": "200000"})
    big = batch(10, size=10_000)
    produce(conn, name, big, partition=0)
    produce(conn, name, batch(2), partition=1)
    body = conn.request(
        ApiKey.FETCH,
        12,
        fetch_body(name, {0: 0, 1: 0}, partition_max_bytes=1000, max_bytes=2000),
    )
    results = {p["partition_index"]: p for p in body["responses"][0]["partitions"]}
    assert len(results[0]["records"]) == len(big)  # whole, though above both limits
    assert bytes(results[1]["records"]) == b""  # the response is full
    assert results[1]["high_watermark"] == 2


# -- ListOffsets ---------------------------------------------------------------------------


def list_offsets(conn: Connection, topic: str, timestamp: int, version: int = 7) -> dict:
    body = conn.request(
        ApiKey.LIST_OFFSETS,
        version,
        {
            "replica_id": -1,
            "isolation_level": 1,
            "topics": [
                {"name": topic, "partitions": [{"partition_index": 0, "timestamp": timestamp}]}
            ],
        },
    )
    return body["topics"][0]["partitions"][0]  # type: ignore[no-any-return]


def test_list_offsets(conn: Connection) -> None:
    name = new_topic(conn)
    stamps = [1_000, 2_000, 5_000, 3_000, 4_000]
    for i, stamp in enumerate(stamps):
        records = [NewRecord(value=b"%d" % i, timestamp=stamp)]
        produce(conn, name, encode_batch(records, base_offset=0))
    assert list_offsets(conn, name, -2)["offset"] == 0
    assert list_offsets(conn, name, -1)["offset"] == 5
    latest_v1 = list_offsets(conn, name, -1, version=1)
    assert (latest_v1["error_code"], latest_v1["offset"]) == (0, 5)
    maximum = list_offsets(conn, name, -3)
    assert (maximum["offset"], maximum["timestamp"]) == (2, 5_000)
    found = list_offsets(conn, name, 2_500)
    assert (found["offset"], found["timestamp"]) == (2, 5_000)
    found = list_offsets(conn, name, 1_000)
    assert (found["offset"], found["timestamp"]) == (0, 1_000)
    none = list_offsets(conn, name, 9_000)
    assert (none["error_code"], none["offset"], none["timestamp"]) == (0, -1, -1)
    assert list_offsets(conn, name, -1, version=0)["error_code"] == E.UNSUPPORTED_VERSION
    assert list_offsets(conn, "no-such-x", -1)["error_code"] == E.UNKNOWN_TOPIC_OR_PARTITION


# -- connections ---------------------------------------------------------------------------


@pytest.mark.parametrize("first", [0, 2], ids=["produce-first", "metadata-first"])
def test_pipelined_requests_are_answered_in_order(conn: Connection, first: int) -> None:
    # Produces wait for their fsync; metadata answers at once, and is sent at once when no
    # response waits before it.
    name = new_topic(conn)
    headers = []
    for i in range(first, first + 60):
        if i % 3 == 2:
            headers.append(conn.send(ApiKey.METADATA, 9, {"topics": [{"name": name}]}))
        else:
            headers.append(conn.send(ApiKey.PRODUCE, 9, produce_body(name, [(0, batch(2))])))
    offsets = []
    for header in headers:
        body = conn.receive(header)  # raises if the correlation id is not the expected one
        if header.api_key == ApiKey.PRODUCE:
            offsets.append(body["responses"][0]["partition_responses"][0]["base_offset"])
    assert offsets == list(range(0, 80, 2))


@pytest.mark.parametrize(
    "raw",
    [
        struct.pack(">i", -5),
        struct.pack(">i", 200 << 20),  # above the 100 MiB frame limit
        b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n",
        struct.pack(">ihhih", 10, 99, 0, 1, -1),  # an unknown API key
        struct.pack(">ihhih", 10, ApiKey.PRODUCE, 42, 1, -1),  # an unknown version
        struct.pack(">ihhih", 14, ApiKey.METADATA, 1, 1, -1) + b"\xff\xff\x00\x09",  # truncated
    ],
    ids=["negative", "oversized", "http", "unknown-api", "unknown-version", "malformed"],
)
def test_bad_input_closes_only_that_connection(broker: BrokerProcess, raw: bytes) -> None:
    with Connection(broker.port) as healthy, Connection(broker.port) as bad:
        assert healthy.request(ApiKey.API_VERSIONS, 3, {})["error_code"] == 0
        bad.sock.sendall(raw)
        assert bad.closed_by_broker()
        assert healthy.request(ApiKey.API_VERSIONS, 3, {})["error_code"] == 0
    assert broker.alive()


def test_group_apis_are_served(broker: BrokerProcess) -> None:
    with Connection(broker.port) as conn:
        answer = conn.request(ApiKey.LIST_GROUPS, 4, {"states_filter": ["Dead"]})
        assert answer == {"throttle_time_ms": 0, "error_code": 0, "groups": []}


def test_logs_a_summary_at_start_and_a_line_per_connection(broker: BrokerProcess) -> None:
    with Connection(broker.port, client_id="log-probe") as conn:
        conn.request(ApiKey.API_VERSIONS, 3, {})
    wait_for_log(broker, lambda log: "'log-probe'" in log)
    log = broker.log()
    assert " INFO headwater.broker: headwater broker node 0 listening on 127.0.0.1:" in log
    (line,) = [line for line in log.splitlines() if "'log-probe'" in line]
    assert " DEBUG " in line and "closed after 1 request(s)" in line


# -- shutdown and the CLI ------------------------------------------------------------------


async def test_shutdown_answers_a_waiting_fetch_at_once_and_closes_cleanly(
    tmp_path: Path,
) -> None:
    """What SIGTERM does to ``headwater broker`` (it calls :meth:`Broker.shutdown`)."""
    async with (
        serving(tmp_path / "data") as broker,
        await AsyncConnection.open(broker.node.port) as conn,
    ):
        name = await new_topic_async(conn, partitions=2)
        body = await conn.request(ApiKey.PRODUCE, 9, produce_body(name, [(0, batch(3))]))
        assert body["responses"][0]["partition_responses"][0]["base_offset"] == 0
        header = await conn.send(ApiKey.FETCH, 12, fetch_body(name, {0: 3}, max_wait_ms=600_000))
        await wait_until(lambda: broker.statistics().fetches_waiting == 1)
        broker.shutdown()
        result = (await conn.receive(header))["responses"][0]["partitions"][0]
        assert (result["error_code"], result["high_watermark"]) == (0, 3)
        assert bytes(result["records"]) == b""
        assert await conn.closed_by_broker()
    # serve() returned and the store is closed.
    statistics = broker.statistics()
    assert (statistics.connections_open, statistics.fetches_waiting) == (0, 0)
    for partition in (0, 1):
        assert (tmp_path / "data" / name / str(partition) / ".clean-shutdown").exists()


def test_sigterm_closes_connections_and_the_store_cleanly(tmp_path: Path) -> None:
    broker = BrokerProcess(tmp_path / "data").start()
    try:
        with Connection(broker.port) as conn:
            name = new_topic(conn, partitions=2)
            produce(conn, name, batch(3))
            broker.proc.send_signal(15)  # type: ignore[union-attr]
            assert conn.closed_by_broker(timeout_s=30)
        assert broker.proc.wait(30) == 0  # type: ignore[union-attr]
    finally:
        if broker.alive():
            broker.kill()
    for partition in (0, 1):
        assert (tmp_path / "data" / name / str(partition) / ".clean-shutdown").exists()
    log = broker.log()
    assert "SIGTERM received" in log and "closed cleanly" in log


def test_signals_in_a_row_still_close_the_store_cleanly(tmp_path: Path) -> None:
    broker = BrokerProcess(tmp_path / "data").start()
    try:
        with Connection(broker.port) as conn:
            name = new_topic(conn)
            produce(conn, name, batch(3))
            for sent in range(1, 4):
                if not broker.alive():
                    break  # wherever the signals landed, the store must be closed cleanly
                broker.proc.send_signal(2)  # type: ignore[union-attr]
                # One signal at a time: the next is sent once this one is seen (or the
                # broker is gone), so the kernel cannot merge them into one.
                wait_for_log(broker, lambda log, n=sent: log.count("SIGINT received") >= n)
        assert broker.proc.wait(30) == 0  # type: ignore[union-attr]
    finally:
        if broker.alive():
            broker.kill()
    assert (tmp_path / "data" / name / "0" / ".clean-shutdown").exists()


def test_cli_administers_a_running_broker(broker: BrokerProcess, tmp_path: Path) -> None:
    name = f"cli-{uuid.uuid4().hex[:8]}"
    bootstrap = ["--bootstrap", broker.bootstrap]
    created = run_cli("topics", "create", name, "-p", "2", "-c", "retention_ms=5000", *bootstrap)
    assert created.returncode == 0, created.stderr
    listed = run_cli("topics", "list", *bootstrap)
    assert name in listed.stdout and "5000" in listed.stdout
    described = run_cli("topics", "describe", name, *bootstrap)
    assert "retention.ms" in described.stdout and "high_watermark" in described.stdout
    assert_one_line_error(run_cli("topics", "create", name, *bootstrap), "TOPIC_ALREADY_EXISTS")
    assert_one_line_error(run_cli("topics", "create", "x", "-c", "nope=1", *bootstrap), "nope")
    deleted = run_cli("topics", "delete", name, *bootstrap)
    assert deleted.returncode == 0, deleted.stderr
    assert_one_line_error(run_cli("topics", "describe", name, *bootstrap), "does not exist")
    with socket.socket() as unused:
        # Bound but not listening: connections are refused, and while the socket is open
        # no other process can take the port.
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
        assert_one_line_error(
            run_cli("topics", "list", "--bootstrap", f"127.0.0.1:{port}"),
            "cannot reach the broker",
        )


# -- the Broker API in-process -------------------------------------------------------------


async def test_extra_handlers_are_dispatched_and_advertised(tmp_path: Path) -> None:
    """The slot the consumer-group handlers use: a table passed as ``extra_handlers``."""
    seen: list[tuple[str | None, int]] = []

    async def list_groups(request: Request, client: ClientInfo) -> dict[str, Any]:
        seen.append((request.header.client_id, client.connection_id))
        return {"error_code": 0, "groups": [{"group_id": "g", "protocol_type": "consumer"}]}

    async def exchange(stream: Any, header: RequestHeader, body: dict[str, Any]) -> Any:
        await stream.send(b"".join(encode_request(header, body)))
        data = b""
        while len(data) < 4 or len(data) < 4 + struct.unpack_from(">i", data)[0]:
            data += await stream.receive()
        return decode_response(header, data[4:])

    async with open_store(tmp_path / "data") as store:
        broker = Broker(
            store,
            BrokerConfig(port=0, shutdown_grace_s=5),
            extra_handlers={ApiKey.LIST_GROUPS: list_groups},
        )
        async with anyio.create_task_group() as tg:
            node = await tg.start(broker.serve)
            assert (node.node_id, node.host) == (0, "127.0.0.1")
            async with await anyio.connect_tcp("127.0.0.1", node.port) as stream:
                versions = await exchange(stream, RequestHeader(ApiKey.API_VERSIONS, 3, 1, "c"), {})
                advertised = {entry["api_key"] for entry in versions["api_keys"]}
                assert advertised == {*SERVED, ApiKey.LIST_GROUPS}
                groups = await exchange(stream, RequestHeader(ApiKey.LIST_GROUPS, 4, 2, "c"), {})
                assert groups["groups"][0]["group_id"] == "g"
                broker.shutdown()
                with pytest.raises((anyio.EndOfStream, anyio.BrokenResourceError)):
                    await stream.receive()  # the broker closes the idle connection
        statistics = broker.statistics()
    assert seen == [("c", 1)]
    assert (statistics.connections_total, statistics.requests) == (1, 2)
    assert statistics.rejected_connections == statistics.handler_failures == 0


def test_a_response_error_code_is_its_own_else_the_first_nested_one() -> None:
    from headwater.broker._metrics import response_error_code

    assert response_error_code({"error_code": 7, "topics": []}) == 7
    nested = {
        "throttle_time_ms": 0,
        "responses": [
            {"name": "a", "partition_responses": [{"index": 0, "error_code": 0}]},
            {"name": "b", "partition_responses": [{"index": 1, "error_code": 3}]},
        ],
    }
    assert response_error_code(nested) == 3
    assert response_error_code({"topics": [{"partitions": [{"error_code": 0}]}]}) == 0
    assert response_error_code({"records": [b"raw"], "error_code": 0}) == 0
