"""``headwater topics ... --bootstrap HOST:PORT``: the same commands against a running broker.

They also serve a data directory that its owner serves (an app, ``headwater broker``):
the commands then work through the owner's address, and say so with the directory's name.
The commands speak the Kafka protocol (:class:`~headwater.broker.AdminClient`: the
codec over a plain socket, no client library), so they work against ``headwater broker``
-- which owns its data directory while it runs -- and against any Kafka cluster. Settings
given as ``--config KEY=VALUE`` are checked here first, as for a data directory, then
sent under Kafka's names (``retention_ms`` goes as ``retention.ms``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import click
from rich.table import Table

from headwater.store import TopicConfig, kafka_config_entries

from ._output import info, stdout_console

if TYPE_CHECKING:
    from headwater.broker import AdminClient, RemoteTopic

F = TypeVar("F", bound=Callable[..., Any])

ENV_VAR = "HEADWATER_BOOTSTRAP"
# Our field names whose Kafka name is not the field name with '.' for '_'.
_KAFKA_NAME_EXCEPTIONS = {
    "durability": "headwater.durability",
    "timestamp_type": "message.timestamp.type",
}


def bootstrap_option(f: F) -> F:
    """Add ``--bootstrap HOST:PORT`` to a command."""
    return click.option(
        "--bootstrap",
        default=None,
        metavar="HOST:PORT",
        envvar=ENV_VAR,
        help=f"Administer the broker at HOST:PORT over the Kafka protocol instead of a data "
        f"directory (default: ${ENV_VAR}).",
    )(f)


@contextlib.contextmanager
def admin_client(bootstrap: str) -> Iterator[AdminClient]:
    """Connect to ``bootstrap``; turn a failure to reach it into a one-line error."""
    # Imported here: the commands on a data directory nobody serves do without the
    # broker package (and the event loop it brings), a tenth of a second at start-up.
    from headwater.broker import AdminClient  # noqa: PLC0415

    try:
        client = AdminClient(bootstrap, client_id="headwater-cli")
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--bootstrap") from None
    except OSError as exc:
        reason = exc.strerror or str(exc) or type(exc).__name__
        raise click.ClickException(f"cannot reach the broker at {bootstrap}: {reason}") from None
    with client:
        try:
            yield client
        except (OSError, TimeoutError) as exc:
            reason = exc.strerror or str(exc) or type(exc).__name__
            raise click.ClickException(f"lost the broker at {bootstrap}: {reason}") from None


def kafka_settings(pairs: Mapping[str, str], config: TopicConfig) -> dict[str, str]:
    """Return the settings the user gave, under Kafka's names and in its spelling.

    ``config`` is the config parsed from ``pairs`` (so every key and value is valid).
    """
    entries = kafka_config_entries(config)
    out = {}
    for key in pairs:
        normalized = key.strip().lower().replace("-", "_")
        if normalized.replace("_", ".") in entries:
            name = normalized.replace("_", ".")
        elif normalized in entries:
            name = normalized
        else:
            name = _KAFKA_NAME_EXCEPTIONS.get(normalized, normalized.replace("_", "."))
        assert name in entries, f"no Kafka name for {key!r}"
        out[name] = entries[name]
    return out


def create(
    bootstrap: str,
    name: str,
    partitions: int,
    pairs: Mapping[str, str],
    *,
    where: str | None = None,
) -> None:
    """Create topic ``name`` on the broker (``where`` says which, for messages)."""
    config = TopicConfig.from_strings(pairs, TopicConfig(partitions=partitions))
    with admin_client(bootstrap) as client:
        client.create_topic(name, partitions, kafka_settings(pairs, config))
    info(f"created topic {name!r} with {partitions} partition(s) {_on(bootstrap, where)}")


def alter(bootstrap: str, name: str, pairs: Mapping[str, str], *, where: str | None = None) -> None:
    """Change settings of topic ``name`` on the broker; ``KEY=`` sets the default again."""
    sets = {key: value for key, value in pairs.items() if value.strip()}
    resets = {key: value for key, value in pairs.items() if not value.strip()}
    # Checks every key and value here, as for a data directory.
    config = TopicConfig().changed({**sets, **dict.fromkeys(resets)}, TopicConfig())
    changes: dict[str, str | None] = dict(kafka_settings(sets, config))
    changes.update(dict.fromkeys(kafka_settings(resets, config)))
    with admin_client(bootstrap) as client:
        client.alter_topic_config(name, changes)
    shown = ", ".join(f"{k}={'(default)' if v is None else v}" for k, v in changes.items())
    info(f"changed topic {name!r} {_on(bootstrap, where)}: {shown}")


def add_partitions(bootstrap: str, name: str, partitions: int, *, where: str | None = None) -> None:
    """Grow topic ``name`` on the broker to ``partitions`` partitions."""
    with admin_client(bootstrap) as client:
        client.create_partitions(name, partitions)
    info(f"topic {name!r} now has {partitions} partition(s) {_on(bootstrap, where)}")


def delete_records(
    bootstrap: str,
    name: str,
    partitions: Sequence[int],
    before: int,
    *,
    where: str | None = None,
) -> None:
    """Delete records of topic ``name`` before ``before`` (-1: the high watermark) in
    ``partitions`` (every partition when empty); print the new log start offsets."""
    with admin_client(bootstrap) as client:
        chosen = partitions or sorted(client.partition_leaders(name))
        lows = client.delete_records(name, dict.fromkeys(chosen, before))
    print_low_watermarks(name, lows)
    info(f"deleted records of topic {name!r} {_on(bootstrap, where)}")


def print_low_watermarks(name: str, lows: Mapping[int, int]) -> None:
    """Print each partition's log start offset after records were deleted."""
    table = Table("partition", "log_start_offset", title=f"topic {name}", title_justify="left")
    for partition, low in sorted(lows.items()):
        table.add_row(str(partition), str(low))
    stdout_console().print(table)


def delete(bootstrap: str, name: str, *, where: str | None = None) -> None:
    """Delete topic ``name`` on the broker."""
    with admin_client(bootstrap) as client:
        client.delete_topic(name)
    info(f"deleted topic {name!r} {_on(bootstrap, where)}")


def list_topics(bootstrap: str, *, where: str | None = None) -> None:
    """Print a table of the broker's topics (bytes are not known over the protocol)."""
    with admin_client(bootstrap) as client:
        described = client.describe_topics()
    if not described:
        info(f"no topics {_on(bootstrap, where)}")
        return
    table = Table("topic", "partitions", "records", "bytes", "durability", "retention_ms")
    for topic in described:
        table.add_row(
            topic.name,
            str(len(topic.partitions)),
            str(_records(topic)),
            "-",
            topic.configs.get("headwater.durability", "-"),
            topic.configs.get("retention.ms", "-"),
        )
    stdout_console().print(table)


def describe(bootstrap: str, name: str) -> None:
    """Print topic ``name``'s settings (Kafka's names) and each partition's offsets."""
    with admin_client(bootstrap) as client:
        (topic,) = client.describe_topics([name])
    settings = Table("setting", "value", title=f"topic {topic.name}", title_justify="left")
    settings.add_row("partitions", str(len(topic.partitions)))
    for key, value in topic.configs.items():
        settings.add_row(key, value)
    offsets = Table("partition", "log_start_offset", "high_watermark")
    for p in topic.partitions:
        offsets.add_row(str(p.partition), str(p.log_start_offset), str(p.high_watermark))
    console = stdout_console()
    console.print(settings)
    console.print(offsets)


def _on(bootstrap: str, where: str | None) -> str:
    """``on the broker at HOST:PORT``, or ``in`` the place ``where`` names."""
    return f"on the broker at {bootstrap}" if where is None else f"in {where}"


def _records(topic: RemoteTopic) -> int:
    return sum(p.high_watermark - p.log_start_offset for p in topic.partitions)
