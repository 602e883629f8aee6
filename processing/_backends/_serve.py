"""An embedded app serves its data directory: listening at once, a broker on demand.

Theory of operation
-------------------
An app owns its data directory while it runs, and serves it so that other processes (the
``headwater`` commands, any Kafka client) use the log meanwhile (see
``headwater.broker.serve_data_directory`` and ``headwater.store.served_address``). Most
runs are never visited, so serving must cost them nothing: :func:`serving` binds a
listening socket on 127.0.0.1 (a port the OS picks) and announces its address in the
directory -- a bind and a small file, no broker -- and one task sleeps until the first
client connects (the socket becomes readable; no polling). Only then is the broker loaded
(importing ``headwater.broker`` is most of the cost of serving) and started on that
socket, over the app's store, its group coordinator and its transaction coordinator (one
of each per directory: an exactly-once app's transactions and a client's meet there);
the waiting client is its first connection. Leaving withdraws the address first, then
stops the broker gracefully, or closes the socket if no client ever came.

If the socket cannot be bound or the address not written, the app runs unserved and says
so in its log: other processes then wait for it to end, as they would for any holder.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator

import anyio
from anyio.abc import Listener, SocketAttribute, SocketStream

from headwater.groups import GroupCoordinator, TransactionCoordinator
from headwater.store import Store, clear_served_address, write_served_address

logger = logging.getLogger("headwater.processing")

_HOST = "127.0.0.1"


@contextlib.asynccontextmanager
async def serving(
    store: Store, coordinator: GroupCoordinator, transactions: TransactionCoordinator
) -> AsyncIterator[None]:
    """Serve ``store``, ``coordinator`` and ``transactions`` to other processes for a block
    (see the module docstring); the block's own error is raised as it is."""
    try:
        listener = await anyio.create_tcp_listener(local_host=_HOST, local_port=0)
    except OSError as exc:
        _unserved(store, f"cannot listen on {_HOST}: {exc.strerror or exc}")
        yield
        return
    bootstrap = f"{_HOST}:{listener.extra(SocketAttribute.local_port)}"
    try:
        write_served_address(store.path, bootstrap)
    except OSError as exc:
        await listener.aclose()
        _unserved(store, f"cannot write its address: {exc.strerror or exc}")
        yield
        return
    logger.info("serving data directory %s at %s", store.path, bootstrap)
    server = _OnDemand(store, coordinator, transactions, listener)
    failure: Exception | None = None
    async with anyio.create_task_group() as tg:
        tg.start_soon(server.run)
        try:
            yield
        except Exception as exc:
            failure = exc  # raised as it is below (the task group would wrap it)
        finally:
            clear_served_address(store.path)
            server.stop()
    if failure is not None:
        raise failure


def _unserved(store: Store, why: str) -> None:
    logger.warning(
        "not serving data directory %s to other processes (%s): they will wait for this "
        "app to end instead",
        store.path,
        why,
    )


class _OnDemand:
    """The broker of an app, started when the first client connects."""

    def __init__(
        self,
        store: Store,
        coordinator: GroupCoordinator,
        transactions: TransactionCoordinator,
        listener: Listener[SocketStream],
    ) -> None:
        self._store = store
        self._coordinator = coordinator
        self._transactions = transactions
        self._listener = listener
        self._waiting = anyio.CancelScope()
        self._stopping = anyio.Event()

    def stop(self) -> None:
        """Stop gracefully: close the socket if nobody came, else stop the broker."""
        self._waiting.cancel()
        self._stopping.set()

    async def run(self) -> None:
        """Wait for the first client, then serve until :meth:`stop`."""
        with self._waiting:
            await anyio.wait_readable(self._listener.extra(SocketAttribute.raw_socket))
        if self._waiting.cancel_called:
            await self._listener.aclose()
            return
        # Loaded now, on demand: an app that nobody visits never pays for it.
        from headwater.broker import serve_data_directory  # noqa: PLC0415

        logger.info("a client connected: starting the broker of %s", self._store.path)
        async with serve_data_directory(
            self._store, self._coordinator, listener=self._listener, transactions=self._transactions
        ):
            await self._stopping.wait()
