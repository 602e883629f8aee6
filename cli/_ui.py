"""``headwater ui``: a web page of a log's topics, consumer groups and apps, live.

It serves ``_ui_app.py``'s application with hypercorn in the command's own trio loop (the
helper ``--metrics`` serves with), and looks at the log every ``--interval`` seconds the
way ``headwater top`` does (``_top.py``'s gathering: a data directory, through its owner
when one serves it, or a broker at ``--bootstrap``); pages watch those looks through
server-sent events. The apps named by ``--app`` are loaded as ``headwater describe``
loads them, for their topology; ``--app-metrics`` adds running apps' counters, as in
``top``.

Everything it serves is read-only. Listening beyond loopback takes ``--token``: it
refuses to start without one, since whoever reaches the port would read every record.
"""

from __future__ import annotations

import ipaddress
import logging
import sys

import anyio
import click

from ._datadir import data_dir, data_option
from ._metrics_http import base_url, bind, parse_address, serve_asgi
from ._output import info
from ._run import run_until_signal
from ._target import bootstrap_of, log_access, log_option

TOKEN_ENV_VAR = "HEADWATER_UI_TOKEN"


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a name or an address) is this machine's loopback only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # any other name may resolve anywhere


def check_exposure(host: str, token: str | None) -> None:
    """Refuse to serve beyond loopback without a token, and an empty token.

    :raises click.UsageError: naming what to give.
    """
    if token is not None and not token.strip():
        raise click.UsageError("--token is empty; give a secret that is hard to guess")
    if token is None and not is_loopback(host):
        raise click.UsageError(
            f"--listen {host} reaches beyond this machine: give --token (or "
            f"${TOKEN_ENV_VAR}) so that only those who have it can read the log"
        )


@click.command()
@click.option(
    "--listen",
    required=True,
    metavar="HOST:PORT",
    callback=parse_address,
    help="Serve the page at http://HOST:PORT/ (port 0: any free port, logged).",
)
@click.option(
    "--token",
    default=None,
    metavar="TOKEN",
    envvar=TOKEN_ENV_VAR,
    help="Require 'Authorization: Bearer TOKEN' on every data request (the page asks for "
    f"it); required beyond loopback (default: ${TOKEN_ENV_VAR}, which other users cannot "
    "see in the process list).",
)
@click.option(
    "--app",
    "app_targets",
    multiple=True,
    metavar="APP.PY[:NAME]",
    help="Show the topology of the app in APP.PY (as headwater describe); repeatable.",
)
@click.option(
    "--app-metrics",
    "app_urls",
    multiple=True,
    metavar="URL",
    help="Also show the counters of the app whose metrics are at URL (headwater run "
    "--metrics); repeatable.",
)
@click.option(
    "--interval",
    type=click.FloatRange(min=0.1, max=3600),
    default=2.0,
    show_default=True,
    help="Seconds between two looks at the log.",
)
@data_option
@log_option
@click.pass_context
def ui(
    ctx: click.Context,
    *,
    listen: tuple[str, int],
    token: str | None,
    app_targets: tuple[str, ...],
    app_urls: tuple[str, ...],
    interval: float,
    data: object,
    bootstrap: str | None,
) -> None:
    """Serve a web page of the topics (partitions, offsets, records/s), consumer groups
    (lag per partition), apps (topology, per-operator rates) and records (from an offset
    or a time, with their lineage) of a data directory or a broker, updated live.

    Read-only. Beyond loopback it requires --token. Ctrl-C stops it.
    """
    check_exposure(listen[0], token)
    access = log_access(ctx)
    cluster = bootstrap_of(ctx)
    directory = None if cluster is not None else data_dir(ctx)
    # Imported here: only this command needs the web stack and the processing runtime.
    from ._app_commands import load_app  # noqa: PLC0415
    from ._top import take_sample  # noqa: PLC0415
    from ._ui_app import UiContext, create_app  # noqa: PLC0415
    from ._ui_feed import Feed  # noqa: PLC0415
    from ._ui_model import topology  # noqa: PLC0415

    apps = [topology(load_app(target)) for target in app_targets]
    logging.basicConfig(level=logging.WARNING, format="headwater: %(message)s", stream=sys.stderr)
    sock = bind(listen, "the ui")
    url = base_url(sock) + "/"

    async def serve() -> None:
        feed = Feed(lambda: take_sample(access, cluster, directory, app_urls), interval)
        context = UiContext(access=access, feed=feed, apps=apps, title=access.description)
        app = create_app(context, token)
        async with anyio.create_task_group() as tg:
            await tg.start(serve_asgi, app, sock)
            info(f"serving the ui of {access.description} at {url}")
            tg.start_soon(feed.run)
            await anyio.sleep_forever()

    run_until_signal(serve)
