"""The file sink over a real store and real files: rolling by size and by time, atomic
final files, checkpoints in the group's offsets, formats and dead letters."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import orjson
import pytest

from headwater.connectors import (
    ConnectorConfigError,
    FileSink,
    FileSinkConfig,
    SinkRunner,
    StoreLog,
    parse_final_name,
)
from headwater.groups import GroupCoordinator, TopicPartition
from headwater.store import NewRecord, Store, TopicConfig

from .helpers import records_of

GROUP = "files"


async def produce(store: Store, topic: str, values: list[bytes], partition: int = 0) -> None:
    if not store.has_topic(topic):
        await store.create_topic(topic, TopicConfig(partitions=2))
    await store.append(topic, [NewRecord(v) for v in values], partition=partition)


def objects(start: int, stop: int) -> list[bytes]:
    return [orjson.dumps({"i": i, "user": f"u{i % 3}"}) for i in range(start, stop)]


def final_files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.iterdir() if parse_final_name(p.name) is not None)


def read_lines(directory: Path) -> list[int]:
    """The ``i`` of every line of every final file, file by file."""
    out = []
    for path in final_files(directory):
        out.extend(orjson.loads(line)["i"] for line in path.read_bytes().splitlines())
    return out


@asynccontextmanager
async def sink_runner(store: Store, directory: Path, **options: Any) -> AsyncIterator[SinkRunner]:
    config = FileSinkConfig(topic="t", directory=str(directory), **options)
    async with GroupCoordinator(store) as groups:
        yield SinkRunner(groups, "t", GROUP, FileSink(StoreLog(store), config))


async def test_rolls_by_size_into_complete_final_files(store: Store, tmp_path: Path) -> None:
    out = tmp_path / "out"
    await produce(store, "t", objects(0, 200))
    async with sink_runner(store, out, roll_bytes=1000) as runner:
        await runner.run(until_caught_up=True)
        committed = runner.groups.committed(GROUP)
    files = final_files(out)
    assert len(files) > 3
    assert read_lines(out) == list(range(200))
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]
    for path in files:
        topic, partition, first, last = parse_final_name(path.name) or ("", 0, 0, 0)
        lines = path.read_bytes().splitlines()
        assert (topic, partition) == ("t", 0)
        assert [orjson.loads(x)["i"] for x in lines] == list(range(first, last + 1))
    assert committed[TopicPartition("t", 0)].offset == 200
    assert orjson.loads(committed[TopicPartition("t", 0)].metadata)["file"] == files[-1].name


async def test_rolls_an_idle_file_by_time(store: Store, tmp_path: Path) -> None:
    out = tmp_path / "out"
    await produce(store, "t", objects(0, 5))
    async with sink_runner(store, out, roll_s=0.05) as runner, anyio.create_task_group() as tg:
        await tg.start(runner.run)
        # Nothing more arrives: the file is finished by its deadline alone.
        with anyio.fail_after(60):
            await runner.wait_committed({TopicPartition("t", 0): 5})
        assert read_lines(out) == list(range(5))
        await produce(store, "t", objects(5, 8))
        with anyio.fail_after(60):
            await runner.wait_committed({TopicPartition("t", 0): 8})
        runner.stop()
    assert read_lines(out) == list(range(8))
    assert len(final_files(out)) == 2


async def test_a_clean_stop_finishes_open_files_and_a_restart_continues(
    store: Store, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    await produce(store, "t", objects(0, 10), partition=0)
    await produce(store, "t", objects(10, 20), partition=1)
    async with sink_runner(store, out) as runner:
        await runner.run(until_caught_up=True)
    assert sorted(read_lines(out)) == list(range(20))
    await produce(store, "t", objects(20, 30), partition=1)
    async with sink_runner(store, out) as runner:
        await runner.run(until_caught_up=True)
    assert sorted(read_lines(out)) == list(range(30))
    assert len(final_files(out)) == 3


async def test_values_a_file_cannot_hold_go_to_the_dead_letter_topic(
    store: Store, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    await produce(store, "t", [b'{"i":0}', b"not json", b'{"i":\n1}', b"", b'{"i":2}'])
    async with sink_runner(store, out) as runner:
        await runner.run(until_caught_up=True)
    assert [orjson.loads(x) for p in final_files(out) for x in p.read_bytes().splitlines()] == [
        {"i": 0},
        {"i": 1},
        {"i": 2},
    ]
    dead = await records_of(store, "t-dlq")
    assert [r.value for r in dead] == [b"not json", b""]
    assert [dict(r.headers)["headwater.offset"] for r in dead] == [b"1", b"3"]
    assert all(dict(r.headers)["headwater.topic"] == b"t" for r in dead)


async def test_a_value_with_line_ends_nested_past_what_json_writes_is_written_on_one_line(
    store: Store, tmp_path: Path
) -> None:
    # orjson reads it but cannot write it again (254 levels at most): its line ends, which
    # JSON text holds only between tokens, become spaces.
    deep = b"[" * 300 + b"\n" + b"1" + b"]" * 300
    out = tmp_path / "out"
    await produce(store, "t", [b'{"i":\n0}', deep, b'{"i":2}'])
    async with sink_runner(store, out) as runner:
        await runner.run(until_caught_up=True)
    lines = [x for p in final_files(out) for x in p.read_bytes().splitlines()]
    assert lines == [b'{"i":0}', b"[" * 300 + b" 1" + b"]" * 300, b'{"i":2}']
    assert orjson.loads(lines[1]) == orjson.loads(deep)


async def test_csv_files_have_a_header_and_one_row_per_object(store: Store, tmp_path: Path) -> None:
    out = tmp_path / "out"
    await produce(
        store, "t", [b'{"user":"ann","ms":12}', b"[1]", b'{"ms":3,"user":"b,c","x":{"y":1}}']
    )
    async with sink_runner(store, out, format="csv") as runner:
        await runner.run(until_caught_up=True)
    [path] = final_files(out)
    assert path.suffix == ".csv"
    assert path.read_text() == 'user,ms\nann,12\n"b,c",3\n'
    [dead] = await records_of(store, "t-dlq")
    assert dead.value == b"[1]"


async def test_a_csv_cell_nested_past_what_json_writes_goes_to_the_dead_letter_topic(
    store: Store, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    deep = b'{"user":"d","ms":' + b"[" * 300 + b"1" + b"]" * 300 + b"}"
    await produce(store, "t", [b'{"user":"ann","ms":12}', deep, b'{"user":"b","ms":3}'])
    async with sink_runner(store, out, format="csv") as runner:
        await runner.run(until_caught_up=True)
    [path] = final_files(out)
    assert path.read_text() == "user,ms\nann,12\nb,3\n"
    [dead] = await records_of(store, "t-dlq")
    assert dead.value == deep


#: A value with integers beyond 64 bits, and a line end (so that it is written anew).
WIDE = b'{"id":\n123456789012345678901,"n":-9223372036854775809}'


async def test_integers_beyond_64_bits_are_written_exactly(store: Store, tmp_path: Path) -> None:
    await produce(store, "t", [WIDE])
    async with sink_runner(store, tmp_path) as runner:
        await runner.run(until_caught_up=True)
    [path] = final_files(tmp_path)
    assert path.read_bytes() == b'{"id":123456789012345678901,"n":-9223372036854775809}\n'


async def test_integers_beyond_64_bits_are_written_exactly_as_csv_cells(
    store: Store, tmp_path: Path
) -> None:
    await produce(store, "t", [WIDE])
    async with sink_runner(store, tmp_path, format="csv") as runner:
        await runner.run(until_caught_up=True)
    [path] = final_files(tmp_path)
    assert path.read_bytes() == b"id,n\n123456789012345678901,-9223372036854775809\n"


async def test_a_final_file_not_yet_committed_is_resumed_after(
    store: Store, tmp_path: Path
) -> None:
    """What a crash between the rename and the commit leaves: a final file ahead of the
    group's offset, and a temporary file; the next run skips the one, drops the other."""
    out = tmp_path / "out"
    out.mkdir()
    await produce(store, "t", objects(0, 10))
    (out / "t-0-00000000000000000000-00000000000000000005.jsonl").write_bytes(
        b"".join(v + b"\n" for v in objects(0, 6))
    )
    (out / ".t-0-00000000000000000006.jsonl.tmp").write_bytes(objects(6, 7)[0])
    async with sink_runner(store, out) as runner:
        await runner.run(until_caught_up=True)
    assert read_lines(out) == list(range(10))
    assert sorted(p.name for p in out.iterdir())[-1].endswith("00000000000000000009.jsonl")
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"format": "parquet"}, "unknown file format 'parquet'"),
        ({"roll_bytes": 0}, "roll_bytes"),
        ({"roll_s": 0}, "roll_s"),
        ({"directory": ""}, "needs a directory"),
        ({"columns": ()}, "at least one column"),
    ],
)
def test_bad_settings_are_refused(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ConnectorConfigError, match=message):
        FileSinkConfig(**{"topic": "t", "directory": "d", **options})
