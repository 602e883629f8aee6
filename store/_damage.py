"""Damage in a segment: where it starts, where valid batches resume, what it hides.

Theory of operation. A batch that fails its checks (framing, CRC, offsets that follow)
is either the end of a write that was interrupted, a *torn tail*, which runs to the end
of the last segment, or damage with valid batches after it, which must never be cut off.
To tell them apart, and to let readers step past damage, :func:`find_next_batch` looks
for the first position after the damage where a plausible batch begins:

* magic 2 at byte 16 (the pre-filter: the scan searches for that byte in chunks of the
  file and looks nowhere else),
* a batch length that fits in the file and offsets after the damaged ones (and below the
  next segment's base offset when there is one),
* a CRC-32C that matches (checked only for candidates that passed the rest), and
* a next batch, when there is room for one, whose base offset follows on (exactly, in the
  last segment, which is dense), so that a batch whose base offset (outside the CRC) was
  damaged is not taken for the place to resume.

The result is a :class:`DamagedRange`: the damaged bytes, the last offset that reads fine
before them and the first one after. The same search serves recovery (deciding whether
to cut a tail), readers that meet damage (where to resume) and repair (what to move
aside).
"""

from __future__ import annotations

from ._batch import BATCH_HEADER_SIZE, HEADER, MAGIC, MIN_BATCH_LENGTH, BatchHeader, verify_batch
from ._errors import CorruptRecordError, DamagedRange
from ._segment import Segment

_CHUNK = 1 << 20
_MAGIC_BYTE = bytes([MAGIC])
_MAGIC_AT = 16


def find_next_batch(
    segment: Segment, start: int, min_base: int, upper: int | None
) -> tuple[int, BatchHeader] | None:
    """Return (position, header) of the first plausible batch at or after byte ``start``.

    A plausible batch passes the checks the module docstring lists, with a base offset of
    at least ``min_base`` and, when ``upper`` is given (the next segment's base offset),
    offsets below it; without ``upper`` the segment is taken to be dense. Returns ``None``
    when there is none before the end of the segment.
    """
    search = _Search(segment, min_base, upper)
    end = segment.size
    chunk_start = start
    while chunk_start < end:
        # Candidates start in [chunk_start, chunk_start + _CHUNK); their headers may reach
        # a little further.
        chunk = segment.read(chunk_start, min(_CHUNK + BATCH_HEADER_SIZE, end - chunk_start))
        limit = min(_CHUNK, len(chunk))
        i = chunk.find(_MAGIC_BYTE, _MAGIC_AT)
        while i >= 0 and i - _MAGIC_AT < limit:
            rel = i - _MAGIC_AT
            found = search.candidate(chunk, rel, chunk_start + rel)
            if found is not None:
                return chunk_start + rel, found
            i = chunk.find(_MAGIC_BYTE, i + 1)
        chunk_start += _CHUNK
    return None


class _Search:
    """What a plausible batch after a damaged range must satisfy."""

    def __init__(self, segment: Segment, min_base: int, upper: int | None) -> None:
        self.segment = segment
        self.min_base = min_base
        self.upper = upper

    def candidate(self, chunk: bytes, rel: int, position: int) -> BatchHeader | None:
        """The header of a plausible batch at ``rel`` in ``chunk`` (file ``position``)."""
        segment, upper, end = self.segment, self.upper, self.segment.size
        if rel + BATCH_HEADER_SIZE > len(chunk):
            return None  # too close to the end of the file for a header
        fields = HEADER.unpack_from(chunk, rel)
        base, length, delta = fields[0], fields[1], fields[6]
        size = length + 12
        next_offset = base + delta + 1
        if (
            length < MIN_BATCH_LENGTH
            or position + size > end
            or delta < 0
            or base < self.min_base
            or (upper is not None and next_offset > upper)
        ):
            return None
        inside = rel + size <= len(chunk)
        data = chunk[rel : rel + size] if inside else segment.read(position, size)
        try:
            header = verify_batch(data)
        except CorruptRecordError:
            return None
        after = position + size
        if after + 8 <= end:
            following = int.from_bytes(segment.read(after, 8), "big", signed=True)
            if upper is None and following != next_offset:
                return None
            if upper is not None and not next_offset <= following < upper:
                return None
        return header


def damage_start(segment: Segment, position: int) -> tuple[int, int]:
    """Find where the damage met at byte ``position`` begins, walking verified batches.

    Returns (the position of the first batch that fails its checks, at or before
    ``position``; the first offset that batch should hold). The walk starts at the last
    index entry before ``position``.
    """
    first, walk = segment.index.floor_position(position)
    while walk < position:
        header_bytes = segment.read(walk, BATCH_HEADER_SIZE)
        if len(header_bytes) < BATCH_HEADER_SIZE:
            break
        length = int.from_bytes(header_bytes[8:12], "big", signed=True)
        if length < MIN_BATCH_LENGTH or walk + length + 12 > segment.size:
            break
        try:
            header = verify_batch(segment.read(walk, length + 12))
        except CorruptRecordError:
            break
        if header.base_offset < first:
            break
        first = header.next_offset
        walk += header.size
    return min(walk, position), first


def damaged_range(
    segment: Segment, position: int, first_offset: int, upper: int | None, end_offset: int | None
) -> DamagedRange:
    """Describe damage that starts at byte ``position``, where offset ``first_offset`` was due.

    ``upper`` is the next segment's base offset (``None`` for the last segment); the
    damage is taken to run to the end of the segment when no plausible batch follows, and
    reading then resumes at ``end_offset``.
    """
    found = find_next_batch(segment, position + 1, first_offset + 1, upper)
    if found is None:
        end_position, resume = segment.size, end_offset
    else:
        end_position, resume = found[0], found[1].base_offset
    return DamagedRange(str(segment.log_path), position, end_position, first_offset - 1, resume)


def note_damage(segment: Segment, damage: DamagedRange, *, index: bool = True) -> None:
    """Remember ``damage`` in ``segment`` so that readers step past it (see ``Segment``).

    With ``index``, the first batch after it also gets an index entry (recovery, which
    notes that batch next, has it added as it goes instead).
    """
    if damage not in segment.damaged:
        segment.damaged.append(damage)
        segment.damaged.sort(key=lambda d: d.position)
    if index and damage.resume_offset is not None and damage.end_position < segment.size:
        segment.index.insert(damage.resume_offset, damage.end_position)
