"""The webhook sink under ``kill -9`` mid-batch: the restarted sink sends that batch again
(same idempotency key, same records) and nothing else that was already delivered.

More records arrive while the sink is down, so a batch formed afresh at the restart would
be longer than the one in flight: the committed extent keeps it the same."""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

import anyio
import anyio.to_thread
import orjson

from headwater.store import NewRecord, TopicConfig, open_store

from .helpers import HEADWATER
from .scripted_server import Answer, Received, assert_sent_again_and_nothing_else, scripted_server

RECORDS = 60
FIRST_RUN = 25  # records there when the first run starts: its third batch is 20-24
HELD = 2  # the request the first run dies in


def sink(data: Path, url: str) -> subprocess.Popen[bytes]:
    """Run ``headwater connect webhook`` until it has delivered everything."""
    return subprocess.Popen(
        [HEADWATER, "--data", str(data), "connect", "webhook", "t", "--url", url,
         "--batch-records", "10", "--until-caught-up"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )  # fmt: skip


async def test_kill_9_mid_batch_redelivers_that_batch_and_nothing_else(tmp_path: Path) -> None:
    data = tmp_path / "data"
    await append(data, 0, FIRST_RUN)

    def script(n: int, request: Received) -> Answer:
        return Answer(hang=True) if n == HELD else Answer(200)

    async with scripted_server(script) as (server, url):
        first = sink(data, url)
        await server.wait_for(HELD + 1)  # it is sending the batch that will hang
        first.send_signal(signal.SIGKILL)
        await anyio.to_thread.run_sync(first.communicate)
        held = server.received[HELD]
        await append(data, FIRST_RUN, RECORDS)

        second = sink(data, url)
        # Waited for in a thread: the server answers it on this event loop meanwhile.
        _, err = await anyio.to_thread.run_sync(second.communicate)
        assert second.returncode == 0, err.decode()

    assert [v["i"] for v in orjson.loads(held.body)] == list(range(20, 25))
    assert_sent_again_and_nothing_else(server, HELD, RECORDS)


async def append(data: Path, start: int, stop: int) -> None:
    async with open_store(data) as store:
        if not store.has_topic("t"):
            await store.create_topic("t", TopicConfig(partitions=1))
        await store.append("t", [NewRecord(b'{"i":%d}' % i) for i in range(start, stop)])
