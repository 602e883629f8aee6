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
import functools
from collections.abc import Callable

import anyio
from anyio.abc import TaskStatus

from headwater.processing import Backend

from ._file_sink import FileSink, FileSinkConfig
from ._file_source import FileSource, FileSourceConfig
from ._http_ingest import HttpIngest, IngestConfig
from ._log import ConnectorLog
from ._sink_runner import SinkRunner, SinkWriter
from ._sites import ConnectorSite, app_site
from ._webhook import WebhookConfig, WebhookSink


async def _stop_when_set(stop: anyio.Event, action: Callable[[], None]) -> None:
    await stop.wait()
    action()


class _InAppConnector:
    """What every connector does in an app: run on the app's log (its site) until
    ``stop`` (or caught up); a subclass says what it runs there (``_run``)."""

    def __init__(self, topic: str) -> None:
        self._topic = topic

    @property
    def topic(self) -> str:
        """The topic the connector writes (a source) or reads (a sink)."""
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
        """Run on ``backend``'s log until ``stop`` (or caught up); report started once
        running (see :class:`~headwater.processing.AppConnector`)."""
        async with app_site(backend) as site:
            await self._run(site, app_name, until_caught_up, stop, task_status)

    async def _run(
        self,
        site: ConnectorSite,
        app_name: str,
        until_caught_up: bool,
        stop: anyio.Event,
        task_status: TaskStatus[None],
    ) -> None:
        raise NotImplementedError


class FileSourceConnector(_InAppConnector):
    """A :class:`FileSource` with ``config`` inside an app (``app.source(...)``); it
    tails the files into the topic."""

    def __init__(self, config: FileSourceConfig) -> None:
        super().__init__(config.topic)
        self.config = config

    async def _run(
        self,
        site: ConnectorSite,
        app_name: str,
        until_caught_up: bool,
        stop: anyio.Event,
        task_status: TaskStatus[None],
    ) -> None:
        source = FileSource(site.log, site.positions, self.config)
        async with anyio.create_task_group() as tg:
            tg.start_soon(_stop_when_set, stop, source.stop)
            await source.run(until_caught_up=until_caught_up, task_status=task_status)
            tg.cancel_scope.cancel()


class HttpIngestConnector(_InAppConnector):
    """An :class:`HttpIngest` endpoint inside an app, taking records for one topic only.
    An endpoint is never caught up: with ``until_caught_up`` it does not serve at all.

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
        super().__init__(topic)
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

    async def _run(
        self,
        site: ConnectorSite,
        app_name: str,
        until_caught_up: bool,
        stop: anyio.Event,
        task_status: TaskStatus[None],
    ) -> None:
        if until_caught_up:
            task_status.started()
            return
        config = dataclasses.replace(self.config, topics=(self._topic,))
        ingest = HttpIngest(site.log, config)
        async with anyio.create_task_group() as tg:
            self.address = await tg.start(ingest.serve, self.host, self.port)
            self._serving_event().set()
            task_status.started()
            await stop.wait()
            ingest.stop()


class _SinkConnector(_InAppConnector):
    """A sink writer run by a :class:`SinkRunner` inside an app: it delivers the topic
    (what the stream writes), committing what was taken."""

    kind = "sink"

    def __init__(
        self, topic: str, group_id: str | None, writer: Callable[[ConnectorLog], SinkWriter]
    ) -> None:
        super().__init__(topic)
        self.group_id = group_id
        self._writer = writer  # made on the app's log

    async def _run(
        self,
        site: ConnectorSite,
        app_name: str,
        until_caught_up: bool,
        stop: anyio.Event,
        task_status: TaskStatus[None],
    ) -> None:
        group = self.group_id or f"{app_name}.{self.kind}.{self._topic}"
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
        super().__init__(config.topic, group_id, functools.partial(FileSink, config=config))
        self.config = config


class WebhookConnector(_SinkConnector):
    """A :class:`WebhookSink` with ``config`` inside an app (``stream.sink(...)``)."""

    kind = "webhook"

    def __init__(self, config: WebhookConfig, *, group_id: str | None = None) -> None:
        super().__init__(config.topic, group_id, functools.partial(WebhookSink, config=config))
        self.config = config
