"""The durable partitioned log: record batches, segments, indexes, topics."""

from ._errors import CorruptRecordError as CorruptRecordError
from ._errors import HeadwaterError as HeadwaterError
from ._errors import InvalidConfigError as InvalidConfigError
from ._errors import LogClosedError as LogClosedError
from ._errors import OffsetOutOfRangeError as OffsetOutOfRangeError
from ._errors import StorageFullError as StorageFullError
from ._errors import StoreError as StoreError
from ._errors import TopicExistsError as TopicExistsError
from ._errors import TopicNotFoundError as TopicNotFoundError
from ._errors import UnsupportedCompressionError as UnsupportedCompressionError

__all__ = (
    "CorruptRecordError",
    "HeadwaterError",
    "InvalidConfigError",
    "LogClosedError",
    "OffsetOutOfRangeError",
    "StorageFullError",
    "StoreError",
    "TopicExistsError",
    "TopicNotFoundError",
    "UnsupportedCompressionError",
)
