"""Sparse offset and time indexes of one segment: pure search over sorted arrays.

Theory of operation. A segment's ``.log`` is a run of record batches. Finding the batch
that holds an offset (or the first record at or after a time) by scanning from the start
would cost a read of the whole segment, so every ``index_interval_bytes`` of log the
segment notes one entry:

* offset index: (base offset of a batch, byte position of that batch). A lookup takes the
  last entry at or below the target and scans forward from its position, so it reads at
  most about one interval of log.
* time index: (largest timestamp seen so far, base offset of the batch that reached it).
  Timestamps in a log need not be ordered, but the running maximum is, so the entries are
  sorted on both columns. Every record before an entry's offset has a timestamp no larger
  than the entry's, so a search for time T may start at the last entry whose timestamp is
  strictly below T.

On disk the entries use Kafka's layouts: ``.index`` is (int32 offset relative to the
segment's base offset, int32 position) and ``.timeindex`` is (int64 timestamp, int32
relative offset), big-endian. Index files are derived data: they are rebuilt from the
``.log`` whenever they are missing or fail :func:`OffsetIndex.from_bytes`'s checks.
"""

from __future__ import annotations

import struct
from array import array
from bisect import bisect_left, bisect_right

_OFFSET_ENTRY = struct.Struct(">ii")
_TIME_ENTRY = struct.Struct(">qi")


class IndexFormatError(ValueError):
    """An index file's contents are inconsistent; the caller rebuilds it from the log."""


class OffsetIndex:
    """Offset -> position entries of one segment, kept in memory in ascending order."""

    __slots__ = ("_offsets", "_positions", "base_offset")

    def __init__(self, base_offset: int) -> None:
        self.base_offset = base_offset
        self._offsets = array("q")
        self._positions = array("q")

    def __len__(self) -> int:
        return len(self._offsets)

    def append(self, offset: int, position: int) -> None:
        """Add an entry; offsets and positions must grow strictly."""
        assert not self._offsets or (
            offset > self._offsets[-1] and position > self._positions[-1]
        ), "index entries must be appended in order"
        self._offsets.append(offset)
        self._positions.append(position)

    def lookup(self, offset: int) -> tuple[int, int]:
        """Return (offset, position) of the last entry at or below ``offset``.

        Returns ``(base_offset, 0)`` when no entry is that low: a scan starts at the
        segment's first batch.
        """
        i = bisect_right(self._offsets, offset) - 1
        if i < 0:
            return self.base_offset, 0
        return self._offsets[i], self._positions[i]

    def floor_position(self, position: int) -> tuple[int, int]:
        """Return (offset, position) of the last entry at or before byte ``position``.

        Returns ``(base_offset, 0)`` when no entry is that early.
        """
        i = bisect_right(self._positions, position) - 1
        if i < 0:
            return self.base_offset, 0
        return self._offsets[i], self._positions[i]

    def insert(self, offset: int, position: int) -> None:
        """Add an entry anywhere, keeping both columns strictly increasing.

        For the first batch after a damaged range, so that lookups past the damage start
        there instead of walking through it. Does nothing when an entry is at ``position``
        already or the offset would not fit between its neighbours.
        """
        i = bisect_left(self._positions, position)
        if i < len(self._positions) and self._positions[i] == position:
            return
        if (i and self._offsets[i - 1] >= offset) or (
            i < len(self._offsets) and offset >= self._offsets[i]
        ):
            return
        self._offsets.insert(i, offset)
        self._positions.insert(i, position)

    def truncate_to_position(self, position: int) -> None:
        """Drop every entry pointing at ``position`` or beyond."""
        i = bisect_left(self._positions, position)
        del self._offsets[i:]
        del self._positions[i:]

    def to_bytes(self) -> bytes:
        """Encode the entries in Kafka's ``.index`` layout."""
        base = self.base_offset
        pack = _OFFSET_ENTRY.pack
        return b"".join(
            pack(o - base, p) for o, p in zip(self._offsets, self._positions, strict=True)
        )

    @classmethod
    def from_bytes(
        cls, base_offset: int, data: bytes, *, log_size: int, next_offset: int | None = None
    ) -> OffsetIndex:
        """Decode an ``.index`` file and check it against the segment it belongs to.

        :raises IndexFormatError: if the entries are not strictly increasing, point past
            ``log_size`` or name offsets at or past ``next_offset``.
        """
        if len(data) % _OFFSET_ENTRY.size:
            raise IndexFormatError("index size is not a whole number of entries")
        index = cls(base_offset)
        last_offset, last_position = -1, -1
        for rel, position in _OFFSET_ENTRY.iter_unpack(data):
            offset = base_offset + rel
            if rel < 0 or offset <= last_offset or (position <= last_position and last_offset >= 0):
                raise IndexFormatError("index entries are not strictly increasing")
            if position < 0 or position >= log_size:
                raise IndexFormatError(f"index entry points at {position}, past the log")
            if next_offset is not None and offset >= next_offset:
                raise IndexFormatError(f"index names offset {offset}, past the segment")
            index._offsets.append(offset)
            index._positions.append(position)
            last_offset, last_position = offset, position
        return index


class TimeIndex:
    """Running-maximum timestamp -> offset entries of one segment, in ascending order."""

    __slots__ = ("_offsets", "_timestamps", "base_offset")

    def __init__(self, base_offset: int) -> None:
        self.base_offset = base_offset
        self._timestamps = array("q")
        self._offsets = array("q")

    def __len__(self) -> int:
        return len(self._timestamps)

    @property
    def last_timestamp(self) -> int:
        """The largest timestamp indexed so far, or -1 when the index is empty."""
        return self._timestamps[-1] if self._timestamps else -1

    def maybe_append(self, timestamp: int, offset: int) -> None:
        """Add an entry if ``timestamp`` raises the running maximum."""
        if timestamp > self.last_timestamp and (not self._offsets or offset > self._offsets[-1]):
            self._timestamps.append(timestamp)
            self._offsets.append(offset)

    def lookup(self, timestamp: int) -> int:
        """Return an offset from which a scan finds the first record at or after ``timestamp``.

        Every record before the returned offset has a smaller timestamp.
        """
        i = bisect_left(self._timestamps, timestamp) - 1
        if i < 0:
            return self.base_offset
        return self._offsets[i]

    def truncate_to_offset(self, offset: int) -> None:
        """Drop every entry naming ``offset`` or beyond."""
        i = bisect_left(self._offsets, offset)
        del self._timestamps[i:]
        del self._offsets[i:]

    def to_bytes(self) -> bytes:
        """Encode the entries in Kafka's ``.timeindex`` layout."""
        base = self.base_offset
        pack = _TIME_ENTRY.pack
        return b"".join(
            pack(t, o - base) for t, o in zip(self._timestamps, self._offsets, strict=True)
        )

    @classmethod
    def from_bytes(cls, base_offset: int, data: bytes, *, next_offset: int) -> TimeIndex:
        """Decode a ``.timeindex`` file and check it against its segment.

        :raises IndexFormatError: if entries are not increasing or name offsets past the
            segment.
        """
        if len(data) % _TIME_ENTRY.size:
            raise IndexFormatError("time index size is not a whole number of entries")
        index = cls(base_offset)
        for timestamp, rel in _TIME_ENTRY.iter_unpack(data):
            offset = base_offset + rel
            if rel < 0 or offset >= next_offset:
                raise IndexFormatError(f"time index names offset {offset}, outside the segment")
            if index._timestamps and (
                timestamp <= index._timestamps[-1] or offset <= index._offsets[-1]
            ):
                raise IndexFormatError("time index entries are not strictly increasing")
            index._timestamps.append(timestamp)
            index._offsets.append(offset)
        return index
