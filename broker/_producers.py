"""Producer ids for InitProducerId. Pure.

Theory of operation
-------------------
An idempotent producer gets a producer id and an epoch from InitProducerId and numbers
the records it sends to each partition. The sequence checks themselves (duplicates,
gaps, fencing by epoch) belong to the partition's log, which persists them with the data
(``headwater.store``'s producer state) so that they survive a restart; the broker only
hands out ids. An id must never be one a previous run of the broker gave out, since the
logs may still hold state for it: the server starts counting from a number derived from
the wall clock at start-up (a thousand ids per millisecond of uptime before a restart
would be needed to collide).
"""

from __future__ import annotations

MAX_EPOCH = 0x7FFF
"""The largest producer epoch (an int16); a producer past it gets a new id."""


class ProducerIds:
    """Hands out producer ids, counting up from ``first_producer_id``.

    Not thread-safe: one task owns it.
    """

    def __init__(self, *, first_producer_id: int) -> None:
        assert first_producer_id >= 0
        self._next_id = first_producer_id

    def new_producer(self) -> tuple[int, int]:
        """Return a fresh (producer id, epoch) for InitProducerId."""
        producer_id = self._next_id
        self._next_id += 1
        return producer_id, 0
