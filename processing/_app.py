"""App: a named set of streams, and running them."""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import logging
import os
import re
import signal
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any, TypeVar, overload

import anyio
from anyio.abc import TaskStatus

from headwater.groups import TopicPartition
from headwater.store import HeadwaterError

from ._backends import Backend
from ._backends._bootstrap import BOOTSTRAP_ENV_VAR, check_bootstrap
from ._backends.in_process import default_data_dir, open_in_process
from ._clock import Clock
from ._config import EXACTLY_ONCE, TRANSACTION_TIMEOUT_MS, AppConfig
from ._connectors import AppConnector, run_with_connectors
from ._errors import ErrorPolicy, MissingSourceTopicError, TopologyError, parse_policy
from ._graph import Graph, plan_topics
from ._runtime import PartitionProgress, RestoreProgress, RunStatistics, Runtime
from ._serde import JSON, JSON_KEY, Serde
from ._stores import BYTES_KEYS
from ._stream import Stream, check_partitions, check_topic
from ._table import Table, Tombstones

logger = logging.getLogger("headwater.processing")

T = TypeVar("T")

_APP_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}")


class App:
    """A stream-processing application: its streams, and the means to run them.

    :param name: the app's name: its consumer group id, and the prefix of its internal
        topics (letters, digits, ``.``, ``_``, ``-``; at most 200).
    :param data_dir: the embedded log's data directory; by default ``$HEADWATER_DATA``,
        else ``./headwater-data`` (read when the app runs).
    :param bootstrap: ``HOST:PORT[,HOST:PORT...]`` of a Kafka-protocol cluster
        (``headwater broker``, Apache Kafka) to run on instead of a data directory; by
        default ``$HEADWATER_BOOTSTRAP`` if set (read when the app runs).
    :param config: runtime settings (:class:`AppConfig`).
    :param guarantee: ``"at_least_once"`` or ``"exactly_once"`` (overrides the config's
        ``guarantee``; see :class:`AppConfig`).
    :raises TopologyError: for a bad name, a bad guarantee, or both ``data_dir`` and
        ``bootstrap``.
    :raises ClusterError: for a malformed ``bootstrap``.

    The app is the same wherever it runs: the embedded log, or a cluster, where several
    processes running it share its partitions through its consumer group.

    Build streams with :meth:`stream`, then :meth:`run` the app (or ``headwater run``);
    test it with :class:`~headwater.processing.testing.TestDriver`. Not thread-safe:
    build the graph, then run it, from one thread.
    """

    def __init__(
        self,
        name: str,
        *,
        data_dir: str | os.PathLike[str] | None = None,
        bootstrap: str | None = None,
        config: AppConfig | None = None,
        guarantee: str | None = None,
    ) -> None:
        if not isinstance(name, str) or not _APP_NAME.fullmatch(name):
            raise TopologyError(
                f"invalid app name {name!r}: use 1-200 letters, digits, '.', '_' or '-',"
                " starting with a letter or digit"
            )
        if config is not None and not isinstance(config, AppConfig):
            raise TopologyError(f"config must be an AppConfig, got {config!r}")
        if data_dir is not None and bootstrap is not None:
            raise TopologyError("give an App data_dir or bootstrap, not both")
        self.name = name
        self.config = config or AppConfig()
        if guarantee is not None:
            self.config = dataclasses.replace(self.config, guarantee=guarantee)
        self._data_dir = None if data_dir is None else Path(data_dir)
        self._bootstrap = None if bootstrap is None else check_bootstrap(bootstrap)
        self._graph = Graph()
        self._runtime: Runtime | None = None
        self._sources: list[AppConnector] = []
        self._sinks: list[AppConnector] = []

    def __repr__(self) -> str:
        return f"<App {self.name!r}: {len(self._graph.nodes)} nodes>"

    @property
    def data_dir(self) -> Path:
        """The data directory the app runs on (see the constructor)."""
        return self._data_dir if self._data_dir is not None else default_data_dir()

    @property
    def bootstrap(self) -> str | None:
        """The cluster the app runs on (see the constructor), or None for a data directory.

        ``$HEADWATER_BOOTSTRAP`` counts unless the app was given a data directory.
        """
        if self._bootstrap is not None or self._data_dir is not None:
            return self._bootstrap
        return os.environ.get(BOOTSTRAP_ENV_VAR) or None

    @property
    def graph(self) -> Graph:
        """The operator graph the app's streams describe."""
        return self._graph

    @overload
    def stream(
        self,
        topic: str,
        *,
        on_error: ErrorPolicy | str = ...,
        name: str | None = ...,
        partitions: int | None = ...,
    ) -> Stream[Any]: ...

    @overload
    def stream(
        self,
        topic: str,
        *,
        serde: Serde[T],
        on_error: ErrorPolicy | str = ...,
        name: str | None = ...,
        partitions: int | None = ...,
    ) -> Stream[T]: ...

    def stream(
        self,
        topic: str,
        *,
        serde: Serde[Any] | None = None,
        on_error: ErrorPolicy | str = ErrorPolicy.RAISE,
        name: str | None = None,
        partitions: int | None = None,
    ) -> Stream[Any]:
        """Return the stream of ``topic``'s values, decoded by ``serde`` (JSON by default).

        ``on_error`` is the stream's error policy (see :class:`ErrorPolicy`), for its
        decoding and every operator added to it; ``name`` names the stream where a name
        is needed: its dead-letter topic is ``<name>-dlq`` (``<topic>-dlq`` by default).

        The topic must exist when the app starts, else the run fails with
        :class:`MissingSourceTopicError` (a misspelt topic or data directory is an
        error, not an app with nothing to do). With ``partitions`` the app creates it
        with that many partitions when it is missing instead; an existing topic keeps
        its own count.

        :raises TopologyError: for a bad topic name, policy or partition count, or a
            partition count that differs from another stream's of the same topic.
        """
        check_topic(topic, "stream")
        check_partitions(partitions)
        for other in self._graph.sources():
            declared = other.params.get("partitions")
            if (
                other.topic == topic
                and None not in (declared, partitions)
                and declared != partitions
            ):
                raise TopologyError(
                    f"stream {topic!r}: partitions={partitions} differs from the "
                    f"partitions={declared} of another stream of that topic"
                )
        stream_name = topic if name is None else name
        dead_letter_topic = check_topic(f"{stream_name}-dlq", "stream name")
        policy = parse_policy(on_error)
        node = self._graph.add(
            "source",
            topic=topic,
            policy=policy,  # decoding follows the stream's policy too
            dead_letter_topic=dead_letter_topic,
            params={"serde": serde or JSON, "partitions": partitions},
        )
        return Stream(self, node, policy=policy, dead_letter_topic=dead_letter_topic)

    def table(
        self,
        topic: str,
        *,
        serde: Serde[Any] | None = None,
        key_serde: Serde[Any] | None = None,
        name: str | None = None,
        store: str = "memory",
        partitions: int | None = None,
    ) -> Table[Any]:
        """Return the table of ``topic``: the latest value of each key (a record without a
        value deletes its key), as Kafka Streams' ``builder.table``.

        Values are decoded by ``serde`` (JSON by default). Keys are the record keys as
        stored, which is what joins compare: a stream keyed by ``key_by`` meets the
        table's keys if both encode keys alike (canonical JSON by default, as
        ``headwater produce --key`` writes them); ``key_serde`` decodes them for
        :meth:`Table.get` (JSON by default; ``StrSerde()`` for plain text keys written
        by other tools, ``BytesSerde()`` for raw bytes). ``name`` names the table's
        store and its changelog ``<app>-<name>-changelog`` (default: the topic);
        ``store`` is ``"memory"`` or ``"disk"``; ``partitions`` as for :meth:`stream`.

        :raises TopologyError: for a bad topic, name or store kind.
        """
        from ._windowed import store_kind, store_spec  # noqa: PLC0415 - built on the stream

        kind = store_kind(store)
        source = self.stream(topic, serde=serde or JSON, partitions=partitions)
        name = topic if name is None else name
        values = serde or JSON
        spec = store_spec(self, name, kind=kind, keys=BYTES_KEYS, values=Tombstones(values))
        node = source._derive(
            "table",
            params={"stores": [spec], "name": name, "key_serde": key_serde or JSON_KEY},
        ).node
        return Table(self, node, name)

    def source(
        self,
        connector: AppConnector,
        *,
        serde: Serde[Any] | None = None,
        on_error: ErrorPolicy | str = ErrorPolicy.RAISE,
        partitions: int = 1,
    ) -> Stream[Any]:
        """Run ``connector`` (a source of :mod:`headwater.connectors`) with the app and
        return the stream of the topic it writes.

        The topic is created with ``partitions`` partitions when missing; ``serde`` and
        ``on_error`` are as for :meth:`stream`. See ``_connectors.py`` for how the
        connector runs beside the app's tasks.

        :raises TopologyError: as :meth:`stream`.
        """
        topic = connector.topic
        if serde is None:
            stream = self.stream(topic, on_error=on_error, partitions=partitions)
        else:
            stream = self.stream(topic, serde=serde, on_error=on_error, partitions=partitions)
        self._sources.append(connector)
        return stream

    def add_sink(self, connector: AppConnector) -> None:
        """Run ``connector`` (a sink) with the app; :meth:`Stream.sink` calls this."""
        self._sinks.append(connector)

    def describe(self) -> str:
        """Return the topology as text: sources, the operators below them, sinks, and the
        internal and dead-letter topics."""
        return self._graph.describe(self.name)

    def statistics(self) -> RunStatistics | None:
        """Return the counters of the current or last run (None before any)."""
        return None if self._runtime is None else self._runtime.statistics()

    def restore_progress(self) -> dict[tuple[str, str], RestoreProgress] | None:
        """Return, for the current or last run, each (task, store) of the tasks it runs
        and how far its restore from its changelog got (records restored of the total);
        None before any run."""
        return None if self._runtime is None else self._runtime.restore_progress()

    def progress(self) -> dict[TopicPartition, PartitionProgress] | None:
        """Return, for the current or last run, how far it got in each input partition it
        processed (toward the end the partition had when the run started, where a run
        until caught up stops); None before any run."""
        return None if self._runtime is None else self._runtime.progress()

    async def run_async(
        self,
        *,
        until_caught_up: bool = False,
        stop: anyio.Event | None = None,
        backend: Backend | None = None,
        data_dir: str | os.PathLike[str] | None = None,
        bootstrap: str | None = None,
        clock: Clock | None = None,
    ) -> RunStatistics:
        """Run the app in the current event loop until ``stop`` is set (or caught up).

        It runs on ``backend`` if given, else on the cluster at ``bootstrap``, else on
        the embedded log in ``data_dir``; given none of them, where the app says (see
        the constructor). With ``until_caught_up`` it returns once every input partition
        it was assigned has been processed up to the end offset it had at the start
        (and committed). ``clock`` is the wall clock timers run on (the machine's by
        default).

        :raises OperatorError: if a user function failed under the ``raise`` policy.
        :raises TopologyError: if the graph cannot run, or for both ``data_dir`` and
            ``bootstrap``.
        :raises ClusterError: if the cluster cannot be reached or fails a request.
        :raises HeadwaterError: for a store or group failure (a locked data directory, ...).
        """
        if data_dir is not None and bootstrap is not None:
            raise TopologyError("give data_dir or bootstrap, not both")
        if data_dir is None and bootstrap is None:
            bootstrap = self.bootstrap
        try:
            with _fewer_gc_passes():
                if backend is not None:
                    return await self._run_on(backend, until_caught_up, stop, clock)
                if bootstrap is not None:
                    return await self._run_on_cluster(bootstrap, until_caught_up, stop, clock)
                return await self._run_embedded(
                    Path(data_dir or self.data_dir), until_caught_up, stop, clock
                )
        except BaseExceptionGroup as group:
            error = _first_error(group)
            if error is None:
                raise
            raise error from error.__cause__  # keeps its cause: the user's exception

    async def _run_embedded(
        self,
        directory: Path,
        until_caught_up: bool,
        stop: anyio.Event | None,
        clock: Clock | None,
    ) -> RunStatistics:
        if not directory.exists():
            # Nothing is created for an app that cannot run: a misspelt directory
            # stays a typo, not a new empty log.
            self._graph.validate()
            try:
                plan_topics(self._graph, {})
            except MissingSourceTopicError as exc:
                where = f"{directory} (no such data directory)"
                raise MissingSourceTopicError(exc.topics, where) from None
        transactional_id = None
        if self.config.guarantee == EXACTLY_ONCE:
            # Stable: one process owns the directory, and a restart fences its predecessor.
            instance = self.config.instance_id
            transactional_id = self.name if instance is None else f"{self.name}-{instance}"
        opened = open_in_process(
            directory,
            transactional_id=transactional_id,
            transaction_timeout_ms=TRANSACTION_TIMEOUT_MS,
        )
        try:
            async with _first_error_wins(opened) as local:
                return await self._run_on(
                    local, until_caught_up, stop, clock, state_dir=directory / ".state"
                )
        except MissingSourceTopicError as exc:
            raise MissingSourceTopicError(exc.topics, f"data directory {directory}") from None

    async def _run_on_cluster(
        self,
        bootstrap: str,
        until_caught_up: bool,
        stop: anyio.Event | None,
        clock: Clock | None,
    ) -> RunStatistics:
        from ._backends.kafka import open_kafka  # noqa: PLC0415 - librdkafka only when used

        try:
            config = self.config
            member = member_settings(config)
            transactional_id = None
            if config.instance_id is not None:
                member["group.instance.id"] = f"{self.name}-{config.instance_id}"
            if config.guarantee == EXACTLY_ONCE:  # unique per worker, stable if named
                suffix = config.instance_id or uuid.uuid4().hex
                transactional_id = f"{self.name}-{suffix}"
            async with open_kafka(
                bootstrap,
                member_settings=member,
                transactional_id=transactional_id,
                transaction_timeout_ms=TRANSACTION_TIMEOUT_MS,
            ) as cluster:
                return await self._run_on(cluster, until_caught_up, stop, clock)
        except BaseExceptionGroup as group:  # from the backend's task group
            error = _first_error(group)
            if not isinstance(error, MissingSourceTopicError):
                raise
            where = f"the cluster at {bootstrap}"
            raise MissingSourceTopicError(error.topics, where, bootstrap=bootstrap) from None

    async def _run_on(
        self,
        backend: Backend,
        until_caught_up: bool,
        stop: anyio.Event | None,
        clock: Clock | None,
        *,
        state_dir: Path | None = None,
    ) -> RunStatistics:
        configured = self.config.state_dir
        runtime = Runtime(
            self.name,
            self._graph,
            self.config,
            backend,
            clock=clock,
            until_caught_up=until_caught_up,
            state_dir=Path(configured) if configured else state_dir or Path("headwater-state"),
        )
        self._runtime = runtime
        if self._sources or self._sinks:
            if self.config.guarantee == EXACTLY_ONCE:
                raise TopologyError(
                    f"app {self.name!r}: guarantee 'exactly_once' does not cover connectors "
                    "yet: run the connectors in an app of their own (at_least_once)"
                )
            return await run_with_connectors(
                runtime,
                self.name,
                backend,
                self._sources,
                self._sinks,
                until_caught_up=until_caught_up,
                stop=stop or anyio.Event(),
            )
        return await runtime.run(stop)

    def run(
        self,
        *,
        until_caught_up: bool = False,
        data_dir: str | os.PathLike[str] | None = None,
        bootstrap: str | None = None,
    ) -> RunStatistics:
        """Run the app on trio until SIGINT or SIGTERM (or until caught up, if asked).

        ``data_dir`` or ``bootstrap`` overrides where the app runs, for this run.

        The first signal stops it gracefully: no more reading, the batches in hand are
        finished and written, positions are committed, the worker leaves its group. A
        second signal stops it at once (what was not committed is processed again by the
        next run). Returns the run's statistics.

        :raises OperatorError: if a user function failed under the ``raise`` policy.
        :raises HeadwaterError: as :meth:`run_async`.
        """

        async def main() -> RunStatistics:
            stop = anyio.Event()
            try:
                async with anyio.create_task_group() as tg:

                    async def watch(*, task_status: TaskStatus[None]) -> None:
                        with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                            task_status.started()
                            async for signum in signals:
                                if stop.is_set():
                                    logger.warning("app %r: second signal: stopping now", self.name)
                                    tg.cancel_scope.cancel()
                                    return
                                logger.info(
                                    "app %r: %s: finishing the batches in hand, then stopping",
                                    self.name,
                                    signal.Signals(signum).name,
                                )
                                stop.set()

                    await tg.start(watch)
                    await self.run_async(
                        until_caught_up=until_caught_up,
                        stop=stop,
                        data_dir=data_dir,
                        bootstrap=bootstrap,
                    )
                    tg.cancel_scope.cancel()
            except BaseExceptionGroup as group:
                # Unwrapped here, in the event loop, where the backend's cancellation
                # class is known (outside it anyio cannot say which one to ignore).
                error = _first_error(group)
                if error is None:
                    raise
                raise error from error.__cause__
            statistics = self.statistics()
            assert statistics is not None
            return statistics

        return anyio.run(main, backend="trio")


def _first_error(group: BaseExceptionGroup[BaseException]) -> BaseException | None:
    """Return the first headwater error in a (nested) exception group, else its first
    non-cancellation error.

    Call it in the event loop: it asks anyio which exception is the backend's
    cancellation.
    """
    leaves: list[BaseException] = []

    def collect(exc: BaseException) -> None:
        if isinstance(exc, BaseExceptionGroup):
            for inner in exc.exceptions:
                collect(inner)
        else:
            leaves.append(exc)

    collect(group)
    for leaf in leaves:
        if isinstance(leaf, HeadwaterError):
            return leaf
    cancelled = anyio.get_cancelled_exc_class()
    for leaf in leaves:
        if not isinstance(leaf, cancelled):
            return leaf
    return None


@contextlib.asynccontextmanager
async def _first_error_wins(manager: contextlib.AbstractAsyncContextManager[T]) -> AsyncIterator[T]:
    """Enter ``manager`` for a block; if the block fails and closing the manager then fails
    too, raise the block's error (the cause) and log the other (its consequence: a full
    disk that failed a write also fails the checkpoint written on close)."""
    value = await manager.__aenter__()
    try:
        yield value
    except BaseException as exc:
        try:
            await manager.__aexit__(type(exc), exc, exc.__traceback__)
        except Exception as consequence:
            if consequence is exc or not isinstance(exc, Exception):
                raise  # a cancellation gives way to what closing met
            logger.warning("closing after the error below failed too: %s", consequence)
        raise
    await manager.__aexit__(None, None, None)


@contextlib.contextmanager
def _fewer_gc_passes() -> Iterator[None]:
    """Run the cyclic garbage collector less often while an app runs.

    The runtime allocates millions of short-lived, acyclic objects (records, decoded
    values) per second; at CPython's default thresholds the collector then spends a
    large share of the time walking them (W1 runs ~40% faster with this). The old
    thresholds are restored when the app stops.
    """
    old = gc.get_threshold()
    gc.set_threshold(200_000, 100, 100)
    # What exists before the run (modules, the app's graph) outlives it: kept out of the
    # run's collections, which would otherwise walk it every time (more of it with more
    # libraries loaded, such as the metrics').
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()
        gc.set_threshold(*old)


#: Longest time between a group member's heartbeats on a cluster.
MAX_HEARTBEAT_MS = 1_000


def member_settings(config: AppConfig) -> dict[str, int | str]:
    """Return the librdkafka settings of an app's group members on a cluster.

    A member of Kafka's classic group protocol learns that its group rebalances only
    from the answer to a heartbeat, so a worker that joins a running group (the workers of
    ``headwater worker --processes N`` starting together, a scale-out) gets partitions
    once every other member has sent one. Heartbeats are therefore at most
    :data:`MAX_HEARTBEAT_MS` apart rather than Kafka's default 3 s, and at most a third of
    the session apart, as Kafka advises.
    """
    session_ms = config.session_timeout_ms
    return {
        "session.timeout.ms": session_ms,
        "heartbeat.interval.ms": max(1, min(MAX_HEARTBEAT_MS, session_ms // 3)),
    }
