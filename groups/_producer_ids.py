"""Producer ids for InitProducerId: idempotent producers' and transactional ids'.

Theory of operation
-------------------
An idempotent producer gets a producer id and an epoch from InitProducerId and numbers
the records it sends to each partition. The sequence checks themselves (duplicates,
gaps, fencing by epoch) belong to the partition's log, which persists them with the data
(``headwater.store``'s producer state) so that they survive a restart; the broker (and
the transaction coordinator, for a transactional id it has not seen) only hands out ids.
An id must never be one a previous run gave out, since the logs may still hold state for
it: :meth:`ProducerIds.starting_now` counts from a number derived from the wall clock at
start-up (a thousand ids per millisecond of uptime before a restart would be needed to
collide).
"""

from __future__ import annotations

import time

MAX_EPOCH = 0x7FFF
"""The largest producer epoch (an int16); a producer past it gets a new id."""
#: Producer ids handed out per millisecond of a run's life before a restarted run's ids
#: could meet the previous run's: far more than any broker hands out.
PRODUCER_IDS_PER_MS = 1000


class ProducerIds:
    """Hands out producer ids, counting up from ``first_producer_id``.

    Not thread-safe: one task owns it.
    """

    def __init__(self, *, first_producer_id: int) -> None:
        assert first_producer_id >= 0
        self._next_id = first_producer_id

    @classmethod
    def starting_now(cls) -> ProducerIds:
        """Return ids counting from the wall clock now (see the module docstring)."""
        return cls(first_producer_id=time.time_ns() // 1_000_000 * PRODUCER_IDS_PER_MS)

    def new_producer(self) -> tuple[int, int]:
        """Return a fresh (producer id, epoch) for InitProducerId."""
        producer_id = self._next_id
        self._next_id += 1
        return producer_id, 0
