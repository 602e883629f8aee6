"""A Kafka-protocol cluster as a backend: ``headwater broker`` or Apache Kafka, through librdkafka.

Theory of operation
-------------------
The same :class:`~headwater.processing.Backend` as the embedded log, over confluent-kafka
(librdkafka), so an app runs unchanged against any Kafka-protocol cluster:

- topics: an admin client (metadata for partition counts, CreateTopics with the configs
  as given, ListOffsets for a partition's first and end offsets, under
  ``read_committed`` as the consumers read, DeleteRecords for what the runtime purges);
- produce: one idempotent producer for the backend (``_kafka_produce.py``): a call
  returns once the cluster acknowledged its records (``acks=all``), so the runtime
  commits only what is durable downstream;
- a consumer group (:meth:`KafkaBackend.join`): one consumer per member, called only by
  a thread of its own that reads into a buffer per assigned partition
  (``_kafka_fetch.py``), from which the runtime's partition loops fetch; commits and the
  like are requests that thread runs; rebalance callbacks await the runtime's handlers
  on the event loop, so a partition is given up only after its task committed;
- fetch of a partition this backend holds no group assignment for (a store's changelog
  being restored, a test reading an output): a second consumer that assigns partitions
  as they are asked for, and lets them go once nobody asks.

Exactly-once (``transactional_id`` given): the writer is librdkafka's transactional
producer (``_kafka_produce.py``), and the group membership commits through it
(:meth:`_TransactionalMembership.commit_transaction`): the offsets go into the open transaction with
the member's group metadata, so outputs, changelog records and input offsets become
visible together. Every consumer reads committed records only
(``isolation.level=read_committed``) and reports the end of a partition
(``enable.partition.eof``): the end librdkafka reports lies past the transaction markers
and aborted records that no record shows, so a fetch whose partition holds nothing more
to see returns no records and says where to read next (``_kafka_fetch.py``).

Assignment uses Kafka's ``range`` assignor, eagerly: librdkafka offers it, and it keeps a
task's partitions on one member (see ``_tasks.py``; its ``cooperative-sticky`` would
split tasks). Offsets are committed with their metadata through the group member, never
automatically. Nothing blocks the event loop: librdkafka's blocking calls run in threads
of their own, whose results and callbacks reach the loop through ``anyio.from_thread``.
Settings: an app's ``AppConfig.session_timeout_ms`` becomes the group members'
``session.timeout.ms`` (heartbeats a third of it apart, at most 1 s: see
``_app.member_settings``).
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import Any, TypeVar

import anyio
import anyio.to_thread
import confluent_kafka as ck
from anyio.abc import TaskGroup
from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import (  # type: ignore[attr-defined]  # not in __all__
    AdminClient,
    ConfigResource,
    NewTopic,
    OffsetSpec,
)
from tenacity import (
    AsyncRetrying,
    retry_if_exception,
    retry_if_result,
    stop_after_delay,
    wait_exponential,
)

from headwater.groups import CoordinatorNotAvailableError, OffsetAndMetadata, TopicPartition
from headwater.store import RecordColumns

from .._encoding import OutRecords
from .._errors import ClusterError
from .._handoff import Handoff
from ..kafka_client import CONSUMER_SETTINGS
from . import CLUSTER_BATCH_BYTES, Membership, PartitionsHandler
from ._bootstrap import check_bootstrap
from ._kafka_errors import RETRIABLE_CODES, cluster_error, group_error, log_error
from ._kafka_fetch import Fetcher, GroupHandlers
from ._kafka_produce import Writer

T = TypeVar("T")

#: How long a request to the cluster may take before the run fails.
REQUEST_TIMEOUT_S = 30.0
#: How long the first contact may take before the cluster is reported unreachable.
CONNECT_TIMEOUT_S = 10.0

#: How every consumer reads: committed records only, and told where a partition ends
#: (with the fetch backoff of :data:`~headwater.processing.kafka_client.CONSUMER_SETTINGS`:
#: the fetcher pauses a partition itself when its reader falls behind).
_READING = {"isolation.level": "read_committed", "enable.partition.eof": True, **CONSUMER_SETTINGS}

librdkafka_logger = logging.getLogger("headwater.processing.librdkafka")
# librdkafka's own lines (connection attempts, retries) are for debugging: what matters
# reaches the app as an exception.
librdkafka_logger.propagate = bool(os.environ.get("HEADWATER_DEBUG"))
if not librdkafka_logger.propagate:
    librdkafka_logger.addHandler(logging.NullHandler())


class _Membership:
    """A :class:`Membership` through a group member's consumer (its pump runs the calls)."""

    def __init__(self, fetcher: Fetcher, bootstrap: str, group_id: str) -> None:
        self._fetcher = fetcher
        self._bootstrap = bootstrap
        self._group_id = group_id

    async def committed(
        self, partitions: Sequence[TopicPartition]
    ) -> dict[TopicPartition, OffsetAndMetadata]:
        """Return the group's committed offsets of ``partitions`` that have one.

        Those of partitions this member holds were read when they were assigned (see
        ``_kafka_fetch.py``); others are asked for.
        """
        fetcher = self._fetcher
        found = {tp: fetcher.committed[tp] for tp in partitions if tp in fetcher.committed}
        asked = [
            ck.TopicPartition(tp.topic, tp.partition)
            for tp in partitions
            if not fetcher.holds(tp) and tp not in found
        ]
        if not asked:
            return found
        try:
            answer = await fetcher.call(lambda c: c.committed(asked, timeout=REQUEST_TIMEOUT_S))
        except KafkaException as exc:
            what = self._what("reading the committed offsets of")
            raise group_error(exc.args[0], what, self._bootstrap) from None
        for c in answer:
            if c.offset >= 0:
                found[TopicPartition(c.topic, c.partition)] = OffsetAndMetadata(
                    c.offset, c.metadata or ""
                )
        return found

    async def commit(
        self, offsets: Mapping[TopicPartition, int], metadata: Mapping[TopicPartition, str]
    ) -> None:
        """Commit ``offsets`` with their metadata; return once the coordinator stored them.

        :raises GroupError: if the group is rebalancing, this member was fenced, or the
            coordinator could not be reached.
        """
        if not offsets:
            return
        asked = [
            ck.TopicPartition(tp.topic, tp.partition, offset, metadata.get(tp, ""))
            for tp, offset in offsets.items()
        ]
        fetcher = self._fetcher
        try:
            answer = await fetcher.call(lambda c: c.commit(offsets=asked, asynchronous=False))
        except KafkaException as exc:
            raise group_error(exc.args[0], self._what("committing"), self._bootstrap) from None
        except anyio.ClosedResourceError:
            raise CoordinatorNotAvailableError(
                f"{self._what('committing')}: the group's consumer is closed"
            ) from None
        for c in answer or ():
            if c.error is not None:
                raise group_error(c.error, self._what("committing"), self._bootstrap)
        for tp, offset in offsets.items():
            if fetcher.holds(tp):
                fetcher.committed[tp] = OffsetAndMetadata(offset, metadata.get(tp, ""))

    def _what(self, doing: str) -> str:
        return f"group {self._group_id!r}: {doing} offsets"


class _TransactionalMembership(_Membership):
    """A :class:`Membership` whose commits are transactions (see the module docstring)."""

    def __init__(self, fetcher: Fetcher, bootstrap: str, group_id: str, writer: Writer) -> None:
        super().__init__(fetcher, bootstrap, group_id)
        self._writer = writer

    @property
    def transaction_stats(self) -> tuple[int, float]:
        """Transactions committed, and the seconds their commits took in all."""
        return self._writer.commits, self._writer.commit_seconds

    async def commit_transaction(
        self, offsets: Mapping[TopicPartition, int], metadata: Mapping[TopicPartition, str]
    ) -> None:
        """Commit the open transaction (every write since the last) with ``offsets`` and
        their metadata as the group's offsets; begin the next.

        :raises TransactionAbortedError: if it could not commit (it was aborted).
        :raises ProducerFencedError: if another worker took over the transactional id.
        :raises GroupError: if the group's consumer is closed (the membership is ending):
            the transaction is left open, as a failed commit of offsets would leave them.
        """
        fetcher = self._fetcher
        try:
            group_metadata = await fetcher.call(lambda c: c.consumer_group_metadata())
        except anyio.ClosedResourceError:
            raise CoordinatorNotAvailableError(
                f"{self._what('committing')} in a transaction: the group's consumer is closed"
            ) from None
        asked = [
            ck.TopicPartition(tp.topic, tp.partition, offset, metadata.get(tp, ""))
            for tp, offset in offsets.items()
        ]
        await self._writer.commit(asked, group_metadata)
        for tp, offset in offsets.items():
            if fetcher.holds(tp):
                fetcher.committed[tp] = OffsetAndMetadata(offset, metadata.get(tp, ""))

    async def abort_transaction(self) -> None:
        """Abort the open transaction; begin the next.

        :raises ProducerFencedError: if another worker took over the transactional id.
        """
        await self._writer.abort()


class KafkaBackend:
    """A Kafka-protocol cluster as the runtime's log (see the module docstring).

    Build it with :func:`open_kafka`. Concurrency: one event loop.
    """

    #: Records leave the process: their reader learns their event times itself.
    handoff: Handoff | None = None
    #: Each batch's writes wait a round trip: larger batches (see ``CLUSTER_BATCH_BYTES``).
    batch_bytes = CLUSTER_BATCH_BYTES

    def __init__(
        self,
        bootstrap: str,
        task_group: TaskGroup,
        settings: Mapping[str, Any] | None = None,
        member_settings: Mapping[str, Any] | None = None,
        *,
        transactional_id: str | None = None,
        transaction_timeout_ms: int = 60_000,
    ) -> None:
        self.bootstrap = bootstrap
        self._task_group = task_group
        self._settings = dict(settings or {})
        self._member_settings = dict(member_settings or {})
        try:
            self._admin = AdminClient(self.client_config())
        except KafkaException as exc:  # a setting librdkafka refuses
            raise cluster_error(exc.args[0], "configuring a client", bootstrap) from None
        self._writer = Writer(
            self.client_config(**{"linger.ms": 2}),
            bootstrap,
            transactional_id=transactional_id,
            transaction_timeout_ms=transaction_timeout_ms,
        )
        self._members: list[Fetcher] = []
        self._reader: Fetcher | None = None
        self._reader_started: anyio.Event | None = None

    def client_config(self, **settings: Any) -> dict[str, Any]:
        """Return a librdkafka configuration for this cluster: ours, then the backend's
        ``settings``, then ``settings``."""
        return {
            "bootstrap.servers": self.bootstrap,
            "client.id": "headwater",
            "logger": librdkafka_logger,
            "socket.connection.setup.timeout.ms": int(CONNECT_TIMEOUT_S * 1000),
            **self._settings,
            **settings,
        }

    async def _start(self) -> None:
        await self._call(lambda: self._admin.list_topics(timeout=CONNECT_TIMEOUT_S), "connecting")
        await self._task_group.start(self._writer.run)

    def _stop(self) -> None:
        self._writer.stop()
        if self._reader is not None:
            self._reader.stop()

    async def _call(self, call: Callable[[], T], what: str) -> T:
        try:
            return await anyio.to_thread.run_sync(call)
        except KafkaException as exc:
            raise cluster_error(exc.args[0], what, self.bootstrap) from None

    # -- topics ------------------------------------------------------------------------

    async def partition_count(self, topic: str) -> int | None:
        """Return how many partitions ``topic`` has, or None if it does not exist."""
        found = await self._listed(topic)
        return None if found is None else len(found.partitions)

    async def _listed(self, topic: str) -> Any:
        """Return ``topic``'s metadata as the brokers list it (None: they list none)."""
        # All topics' metadata: asking for one topic by name may create it where the
        # cluster creates topics on first use.
        metadata = await self._call(
            lambda: self._admin.list_topics(timeout=REQUEST_TIMEOUT_S), f"looking up {topic!r}"
        )
        found = metadata.topics.get(topic)
        return None if found is None or found.error is not None else found

    async def topic_config(self, topic: str) -> Mapping[str, str] | None:
        """Return ``topic``'s configs as the cluster describes them, defaults included
        (None: no such topic)."""
        resource = ConfigResource(ConfigResource.Type.TOPIC, topic)
        what = f"describing topic {topic!r}"
        futures = await self._call(
            lambda: self._admin.describe_configs([resource], request_timeout=REQUEST_TIMEOUT_S),
            what,
        )
        (future,) = futures.values()
        try:
            entries = await anyio.to_thread.run_sync(future.result)
        except KafkaException as exc:
            error: KafkaError = exc.args[0]
            if error.code() == KafkaError.UNKNOWN_TOPIC_OR_PART:
                return None
            raise cluster_error(error, what, self.bootstrap) from None
        return {
            name: str(entry.value) for name, entry in entries.items() if entry.value is not None
        }

    async def create_topic(
        self, topic: str, partitions: int, config: Mapping[str, str] | None = None
    ) -> None:
        """Create ``topic`` with ``partitions`` partitions and ``config`` (Kafka's names
        and values, passed on as they are); nothing if it exists.

        :raises InvalidConfigError: for a config the cluster refuses.
        """
        new = NewTopic(
            topic, num_partitions=partitions, replication_factor=-1, config=dict(config or {})
        )
        what = f"creating topic {topic!r}"
        futures = await self._call(
            lambda: self._admin.create_topics([new], operation_timeout=REQUEST_TIMEOUT_S), what
        )
        try:
            await anyio.to_thread.run_sync(futures[topic].result)
        except KafkaException as exc:
            error: KafkaError = exc.args[0]
            if error.code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise log_error(error, what, self.bootstrap) from None
        await self._await_visible(topic)

    async def _await_visible(self, topic: str) -> None:
        """Wait until the broker's metadata lists ``topic`` with a leader for every
        partition.

        The controller acknowledges a creation before the brokers have applied it, so a
        caller that looks the topic up at once (its partition count, a produce) could
        otherwise find nothing; Kafka Streams waits for its internal topics the same way.
        """

        async def ready() -> bool:
            found = await self._listed(topic)
            return (
                found is not None
                and bool(found.partitions)
                and all(p.leader >= 0 for p in found.partitions.values())
            )

        retrying = AsyncRetrying(
            sleep=anyio.sleep,
            stop=stop_after_delay(REQUEST_TIMEOUT_S),
            wait=wait_exponential(multiplier=0.01, max=0.25),
            retry=retry_if_result(lambda visible: not visible),
            retry_error_callback=lambda _: False,
        )
        if not await retrying(ready):
            raise ClusterError(
                f"topic {topic!r} was created on {self.bootstrap} but its brokers did not "
                f"list it within {REQUEST_TIMEOUT_S:g} s: check the cluster's health"
            )

    async def start_offset(self, topic: str, partition: int) -> int:
        """Return the first offset still stored in a partition."""
        return await self._list_offset(topic, partition, earliest=True)

    async def delete_records(self, topic: str, partition: int, before_offset: int) -> None:
        """Delete a partition's records before ``before_offset`` (DeleteRecords through the
        admin client); return once the partition's leader moved its start offset.

        :raises OffsetOutOfRangeError: if ``before_offset`` is past the high watermark.
        :raises InvalidConfigError: if the topic is compacted (the cluster's policy
            violation).
        :raises ClusterError: for anything else the cluster refuses.
        """
        tp = ck.TopicPartition(topic, partition, before_offset)
        what = f"deleting records of {topic}/{partition} before offset {before_offset}"

        def delete() -> None:
            futures = self._admin.delete_records(
                [tp], request_timeout=REQUEST_TIMEOUT_S, operation_timeout=REQUEST_TIMEOUT_S
            )
            next(iter(futures.values())).result()

        try:
            await anyio.to_thread.run_sync(delete)
        except KafkaException as exc:
            raise log_error(exc.args[0], what, self.bootstrap) from None

    async def end_offset(self, topic: str, partition: int) -> int:
        """Return the end of what can be read from a partition (its last stable offset,
        which is the high watermark unless a transaction is open), or will be once this
        backend's committed transactions show there.

        Kafka answers EndTxn before it writes the commit markers, so just after a commit
        the last stable offset may not cover the committed records yet; the end is then
        the offset after the last record this backend wrote to the partition, so that
        whoever waits to read to the end (a run until caught up, its repartition topics)
        waits for them too.
        """
        end = await self._list_offset(topic, partition, earliest=False)
        if self._writer.transactional:
            end = max(end, self._writer.written_ends.get((topic, partition), 0))
        return end

    async def _list_offset(self, topic: str, partition: int, *, earliest: bool) -> int:
        tp = ck.TopicPartition(topic, partition)
        spec = OffsetSpec.earliest() if earliest else OffsetSpec.latest()  # type: ignore[no-untyped-call]
        what = f"listing offsets of {topic}/{partition}"

        def ask() -> int:
            futures = self._admin.list_offsets(
                {tp: spec},
                isolation_level=ck.IsolationLevel.READ_COMMITTED,
                request_timeout=REQUEST_TIMEOUT_S,
            )
            return int(next(iter(futures.values())).result().offset)

        retrying = AsyncRetrying(  # a topic just created may not be known everywhere yet
            sleep=anyio.sleep,
            stop=stop_after_delay(REQUEST_TIMEOUT_S),
            wait=wait_exponential(multiplier=0.02, max=0.5),
            retry=retry_if_exception(_retriable),
            reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    return await anyio.to_thread.run_sync(ask)
        except KafkaException as exc:
            raise log_error(exc.args[0], what, self.bootstrap) from None
        raise AssertionError("unreachable")  # pragma: no cover - tenacity reraises

    # -- records -----------------------------------------------------------------------

    async def produce(self, topic: str, partition: int, records: OutRecords) -> None:
        """Write ``records`` to one partition, in order; return once acknowledged."""
        await self._writer.produce(topic, partition, records)

    async def fetch(self, topic: str, partition: int, offset: int, max_bytes: int) -> RecordColumns:
        """Return records from ``offset`` on (about ``max_bytes``), waiting for one.

        No records, with ``offsets`` ``range(end, end)``, if what follows ``offset`` up to
        the partition's end ``end`` is only transaction markers and aborted records.
        Cancelling it loses nothing.

        :raises OffsetOutOfRangeError: if ``offset`` is outside the log.
        """
        tp = TopicPartition(topic, partition)
        for member in self._members:
            if member.holds(tp):
                return await member.fetch(tp, offset, max_bytes)
        return await (await self._direct_reader()).fetch(tp, offset, max_bytes)

    async def _direct_reader(self) -> Fetcher:
        if self._reader_started is None:
            self._reader_started = anyio.Event()
            config = self.client_config(**{
                "group.id": "headwater-reader",
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
                "auto.offset.reset": "error",
                **_READING,
            })  # fmt: skip
            reader = Fetcher(config, self.bootstrap)
            await self._task_group.start(reader.run)
            self._reader = reader
            self._reader_started.set()
        await self._reader_started.wait()
        assert self._reader is not None
        return self._reader

    # -- groups ------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def join(
        self,
        group_id: str,
        topics: Sequence[str],
        *,
        on_assigned: PartitionsHandler,
        on_revoked: PartitionsHandler,
        on_lost: PartitionsHandler,
    ) -> AsyncIterator[Membership]:
        """Join consumer group ``group_id`` through a consumer of its own, for a block."""
        config = self.client_config(**{
            "group.id": group_id,
            "client.id": self._settings.get("client.id", f"headwater-{group_id}"),
            "partition.assignment.strategy": "range",
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "error",
            **_READING,
            **self._member_settings,
        })  # fmt: skip
        handlers = GroupHandlers(on_assigned, on_revoked, on_lost, list(topics))
        fetcher = Fetcher(config, self.bootstrap, handlers)
        async with anyio.create_task_group() as tg:
            await tg.start(fetcher.run)
            self._members.append(fetcher)
            try:
                await fetcher.wait_joined()
                if self._writer.transactional:
                    yield _TransactionalMembership(fetcher, self.bootstrap, group_id, self._writer)
                else:
                    yield _Membership(fetcher, self.bootstrap, group_id)
            finally:
                self._members.remove(fetcher)
                fetcher.stop()


async def _check_reachable(bootstrap: str) -> None:
    """Return once one of ``bootstrap``'s addresses accepts a TCP connection.

    librdkafka retries a refused connection until its own timeout runs out; a cluster
    that is not there at all is told at once this way, naming why.

    :raises ClusterError: if none does (within ``CONNECT_TIMEOUT_S`` each).
    """
    reasons = []
    for address in bootstrap.split(","):
        host, _, port = address.strip().rpartition(":")
        try:
            with anyio.fail_after(CONNECT_TIMEOUT_S):
                stream = await anyio.connect_tcp(host.strip("[]"), int(port))
        except TimeoutError:
            reasons.append(f"{address.strip()}: no answer within {CONNECT_TIMEOUT_S:g} s")
        except OSError as exc:
            cause = exc.__cause__ if isinstance(exc.__cause__, OSError) else exc  # anyio's
            why = os.strerror(cause.errno) if cause.errno else str(cause)
            reasons.append(f"{address.strip()}: {why.lower()}")
        else:
            await stream.aclose()
            return
    raise ClusterError(
        f"connecting: cannot reach the Kafka cluster at {bootstrap} ({'; '.join(reasons)})"
    )


def _retriable(exc: BaseException) -> bool:
    return isinstance(exc, KafkaException) and exc.args[0].code() in RETRIABLE_CODES


@contextlib.asynccontextmanager
async def open_kafka(
    bootstrap: str,
    settings: Mapping[str, Any] | None = None,
    *,
    member_settings: Mapping[str, Any] | None = None,
    transactional_id: str | None = None,
    transaction_timeout_ms: int = 60_000,
) -> AsyncIterator[KafkaBackend]:
    """Connect to the Kafka-protocol cluster at ``bootstrap`` for a block.

    ``settings`` are librdkafka configuration properties for every client (e.g.
    ``{"client.id": "clicks-7"}``), ``member_settings`` more for the consumers that join
    a group (``{"session.timeout.ms": 10000}``). With ``transactional_id``, writes are
    transactional and group commits are transactions (see the module docstring), which
    the cluster aborts if left open longer than ``transaction_timeout_ms``. Leaving the
    block flushes what is being written and closes every client.

    :raises ClusterError: if ``bootstrap`` is malformed or the cluster cannot be reached.
    """
    check_bootstrap(bootstrap)
    await _check_reachable(bootstrap)
    async with anyio.create_task_group() as tg:
        backend = KafkaBackend(
            bootstrap,
            tg,
            settings,
            member_settings,
            transactional_id=transactional_id,
            transaction_timeout_ms=transaction_timeout_ms,
        )
        try:
            await backend._start()
            yield backend
        finally:
            backend._stop()
