"""File and HTTP connectors: bring events into topics and push results out.

Sources write into a topic and keep their position durably in the log, so a restart
resumes where it stopped; sinks read a topic as a consumer group and commit only what
their destination accepted. Input a connector cannot deliver goes to a dead-letter topic
with headers that say why, never nowhere.

- :class:`FileSource` tails a file or a glob of files (JSON lines, CSV, text), following
  rotation and truncation.
"""

from ._dead_letters import DeadLetters as DeadLetters
from ._dead_letters import dead_letter_topic as dead_letter_topic
from ._errors import ConnectorConfigError as ConnectorConfigError
from ._errors import ConnectorError as ConnectorError
from ._errors import DeliveryError as DeliveryError
from ._errors import SourceFileError as SourceFileError
from ._file_source import BackfillProgress as BackfillProgress
from ._file_source import FileSource as FileSource
from ._file_source import FileSourceConfig as FileSourceConfig
from ._file_source import FileSourceStatistics as FileSourceStatistics
from ._line_formats import LineFormat as LineFormat
from ._log import Appended as Appended
from ._log import ConnectorLog as ConnectorLog
from ._log import StoreLog as StoreLog
from ._position import POSITIONS_TOPIC as POSITIONS_TOPIC
from ._position import LogPositionStore as LogPositionStore
from ._position import PositionStore as PositionStore

__all__ = (
    "POSITIONS_TOPIC",
    "Appended",
    "BackfillProgress",
    "ConnectorConfigError",
    "ConnectorError",
    "ConnectorLog",
    "DeadLetters",
    "DeliveryError",
    "FileSource",
    "FileSourceConfig",
    "FileSourceStatistics",
    "LineFormat",
    "LogPositionStore",
    "PositionStore",
    "SourceFileError",
    "StoreLog",
    "dead_letter_topic",
)
