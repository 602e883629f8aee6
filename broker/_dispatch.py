"""How a request finds its handler, and what every handler gets to know.

Theory of operation
-------------------
A handler is an ``async`` callable taking the decoded :class:`~headwater.broker.Request`
and the :class:`ClientInfo` of its connection, and returning the response body (a dict
shaped like the response layout; missing keys take their defaults), ``None`` for no
response at all (Produce with ``acks=0``), or a :class:`Deferred`: the rest of the work
(waiting for an fsync), which runs while the connection's next requests are handled.
Handlers are grouped by concern into modules that each build a table ``{ApiKey:
handler}`` over the objects they need:

* ``_handlers_admin.py``   ApiVersions, Metadata, CreateTopics, DeleteTopics,
                           FindCoordinator -- over the store and the node;
* ``_handlers_configs.py`` DescribeConfigs, AlterConfigs, IncrementalAlterConfigs -- over
                           the store;
* ``_handlers_partitions.py`` DeleteRecords, CreatePartitions -- over the store;
* ``_handlers_produce.py`` Produce, InitProducerId -- over the store and producer states;
* ``_handlers_fetch.py``   Fetch, ListOffsets -- over the store;
* ``_handlers_groups.py``  JoinGroup, SyncGroup, Heartbeat, LeaveGroup, OffsetCommit,
                           OffsetFetch, DescribeGroups, ListGroups, DeleteGroups,
                           OffsetDelete -- over a
                           :class:`~headwater.groups.GroupCoordinator` (``headwater broker``
                           passes them as ``extra_handlers``).
* ``_handlers_txn.py``     InitProducerId, AddPartitionsToTxn, AddOffsetsToTxn,
                           TxnOffsetCommit, EndTxn -- over a
                           :class:`~headwater.groups.TransactionCoordinator`;
* ``_handlers_txn_admin.py`` ListTransactions, DescribeTransactions, DescribeProducers,
                           WriteTxnMarkers -- over the transaction coordinator and its
                           store (both passed as ``extra_handlers`` too).

The server merges the tables (later ones win, so a module may take over an API) and
advertises in ApiVersions exactly the APIs of the merged table, with the version ranges
of :data:`~headwater.broker.API_VERSIONS`: a client never sees an API the broker does not
handle (librdkafka turns features on from what is advertised). A request for an API
outside the table closes the connection, as Kafka does for an unknown key.

Consumer groups slot in the same way: a module that builds JoinGroup, SyncGroup,
Heartbeat, LeaveGroup, OffsetCommit, OffsetFetch, DescribeGroups, ListGroups,
DeleteGroups and OffsetDelete handlers over a coordinator object, passed to
:class:`~headwater.broker.Broker` as ``extra_handlers``.

A handler answers bad *values* (an unknown topic, a stale epoch) with Kafka error codes
in its response; it never raises for them. What it raises is a bug: the server logs it
with its traceback and closes that connection only.

Ordering: the handlers of one connection's requests run one at a time, in the order the
requests came, each to completion or to its :class:`Deferred`; responses are sent in
request order whatever order deferred work finishes in. So a Produce handler writes its
batches in order, and returns the wait for durability as deferred work: requests that a
client pipelines (librdkafka sends many before the first answer) are written while the
first one's fsync runs, and share the next one -- group commit within one connection.
A handler that waits without deferring (a long-polling Fetch) holds the connection's
later requests back, as a Kafka broker does.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import NamedTuple, Protocol

from ._protocol import API_VERSIONS, ApiKey, Message, Request


@dataclass(frozen=True, slots=True)
class ClientInfo:
    """The connection a request came on."""

    connection_id: int
    host: str
    port: int


class Deferred(NamedTuple):
    """Work a handler leaves to finish after the connection's next requests are handled.

    ``finish`` returns the response body (or ``None`` for no response); it runs in a task
    of the connection, and its response is still sent in request order.
    """

    finish: Callable[[], Awaitable[Message | None]]


class Handler(Protocol):
    """Answer one request: the response body, ``None`` for no response, or deferred work."""

    def __call__(
        self, request: Request, client: ClientInfo, /
    ) -> Awaitable[Message | Deferred | None]:
        """Handle ``request`` from ``client``."""
        ...


HandlerTable = Mapping[ApiKey, Handler]
"""API key -> its handler."""


def advertised_versions(table: HandlerTable) -> list[dict[str, int]]:
    """Return the ApiVersions entries for the APIs in ``table``, sorted by key."""
    entries = []
    for key in sorted(table):
        low, high = API_VERSIONS[key].advertised
        entries.append({"api_key": int(key), "min_version": low, "max_version": high})
    return entries


def is_accepted(request: Request) -> bool:
    """Return whether the broker serves the request's version, not only decodes it.

    Versions that are advertised but not accepted (Produce v0-2, Fetch v0-3, ListOffsets
    v0 carry older message formats) are answered with ``UNSUPPORTED_VERSION``.
    """
    header = request.header
    return API_VERSIONS[ApiKey(header.api_key)].is_accepted(header.api_version)
