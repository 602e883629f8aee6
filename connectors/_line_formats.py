"""Lines of a source file as record values: JSON lines, CSV, plain text. Pure, no I/O.

A file source hands :func:`parse_lines` the complete lines of one read chunk (without
their line ends) and gets back the values to append and the lines that are malformed,
with their line numbers, for the dead-letter topic.

- ``jsonl``: a line is one JSON value, stored as written. Blank lines are skipped. The
  common case (every line valid) costs one C call per line and no list of parsed values:
  the parsed objects are dropped as they are made, and the stored values are the line
  slices themselves. Only a chunk with a bad line is walked line by line.
- ``csv``: the file's first line is its header row; every later line is one record, a
  JSON object from header names to the row's fields (strings). A row with another
  number of fields, or that the csv module refuses (an unterminated quote: a field may
  not span lines), is malformed. Blank lines are skipped. A chunk's rows are read by one
  ``csv.reader`` and its objects written in one orjson call (``serialize_many``), about
  twice as fast as a reader and a ``dumps`` per line; a chunk that one reader cannot
  read exactly as it would read each line alone (a line that is not UTF-8 or that the
  csv module refuses, a quoted field running over a line end) is read line by line.
- ``text``: every line is a record, its bytes as they are (an empty line too).

Lines are decoded as UTF-8 for CSV only; JSON parsing checks UTF-8 itself.
"""

from __future__ import annotations

import csv
import enum
import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

import orjson

from headwater.processing import JsonSerde

_JSON = JsonSerde()

#: How much of a value too long for its topic the dead letters keep.
_KEPT_BYTES = 1024


class LineFormat(enum.StrEnum):
    """How a source file's lines become records."""

    JSONL = "jsonl"
    CSV = "csv"
    TEXT = "text"


@dataclass(slots=True)
class ParsedLines:
    """What :func:`parse_lines` made of a chunk's lines.

    ``values`` are the records to append, in order; ``bad_lines`` the 1-based numbers of
    the malformed lines, with their bytes in ``bad_values`` and why in ``bad_reasons``.
    ``header`` is the CSV header row when the chunk held it.
    """

    values: Sequence[bytes]
    bad_lines: list[int] = field(default_factory=list)
    bad_values: list[bytes] = field(default_factory=list)
    bad_reasons: list[bytes] = field(default_factory=list)
    header: list[str] | None = None

    def reject(self, line: int, raw: bytes, reason: str) -> None:
        """Record ``line`` (its number and bytes) as malformed for ``reason``."""
        self.bad_lines.append(line)
        self.bad_values.append(raw)
        self.bad_reasons.append(reason.encode())


def parse_lines(
    fmt: LineFormat,
    lines: list[bytes],
    first_line: int,
    header: list[str] | None = None,
    max_value_bytes: int | None = None,
) -> ParsedLines:
    """Turn ``lines`` (numbered from ``first_line``, 1-based) into record values.

    :param header: the CSV header row, when ``first_line`` is past it; for a chunk that
        starts at line 1 the header is its first line and is returned in the result.
    :param max_value_bytes: a line whose value would be longer is malformed (the topic
        could not take it); its first KiB goes to the dead letters.
    """
    limit = max_value_bytes if max_value_bytes is not None else math.inf
    if fmt is LineFormat.CSV:
        return _parse_csv(lines, first_line, header, limit)
    if max(map(len, lines), default=0) <= limit:
        if fmt is LineFormat.TEXT:
            return ParsedLines(lines)
        try:
            deque(map(orjson.loads, lines), maxlen=0)
        except orjson.JSONDecodeError:
            pass
        else:
            return ParsedLines(lines)
    return _parse_one_by_one(fmt, lines, first_line, limit)


def _parse_one_by_one(
    fmt: LineFormat, lines: list[bytes], first_line: int, limit: float
) -> ParsedLines:
    out = ParsedLines([])
    values: list[bytes] = []
    json = fmt is LineFormat.JSONL
    for number, line in enumerate(lines, first_line):
        if len(line) > limit:
            out.reject(number, line[:_KEPT_BYTES], _too_long(len(line)))
            continue
        if json:
            if not line.strip():
                continue
            try:
                orjson.loads(line)
            except orjson.JSONDecodeError as exc:
                out.reject(number, line, f"not JSON: {exc}")
                continue
        values.append(line)
    out.values = values
    return out


def _too_long(size: int) -> str:
    return f"a value of {size} bytes exceeds the topic's max_message_bytes (first KiB kept)"


def _row_fault(number: int, row: list[str], header: list[str] | None) -> str | None:
    """Return why CSV ``row`` (line ``number``) is malformed, or None: it is the header
    (line 1 while there is none yet) or a record under ``header``."""
    if header is None:
        return None if number == 1 else "no header row: the file's first line is missing"
    if len(row) != len(header):
        return f"expected {len(header)} fields, got {len(row)}"
    return None


def _parse_csv(
    lines: list[bytes], first_line: int, header: list[str] | None, limit: float
) -> ParsedLines:
    """Parse a chunk of CSV ``lines`` (the first is line ``first_line``) under ``header``
    (None: the chunk starts the file) into JSON objects of at most ``limit`` bytes: all
    rows by one reader, else line by line (see :func:`_rows_at_once`)."""
    numbered = [(number, line) for number, line in enumerate(lines, first_line) if line.strip()]
    rows = _rows_at_once([line for _, line in numbered])
    if rows is None:
        return _parse_csv_one_by_one(lines, first_line, header, limit)
    out = ParsedLines([])
    rejected: list[tuple[int, bytes, str]] = []
    objects: list[dict[str, str]] = []
    kept: list[tuple[int, bytes]] = []
    for (number, line), row in zip(numbered, rows, strict=True):
        fault = _row_fault(number, row, header)
        if fault is not None:
            rejected.append((number, line, fault))
        elif header is None:
            header = out.header = row
        else:
            objects.append(dict(zip(header, row, strict=True)))
            kept.append((number, line))
    values = _JSON.serialize_many(objects)  # names and fields are strings: they encode
    if max(map(len, values), default=0) > limit:
        fitting = []
        for (number, line), value in zip(kept, values, strict=True):
            if len(value) > limit:
                rejected.append((number, line[:_KEPT_BYTES], _too_long(len(value))))
            else:
                fitting.append(value)
        values = fitting
    for number, raw, reason in sorted(rejected, key=lambda bad: bad[0]):
        out.reject(number, raw, reason)
    out.values = values
    return out


def _rows_at_once(lines: list[bytes]) -> list[list[str]] | None:
    """Return the CSV row of each of ``lines`` (none blank), read by one reader; None
    where that would not be what reading each line alone gives: a line is not UTF-8, the
    csv module refuses one, or a quoted field runs over a line end (the reader would
    read on into the next line)."""
    try:
        texts = [line.decode() for line in lines]
        reader = csv.reader(texts, strict=True)
        rows = list(reader)
    except (UnicodeDecodeError, csv.Error):
        return None
    if len(rows) != len(texts) or reader.line_num != len(texts):
        return None
    return rows


def _parse_csv_one_by_one(
    lines: list[bytes], first_line: int, header: list[str] | None, limit: float
) -> ParsedLines:
    out = ParsedLines([])
    values: list[bytes] = []
    for number, line in enumerate(lines, first_line):
        if not line.strip():
            continue
        try:
            text = line.decode()
            rows = list(csv.reader([text], strict=True))
        except (UnicodeDecodeError, csv.Error) as exc:
            out.reject(number, line, f"not a CSV row: {exc}")
            continue
        row = rows[0] if rows else []
        fault = _row_fault(number, row, header)
        if fault is not None:
            out.reject(number, line, fault)
            continue
        if header is None:
            header = out.header = row
            continue
        value = orjson.dumps(dict(zip(header, row, strict=True)))
        if len(value) > limit:
            out.reject(number, line[:_KEPT_BYTES], _too_long(len(value)))
            continue
        values.append(value)
    out.values = values
    return out
