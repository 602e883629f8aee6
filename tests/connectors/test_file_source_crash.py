"""The file source under ``kill -9``: every line is stored, and a line is stored twice only
within the chunk that was in flight when the process died (the documented tail)."""

from __future__ import annotations

import signal
from pathlib import Path

import anyio
import orjson

from headwater.connectors import FileSource, FileSourceConfig, LogPositionStore, StoreLog
from headwater.store import open_store

from .helpers import HANG_S, python, read_topic, wait_for_line

LINES = 20_000
CHUNK_BYTES = 4096
KILLS = 3

SOURCE = """
import sys
import anyio
from headwater.connectors import BackfillProgress, FileSource, FileSourceConfig
from headwater.connectors import LogPositionStore, StoreLog
from headwater.store import open_store


class Report(BackfillProgress):
    def advance(self, lines, size):
        print("stored", lines, flush=True)


async def main(data, path):
    async with open_store(data) as store:
        config = FileSourceConfig(
            path=path, topic="t", from_beginning=True, chunk_bytes=CHUNK_BYTES, poll_interval_s=0.01
        )
        source = FileSource(StoreLog(store), LogPositionStore(store), config, progress=Report())
        await source.run()

anyio.run(main, sys.argv[1], sys.argv[2], backend="trio")
""".replace("CHUNK_BYTES", str(CHUNK_BYTES))


def line(i: int) -> bytes:
    return orjson.dumps({"i": i, "pad": "x" * 40}) + b"\n"


async def test_kill_9_mid_file_loses_nothing_and_repeats_at_most_the_last_chunk(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    log = tmp_path / "app.log"
    log.write_bytes(b"".join(line(i) for i in range(LINES)))
    per_chunk = CHUNK_BYTES // len(line(0))  # the most lines a chunk holds

    for kill in range(KILLS):
        process = python(SOURCE, str(data), str(log))
        # Let it store a few chunks beyond where the last run stopped, then kill it.
        for _ in range(5 + kill * 7):
            wait_for_line(process, b"stored")
        process.send_signal(signal.SIGKILL)
        process.wait()
        assert process.stdout is not None and process.stderr is not None
        process.stdout.close()
        process.stderr.close()

    # The last restart (here) reads on to the end.
    async with open_store(data) as store:
        config = FileSourceConfig(
            path=str(log), topic="t", from_beginning=True, chunk_bytes=CHUNK_BYTES
        )
        source = FileSource(StoreLog(store), LogPositionStore(store), config)
        with anyio.fail_after(HANG_S):
            await source.run(until_caught_up=True)

    got = [orjson.loads(r.value or b"")["i"] for r in await read_topic(data, "t")]
    assert set(got) == set(range(LINES))
    # Runs of consecutive lines; each restart may go back at most one chunk.
    restarts = [(got[k], got[k + 1]) for k in range(len(got) - 1) if got[k + 1] != got[k] + 1]
    assert len(restarts) <= KILLS
    for end, start in restarts:
        assert end + 1 - per_chunk <= start <= end, (end, start)
    assert len(got) - LINES <= KILLS * per_chunk
