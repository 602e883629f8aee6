"""Shared pieces of the coordinator, consumer and end-to-end tests: settings and clocks."""

from __future__ import annotations

from typing import Any

from headwater.groups import GroupConfig
from headwater.store import NewRecord, Store, TopicConfig

#: Fast rebalances and short sessions, so membership tests take milliseconds.
FAST = GroupConfig(initial_rebalance_delay_ms=10, min_session_timeout_ms=50)
#: Consumer settings that fit FAST: a member is gone 600 ms after its last heartbeat.
QUICK: dict[str, Any] = {
    "session_timeout_ms": 600,
    "heartbeat_interval_ms": 40,
    "rebalance_timeout_ms": 3_000,
    "auto_offset_reset": "earliest",
}
NEVER = TopicConfig(durability="never")


class FakeClock:
    """Epoch milliseconds that move only when a test says so."""

    def __init__(self, now: int = 1_700_000_000_000) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now

    def advance(self, ms: int) -> None:
        self.now += ms


async def fill(store: Store, topic: str, partitions: int, per_partition: int) -> None:
    """Create ``topic`` and append ``per_partition`` records ``b"p:i"`` to each partition."""
    await store.create_topic(topic, TopicConfig(partitions=partitions, durability="never"))
    for p in range(partitions if per_partition else 0):
        await store.partition(topic, p).append(
            [NewRecord(b"%d:%d" % (p, i)) for i in range(per_partition)]
        )
