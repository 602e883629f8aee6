"""The processor DSL and its runtime: pipelines that read streams and write derived topics.

An :class:`App` names a set of streams; a :class:`Stream` is an immutable, typed
description built one operator at a time (``filter``, ``map``, ``flat_map``,
``map_async``, ``filter_async``, ``key_by``, ``with_metadata``, ``branch``, ``split``,
``merge``, ``peek``, ``repartition``, ``to``)::

    from headwater.processing import App

    app = App("clicks")
    clicks = app.stream("clicks")                       # JSON values by default
    (clicks.filter(lambda e: e["ms"] > 100)
           .map(lambda e: {**e, "slow": e["ms"] > 500})
           .to("clicks-enriched"))
    app.run()                                           # or: headwater run app.py

Stateful steps keep per-task state in stores backed by compacted changelog topics
(``<app>-<name>-changelog``), restored when a task starts, and exactly once for state
(a restarted task never applies an input twice): windowed aggregations
(``key_by(...).window(windows.tumbling(seconds=10), timestamp=...).count()``, then
``.final()``, ``.updates()`` or ``.late()``), aggregations over all time and topics read
as tables (:class:`Table`), joins (stream-table, windowed stream-stream, table-table, with
Kafka Streams' semantics) and ``process()``, the processor API with timers on wall and
stream time. A quiet task closes its windows by the wall clock (``idle_ms``).

The topics an app reads must exist when it runs (:class:`MissingSourceTopicError`),
unless a stream declares its partition count (``app.stream("clicks", partitions=3)``),
which lets the app create it. ``App.run`` joins the app's consumer group and runs its
tasks (task N of a group of co-partitioned topics reads partition N of each, with its
own instance of every operator), committing input offsets only after the outputs are
durable (at-least-once). A ``key_by`` key stays the user's object until a sink writes
it (canonical JSON by default, see :class:`JsonKeySerde`). Every derived record
carries a ``headwater.source`` lineage header. The runtime reads the log through a
:class:`Backend` -- the embedded one (:class:`InProcessBackend`), or a Kafka-protocol
cluster's (``App("clicks", bootstrap="host:9092")``, ``headwater run --bootstrap``, or
``$HEADWATER_BOOTSTRAP``) -- and wall time through a :class:`Clock`. Test pipelines
with :class:`headwater.processing.testing.TestDriver`.
"""

from . import windows as windows
from ._app import App as App
from ._backends import Backend as Backend
from ._backends import Membership as Membership
from ._backends.in_process import InProcessBackend as InProcessBackend
from ._backends.in_process import open_in_process as open_in_process
from ._batch import Event as Event
from ._clock import Clock as Clock
from ._clock import WallClock as WallClock
from ._config import AppConfig as AppConfig
from ._connectors import AppConnector as AppConnector
from ._encoding import OutRecords as OutRecords
from ._errors import ClusterError as ClusterError
from ._errors import ErrorPolicy as ErrorPolicy
from ._errors import MissingSourceTopicError as MissingSourceTopicError
from ._errors import OperatorError as OperatorError
from ._errors import ProcessingError as ProcessingError
from ._errors import ProducerFencedError as ProducerFencedError
from ._errors import SerdeError as SerdeError
from ._errors import TopologyError as TopologyError
from ._errors import TransactionAbortedError as TransactionAbortedError
from ._lineage import SOURCE_HEADER as SOURCE_HEADER
from ._lineage import SourcePosition as SourcePosition
from ._lineage import source_of as source_of
from ._retry import Retry as Retry
from ._runtime import PartitionProgress as PartitionProgress
from ._runtime import RestoreProgress as RestoreProgress
from ._runtime import RunStatistics as RunStatistics
from ._serde import BytesSerde as BytesSerde
from ._serde import JsonKeySerde as JsonKeySerde
from ._serde import JsonSerde as JsonSerde
from ._serde import Serde as Serde
from ._serde import StrSerde as StrSerde
from ._serde import encode_key as encode_key
from ._stateful import ProcessorContext as ProcessorContext
from ._stores import MemoryStore as KeyValueStore
from ._stream import Stream as Stream
from ._table import Change as Change
from ._table import Table as Table
from ._windowed import WindowedAggregation as WindowedAggregation
from ._windowed import WindowedStream as WindowedStream
from .windows import Windowed as Windowed

__all__ = (
    "SOURCE_HEADER",
    "App",
    "AppConfig",
    "AppConnector",
    "Backend",
    "BytesSerde",
    "Change",
    "Clock",
    "ClusterError",
    "ErrorPolicy",
    "Event",
    "InProcessBackend",
    "JsonKeySerde",
    "JsonSerde",
    "KeyValueStore",
    "Membership",
    "MissingSourceTopicError",
    "OperatorError",
    "OutRecords",
    "PartitionProgress",
    "RestoreProgress",
    "ProcessorContext",
    "ProcessingError",
    "ProducerFencedError",
    "Retry",
    "RunStatistics",
    "Serde",
    "SerdeError",
    "SourcePosition",
    "Stream",
    "StrSerde",
    "Table",
    "TopologyError",
    "TransactionAbortedError",
    "WallClock",
    "Windowed",
    "WindowedAggregation",
    "WindowedStream",
    "encode_key",
    "open_in_process",
    "source_of",
    "windows",
)
