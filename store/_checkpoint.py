"""The recovery checkpoint: how far a partition's log is known to be on disk.

Theory of operation. After a crash, recovery verifies every batch after the checkpoint
(see ``_loader.py``) and trusts what lies before it. The log records a checkpoint after
every flush whose fsyncs succeeded and before it acknowledges what the flush covered, so
every acknowledged record lies before the checkpoint, a crash re-checks only what was
written since the last flush, and damage found before the checkpoint is never taken for a
torn tail (see the loader).

Because that happens on every flush, writing a checkpoint must cost next to nothing: the
file holds two fixed-size slots, and a checkpoint is one ``pwrite`` into the slot the
previous one did not use: no new file, no rename, no directory fsync. Each slot carries a
sequence number and a CRC-32C, so a torn write spoils only the slot being written and
recovery takes the valid slot with the higher sequence number. The file is fsynced only
now and then (the log asks for it every ``CHECKPOINT_SYNC_BYTES`` of log, at a roll
and at a clean close). It does not need to be durable to be true: it only ever names data
that an fsync already made durable, whenever the kernel writes its page back. Losing
power can only leave an older checkpoint, and an older checkpoint only makes recovery
check more.

Layout: 128 bytes, two slots of 64, each ``b"HWCP"``, u64 sequence, then int64 offset,
segment base offset and byte position, a CRC-32C of those 36 bytes, and zeros. A file in
the earlier format (one JSON object, replaced atomically) is still read.

Concurrency: two flushes may finish at once in worker threads; ``record`` serialises them
and never moves the checkpoint backwards.
"""

from __future__ import annotations

import contextlib
import os
import struct
import threading
from dataclasses import dataclass
from pathlib import Path

import orjson
from crc32c import crc32c

from ._files import RECOVERY_CHECKPOINT_FILE, atomic_write
from ._fs import FileSystem

_MAGIC = b"HWCP"
_SLOT = struct.Struct(">4sQqqq")
_CRC = struct.Struct(">I")
SLOT_SIZE = 64
FILE_SIZE = 2 * SLOT_SIZE


@dataclass(frozen=True, slots=True)
class RecoveryPoint:
    """Everything before ``offset`` (at ``position`` in segment ``segment``) is durable."""

    offset: int
    segment: int
    position: int

    def to_json(self) -> bytes:
        """Encode as the earlier file format did (kept for tests and tools that read it)."""
        return orjson.dumps(
            {"offset": self.offset, "segment": self.segment, "position": self.position}
        )

    @classmethod
    def from_json(cls, data: bytes) -> RecoveryPoint | None:
        """Decode the earlier format; ``None`` if it is not one."""
        try:
            obj = orjson.loads(data)
            point = cls(int(obj["offset"]), int(obj["segment"]), int(obj["position"]))
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            return None
        return point if min(point.offset, point.segment, point.position) >= 0 else None


def _encode_slot(sequence: int, point: RecoveryPoint) -> bytes:
    body = _SLOT.pack(_MAGIC, sequence, point.offset, point.segment, point.position)
    return (body + _CRC.pack(crc32c(body))).ljust(SLOT_SIZE, b"\0")


def _decode_slot(data: bytes) -> tuple[int, RecoveryPoint] | None:
    if len(data) < _SLOT.size + _CRC.size:
        return None
    body = data[: _SLOT.size]
    (crc,) = _CRC.unpack_from(data, _SLOT.size)
    magic, sequence, offset, segment, position = _SLOT.unpack(body)
    if magic != _MAGIC or crc != crc32c(body) or min(offset, segment, position) < 0:
        return None
    return sequence, RecoveryPoint(offset, segment, position)


def _image(point: RecoveryPoint) -> bytes:
    """A whole file holding ``point`` as sequence 1, in the slot sequence 1 uses."""
    return bytes(SLOT_SIZE) + _encode_slot(1, point)


def decode_checkpoint(data: bytes) -> tuple[int, RecoveryPoint] | None:
    """Decode a checkpoint file: (sequence, point) of its newest valid slot, else ``None``."""
    if data[:1] == b"{":
        point = RecoveryPoint.from_json(data)
        return None if point is None else (0, point)
    slots = [_decode_slot(data[i : i + SLOT_SIZE]) for i in range(0, FILE_SIZE, SLOT_SIZE)]
    return max((s for s in slots if s is not None), default=None, key=lambda s: s[0])


def read_recovery_point(fs: FileSystem, directory: Path) -> RecoveryPoint | None:
    """Return the checkpoint of the log in ``directory``; ``None`` if missing or unreadable."""
    try:
        data = fs.read_bytes(directory / RECOVERY_CHECKPOINT_FILE)
    except FileNotFoundError:
        return None
    decoded = decode_checkpoint(data)
    return None if decoded is None else decoded[1]


def write_recovery_point(fs: FileSystem, directory: Path, point: RecoveryPoint) -> None:
    """Replace the checkpoint file with one naming ``point``, durably (tmp, fsync, rename).

    For tools that rewrite a log's files (repair); the log itself uses :class:`CheckpointFile`.
    """
    atomic_write(fs, directory / RECOVERY_CHECKPOINT_FILE, _image(point))


class CheckpointFile:
    """The checkpoint file of one log, kept open for cheap in-place updates."""

    def __init__(self, fs: FileSystem, directory: Path) -> None:
        self.fs = fs
        self.path = directory / RECOVERY_CHECKPOINT_FILE
        self._fd: int | None = None
        self._sequence = 0
        self._last: tuple[int, int] = (-1, -1)
        self._lock = threading.Lock()

    def record(self, point: RecoveryPoint, *, sync: bool) -> bool:
        """Make ``point`` the checkpoint (its data must already be fsynced).

        With ``sync`` the file is fsynced too. A point behind one already recorded
        is ignored. Returns whether the file had to be created (or converted from the
        earlier format), in which case its name is durable only after the caller fsyncs
        the directory.

        :raises OSError: if the file cannot be written; the previous checkpoint stands.
        """
        with self._lock:
            if (point.segment, point.position) < self._last:
                return False
            if self._fd is None:
                self._fd = self._open_current()
            created = self._fd is None
            if self._fd is None:
                atomic_write(self.fs, self.path, _image(point), sync_directory=False)
                self._fd = self.fs.open(self.path, os.O_RDWR | os.O_CLOEXEC)
                self._sequence = 1
            else:
                self._sequence += 1
                data = _encode_slot(self._sequence, point)
                slot = (self._sequence % 2) * SLOT_SIZE
                if self.fs.pwrite(self._fd, data, slot) != SLOT_SIZE:
                    raise OSError(f"{self.path}: short write of the checkpoint")
                if sync:
                    self.fs.fsync(self._fd)
            self._last = (point.segment, point.position)
            return created

    @property
    def in_place(self) -> bool:
        """Whether :meth:`record` without ``sync`` is one small write in place now (the
        file is open in the current format): nothing to create, rename or fsync."""
        return self._fd is not None

    @property
    def last_segment(self) -> int | None:
        """The segment the last checkpoint this object recorded names (``None``: none yet,
        so the file still holds whatever an earlier session left)."""
        return self._last[0] if self._last[0] >= 0 else None

    def reset(self, point: RecoveryPoint) -> bool:
        """Make ``point`` the checkpoint even if it lies behind the last one, durably.

        For compaction, which must move the checkpoint off segments it rewrites. Returns
        whether the file was created (the caller then fsyncs the directory).

        :raises OSError: if the file cannot be written or fsynced.
        """
        with self._lock:
            self._last = (-1, -1)
        return self.record(point, sync=True)

    def _open_current(self) -> int | None:
        """Open the file if it is in the current format (``None``: it must be made)."""
        try:
            fd = self.fs.open(self.path, os.O_RDWR | os.O_CLOEXEC)
        except FileNotFoundError:
            return None
        data = self.fs.pread(fd, FILE_SIZE + 1, 0)
        decoded = decode_checkpoint(data)
        if len(data) != FILE_SIZE or data[:1] == b"{" or decoded is None:
            self.fs.close(fd)
            return None
        self._sequence = decoded[0]
        return fd

    def close(self) -> None:
        """Close the file (idempotent)."""
        with self._lock:
            if self._fd is not None:
                with contextlib.suppress(OSError):
                    self.fs.close(self._fd)
            self._fd = None
