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
    │   │   └── InvalidTopicError  a topic name not allowed there: malformed, reserved for
    │   │                          internal topics (``__``), or colliding with another
    │   ├── RecordTooLargeError    a batch over the topic's max_message_bytes
    │   ├── LogClosedError         the log or store was closed under the caller
    │   ├── DataDirectoryLockedError  another process owns the data directory
    │   └── StorageFullError       the disk refused an append; nothing acknowledged was lost
    ├── GroupError                 (headwater.groups)
    ├── ProtocolError              (headwater.broker)
    ├── ProcessingError            (headwater.processing)
    └── ConnectorError             (headwater.connectors)
"""

from __future__ import annotations


class HeadwaterError(Exception):
    """Root of every error headwater raises deliberately."""


class StoreError(HeadwaterError):
    """An operating error of the log or the data directory."""


class CorruptRecordError(StoreError):
    """Bytes that should hold record batches failed a framing, length or CRC check.

    The message names where: the file (when there is one) and the byte position.
    """

    def __init__(self, message: str, *, position: int | None = None, path: str | None = None):
        where = []
        if path is not None:
            where.append(path)
        if position is not None:
            where.append(f"position {position}")
        super().__init__(f"{', '.join(where)}: {message}" if where else message)
        self.position = position
        self.path = path
        self.reason = message


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


class UnsupportedCompressionError(StoreError):
    """A batch uses a compression codec that is unknown or not installed.

    snappy, lz4 and zstd need the optional extra: ``pip install 'headwater[compression]'``.
    """
