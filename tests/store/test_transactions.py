"""Transactions in the log: markers, the LSO, the aborted index, isolation, recovery.

The property test drives a partition with several producers opening, writing to,
committing and aborting transactions, interleaved with plain records and with reopening
the log (cleanly or as a crash would leave it), and compares every reader's view with a
model that only knows which records each transaction wrote and how it ended. The cut
test truncates a log of transactions at every byte and checks that recovery rebuilds
exactly the state of the batches that survived.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from headwater.store import (
    AbortedTransaction,
    ControlType,
    Durability,
    InvalidTxnStateError,
    IsolationLevel,
    NewRecord,
    Partition,
    PartitionLog,
    TopicConfig,
    encode_batch,
    encode_transactional_batch,
    parse_batch_header,
)
from headwater.store._producer_snapshots import SNAPSHOT_SUFFIX

RC = IsolationLevel.READ_COMMITTED
RU = IsolationLevel.READ_UNCOMMITTED
CONFIG = TopicConfig(durability=Durability.NEVER)


class Producer:
    """A producer's id, epoch and next sequence, writing through a partition or a log."""

    def __init__(self, producer_id: int) -> None:
        self.producer_id = producer_id
        self.sequence = 0

    def batch(self, values: list[bytes], *, transactional: bool = True) -> bytes:
        records = [NewRecord(value=v) for v in values]
        kw = {"producer_id": self.producer_id, "producer_epoch": 0, "base_sequence": self.sequence}
        self.sequence += len(values)
        if transactional:
            return bytes(encode_transactional_batch(records, **kw))  # type: ignore[arg-type]
        return encode_batch(records, **kw)  # type: ignore[arg-type]

    def marker(self, log: PartitionLog, kind: ControlType) -> int:
        info = log.write_marker(
            kind, producer_id=self.producer_id, producer_epoch=0, coordinator_epoch=0
        )
        return info.base_offset


async def values(partition: Partition, isolation: IsolationLevel) -> list[bytes]:
    out: list[bytes] = []
    offset = partition.log_start_offset
    while records := await partition.read_records(offset, 1 << 20, isolation=isolation):
        out.extend(r.value for r in records if r.value is not None)
        offset = records[-1].offset + 1
    return out


async def columns(partition: Partition, isolation: IsolationLevel) -> list[bytes]:
    cols = await partition.read_columns(partition.log_start_offset, 1 << 20, isolation=isolation)
    return [bytes(v) for v in cols.values]  # type: ignore[union-attr]


async def test_readers_see_what_their_isolation_allows(tmp_path: Path) -> None:
    log = PartitionLog.open(tmp_path, CONFIG)
    partition = Partition("t", 0, log)
    a, b, plain = Producer(1), Producer(2), Producer(3)
    await partition.append_batch(a.batch([b"a1", b"a2"]))  # 0-1
    await partition.append_batch(plain.batch([b"p1"], transactional=False))  # 2
    await partition.append_batch(b.batch([b"b1"]))  # 3
    assert partition.last_stable_offset == 0
    assert await values(partition, RC) == []
    assert await values(partition, RU) == [b"a1", b"a2", b"p1", b"b1"]
    await partition.write_marker(
        ControlType.COMMIT, producer_id=1, producer_epoch=0, coordinator_epoch=0
    )  # 4
    assert partition.last_stable_offset == 3  # b's transaction is still open
    assert await values(partition, RC) == [b"a1", b"a2", b"p1"]
    await partition.append_batch(b.batch([b"b2"]))  # 5
    await partition.write_marker(
        ControlType.ABORT, producer_id=2, producer_epoch=0, coordinator_epoch=0
    )  # 6
    await partition.append_batch(plain.batch([b"p2"], transactional=False))  # 7
    assert partition.last_stable_offset == partition.high_watermark == 8
    assert await values(partition, RC) == [b"a1", b"a2", b"p1", b"p2"]
    assert await columns(partition, RC) == [b"a1", b"a2", b"p1", b"p2"]
    # Uncommitted readers see aborted records, but never a marker's control record.
    assert await values(partition, RU) == [b"a1", b"a2", b"p1", b"b1", b"b2", b"p2"]
    assert await columns(partition, RU) == [b"a1", b"a2", b"p1", b"b1", b"b2", b"p2"]
    assert partition.aborted_transactions(0, 8) == [AbortedTransaction(2, 3, 6)]
    # Raw reads (for Kafka clients) hold the markers as stored.
    raw = await partition.read(0, 1 << 20, isolation=RC)
    kinds = []
    position = 0
    while position < len(raw):
        header = parse_batch_header(raw, position)
        kinds.append((header.base_offset, header.is_control))
        position += header.size
    assert (4, True) in kinds and (6, True) in kinds
    partition.close()


async def test_a_plain_batch_inside_a_transaction_is_refused(tmp_path: Path) -> None:
    log = PartitionLog.open(tmp_path, CONFIG)
    p = Producer(1)
    log.append_batch(p.batch([b"x"]))
    with pytest.raises(InvalidTxnStateError):
        log.append_batch(p.batch([b"y"], transactional=False))
    log.close()


async def test_readers_waiting_for_committed_records_wake_at_the_marker(tmp_path: Path) -> None:
    import trio

    log = PartitionLog.open(tmp_path, CONFIG)
    partition = Partition("t", 0, log)
    p = Producer(1)
    await partition.append_batch(p.batch([b"x"]))
    woke = trio.Event()

    async def wait() -> None:
        await partition.wait_for(0, isolation=RC)
        woke.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(wait)
        await trio.testing.wait_all_tasks_blocked()
        assert not woke.is_set()
        await partition.write_marker(
            ControlType.COMMIT, producer_id=1, producer_epoch=0, coordinator_epoch=0
        )
        await woke.wait()
    partition.close()


# -- recovery: cut at every byte ---------------------------------------------------------


@dataclass
class Expected:
    """The producer state the batches of a log imply (a model, from the batch list)."""

    ongoing: dict[int, int] = field(default_factory=dict)
    aborted: list[AbortedTransaction] = field(default_factory=list)

    def apply(self, producer_id: int, base: int, kind: str) -> None:
        if kind == "txn":
            self.ongoing.setdefault(producer_id, base)
        elif kind in ("commit", "abort"):
            first = self.ongoing.pop(producer_id, None)
            if first is not None and kind == "abort":
                self.aborted.append(AbortedTransaction(producer_id, first, base))


def build_transaction_log(directory: Path) -> list[tuple[int, int, int, str]]:
    """Write a log of interleaved transactions; return (position, end, producer, kind) per
    batch, ``kind`` one of txn, plain, commit, abort."""
    log = PartitionLog.open(directory, CONFIG)
    producers = {pid: Producer(pid) for pid in (1, 2, 3)}
    script = [
        (1, "txn"), (2, "txn"), (3, "plain"), (1, "txn"), (1, "commit"), (2, "txn"),
        (2, "abort"), (1, "txn"), (3, "plain"), (2, "txn"), (1, "abort"), (2, "commit"),
    ]  # fmt: skip
    layout = []
    for pid, kind in script:
        position = log.segments[-1].size
        if kind in ("commit", "abort"):
            control = ControlType.COMMIT if kind == "commit" else ControlType.ABORT
            producers[pid].marker(log, control)
        else:
            log.append_batch(producers[pid].batch([b"v"] * pid, transactional=kind == "txn"))
        layout.append((position, log.segments[-1].size, pid, kind))
    log.abandon()  # as a crash leaves it: no snapshot
    return layout


@pytest.mark.parametrize("with_snapshot", [False, True])
def test_recovery_after_a_cut_at_every_byte(tmp_path: Path, with_snapshot: bool) -> None:
    source = tmp_path / "source"
    layout = build_transaction_log(source)
    data = (source / "00000000000000000000.log").read_bytes()
    assert layout[-1][1] == len(data)
    snapshot = b""
    snapshot_name = ""
    if with_snapshot:
        # A snapshot taken after the fifth batch, as a roll or a close would leave it.
        copy = tmp_path / "snap"
        copy.mkdir()
        (copy / "00000000000000000000.log").write_bytes(data[: layout[4][1]])
        log = PartitionLog.open(copy, CONFIG)
        log.close()
        [snap] = [p for p in copy.iterdir() if p.suffix == SNAPSHOT_SUFFIX]
        snapshot, snapshot_name = snap.read_bytes(), snap.name
    work = tmp_path / "work"
    for cut in range(len(data) + 1):
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir()
        (work / "00000000000000000000.log").write_bytes(data[:cut])
        if snapshot:
            (work / snapshot_name).write_bytes(snapshot)
        expected = Expected()
        offset = 0
        for _position, end, pid, kind in layout:
            if end > cut:
                break
            expected.apply(pid, offset, kind)
            offset += pid if kind in ("txn", "plain") else 1
        log = PartitionLog.open(work, CONFIG)
        try:
            assert log.log_end_offset == offset, cut
            state = log.producer_state
            assert state.ongoing() == expected.ongoing, cut
            assert state.aborted_transactions(0, offset + 1) == expected.aborted, cut
            lso = min(expected.ongoing.values(), default=offset)
            assert state.last_stable_offset(offset) == lso, cut
            # A snapshot past the recovered end is dropped, never trusted.
            for name in (p.name for p in work.iterdir() if p.suffix == SNAPSHOT_SUFFIX):
                assert int(name.split(".")[0]) <= offset, (cut, name)
        finally:
            log.abandon()


# -- a model of transactions -------------------------------------------------------------

_ops = st.lists(
    st.tuples(
        st.sampled_from(["write", "write", "plain", "commit", "abort", "reopen", "crash"]),
        st.integers(1, 3),  # producer
        st.integers(1, 3),  # records
    ),
    max_size=30,
)


@settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=_ops)
async def test_matches_a_model_of_transactions(
    tmp_path: Path, ops: list[tuple[str, int, int]]
) -> None:
    directory = tmp_path / f"m{id(ops)}"
    shutil.rmtree(directory, ignore_errors=True)
    partition = Partition("t", 0, PartitionLog.open(directory, CONFIG))
    producers = {pid: Producer(pid) for pid in (1, 2, 3)}
    # The model: every data record with its producer and fate (None: undecided).
    records: list[tuple[bytes, int, str | None, int]] = []  # value, producer, fate, offset
    open_txn: dict[int, list[int]] = {}  # producer -> indexes into records
    serial = 0
    try:
        for op, pid, count in ops:
            if op in ("reopen", "crash"):
                if op == "reopen":
                    partition.close()
                else:
                    partition.log.abandon()
                partition = Partition("t", 0, PartitionLog.open(directory, CONFIG))
                continue
            if op in ("commit", "abort"):
                kind = ControlType.COMMIT if op == "commit" else ControlType.ABORT
                await partition.write_marker(
                    kind, producer_id=pid, producer_epoch=0, coordinator_epoch=0
                )
                for i in open_txn.pop(pid, []):
                    value, p, _, offset = records[i]
                    records[i] = (value, p, op, offset)
                continue
            if op == "plain" and pid in open_txn:
                continue  # refused (tested elsewhere)
            batch_values = [b"%d" % (serial + i) for i in range(count)]
            serial += count
            info = await partition.append_batch(
                producers[pid].batch(batch_values, transactional=op == "write")
            )
            for i, value in enumerate(batch_values):
                fate = "plain" if op == "plain" else None
                records.append((value, pid, fate, info.base_offset + i))
                if op == "write":
                    open_txn.setdefault(pid, []).append(len(records) - 1)
        hw = partition.high_watermark
        first_open = [records[idx[0]][3] for idx in open_txn.values()]
        lso = min(first_open, default=hw)
        assert partition.last_stable_offset == lso
        assert await values(partition, RU) == [r[0] for r in records]
        committed = [r[0] for r in records if r[2] in ("plain", "commit") and r[3] < lso]
        assert await values(partition, RC) == committed
        assert await columns(partition, RC) == committed
    finally:
        partition.close()


async def test_readers_step_past_markers_and_aborted_records(tmp_path: Path) -> None:
    """A log that ends in a marker: decoded reads come back empty there, and skip_hidden
    moves the reader's position to the end instead of leaving it one short forever."""
    partition = Partition("t", 0, PartitionLog.open(tmp_path, CONFIG))
    a, b = Producer(1), Producer(2)
    await partition.append_batch(a.batch([b"a"]))  # 0
    await partition.write_marker(
        ControlType.COMMIT, producer_id=1, producer_epoch=0, coordinator_epoch=0
    )  # 1
    assert await partition.read_records(1, 1 << 20) == []
    assert await partition.skip_hidden(1) == partition.high_watermark == 2
    await partition.append_batch(b.batch([b"b1", b"b2"]))  # 2-3
    await partition.write_marker(
        ControlType.ABORT, producer_id=2, producer_epoch=0, coordinator_epoch=0
    )  # 4
    # read_committed skips the aborted records and the marker; read_uncommitted sees them.
    assert await partition.read_records(1, 1 << 20, isolation=RC) == []
    assert await partition.skip_hidden(1, isolation=RC) == 5
    assert await partition.skip_hidden(1) == 2
    assert await partition.skip_hidden(5) == 5
    partition.close()
