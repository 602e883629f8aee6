"""LineParser, the sans-I/O core of ``headwater produce``: lines in, batches of records out."""

from __future__ import annotations

from headwater.cli._lines import BATCH_RECORDS, Chunk, LineFormat, LineParser
from headwater.store import NewRecord

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
    lines = b'{"k": "u1"}\n{"k": 7}\n{"k": null}\n{"k": {"x": 1}}\n{"k": "\xc3\xa9"}\n'
    got = [r.key for r in records(parse(LineParser(KEYED, 1 << 20), lines))]
    assert got == [b"u1", b"7", None, b'{"x":1}', "é".encode()]


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
