"""``--metrics HOST:PORT``: serve the process's metrics at ``http://HOST:PORT/metrics``.

``GET /metrics`` answers prometheus_client's exposition of the process's registry (see
``headwater.store``'s metrics): Prometheus' text format, or OpenMetrics when the scraper
asks for it, gzipped when it accepts that; any other path is a 404. hypercorn serves it
in the command's own event loop, so that the collectors, which read that loop's objects,
run in its thread. The socket is bound before anything else starts, so a taken port is
refused at once, as a usage error; port 0 picks a free one, and the address is logged.

hypercorn, starlette and prometheus_client are imported only when metrics are asked for.
"""

from __future__ import annotations

import contextlib
import logging
import socket
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any, TypeVar

import anyio
import click
from anyio.abc import TaskStatus

from headwater.store import enable_metrics

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

logger = logging.getLogger("headwater.metrics")

F = TypeVar("F", bound=Callable[..., Any])

#: How long a stop waits for a scrape in progress.
_GRACE_S = 1.0


def parse_address(ctx: click.Context, param: click.Parameter, value: str | None) -> object:
    """Read an option's ``HOST:PORT`` into ``(host, port)`` (None stays None).

    :raises click.BadParameter: for anything else.
    """
    if value is None:
        return None
    host, colon, port = value.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not colon or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise click.BadParameter(
            f"expected HOST:PORT with a port from 0 (any free one) to 65535, got {value!r}"
        )
    return host, int(port)


#: What ``--metrics`` does, as ``--help`` says it.
METRICS_HELP = (
    "Serve this process's metrics at http://HOST:PORT/metrics for Prometheus "
    "(port 0: any free port, logged)."
)


def metrics_option(fn: F, *, help: str = METRICS_HELP) -> F:
    """Add ``--metrics HOST:PORT`` to a command (its value: ``(host, port)`` or None)."""
    return click.option(
        "--metrics",
        "metrics",
        metavar="HOST:PORT",
        default=None,
        callback=parse_address,
        help=help,
    )(fn)


@contextlib.asynccontextmanager
async def serving_metrics(address: tuple[str, int] | None) -> AsyncIterator[str | None]:
    """Turn metrics on and serve them at ``address`` for a block; yield the URL served.

    Enter it before the store, the broker or the app are made: they measure themselves
    only if metrics were on when they were made. With ``address`` None, nothing happens
    (and None is yielded).

    :raises click.ClickException: if the address cannot be bound.
    """
    if address is None:
        yield None
        return
    registry = enable_metrics()
    sock = bind(address, "metrics")
    url = f"{base_url(sock)}/metrics"
    async with anyio.create_task_group() as tg:
        await tg.start(_serve, registry, sock)
        logger.info("serving metrics at %s", url)
        try:
            yield url
        finally:
            tg.cancel_scope.deadline = anyio.current_time() + _GRACE_S
            tg.cancel_scope.cancel()


def bind(address: tuple[str, int], what: str) -> socket.socket:
    """Bind a listening socket at ``address`` (port 0: any free one) to serve ``what``.

    :raises click.ClickException: if the address cannot be bound.
    """
    host, port = address
    try:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        return socket.create_server((host, port), family=family)
    except OSError as exc:
        raise click.ClickException(
            f"cannot serve {what} on {host}:{port}: {exc.strerror or exc}"
        ) from None


def base_url(sock: socket.socket) -> str:
    """Return ``http://HOST:PORT`` of a socket from :func:`bind`."""
    bound = sock.getsockname()
    return f"http://{_netloc(bound[0], bound[1])}"


def _netloc(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


async def _serve(
    registry: CollectorRegistry, sock: socket.socket, *, task_status: TaskStatus[None]
) -> None:
    # Imported here: a command without --metrics never loads the HTTP stack.
    from prometheus_client import make_asgi_app  # noqa: PLC0415
    from starlette.applications import Starlette  # noqa: PLC0415
    from starlette.routing import Route  # noqa: PLC0415

    app = Starlette(routes=[Route("/metrics", _Endpoint(make_asgi_app(registry)))])
    await serve_asgi(app, sock, task_status=task_status)


async def serve_asgi(app: Any, sock: socket.socket, *, task_status: TaskStatus[None]) -> None:
    """Serve the ASGI ``app`` with hypercorn on ``sock`` (from :func:`bind`, which this
    takes over) in the running event loop, until cancelled; started once it serves."""
    from hypercorn.config import Config  # noqa: PLC0415

    config = Config()
    config.bind = [f"fd://{sock.detach()}"]
    config.accesslog = None
    quiet = logging.getLogger("headwater.metrics.http")
    quiet.setLevel(logging.WARNING)  # not hypercorn's "Running on ... (CTRL + C to quit)"
    config.errorlog = quiet
    serve = _hypercorn_serve()
    async with anyio.create_task_group() as tg:
        tg.start_soon(lambda: serve(app, config, mode="asgi"))
        task_status.started()


class _Endpoint:
    """An ASGI app as a starlette endpoint (a plain function would be taken for a
    request-response handler)."""

    def __init__(self, app: Callable[..., Any]) -> None:
        self._app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await self._app(scope, receive, send)


def _hypercorn_serve() -> Callable[..., Any]:
    """Return hypercorn's ``serve`` for the event loop running this (trio or asyncio)."""
    if _running_asyncio():
        from hypercorn.asyncio import serve as on_asyncio  # noqa: PLC0415

        return on_asyncio
    from hypercorn.trio import serve as on_trio  # noqa: PLC0415

    return on_trio


def _running_asyncio() -> bool:
    import asyncio  # noqa: PLC0415

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True
