"""Primitive readers and writers: varints, lengths, zero-copy output."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from headwater.broker._protocol._types import (
    DecodeError,
    Output,
    read_uvarint,
    read_varint,
    read_varlong,
    write_uvarint,
    write_varint,
    write_varlong,
)


@pytest.mark.parametrize(
    ("value", "encoded"),
    [(0, "00"), (1, "01"), (127, "7f"), (128, "8001"), (300, "ac02"), (2**32 - 1, "ffffffff0f")],
)
def test_unsigned_varint_known_answers(value: int, encoded: str) -> None:
    out = bytearray()
    write_uvarint(out, value)
    assert out.hex() == encoded
    assert read_uvarint(memoryview(out), 0) == (value, len(out))


@pytest.mark.parametrize(("value", "encoded"), [(0, "00"), (-1, "01"), (1, "02"), (-64, "7f")])
def test_zigzag_varint_known_answers(value: int, encoded: str) -> None:
    out = bytearray()
    write_varint(out, value)
    assert out.hex() == encoded


@given(st.integers(0, 2**32 - 1))
def test_unsigned_varint_round_trip(value: int) -> None:
    out = bytearray(b"\x99")
    write_uvarint(out, value)
    assert read_uvarint(memoryview(bytes(out)), 1) == (value, len(out))


@given(st.integers(-(2**31), 2**31 - 1), st.integers(-(2**63), 2**63 - 1))
def test_zigzag_round_trips(int32: int, int64: int) -> None:
    out = bytearray()
    write_varint(out, int32)
    write_varlong(out, int64)
    view = memoryview(bytes(out))
    value, pos = read_varint(view, 0)
    assert value == int32
    assert read_varlong(view, pos) == (int64, len(out))


def test_overlong_varints_are_rejected() -> None:
    with pytest.raises(DecodeError, match="longer than 5 bytes"):
        read_uvarint(memoryview(b"\x80" * 6), 0)
    with pytest.raises(DecodeError, match="exceeds 32 bits"):
        read_uvarint(memoryview(b"\xff\xff\xff\xff\x1f"), 0)
    with pytest.raises(DecodeError, match="longer than 10 bytes"):
        read_varlong(memoryview(b"\x80" * 11), 0)
    with pytest.raises(IndexError):  # the entry points turn this into a Malformed...Error
        read_uvarint(memoryview(b"\x80"), 0)


def test_out_of_range_values_are_refused() -> None:
    for write, value in [(write_uvarint, -1), (write_varint, 2**31), (write_varlong, -(2**63) - 1)]:
        with pytest.raises(ValueError, match="out of range"):
            write(bytearray(), value)


def test_output_spills_buffers_in_place_without_copying() -> None:
    out = Output()
    out += b"head"
    big = memoryview(b"x" * 10)
    out.spill(big)
    out += b"mid"
    out.spill(b"tail")
    parts = out.parts()
    assert parts[1] is big
    assert [bytes(p) for p in parts] == [b"head", b"x" * 10, b"mid", b"tail"]
    assert out.encoded_size() == 21
