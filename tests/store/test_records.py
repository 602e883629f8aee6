"""Tests for store/_records.py: the record batch v2 codec.

kafka-python's implementation of the format serves as an independent oracle, in both
directions; the corruption tests cut, flip and falsify bytes and expect CorruptRecordError
and nothing else.
"""

from __future__ import annotations

import contextlib
import struct
import warnings
from collections.abc import Sequence

import pytest
from crc32c import crc32c
from hypothesis import given, settings
from hypothesis import strategies as st

from headwater.store._errors import CorruptRecordError, UnsupportedCompressionError
from headwater.store._records import (
    _TABLE_SIZE,
    _VALUE_ONLY_MAX,
    BATCH_HEADER_SIZE,
    BATCH_OVERHEAD,
    BatchHeader,
    Compression,
    NewRecord,
    Record,
    TimestampType,
    _column_parts,
    _general_parts,
    _value_only_parts,
    decode_records,
    encode_batch,
    parse_batch_header,
    set_base_offset,
    stamp_log_append_time,
    verify_batch,
)

with warnings.catch_warnings():
    # Importing kafka-python loads its protocol schemas with a deprecated importlib API.
    warnings.simplefilter("ignore", DeprecationWarning)
    from kafka.record.default_records import DefaultRecordBatch, DefaultRecordBatchBuilder
    from kafka.record.memory_records import MemoryRecords

NOW = 1_700_000_000_000
Headers = Sequence[tuple[str, bytes | None]]


# -- helpers ------------------------------------------------------------------------------


def fix_crc(buf: bytearray, pos: int = 0) -> None:
    """Recompute the CRC of the batch at ``pos`` after a test edited it."""
    (length,) = struct.unpack_from(">i", buf, pos + 8)
    struct.pack_into(">I", buf, pos + 17, crc32c(bytes(buf[pos + 21 : pos + 12 + length])))


def with_section(batch: bytes, section: bytes, count: int | None = None) -> bytes:
    """Return ``batch`` with another records section (and count), length and CRC fixed."""
    buf = bytearray(batch[:BATCH_HEADER_SIZE] + section)
    struct.pack_into(">i", buf, 8, len(buf) - BATCH_OVERHEAD)
    if count is not None:
        struct.pack_into(">i", buf, 57, count)
    fix_crc(buf)
    return bytes(buf)


def expected(
    records: Sequence[NewRecord],
    base_offset: int = 0,
    now_ms: int = NOW,
    log_append: bool = False,
) -> list[Record]:
    """Return what decoding a batch of ``records`` must give."""
    return [
        Record(
            base_offset + i,
            now_ms if log_append or r.timestamp is None else r.timestamp,
            r.key,
            r.value,
            tuple(r.headers),
        )
        for i, r in enumerate(records)
    ]


def kafka_python_batch(
    records: Sequence[NewRecord],
    codec: Compression = Compression.NONE,
    producer: tuple[int, int, int] = (-1, -1, -1),
    transactional: bool = False,
) -> bytes:
    """Encode with kafka-python (base offset 0, leader epoch 0, as its producer does)."""
    builder = DefaultRecordBatchBuilder(
        magic=2,
        compression_type=codec,
        is_transactional=transactional,
        producer_id=producer[0],
        producer_epoch=producer[1],
        base_sequence=producer[2],
        batch_size=1 << 30,
    )
    for i, r in enumerate(records):
        builder.append(i, timestamp=r.timestamp, key=r.key, value=r.value, headers=list(r.headers))
    return bytes(builder.build())


def read_with_kafka_python(batch: bytes) -> tuple[DefaultRecordBatch, list[Record]]:
    """Decode with kafka-python, checking its CRC; return the batch and its records."""
    memory = MemoryRecords(batch)
    kbatch = memory.next_batch()
    assert memory.next_batch() is None
    assert kbatch.validate_crc  # a property in kafka-python
    records = [Record(r.offset, r.timestamp, r.key, r.value, tuple(r.headers)) for r in kbatch]
    return kbatch, records


# A mix that exercises every layout: value-only, null keys and values, headers (null
# values too), non-ASCII header keys, empty keys and values, explicit and missing timestamps.
MIXED = [
    NewRecord(b"v" * 100),
    NewRecord(None, key=b"tombstone", timestamp=NOW - 5),
    NewRecord(b"", key=b"", timestamp=NOW + 3),
    NewRecord(b"x" * 300, key=b"k" * 70, headers=[("trace", b"abc"), ("null", None)]),
    NewRecord(b"y", headers=[("ключ", b""), ("e", b"\x00" * 200)], timestamp=NOW - 1000),
    NewRecord(b"z" * 20_000, key=None, timestamp=NOW + 10**9),
]

# -- round trips -----------------------------------------------------------------------------

header_values = st.one_of(st.none(), st.binary(max_size=20))
headers_strategy = st.lists(st.tuples(st.text(max_size=8), header_values), max_size=3)
records_strategy = st.lists(
    st.builds(
        NewRecord,
        value=st.one_of(st.none(), st.binary(max_size=150)),
        key=st.one_of(st.none(), st.binary(max_size=20)),
        timestamp=st.one_of(st.none(), st.integers(-1, 1 << 45)),
        headers=st.one_of(st.just(()), headers_strategy),
    ),
    min_size=1,
    max_size=30,
)


@settings(max_examples=150, deadline=None)
@given(
    records=records_strategy,
    codec=st.sampled_from(Compression),
    log_append=st.booleans(),
    producer=st.tuples(
        st.integers(-1, (1 << 63) - 1), st.integers(-1, (1 << 15) - 1), st.integers(-1, 1 << 30)
    ),
    placement=st.tuples(st.integers(0, 1 << 62), st.integers(-1, (1 << 31) - 1)),
)
def test_round_trip(
    records: list[NewRecord],
    codec: Compression,
    log_append: bool,
    producer: tuple[int, int, int],
    placement: tuple[int, int],
) -> None:
    base_offset, leader_epoch = placement
    timestamp_type = TimestampType(log_append)
    batch = encode_batch(
        records,
        base_offset=base_offset,
        now_ms=NOW,
        compression=codec,
        timestamp_type=timestamp_type,
        producer_id=producer[0],
        producer_epoch=producer[1],
        base_sequence=producer[2],
        partition_leader_epoch=leader_epoch,
    )
    header = verify_batch(batch)
    stamps = [NOW if r.timestamp is None else r.timestamp for r in records]
    assert header.size == len(batch)
    assert header.base_offset == base_offset
    assert header.partition_leader_epoch == leader_epoch
    assert header.compression == codec
    assert header.timestamp_type == timestamp_type
    assert (header.producer_id, header.producer_epoch, header.base_sequence) == producer
    assert header.records_count == len(records) == header.last_offset_delta + 1
    assert header.last_offset == base_offset + len(records) - 1 == header.next_offset - 1
    assert header.base_timestamp == stamps[0]
    assert header.max_timestamp == (NOW if log_append else max(stamps))
    assert not header.is_transactional and not header.is_control
    assert decode_records(batch) == expected(records, base_offset, log_append=log_append)


@settings(max_examples=100, deadline=None)
@given(records=records_strategy)
def test_fast_layouts_match_the_general_encoder(records: list[NewRecord]) -> None:
    values, keys, stamps, headers = zip(*records, strict=True)
    filled = [NOW if t is None else t for t in stamps]
    deltas = [t - filled[0] for t in filled]
    general = b"".join(_general_parts(values, keys, deltas, headers))
    columns = _column_parts(values, keys, deltas, headers, len(records))
    if columns is not None:
        assert b"".join(columns) == general
    if not any(deltas) and not any(headers) and keys.count(None) == len(keys):
        value_only = _value_only_parts(values, len(records))
        assert value_only is None or b"".join(value_only) == general


@pytest.mark.parametrize(
    ("count", "size"),
    [
        (1, 0),
        (64, 10),  # offset deltas one varint byte long...
        (65, 10),  # ...and two
        (_TABLE_SIZE, 3),  # the largest batch the table layouts take
        (_TABLE_SIZE + 1, 3),  # one more: the general encoder
        (3, _VALUE_ONLY_MAX - 1),
        (3, _VALUE_ONLY_MAX),
    ],
)
def test_layout_boundaries(count: int, size: int) -> None:
    records = [NewRecord(bytes([i % 256]) * size) for i in range(count)]
    batch = encode_batch(records, now_ms=NOW)
    assert decode_records(batch) == expected(records)
    assert read_with_kafka_python(batch)[1] == expected(records)


def test_decoding_accepts_bytearray_memoryview_and_an_offset_in_a_buffer() -> None:
    first = encode_batch(MIXED, now_ms=NOW, base_offset=100)
    second = encode_batch(MIXED[:2], now_ms=NOW, base_offset=106, compression=Compression.GZIP)
    buf = b"\xff" * 7 + first + second
    want = expected(MIXED[:2], base_offset=106)
    for view in (buf, bytearray(buf), memoryview(buf)):
        assert decode_records(view, 7) == expected(MIXED, base_offset=100)
        assert decode_records(view, 7 + len(first)) == want
        assert all(type(r.value) in (bytes, type(None)) for r in decode_records(view, 7))


def test_records_without_timestamps_get_now_ms() -> None:
    batch = encode_batch([NewRecord(b"a"), NewRecord(b"b", timestamp=5)], now_ms=NOW)
    assert [r.timestamp for r in decode_records(batch)] == [NOW, 5]
    header = parse_batch_header(batch)
    assert (header.base_timestamp, header.max_timestamp) == (NOW, NOW)


def test_encode_rejects_programmer_errors() -> None:
    with pytest.raises(ValueError, match="at least one record"):
        encode_batch([])
    with pytest.raises(ValueError, match="out of range"):
        encode_batch([NewRecord(b"x")], producer_epoch=1 << 15)
    with pytest.raises(ValueError, match="2\\*\\*63"):
        encode_batch([NewRecord(b"x", timestamp=-(1 << 62)), NewRecord(b"y", timestamp=1 << 62)])


# -- kafka-python as an oracle ------------------------------------------------------------


@pytest.mark.parametrize("codec", list(Compression))
def test_kafka_python_batches_decode(codec: Compression) -> None:
    records = [
        r._replace(timestamp=NOW + i if r.timestamp is None else r.timestamp)
        for i, r in enumerate(MIXED)
    ]
    records += [NewRecord(b"event %d " % i * 10, timestamp=NOW + i) for i in range(200)]
    batch = kafka_python_batch(records, codec, producer=(42, 3, 17))
    header = verify_batch(batch)
    assert header.compression == codec
    assert (header.producer_id, header.producer_epoch, header.base_sequence) == (42, 3, 17)
    assert decode_records(batch) == expected(records)


@pytest.mark.parametrize("codec", list(Compression))
@pytest.mark.parametrize("log_append", [False, True])
def test_our_batches_decode_with_kafka_python(codec: Compression, log_append: bool) -> None:
    records = MIXED + [NewRecord(b"event %d " % i * 10, key=b"%d" % i) for i in range(200)]
    batch = encode_batch(
        records,
        base_offset=1000,
        now_ms=NOW,
        compression=codec,
        timestamp_type=TimestampType(log_append),
        producer_id=9,
        producer_epoch=2,
        base_sequence=77,
    )
    kbatch, decoded = read_with_kafka_python(batch)
    assert kbatch.compression_type == codec
    assert kbatch.timestamp_type == int(log_append)
    assert (kbatch.producer_id, kbatch.producer_epoch, kbatch.base_sequence) == (9, 2, 77)
    assert (kbatch.base_offset, kbatch.last_offset_delta) == (1000, len(records) - 1)
    assert decoded == expected(records, base_offset=1000, log_append=log_append)


# snappy (xerial framing) and zstd (level 3) are deterministic and framed alike by both.
@pytest.mark.parametrize("codec", [Compression.NONE, Compression.SNAPPY, Compression.ZSTD])
def test_byte_for_byte_equal_to_kafka_python(codec: Compression) -> None:
    records = [
        r._replace(timestamp=NOW + 7 * i if r.timestamp is None else r.timestamp)
        for i, r in enumerate(MIXED)
    ]
    records += [NewRecord(b"event %d " % i * 10, timestamp=NOW - i) for i in range(300)]
    for batch_records in (records, records[6:], records[:1]):
        ours = encode_batch(
            batch_records,
            compression=codec,
            partition_leader_epoch=0,
            producer_id=5,
            producer_epoch=1,
            base_sequence=10,
        )
        assert ours == kafka_python_batch(batch_records, codec, producer=(5, 1, 10))


@pytest.mark.parametrize("codec", [Compression.GZIP, Compression.LZ4])
def test_same_records_section_as_kafka_python(codec: Compression) -> None:
    # gzip (timestamp in its header) and lz4 (python-lz4 stores the content size) frame
    # differently; the header and the decompressed records section must still agree.
    records = [NewRecord(b"event %d " % i * 10, key=b"k", timestamp=NOW + i) for i in range(300)]
    ours = encode_batch(records, compression=codec, partition_leader_epoch=0)
    theirs = kafka_python_batch(records, codec)
    assert parse_batch_header(ours)._replace(crc=0, batch_length=0) == parse_batch_header(
        theirs
    )._replace(crc=0, batch_length=0)
    uncompressed = encode_batch(records, partition_leader_epoch=0)
    assert decode_records(ours) == decode_records(theirs) == decode_records(uncompressed)


def test_transactional_and_control_bits_are_readable() -> None:
    batch = bytearray(
        kafka_python_batch([NewRecord(b"x", timestamp=1)], transactional=True, producer=(1, 0, 0))
    )
    header = verify_batch(batch)
    assert header.is_transactional and not header.is_control
    struct.pack_into(">h", batch, 21, header.attributes | 0x20)
    fix_crc(batch)
    header = verify_batch(batch)
    assert header.is_transactional and header.is_control
    assert MemoryRecords(bytes(batch)).next_batch().is_control_batch


def test_unknown_codec_is_unsupported() -> None:
    batch = bytearray(encode_batch([NewRecord(b"x")]))
    struct.pack_into(">h", batch, 21, 5)
    fix_crc(batch)
    header = verify_batch(batch)
    with pytest.raises(UnsupportedCompressionError):
        _ = header.compression
    with pytest.raises(UnsupportedCompressionError):
        decode_records(batch)


# -- in-place edits -------------------------------------------------------------------------


def test_set_base_offset_keeps_the_crc() -> None:
    first = encode_batch(MIXED, now_ms=NOW)
    buf = bytearray(first + encode_batch(MIXED[:2], now_ms=NOW, compression=Compression.LZ4))
    set_base_offset(buf, 0, 500)
    set_base_offset(memoryview(buf), len(first), 506)
    assert verify_batch(buf).crc == parse_batch_header(first).crc
    assert decode_records(buf) == expected(MIXED, base_offset=500)
    assert decode_records(buf, len(first)) == expected(MIXED[:2], base_offset=506)
    assert read_with_kafka_python(bytes(buf[: len(first)]))[1] == expected(MIXED, 500)
    with pytest.raises(CorruptRecordError):
        set_base_offset(buf, 3, 1)


@pytest.mark.parametrize("codec", [Compression.NONE, Compression.ZSTD])
def test_stamp_log_append_time_recomputes_the_crc(codec: Compression) -> None:
    buf = bytearray(b"\x00" * 5 + encode_batch(MIXED, now_ms=NOW, compression=codec))
    stamp_log_append_time(buf, 5, NOW + 60_000)
    header = verify_batch(buf, 5)
    assert header.timestamp_type == TimestampType.LOG_APPEND_TIME
    assert header.max_timestamp == NOW + 60_000
    assert header.compression == codec
    want = expected(MIXED, now_ms=NOW + 60_000, log_append=True)
    assert decode_records(buf, 5) == want
    assert read_with_kafka_python(bytes(buf[5:]))[1] == want


def test_stamping_never_launders_a_corrupt_batch() -> None:
    buf = bytearray(encode_batch(MIXED, now_ms=NOW))
    buf[100] ^= 0x40
    with pytest.raises(CorruptRecordError, match="CRC"):
        stamp_log_append_time(buf, 0, NOW)


# -- corruption ------------------------------------------------------------------------------

SMALL = [
    NewRecord(b"hello", key=b"k1", timestamp=NOW),
    NewRecord(None, key=b"k2", timestamp=NOW + 1, headers=[("h", b"v"), ("n", None)]),
    NewRecord(b"world" * 30, timestamp=NOW - 2),
]


@pytest.mark.parametrize("codec", list(Compression))
def test_truncation_at_every_byte_is_corrupt(codec: Compression) -> None:
    batch = encode_batch(SMALL, now_ms=NOW, compression=codec)
    for end in range(len(batch)):
        for verify in (True, False):
            with pytest.raises(CorruptRecordError):
                decode_records(batch[:end], verify=verify)


def test_records_section_cut_at_every_byte_is_corrupt() -> None:
    # The header is made consistent with the cut (length, CRC), so only the record decoder
    # can notice: it must, at every byte, and name a position inside the section.
    batch = encode_batch(SMALL, now_ms=NOW)
    section = batch[BATCH_HEADER_SIZE:]
    for end in range(len(section)):
        cut = with_section(batch, section[:end])
        with pytest.raises(CorruptRecordError) as info:
            decode_records(cut)
        assert info.value.position is not None
        assert BATCH_HEADER_SIZE <= info.value.position <= len(cut)


@pytest.mark.parametrize(
    "codec", [Compression.GZIP, Compression.SNAPPY, Compression.LZ4, Compression.ZSTD]
)
def test_compressed_section_cut_at_every_record_byte_is_corrupt(codec: Compression) -> None:
    from headwater.store._compression import compress

    batch = encode_batch(SMALL, now_ms=NOW, compression=codec)
    section = encode_batch(SMALL, now_ms=NOW)[BATCH_HEADER_SIZE:]
    for end in range(len(section)):
        cut = b"\x00" * 3 + with_section(batch, compress(codec, section[:end]))
        with pytest.raises(CorruptRecordError, match="decompressed records") as info:
            decode_records(cut, 3)
        assert info.value.position == 3


def test_every_bit_flip_under_the_crc_is_caught() -> None:
    batch = encode_batch(SMALL, now_ms=NOW)
    for index in range(len(batch)):
        if index < 8 or 12 <= index < 16:
            continue  # base offset and leader epoch: outside the CRC by design
        for bit in range(8):
            flipped = bytearray(batch)
            flipped[index] ^= 1 << bit
            with pytest.raises(CorruptRecordError):
                decode_records(flipped)


@pytest.mark.parametrize("codec", [Compression.GZIP, Compression.LZ4])
def test_corrupt_compressed_payload_names_the_batch(codec: Compression) -> None:
    batch = bytearray(encode_batch(SMALL * 20, now_ms=NOW, compression=codec))
    batch[BATCH_HEADER_SIZE + 12] ^= 0xFF
    batch[-8:] = b"\xee" * 8
    fix_crc(batch)
    buf = b"\x00" * 40 + batch
    with pytest.raises(CorruptRecordError, match=codec.name.lower()) as info:
        decode_records(buf, 40, verify=False)
    assert info.value.position == 40


def varint(value: int) -> bytes:
    zigzag = (value << 1) ^ (value >> 63)
    out = bytearray()
    while zigzag > 0x7F:
        out.append(zigzag & 0x7F | 0x80)
        zigzag >>= 7
    out.append(zigzag)
    return bytes(out)


def record(*fields: bytes, length_delta: int = 0) -> bytes:
    body = b"".join(fields)
    return varint(len(body) + length_delta) + body


GOOD = [
    b"\x00",
    varint(0),
    varint(0),
    varint(1),
    b"k",
    varint(2),
    b"vv",
    varint(1),
    varint(1),
    b"h",
    varint(-1),
]


@pytest.mark.parametrize(
    ("section", "reason"),
    [
        (record(*GOOD, length_delta=1), "record 0"),
        (record(*GOOD, length_delta=-1), "record 0"),
        (record(*GOOD[:3], varint(5), *GOOD[4:]), "record 0"),  # key length too long
        (record(*GOOD[:3], varint(-2), *GOOD[4:]), "key length -2"),
        (record(*GOOD[:5], varint(3), *GOOD[6:]), "record 0"),  # value length too long
        (record(*GOOD[:5], varint(-5), *GOOD[6:]), "value length -5"),
        (record(*GOOD[:5], varint(-300), *GOOD[6:]), "value length -300"),
        (record(*GOOD[:7], varint(1 << 20), *GOOD[8:]), "header count"),
        (record(*GOOD[:7], varint(-1), *GOOD[8:]), "header count"),
        (record(*GOOD[:8], varint(9), *GOOD[9:]), "header key length"),
        (record(*GOOD[:8], varint(1), b"\xff", varint(-1)), "UTF-8"),
        (record(*GOOD[:10], varint(40)), "header value length"),
        (record(b"\x00", b"\xff" * 11, *GOOD[2:]), "longer than 10 bytes"),
        (record(*GOOD) + b"\x00", "follow the last"),
        (record(*GOOD) + record(*GOOD), "follow the last"),
        (record(*GOOD)[:-1], "truncated"),
        (b"", "holds 0"),
    ],
)
def test_lying_fields_inside_records_are_caught_without_the_crc(
    section: bytes, reason: str
) -> None:
    batch = with_section(encode_batch([NewRecord(b"x")]), section)
    for verify in (True, False):
        with pytest.raises(CorruptRecordError, match=reason):
            decode_records(batch, verify=verify)
    assert decode_records(with_section(batch, record(*GOOD)))[0].headers == (("h", None),)


@pytest.mark.parametrize("delta", [-1, 1, 1000])
def test_records_count_must_match(delta: int) -> None:
    batch = encode_batch(SMALL, now_ms=NOW)
    for codec in (Compression.NONE, Compression.GZIP):
        batch = encode_batch(SMALL, now_ms=NOW, compression=codec)
        lying = with_section(batch, batch[BATCH_HEADER_SIZE:], count=len(SMALL) + delta)
        with pytest.raises(CorruptRecordError):
            decode_records(lying, verify=False)
        with pytest.raises(CorruptRecordError):
            decode_records(lying)  # also caught by verify when count > last_offset_delta + 1


@settings(max_examples=200, deadline=None)
@given(data=st.data(), codec=st.sampled_from([Compression.NONE, Compression.SNAPPY]))
def test_random_damage_raises_only_corrupt_record_error(
    data: st.DataObject, codec: Compression
) -> None:
    batch = bytearray(encode_batch(SMALL, now_ms=NOW, compression=codec))
    for _ in range(data.draw(st.integers(1, 4))):
        index = data.draw(st.integers(BATCH_HEADER_SIZE - 4, len(batch) - 1))
        batch[index] = data.draw(st.integers(0, 255))
    with contextlib.suppress(CorruptRecordError):
        decode_records(batch, verify=False)


def test_header_checks() -> None:
    batch = encode_batch(SMALL, now_ms=NOW)
    bad_magic = bytearray(batch)
    bad_magic[16] = 1
    with pytest.raises(CorruptRecordError, match="magic is 1"):
        parse_batch_header(bad_magic)
    short = bytearray(batch)
    struct.pack_into(">i", short, 8, 48)
    with pytest.raises(CorruptRecordError, match="smaller than a header"):
        parse_batch_header(short)
    with pytest.raises(CorruptRecordError, match="runs past the end") as info:
        parse_batch_header(b"\x00" * 10 + batch[:-1], 10)
    assert info.value.position == 10
    with pytest.raises(CorruptRecordError, match="needs 61 bytes, 60 remain"):
        parse_batch_header(batch[:60])
    with pytest.raises(CorruptRecordError, match="CRC-32C mismatch"):
        verify_batch(batch[:-1] + bytes([batch[-1] ^ 1]))
    header = parse_batch_header(batch)
    assert isinstance(header, BatchHeader)
    assert header.magic == 2 and header.batch_length == len(batch) - BATCH_OVERHEAD


def overlong(value: int) -> bytes:
    """Return a valid but needlessly long (three-byte) varint, as some encoders write."""
    zigzag = (value << 1) ^ (value >> 63)
    return bytes([zigzag & 0x7F | 0x80, (zigzag >> 7) & 0x7F | 0x80, zigzag >> 14])


def test_overlong_varints_decode() -> None:
    fields = [b"\x00", overlong(-3), overlong(0), overlong(-1), overlong(2), b"vv"]
    fields += [overlong(2), overlong(1), b"h", overlong(-1), overlong(1), b"i", overlong(0)]
    batch = with_section(encode_batch([NewRecord(b"x")], now_ms=NOW), record(*fields))
    assert decode_records(batch) == [Record(0, NOW - 3, None, b"vv", (("h", None), ("i", b"")))]
