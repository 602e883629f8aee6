"""LineParser, the sans-I/O core of ``headwater produce``: lines in, batches of records out."""

from __future__ import annotations

import pytest

from headwater.cli._lines import BATCH_RECORDS, Chunk, LineFormat, LineParser
from headwater.processing import encode_key
from headwater.store import NewRecord, canonical_key

JSON = LineFormat()
KEYED = LineFormat(key_field="k")


def parse(parser: LineParser, *pieces: bytes) -> list[Chunk]:
    chunks = [c for piece in pieces for c in parser.feed(piece)]
    return chunks + list(parser.end())


def records(chunks: list[Chunk]) -> list[NewRecord]:
    return [r for c in chunks for r in c.records]


def test_lines_split_across_reads_blank_lines_and_crlf() -> None:
    parser = LineParser(JSON, 1 << 20)
    chunks = parse(parser, b'{"a": 1}\n{"b"', b": [1, 2]}\r\n\n  \n", b'"last"')
    assert [r.value for r in records(chunks)] == [b'{"a":1}', b'{"b":[1,2]}', b'"last"']
    assert all(c.error is None for c in chunks)
    assert parser.line_number == 5


def test_keys_from_a_field() -> None:
    lines = b'{"k": "u1"}\n{"k": 7}\n{"k": null}\n{"k": {"y": 1, "x": 2}}\n{"k": "\xc3\xa9"}\n'
    got = [r.key for r in records(parse(LineParser(KEYED, 1 << 20), lines))]
    # As key_by encodes keys: canonical JSON, one encoder for both.
    assert got == [b'"u1"', b"7", None, b'{"x":2,"y":1}', '"é"'.encode()]
    assert got == [encode_key(k) for k in ("u1", 7, None, {"y": 1, "x": 2}, "é")]


def test_errors_name_the_line_and_keep_what_came_before() -> None:
    parser = LineParser(KEYED, 1 << 20)
    chunks = parse(parser, b'{"k": 1}\n\n{"k": 2}\n{"j": 3}\n{"k": 4}\n')
    assert [r.value for r in records(chunks)] == [b'{"k":1}', b'{"k":2}']
    assert chunks[-1].error == "line 4: --key k: the line has no such field"
    assert parser.failed

    chunks = parse(LineParser(JSON, 1 << 20), b'{"k": 1}\n{"k": \n')
    assert chunks[-1].error is not None
    assert chunks[-1].error.startswith("line 2: invalid JSON (")


def test_batches_are_bounded_by_count_and_bytes() -> None:
    many = b"".join(b'{"n": %d}\n' % i for i in range(2 * BATCH_RECORDS + 5))
    sizes = [len(c.records) for c in parse(LineParser(JSON, 1 << 20), many)]
    assert sizes == [BATCH_RECORDS, BATCH_RECORDS, 5]

    line = b'{"pad": "' + b"x" * 90 + b'"}\n'  # 101 bytes stored, 133 counting overhead
    chunks = parse(LineParser(JSON, 1000), line * 20)
    assert [len(c.records) for c in chunks] == [7, 7, 6]  # 61 + 7 * 133 <= 1000

    too_big = parse(LineParser(JSON, 100), line)
    assert too_big[-1].error is not None and "max_message_bytes (100)" in too_big[-1].error


def test_raw_lines_and_key_delimiters() -> None:
    raw = parse(LineParser(LineFormat(raw=True), 1 << 20), b"a b\r\n\n{x\n", b"tail")
    assert [(r.key, r.value) for r in records(raw)] == [
        (None, b"a b"),
        (None, b"{x"),
        (None, b"tail"),
    ]
    delimited = LineFormat(key_delimiter=b"::")
    chunks = parse(LineParser(delimited, 1 << 20), b'k::{"a": 1}\n::[2]\n\nx::y::"z"\n')
    got = [(r.key, r.value) for r in records(chunks)]
    assert got == [(b"k", b'{"a":1}'), (b"", b"[2]")]
    error = chunks[-1].error
    assert error is not None and error.startswith("line 4: the value is not JSON (")
    both = LineFormat(raw=True, key_delimiter=b"=")
    assert [(r.key, r.value) for r in records(parse(LineParser(both, 1 << 20), b"k=v=w\n"))] == [
        (b"k", b"v=w")
    ]


def test_headers_go_on_every_record_and_count_towards_the_size() -> None:
    headers = (("source", b"web"), ("n", None))
    chunks = parse(LineParser(LineFormat(headers=headers), 1 << 20), b"1\n2\n")
    assert [r.headers for r in records(chunks)] == [headers, headers]
    big = LineFormat(headers=(("h", b"x" * 200),))
    assert parse(LineParser(big, 200), b"1\n")[-1].error is not None


def test_skip_invalid_reports_and_goes_on() -> None:
    parser = LineParser(KEYED, 1 << 20, skip_invalid=True)
    chunks = parse(parser, b'{"k": "a"}\nnope\n{"j": 1}\n{"k": "b"}\n')
    assert [r.key for r in records(chunks)] == [b'"a"', b'"b"']
    reported = [m for c in chunks for m in c.skipped]
    assert len(reported) == 2
    assert reported[0].startswith("line 2: invalid JSON (")
    assert reported[1] == "line 3: --key k: the line has no such field"
    assert all(c.error is None for c in chunks)
    assert (parser.skipped, parser.failed, parser.line_number) == (2, False, 4)


def test_a_line_format_refuses_what_cannot_go_together() -> None:
    for kwargs in (
        {"key_field": "k", "key_delimiter": b":"},
        {"key_field": "k", "raw": True},
        {"key_delimiter": b""},
    ):
        with pytest.raises(ValueError):
            LineFormat(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("line_format", "prefix"),
    [(JSON, b""), (KEYED, b""), (LineFormat(key_delimiter=b"="), b"key=")],
    ids=["json", "keyed", "key-delimiter"],
)
def test_json_read_but_too_deep_to_store_is_a_bad_line(
    line_format: LineFormat, prefix: bytes
) -> None:
    # orjson reads 1024 levels but writes 254; a value is stored as it writes it.
    deep = b'{"k":' + b"[" * 300 + b"1" + b"]" * 300 + b"}"
    lines = [prefix + b'{"k": 1}', prefix + deep, prefix + b'{"k": 2}']
    parser = LineParser(line_format, 1 << 20, skip_invalid=True)
    chunks = parse(parser, b"\n".join(lines) + b"\n")
    assert [r.value for r in records(chunks)] == [b'{"k":1}', b'{"k":2}']
    (skipped,) = [s for c in chunks for s in c.skipped]
    assert skipped.startswith("line 2: the JSON nests deeper than 254 levels")
    assert "--format raw" in skipped


def test_integers_beyond_64_bits_are_stored_exactly() -> None:
    lines = (
        b'{"id": 123456789012345678901, "n": 1.5}\n'
        b'{"id": 18446744073709551615}\n'  # the widest orjson keeps: written by orjson
        b"k=[-9223372036854775809]\n"
    )
    got = [r.value for r in records(parse(LineParser(JSON, 1 << 20), lines.rsplit(b"k=", 1)[0]))]
    assert got == [b'{"id":123456789012345678901,"n":1.5}', b'{"id":18446744073709551615}']
    keyed = LineParser(LineFormat(key_delimiter=b"="), 1 << 20)
    (record,) = records(parse(keyed, b"k=[-9223372036854775809]\n"))
    assert (record.key, record.value) == (b"k", b"[-9223372036854775809]")


def test_a_key_beyond_64_bits_is_taken_exactly_as_key_by_encodes_it() -> None:
    lines = b'{"k": 123456789012345678901, "n": 1}\n{"k": 123456789012345678902}\n'
    got = records(parse(LineParser(KEYED, 1 << 20), lines))
    assert [r.key for r in got] == [b"123456789012345678901", b"123456789012345678902"]
    assert [r.key for r in got] == [canonical_key(int(r.key)) for r in got]
