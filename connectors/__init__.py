"""File and HTTP connectors: bring events into topics and push results out.

Sources write into a topic and keep their position durably in the log, so a restart
resumes where it stopped; sinks read a topic as a consumer group and commit only what
their destination accepted. Input a connector cannot deliver goes to a dead-letter topic
with headers that say why, never nowhere.

- :class:`FileSource` tails a file or a glob of files (JSON lines, CSV, text), following
  rotation and truncation.
- :class:`FileSink` writes a topic into files rolled by size and time, each visible under
  its final name only once complete; :class:`SinkRunner` runs it (or any
  :class:`SinkWriter`) as a consumer group member.
- :class:`HttpIngest` is an HTTP endpoint (starlette on hypercorn) that appends JSON and
  NDJSON bodies and answers once they are durable; :class:`IngestPolicy` holds its
  rules (limits, tokens, bodies) apart from any I/O.
- :class:`WebhookSink` POSTs a topic's records in batches to a URL, retrying with
  backoff and jitter, with a stable idempotency key per batch and an HMAC signature.

They run on a data directory's store (:class:`StoreLog`, :class:`LogPositionStore`, a
:class:`~headwater.groups.GroupCoordinator`) or against a Kafka-protocol cluster, ``headwater
broker`` or Kafka (:class:`KafkaLog`, :class:`KafkaPositionStore`, :class:`KafkaGroups`),
with the same code (a :class:`ConnectorSite` holds the three of one log). Standalone, the
``headwater connect`` command runs them; inside an app,
``app.source(FileSourceConnector(...))`` and ``stream.sink(FileSinkConnector(...))``
(also :class:`HttpIngestConnector`, :class:`WebhookConnector`) run the same code beside
the app's tasks, on its data directory or its cluster.
"""

from ._dead_letters import DeadLetters as DeadLetters
from ._dead_letters import dead_letter_topic as dead_letter_topic
from ._errors import ConnectorConfigError as ConnectorConfigError
from ._errors import ConnectorError as ConnectorError
from ._errors import DeliveryError as DeliveryError
from ._errors import LogUnavailableError as LogUnavailableError
from ._errors import SourceFileError as SourceFileError
from ._file_sink import FileFormat as FileFormat
from ._file_sink import FileSink as FileSink
from ._file_sink import FileSinkConfig as FileSinkConfig
from ._file_sink import final_name as final_name
from ._file_sink import parse_final_name as parse_final_name
from ._file_source import BackfillProgress as BackfillProgress
from ._file_source import FileSource as FileSource
from ._file_source import FileSourceConfig as FileSourceConfig
from ._file_source import FileSourceStatistics as FileSourceStatistics
from ._http_ingest import HttpIngest as HttpIngest
from ._http_ingest import IngestConfig as IngestConfig
from ._http_ingest import IngestStatistics as IngestStatistics
from ._http_policy import IngestLimits as IngestLimits
from ._http_policy import IngestPolicy as IngestPolicy
from ._http_policy import ParsedBody as ParsedBody
from ._http_policy import Refusal as Refusal
from ._idempotency import IdempotencyWindow as IdempotencyWindow
from ._in_app import FileSinkConnector as FileSinkConnector
from ._in_app import FileSourceConnector as FileSourceConnector
from ._in_app import HttpIngestConnector as HttpIngestConnector
from ._in_app import WebhookConnector as WebhookConnector
from ._kafka_groups import KafkaGroupConsumer as KafkaGroupConsumer
from ._kafka_groups import KafkaGroups as KafkaGroups
from ._kafka_log import KAFKA_POSITIONS_TOPIC as KAFKA_POSITIONS_TOPIC
from ._kafka_log import KafkaCluster as KafkaCluster
from ._kafka_log import KafkaLog as KafkaLog
from ._kafka_log import KafkaPositionStore as KafkaPositionStore
from ._line_formats import LineFormat as LineFormat
from ._log import Appended as Appended
from ._log import ConnectorLog as ConnectorLog
from ._log import StoreLog as StoreLog
from ._position import POSITIONS_TOPIC as POSITIONS_TOPIC
from ._position import LogPositionStore as LogPositionStore
from ._position import PositionStore as PositionStore
from ._sink_runner import Checkpoint as Checkpoint
from ._sink_runner import Committer as Committer
from ._sink_runner import SinkConsumer as SinkConsumer
from ._sink_runner import SinkGroups as SinkGroups
from ._sink_runner import SinkRunner as SinkRunner
from ._sink_runner import SinkStatistics as SinkStatistics
from ._sink_runner import SinkWriter as SinkWriter
from ._sites import ConnectorSite as ConnectorSite
from ._sites import app_site as app_site
from ._sites import cluster_site as cluster_site
from ._sites import store_site as store_site
from ._webhook import SIGNATURE_HEADER as SIGNATURE_HEADER
from ._webhook import WebhookConfig as WebhookConfig
from ._webhook import WebhookSink as WebhookSink
from ._webhook import WebhookStatistics as WebhookStatistics

__all__ = (
    "KAFKA_POSITIONS_TOPIC",
    "POSITIONS_TOPIC",
    "SIGNATURE_HEADER",
    "Appended",
    "BackfillProgress",
    "Checkpoint",
    "Committer",
    "ConnectorConfigError",
    "ConnectorError",
    "ConnectorLog",
    "ConnectorSite",
    "DeadLetters",
    "DeliveryError",
    "FileFormat",
    "FileSink",
    "FileSinkConfig",
    "FileSinkConnector",
    "FileSource",
    "FileSourceConfig",
    "FileSourceConnector",
    "FileSourceStatistics",
    "HttpIngest",
    "HttpIngestConnector",
    "IdempotencyWindow",
    "IngestConfig",
    "IngestLimits",
    "IngestPolicy",
    "IngestStatistics",
    "KafkaCluster",
    "KafkaGroupConsumer",
    "KafkaGroups",
    "KafkaLog",
    "KafkaPositionStore",
    "LineFormat",
    "LogPositionStore",
    "LogUnavailableError",
    "ParsedBody",
    "PositionStore",
    "Refusal",
    "SinkConsumer",
    "SinkGroups",
    "SinkRunner",
    "SinkStatistics",
    "SinkWriter",
    "SourceFileError",
    "StoreLog",
    "WebhookConfig",
    "WebhookConnector",
    "WebhookSink",
    "WebhookStatistics",
    "app_site",
    "cluster_site",
    "dead_letter_topic",
    "final_name",
    "parse_final_name",
    "store_site",
)
