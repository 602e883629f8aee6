"""``headwater connect file-sink`` under ``kill -9`` at each step of a roll, on a data
directory and on a cluster (``headwater broker``, Apache Kafka): no final file is ever
partial, and after a restart the final files hold every input record exactly once (as
the sink promises: a committed record is never lost, and a record in a final file is
never written to another).

The command runs in a subprocess whose sink writes through a file system that stops at
a chosen step of its N-th roll (before the fsync of the file, before the rename, before
the directory's fsync, after it and before the commit) and says so; the test kills it
there, then runs the command again until caught up. On a cluster the offsets are
committed in the cluster's consumer group, so the restart resumes from what that group
committed and what the directory holds.
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
from pathlib import Path

import orjson
import pytest
from apache_kafka.running import ApacheKafka
from broker.running import BrokerProcess

from headwater.connectors import ConnectorLog, KafkaCluster, KafkaLog, StoreLog, parse_final_name
from headwater.store import TopicConfig, open_store

from .helpers import HANG_S, HEADWATER, python, wait_for_line

RECORDS = 300
PARTITIONS = 2
BATCH = 40  # records per append: each goes to one partition, the next to the other

SINK = """
import os
import stat
import sys
import time

from headwater.cli._main import run
from headwater.connectors import _file_sink
from headwater.store import OsFileSystem

STEP, NTH = sys.argv[1], int(sys.argv[2])


class StopAt(OsFileSystem):
    rolls = 0

    def stop(self, step):
        if step == STEP and self.rolls == NTH:
            print("stopped", step, flush=True)
            time.sleep(3600)

    def fsync(self, fd):
        if stat.S_ISDIR(os.fstat(fd).st_mode):
            self.stop("before-directory-fsync")
            os.fsync(fd)
            self.stop("before-commit")
        else:
            self.rolls += 1
            self.stop("before-file-fsync")
            os.fsync(fd)

    def rename(self, src, dst):
        self.stop("before-rename")
        os.rename(src, dst)


# The command's sink takes the operating system's file system by default: this one.
_file_sink.OsFileSystem = StopAt
sys.exit(run(sys.argv[3:]))
"""


#: The steps of a roll at which the sink is killed. On a cluster, where each case waits
#: 10 s for the killed member's session to end before the restart can join, one step
#: each, the two that leave different things behind: a temporary file (before the
#: rename), a final file whose offsets are not committed (before the commit); the other
#: two leave what one of these leaves.
STEPS = ["before-file-fsync", "before-rename", "before-directory-fsync", "before-commit"]
CASES = [
    *(("data-directory", step) for step in STEPS),
    pytest.param("headwater-broker", "before-commit", marks=pytest.mark.slow),
    pytest.param("apache-kafka", "before-rename", marks=pytest.mark.slow),
]


@pytest.fixture
def where(request: pytest.FixtureRequest, tmp_path: Path) -> list[str]:
    """The option that puts ``headwater connect`` on a data directory, or on a cluster:
    ``headwater broker``, then Apache Kafka (skipped where it cannot run)."""
    if request.param == "apache-kafka":
        kafka: ApacheKafka = request.getfixturevalue("apache_kafka")
        return ["--bootstrap", kafka.bootstrap]
    if request.param == "headwater-broker":
        broker: BrokerProcess = request.getfixturevalue("headwater_broker")
        return ["--bootstrap", broker.bootstrap]
    return ["--data", str(tmp_path / "data")]


def value(i: int) -> bytes:
    return orjson.dumps({"i": i, "pad": "x" * 20})


async def load(where: list[str], topic: str) -> dict[int, dict[int, int]]:
    """Create ``topic`` and append records 0 to ``RECORDS - 1`` to it in batches; return
    the record at each offset of each partition."""
    option, address = where
    placed: dict[int, dict[int, int]] = {p: {} for p in range(PARTITIONS)}
    async with contextlib.AsyncExitStack() as stack:
        log: ConnectorLog
        if option == "--data":
            store = await stack.enter_async_context(open_store(address))
            log = StoreLog(store, topic_config=TopicConfig(partitions=PARTITIONS))
            await log.ensure_topic(topic)
        else:
            log = await stack.enter_async_context(KafkaLog(KafkaCluster(address)))
            await log.ensure_topic(topic, partitions=PARTITIONS)
        for start in range(0, RECORDS, BATCH):
            batch = range(start, min(start + BATCH, RECORDS))
            appended = await log.append(topic, [value(i) for i in batch])
            for (partition, offset), i in zip(appended.offsets(), batch, strict=True):
                placed[partition][offset] = i
    assert all(placed.values())  # both partitions have files to roll
    return placed


def check_final_files(out: Path, placed: dict[int, dict[int, int]]) -> list[int]:
    """Check that each final file holds exactly its offsets' records; return them all."""
    seen = []
    for path in sorted(out.iterdir()):
        parsed = parse_final_name(path.name)
        if parsed is None:
            assert path.name.endswith(".tmp"), path.name
            continue
        _, partition, first, last = parsed
        lines = [orjson.loads(line)["i"] for line in path.read_bytes().splitlines()]
        assert lines == [placed[partition][o] for o in range(first, last + 1)], path.name
        seen.extend(lines)
    return seen


@pytest.mark.parametrize(("where", "step"), CASES, indirect=["where"])
async def test_kill_9_during_a_roll(
    tmp_path: Path, where: list[str], topic: str, step: str
) -> None:
    out = tmp_path / "out"
    placed = await load(where, topic)

    def file_sink(roll_bytes: int) -> list[str]:
        return ["connect", "file-sink", topic, "--dir", str(out), "--roll-bytes",
                str(roll_bytes), "--until-caught-up", *where]  # fmt: skip

    sink = python(SINK, step, "3", *file_sink(700))
    wait_for_line(sink, b"stopped")
    sink.send_signal(signal.SIGKILL)
    sink.communicate()
    before = check_final_files(out, placed)  # no final file is partial
    assert len(before) < RECORDS

    # Restarted with files of another size: a record already in a final file must not
    # be written again, even where the new files' bounds differ from the old ones. On a
    # cluster it joins once the group has given up on the killed member (its session).
    restarted = subprocess.run(
        [HEADWATER, *file_sink(1100)], capture_output=True, timeout=HANG_S, check=False
    )
    assert restarted.returncode == 0, restarted.stderr.decode()
    after = check_final_files(out, placed)
    assert sorted(after) == list(range(RECORDS))  # every record, once
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]
