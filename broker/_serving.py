"""The owner of a data directory serves it over the Kafka protocol.

Theory of operation
-------------------
One process owns a data directory at a time: the store's ``flock`` on ``DATA/.lock``. An
owner that runs for long -- an app (``App.run``, ``headwater run``), ``headwater broker``
-- also serves the directory, so that other processes (the ``headwater`` commands, any
Kafka client) use the log while it runs instead of waiting for it to end.
:func:`serve_data_directory` starts a :class:`~headwater.broker.Broker` over the owner's
open store and *its* group coordinator -- one coordinator per directory, so the owner's
own consumers and remote members meet in the same groups -- and its transaction
coordinator (``headwater.groups``; whose state lives in the store), one per directory
too: an embedded app's exactly-once run commits through the one its broker serves. By
default on
127.0.0.1 at a port the OS picks (:func:`owner_config`). Once the port is bound, before
the broker starts (and logs that it listens), it announces the address the broker advertises in the
directory's address file (``headwater.store``'s ``write_served_address``; the file's
format and how a stale one is told from a true one are described there). Leaving the
block withdraws the address first, then stops the broker gracefully: requests in flight
are answered, idle connections and waiting fetches end at once. The store and the
coordinator stay open; they are the caller's, and the caller lets go of the lock only
after this.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import AsyncIterator

import anyio
from anyio.abc import Listener, SocketAttribute, SocketStream

from headwater.groups import GroupCoordinator, ProducerIds, TransactionCoordinator
from headwater.store import Store, clear_served_address, write_served_address

from ._config import BrokerConfig
from ._handlers_groups import GroupHandlers
from ._handlers_txn import TransactionHandlers
from ._handlers_txn_admin import TransactionAdminHandlers
from ._server import Broker

logger = logging.getLogger("headwater.broker")

#: How long a graceful stop of an owner's broker waits for requests in flight.
_SHUTDOWN_GRACE_S = 5.0


def owner_config() -> BrokerConfig:
    """Return the settings of an owner's broker: 127.0.0.1, any free port, and no topics
    created by a client's metadata request (a data directory's topics are made on purpose)."""
    return BrokerConfig(
        host="127.0.0.1", port=0, auto_create_topics=False, shutdown_grace_s=_SHUTDOWN_GRACE_S
    )


@contextlib.asynccontextmanager
async def serve_data_directory(
    store: Store,
    coordinator: GroupCoordinator,
    config: BrokerConfig | None = None,
    *,
    listener: Listener[SocketStream] | None = None,
    transactions: TransactionCoordinator | None = None,
) -> AsyncIterator[Broker]:
    """Serve ``store`` (and ``coordinator``'s groups) over the Kafka protocol for a block,
    announced in the data directory.

    ``store`` must be open for writing by this process (it holds the directory's lock);
    ``config`` defaults to :func:`owner_config`. Given a ``listener`` already bound (and
    announced by the caller, who then also withdraws the address), the broker serves on
    it and announces nothing. ``transactions`` is the owner's transaction coordinator
    (entered), if it has one; else one is entered for the block. Leaving the block
    withdraws the address, then stops the broker gracefully (within the config's
    ``shutdown_grace_s``); cancelling it stops the broker at once. An error of the block
    is raised as it is.

    :raises OSError: if the address cannot be bound.
    """
    config = config or owner_config()
    async with contextlib.AsyncExitStack() as stack:
        if transactions is None:
            made = TransactionCoordinator(store, coordinator, ProducerIds.starting_now())
            transactions = await stack.enter_async_context(made)
        handlers = GroupHandlers(coordinator).table()
        handlers.update(TransactionHandlers(transactions).table())
        handlers.update(TransactionAdminHandlers(transactions).table())
        broker = Broker(store, config, extra_handlers=handlers, transactions=transactions)
        async with _served(store, config, broker, listener) as served:
            yield served


@contextlib.asynccontextmanager
async def _served(
    store: Store,
    config: BrokerConfig,
    broker: Broker,
    listener: Listener[SocketStream] | None,
) -> AsyncIterator[Broker]:
    """Run ``broker`` for a block, announced unless a listener was given (see above)."""
    announced = False
    if listener is None:
        # Bound and announced before the broker starts (and logs that it listens), so
        # that whoever sees it listening also finds it in the directory.
        listener = await anyio.create_tcp_listener(
            local_host=config.host, local_port=config.port, reuse_port=False
        )
        announced = _announce(store, config, listener.extra(SocketAttribute.local_port))
    failure: Exception | None = None
    try:
        async with anyio.create_task_group() as tg:
            await tg.start(functools.partial(broker.serve, listener=listener))
            try:
                yield broker
            except Exception as exc:
                # The block's own error, raised as it is once the broker has stopped
                # (through the task group it would come out in an exception group).
                failure = exc
            finally:
                if announced:
                    clear_served_address(store.path)
                    announced = False
                broker.shutdown()
    finally:
        if announced:  # the broker failed to start
            clear_served_address(store.path)
    if failure is not None:
        raise failure


def _announce(store: Store, config: BrokerConfig, bound_port: int) -> bool:
    """Write the address file; say so in the log and go on unannounced if it cannot be."""
    advertised_host, port = config.advertised_address(bound_port)
    host = f"[{advertised_host}]" if ":" in advertised_host else advertised_host
    bootstrap = f"{host}:{port}"
    try:
        write_served_address(store.path, bootstrap)
    except OSError as exc:
        logger.warning(
            "serving %s at %s, but could not say so in the directory (%s): other processes "
            "will not find it there",
            store.path,
            bootstrap,
            exc.strerror or exc,
        )
        return False
    return True
