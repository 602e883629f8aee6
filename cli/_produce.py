"""``headwater produce``: store JSON lines from stdin as records of a topic.

Stdin is read in large chunks (whatever has arrived, up to ``READ_BYTES``) by a worker
thread; :class:`LineParser` turns complete lines into records, grouped into batches of
at most ``BATCH_RECORDS`` that also fit the topic's ``max_message_bytes``. One task parses
while another appends the previous batch and waits for it to be durable, so parsing
overlaps the fsync. Each batch is one ``Store.append``: keyed records go to their murmur2
partition, unkeyed ones stick to one partition per batch.

Only batches that were appended in full are acknowledged, in input order. On a bad line
the records before it are stored and acknowledged, the bad line and everything after it
are not, and the command stops with one line naming it.
"""

from __future__ import annotations

import os
import sys
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass

import anyio
import anyio.to_thread
import click
import orjson
from anyio.abc import ObjectReceiveStream, ObjectSendStream

from headwater.store import HeadwaterError, NewRecord, Store

from ._datadir import data_dir, data_option, locked_store
from ._output import OutputClosedError, StdoutWriter, info
from ._run import run_until_signal

READ_BYTES = 1 << 20
BATCH_RECORDS = 1000
#: Bytes a v2 batch adds to its records, and the most one record adds to its key and value.
BATCH_OVERHEAD_BYTES = 61
RECORD_OVERHEAD_BYTES = 32


@dataclass(slots=True)
class Chunk:
    """Records to append, in input order; ``error`` (if any) stops the input after them."""

    records: list[NewRecord]
    error: str | None = None


class LineParser:
    """Turn bytes of JSON lines into batches of records (no I/O).

    The stored value is the line's JSON re-serialised compactly; with ``key_field`` the key
    is that field's value: a string as its UTF-8 bytes, null as no key, anything else as
    its compact JSON text. Blank lines are skipped (and counted).
    """

    def __init__(self, key_field: str | None, max_batch_bytes: int) -> None:
        self.key_field = key_field
        self.max_batch_bytes = max_batch_bytes
        self.line_number = 0
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
        return self._batches(lines)

    def _batches(self, lines: list[bytes]) -> Iterator[Chunk]:
        # The per-line loop is the command's hot path: keep it to locals and C calls.
        loads, dumps, key_field, limit = (
            orjson.loads,
            orjson.dumps,
            self.key_field,
            self.max_batch_bytes,
        )
        records: list[NewRecord] = []
        size = BATCH_OVERHEAD_BYTES
        number = self.line_number
        try:
            for line in lines:
                number += 1
                try:
                    document = loads(line)
                except orjson.JSONDecodeError as exc:
                    if not line.strip():
                        continue  # blank lines are allowed, and skipped
                    raise _BadLineError(f"invalid JSON ({exc.msg}) at column {exc.colno}") from None
                value = dumps(document)
                if key_field is None:
                    key = None
                elif type(document) is dict and type(field := document.get(key_field)) is str:
                    key = field.encode()  # the common case, inline
                else:
                    key = _key(document, key_field)
                cost = len(value) + RECORD_OVERHEAD_BYTES + (len(key) if key else 0)
                if size + cost > limit or len(records) == BATCH_RECORDS:
                    if cost + BATCH_OVERHEAD_BYTES > limit:
                        raise _BadLineError(
                            f"the record is {cost + BATCH_OVERHEAD_BYTES} bytes as a batch, "
                            f"more than the topic's max_message_bytes ({limit})"
                        )
                    yield Chunk(records)
                    records, size = [], BATCH_OVERHEAD_BYTES
                records.append(NewRecord(value, key))
                size += cost
        except _BadLineError as exc:
            self.failed = True
            yield Chunk(records, f"line {number}: {exc}")
            return
        self.line_number = number
        if records:
            yield Chunk(records)


class _BadLineError(Exception):
    """A line that cannot become a record (the message says why)."""


def _key(document: object, field: str) -> bytes | None:
    """Return the key taken from ``field``: a string's UTF-8, null as none, else JSON text."""
    if type(document) is not dict:
        raise _BadLineError(f"--key {field}: the line is not a JSON object")
    try:
        value = document[field]
    except KeyError:
        raise _BadLineError(f"--key {field}: the line has no such field") from None
    if type(value) is str:
        return value.encode()
    return None if value is None else orjson.dumps(value)


@click.command()
@click.argument("topic")
@click.option("--key", "key_field", metavar="FIELD", help="Take each record's key from this field.")
@click.option("--quiet", "-q", is_flag=True, help="Print only a summary, on stderr.")
@data_option
@click.pass_context
def produce(
    ctx: click.Context, topic: str, key_field: str | None, quiet: bool, data: object
) -> None:
    """Store JSON lines from stdin as records of TOPIC.

    Prints PARTITION:OFFSET for each record once it is acknowledged (durable under the
    topic's durability policy). A line that is not JSON stops the command; the lines
    before it stay stored.
    """
    directory = data_dir(ctx)
    if sys.stdin.isatty():
        info("reading JSON lines from the terminal; end with Ctrl-D")
    placed: Counter[int] = Counter()
    failure: list[tuple[str, str]] = []  # (message, 'input' or 'store')

    async def body() -> None:
        async with locked_store(directory, writer=True) as store:
            limit = store.topic_config(topic).max_message_bytes
            await store.append(topic, [])  # refuses an internal topic before input is read
            parser = LineParser(key_field, limit)
            send, receive = anyio.create_memory_object_stream[Chunk](1)
            async with anyio.create_task_group() as tg:
                tg.start_soon(_read_stdin, parser, send)
                out = None if quiet else StdoutWriter()
                await _append(store, topic, receive, out=out, placed=placed, failure=failure)
                tg.cancel_scope.cancel()  # after a bad line, stop reading

    signum = run_until_signal(body)
    stored = placed.total()
    if signum is not None:
        info(f"headwater: interrupted; stored {stored} records in {topic!r}")
        ctx.exit(128 + signum)
    if failure:
        message, cause = failure[0]
        if cause == "input":
            raise click.ClickException(
                f"{message}; the {stored} records before it are stored, nothing after it"
            )
        raise click.ClickException(f"{message}; {stored} records were acknowledged before it")
    if quiet:
        spread = ", ".join(f"{p}: {n}" for p, n in sorted(placed.items()))
        info(f"stored {stored} records in {topic!r}" + (f" (partition {spread})" if spread else ""))


async def _read_stdin(parser: LineParser, send: ObjectSendStream[Chunk]) -> None:
    fd = sys.stdin.fileno()
    async with send:
        while not parser.failed:
            # Abandoned on cancel: a read from a terminal may never return.
            data = await anyio.to_thread.run_sync(os.read, fd, READ_BYTES, abandon_on_cancel=True)
            for chunk in parser.feed(data) if data else parser.end():
                await send.send(chunk)
            if not data:
                return


async def _append(
    store: Store,
    topic: str,
    receive: ObjectReceiveStream[Chunk],
    *,
    out: StdoutWriter | None,
    placed: Counter[int],
    failure: list[tuple[str, str]],
) -> None:
    async for chunk in receive:
        if chunk.records:
            # An append under way finishes even when a signal stops the command, so
            # that what it stored is acknowledged.
            try:
                with anyio.CancelScope(shield=True):
                    result = await store.append(topic, chunk.records)
            except HeadwaterError as exc:
                failure.append((str(exc), "store"))
                return
            placed.update(p for p, _ in result)
            if out is not None:
                out = _acknowledge(out, result)
        if chunk.error is not None:
            failure.append((chunk.error, "input"))
            return


def _acknowledge(out: StdoutWriter, result: list[tuple[int, int]]) -> StdoutWriter | None:
    """Print PARTITION:OFFSET lines; if stdout has gone, keep storing but stop printing."""
    try:
        out.write("".join([f"{p}:{o}\n" for p, o in result]).encode())
        out.flush()
    except OutputClosedError:
        return None
    return out
