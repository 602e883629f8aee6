"""Lines of input to records: the sans-I/O core of ``headwater produce``.

A :class:`LineFormat` says how a line becomes a record: its value is the line's JSON
re-serialised compactly (``json``) or the line's bytes as they are (``raw``); its key,
if any, is a field of the JSON object (``--key FIELD``), encoded as the processing DSL's
``key_by`` encodes keys (:func:`headwater.store.canonical_key`, canonical JSON: the
string ``ada`` is the key ``"ada"``, so a table of a topic produced here matches a
stream keyed by ``key_by``), or the text before a delimiter (``--key-delimiter``, kcat's
``-K``: text as it is, as a Java StringSerializer writes it); every record carries the
same headers (``-H``).
Blank lines are skipped (and counted).

:class:`LineParser` turns bytes into :class:`Chunk` batches of at most ``BATCH_RECORDS``
records that also fit the topic's ``max_message_bytes``. A line that cannot become a
record either stops the input (the chunk carries the error; nothing after it is parsed)
or, with ``skip_invalid``, is reported in the chunk's ``skipped`` and parsing goes on.
Error texts name the line by its number.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import orjson

from headwater.store import (
    MAX_JSON_DEPTH,
    NewRecord,
    canonical_key,
    exact_json,
    has_wide_integer,
)

BATCH_RECORDS = 1000
#: Bytes a v2 batch adds to its records, and the most one record adds to its key and value.
BATCH_OVERHEAD_BYTES = 61
RECORD_OVERHEAD_BYTES = 32


@dataclass(frozen=True, slots=True, kw_only=True)
class LineFormat:
    """How ``produce`` reads a line (see the module docstring)."""

    raw: bool = False
    key_field: str | None = None
    key_delimiter: bytes | None = None
    headers: tuple[tuple[str, bytes | None], ...] = ()

    def __post_init__(self) -> None:
        if self.key_field is not None and self.key_delimiter is not None:
            raise ValueError("give a key field or a key delimiter, not both")
        if self.key_field is not None and self.raw:
            raise ValueError("a key field needs JSON lines, not raw ones")
        if self.key_delimiter == b"":
            raise ValueError("the key delimiter is empty")


@dataclass(slots=True)
class Chunk:
    """Records to append, in input order; ``error`` (if any) stops the input after them.

    ``skipped`` lists the lines left out on the way (with ``skip_invalid``).
    """

    records: list[NewRecord]
    error: str | None = None
    skipped: list[str] = field(default_factory=list)


#: Why a line whose JSON nests past what orjson writes (it reads deeper) is refused: JSON
#: values and keys are stored re-encoded.
_TOO_DEEP = (
    f"the JSON nests deeper than {MAX_JSON_DEPTH} levels, the most a value or key is "
    "stored with (--format raw stores a line as it is)"
)


class BadLineError(Exception):
    """A line that cannot become a record (the message says why)."""


class LineParser:
    """Turn bytes of lines into batches of records (no I/O).

    :param line_format: how a line becomes a record.
    :param max_batch_bytes: the topic's ``max_message_bytes``.
    :param skip_invalid: report bad lines and go on, instead of stopping at the first.
    """

    def __init__(
        self, line_format: LineFormat, max_batch_bytes: int, *, skip_invalid: bool = False
    ) -> None:
        self.format = line_format
        self.max_batch_bytes = max_batch_bytes
        self.skip_invalid = skip_invalid
        self.line_number = 0
        self.skipped = 0
        self.failed = False
        self._carry = b""

    def feed(self, data: bytes) -> Iterator[Chunk]:
        """Parse the complete lines of ``data`` (the rest waits for more)."""
        lines = (self._carry + data).split(b"\n")
        self._carry = lines.pop()
        return self._batches(lines)

    def end(self) -> Iterator[Chunk]:
        """Parse a last line that had no newline."""
        lines, self._carry = [self._carry], b""
        return self._batches(lines) if lines[0] else iter(())

    def _batches(self, lines: list[bytes]) -> Iterator[Chunk]:
        # The per-line loop is the command's hot path: keep it to locals and C calls, and
        # plain JSON lines (the common case) inline; raw and KEY:VALUE lines take a call.
        line_format = self.format
        loads, dumps, wide, key_field, limit = (
            orjson.loads,
            orjson.dumps,
            has_wide_integer,
            line_format.key_field,
            self.max_batch_bytes,
        )
        plain = not line_format.raw and line_format.key_delimiter is None
        split = self._split
        headers: Sequence[tuple[str, bytes | None]] = line_format.headers
        header_bytes = sum(len(n) + len(v or b"") + 4 for n, v in headers)
        records: list[NewRecord] = []
        skipped: list[str] = []
        size = BATCH_OVERHEAD_BYTES
        number = self.line_number
        for line in lines:
            number += 1
            try:
                if plain:
                    try:
                        document = loads(line)
                    except orjson.JSONDecodeError as exc:
                        if not line.strip():
                            continue  # blank lines are allowed, and skipped
                        raise BadLineError(
                            f"invalid JSON ({exc.msg}) at column {exc.colno}"
                        ) from None
                    value = dumps(document)
                    if wide(line):  # orjson read an integer of it as a float: keep it
                        document = json.loads(line)  # for the key too, as key_by reads it
                        value = exact_json(document)
                    if key_field is None:
                        key = None
                    elif type(document) is dict and (named := document.get(key_field)) is not None:
                        key = canonical_key(named)  # the common case, inline
                    else:
                        key = _key(document, key_field)
                else:
                    pair = split(line)
                    if pair is None:
                        continue
                    key, value = pair
                cost = len(value) + RECORD_OVERHEAD_BYTES + header_bytes + (len(key) if key else 0)
                if size + cost > limit or len(records) == BATCH_RECORDS:
                    if cost + BATCH_OVERHEAD_BYTES > limit:
                        raise BadLineError(
                            f"the record is {cost + BATCH_OVERHEAD_BYTES} bytes as a batch, "
                            f"more than the topic's max_message_bytes ({limit})"
                        )
                    yield Chunk(records, None, skipped)
                    records, skipped, size = [], [], BATCH_OVERHEAD_BYTES
            except (BadLineError, orjson.JSONEncodeError) as exc:
                # JSON that orjson reads but will not write: nested past MAX_JSON_DEPTH.
                why = _TOO_DEEP if isinstance(exc, orjson.JSONEncodeError) else exc
                message = f"line {number}: {why}"
                if not self.skip_invalid:
                    self.failed = True
                    self.line_number = number
                    yield Chunk(records, message, skipped)
                    return
                skipped.append(message)
                self.skipped += 1
                continue
            records.append(NewRecord(value, key, None, headers))
            size += cost
        self.line_number = number
        if records or skipped:
            yield Chunk(records, None, skipped)

    def _split(self, line: bytes) -> tuple[bytes | None, bytes] | None:
        """Return a raw or ``KEY:VALUE`` line's key and value (``None``: a blank line)."""
        delimiter = self.format.key_delimiter
        key: bytes | None = None
        if not line.rstrip(b"\r"):
            return None  # blank lines are allowed, and skipped
        if delimiter is not None:
            key, found, line = line.partition(delimiter)
            if not found:
                raise BadLineError(f"no key delimiter {delimiter.decode()!r} in the line")
        if self.format.raw:
            return key, line.removesuffix(b"\r")
        try:
            value = orjson.dumps(orjson.loads(line))
        except orjson.JSONDecodeError as exc:
            raise BadLineError(f"the value is not JSON ({exc.msg}) at column {exc.colno}") from None
        if has_wide_integer(line):  # orjson read an integer of it as a float: keep it
            value = _exact(line)
        return key, value


def _exact(line: bytes) -> bytes:
    """Return JSON ``line`` compact, its integers beyond 64 bits kept exact (orjson reads
    them as floats; one of more than 308 digits it refused already, as infinite)."""
    return exact_json(json.loads(line))


def _key(document: object, field: str) -> bytes | None:
    """Return the key taken from ``field`` as ``key_by`` encodes it (null: no key)."""
    if type(document) is not dict:
        raise BadLineError(f"--key {field}: the line is not a JSON object")
    try:
        value = document[field]
    except KeyError:
        raise BadLineError(f"--key {field}: the line has no such field") from None
    return canonical_key(value)
