"""The broker: a TCP server that answers Kafka requests over a store.

Theory of operation
-------------------
:meth:`Broker.serve` listens, then runs one task per connection in a task group it owns.
A connection moves bytes and nothing else, in two tasks. The reader feeds what it
receives to a :class:`~headwater.broker.FrameReader` (which refuses a frame size above
``max_frame_bytes`` before buffering any of it), decodes each frame and awaits the
handler for its API, one request at a time in arrival order; a handler may leave deferred
work (a Produce's wait for its fsync) to run in a task of the connection meanwhile. The
writer sends the responses in request order, each once ready, as buffers one after the
other without joining them (a Fetch response's stored batches are buffers of their own).
A response that is ready when its handler returns, with none queued before it (a Fetch
woken by new data, most requests of a connection that does not pipeline), is sent by the
reader itself: the hop to the writer task would cost a turn of the event loop, a tenth of
a millisecond on a busy broker, on the path from a record's fsync to its consumer.
At most ``MAX_PIPELINED`` responses wait to be sent; past that the connection is not read
(TCP pushes back on the client). Different connections run concurrently.

Bad input closes only the connection that sent it, and is counted and logged once (one
line) -- a frame size above the limit or negative, bytes that do not match the API's
layout, an API the broker does not serve, a version outside the advertised range. The
exception is ApiVersions at a version above the broker's: it is answered in version 0
with ``UNSUPPORTED_VERSION`` and ApiVersions' own range, so the client retries lower. A
handler that raises (a bug) is logged with its traceback and closes its connection; the
broker keeps serving every other client.

Graceful shutdown (:meth:`Broker.shutdown`, which the CLI calls on SIGTERM/SIGINT) stops
accepting, wakes long-polling fetches so they answer at once, lets every connection
finish the request it is handling and closes it; connections still busy after
``shutdown_grace_s`` are cancelled. :meth:`serve` then returns, and the caller closes the
store, which writes the clean-shutdown markers.

The request dispatch is a table of handlers by API key (see ``_dispatch.py``); the
broker advertises in ApiVersions exactly the APIs of that table.

Metrics: the connections count the bytes they receive and send, always (plain integers in
:meth:`Broker.statistics`); with the process's metrics on when the broker is made, each
request is also counted by API and error code and timed from its decoding to its response
being sent, once per request (see ``_metrics.py``).
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import socket
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import cast

import anyio
import trio
from anyio.abc import Listener, SocketAttribute, SocketStream, TaskGroup, TaskStatus
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from headwater.groups import ProducerIds
from headwater.store import Store

from ._config import RECEIVE_BYTES, BrokerConfig, Node, derive_cluster_id
from ._dispatch import ClientInfo, Deferred, Handler
from ._errors import (
    FrameTooLargeError,
    MalformedMessageError,
    UnsupportedVersionError,
)
from ._handlers_admin import AdminHandlers
from ._handlers_configs import ConfigHandlers
from ._handlers_fetch import FetchHandlers
from ._handlers_partitions import PartitionHandlers
from ._handlers_produce import ProduceHandlers, TransactionVerifier
from ._metrics import BROKER_METRICS, RequestMeter
from ._protocol import (
    API_VERSIONS,
    ApiKey,
    FrameReader,
    KafkaErrorCode,
    Message,
    RequestHeader,
    decode_request,
    encode_response,
)
from ._protocol._types import Buffer

logger = logging.getLogger("headwater.broker")

#: Requests of one connection handled but not yet answered, at most (then the connection
#: is read no further until responses go out).
MAX_PIPELINED = 16


@dataclass(frozen=True, slots=True)
class BrokerStatistics:
    """Counters of a broker since it started.

    :param connections_open: connections open now.
    :param connections_total: connections accepted in all.
    :param requests: requests answered (or handled, for ``acks=0`` produces).
    :param rejected_connections: connections closed for bad input: a frame size over the
        limit, a malformed request, an API or version the broker does not serve.
    :param handler_failures: connections closed because a handler raised (a bug).
    :param fetches_waiting: Fetch requests waiting now for data to arrive (long polls
        parked until ``min_bytes`` are there, ``max_wait_ms`` runs out or shutdown).
    :param bytes_in: bytes received from clients.
    :param bytes_out: bytes of responses sent to clients.
    """

    connections_open: int
    connections_total: int
    requests: int
    rejected_connections: int
    handler_failures: int
    fetches_waiting: int
    bytes_in: int = 0
    bytes_out: int = 0


@dataclass(slots=True)
class _Connection:
    info: ClientInfo
    client_id: str | None = None
    requests: int = 0
    idle: anyio.CancelScope | None = None  # set while waiting for the next request
    failure: Exception | None = None  # what ended the connection, when something did


@dataclass(slots=True, eq=False)
class _Slot:
    """A response to send, in request order: ready now, or when ``ready`` is set."""

    header: RequestHeader
    body: Message | None = None
    api_version: int | None = None
    ready: anyio.Event | None = None
    error: Exception | None = None
    #: When the request was decoded (``perf_counter``), for its latency; 0 when unmeasured.
    started: float = 0.0


class _RejectedError(Exception):
    """Internal: the connection sent bad input; the message says what."""


class Broker:
    """Serve a store over the Kafka wire protocol.

    :param store: an open store; the broker serves it and never closes it.
    :param config: where to listen and how to describe this node.
    :param extra_handlers: more handlers by API key (the consumer-group APIs), merged
        over the broker's own; every key in the merged table is advertised.
    :param transactions: the transaction coordinator, whose handlers come in
        ``extra_handlers``; the produce path verifies transactional batches with it.

    Use :meth:`serve` in a task group, :meth:`shutdown` to stop it gracefully. Handlers
    run in the task that calls :meth:`serve`'s event loop; the broker is not thread-safe.
    """

    def __init__(
        self,
        store: Store,
        config: BrokerConfig | None = None,
        *,
        extra_handlers: Mapping[ApiKey, Handler] | None = None,
        transactions: TransactionVerifier | None = None,
    ) -> None:
        self._store = store
        self._config = config if config is not None else BrokerConfig()
        self._extra = dict(extra_handlers or {})
        self._transactions = transactions
        self._handlers: dict[ApiKey, Handler] = {}
        self._fetches: FetchHandlers | None = None  # made by serve(), in the event loop
        self._node: Node | None = None
        self._closing = False
        self._shutdown: anyio.Event | None = None  # made by serve(), in the event loop
        self._accept_scope: anyio.CancelScope | None = None
        self._open: dict[int, _Connection] = {}
        self._ids = itertools.count(1)
        self._connections_total = 0
        self._requests = 0
        self._rejected = 0
        self._failures = 0
        self._bytes_in = self._bytes_out = 0
        metrics = BROKER_METRICS.get()
        self._meter = None if metrics is None else RequestMeter(metrics)
        if metrics is not None:
            metrics.brokers.add(self)
        self._producers = ProducerIds.starting_now()

    @property
    def node(self) -> Node:
        """This broker as clients see it (known once :meth:`serve` has started)."""
        if self._node is None:
            raise RuntimeError("the broker is not serving yet")
        return self._node

    def statistics(self) -> BrokerStatistics:
        """Return the broker's counters."""
        return BrokerStatistics(
            connections_open=len(self._open),
            connections_total=self._connections_total,
            requests=self._requests,
            rejected_connections=self._rejected,
            handler_failures=self._failures,
            fetches_waiting=0 if self._fetches is None else self._fetches.waiting,
            bytes_in=self._bytes_in,
            bytes_out=self._bytes_out,
        )

    def shutdown(self) -> None:
        """Stop gracefully: accept no more, finish the requests in flight, close every connection.

        :meth:`serve` returns once that is done. Safe to call more than once, and before
        :meth:`serve` has started.
        """
        if self._closing:
            return
        self._closing = True
        if self._shutdown is not None:
            self._shutdown.set()
        if self._fetches is not None:
            self._fetches.stop_waiting()
        if self._accept_scope is not None:
            self._accept_scope.cancel()
        for connection in self._open.values():
            if connection.idle is not None:
                connection.idle.cancel()

    async def serve(
        self,
        *,
        listener: Listener[SocketStream] | None = None,
        task_status: TaskStatus[Node] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        """Listen and serve until :meth:`shutdown` (or until cancelled, which stops at once).

        ``listener`` is a TCP listener already bound (``anyio.create_tcp_listener``), which
        the broker takes over and closes; by default it binds the config's address (the
        config's ``host`` and ``port`` are then not used). Reports this broker's
        :class:`Node` to ``task_status`` once it listens.

        :raises OSError: if the address cannot be bound.
        """
        config = self._config
        self._shutdown = anyio.Event()
        if self._closing:
            self._shutdown.set()
        if listener is None:
            listener = await anyio.create_tcp_listener(
                local_host=config.host, local_port=config.port, reuse_port=False
            )
        bound_port = listener.extra(SocketAttribute.local_port)
        host, port = config.advertised_address(bound_port)
        cluster_id = config.cluster_id or derive_cluster_id(str(self._store.path))
        self._node = Node(config.node_id, host, port, cluster_id)
        self._handlers = self._build_handlers(self._node)
        self._log_summary(bound_port)
        async with anyio.create_task_group() as connections:
            with anyio.CancelScope() as self._accept_scope:
                async with listener:
                    task_status.started(self._node)
                    if not self._closing:
                        await listener.serve(self._serve_connection, task_group=connections)
            # Shutting down: the connections finish their requests in flight, in time.
            connections.cancel_scope.deadline = anyio.current_time() + config.shutdown_grace_s
        logger.info(
            "broker stopped after %d connection(s) and %d request(s)",
            self._connections_total,
            self._requests,
        )

    def _build_handlers(self, node: Node) -> dict[ApiKey, Handler]:
        admin = AdminHandlers(
            self._store,
            node,
            auto_create_topics=self._config.auto_create_topics,
            advertised=lambda: self._handlers,
        )
        table: dict[ApiKey, Handler] = {}
        table.update(admin.table())
        table.update(ConfigHandlers(self._store, node).table())
        table.update(PartitionHandlers(self._store, node).table())
        table.update(ProduceHandlers(self._store, self._producers, self._transactions).table())
        assert self._shutdown is not None
        self._fetches = FetchHandlers(self._store, self._shutdown)
        table.update(self._fetches.table())
        table.update(self._extra)
        return table

    def _log_summary(self, bound_port: int) -> None:
        node = self.node
        store = self._store
        topics = store.list_topics()
        partitions = sum(len(store.partitions(name)) for name in topics)
        apis = ", ".join(ApiKey(key).name.lower() for key in sorted(self._handlers))
        logger.info(
            "headwater broker node %d listening on %s:%d (advertised as %s:%d), cluster %s; "
            "data %s: %d topic(s), %d partition(s); max frame %d bytes; APIs: %s",
            node.node_id,
            self._config.host,
            bound_port,
            node.host,
            node.port,
            node.cluster_id,
            store.path,
            len(topics),
            partitions,
            self._config.max_frame_bytes,
            apis,
        )

    # -- one connection --------------------------------------------------------------------

    async def _serve_connection(self, stream: SocketStream) -> None:
        host, port = _peer(stream)
        connection = _Connection(ClientInfo(next(self._ids), host, port))
        self._open[connection.info.connection_id] = connection
        self._connections_total += 1
        reason = "closed by the client"
        try:
            async with stream:
                reason = await self._converse(stream, connection)
        except _RejectedError as exc:
            self._rejected += 1
            reason = str(exc)
            logger.warning(
                "connection %d from %s:%d (client %r) closed: %s",
                connection.info.connection_id,
                host,
                port,
                connection.client_id,
                reason,
            )
        except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError) as exc:
            reason = f"connection lost ({type(exc).__name__}: {exc})"
        except Exception:
            self._failures += 1
            reason = "internal error"
            logger.exception(
                "connection %d from %s:%d (client %r): a handler failed; closing the connection",
                connection.info.connection_id,
                host,
                port,
                connection.client_id,
            )
        finally:
            del self._open[connection.info.connection_id]
            logger.debug(
                "connection %d from %s:%d (client %r) closed after %d request(s): %s",
                connection.info.connection_id,
                host,
                port,
                connection.client_id,
                connection.requests,
                reason,
            )

    async def _converse(self, stream: SocketStream, connection: _Connection) -> str:
        """Answer the connection's requests in order; return why it ended.

        Two tasks: this one reads and handles requests in order, the other sends the
        responses in the same order, waiting for deferred ones to finish.
        """
        send_slots, receive_slots = anyio.create_memory_object_stream[_Slot](MAX_PIPELINED)
        responses = _Responses(stream, self._sent)
        reason = ""
        async with anyio.create_task_group() as tg:

            async def respond() -> None:
                try:
                    await responses.write_queued(receive_slots)
                except Exception as exc:
                    connection.failure = connection.failure or exc
                    tg.cancel_scope.cancel()

            tg.start_soon(respond)
            try:
                async with send_slots:
                    reason = await self._read_requests(
                        stream, connection, responses, send_slots, tg
                    )
            except Exception as exc:
                connection.failure = connection.failure or exc
                tg.cancel_scope.cancel()
        if connection.failure is not None:
            raise connection.failure
        return reason

    async def _read_requests(
        self,
        stream: SocketStream,
        connection: _Connection,
        responses: _Responses,
        slots: MemoryObjectSendStream[_Slot],
        tg: TaskGroup,
    ) -> str:
        reader = FrameReader(self._config.max_frame_bytes)
        frames: deque[memoryview] = deque()
        while True:
            if self._closing:
                return "the broker is shutting down"
            if not frames:
                with anyio.CancelScope() as idle:
                    connection.idle = idle
                    try:
                        data = await stream.receive(RECEIVE_BYTES)
                    except anyio.EndOfStream:
                        return "closed by the client"
                    finally:
                        connection.idle = None
                if idle.cancelled_caught:
                    return "the broker is shutting down"
                self._bytes_in += len(data)
                try:
                    frames.extend(reader.feed(data))
                except FrameTooLargeError as exc:
                    raise _RejectedError(str(exc)) from None
                except MalformedMessageError as exc:
                    raise _RejectedError(f"bad frame: {exc}") from None
                continue
            slot = await self._handle(frames.popleft(), connection, tg)
            connection.requests += 1
            self._requests += 1
            if slot is None:
                continue
            if slot.ready is None and not responses.queued:
                await responses.send(slot)  # nothing to wait for, nothing before it
            else:
                responses.queued += 1
                await slots.send(slot)

    async def _handle(
        self, frame: memoryview, connection: _Connection, tg: TaskGroup
    ) -> _Slot | None:
        """Decode and handle one request; return its response slot (``None``: no response)."""
        started = 0.0 if self._meter is None else time.perf_counter()
        try:
            request = decode_request(frame, allow_trailing_bytes=True)
        except UnsupportedVersionError as exc:
            header = exc.header
            if header is None or header.api_key != ApiKey.API_VERSIONS:
                raise _RejectedError(f"unsupported request: {exc}") from None
            # Answered in v0 with ApiVersions' own range: the client retries lower.
            connection.client_id = header.client_id
            low, high = API_VERSIONS[ApiKey.API_VERSIONS].advertised
            body = {
                "error_code": KafkaErrorCode.UNSUPPORTED_VERSION,
                "api_keys": [
                    {"api_key": ApiKey.API_VERSIONS, "min_version": low, "max_version": high}
                ],
            }
            return _Slot(header, body, api_version=0, started=started)
        except MalformedMessageError as exc:
            raise _RejectedError(f"malformed request: {exc}") from None
        header = request.header
        connection.client_id = header.client_id
        handler = self._handlers.get(ApiKey(header.api_key))
        if handler is None:
            name = ApiKey(header.api_key).name
            raise _RejectedError(f"request for {name}, an API this broker does not serve")
        result = await handler(request, connection.info)
        if isinstance(result, Deferred):
            slot = _Slot(header, ready=anyio.Event(), started=started)
            tg.start_soon(_finish, slot, result.finish)
            return slot
        if result is None:
            if self._meter is not None:  # answered by nothing (acks=0): done now
                self._meter.record(header.api_key, None, time.perf_counter() - started)
            return None
        return _Slot(header, result, started=started)

    def _sent(self, slot: _Slot, size: int) -> None:
        """Note a response sent (``size`` bytes); a deferred one that said nothing is 0."""
        self._bytes_out += size
        if self._meter is not None:
            self._meter.record(slot.header.api_key, slot.body, time.perf_counter() - slot.started)


async def _finish(slot: _Slot, finish: Callable[[], Awaitable[Message | None]]) -> None:
    """Run a handler's deferred work and put its response in the slot."""
    assert slot.ready is not None
    try:
        slot.body = await finish()
    except Exception as exc:
        slot.error = exc
    finally:
        slot.ready.set()


class _Responses:
    """The sending side of one connection: responses go out in request order, either at
    once through :meth:`send` (by the reader, when none is queued) or through the queue
    that :meth:`write_queued` drains."""

    def __init__(self, stream: SocketStream, sent: Callable[[_Slot, int], None]) -> None:
        self._stream = stream
        # The raw socket takes a response's buffers in one sendmsg; only on trio (see _send).
        self._raw: socket.socket | None = (
            stream.extra(SocketAttribute.raw_socket) if _on_trio() else None
        )
        self._sent = sent
        #: Responses queued for the writer and not yet sent: while any is, the reader
        #: queues too, so that none overtakes another.
        self.queued = 0

    async def send(self, slot: _Slot) -> None:
        """Send ``slot``'s response now (it is ready); tell the broker it went."""
        size = 0
        if slot.body is not None:
            parts = encode_response(slot.header, slot.body, api_version=slot.api_version)
            await _send(self._stream, self._raw, parts)
            size = sum(map(len, parts))
        self._sent(slot, size)

    async def write_queued(self, slots: MemoryObjectReceiveStream[_Slot]) -> None:
        """Send each queued slot's response in order, once it is ready."""
        async with slots:
            async for slot in slots:
                if slot.ready is not None:
                    await slot.ready.wait()
                if slot.error is not None:
                    raise slot.error
                await self.send(slot)
                self.queued -= 1


async def _send(stream: SocketStream, raw: socket.socket | None, parts: list[Buffer]) -> None:
    """Send the buffers of a response in order, none of them copied or joined.

    Given the ``raw`` socket, in one ``sendmsg`` when the socket takes them all at once
    (the usual case: one system call for a Fetch response's header and stored batches),
    then the rest through the stream as the socket drains. Only on trio, whose stream
    sends straight to the socket: asyncio's transport may still hold bytes of the last
    send, which a write to the socket itself would overtake.
    """
    sent = 0
    if raw is not None:
        with contextlib.suppress(BlockingIOError, InterruptedError):
            sent = raw.sendmsg(parts)
    for part in parts:
        size = len(part)
        if sent >= size:
            sent -= size
            continue
        # anyio declares bytes, and every backend takes any buffer (memoryview(item)).
        await stream.send(cast(bytes, memoryview(part)[sent:] if sent else part))
        sent = 0


def _on_trio() -> bool:
    try:
        trio.lowlevel.current_trio_token()
    except RuntimeError:
        return False
    return True


def _peer(stream: SocketStream) -> tuple[str, int]:
    address = stream.extra(SocketAttribute.remote_address)
    if isinstance(address, tuple):
        return str(address[0]), int(address[1])
    return str(address), 0
