"""Which log a command works on: a data directory, or a broker given by ``--bootstrap``.

Every command that reads or writes records (``produce``, ``consume``, ``groups``,
``trace``) takes ``--data DIR`` and ``--bootstrap HOST:PORT`` (also
``$HEADWATER_BOOTSTRAP``, as ``topics`` does) and asks :func:`log_access` for the
:class:`~headwater.cli._access.LogAccess` to use: a broker when one is named, else the
data directory. This is the one place that choice is made, so that a command that finds
its data directory owned by a running process can be pointed at that owner's address
here without any command changing.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click
from click.core import ParameterSource

from ._access import LogAccess
from ._datadir import data_dir
from ._local import LocalAccess

F = TypeVar("F", bound=Callable[..., Any])

ENV_VAR = "HEADWATER_BOOTSTRAP"


def log_option(f: F) -> F:
    """Add ``--bootstrap HOST:PORT`` (default ``$HEADWATER_BOOTSTRAP``) to a log command."""
    return click.option(
        "--bootstrap",
        default=None,
        metavar="HOST:PORT",
        envvar=ENV_VAR,
        help="Work on the log of the broker at HOST:PORT (headwater broker or a Kafka "
        f"cluster) instead of a data directory (default: ${ENV_VAR}).",
    )(f)


def log_access(ctx: click.Context) -> LogAccess:
    """Return the log the command works on: a broker when :func:`bootstrap_of` names one,
    else the data directory.

    :raises click.UsageError: if both ``--bootstrap`` and ``--data`` are given.
    """
    bootstrap = bootstrap_of(ctx)
    if bootstrap is None:
        return LocalAccess(data_dir(ctx))
    from ._kafka import KafkaAccess  # noqa: PLC0415 - keeps librdkafka out of local runs

    return KafkaAccess(bootstrap)


def bootstrap_of(ctx: click.Context) -> str | None:
    """Return the broker the command works on: the innermost ``--bootstrap``, if any.

    What the command line says wins over the environment: ``--data DIR`` over
    ``$HEADWATER_BOOTSTRAP``, and ``--bootstrap`` over ``$HEADWATER_DATA``.

    :raises click.UsageError: if both ``--bootstrap`` and ``--data`` are given.
    """
    bootstrap: str | None = _innermost(ctx, "bootstrap")
    if bootstrap is not None and _given(ctx, "data"):
        if _given(ctx, "bootstrap"):
            raise click.UsageError("give --data or --bootstrap, not both")
        return None
    return bootstrap


def _innermost(ctx: click.Context, name: str) -> Any:
    current: click.Context | None = ctx
    while current is not None:
        value = current.params.get(name)
        if value is not None:
            return value
        current = current.parent
    return None


def _given(ctx: click.Context, name: str) -> bool:
    """Whether ``--name`` was given on the command line, at any level."""
    current: click.Context | None = ctx
    while current is not None:
        if current.get_parameter_source(name) is ParameterSource.COMMANDLINE:
            return True
        current = current.parent
    return False
