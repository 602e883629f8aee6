"""Connectors inside an app: sources and sinks that run beside the app's tasks.

``app.source(connector)`` runs a connector that writes into a topic and returns the
stream of that topic; ``stream.sink(connector)`` writes the stream to the connector's
topic (as ``to`` does) and runs the connector, which delivers that topic to its
destination as a consumer group of its own. A sink thus keeps its own contract (input
offsets committed only once the destination took the records, dead letters, its
checkpoints) over a topic that is the app's durable output, and the app's tasks keep
theirs; the two meet only in the log.

The connectors themselves live in :mod:`headwater.connectors`; this package knows them
only by :class:`AppConnector`, so dependencies point one way (connectors on processing,
never the reverse).

Order of a run. The runtime prepares the topics first (the sources' and the sinks'
among them); then the connectors start (each is started once it runs: a file source
has found its files, an endpoint listens, a sink has joined its group); then the tasks
run. A stop stops all three. With ``until_caught_up`` the three run one after the
other, each until caught up: the sources with what their input holds, then the tasks,
then the sinks with what the tasks wrote.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

import anyio
from anyio.abc import TaskStatus

from ._backends import Backend

if TYPE_CHECKING:
    from ._runtime import RunStatistics, Runtime


class AppConnector(Protocol):
    """A source or sink that runs beside an app's tasks, on the app's log."""

    @property
    def topic(self) -> str:
        """The topic the connector writes (a source) or reads (a sink)."""
        ...

    async def run_in_app(
        self,
        app_name: str,
        backend: Backend,
        *,
        until_caught_up: bool,
        stop: anyio.Event,
        task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        """Run on ``backend`` until ``stop`` is set (or caught up); report started once
        running. A stop is graceful: what is in hand is finished and recorded."""
        ...


async def run_with_connectors(
    runtime: Runtime,
    app_name: str,
    backend: Backend,
    sources: Sequence[AppConnector],
    sinks: Sequence[AppConnector],
    *,
    until_caught_up: bool,
    stop: anyio.Event,
) -> RunStatistics:
    """Run ``runtime`` with ``sources`` and ``sinks`` beside it (see the module)."""
    await runtime.prepare()
    if until_caught_up:
        for source in sources:
            await source.run_in_app(app_name, backend, until_caught_up=True, stop=stop)
        statistics = await runtime.run(stop)
        for sink in sinks:
            await sink.run_in_app(app_name, backend, until_caught_up=True, stop=stop)
        return statistics
    async with anyio.create_task_group() as tg:
        for connector in (*sources, *sinks):
            await tg.start(
                functools.partial(
                    connector.run_in_app, app_name, backend, until_caught_up=False, stop=stop
                )
            )
        try:
            statistics = await runtime.run(stop)
        finally:
            stop.set()  # the tasks ended (stopped, or failed): the connectors stop too
    return statistics
