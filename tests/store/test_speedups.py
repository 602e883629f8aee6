"""The C codec loops (store/_speedups.c) against the Python code they accelerate.

The contract: on any section the compiled decoder either returns exactly what the Python
decoder returns, or None where the Python decoder raises (or cannot be matched in 64
bits); it never raises, crashes or reads outside the section. The compiled encoder
writes exactly the bytes :func:`encode_batch` writes for the same records, or returns
None for input it does not take, which then goes record by record through
:func:`encode_batch`.
"""

from __future__ import annotations

import shutil
import sysconfig
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from headwater.store import _records, encode_transactional_batch, verify_batch
from headwater.store._errors import CorruptRecordError
from headwater.store._records import (
    BATCH_HEADER_SIZE,
    Compression,
    DecimalColumn,
    NewRecord,
    Record,
    RecordColumns,
    TimestampType,
    _decode_section,
    _SectionError,
    decode_columns,
    decode_records,
    encode_batch,
    encode_columns,
    parse_batch_header,
)

compiled = _records._compiled_decode_section
compiled_encode = _records._compiled_encode_section
compiled_columns = _records._compiled_decode_columns

if compiled is None:  # pragma: no cover - only where the extension could not be built
    if shutil.which(sysconfig.get_config_var("CC").split()[0] or "cc"):
        raise AssertionError(
            "headwater.store._speedups is missing although a C compiler is installed: "
            "reinstall the package (make clean test) to build it"
        )
    pytest.skip(
        "built without a C compiler: the Python decoder does everything", allow_module_level=True
    )

NOW = 1_700_000_000_000

records_strategy = st.lists(
    st.builds(
        NewRecord,
        value=st.one_of(st.none(), st.binary(max_size=300)),
        key=st.one_of(st.none(), st.binary(max_size=40)),
        timestamp=st.one_of(st.none(), st.integers(-(1 << 40), 1 << 45)),
        headers=st.one_of(
            st.just(()),
            st.lists(
                st.tuples(st.text(max_size=8), st.one_of(st.none(), st.binary(max_size=20))),
                max_size=3,
            ),
        ),
    ),
    min_size=1,
    max_size=40,
)


def python_decode(section: bytes, count: int, base: int, ts_base: int, mask: int) -> object:
    """Return the Python decoder's records, or the error it raises."""
    try:
        return _decode_section(section, count, base, ts_base, mask)
    except _SectionError as exc:
        return exc


def compiled_decode(section: bytes, count: int, base: int, ts_base: int, mask: int) -> object:
    padded = b"\xee" * 7 + section + b"\xee" * 9  # the section sits inside a larger buffer
    assert compiled is not None
    return compiled(padded, 7, 7 + len(section), count, base, ts_base, mask, Record, ())


def section_of(batch: bytes) -> tuple[bytes, int, int, int]:
    header = parse_batch_header(batch)
    return (
        batch[BATCH_HEADER_SIZE:],
        header.records_count,
        header.base_offset,
        header.base_timestamp,
    )


@settings(max_examples=300, deadline=None)
@given(records=records_strategy, base=st.integers(0, 1 << 62), mask=st.sampled_from([0, -1]))
def test_valid_sections_decode_exactly_as_in_python(
    records: list[NewRecord], base: int, mask: int
) -> None:
    section, count, _, ts_base = section_of(encode_batch(records, now_ms=NOW))
    want = python_decode(section, count, base, ts_base, mask)
    got = compiled_decode(section, count, base, ts_base, mask)
    assert isinstance(want, list)
    assert got == want
    assert all(type(r) is Record for r in got)  # type: ignore[union-attr]


@settings(max_examples=500, deadline=None)
@given(records=records_strategy, data=st.data())
def test_damaged_sections_give_the_same_records_or_none(
    records: list[NewRecord], data: st.DataObject
) -> None:
    section, count, base, ts_base = section_of(encode_batch(records, now_ms=NOW))
    damaged = bytearray(section)
    for _ in range(data.draw(st.integers(1, 4))):
        if data.draw(st.booleans()) and damaged:
            damaged[data.draw(st.integers(0, len(damaged) - 1))] = data.draw(st.integers(0, 255))
        else:
            cut = data.draw(st.integers(0, len(damaged)))
            del damaged[cut : cut + data.draw(st.integers(1, 3))]
    count += data.draw(st.sampled_from([0, 0, 0, -1, 1]))
    want = python_decode(bytes(damaged), count, base, ts_base, -1)
    got = compiled_decode(bytes(damaged), count, base, ts_base, -1)
    if isinstance(want, list):
        assert got in (want, None)
    else:
        assert got is None


@pytest.mark.parametrize(
    ("section", "count"),
    [
        (b"", 1),
        (b"\x0e\x00\x00\x00\x01\x02v\x00", -1),  # negative count
        (b"\x0e\x00\x00\x00\x01\x02v\x00", 2),  # more records claimed than held
        (b"\x0e\x00" + b"\xff" * 9 + b"\x7f", 1),  # a timestamp delta beyond 64 bits
        (b"\x0e\x00\x00\x00\x01\x02\xff\xfe\x00", 1),  # header key that is not UTF-8
    ],
)
def test_inconsistent_sections_give_none(section: bytes, count: int) -> None:
    assert compiled_decode(section, count, 0, NOW, -1) is None


def test_offsets_and_timestamps_that_overflow_64_bits_fall_back_to_python() -> None:
    two = [NewRecord(b"v", timestamp=10), NewRecord(b"w", timestamp=10)]
    section, count, _, _ = section_of(encode_batch(two))
    base = (1 << 63) - 1
    assert compiled_decode(section, count, base, 0, -1) is None  # the second offset overflows
    assert compiled_decode(section, count, 0, 1 << 64, -1) is None  # base beyond int64
    assert _decode_section(section, count, base, 0, -1)[1].offset == base + 1  # Python is exact


def test_decode_records_reports_errors_from_the_python_decoder() -> None:
    batch = bytearray(encode_batch([NewRecord(b"v")], now_ms=NOW))
    batch[-3] = 0x7E  # the value's length claims far more than the record holds
    with pytest.raises(CorruptRecordError, match="record 0"):
        _records.decode_records(bytes(batch), verify=False)


# -- encoding by columns -------------------------------------------------------------------

column_records = st.integers(1, 40).flatmap(
    lambda n: st.fixed_dictionaries(
        {
            "values": st.lists(
                st.one_of(st.none(), st.binary(max_size=300)), min_size=n, max_size=n
            ),
            "keys": st.one_of(
                st.none(),
                st.lists(st.one_of(st.none(), st.binary(max_size=40)), min_size=n, max_size=n),
            ),
            "timestamps": st.one_of(
                st.none(), st.lists(st.integers(-(1 << 40), 1 << 45), min_size=n, max_size=n)
            ),
            "header_columns": st.lists(
                st.tuples(
                    st.text(max_size=10),
                    st.one_of(
                        st.lists(
                            st.one_of(st.none(), st.binary(max_size=30)), min_size=n, max_size=n
                        ),
                        st.builds(
                            DecimalColumn,
                            st.binary(max_size=12),
                            st.lists(
                                st.one_of(st.integers(0, 10**6), st.integers(-(2**70), 2**70)),
                                min_size=n,
                                max_size=n,
                            ),
                            st.one_of(st.just(0), st.integers(-(2**64), 2**64)),
                        ),
                    ),
                ),
                max_size=2,
            ),
            "headers": st.one_of(
                st.none(),
                st.lists(
                    st.lists(
                        st.tuples(st.text(max_size=6), st.one_of(st.none(), st.binary(max_size=9))),
                        max_size=2,
                    ),
                    min_size=n,
                    max_size=n,
                ),
            ),
        }
    )
)


def as_new_records(columns: dict[str, Any]) -> list[NewRecord]:
    """The same records as encode_batch takes them."""
    values, keys, stamps = columns["values"], columns["keys"], columns["timestamps"]
    return [
        NewRecord(
            value,
            None if keys is None else keys[i],
            NOW if stamps is None else stamps[i],
            [
                (name, column.expand()[i] if isinstance(column, DecimalColumn) else column[i])
                for name, column in columns["header_columns"]
            ]
            + list(() if columns["headers"] is None else columns["headers"][i]),
        )
        for i, value in enumerate(values)
    ]


@settings(max_examples=300, deadline=None)
@given(columns=column_records, base=st.integers(0, 1 << 40))
def test_columns_encode_byte_for_byte_as_encode_batch(columns: dict[str, Any], base: int) -> None:
    batch = encode_columns(**columns, base_offset=base, now_ms=NOW)
    records = as_new_records(columns)
    assert batch == encode_batch(records, base_offset=base, now_ms=NOW)
    assert decode_records(batch) == [
        Record(base + i, r.timestamp, r.key, r.value, tuple(r.headers))
        for i, r in enumerate(records)
    ]


@settings(max_examples=100, deadline=None)
@given(
    columns=column_records,
    producer=st.tuples(
        st.integers(0, 2**63 - 1), st.integers(0, 2**15 - 1), st.integers(0, 2**31 - 1)
    ),
)
def test_a_producers_columns_encode_as_its_transactional_batch(
    columns: dict[str, Any], producer: tuple[int, int, int]
) -> None:
    producer_id, producer_epoch, base_sequence = producer
    stamp = {"producer_id": producer_id, "producer_epoch": producer_epoch}
    batch = encode_columns(
        **columns, now_ms=NOW, **stamp, base_sequence=base_sequence, transactional=True
    )
    records = as_new_records(columns)
    assert batch == encode_transactional_batch(
        records, **stamp, base_sequence=base_sequence, now_ms=NOW
    )
    header = verify_batch(batch)
    assert (header.producer_id, header.producer_epoch, header.base_sequence) == producer
    assert header.is_transactional and not header.is_control
    plain = encode_columns(**columns, now_ms=NOW, **stamp, base_sequence=base_sequence)
    assert not verify_batch(plain).is_transactional


def test_unusual_column_items_take_the_record_by_record_encoder() -> None:
    assert compiled_encode is not None
    assert compiled_encode([bytearray(b"v")], None, None, 0, (), None) is None
    assert compiled_encode([b"v"], None, None, 0, (), [[("\udc80", b"")]]) is None
    batch = encode_columns([bytearray(b"v"), b"w"], now_ms=NOW)  # encode_batch takes it
    assert [r.value for r in decode_records(batch)] == [b"v", b"w"]
    with pytest.raises(UnicodeEncodeError):
        encode_columns([b"v"], headers=[[("\udc80", b"")]], now_ms=NOW)


def test_decimal_columns_write_prefix_and_digits() -> None:
    in_64_bits = [0, 7, 10, 99, 100, -1, -45, 2**63 - 1, -(2**63)]
    assert compiled_encode is not None
    assert compiled_encode([b"v"] * 9, None, None, 0, ((b"s", (b"t/", in_64_bits, 0)),), None)
    for numbers in (in_64_bits, [*in_64_bits, 2**63, 10**30]):  # C, then Python
        batch = encode_columns(
            [b"v"] * len(numbers), header_columns=[("src", DecimalColumn(b"t/3/", numbers))]
        )
        headers = [r.headers for r in decode_records(batch)]
        assert headers == [(("src", b"t/3/%d" % n),) for n in numbers]


def test_many_header_columns_take_the_record_by_record_encoder() -> None:
    assert compiled_encode is not None
    many = tuple((b"h%d" % i, [b"v"]) for i in range(17))
    assert compiled_encode([b"v"], None, None, 0, many[:16], None) is not None
    assert compiled_encode([b"v"], None, None, 0, many, None) is None
    columns = [(f"h{i}", [b"%d" % i]) for i in range(17)]
    [record] = decode_records(encode_columns([b"v"], header_columns=columns, now_ms=NOW))
    assert record.headers == tuple((name, value[0]) for name, value in columns)


def test_columns_are_checked() -> None:
    with pytest.raises(ValueError, match="at least one record"):
        encode_columns([])
    with pytest.raises(ValueError, match="1 items for 2 values"):
        encode_columns([b"a", b"b"], keys=[b"k"])
    with pytest.raises(ValueError, match="1 items for 2 values"):
        encode_columns([b"a", b"b"], header_columns=[("h", [b"x"])])
    with pytest.raises(ValueError, match=r"within 2\*\*63 ms"):
        encode_columns([b"a", b"b"], timestamps=[0, 1 << 63])
    with pytest.raises(ValueError, match="out of range"):
        encode_columns([b"a", b"b"], timestamps=[1 << 63, 1 << 63])


# -- decoding into columns ------------------------------------------------------------------


@st.composite
def logs(draw: st.DrawFn) -> tuple[bytes, list[Record]]:
    """Whole batches as a log holds them (offsets rising, maybe with gaps, some compressed
    or stamped with log-append time), and the records they hold."""
    data, expected = [], []
    offset = draw(st.integers(0, 1 << 40))
    for _ in range(draw(st.integers(1, 4))):
        records = draw(records_strategy)
        offset += draw(st.sampled_from([0, 0, 0, 3]))  # a gap, as compaction leaves
        log_append = draw(st.booleans())
        batch = encode_batch(
            records,
            base_offset=offset,
            now_ms=NOW,
            compression=draw(
                st.sampled_from([Compression.NONE, Compression.NONE, Compression.GZIP])
            ),
            timestamp_type=TimestampType.LOG_APPEND_TIME
            if log_append
            else TimestampType.CREATE_TIME,
        )
        data.append(batch)
        expected.extend(decode_records(batch))
        offset += len(records)
    return b"".join(data), expected


@settings(max_examples=300, deadline=None)
@given(log=logs(), data=st.data(), compiled_columns=st.booleans())
def test_columns_hold_the_records_from_start_offset(
    log: tuple[bytes, list[Record]], data: st.DataObject, compiled_columns: bool
) -> None:
    raw, records = log
    start = data.draw(st.integers(records[0].offset - 2, records[-1].offset + 2))
    expected = [r for r in records if r.offset >= start]
    saved = _records._compiled_decode_columns
    if not compiled_columns:
        _records._compiled_decode_columns = None  # the Python path, as without a compiler
    try:
        columns = decode_columns(raw, start)
    finally:
        _records._compiled_decode_columns = saved
    assert len(columns) == len(expected)
    assert list(columns.offsets) == [r.offset for r in expected]
    assert [columns[i] for i in range(len(columns))] == expected
    assert columns.timestamps == [r.timestamp for r in expected]
    assert columns.values == [r.value for r in expected]
    assert columns.keys == [r.key for r in expected]
    assert columns.headers == [r.headers for r in expected]
    consecutive = [r.offset for r in expected] == list(range(start, start + len(expected)))
    if consecutive and expected:
        assert isinstance(columns.offsets, range)
    assert RecordColumns.of(expected).values == columns.values


def test_compiled_columns_need_consecutive_offsets_and_append_nothing_otherwise() -> None:
    assert compiled_columns is not None
    batch = bytearray(encode_batch([NewRecord(b"a"), NewRecord(b"b")], now_ms=NOW))
    lists: tuple[list[Any], ...] = ([7], [], [], [])
    section_end = len(batch)
    args = (0, NOW, -1, (), *lists)
    assert compiled_columns(bytes(batch), BATCH_HEADER_SIZE, section_end, 2, *args) is True
    assert lists == ([7, NOW, NOW], [None, None], [b"a", b"b"], [(), ()])
    gap = with_offset_delta(bytes(batch), record=1, delta=5)
    assert compiled_columns(gap, BATCH_HEADER_SIZE, section_end, 2, *args) is False
    assert compiled_columns(gap[:-1], BATCH_HEADER_SIZE, section_end - 1, 2, *args) is None
    assert lists == ([7, NOW, NOW], [None, None], [b"a", b"b"], [(), ()])  # unchanged


def with_offset_delta(batch: bytes, record: int, delta: int) -> bytes:
    """Return ``batch`` with record ``record``'s one-byte offset delta set to ``delta``."""
    section = bytearray(batch[BATCH_HEADER_SIZE:])
    position = 0
    for _ in range(record):
        position += 1 + section[position] // 2
    section[position + 3] = delta * 2  # length, attributes, timestamp delta, offset delta
    return batch[:BATCH_HEADER_SIZE] + bytes(section)


def test_header_names_in_the_same_place_are_decoded_once() -> None:
    records = [
        NewRecord(b"a", headers=[("headwater.source", b"t/0/1"), ("x", b"1")]),
        NewRecord(b"b", headers=[("headwater.source", b"t/0/2"), ("y", b"2")]),
        NewRecord(b"c", headers=[("héader", b"3")]),
        NewRecord(b"d", headers=[("héader", None), ("y", b"4")]),
    ]
    columns = decode_columns(encode_batch(records, now_ms=NOW))
    assert columns.headers == [tuple(r.headers) for r in records]
    (source_1, x), (source_2, y), (name_3,), (name_4, y_4) = columns.headers
    assert source_1[0] is source_2[0] and name_3[0] is name_4[0]  # one str each, shared
    assert x[0] == "x" and y[0] == "y" and y_4[0] == "y"
