"""The durable partitioned log: record batches, segments, indexes, topics.

A :class:`Store` is a data directory of topics; each topic has partitions, and each
partition is an append-only :class:`PartitionLog` of Kafka v2 record batches, served
asynchronously by a :class:`Partition`::

    async with open_store("headwater-data") as store:
        await store.create_topic("clicks", TopicConfig(partitions=4))
        placed = await store.append("clicks", [NewRecord(value=b"{}", key=b"user-1")])
        records = await store.partition("clicks", placed[0][0]).read_records(0, 1 << 20)
"""

from ._active_producers import ActiveProducer as ActiveProducer
from ._active_producers import active_producers as active_producers
from ._address import ADDRESS_FILE as ADDRESS_FILE
from ._address import ServedAddress as ServedAddress
from ._address import clear_served_address as clear_served_address
from ._address import served_address as served_address
from ._address import write_served_address as write_served_address
from ._batch import BatchHeader as BatchHeader
from ._batch import TimestampType as TimestampType
from ._batch import parse_batch_header as parse_batch_header
from ._batch import verify_batch as verify_batch
from ._compression import Compression as Compression
from ._compression import check_codec as check_codec
from ._config import CleanupPolicy as CleanupPolicy
from ._config import Durability as Durability
from ._config import TopicConfig as TopicConfig
from ._config import kafka_config_entries as kafka_config_entries
from ._config import setting_keys as setting_keys
from ._control import ControlType as ControlType
from ._control import encode_transactional_batch as encode_transactional_batch
from ._errors import CoordinatorFencedError as CoordinatorFencedError
from ._errors import CorruptRecordError as CorruptRecordError
from ._errors import DamagedRange as DamagedRange
from ._errors import DataDirectoryLockedError as DataDirectoryLockedError
from ._errors import DuplicateSequenceError as DuplicateSequenceError
from ._errors import HeadwaterError as HeadwaterError
from ._errors import InvalidConfigError as InvalidConfigError
from ._errors import InvalidPartitionsError as InvalidPartitionsError
from ._errors import InvalidProducerEpochError as InvalidProducerEpochError
from ._errors import InvalidTopicError as InvalidTopicError
from ._errors import InvalidTxnStateError as InvalidTxnStateError
from ._errors import LogClosedError as LogClosedError
from ._errors import LogFailedError as LogFailedError
from ._errors import OffsetOutOfRangeError as OffsetOutOfRangeError
from ._errors import OutOfOrderSequenceError as OutOfOrderSequenceError
from ._errors import PolicyViolationError as PolicyViolationError
from ._errors import ProducerStateError as ProducerStateError
from ._errors import RecordTooLargeError as RecordTooLargeError
from ._errors import StorageFullError as StorageFullError
from ._errors import StoreError as StoreError
from ._errors import TopicExistsError as TopicExistsError
from ._errors import TopicNotFoundError as TopicNotFoundError
from ._errors import UnsupportedCompressionError as UnsupportedCompressionError
from ._fs import FileSystem as FileSystem
from ._fs import OsFileSystem as OsFileSystem
from ._holder import LockHolder as LockHolder
from ._holder import read_holder as read_holder
from ._isolation import IsolationLevel as IsolationLevel
from ._json_numbers import MAX_JSON_DEPTH as MAX_JSON_DEPTH
from ._json_numbers import exact_dumps as exact_dumps
from ._json_numbers import exact_json as exact_json
from ._json_numbers import exact_loads as exact_loads
from ._json_numbers import exact_loads_each as exact_loads_each
from ._json_numbers import has_wide_integer as has_wide_integer
from ._json_numbers import wide_integer_rows as wide_integer_rows
from ._keys import canonical_key as canonical_key
from ._log import AppendInfo as AppendInfo
from ._log import LogStatistics as LogStatistics
from ._log import PartitionLog as PartitionLog
from ._metrics import MetricSet as MetricSet
from ._metrics import Tracked as Tracked
from ._metrics import disable_metrics as disable_metrics
from ._metrics import enable_metrics as enable_metrics
from ._metrics import metrics_registry as metrics_registry
from ._partition import Partition as Partition
from ._partition import records_from as records_from
from ._partitioner import StickyPartitioner as StickyPartitioner
from ._partitioner import murmur2 as murmur2
from ._partitioner import partition_for_key as partition_for_key
from ._partitioner import partition_rows as partition_rows
from ._producer_state import AbortedTransaction as AbortedTransaction
from ._records import DecimalColumn as DecimalColumn
from ._records import NewRecord as NewRecord
from ._records import Record as Record
from ._records import RecordColumns as RecordColumns
from ._records import decode_columns as decode_columns
from ._records import decode_records as decode_records
from ._records import encode_batch as encode_batch
from ._records import encode_columns as encode_columns
from ._repair import RepairAction as RepairAction
from ._repair import RepairReport as RepairReport
from ._repair import repair_partition as repair_partition
from ._repair import repair_topic as repair_topic
from ._store import PartitionDescription as PartitionDescription
from ._store import Store as Store
from ._store import TopicDescription as TopicDescription
from ._store import is_data_directory as is_data_directory
from ._store import open_store as open_store
from ._topic_names import INTERNAL_PREFIX as INTERNAL_PREFIX
from ._topic_names import is_internal_topic as is_internal_topic
from ._topic_names import validate_topic_name as validate_topic_name

__all__ = (
    "ADDRESS_FILE",
    "INTERNAL_PREFIX",
    "MAX_JSON_DEPTH",
    "AbortedTransaction",
    "ActiveProducer",
    "AppendInfo",
    "BatchHeader",
    "CleanupPolicy",
    "Compression",
    "ControlType",
    "CoordinatorFencedError",
    "CorruptRecordError",
    "DamagedRange",
    "DataDirectoryLockedError",
    "DecimalColumn",
    "DuplicateSequenceError",
    "Durability",
    "FileSystem",
    "HeadwaterError",
    "InvalidConfigError",
    "InvalidPartitionsError",
    "InvalidProducerEpochError",
    "InvalidTopicError",
    "InvalidTxnStateError",
    "IsolationLevel",
    "LockHolder",
    "LogClosedError",
    "LogFailedError",
    "LogStatistics",
    "MetricSet",
    "NewRecord",
    "OffsetOutOfRangeError",
    "OsFileSystem",
    "OutOfOrderSequenceError",
    "Partition",
    "PartitionDescription",
    "PartitionLog",
    "PolicyViolationError",
    "ProducerStateError",
    "Record",
    "RecordColumns",
    "RecordTooLargeError",
    "RepairAction",
    "RepairReport",
    "ServedAddress",
    "StickyPartitioner",
    "StorageFullError",
    "Store",
    "StoreError",
    "TimestampType",
    "TopicConfig",
    "TopicDescription",
    "TopicExistsError",
    "TopicNotFoundError",
    "Tracked",
    "UnsupportedCompressionError",
    "active_producers",
    "canonical_key",
    "check_codec",
    "clear_served_address",
    "decode_columns",
    "decode_records",
    "disable_metrics",
    "enable_metrics",
    "encode_batch",
    "encode_columns",
    "encode_transactional_batch",
    "exact_dumps",
    "exact_json",
    "exact_loads",
    "exact_loads_each",
    "has_wide_integer",
    "is_data_directory",
    "is_internal_topic",
    "kafka_config_entries",
    "metrics_registry",
    "murmur2",
    "open_store",
    "parse_batch_header",
    "partition_for_key",
    "partition_rows",
    "read_holder",
    "records_from",
    "repair_partition",
    "repair_topic",
    "served_address",
    "setting_keys",
    "validate_topic_name",
    "verify_batch",
    "wide_integer_rows",
    "write_served_address",
)
