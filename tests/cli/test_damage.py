"""Damaged records through the CLI: readers step past them, writers refuse, repair fixes.

The data directory holds topic ``clicks`` with four partitions whose records are a pure
function of (partition, offset); one batch in the middle of partition 0 is damaged.
"""

from __future__ import annotations

import json
from pathlib import Path

import anyio
import pytest

from headwater.processing import encode_key
from headwater.store import (
    NewRecord,
    TopicConfig,
    open_store,
    parse_batch_header,
    partition_for_key,
)
from headwater.store._checkpoint import RecoveryPoint, write_recovery_point
from headwater.store._files import CLEAN_SHUTDOWN_FILE
from headwater.store._fs import OS_FILE_SYSTEM

from .helpers import Headwater, assert_error

PARTITIONS = 4
BATCHES = 30
PER_BATCH = 10


def value(partition: int, offset: int) -> dict[str, int]:
    return {"p": partition, "o": offset}


def make_topic(data: Path) -> None:
    async def main() -> None:
        async with open_store(data) as store:
            await store.create_topic("clicks", TopicConfig(partitions=PARTITIONS))
            for p in range(PARTITIONS):
                for b in range(BATCHES):
                    records = [
                        NewRecord(value=json.dumps(value(p, o)).encode())
                        for o in range(b * PER_BATCH, (b + 1) * PER_BATCH)
                    ]
                    await store.append("clicks", records, partition=p)

    anyio.run(main, backend="trio")


def damage_partition_0(data: Path, *, crashed: bool) -> range:
    """Flip a bit inside batch 12 of partition 0; return the offsets it held.

    ``crashed``: leave the folder as after a crash whose checkpoint was at the start, so
    that recovery meets the damage (otherwise only a reader does).
    """
    folder = data / "clicks" / "0"
    path = folder / "00000000000000000000.log"
    raw = bytearray(path.read_bytes())
    position = 0
    for _ in range(12):
        position += parse_batch_header(raw, position).size
    raw[position + 70] ^= 0x01
    path.write_bytes(raw)
    if crashed:
        (folder / CLEAN_SHUTDOWN_FILE).unlink()
        write_recovery_point(OS_FILE_SYSTEM, folder, RecoveryPoint(0, 0, 0))
    return range(12 * PER_BATCH, 13 * PER_BATCH)


def printed(stdout: str) -> set[tuple[int, int]]:
    return {(d["p"], d["o"]) for d in map(json.loads, stdout.splitlines())}


def everything_but(damaged: range) -> set[tuple[int, int]]:
    return {
        (p, o)
        for p in range(PARTITIONS)
        for o in range(BATCHES * PER_BATCH)
        if not (p == 0 and o in damaged)
    }


@pytest.mark.parametrize("crashed", [False, True], ids=["clean", "after-a-crash"])
def test_consume_prints_every_valid_record_and_reports_the_damage_once(
    hw: Headwater, data: Path, crashed: bool
) -> None:
    make_topic(data)
    damaged = damage_partition_0(data, crashed=crashed)
    result = hw("consume", "clicks")
    assert result.returncode == 1, result
    # Every partition is printed, and partition 0 on both sides of the damage.
    assert printed(result.stdout) == everything_but(damaged)
    lines = result.stderr.splitlines()
    assert len(lines) == 2, result.stderr
    assert "clicks/0: skipping damaged records" in lines[0]
    assert f"offsets {damaged[0]} to {damaged[-1]} cannot be read" in lines[0]
    assert f"reading can resume at offset {damaged[-1] + 1}" in lines[0]
    assert lines[1].startswith("headwater: error: 1 damaged range(s) of clicks were skipped")


def test_consume_from_before_the_damage_and_trace_of_an_earlier_record(
    hw: Headwater, data: Path
) -> None:
    make_topic(data)
    damaged = damage_partition_0(data, crashed=False)
    result = hw("consume", "clicks", "-p", "0", "--from", "100")
    assert result.returncode == 1, result
    assert printed(result.stdout) == {
        (0, o) for o in range(100, BATCHES * PER_BATCH) if o not in damaged
    }
    # A record in the same read as the damage, just before it.
    traced = hw("trace", "clicks", "0", str(damaged[0] - 1))
    assert traced.returncode == 0, traced.stderr
    assert f"clicks/0/{damaged[0] - 1}" in traced.stdout
    assert json.dumps(value(0, damaged[0] - 1)) in traced.stdout
    # The damaged record itself is an error that says so.
    assert_error(hw("trace", "clicks", "0", str(damaged[0])), "cannot be read")


def test_a_writer_refuses_the_damage_until_it_is_repaired(hw: Headwater, data: Path) -> None:
    make_topic(data)
    damaged = damage_partition_0(data, crashed=True)
    before = sorted((p.name, p.stat().st_size) for p in (data / "clicks" / "0").iterdir())
    refused = hw("produce", "clicks", input='{"new": 1}\n')
    line = assert_error(
        refused,
        "00000000000000000000.log, position",
        f"offsets {damaged[0]} to {damaged[-1]} cannot be read",
        "nothing was deleted",
        f"headwater repair clicks --partition 0 --data {data}",
    )
    assert "torn tail" in line
    after = sorted((p.name, p.stat().st_size) for p in (data / "clicks" / "0").iterdir())
    assert after == before

    report = hw("repair", "clicks")
    assert report.returncode == 1, report
    lines = report.stdout.splitlines()
    assert lines[0].startswith("clicks/0: would move bytes ")
    assert f"offsets {damaged[0]} to {damaged[-1]}" in lines[0]
    assert lines[1:] == [f"clicks/{p}: no damage found" for p in range(1, PARTITIONS)]
    assert "--yes" in report.stderr
    assert sorted((p.name, p.stat().st_size) for p in (data / "clicks" / "0").iterdir()) == before

    done = hw("repair", "clicks", "--partition", "0", "--yes")
    assert done.returncode == 0, done
    assert done.stdout.startswith("clicks/0: moved bytes ")
    quarantined = [p for p in (data / "clicks" / "0").iterdir() if p.suffix == ".quarantine"]
    assert len(quarantined) == 1

    key = next(
        f"k{i}" for i in range(100) if partition_for_key(encode_key(f"k{i}"), PARTITIONS) == 0
    )
    new = json.dumps({"p": 0, "o": 300, "k": key})
    produced = hw("produce", "clicks", "--key", "k", input=new + "\n")
    assert produced.returncode == 0, produced.stderr
    assert produced.stdout.strip() == f"0:{BATCHES * PER_BATCH}"
    result = hw("consume", "clicks")
    assert result.returncode == 0, result.stderr
    assert printed(result.stdout) == everything_but(damaged) | {(0, 300)}
