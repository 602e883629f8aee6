"""Two file sink members of one consumer group on a cluster, the second joining while the
first holds open files of every partition; run as a script by ``test_kafka.py``
(``python rebalance_members.py BOOTSTRAP TOPIC DIRECTORY``), in a process of its own so
that a member stuck in librdkafka's rebalance callback can be killed, not wait forever.

The topic has two partitions and 40 records (``{"i": n}``, keyed). The first member
takes them all; the second joins, which makes the first give both partitions up (its
files finished and committed inside the rebalance); 20 more records are appended; once
the two members have been handed 60 records in all, both stop cleanly. Files roll only
when a partition is given up, so every batch is in hand when the rebalance comes. The
script prints ``done`` and the first member's commit count at the end.
"""

from __future__ import annotations

import functools
import sys
from pathlib import Path

import anyio

from headwater.connectors import (
    Checkpoint,
    Committer,
    FileSink,
    FileSinkConfig,
    KafkaCluster,
    KafkaGroups,
    KafkaLog,
    SinkRunner,
)
from headwater.groups import ConsumerBatch


class Counter:
    """A count that tasks can wait to reach."""

    def __init__(self) -> None:
        self.count = 0
        self._changed = anyio.Event()

    def add(self, n: int) -> None:
        self.count += n
        self._changed.set()
        self._changed = anyio.Event()

    async def wait_for(self, count: int) -> None:
        while self.count < count:
            await self._changed.wait()


class CountedFileSink(FileSink):
    """A file sink that counts the records it was handed."""

    def __init__(self, log: KafkaLog, config: FileSinkConfig, counter: Counter) -> None:
        super().__init__(log, config)
        self.counter = counter

    async def write(self, batch: ConsumerBatch, commit: Committer) -> Checkpoint | None:
        checkpoint = await super().write(batch, commit)
        self.counter.add(len(batch.records))
        return checkpoint


async def main(bootstrap: str, topic: str, directory: Path) -> None:
    cluster = KafkaCluster(bootstrap)
    groups = KafkaGroups(cluster, session_timeout_ms=6000)
    taken = Counter()
    async with KafkaLog(cluster) as log:
        first, second = (
            SinkRunner(
                groups,
                topic,
                f"{topic}-files",
                CountedFileSink(
                    log,
                    FileSinkConfig(
                        topic=topic,
                        directory=str(directory / name),
                        roll_bytes=1 << 30,
                        roll_s=3600,
                    ),
                    taken,
                ),
            )
            for name in ("first", "second")
        )
        async with anyio.create_task_group() as tg:
            await tg.start(functools.partial(first.run))
            await taken.wait_for(40)
            # Started once the first member gave both partitions up and the group
            # assigned one to each.
            await tg.start(functools.partial(second.run))
            more = range(40, 60)
            await log.append(
                topic, [b'{"i":%d}' % i for i in more], keys=[b"k%d" % i for i in more]
            )
            await taken.wait_for(60)
            first.stop()
            second.stop()
    print("done", first.statistics().commits, flush=True)


if __name__ == "__main__":
    anyio.run(main, sys.argv[1], sys.argv[2], Path(sys.argv[3]), backend="trio")
