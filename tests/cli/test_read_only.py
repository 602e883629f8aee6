"""Reading commands work on a read-only data directory and never write to any.

The read-only file system is real: the data directory is bind-mounted read-only onto
itself inside a private mount namespace (``unshare --user --map-root-user --mount``, which
needs no privileges), and the commands run there. Two directories: one closed cleanly,
and one left as a crash leaves it (no clean-shutdown marker, a torn tail, a compaction
past its commit point but not swapped in), which a writer's open would change. Reading
either on a writable file system must leave every name, byte and mtime as it was.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import anyio
import pytest

from headwater.store import (
    CleanupPolicy,
    NewRecord,
    PartitionLog,
    TopicConfig,
    open_store,
)
from headwater.store._cleaner import plan_cleaning, write_swap_files

from .helpers import HEADWATER, Headwater

PARTITIONS = 3
PER_PARTITION = 40

#: Runs in the private namespace: mount DATA read-only onto itself, then run each command.
_DRIVER = """
import json, subprocess, sys
data, headwater, commands = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
for mount in (["mount", "--bind", data, data], ["mount", "-o", "remount,bind,ro", data]):
    subprocess.run(mount, check=True)
results = []
for command in commands:
    done = subprocess.run([headwater, "--data", data, *command], capture_output=True, text=True)
    results.append([done.returncode, done.stdout, done.stderr])
probe = subprocess.run(["touch", data + "/probe"], capture_output=True, text=True)
print(json.dumps({"results": results, "probe": probe.returncode}))
"""


def run_on_read_only_mount(
    data: Path, commands: list[list[str]]
) -> list[subprocess.CompletedProcess[str]]:
    """Run ``headwater --data DATA COMMAND`` for each command, DATA mounted read-only."""
    if shutil.which("unshare") is None:
        pytest.skip("needs unshare(1) for a private read-only mount")
    done = subprocess.run(
        [
            "unshare",
            "--user",
            "--map-root-user",
            "--mount",
            sys.executable,
            "-c",
            _DRIVER,
            str(data),
            HEADWATER,
            json.dumps(commands),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot make a private read-only mount here: {done.stderr.strip()}")
    report = json.loads(done.stdout)
    assert report["probe"] != 0, "the mount is not read-only"
    return [
        subprocess.CompletedProcess(command, rc, out, err)
        for command, (rc, out, err) in zip(commands, report["results"], strict=True)
    ]


def snapshot(data: Path) -> dict[str, tuple[int, int, str]]:
    """Every name under ``data`` with its size, mtime and content hash."""
    out = {}
    for path in sorted(data.rglob("*")):
        stat = path.stat()
        digest = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else ""
        out[str(path.relative_to(data))] = (stat.st_size, stat.st_mtime_ns, digest)
    return out


def value(partition: int, offset: int) -> bytes:
    return json.dumps({"p": partition, "o": offset}).encode()


def make_clean(data: Path) -> None:
    async def main() -> None:
        async with open_store(data) as store:
            await store.create_topic("clicks", TopicConfig(partitions=PARTITIONS))
            for p in range(PARTITIONS):
                records = [NewRecord(value=value(p, o)) for o in range(PER_PARTITION)]
                await store.append("clicks", records, partition=p)

    anyio.run(main, backend="trio")


def make_crashed(data: Path) -> None:
    """A data directory as a crash leaves it, with work that a writer's open would finish."""
    make_clean(data)

    async def create_compacted() -> None:
        async with open_store(data) as store:
            config = TopicConfig(cleanup_policy=CleanupPolicy.COMPACT, segment_bytes=1024)
            await store.create_topic("table", config)

    anyio.run(create_compacted, backend="trio")
    for p in range(PARTITIONS):
        folder = data / "clicks" / str(p)
        log = PartitionLog.open(folder, TopicConfig(partitions=PARTITIONS))
        end = log.log_end_offset
        log.append([NewRecord(value=value(p, o)) for o in range(end, end + 5)])
        log.flush()
        log.abandon()  # a crash: no clean-shutdown marker
    # A torn tail in partition 0: half a batch after the last whole one.
    segment = data / "clicks" / "0" / "00000000000000000000.log"
    with segment.open("ab") as f:
        f.write(segment.read_bytes()[:40])
    # The compacted topic: a compaction past its commit point, not swapped in.
    table = data / "table" / "0"
    log = PartitionLog.open(
        table, TopicConfig(cleanup_policy=CleanupPolicy.COMPACT, segment_bytes=1024)
    )
    for i in range(60):
        log.append([NewRecord(value=b"v%d" % i, key=b"k%d" % (i % 4))])
    log.flush()
    plan = plan_cleaning(log, 0)
    assert plan is not None
    write_swap_files(log, plan)
    log.abandon()
    assert any(p.name.endswith(".swap") for p in table.iterdir())


READS = [
    ["topics", "list"],
    ["topics", "describe", "clicks"],
    ["consume", "clicks"],
    ["consume", "clicks", "-p", "1", "--from", "30"],
    ["trace", "clicks", "2", "7"],
    ["groups", "list"],
]


def check_reads(results: list[subprocess.CompletedProcess[str]], end: int) -> None:
    for result in results:
        assert result.returncode == 0, result
        assert "Traceback" not in result.stderr
    listed, described, consumed, from_30, traced, groups = results
    assert "clicks" in listed.stdout
    assert "clicks" in described.stdout
    printed = sorted((d["p"], d["o"]) for d in map(json.loads, consumed.stdout.splitlines()))
    assert printed == [(p, o) for p in range(PARTITIONS) for o in range(end)]
    assert [json.loads(line)["o"] for line in from_30.stdout.splitlines()] == list(range(30, end))
    assert "clicks/2/7" in traced.stdout
    assert groups.returncode == 0


def test_a_cleanly_closed_directory_reads_on_a_read_only_mount(data: Path) -> None:
    make_clean(data)
    before = snapshot(data)
    results = run_on_read_only_mount(data, READS)
    check_reads(results, PER_PARTITION)
    assert snapshot(data) == before


def test_a_crashed_directory_reads_on_a_read_only_mount(data: Path) -> None:
    make_crashed(data)
    results = run_on_read_only_mount(data, [*READS, ["consume", "table", "--show-meta"]])
    check_reads(results[:-1], PER_PARTITION + 5)
    table = [json.loads(line) for line in results[-1].stdout.splitlines()]
    # The view a writer's open would leave: the compacted segment read from its swap file.
    keys = [r["key"] for r in table]
    assert results[-1].returncode == 0, results[-1]
    assert len(keys) < 60 and set(keys) == {"k0", "k1", "k2", "k3"}
    latest = {r["key"]: r["value"] for r in table}
    assert latest == {f"k{k}": f"v{56 + k}" for k in range(4)}


@pytest.mark.parametrize("state", ["clean", "crashed"])
def test_reading_never_writes_to_a_writable_directory(
    hw: Headwater, data: Path, state: str
) -> None:
    (make_clean if state == "clean" else make_crashed)(data)
    before = snapshot(data)
    for command in READS:
        result = hw(*command)
        assert result.returncode == 0, result
    assert snapshot(data) == before
    # A writer's open is what settles the crash, and only then.
    assert hw("produce", "clicks", input='{"p": 9}\n').returncode == 0
    assert snapshot(data) != before
