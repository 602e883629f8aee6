"""Power-loss crash tests: the log under ``faultfs.FaultFS``, cut off at a random operation.

``kill -9`` keeps the page cache, so a crash test built on it passes whether or not the
log fsyncs its data, its indexes, its checkpoint and its directory entries. Here every
file operation of the log goes through FaultFS, which remembers what each fsync made
durable; at a random operation the power goes, and the folder is rewritten to what a
real power cut could leave (unsynced writes dropped or torn, unsynced creations, renames
and unlinks undone). Then the log is opened again and checked:

* it opens (recovery copes with whatever the cut left);
* every acknowledged record is there, byte for byte (an append is acknowledged once the
  flush after it returned; under ``Partition`` once ``append`` returned), except those
  that retention had removed; compaction only ever removes records superseded by a later
  one of the same key;
* nothing it returns is corrupt: every batch passes its CRC, every record is the one
  written at its offset, offsets only grow;
* it accepts appends again.

A cycle's workload mixes appends acknowledged one by one (``always``) and in groups
(``batch``), appends never acknowledged, rolls, retention, compaction, index and
checkpoint writes (at rolls and clean closes), clean closes and process kills (which keep
unsynced data, as the page cache does). Sometimes the power goes during recovery itself.

The seed is fixed so that a failure replays (set ``HEADWATER_POWER_LOSS_SEED``);
``bench/power_loss_soak.py`` runs thousands of cycles with other seeds.
"""

from __future__ import annotations

import hashlib
import os
import random
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from faultfs import FaultFS, PowerLoss

from headwater.store import (
    CleanupPolicy,
    Compression,
    NewRecord,
    PartitionLog,
    TopicConfig,
    decode_records,
    open_store,
    parse_batch_header,
)
from headwater.store._cleaner import clean_partition

SEED = int(os.environ.get("HEADWATER_POWER_LOSS_SEED", "6061"))
BASE_TIMESTAMP = 1_700_000_000_000
KEYS = 13


def expected_record(offset: int) -> NewRecord:
    """The record written at ``offset``: a pure function of it, so a reader can check it."""
    digest = hashlib.blake2b(offset.to_bytes(8, "big"), digest_size=8).hexdigest().encode()
    value = b"%d:" % offset + digest * (1 + offset % 9)
    key = b"k%d" % (int(digest[:4], 16) % KEYS)
    headers = (("h", str(offset).encode()),) if offset % 7 == 0 else ()
    return NewRecord(value=value, key=key, timestamp=BASE_TIMESTAMP + offset, headers=headers)


def records_for(base: int, count: int) -> list[NewRecord]:
    return [expected_record(o) for o in range(base, base + count)]


@dataclass
class History:
    """What the writers were told, across every life of one log."""

    compacted: bool
    #: Every offset below this was acknowledged.
    acked_end: int = 0
    #: The log start offset the last life had reached (retention may be undone, not redone).
    start: int = 0
    power_losses: int = 0
    losses_in_recovery: int = 0
    kills: int = 0
    clean_closes: int = 0
    records_checked: int = 0
    lost: list[int] = field(default_factory=list)
    unsynced_bytes_kept: int = 0
    entries_undone: int = 0

    def acknowledge(self, next_offset: int) -> None:
        self.acked_end = max(self.acked_end, next_offset)


def topic_config(rng: random.Random) -> TopicConfig:
    compacted = rng.random() < 0.3
    return TopicConfig(
        cleanup_policy=CleanupPolicy.COMPACT if compacted else CleanupPolicy.DELETE,
        segment_bytes=rng.choice((1024, 2048, 4096)),
        index_interval_bytes=rng.choice((0, 256, 1024)),
        retention_ms=-1,
        retention_bytes=rng.choice((-1, 6000, 20000)),
        delete_retention_ms=0,
    )


def start_after_retention(log: PartitionLog) -> int:
    """Where retention by size will make ``log`` start (a model of the rule)."""
    segments = log.segments
    limit = log.config.retention_bytes
    if log.config.cleanup_policy is CleanupPolicy.COMPACT or limit < 0:
        return log.log_start_offset
    total = sum(s.size for s in segments)
    i = 0
    while i < len(segments) - 1 and total - segments[i].size >= limit:
        total -= segments[i].size
        i += 1
    return segments[i].base_offset


def check_log(log: PartitionLog, history: History, rng: random.Random) -> None:
    """Check a reopened log against what was acknowledged (see the module docstring)."""
    start, end = log.log_start_offset, log.log_end_offset
    assert start <= history.start, f"log starts at {start}, past {history.start}: records lost"
    assert end >= history.acked_end, (
        f"log ends at {end} but {history.acked_end} records were acknowledged"
    )
    present = []
    offset = start
    while offset < end:
        data = log.read(offset, rng.choice((1, 3000, 1 << 20)))
        assert data, f"read({offset}) returned nothing below the log end {end}"
        position = 0
        while position < len(data):
            header = parse_batch_header(data, position)
            for record in decode_records(data, position, verify=True):
                if record.offset < offset:
                    continue  # the first batch may begin before the offset asked for
                assert not present or record.offset > present[-1], "offsets went backwards"
                want = expected_record(record.offset)
                got = (record.key, record.value, record.timestamp, record.headers)
                assert got == (want.key, want.value, want.timestamp, tuple(want.headers)), (
                    f"record {record.offset} is not the one written there"
                )
                present.append(record.offset)
            offset = max(offset, header.next_offset)
            position += header.size
    history.records_checked += len(present)
    acked = range(start, history.acked_end)
    if not history.compacted:
        missing = sorted(set(acked) - set(present))
    else:
        # Compaction keeps, for every key, its latest record.
        latest_present: dict[bytes, int] = {}
        for o in present:
            latest_present[expected_record(o).key or b""] = o
        latest_acked: dict[bytes, int] = {}
        for o in acked:
            latest_acked[expected_record(o).key or b""] = o
        missing = sorted(o for k, o in latest_acked.items() if latest_present.get(k, -1) < o)
    history.lost.extend(missing)
    assert not missing, f"acknowledged records lost: {missing[:20]} ({len(missing)})"
    if not history.compacted and present:
        assert present == list(range(start, end)), "offsets are not dense"
        for probe in rng.sample(present, min(len(present), 10)):
            header = parse_batch_header(log.read(probe, 1))
            assert header.base_offset <= probe < header.next_offset, (probe, header)


class Life:
    """One run of the log on one simulated machine, until the power goes."""

    def __init__(
        self, fs: FaultFS, directory: Path, config: TopicConfig, history: History, seed: int
    ) -> None:
        self.fs = fs
        self.directory = directory
        self.config = config
        self.history = history
        self.rng = random.Random(seed)
        self.now = BASE_TIMESTAMP
        self.log: PartitionLog | None = None

    def clock(self) -> int:
        self.now += 1
        return self.now

    def open(self) -> PartitionLog:
        self.log = PartitionLog.open(self.directory, self.config, clock=self.clock, fs=self.fs)
        self.history.start = self.log.log_start_offset
        return self.log

    def append(self, log: PartitionLog) -> int:
        count = self.rng.choice((1, 1, 2, 3, 8, 20))
        codec = Compression.GZIP if self.rng.random() < 0.15 else Compression.NONE
        info = log.append(records_for(log.log_end_offset, count), compression=codec)
        return info.next_offset

    def step(self, log: PartitionLog) -> PartitionLog:
        """One random action; returns the log to go on with (a new one after a restart)."""
        history = self.history
        action = self.rng.random()
        if action < 0.35:  # `always`: each append acknowledged after its own flush
            end = self.append(log)
            log.flush()
            history.acknowledge(end)
        elif action < 0.55:  # `batch`: several appends share one flush
            end = 0
            for _ in range(self.rng.randint(2, 5)):
                end = self.append(log)
            log.flush()
            history.acknowledge(end)
        elif action < 0.65:  # written, never acknowledged
            self.append(log)
        elif action < 0.70:
            log.roll()
        elif action < 0.78:
            if self.config.cleanup_policy is CleanupPolicy.COMPACT:
                clean_partition(log, self.clock())
            else:
                # A cut part-way may leave any of the deletions retention decided on.
                history.start = start_after_retention(log)
                log.enforce_retention()
                assert log.log_start_offset == history.start
        elif action < 0.81:
            log.close()
            history.clean_closes += 1
            return self.open()
        elif action < 0.84:
            # kill -9: the page cache (and so every unsynced write) survives.
            self.fs = self.fs.kill_process()
            history.kills += 1
            return self.open()
        elif log.log_end_offset > log.log_start_offset:
            offset = self.rng.randrange(log.log_start_offset, log.log_end_offset)
            log.read(offset, self.rng.choice((1, 4096)))
        return log


def run_cycles(root: Path, cycles: int, seed: int) -> History:
    """Run ``cycles`` lives of one log, each ended by a power cut, checking after each."""
    rng = random.Random(seed)
    directory = root / "log"
    config = topic_config(rng)
    history = History(compacted=config.cleanup_policy is CleanupPolicy.COMPACT)
    for cycle in range(cycles):
        life_seed = rng.getrandbits(32)
        fs = FaultFS(root, seed=life_seed)
        life = Life(fs, directory, config, history, life_seed)
        context = f"seed {seed}, cycle {cycle} (life seed {life_seed}), {config}"
        crash_in_recovery = cycle > 0 and rng.random() < 0.1
        try:
            if crash_in_recovery:
                fs.crash_after(rng.randint(0, 12))
                life.open()
            else:
                log = life.open()
                check_log(log, history, rng)
                # It accepts appends again.
                end = life.append(log)
                log.flush()
                history.acknowledge(end)
            life.fs.crash_after(rng.randint(0, 120))
            log = life.log  # type: ignore[assignment]
            for _ in range(200):
                log = life.step(log)
        except PowerLoss:
            if crash_in_recovery and life.log is None:
                history.losses_in_recovery += 1
        except Exception as exc:
            raise AssertionError(f"{context}: {exc!r}") from exc
        report = life.fs.power_loss()
        history.power_losses += 1
        history.unsynced_bytes_kept += report.unsynced_bytes_kept
        history.entries_undone += report.entries_undone
    # The last cut is checked too.
    log = PartitionLog.open(directory, config, fs=FaultFS(root, seed=1))
    check_log(log, history, rng)
    log.close()
    return history


def summary(history: History) -> str:
    return (
        f"{history.power_losses} simulated power losses ({history.losses_in_recovery} during"
        f" recovery), {history.acked_end} records acknowledged, {len(history.lost)} lost,"
        f" {history.records_checked} records checked after cuts, {history.kills} kills,"
        f" {history.clean_closes} clean closes, {history.entries_undone} directory changes"
        f" undone, {history.unsynced_bytes_kept} unsynced bytes kept"
    )


def test_a_rolled_segment_is_durable_before_the_next_one_is_created(tmp_path: Path) -> None:
    # Else a cut could keep the new segment's name and lose the old one's tail: a torn
    # batch in a segment that is not the last, which recovery refuses as damage.
    fs = FaultFS(tmp_path)
    log = PartitionLog.open(tmp_path / "log", TopicConfig(), fs=fs)
    log.append(records_for(0, 5))  # not flushed
    old = log.segments[-1]
    log.roll()
    assert fs.unsynced_bytes(old.log_path) == 0
    log.close()


async def test_a_new_data_or_partition_directory_is_durable(tmp_path: Path) -> None:
    fs = FaultFS(tmp_path)
    PartitionLog.open(tmp_path / "a" / "b", TopicConfig(), fs=fs).close()
    assert "a" in fs.durable_entries(tmp_path)
    assert "b" in fs.durable_entries(tmp_path / "a")
    async with open_store(tmp_path / "data", fs=fs):
        pass
    assert "data" in fs.durable_entries(tmp_path)


@pytest.mark.parametrize("flushed", [False, True])
def test_compaction_drops_a_record_only_for_a_durable_newer_one(
    tmp_path: Path, flushed: bool
) -> None:
    config = TopicConfig(cleanup_policy=CleanupPolicy.COMPACT, delete_retention_ms=0)
    log = PartitionLog.open(tmp_path / "log", config, fs=FaultFS(tmp_path))
    old = log.append([NewRecord(key=b"k", value=b"acknowledged")]).base_offset
    log.append([NewRecord(key=b"other", value=b"x")])
    log.flush()
    log.roll()
    log.append([NewRecord(key=b"k", value=b"newer")])  # in the active segment
    if flushed:
        log.flush()
    clean_partition(log, BASE_TIMESTAMP)
    kept = [r.offset for r in decode_records(log.read(0, 1 << 20))]
    # Unflushed, the newer record could vanish in a power cut after the older one was
    # dropped for it, and the key's acknowledged value would be lost.
    assert (old in kept) is not flushed, kept
    log.close()


@pytest.mark.parametrize("variant", range(4))
def test_power_loss_never_loses_an_acknowledged_record(tmp_path: Path, variant: int) -> None:
    history = run_cycles(tmp_path, 40, SEED + variant)
    print(summary(history))
    assert history.lost == []
    assert history.power_losses == 40
    assert history.acked_end > 200, summary(history)
