"""``headwater worker APP.PY --processes N``: an app in N worker processes, supervised.

Each worker is ``headwater run APP.PY --bootstrap HOST:PORT``: the app through the
Kafka-protocol backend, a member of the app's consumer group, so the workers share the
app's partitions (and take over those of a worker that stops or dies). Where they run:

- ``--bootstrap HOST:PORT`` (or where the app says, as for ``run``): on that cluster --
  ``headwater broker`` or Apache Kafka; this process only supervises.
- otherwise on a data directory (``--data``, else the app's): this process owns it and
  serves it over the Kafka protocol (127.0.0.1, a port the OS picks, announced in the
  directory as every owner does), and the workers connect to that. If another process
  already owns and serves the directory, the workers connect to it instead.

The supervisor (``_supervisor.py``) restarts a failed worker with backoff, at most
``--max-restarts`` times a minute, and otherwise gives up: it stops the others and exits
1 with one error line. SIGINT/SIGTERM are forwarded to every worker for a graceful stop
(each commits and leaves the group); the command then exits 0. With ``--metrics
HOST:PORT`` this process serves its own metrics there (its broker, store and groups on a
data directory, and its workers: running, restarts) and worker n serves the app's at
HOST:PORT+n (port 0: each picks a free port, logged).
"""

from __future__ import annotations

import functools
import gc
import logging
import signal
import sys
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import anyio
import click
from anyio.abc import TaskStatus

from headwater.broker import parse_address
from headwater.processing import App, MissingSourceTopicError
from headwater.processing._graph import plan_topics  # what App.run checks, before the workers
from headwater.store import Store

from ._app_commands import explicit_data_dir, load_app
from ._datadir import claimed, data_option
from ._metrics_http import metrics_option, serving_metrics
from ._owner import address_answers
from ._restarts import DEFAULT_MAX_RESTARTS, RestartPolicy
from ._run import run_async
from ._supervisor import Supervisor
from ._target import bootstrap_of

logger = logging.getLogger("headwater.worker")

#: Runs the supervisor with its workers on the cluster at the address given.
_Supervise = Callable[[str], Awaitable[None]]


@click.command("worker")
@click.argument("target", metavar="APP.PY[:NAME]")
@click.option(
    "--processes",
    "-n",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Worker processes to run the app in.",
)
@click.option(
    "--until-caught-up",
    is_flag=True,
    help="Stop once the workers have processed every input partition up to where it ended.",
)
@click.option(
    "--max-restarts",
    type=click.IntRange(min=0),
    default=DEFAULT_MAX_RESTARTS,
    show_default=True,
    help="Restarts of one worker allowed within a minute; one more failure stops them all.",
)
@click.option("--verbose", "-v", is_flag=True, help="Log what the workers' runtime does.")
@functools.partial(
    metrics_option,
    help="Serve this process's metrics (its broker and store, its workers) at "
    "http://HOST:PORT/metrics, and worker n's at HOST:PORT+n (port 0: any free ports, "
    "logged).",
)
@data_option
@click.option(
    "--bootstrap",
    default=None,
    metavar="HOST:PORT",
    help="Run the workers on the Kafka-protocol cluster at HOST:PORT (headwater broker or "
    "Apache Kafka) instead of a data directory this process serves.",
)
@click.pass_context
def worker(
    ctx: click.Context,
    *,
    target: str,
    processes: int,
    until_caught_up: bool,
    max_restarts: int,
    verbose: bool,
    metrics: tuple[str, int] | None,
    data: Path | None,
    bootstrap: str | None,
) -> None:
    """Run the app in APP.PY in N worker processes that share its partitions.

    The workers run on the cluster at --bootstrap if given, else on the data directory
    --data if given, else where the app says, else on the cluster at
    $HEADWATER_BOOTSTRAP, else on the data directory $HEADWATER_DATA, else on
    ./headwater-data. On a data directory this process owns it and serves it to the
    workers (and to every other client) over the Kafka protocol. A worker that fails is
    restarted with backoff; one that fails more than --max-restarts times within a
    minute stops them all (exit status 1). SIGINT/SIGTERM stop every worker gracefully
    (each commits what it processed and leaves the group); a second signal, at once.
    """
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="headwater: %(message)s",
        stream=sys.stderr,
    )
    cluster = bootstrap_of(ctx)  # refuses --data with --bootstrap
    if metrics is not None and metrics[1] and metrics[1] + processes > 65535:
        raise click.BadParameter(
            f"port {metrics[1]} leaves no room for {processes} worker(s) above it "
            "(worker n serves its metrics at PORT+n)",
            param_hint="'--metrics'",
        )
    app = load_app(target)
    app.graph.validate()  # a graph that cannot run is refused here, not by N workers
    directory = None if cluster is not None else explicit_data_dir(ctx)
    if cluster is None and directory is None:
        cluster = app.bootstrap  # the app's own cluster, or $HEADWATER_BOOTSTRAP
        directory = None if cluster is not None else app.data_dir
    if cluster is not None:
        cluster = _checked_bootstrap(cluster)

    def argv(bootstrap: str, number: int) -> list[str]:
        args = [sys.executable, "-m", "headwater.cli", "run", target, "--bootstrap", bootstrap]
        args += ["--stop-at-end-of-input", "--quiet"]
        if until_caught_up:
            args.append("--until-caught-up")
        if verbose:
            args.append("-v")
        if metrics is not None:
            host, port = metrics
            args += ["--metrics", f"{host}:{port + number if port else 0}"]
        return args

    policy = RestartPolicy(max_restarts=max_restarts)

    async def body() -> None:
        async with anyio.create_task_group() as tg:
            # Watched from the start: a signal before the workers start (the directory
            # may be busy, its recovery long) stops the command there.
            signals = _Signals(tg.cancel_scope)
            await tg.start(_forward_signals, signals)

            async def supervise(bootstrap: str) -> None:
                supervisor = Supervisor(lambda n: argv(bootstrap, n), processes, policy)
                _measure(supervisor)
                logger.info(
                    "running app %r in %d worker process(es) on %s", app.name, processes, bootstrap
                )
                signals.supervisor = supervisor
                await supervisor.run()

            async with serving_metrics(metrics):
                if cluster is not None:
                    await _check_reachable(cluster)
                    await _check_cluster_sources(app, cluster)
                    await supervise(cluster)
                else:
                    assert directory is not None
                    await _on_data_directory(directory, app, supervise)
            tg.cancel_scope.cancel()

    # Signals are the watcher's alone: after it ends they are ignored rather than
    # interrupting a store's close.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    run_async(body)


async def _on_data_directory(directory: Path, app: App, supervise: _Supervise) -> None:
    """Own ``directory`` and serve it while the workers run on it (or, if its owner
    already serves it, run them on that).

    :raises MissingSourceTopicError: if a topic the app reads is not in the directory
        (before any worker starts: each would fail on it, again and again).
    """
    # Imported here: a supervisor of workers on a cluster never loads the coordinator.
    from headwater.broker import serve_data_directory  # noqa: PLC0415
    from headwater.groups import GroupCoordinator  # noqa: PLC0415

    async with claimed(directory, writer=True) as claim:
        if not isinstance(claim, Store):
            logger.info("%s: the workers use it there", claim.description)
            await supervise(claim.bootstrap)
            return
        _check_sources(app, claim)
        async with GroupCoordinator(claim) as groups, serve_data_directory(claim, groups) as broker:
            # What start-up made lives as long as the process (as for `headwater broker`).
            gc.freeze()
            node = broker.node
            host = f"[{node.host}]" if ":" in node.host else node.host
            logger.info("serving data directory %s at %s:%d", directory, host, node.port)
            await supervise(f"{host}:{node.port}")


def _check_sources(app: App, store: Store) -> None:
    """Refuse an app whose source topics are missing from ``store`` (as its run would)."""
    existing = {name: len(store.partitions(name)) for name in store.list_topics()}
    _refuse_missing_sources(app, existing, f"data directory {store.path}")


def _refuse_missing_sources(
    app: App, existing: dict[str, int], where: str, bootstrap: str | None = None
) -> None:
    """Raise what the app's run would if a source topic is not among ``existing`` (topic
    -> partition count), saying ``where`` they were looked for.

    :raises MissingSourceTopicError: naming the missing topics.
    """
    try:
        plan_topics(app.graph, existing)
    except MissingSourceTopicError as exc:
        raise MissingSourceTopicError(exc.topics, where, bootstrap=bootstrap) from None


async def _check_cluster_sources(app: App, bootstrap: str) -> None:
    """Refuse an app whose source topics are missing from the cluster at ``bootstrap``,
    before any worker starts (each would fail on it, again and again, until the restart
    bound gave up).

    :raises MissingSourceTopicError: if a topic the app reads is not on the cluster.
    :raises BrokerResponseError: if the cluster cannot be reached.
    """
    # Imported here: librdkafka only for a supervisor of workers on a cluster.
    from headwater.processing.kafka_client import blocking, finish  # noqa: PLC0415

    from ._kafka_client import Cluster  # noqa: PLC0415

    cluster = Cluster(bootstrap, f"the cluster at {bootstrap}")
    probe = cluster.reader_consumer()
    try:
        metadata = await blocking(cluster.metadata, probe)
    finally:
        await finish(probe.close)
    existing = {name: len(t.partitions) for name, t in metadata.topics.items() if t.error is None}
    _refuse_missing_sources(app, existing, f"the cluster at {bootstrap}", bootstrap)


def _checked_bootstrap(bootstrap: str) -> str:
    """Return ``HOST:PORT[,HOST:PORT...]`` as the workers are given it (the port defaults
    to 9092, as for Kafka clients).

    :raises click.BadParameter: for an address that is not ``HOST[:PORT]``.
    """
    addresses = []
    for text in bootstrap.split(","):
        try:
            host, port = parse_address(text.strip())
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="'--bootstrap'") from None
        addresses.append(f"[{host}]:{port}" if ":" in host else f"{host}:{port}")
    return ",".join(addresses)


async def _check_reachable(bootstrap: str) -> None:
    """Refuse a cluster whose every address refuses connections, at once."""
    for address in bootstrap.split(","):
        if await address_answers(address.strip()):
            return
    raise click.ClickException(
        f"cannot reach the Kafka cluster at {bootstrap}: no connection could be made "
        "(is it running, and is the address right?)"
    )


@dataclass(slots=True)
class _Signals:
    """What a signal acts on: the supervisor once it runs, else the command's scope."""

    scope: anyio.CancelScope
    supervisor: Supervisor | None = None


async def _forward_signals(
    signals: _Signals, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED
) -> None:
    """Forward each SIGINT/SIGTERM to the workers: a first stops them gracefully, a second
    at once. Before they start, the first stops the command."""
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as received:
        task_status.started()
        async for signum in received:
            name = signal.Signals(signum).name
            supervisor = signals.supervisor
            if supervisor is None:
                logger.warning("%s: stopping before the workers start", name)
                signals.scope.cancel()
                return
            if supervisor.stopping:
                logger.warning("%s again: stopping the workers now", name)
            else:
                logger.warning("%s: stopping the workers gracefully", name)
            supervisor.stop(signum)


def _measure(supervisor: Supervisor) -> None:
    """Count the supervisor's workers and restarts in the process's metrics, if on."""
    from headwater.store import metrics_registry  # noqa: PLC0415

    registry = metrics_registry()
    if registry is not None:
        registry.register(_SupervisorCollector(supervisor))  # type: ignore[arg-type]


class _SupervisorCollector:
    """Reads a supervisor's statistics when the registry is scraped."""

    def __init__(self, supervisor: Supervisor) -> None:
        self._supervisor = supervisor

    def collect(self) -> Iterable[object]:
        """Yield the worker metrics."""
        from prometheus_client.core import (  # noqa: PLC0415
            CounterMetricFamily,
            GaugeMetricFamily,
        )

        statistics = self._supervisor.statistics()
        yield GaugeMetricFamily(
            "headwater_workers_running",
            "Worker processes of headwater worker running now.",
            value=statistics.running,
        )
        restarts = CounterMetricFamily(
            "headwater_worker_restarts",
            "Restarts of each worker process after it failed.",
            labels=["worker"],
        )
        for number, count in statistics.restarts.items():
            restarts.add_metric([str(number)], count)
        yield restarts
