"""The persisted log start offset: where a partition begins after records were deleted.

Theory of operation. Retention removes whole segments, so without anything else the log
starts at the base offset of its first segment. Deleting records up to an offset (Kafka's
DeleteRecords, ``Store.delete_records``) may end inside a segment, so the log start is
then recorded on its own, in ``log-start-offset`` in the partition's folder, and the log
starts at the larger of the two. Segments that end at or before it are deleted later by
retention, exactly as segments that age out are.

The file is replaced atomically (written under a temporary name, fsynced, renamed, the
folder fsynced) before the new log start takes effect, so after a crash or ``kill -9``
the log starts where the last completed move put it, never earlier and never at a
half-written value. A leftover temporary file is thrown away by recovery with the
others (``settle_leftovers``).

Layout: 16 bytes, ``b"HWLS"``, an int64 offset, and a CRC-32C of the first 12 bytes.
A file that fails those checks is an error that names it: silently starting earlier
would bring deleted records back.

Pure encoding here, and two small routines over a :class:`FileSystem`.
"""

from __future__ import annotations

import struct
from pathlib import Path

from crc32c import crc32c

from ._errors import CorruptRecordError
from ._files import LOG_START_OFFSET_FILE, atomic_write
from ._fs import FileSystem

_MAGIC = b"HWLS"
_BODY = struct.Struct(">4sq")
_CRC = struct.Struct(">I")
FILE_SIZE = _BODY.size + _CRC.size


def encode_log_start(offset: int) -> bytes:
    """Return the file's bytes for log start ``offset`` (>= 0)."""
    assert offset >= 0, offset
    body = _BODY.pack(_MAGIC, offset)
    return body + _CRC.pack(crc32c(body))


def decode_log_start(data: bytes) -> int | None:
    """Return the offset the file's bytes hold, or ``None`` if they are not a valid file."""
    if len(data) != FILE_SIZE:
        return None
    body = data[: _BODY.size]
    (crc,) = _CRC.unpack_from(data, _BODY.size)
    magic, offset = _BODY.unpack(body)
    if magic != _MAGIC or crc != crc32c(body) or offset < 0:
        return None
    return int(offset)


def read_log_start(fs: FileSystem, directory: Path) -> int:
    """Return the log start offset recorded in partition folder ``directory`` (0 if none).

    :raises CorruptRecordError: if the file exists but does not hold a valid offset.
    """
    path = directory / LOG_START_OFFSET_FILE
    try:
        data = fs.read_bytes(path)
    except FileNotFoundError:
        return 0
    offset = decode_log_start(data)
    if offset is None:
        raise CorruptRecordError(
            f"not a valid log start offset ({len(data)} bytes); it records where the "
            "partition starts after records were deleted, so it is not ignored: remove it "
            "only to bring the deleted records back",
            path=str(path),
        )
    return offset


def write_log_start(fs: FileSystem, directory: Path, offset: int) -> None:
    """Record ``offset`` as the log start of partition folder ``directory``, durably.

    :raises OSError: if the file system refuses; the previous value then stays.
    """
    atomic_write(fs, directory / LOG_START_OFFSET_FILE, encode_log_start(offset))
