"""``headwater consume --isolation``: transactions as each reader sees them.

The same transactions are written into a data directory (through the store) and through
a Kafka client into ``headwater broker`` and Apache Kafka; ``headwater consume`` must
print the same records from each.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path

from confluent_kafka import Producer

from headwater.store import (
    ControlType,
    NewRecord,
    TopicConfig,
    encode_batch,
    encode_transactional_batch,
    open_store,
)

from .helpers import Headwater, Log


def encoded(value: str) -> bytes:
    return json.dumps(value).encode()


async def write_to_store(data: Path, topic: str) -> None:
    """Producer 1 commits a1 a2, producer 2 aborts b1, p1 is plain, producer 3 leaves c1
    open, p2 is plain -- interleaved as :func:`write_with_client` does."""
    async with open_store(data) as store:
        await store.create_topic(topic, TopicConfig())
        partition = store.partition(topic, 0)

        def txn(pid: int, *values: str) -> bytearray:
            records = [NewRecord(value=encoded(v)) for v in values]
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
        await partition.append_batch(encode_batch([NewRecord(value=encoded("p1"))]))
        await end(2, ControlType.ABORT)
        await partition.append_batch(txn(3, "c1"))
        await partition.append_batch(encode_batch([NewRecord(value=encoded("p2"))]))


def write_with_client(bootstrap: str, topic: str) -> Producer:
    """The same through confluent-kafka; returns the producer whose transaction stays open."""

    def producer(transactional: bool) -> Producer:
        config = {"bootstrap.servers": bootstrap, "linger.ms": 1}
        if transactional:
            config["transactional.id"] = f"cli-{uuid.uuid4().hex[:8]}"
        made = Producer(config)
        if transactional:
            made.init_transactions(60)
        return made

    def send(made: Producer, *values: str) -> None:
        for value in values:
            made.produce(topic, value=encoded(value), partition=0)
        assert made.flush(60) == 0

    one, two, three, plain = producer(True), producer(True), producer(True), producer(False)
    one.begin_transaction()
    send(one, "a1", "a2")
    two.begin_transaction()
    send(two, "b1")
    one.commit_transaction(60)
    send(plain, "p1")
    two.abort_transaction(60)
    three.begin_transaction()
    send(three, "c1")
    send(plain, "p2")
    return three


async def test_consume_shows_what_each_isolation_level_allows(log: Log) -> None:
    topic = f"tx-{uuid.uuid4().hex[:8]}"
    if log.bootstrap is None:
        await write_to_store(log.data, topic)
        still_open = None
    else:
        assert log("topics", "create", topic).returncode == 0
        still_open = write_with_client(log.bootstrap, topic)
    uncommitted = log("consume", topic)
    assert uncommitted.returncode == 0, uncommitted.stderr
    # Every data record, aborted and open ones too; never a marker's control record.
    assert uncommitted.stdout.split() == ['"a1"', '"a2"', '"b1"', '"p1"', '"c1"', '"p2"']
    committed = log("consume", topic, "--isolation", "read_committed", "--show-meta")
    assert committed.returncode == 0, committed.stderr
    # Up to the last stable offset (c1's open transaction), without the aborted b1.
    metas = [json.loads(line) for line in committed.stdout.splitlines()]
    assert [m["value"] for m in metas] == ["a1", "a2", "p1"]
    if log.bootstrap is None:
        # Kafka may write a commit's marker after a record sent once the commit returned
        # (it finishes the commit after answering); here the offsets are fixed.
        assert [m["offset"] for m in metas] == [0, 1, 4]
    if still_open is not None:
        still_open.abort_transaction(60)


async def test_a_group_reads_a_topic_that_ends_in_a_marker_to_its_end(
    data: Path, hw: Headwater
) -> None:
    await write_to_store(data, "tx")
    async with open_store(data) as store:  # the open transaction ends: a marker is last
        await store.partition("tx", 0).write_marker(
            ControlType.ABORT, producer_id=3, producer_epoch=0, coordinator_epoch=0
        )
    consumed = hw("consume", "tx", "--group", "g")
    assert consumed.returncode == 0, consumed.stderr
    assert consumed.stdout.split() == ['"a1"', '"a2"', '"b1"', '"p1"', '"c1"', '"p2"']
    again = hw("consume", "tx", "--group", "g")  # all committed, markers included
    assert (again.returncode, again.stdout) == (0, "")


async def test_a_group_reads_committed_records_only(log: Log) -> None:
    topic = f"tx-{uuid.uuid4().hex[:8]}"
    if log.bootstrap is None:
        await write_to_store(log.data, topic)
        still_open = None
    else:
        assert log("topics", "create", topic).returncode == 0
        still_open = write_with_client(log.bootstrap, topic)
    group = f"g-{uuid.uuid4().hex[:8]}"
    committed = log("consume", topic, "--group", group, "--isolation", "read_committed")
    assert committed.returncode == 0, committed.stderr
    assert committed.stdout.split() == ['"a1"', '"a2"', '"p1"']
    if still_open is not None:
        still_open.commit_transaction(60)
    else:
        async with open_store(log.data) as store:
            await store.partition(topic, 0).write_marker(
                ControlType.COMMIT, producer_id=3, producer_epoch=0, coordinator_epoch=0
            )
    # The group resumes where it committed: the transaction now committed, then p2.
    rest = log("consume", topic, "--group", group, "--isolation", "read_committed")
    assert rest.returncode == 0, rest.stderr
    assert rest.stdout.split() == ['"c1"', '"p2"']
