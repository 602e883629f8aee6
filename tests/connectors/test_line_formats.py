"""CSV lines as record values: a chunk read by one reader gives exactly what reading its
lines one by one gives (values, malformed lines, their order and reasons)."""

from __future__ import annotations

import math

import orjson
from hypothesis import given
from hypothesis import strategies as st

from headwater.connectors._line_formats import (
    LineFormat,
    _parse_csv_one_by_one,
    parse_lines,
)

#: Lines of a CSV chunk: fields with commas, quotes, carriage returns, blanks, and now
#: and then a byte that is not UTF-8.
fields = st.text(alphabet=st.sampled_from('ab,"\r é'), max_size=6)
lines = st.lists(
    st.lists(fields, min_size=1, max_size=4).map(lambda f: ",".join(f).encode())
    | st.sampled_from([b"", b"  ", b"\xff,1", b'"open,1', b'a,"b""c"']),
    max_size=12,
)


@given(
    lines=lines,
    first_line=st.sampled_from([1, 7]),
    header=st.none() | st.just(["a", "b"]),
    limit=st.sampled_from([math.inf, 12]),
)
def test_a_chunk_read_at_once_is_what_its_lines_read_alone_give(
    lines: list[bytes], first_line: int, header: list[str] | None, limit: float
) -> None:
    limit_bytes = None if limit == math.inf else int(limit)
    got = parse_lines(LineFormat.CSV, lines, first_line, header, limit_bytes)
    assert got == _parse_csv_one_by_one(lines, first_line, header, limit)


def test_rows_become_objects_in_one_call_and_bad_ones_are_told_in_line_order() -> None:
    chunk = [b"user,ms", b"ann,12\r", b'bob,"3,4"', b"short", b"", b"carl," + b"x" * 40]
    got = parse_lines(LineFormat.CSV, chunk, 1, None, 30)
    assert got.header == ["user", "ms"]
    assert [orjson.loads(v) for v in got.values] == [
        {"user": "ann", "ms": "12"},
        {"user": "bob", "ms": "3,4"},
    ]
    assert got.bad_lines == [4, 6]
    assert got.bad_reasons[0] == b"expected 2 fields, got 1"
    assert got.bad_reasons[1].startswith(b"a value of 63 bytes exceeds")


def test_a_quoted_field_may_not_run_over_a_line_end() -> None:
    got = parse_lines(LineFormat.CSV, [b"a,b", b'"x,1', b'2",3', b"4,5"], 1)
    assert got.bad_lines == [2]  # the line with the open quote, alone
    assert [orjson.loads(v) for v in got.values] == [{"a": '2"', "b": "3"}, {"a": "4", "b": "5"}]
