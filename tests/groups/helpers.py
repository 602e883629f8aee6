"""Shared pieces of the coordinator, consumer and end-to-end tests: settings and clocks."""

from __future__ import annotations

from typing import Any

import anyio

from headwater.groups import GroupConfig
from headwater.store import NewRecord, Store, TopicConfig

#: Fast rebalances and short sessions, so membership tests take few (virtual) seconds.
FAST = GroupConfig(initial_rebalance_delay_ms=10, min_session_timeout_ms=50)
#: Consumer settings that fit FAST: a member is gone 600 ms after its last heartbeat.
QUICK: dict[str, Any] = {
    "session_timeout_ms": 600,
    "heartbeat_interval_ms": 40,
    "rebalance_timeout_ms": 3_000,
    "auto_offset_reset": "earliest",
}
NEVER = TopicConfig(durability="never")


#: Where :func:`loop_clock_ms` starts counting (the event loop's clock starts near 0).
EPOCH_MS = 1_700_000_000_000


def loop_clock_ms() -> int:
    """Epoch milliseconds on the event loop's clock, the one that consumers sleep on.

    A coordinator on this clock shares the consumers' time: under pytest-trio's
    ``autojump_clock`` both are virtual, and time moves only when every task waits, so
    a busy machine cannot make a heartbeat late and a session expire.
    """
    return EPOCH_MS + int(anyio.current_time() * 1000)


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
