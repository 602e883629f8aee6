"""Event times of the records this process appended to a repartition topic, for its reader.

Theory of operation
-------------------
A windowed aggregation of a re-keyed stream reads its records back from a repartition
topic, and must decode every value to learn the record's event time, though most of
them may turn out late (their window closed already) and change nothing. When the task
that wrote the records runs in this process (the embedded log), it can say the event
times instead: it computes them with the window's timestamp function from the values it
decoded itself, before it writes them (``Pipeline`` does, for a repartition topic read
by a tumbling window only, from values no other step saw), and puts them here under the
partition and first offset the log assigned them. The reader takes the event times of
the offsets it read, finds the late records first, and decodes only the others.

The log stays the source of truth: every record is still written and made durable first,
and its value is decoded from the log whenever it is used. Event times are plain
integers, so handing them over shares no object between tasks; whatever is not here (a
restart, a record another process appended, times taken already, a batch whose
timestamp function failed or gave something other than a plain non-negative int) is
found as before, by decoding every value and calling the timestamp function. So the
timestamp function runs in the writing task, once per record, on the value the window
would get; for a batch where it failed there, the window calls it again for each record
of the batch (and its error policy applies there, once per failing record, as it
always did): a timestamp function is expected to be a pure function of the value.

Memory: at most ``limit`` times are held (the int objects the timestamp function
returned, a list of them per batch); past it the oldest batches are dropped (their
reader decodes them). Concurrency: one event loop; no awaits inside.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["Handoff", "HandoffStatistics", "event_times"]

#: How many event times a handoff holds at most, by default.
DEFAULT_LIMIT = 1 << 18


@dataclass(frozen=True, slots=True)
class HandoffStatistics:
    """What a :class:`Handoff` did: event times put, taken (by a reader), and held now."""

    put: int
    taken: int
    held: int


class Handoff:
    """Event times of appended records, by (topic, partition, offset); see the module
    docstring.

    :param limit: how many event times to hold at most.
    """

    __slots__ = ("_batches", "_held", "_put", "_read", "_taken", "limit")

    def __init__(self, limit: int = DEFAULT_LIMIT) -> None:
        self.limit = limit
        #: Event times by (topic, partition, first offset), oldest first.
        self._batches: dict[tuple[str, int, int], list[int]] = {}
        self._held = self._put = self._taken = 0
        #: Where each partition's reader read up to (times put below that come too late).
        self._read: dict[tuple[str, int], int] = {}

    def put(self, topic: str, partition: int, first_offset: int, times: list[int]) -> None:
        """Hold ``times``, the event times of the records appended at ``first_offset`` on
        of ``topic``/``partition`` (one per offset, in order)."""
        if not times or len(times) > self.limit:
            return
        if first_offset < self._read.get((topic, partition), 0):
            return  # read already (before it was durable here): nobody takes it
        self._batches[(topic, partition, first_offset)] = times
        self._held += len(times)
        self._put += len(times)
        batches = self._batches
        while self._held > self.limit:  # the oldest go first: their reader decodes them
            self._held -= len(batches.pop(next(iter(batches))))

    def take(self, topic: str, partition: int, offsets: Sequence[int]) -> list[int] | None:
        """Return (and forget) the event times of the records at ``offsets`` (consecutive:
        a range) of ``topic``/``partition``, or None unless all of them are held. Times
        held for the offsets after them stay."""
        if type(offsets) is not range or offsets.step != 1 or not offsets:
            return None
        at, stop = offsets.start, offsets.stop
        self._read[(topic, partition)] = stop
        batches = self._batches
        if not batches:
            return None
        parts: list[list[int]] = []
        while at < stop:
            times = batches.pop((topic, partition, at), None)
            if times is None:
                return None
            self._held -= len(times)
            end = at + len(times)
            if end > stop:  # the read ends inside the batch: keep the rest for the next
                rest = times[stop - at :]
                batches[(topic, partition, stop)] = rest
                self._held += len(rest)
                times = times[: stop - at]
                end = stop
            parts.append(times)
            at = end
        self._taken += stop - offsets.start
        return parts[0] if len(parts) == 1 else [t for part in parts for t in part]

    def statistics(self) -> HandoffStatistics:
        """Return the counts so far."""
        return HandoffStatistics(self._put, self._taken, self._held)


def event_times(times: list[Any]) -> list[int] | None:
    """Return ``times`` (a timestamp function's results) if each is a plain int from 0 on
    (what the reader would take as it is: anything else it checks, converts or refuses
    itself), else None."""
    if not times or not set(map(type, times)) <= {int} or min(times) < 0:
        return None
    return times
