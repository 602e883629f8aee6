"""The file source over real files and a real store: tailing, rotation, truncation, globs,
formats, dead letters, restarts (clean, and after a rotation while it was down)."""

from __future__ import annotations

import errno
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from headwater.connectors import (
    ConnectorConfigError,
    FileSource,
    FileSourceConfig,
    LogPositionStore,
    StoreLog,
)
from headwater.store import OsFileSystem, Store, TopicConfig, open_store

from .helpers import records_of, values_of, wait_for_count


def jsonl(start: int, stop: int) -> bytes:
    """Lines ``{"i": start}`` to ``{"i": stop - 1}``."""
    return b"".join(b'{"i":%d}\n' % i for i in range(start, stop))


def numbers(values: list[bytes | None]) -> list[int]:
    """The ``i`` of each JSON value."""
    return [orjson.loads(v or b"null")["i"] for v in values]


@asynccontextmanager
async def running(store: Store, **options: Any) -> AsyncIterator[FileSource]:
    """Run a file source on ``store`` in the background for the duration of a block."""
    config = FileSourceConfig(topic="t", poll_interval_s=0.01, **options)
    source = FileSource(StoreLog(store), LogPositionStore(store), config)
    async with anyio.create_task_group() as tg:
        await tg.start(source.run)
        yield source
        tg.cancel_scope.cancel()


async def run_once(store: Store, **options: Any) -> FileSource:
    """Run a file source on ``store`` until it has caught up with the files."""
    config = FileSourceConfig(topic="t", **options)
    source = FileSource(StoreLog(store), LogPositionStore(store), config)
    await source.run(until_caught_up=True)
    return source


def append(path: Path, data: bytes) -> None:
    with path.open("ab") as f:
        f.write(data)


async def test_tails_only_new_lines_unless_from_beginning(store: Store, tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    log.write_bytes(jsonl(0, 10))
    async with running(store, path=str(log)):
        append(log, jsonl(10, 15))
        await wait_for_count(store, "t", 5)
    assert numbers(await values_of(store, "t")) == list(range(10, 15))

    other = tmp_path / "other.log"
    other.write_bytes(jsonl(0, 10))
    await run_once(store, path=str(other), name="backfill", from_beginning=True)
    assert numbers(await values_of(store, "t")) == [*range(10, 15), *range(10)]


async def test_follows_rotation_by_rename(store: Store, tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    log.write_bytes(b"")
    async with running(store, path=str(log), close_inactive_s=0.05):
        with log.open("ab", buffering=0) as writer:
            writer.write(jsonl(0, 100))
            await wait_for_count(store, "t", 100)
            os.rename(log, tmp_path / "app.log.1")
            # The writer still holds the old file: what it writes after the rename is read.
            writer.write(jsonl(100, 150))
            log.write_bytes(jsonl(150, 200))
            await wait_for_count(store, "t", 200)
        append(log, jsonl(200, 210) + b'{"i":210}')  # the last line is not finished yet
        await wait_for_count(store, "t", 210)
        append(log, b"\n")
        await wait_for_count(store, "t", 211)
    got = numbers(await values_of(store, "t"))
    assert sorted(got) == list(range(211))
    old = [i for i in got if 100 <= i < 150]
    new = [i for i in got if i >= 150]
    assert old == sorted(old) and new == sorted(new) and got[:100] == list(range(100))


async def test_a_rotated_file_is_finished_with_its_unterminated_last_line(
    store: Store, tmp_path: Path
) -> None:
    log = tmp_path / "app.log"
    log.write_bytes(jsonl(0, 3) + b'{"i":3}')  # the writer died before the line end
    async with running(store, path=str(log), from_beginning=True, close_inactive_s=0.0):
        await wait_for_count(store, "t", 3)
        os.rename(log, tmp_path / "app.log.1")
        log.write_bytes(jsonl(4, 6))
        await wait_for_count(store, "t", 6)
    assert numbers(await values_of(store, "t")) == list(range(6))


async def test_follows_truncation(store: Store, tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    log.write_bytes(b"")
    async with running(store, path=str(log)):
        append(log, jsonl(0, 100))
        await wait_for_count(store, "t", 100)
        os.truncate(log, 0)  # copytruncate: same file, emptied in place
        append(log, jsonl(100, 110))
        await wait_for_count(store, "t", 110)
    assert numbers(await values_of(store, "t")) == list(range(110))


async def test_a_glob_reads_every_file_once_through_rotation(store: Store, tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "a.log").write_bytes(jsonl(0, 10))
    (logs / "b.log").write_bytes(jsonl(10, 20))
    pattern = str(logs / "*.log*")
    async with running(store, path=pattern, from_beginning=True):
        await wait_for_count(store, "t", 20)
        (logs / "c.log").write_bytes(jsonl(20, 30))  # a new file is read from its start
        await wait_for_count(store, "t", 30)
        # Rotated to a name the pattern still matches: the same file, not a new one.
        os.rename(logs / "a.log", logs / "a.log.1")
        (logs / "a.log").write_bytes(jsonl(30, 35))
        await wait_for_count(store, "t", 35)
        append(logs / "a.log.1", jsonl(35, 40))
        await wait_for_count(store, "t", 40)
    assert sorted(numbers(await values_of(store, "t"))) == list(range(40))


async def test_malformed_lines_go_to_the_dead_letter_topic_with_their_line_numbers(
    store: Store, tmp_path: Path
) -> None:
    log = tmp_path / "app.jsonl"
    log.write_bytes(b'{"i":0}\nnot json\n\n{"i":1}\n{"i": \n[1,2]\n')
    source = await run_once(store, path=str(log), from_beginning=True)
    assert await values_of(store, "t") == [b'{"i":0}', b'{"i":1}', b"[1,2]"]
    dead = await records_of(store, "t-dlq")
    assert [r.value for r in dead] == [b"not json", b'{"i": ']
    headers = [dict(r.headers) for r in dead]
    assert [h["headwater.line"] for h in headers] == [b"2", b"5"]
    assert {h["headwater.file"] for h in headers} == {str(log).encode()}
    assert all(h["headwater.error"].startswith(b"not JSON") for h in headers)
    assert source.statistics().malformed == 2


async def test_csv_rows_become_objects_and_bad_rows_dead_letters(
    store: Store, tmp_path: Path
) -> None:
    table = tmp_path / "t.csv"
    table.write_bytes(b'user,ms\nann,12\r\nbob,"3,4"\nshort\n"open,1\n')
    await run_once(store, path=str(table), format="csv", from_beginning=True)
    assert [orjson.loads(v or b"") for v in await values_of(store, "t")] == [
        {"user": "ann", "ms": "12"},
        {"user": "bob", "ms": "3,4"},
    ]
    dead = await records_of(store, "t-dlq")
    assert [dict(r.headers)["headwater.line"] for r in dead] == [b"4", b"5"]
    assert dict(dead[0].headers)["headwater.error"] == b"expected 2 fields, got 1"


async def test_csv_header_is_read_again_when_resuming_mid_file(
    store: Store, tmp_path: Path
) -> None:
    table = tmp_path / "t.csv"
    table.write_bytes(b"a,b\n1,2\n")
    await run_once(store, path=str(table), format="csv", from_beginning=True)
    append(table, b"3,4\n")
    await run_once(store, path=str(table), format="csv", from_beginning=True)
    assert [orjson.loads(v or b"") for v in await values_of(store, "t")] == [
        {"a": "1", "b": "2"},
        {"a": "3", "b": "4"},
    ]


async def test_text_lines_are_stored_as_they_are(store: Store, tmp_path: Path) -> None:
    log = tmp_path / "plain.txt"
    log.write_bytes(b"first\r\n\nthird {not json\n")
    await run_once(store, path=str(log), format="text", from_beginning=True)
    assert await values_of(store, "t") == [b"first", b"", b"third {not json"]


async def test_a_line_too_long_for_the_topic_is_dead_lettered(store: Store, tmp_path: Path) -> None:
    await store.create_topic("t", TopicConfig(max_message_bytes=4096))
    log = tmp_path / "app.log"
    long_line = b'{"pad":"' + b"x" * 10_000 + b'"}'
    log.write_bytes(jsonl(0, 2) + long_line + b"\n" + jsonl(2, 3))
    await run_once(store, path=str(log), from_beginning=True, chunk_bytes=1024)
    assert numbers(await values_of(store, "t")) == [0, 1, 2]
    [dead] = await records_of(store, "t-dlq")
    assert dict(dead.headers)["headwater.line"] == b"3"
    assert dead.value == long_line[:1024]


async def test_restart_resumes_where_it_stopped(data: Path, tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    log.write_bytes(jsonl(0, 50))
    async with open_store(data) as store:
        await run_once(store, path=str(log), from_beginning=True, chunk_bytes=1024)
    append(log, jsonl(50, 60))
    async with open_store(data) as store:
        await run_once(store, path=str(log), from_beginning=True, chunk_bytes=1024)
        assert numbers(await values_of(store, "t")) == list(range(60))


async def test_a_rotation_while_stopped_is_followed_at_restart(data: Path, tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    log.write_bytes(jsonl(0, 10))
    async with open_store(data) as store:
        await run_once(store, path=str(log), from_beginning=True)
    append(log, jsonl(10, 20))
    os.rename(log, tmp_path / "app.log.1")
    log.write_bytes(jsonl(20, 30))
    async with open_store(data) as store:
        await run_once(store, path=str(log))
        assert numbers(await values_of(store, "t")) == list(range(30))


async def test_a_reused_inode_is_not_taken_for_the_old_file(data: Path, tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    log.write_bytes(jsonl(0, 10))
    async with open_store(data) as store:
        await run_once(store, path=str(log), from_beginning=True)
    # Replaced in place by other content of the same length (the same inode, as an
    # inode reused after a delete would be): the fingerprint differs, so it is new.
    log.write_bytes(jsonl(10, 20))
    async with open_store(data) as store:
        await run_once(store, path=str(log))
        assert numbers(await values_of(store, "t")) == list(range(20))


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"path": ""}, "needs a path"),
        ({"format": "xml"}, "unknown line format 'xml'"),
        ({"poll_interval_s": 0}, "poll_interval_s"),
        ({"chunk_bytes": 10}, "chunk_bytes"),
    ],
)
def test_bad_settings_are_refused(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ConnectorConfigError, match=message):
        FileSourceConfig(**{"path": "x", "topic": "t", **options})


@settings(
    max_examples=25, suppress_health_check=[HealthCheck.function_scoped_fixture], deadline=None
)
@given(
    lines=st.lists(st.integers(0, 300), min_size=1, max_size=40),
    cuts=st.lists(st.integers(0, 4000), max_size=6),
    chunk_bytes=st.sampled_from([1024, 1500, 4096]),
)
def test_any_write_pattern_stores_each_complete_line_once_in_order(
    tmp_path_factory: pytest.TempPathFactory,
    lines: list[int],
    cuts: list[int],
    chunk_bytes: int,
) -> None:
    """Written in arbitrary pieces (cutting lines anywhere), read after each piece with
    restarts in between: the topic holds exactly the complete lines, in order."""
    folder = tmp_path_factory.mktemp("pieces")
    content = b"".join(orjson.dumps({"i": i, "pad": "x" * n}) + b"\n" for i, n in enumerate(lines))
    points = sorted({min(c, len(content)) for c in cuts} | {len(content)})
    log = folder / "app.log"
    log.write_bytes(b"")

    async def main() -> list[int]:
        written = 0
        for point in points:
            append(log, content[written:point])
            written = point
            async with open_store(folder / "data") as store:
                await run_once(store, path=str(log), from_beginning=True, chunk_bytes=chunk_bytes)
        async with open_store(folder / "data") as store:
            return numbers(await values_of(store, "t"))

    got: list[int] = anyio.run(main, backend="trio")
    assert got == list(range(len(lines)))


class FlakyFiles(OsFileSystem):
    """The operating system, except that opening a file named in ``closed`` fails
    (EACCES), and the first ``read_failures`` reads fail (EIO)."""

    def __init__(self, *, closed: set[str] | None = None, read_failures: int = 0) -> None:
        self.closed = closed or set()
        self.read_failures = read_failures

    def open(self, path: Path, flags: int, mode: int = 0o777) -> int:
        if Path(path).name in self.closed:
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
        return os.open(path, flags, mode)

    def pread(self, fd: int, size: int, offset: int) -> bytes:
        if self.read_failures:
            self.read_failures -= 1
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        return os.pread(fd, size, offset)


async def test_a_file_that_cannot_be_opened_waits_while_the_others_are_read(
    store: Store, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "a.log").write_bytes(jsonl(0, 10))
    (logs / "b.log").write_bytes(jsonl(10, 20))
    fs = FlakyFiles(closed={"b.log"})
    config = FileSourceConfig(
        topic="t", path=str(logs / "*.log"), from_beginning=True, poll_interval_s=0.01
    )
    source = FileSource(StoreLog(store), LogPositionStore(store), config, fs=fs)
    async with anyio.create_task_group() as tg:
        await tg.start(source.run)
        await wait_for_count(store, "t", 10)
        fs.closed.clear()  # its permissions are fixed: it is read from its start
        await wait_for_count(store, "t", 20)
        tg.cancel_scope.cancel()
    assert numbers(await values_of(store, "t")) == list(range(20))
    warnings = [r.message for r in caplog.records if "cannot open" in r.message]
    assert len(warnings) == 1 and "b.log" in warnings[0]


async def test_failed_reads_are_retried_losing_and_repeating_nothing(
    store: Store, tmp_path: Path
) -> None:
    log = tmp_path / "app.log"
    log.write_bytes(jsonl(0, 300))
    fs = FlakyFiles(read_failures=3)
    config = FileSourceConfig(
        topic="t", path=str(log), from_beginning=True, chunk_bytes=1024, backoff_s=0.001
    )
    source = FileSource(StoreLog(store), LogPositionStore(store), config, fs=fs)
    await source.run(until_caught_up=True)
    assert source.statistics().retries == 3
    assert numbers(await values_of(store, "t")) == list(range(300))
