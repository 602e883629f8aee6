"""The connectors' errors: the ``ConnectorError`` subtree of headwater's one error tree::

    HeadwaterError                      (headwater.store)
    └── ConnectorError                  a connector could not do what it was asked
        ├── ConnectorConfigError        a setting a user can correct (a bad URL, glob, size)
        ├── SourceFileError             a source file cannot be read (gone, unreadable)
        ├── LogUnavailableError         the log cannot take or give records now (a broker
        │                               out of reach, a timeout): connectors retry
        └── DeliveryError               a destination refused records for good (a sink
                                        dead-letters them; raised only where it cannot)

Errors of the log itself (a topic that does not exist, a full disk) stay the store's
own and pass through unchanged.
"""

from __future__ import annotations

from headwater.store import HeadwaterError, StorageFullError


class ConnectorError(HeadwaterError):
    """An operating error of a connector."""


class ConnectorConfigError(ConnectorError):
    """A connector setting that is not valid; the message says which and why."""


class SourceFileError(ConnectorError):
    """A file a source reads cannot be opened or read."""


class DeliveryError(ConnectorError):
    """A destination refused records permanently (a 4xx answer, a value it cannot take)."""


class LogUnavailableError(ConnectorError):
    """The log a connector works on cannot be reached now (a broker down, a timeout).

    Connectors retry what failed; the ingest endpoint answers 503 with ``Retry-After``.
    """


#: The failures a connector outlives (a full disk, an I/O error, a log out of reach): it
#: logs them and retries what failed, from its last durable position, with backoff.
RETRYABLE = (OSError, StorageFullError, LogUnavailableError)
