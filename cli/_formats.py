"""How ``headwater consume`` prints records: ``--format value|json|TEMPLATE``.

* ``value`` (the default): each value as one JSON line -- as stored when it is JSON on one
  line, re-serialised onto one line when it spans several, else as a JSON string.
* ``json`` (also ``--show-meta``): one JSON object per record with all its metadata:
  ``topic``, ``partition``, ``offset``, ``timestamp``, ``key``, ``value``, ``headers``
  (a list of ``[name, value]`` pairs, since names may repeat). Keys and header values are
  strings (bytes that are not UTF-8 are escaped with backslashes), or null.
* a template in kcat's ``-f`` style: ``%t`` topic, ``%p`` partition, ``%o`` offset,
  ``%k`` key, ``%s`` value, ``%h`` headers (``name=value`` joined by ``,``), ``%T``
  timestamp (epoch ms), ``%K``/``%S`` key/value length (-1 when null), ``%%`` a ``%``;
  escapes ``\\n``, ``\\t``, ``\\r``, ``\\\\``. Keys and values print as their raw bytes, null
  as nothing. As in kcat, nothing is added: end the template with ``\\n`` for lines.

Formatting is pure: a :data:`Formatter` turns one delivery's records into the bytes to
write, so a reader writes once per delivery.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import click
import orjson

from headwater.store import Record, exact_dumps, exact_loads

Formatter = Callable[[int, Sequence[Record]], bytes]
"""(partition, records) -> the bytes that print them."""

_CODES = "tpokshTKS%"
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\"}


def format_value(value: bytes | None) -> bytes:
    """Return a stored value as one JSON text: as stored when it is JSON, else a JSON string."""
    if value is None:
        return b"null"
    try:
        orjson.loads(value)
    except orjson.JSONDecodeError:
        return orjson.dumps(value.decode("utf-8", "backslashreplace"))
    if b"\n" in value or b"\r" in value:
        try:
            return exact_dumps(exact_loads(value))  # keep it on one line
        except orjson.JSONEncodeError:
            # Nested past what orjson writes (it reads deeper). A line end in JSON text
            # is whitespace between tokens (never inside a string): a space will do.
            return value.replace(b"\r", b" ").replace(b"\n", b" ")
    return value


def value_lines(partition: int, records: Sequence[Record]) -> bytes:
    """The default format: each value as a JSON line."""
    # The hot path of the command: the common case (a one-line JSON value) stays in C calls.
    loads = orjson.loads
    lines: list[bytes] = []
    append = lines.append
    for r in records:
        value = r.value
        if value is None:
            append(b"null")
            continue
        try:
            loads(value)
        except orjson.JSONDecodeError:
            value = format_value(value)
        else:
            if b"\n" in value or b"\r" in value:
                value = format_value(value)
        append(value)
    append(b"")
    return b"\n".join(lines)


def _text(data: bytes | None) -> bytes:
    return b"null" if data is None else orjson.dumps(data.decode("utf-8", "backslashreplace"))


def json_lines(topic: str) -> Formatter:
    """The ``json`` format: each record as a JSON object with all its metadata."""
    prefix = b'{"topic":%b,"partition":' % orjson.dumps(topic)

    def render(partition: int, records: Sequence[Record]) -> bytes:
        return b"".join(
            [
                b'%b%d,"offset":%d,"timestamp":%d,"key":%b,"value":%b,"headers":[%b]}\n'
                % (
                    prefix,
                    partition,
                    r.offset,
                    r.timestamp,
                    _text(r.key),
                    format_value(r.value),
                    b",".join(
                        [b"[%b,%b]" % (orjson.dumps(name), _text(v)) for name, v in r.headers]
                    ),
                )
                for r in records
            ]
        )

    return render


def parse_template(template: str) -> list[bytes | str]:
    """Split a kcat-style template into literal bytes and one-letter ``%`` codes (``str``).

    :raises click.BadParameter: for an unknown ``%`` code or a ``%`` at the end.
    """
    parts: list[bytes | str] = []
    literal: list[str] = []
    chars = iter(template)
    for char in chars:
        if char == "\\":
            following = next(chars, "")
            literal.append(_ESCAPES.get(following, "\\" + following))
        elif char == "%":
            code = next(chars, "")
            if not code or code not in _CODES:
                known = " ".join(f"%{c}" for c in _CODES)
                raise click.BadParameter(
                    f"unknown code %{code} in {template!r}; the codes are {known}",
                    param_hint="--format",
                )
            if code == "%":
                literal.append("%")
                continue
            if literal:
                parts.append("".join(literal).encode())
                literal = []
            parts.append(code)
        else:
            literal.append(char)
    if literal:
        parts.append("".join(literal).encode())
    return parts


def template_lines(topic: str, template: str) -> Formatter:
    """The kcat-style template format (see the module docstring)."""
    parts = parse_template(template)
    name = topic.encode()

    def field(code: str, partition: int, r: Record) -> bytes:
        if code == "s":
            return r.value or b""
        if code == "k":
            return r.key or b""
        if code == "o":
            return b"%d" % r.offset
        if code == "p":
            return b"%d" % partition
        if code == "t":
            return name
        if code == "T":
            return b"%d" % r.timestamp
        if code == "K":
            return b"%d" % (-1 if r.key is None else len(r.key))
        if code == "S":
            return b"%d" % (-1 if r.value is None else len(r.value))
        return b",".join(n.encode() + b"=" + (v or b"") for n, v in r.headers)  # %h

    def render(partition: int, records: Sequence[Record]) -> bytes:
        return b"".join(
            [
                part if isinstance(part, bytes) else field(part, partition, r)
                for r in records
                for part in parts
            ]
        )

    return render


def formatter(topic: str, spec: str) -> Formatter:
    """Return the formatter ``--format SPEC`` names for records of ``topic``.

    :raises click.BadParameter: if ``spec`` is neither a format name nor a template.
    """
    if spec == "value":
        return value_lines
    if spec == "json":
        return json_lines(topic)
    if "%" in spec:
        return template_lines(topic, spec)
    raise click.BadParameter(
        f"expected value, json or a template with %-codes (such as '%k %s\\n'), got {spec!r}",
        param_hint="--format",
    )
