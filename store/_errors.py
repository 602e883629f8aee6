"""The exception tree shared by every headwater package.

Every error headwater raises on purpose derives from :class:`HeadwaterError`, so an
application can catch one type at its edge. Each package owns a subtree; the store's
lives here, the others define theirs beside their own code::

    HeadwaterError
    ├── StoreError
    │   ├── CorruptRecordError     bytes failed framing or CRC checks (names where)
    │   ├── OffsetOutOfRangeError  an offset below the log start or past the log end
    │   ├── TopicNotFoundError
    │   ├── TopicExistsError
    │   ├── InvalidConfigError     a config key or value a user can correct
    │   │   ├── InvalidTopicError  a topic name not allowed there: malformed, reserved for
    │   │   │                      internal topics (``__``), or colliding with another
    │   │   └── InvalidPartitionsError  a partition count a topic cannot take (it never shrinks)
    │   ├── PolicyViolationError   a change the topic's policy forbids (deleting records of
    │   │                          a compacted topic)
    │   ├── RecordTooLargeError    a batch over the topic's max_message_bytes
    │   ├── LogClosedError         the log or store was closed under the caller
    │   ├── DataDirectoryLockedError  another process owns the data directory
    │   ├── StorageFullError       the disk refused an append; nothing acknowledged was lost
    │   └── LogFailedError         an fsync failed; the partition refuses writes until reopened
    ├── GroupError                 (headwater.groups)
    ├── ProtocolError              (headwater.broker)
    ├── ProcessingError            (headwater.processing)
    └── ConnectorError             (headwater.connectors)
"""

from __future__ import annotations

from dataclasses import dataclass


class HeadwaterError(Exception):
    """Root of every error headwater raises deliberately."""


class StoreError(HeadwaterError):
    """An operating error of the log or the data directory."""


@dataclass(frozen=True, slots=True)
class DamagedRange:
    """Bytes of a segment that hold no valid batch, and the offsets around them.

    ``[position, end_position)`` of the file at ``path`` is damaged. Every offset up to
    ``last_good_offset`` reads fine before it; ``resume_offset`` is the first offset that
    can be read after it, or ``None`` when the damage runs to the end of the log.
    """

    path: str
    position: int
    end_position: int
    last_good_offset: int
    resume_offset: int | None

    def describe(self) -> str:
        """Say what the damage hides and where reading can go on, in one clause."""
        first = self.last_good_offset + 1
        where = f"the damage runs from position {self.position} to {self.end_position}"
        if self.resume_offset is None:
            return f"{where}, the end of the log: offsets from {first} on cannot be read"
        if self.resume_offset <= first:
            return f"{where}; reading can resume at offset {self.resume_offset}"
        return (
            f"{where}: offsets {first} to {self.resume_offset - 1} cannot be read; "
            f"reading can resume at offset {self.resume_offset}"
        )


class CorruptRecordError(StoreError):
    """Bytes that should hold record batches failed a framing, length or CRC check.

    The message names where: the file (when there is one) and the byte position. When the
    damage is in a partition's log, ``damage`` gives its extent and the offsets around it
    (where a reader can resume), and ``hint`` what a user can do about it.
    """

    def __init__(
        self,
        message: str,
        *,
        position: int | None = None,
        path: str | None = None,
        damage: DamagedRange | None = None,
        hint: str | None = None,
    ):
        where = []
        if path is not None:
            where.append(path)
        if position is not None:
            where.append(f"position {position}")
        text = f"{', '.join(where)}: {message}" if where else message
        if damage is not None:
            text += f"; {damage.describe()}"
        if hint:
            text += f"; {hint}"
        super().__init__(text)
        self.position = position
        self.path = path
        self.reason = message
        self.damage = damage
        self.hint = hint

    def with_hint(self, hint: str) -> CorruptRecordError:
        """Return the same error with ``hint`` (what to do about it) in its message."""
        return CorruptRecordError(
            self.reason, position=self.position, path=self.path, damage=self.damage, hint=hint
        )


class OffsetOutOfRangeError(StoreError):
    """An offset outside ``[log_start_offset, log_end_offset]``."""


class TopicNotFoundError(StoreError):
    """The named topic does not exist in this store."""


class TopicExistsError(StoreError):
    """A topic of that name already exists."""


class InvalidConfigError(StoreError):
    """A configuration key or value that is not valid; the message says which and why."""


class InvalidTopicError(InvalidConfigError):
    """A topic name that cannot be used for the operation (Kafka's ``InvalidTopicException``).

    The name is malformed, reserved for the system's internal topics (it starts with
    ``__``), or collides with an existing topic once ``.`` and ``_`` are read alike.
    """


class InvalidPartitionsError(InvalidConfigError):
    """A partition count a topic cannot take: not more than it has, or over the limit."""


class PolicyViolationError(StoreError):
    """A change the topic's settings forbid, such as deleting records of a compacted topic."""


class RecordTooLargeError(StoreError):
    """A batch larger than the topic's ``max_message_bytes``."""


class DataDirectoryLockedError(StoreError):
    """Another process has the data directory open; one process may own it at a time."""


class LogClosedError(StoreError):
    """The log (or the store holding it) was closed."""


class StorageFullError(StoreError):
    """The file system refused to grow the log (disk full or file size limit).

    The failed append is not acknowledged and leaves no partial batch behind; appends
    succeed again once space is freed.
    """


class LogFailedError(StoreError):
    """An fsync of the partition's files failed, so the log stopped accepting changes.

    The kernel may have dropped the pages it could not write, and reports that only once:
    no later fsync can vouch for them. Nothing written after the last successful fsync is
    acknowledged; appends and flushes are refused until the store is reopened, when
    recovery keeps what is really on disk.
    """


class UnsupportedCompressionError(StoreError):
    """A batch uses a compression codec that is unknown or not installed.

    snappy, lz4 and zstd need the optional extra: ``pip install 'headwater[compression]'``.
    """
