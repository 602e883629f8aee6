"""``headwater broker``: serve a data directory over the Kafka wire protocol.

The broker owns the data directory while it runs, and announces its address in it (see
``headwater.broker``'s ``serve_data_directory``): other ``headwater`` commands given the
directory reach the log through it, as Kafka clients do with ``--bootstrap HOST:PORT``.
A directory that another process already serves is refused at once, naming its address.
It logs to stderr: a start-up summary at info level, one line per client connection at
debug level. SIGTERM or SIGINT stops it gracefully -- the address is withdrawn, requests in
flight are answered, the store is closed cleanly (clean-shutdown markers written) and the
command exits 0; a second signal drops the connections at once (the store is still closed
cleanly). With ``--metrics HOST:PORT`` it also serves its metrics (requests,
latencies, connections; the store's and the groups') at ``http://HOST:PORT/metrics``.
"""

from __future__ import annotations

import cProfile
import gc
import logging
import os
import signal
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass

import anyio
import click
from anyio.abc import TaskStatus

from headwater.broker import (
    DEFAULT_MAX_FRAME_BYTES,
    BrokerConfig,
    parse_address,
    serve_data_directory,
)
from headwater.groups import GroupConfig, GroupCoordinator

from ._datadir import data_dir, data_option, locked_store
from ._metrics_http import metrics_option, serving_metrics
from ._run import run_async

logger = logging.getLogger("headwater.broker")

_LOG_LEVELS = ("debug", "info", "warning", "error")
#: When set, the broker runs under cProfile and writes the stats to this file at exit
#: (for bench/broker_bench.py where py-spy is not available).
PROFILE_ENV_VAR = "HEADWATER_BROKER_PROFILE"


def _address(ctx: click.Context, param: click.Parameter, value: str | None) -> object:
    if value is None:
        return None
    try:
        return parse_address(value, allow_any_port=param.name == "listen")
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


@click.command()
@data_option
@click.option(
    "--listen",
    default="127.0.0.1:9092",
    show_default=True,
    metavar="HOST:PORT",
    callback=_address,
    help="Address to listen on (0.0.0.0 for every interface; port 0 for any free port).",
)
@click.option(
    "--advertise",
    default=None,
    metavar="HOST:PORT",
    callback=_address,
    help="Address clients are told to connect to (default: the listening address).",
)
@click.option(
    "--node-id",
    type=click.IntRange(0, 2**31 - 1),
    default=0,
    show_default=True,
    help="This broker's node id.",
)
@click.option(
    "--max-frame-bytes",
    type=click.IntRange(1024, 2**31 - 1),
    default=DEFAULT_MAX_FRAME_BYTES,
    show_default=True,
    help="Largest request accepted; a larger one closes its connection.",
)
@click.option(
    "--auto-create-topics/--no-auto-create-topics",
    default=True,
    show_default=True,
    help="Create a topic that a client's metadata request names (with the default config).",
)
@click.option(
    "--group-initial-rebalance-delay-ms",
    type=click.IntRange(0, 300_000),
    default=100,
    show_default=True,
    help="How long a new consumer group waits for more members before its first "
    "rebalance completes (Kafka's default is 3000).",
)
@click.option(
    "--log-level",
    type=click.Choice(_LOG_LEVELS, case_sensitive=False),
    default="info",
    show_default=True,
    help="debug also logs every client connection.",
)
@metrics_option
@click.pass_context
def broker(
    ctx: click.Context,
    *,
    data: object,
    listen: tuple[str, int],
    advertise: tuple[str, int] | None,
    node_id: int,
    max_frame_bytes: int,
    auto_create_topics: bool,
    group_initial_rebalance_delay_ms: int,
    log_level: str,
    metrics: tuple[str, int] | None,
) -> None:
    """Serve the data directory to Kafka clients (any language) over the Kafka protocol."""
    logging.basicConfig(
        level=log_level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    host, port = listen
    config = BrokerConfig(
        host=host,
        port=port,
        advertised_host=advertise[0] if advertise else None,
        advertised_port=advertise[1] if advertise else None,
        node_id=node_id,
        max_frame_bytes=max_frame_bytes,
        auto_create_topics=auto_create_topics,
    )
    directory = data_dir(ctx)
    group_config = GroupConfig(initial_rebalance_delay_ms=group_initial_rebalance_delay_ms)

    async def body() -> None:
        stopping = _Stopping(anyio.Event())
        async with anyio.create_task_group() as tg:
            # Signals are watched from before the store opens (recovery may take a while)
            # until it is closed, so that no signal kills the process halfway.
            await tg.start(_watch_signals, stopping)
            async with (
                serving_metrics(metrics),
                locked_store(directory, writer=True, create=True) as store,
                GroupCoordinator(store, config=group_config) as groups,
            ):
                # What start-up made lives as long as the process: no collection of the
                # cyclic garbage collector needs to walk it again.
                gc.freeze()
                with anyio.CancelScope() as stopping.serving:
                    try:
                        async with serve_data_directory(store, groups, config):
                            # Leaving the block stops it gracefully; a second signal
                            # cancels this scope, which drops the connections at once.
                            await stopping.stop.wait()
                    except OSError as exc:
                        message = f"cannot listen on {host}:{port}: {exc.strerror or exc}"
                        raise click.ClickException(message) from None
                stopping.serving = None
            tg.cancel_scope.cancel()
        logger.info("data directory %s closed cleanly", directory)

    # Signals are the watcher's alone: outside it (before it starts, after the store is
    # closed) they are ignored rather than raising KeyboardInterrupt or killing the
    # process halfway; with SIGINT not at its default, trio adds no handler of its own.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    profile_path = os.environ.get(PROFILE_ENV_VAR)
    if not profile_path:
        run_async(body)
        return
    profiler = cProfile.Profile()
    profiler.enable()
    try:
        run_async(body)
    finally:
        profiler.disable()
        profiler.dump_stats(profile_path)


@dataclass(slots=True)
class _Stopping:
    """What the signal watcher acts on: the event that stops serving, and its scope."""

    stop: anyio.Event
    serving: anyio.CancelScope | None = None

    @property
    def requested(self) -> bool:
        """Whether a first signal came."""
        return self.stop.is_set()


async def _watch_signals(
    stopping: _Stopping, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED
) -> None:
    """First SIGINT/SIGTERM: shut down gracefully. Second: drop the connections at once.

    The store is closed cleanly either way; signals arriving while it closes are logged.
    """
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        task_status.started()
        await _act_on(signals, stopping)


async def _act_on(signals: AsyncIterator[int], stopping: _Stopping) -> None:
    async for signum in signals:
        name = signal.Signals(signum).name
        if not stopping.requested:
            logger.info("%s received: shutting down (finishing requests in flight)", name)
            stopping.stop.set()
        elif stopping.serving is not None:
            logger.warning("%s received again: closing every connection now", name)
            stopping.serving.cancel()
        else:
            logger.warning("%s received again: closing the data directory, please wait", name)
