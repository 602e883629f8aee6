"""``headwater consume --isolation``: transactions in a data directory, as each reader sees them."""

from __future__ import annotations

import json
from pathlib import Path

from headwater.store import (
    ControlType,
    NewRecord,
    TopicConfig,
    encode_batch,
    encode_transactional_batch,
    open_store,
)

from .helpers import Headwater, assert_error


async def write_transactions(data: Path) -> None:
    """Producer 1 commits a1 a2, producer 2 aborts b1, p1 is plain, producer 3 leaves c1 open."""
    async with open_store(data) as store:
        await store.create_topic("tx", TopicConfig())
        partition = store.partition("tx", 0)

        def txn(pid: int, *values: str) -> bytearray:
            records = [NewRecord(value=json.dumps(v).encode()) for v in values]
            return encode_transactional_batch(
                records, producer_id=pid, producer_epoch=0, base_sequence=0
            )

        async def end(pid: int, kind: ControlType) -> None:
            await partition.write_marker(
                kind, producer_id=pid, producer_epoch=0, coordinator_epoch=0
            )

        await partition.append_batch(txn(1, "a1", "a2"))
        await partition.append_batch(txn(2, "b1"))
        await end(1, ControlType.COMMIT)
        await partition.append_batch(encode_batch([NewRecord(value=b'"p1"')]))
        await end(2, ControlType.ABORT)
        await partition.append_batch(txn(3, "c1"))
        await partition.append_batch(encode_batch([NewRecord(value=b'"p2"')]))


async def test_consume_shows_what_each_isolation_level_allows(data: Path, hw: Headwater) -> None:
    await write_transactions(data)
    uncommitted = hw("consume", "tx")
    assert uncommitted.returncode == 0, uncommitted.stderr
    # Every data record, aborted or open ones too; never a marker's control record.
    assert uncommitted.stdout.split() == ['"a1"', '"a2"', '"b1"', '"p1"', '"c1"', '"p2"']
    committed = hw("consume", "tx", "--isolation", "read_committed")
    assert committed.returncode == 0, committed.stderr
    # Up to the last stable offset (c1's open transaction), without the aborted b1.
    assert committed.stdout.split() == ['"a1"', '"a2"', '"p1"']
    meta = hw("consume", "tx", "--isolation", "read_committed", "--show-meta")
    assert [json.loads(line)["offset"] for line in meta.stdout.splitlines()] == [0, 1, 4]


async def test_consume_refuses_read_committed_with_a_group(data: Path, hw: Headwater) -> None:
    await write_transactions(data)
    refused = hw("consume", "tx", "--group", "g", "--isolation", "read_committed")
    assert_error(refused, "--isolation", status=2)
