"""The connectors as parts of an app: ``app.source(...)`` and ``stream.sink(...)``.

Each class here is a :class:`~headwater.processing.AppConnector` around the same
connector the CLI runs standalone, built on the app's log::

    from headwater.connectors import FileSinkConfig, FileSinkConnector
    from headwater.connectors import FileSourceConfig, FileSourceConnector
    from headwater.processing import App

    app = App("clicks")
    clicks = app.source(FileSourceConnector(FileSourceConfig(path="logs/*.jsonl", topic="clicks")))
    clicks.filter(lambda e: e["ms"] > 100).sink(
        FileSinkConnector(FileSinkConfig(topic="slow-clicks", directory="out"))
    )
    app.run()

A sink reads its topic as the consumer group ``<app>.<kind>.<topic>`` unless given one.
They run on the log the app runs on (:func:`~headwater.connectors.app_site`): its data
directory (a store and its group coordinator), or the Kafka-protocol cluster of
``App(..., bootstrap=...)``, where a source keeps its position in the cluster's
``headwater-connector-positions`` topic and a sink is a member of the cluster's consumer
group. On another backend (the test driver's) they refuse to start with a
:class:`ConnectorError`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import anyio
from anyio.abc import TaskStatus

from headwater.processing import Backend

from ._file_sink import FileSink, FileSinkConfig
from ._file_source import FileSource, FileSourceConfig
from ._http_ingest import HttpIngest, IngestConfig
from ._log import ConnectorLog
from ._sink_runner import SinkRunner, SinkWriter
from ._sites import app_site
from ._webhook import WebhookConfig, WebhookSink


async def _stop_when_set(stop: anyio.Event, action: Callable[[], None]) -> None:
    await stop.wait()
    action()


class FileSourceConnector:
    """A :class:`FileSource` with ``config`` inside an app (``app.source(...)``)."""

    def __init__(self, config: FileSourceConfig) -> None:
        self.config = config

    @property
    def topic(self) -> str:
        """The topic the lines go to."""
        return self.config.topic

    async def run_in_app(
        self,
        app_name: str,
        backend: Backend,
        *,
        until_caught_up: bool,
        stop: anyio.Event,
        task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        """Tail the files into the topic until ``stop`` (or caught up)."""
        async with app_site(backend) as site, anyio.create_task_group() as tg:
            source = FileSource(site.log, site.positions, self.config)
            tg.start_soon(_stop_when_set, stop, source.stop)
            await source.run(until_caught_up=until_caught_up, task_status=task_status)
            tg.cancel_scope.cancel()


class HttpIngestConnector:
    """An :class:`HttpIngest` endpoint inside an app, taking records for one topic only.

    :param topic: the one topic requests may write (others get 404).
    :param config: the endpoint's settings (``auto_create`` is moot: the app creates
        the topic).
    :param host: the address to listen on.
    :param port: the port (0: any free one; :attr:`address` says which).
    """

    def __init__(
        self,
        topic: str,
        config: IngestConfig | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 8080,
    ) -> None:
        self._topic = topic
        self.config = config if config is not None else IngestConfig()
        self.host = host
        self.port = port
        #: The address listened on, once the endpoint runs.
        self.address: tuple[str, int] | None = None
        self._serving: anyio.Event | None = None

    def _serving_event(self) -> anyio.Event:
        if self._serving is None:
            self._serving = anyio.Event()
        return self._serving

    async def wait_serving(self) -> tuple[str, int]:
        """Wait until the app has started the endpoint; return the address it listens on."""
        await self._serving_event().wait()
        assert self.address is not None
        return self.address

    @property
    def topic(self) -> str:
        """The topic the endpoint writes."""
        return self._topic

    async def run_in_app(
        self,
        app_name: str,
        backend: Backend,
        *,
        until_caught_up: bool,
        stop: anyio.Event,
        task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        """Serve until ``stop``. An endpoint is never caught up: with ``until_caught_up``
        it does not serve at all."""
        async with app_site(backend) as site:
            if until_caught_up:
                task_status.started()
                return
            await self._serve(site.log, stop, task_status)

    async def _serve(
        self, log: ConnectorLog, stop: anyio.Event, task_status: TaskStatus[None]
    ) -> None:
        config = dataclasses.replace(self.config, topics=(self._topic,))
        ingest = HttpIngest(log, config)
        async with anyio.create_task_group() as tg:
            self.address = await tg.start(ingest.serve, self.host, self.port)
            self._serving_event().set()
            task_status.started()
            await stop.wait()
            ingest.stop()


class _SinkConnector:
    """A sink writer run by a :class:`SinkRunner` inside an app."""

    kind = "sink"

    def __init__(self, topic: str, group_id: str | None) -> None:
        self._topic = topic
        self.group_id = group_id

    @property
    def topic(self) -> str:
        """The topic the sink reads (what the stream writes)."""
        return self._topic

    def _writer(self, log: ConnectorLog) -> SinkWriter:
        raise NotImplementedError

    async def run_in_app(
        self,
        app_name: str,
        backend: Backend,
        *,
        until_caught_up: bool,
        stop: anyio.Event,
        task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        """Deliver the topic until ``stop`` (or caught up), committing what was taken."""
        group = self.group_id or f"{app_name}.{self.kind}.{self._topic}"
        async with app_site(backend) as site:
            assert site.groups is not None
            writer = self._writer(site.log)
            try:
                runner = SinkRunner(site.groups, self._topic, group, writer)
                async with anyio.create_task_group() as tg:
                    tg.start_soon(_stop_when_set, stop, runner.stop)
                    await runner.run(until_caught_up=until_caught_up, task_status=task_status)
                    tg.cancel_scope.cancel()
            finally:
                if isinstance(writer, WebhookSink):
                    with anyio.CancelScope(shield=True):
                        await writer.aclose()


class FileSinkConnector(_SinkConnector):
    """A :class:`FileSink` with ``config`` inside an app (``stream.sink(...)``)."""

    kind = "file-sink"

    def __init__(self, config: FileSinkConfig, *, group_id: str | None = None) -> None:
        super().__init__(config.topic, group_id)
        self.config = config

    def _writer(self, log: ConnectorLog) -> SinkWriter:
        return FileSink(log, self.config)


class WebhookConnector(_SinkConnector):
    """A :class:`WebhookSink` with ``config`` inside an app (``stream.sink(...)``)."""

    kind = "webhook"

    def __init__(self, config: WebhookConfig, *, group_id: str | None = None) -> None:
        super().__init__(config.topic, group_id)
        self.config = config

    def _writer(self, log: ConnectorLog) -> SinkWriter:
        return WebhookSink(log, self.config)
