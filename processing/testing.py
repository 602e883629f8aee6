"""Test a pipeline with plain pytest: :class:`TestDriver` runs an app without a log.

It feeds records into the app's input topics and runs them through exactly the code the
runtime runs (the same pipelines, error policies, lineage and placement), keeping every
topic in memory: no disk, no threads, no consumer group. Each :meth:`TestDriver.send`
processes its record at once, with async operators on a trio event loop whose clock is
virtual (``trio.testing.MockClock``): sleeps and retry backoffs take no real time, and
the outputs are the same on every run. Records written to a repartition topic are read
back at once, so :meth:`TestDriver.values` shows the end results.

Example (a test suite runs this)::

    >>> from headwater.processing import App
    >>> from headwater.processing.testing import TestDriver
    >>> app = App("clicks")
    >>> clicks = app.stream("clicks")
    >>> slow = clicks.filter(lambda e: e["ms"] > 100)
    >>> slow.map(lambda e: {**e, "slow": e["ms"] > 500}).to("enriched")
    >>> driver = TestDriver(app)
    >>> driver.send("clicks", {"user": "u1", "ms": 50})
    >>> driver.send("clicks", {"user": "u2", "ms": 700})
    >>> driver.values("enriched")
    [{'user': 'u2', 'ms': 700, 'slow': True}]
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, NamedTuple

import anyio
from trio.testing import MockClock

from headwater.store import Record, RecordColumns, partition_for_key

from ._app import App
from ._errors import TopologyError
from ._graph import SINK_KINDS, plan_topics
from ._lineage import Headers
from ._pipeline import Pipeline, Write, build_pipelines
from ._serde import BytesSerde, Serde, encode_key

__all__ = ("TestDriver", "TestRecord")

#: The driver's clock at the start: 2024-01-01T00:00:00Z in epoch ms.
START_MS = 1_704_067_200_000


class TestRecord(NamedTuple):
    """A record an app wrote, as :meth:`TestDriver.records` returns it.

    ``value`` is decoded with the sink's serde (dead letters: the raw bytes).
    """

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: Any
    timestamp: int
    headers: Headers


class TestDriver:
    """Runs ``app`` in memory: feed records in, read what each topic received.

    :param app: the app under test.
    :param partitions: partition counts of topics (input topics default to one;
        outputs follow the same rules as when the app runs).
    :param start_ms: the clock's start, in epoch ms; records sent without a timestamp
        get the clock's time.
    :raises TopologyError: if the app's graph cannot run.

    Concurrency: synchronous, for plain (non-async) tests; do not call it from inside a
    running event loop.
    """

    __test__ = False  # not a test class, whatever pytest thinks of its name

    def __init__(
        self, app: App, *, partitions: Mapping[str, int] | None = None, start_ms: int = START_MS
    ) -> None:
        graph = app.graph
        graph.validate()
        self._counts = plan_topics(graph, dict(partitions or {}), default_partitions=1)
        self._pipelines, internal = build_pipelines(graph, self._counts)
        self._internal = set(internal)
        self._now_ms = start_ms
        self._logs: dict[str, list[list[Record]]] = {
            topic: [[] for _ in range(count)] for topic, count in self._counts.items()
        }
        self._serdes: dict[str, Serde[Any]] = {}
        for node in graph.nodes:
            if node.topic is not None and (node.kind in SINK_KINDS or node.kind == "source"):
                self._serdes.setdefault(node.topic, node.params["serde"])
        self._inputs = {n.topic for n in graph.nodes if n.kind == "source" and n.topic}
        self._pending: list[tuple[str, int, list[Record]]] = []

    # -- time --------------------------------------------------------------------------------

    @property
    def now_ms(self) -> int:
        """The driver's clock, in epoch ms."""
        return self._now_ms

    def advance(self, ms: int) -> None:
        """Move the clock forward by ``ms`` milliseconds.

        :raises ValueError: if ``ms`` is negative.
        """
        if ms < 0:
            raise ValueError(f"time only moves forward; got {ms} ms")
        self._now_ms += ms

    # -- input -------------------------------------------------------------------------------

    def send(
        self,
        topic: str,
        value: Any,
        *,
        key: object = None,
        timestamp: int | None = None,
        headers: Sequence[tuple[str, bytes | None]] = (),
        partition: int | None = None,
    ) -> None:
        """Append one record to input ``topic`` and process it (and all that follows).

        ``value`` is serialised with the stream's serde; ``key`` is encoded like a
        ``key_by`` key and places the record (murmur2), else it goes to ``partition``
        (default 0).

        :raises OperatorError: if a user function fails under the ``raise`` policy.
        :raises TopologyError: if ``topic`` is not one of the app's input topics.
        """
        self.send_many(
            topic, [value], key=key, timestamp=timestamp, headers=headers, partition=partition
        )

    def send_many(
        self,
        topic: str,
        values: Iterable[Any],
        *,
        key: object = None,
        timestamp: int | None = None,
        headers: Sequence[tuple[str, bytes | None]] = (),
        partition: int | None = None,
    ) -> None:
        """Append records with ``values`` to one partition as one batch, and process it.

        Arguments as :meth:`send`, shared by every record.
        """
        if topic not in self._inputs:
            raise TopologyError(f"{topic!r} is not an input topic of the app")
        serde = self._serdes[topic]
        raw_key = encode_key(key)
        count = self._counts[topic]
        if partition is None:
            partition = 0 if raw_key is None else partition_for_key(raw_key, count)
        if not 0 <= partition < count:
            raise TopologyError(f"topic {topic!r} has no partition {partition}")
        log = self._logs[topic][partition]
        stamp = self._now_ms if timestamp is None else timestamp
        batch = [
            Record(len(log) + i, stamp, raw_key, serde.serialize(v), tuple(headers))
            for i, v in enumerate(values)
        ]
        if not batch:
            return
        log.extend(batch)
        self._pending.append((topic, partition, batch))
        anyio.run(
            self._drain, backend="trio", backend_options={"clock": MockClock(autojump_threshold=0)}
        )

    async def _drain(self) -> None:
        while self._pending:
            topic, partition, records = self._pending.pop(0)
            pipeline: Pipeline | None = self._pipelines.get(topic)
            if pipeline is None:
                continue
            outcome = await pipeline.process(partition, RecordColumns.of(records))
            for write in outcome.writes:
                self._apply(write)

    def _apply(self, write: Write) -> None:
        log = self._logs[write.topic][write.partition]
        out = write.records
        headers = out.all_headers()
        written = [
            Record(len(log) + i, ts, key, value, h)
            for i, (value, key, ts, h) in enumerate(
                zip(out.values, out.keys, out.timestamps, headers, strict=True)
            )
        ]
        log.extend(written)
        if write.topic in self._internal:
            self._pending.append((write.topic, write.partition, written))

    # -- output ------------------------------------------------------------------------------

    def records(self, topic: str) -> list[TestRecord]:
        """Return every record ``topic`` holds, partition by partition, in offset order.

        :raises TopologyError: if the app does not use ``topic``.
        """
        partitions = self._logs.get(topic)
        if partitions is None:
            raise TopologyError(f"the app does not use topic {topic!r}")
        serde = self._serdes.get(topic, BytesSerde())
        return [
            TestRecord(
                topic, p, r.offset, r.key, serde.deserialize(r.value), r.timestamp, r.headers
            )
            for p, log in enumerate(partitions)
            for r in log
        ]

    def values(self, topic: str) -> list[Any]:
        """Return the values of every record ``topic`` holds (see :meth:`records`)."""
        return [r.value for r in self.records(topic)]

    def partitions(self, topic: str) -> int:
        """Return how many partitions ``topic`` has in the driver.

        :raises TopologyError: if the app does not use ``topic``.
        """
        if topic not in self._counts:
            raise TopologyError(f"the app does not use topic {topic!r}")
        return self._counts[topic]
