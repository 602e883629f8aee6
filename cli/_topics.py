"""``headwater topics``: create, list, describe, alter and delete topics, add partitions,
and delete records."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import click
from rich.table import Table

from headwater.store import TopicConfig, TopicDescription, setting_keys

from . import _remote
from ._datadir import claimed, data_dir, data_option, nested_data_directories
from ._output import info, stdout_console
from ._owner import Served
from ._remote import bootstrap_option
from ._run import run_async
from ._target import bootstrap_of

F = TypeVar("F", bound=Callable[..., Any])


@click.group()
@data_option
def topics(data: object) -> None:
    """Create, list, describe, alter and delete topics; add partitions; delete records.

    Each command works on a data directory (--data), or on a running broker through the
    Kafka protocol (--bootstrap HOST:PORT). A data directory that an app or a broker is
    using is reached through the address it serves it at.
    """


def parse_settings(settings: Sequence[str]) -> dict[str, str]:
    """Split ``KEY=VALUE`` arguments into a mapping (keys and values are checked later).

    :raises click.BadParameter: if one has no ``=`` or repeats a key.
    """
    pairs: dict[str, str] = {}
    for setting in settings:
        key, equals, value = setting.partition("=")
        key = key.strip()
        if not equals or not key:
            raise click.BadParameter(f"expected KEY=VALUE, got {setting!r}", param_hint="--config")
        if key in pairs:
            raise click.BadParameter(f"{key} is given twice", param_hint="--config")
        pairs[key] = value
    return pairs


def config_option(help_text: str) -> Callable[[F], F]:
    """Add ``--config/-c KEY=VALUE`` (repeatable) to a command, with the keys in its help."""
    keys = ", ".join(setting_keys())
    return click.option(
        "--config",
        "-c",
        "settings",
        multiple=True,
        metavar="KEY=VALUE",
        help=f"{help_text} (repeatable). Keys: {keys}.",
    )


@topics.command()
@click.argument("name")
@click.option(
    "--partitions",
    "-p",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Number of partitions.",
)
@config_option("A topic setting, e.g. durability=always, retention.ms=86400000")
@data_option
@bootstrap_option
@click.pass_context
def create(
    ctx: click.Context,
    *,
    name: str,
    partitions: int,
    settings: tuple[str, ...],
    data: object,
    bootstrap: str | None,
) -> None:
    """Create topic NAME. Names starting with '__' are reserved for internal topics."""
    pairs = parse_settings(settings)
    if any(key.lower() in ("partitions", "num.partitions") for key in pairs):
        raise click.BadParameter(
            "give the partition count with --partitions", param_hint="--config"
        )
    bootstrap = bootstrap_of(ctx)
    if bootstrap is not None:
        _remote.create(bootstrap, name, partitions, pairs)
        return
    config = TopicConfig.from_strings(pairs, TopicConfig(partitions=partitions))
    directory = data_dir(ctx)

    async def body() -> Served | None:
        async with claimed(directory, writer=True, create=True) as claim:
            if isinstance(claim, Served):
                return claim
            await claim.create_topic(name, config)
            return None

    served = run_async(body)
    if served is not None:
        _remote.create(served.bootstrap, name, partitions, pairs, where=served.description)
        return
    info(f"created topic {name!r} with {partitions} partition(s) in {directory}")


@topics.command("list")
@data_option
@bootstrap_option
@click.pass_context
def list_(ctx: click.Context, data: object, bootstrap: str | None) -> None:
    """List the topics with their partition counts, records and sizes."""
    bootstrap = bootstrap_of(ctx)
    if bootstrap is not None:
        _remote.list_topics(bootstrap)
        return
    directory = data_dir(ctx)
    if not directory.is_dir():
        info(f"no topics (no data directory at {directory})")
        return

    async def body() -> list[TopicDescription] | Served:
        async with claimed(directory, writer=False) as claim:
            if isinstance(claim, Served):
                return claim
            return [claim.describe_topic(name) for name in claim.list_topics()]

    described = run_async(body)
    if isinstance(described, Served):
        _remote.list_topics(described.bootstrap, where=described.description)
        return
    for nested in nested_data_directories(directory):
        # Its topics are not this directory's: say where to look, since a name is all
        # the user would otherwise see of it.
        info(
            f"{nested} is a data directory of its own, not a topic; its topics: "
            f"headwater --data {nested} topics list"
        )
    if not described:
        info(f"no topics in {directory}")
        return
    table = Table("topic", "partitions", "records", "bytes", "durability", "retention_ms")
    for d in described:
        table.add_row(
            d.name,
            str(len(d.partitions)),
            str(sum(p.log_end_offset - p.log_start_offset for p in d.partitions)),
            str(sum(p.size_bytes for p in d.partitions)),
            str(d.config.durability),
            str(d.config.retention_ms),
        )
    stdout_console().print(table)


@topics.command()
@click.argument("name")
@data_option
@bootstrap_option
@click.pass_context
def describe(ctx: click.Context, name: str, data: object, bootstrap: str | None) -> None:
    """Show topic NAME's settings and each partition's offsets and size."""
    bootstrap = bootstrap_of(ctx)
    if bootstrap is not None:
        _remote.describe(bootstrap, name)
        return
    directory = data_dir(ctx)

    async def body() -> TopicDescription | Served:
        async with claimed(directory, writer=False) as claim:
            if isinstance(claim, Served):
                return claim
            return claim.describe_topic(name)

    d = run_async(body)
    if isinstance(d, Served):
        _remote.describe(d.bootstrap, name)
        return
    settings = Table("setting", "value", title=f"topic {d.name}", title_justify="left")
    settings.add_row("partitions", str(len(d.partitions)))
    for key, value in d.config.to_strings().items():
        settings.add_row(key, value)
    offsets = Table(
        "partition", "log_start_offset", "log_end_offset", "high_watermark", "bytes", "segments"
    )
    for p in d.partitions:
        offsets.add_row(
            str(p.partition),
            str(p.log_start_offset),
            str(p.log_end_offset),
            str(p.high_watermark),
            str(p.size_bytes),
            str(p.segments),
        )
    console = stdout_console()
    console.print(settings)
    console.print(offsets)


@topics.command()
@click.argument("name")
@config_option("A setting to change, e.g. retention.ms=3600000; KEY= sets the default again")
@data_option
@bootstrap_option
@click.pass_context
def alter(
    ctx: click.Context,
    *,
    name: str,
    settings: tuple[str, ...],
    data: object,
    bootstrap: str | None,
) -> None:
    """Change settings of topic NAME; records stay as they are. Later appends, segment
    rolls and retention follow the new settings. The partition count grows only with
    add-partitions."""
    pairs = parse_settings(settings)
    if not pairs:
        raise click.UsageError("give at least one --config KEY=VALUE")
    bootstrap = bootstrap_of(ctx)
    if bootstrap is not None:
        _remote.alter(bootstrap, name, pairs)
        return
    changes = {key: (value if value.strip() else None) for key, value in pairs.items()}
    directory = data_dir(ctx)

    async def body() -> tuple[TopicConfig, TopicConfig] | Served:
        async with claimed(directory, writer=True) as claim:
            if isinstance(claim, Served):
                return claim
            # Checked first, so that the refusal of an internal name says why.
            claim.altered_topic_config(name, changes)
            before = claim.topic_config(name)
            return before, await claim.alter_topic_config(name, changes)

    altered = run_async(body)
    if isinstance(altered, Served):
        _remote.alter(altered.bootstrap, name, pairs, where=altered.description)
        return
    before, after = altered
    old, new = before.to_strings(), after.to_strings()
    changed = [f"{key} {old[key]} -> {new[key]}" for key in new if old[key] != new[key]]
    info(f"changed topic {name!r}: {', '.join(changed) or 'nothing (it had those settings)'}")


@topics.command()
@click.argument("name")
@data_option
@bootstrap_option
@click.pass_context
def delete(ctx: click.Context, name: str, data: object, bootstrap: str | None) -> None:
    """Delete topic NAME and all its records."""
    bootstrap = bootstrap_of(ctx)
    if bootstrap is not None:
        _remote.delete(bootstrap, name)
        return
    directory = data_dir(ctx)

    async def body() -> Served | None:
        async with claimed(directory, writer=True) as claim:
            if isinstance(claim, Served):
                return claim
            await claim.delete_topic(name)
            return None

    served = run_async(body)
    if served is not None:
        _remote.delete(served.bootstrap, name, where=served.description)
        return
    info(f"deleted topic {name!r}")


@topics.command("add-partitions")
@click.argument("name")
@click.option(
    "--partitions",
    "-p",
    type=click.IntRange(min=1),
    required=True,
    help="The new partition count (more than the topic has: a topic never shrinks).",
)
@data_option
@bootstrap_option
@click.pass_context
def add_partitions(
    ctx: click.Context, *, name: str, partitions: int, data: object, bootstrap: str | None
) -> None:
    """Grow topic NAME to --partitions partitions.

    Records already written stay in their partitions. Keyed records written from now on go
    by murmur2 over the new count, as with Kafka, so a key's new records may land in
    another partition than its old ones. Consumer groups rebalance onto the new partitions.
    """
    bootstrap = bootstrap_of(ctx)
    if bootstrap is not None:
        _remote.add_partitions(bootstrap, name, partitions)
        return
    directory = data_dir(ctx)

    async def body() -> int | Served:
        async with claimed(directory, writer=True) as claim:
            if isinstance(claim, Served):
                return claim
            claim.check_partition_count(name, partitions)
            before = len(claim.partitions(name))
            await claim.create_partitions(name, partitions)
            return before

    grown = run_async(body)
    if isinstance(grown, Served):
        _remote.add_partitions(grown.bootstrap, name, partitions, where=grown.description)
        return
    info(f"topic {name!r} now has {partitions} partition(s) (it had {grown}) in {directory}")


def parse_before(ctx: click.Context, param: click.Parameter, value: str) -> int:
    """Read ``--before``: an offset, or ``end`` for the high watermark (-1 on the wire).

    :raises click.BadParameter: if it is neither.
    """
    text = value.strip().lower()
    if text == "end":
        return -1
    if not text.isdigit():
        raise click.BadParameter(f"expected an offset (0 or more) or 'end', got {value!r}")
    return int(text)


@topics.command("delete-records")
@click.argument("name")
@click.option(
    "--partition",
    "partitions",
    type=click.IntRange(min=0),
    multiple=True,
    help="A partition whose records to delete (repeatable; default: every partition).",
)
@click.option(
    "--before",
    required=True,
    callback=parse_before,
    metavar="OFFSET|end",
    help="Delete the records before this offset ('end': every record readable now).",
)
@data_option
@bootstrap_option
@click.pass_context
def delete_records(
    ctx: click.Context,
    *,
    name: str,
    partitions: tuple[int, ...],
    before: int,
    data: object,
    bootstrap: str | None,
) -> None:
    """Delete the records of topic NAME before an offset: move the partitions' log start.

    Readers can no longer read below it (a consumer there starts from the new log start),
    and the segments it leaves behind are removed by retention. Compacted topics refuse.
    """
    bootstrap = bootstrap_of(ctx)
    if bootstrap is not None:
        _remote.delete_records(bootstrap, name, partitions, before)
        return
    directory = data_dir(ctx)

    async def body() -> dict[int, int] | Served:
        async with claimed(directory, writer=True) as claim:
            if isinstance(claim, Served):
                return claim
            chosen = partitions or range(len(claim.partitions(name)))
            return await claim.delete_records(name, dict.fromkeys(chosen, before))

    lows = run_async(body)
    if isinstance(lows, Served):
        _remote.delete_records(lows.bootstrap, name, partitions, before, where=lows.description)
        return
    _remote.print_low_watermarks(name, lows)
    info(f"deleted records of topic {name!r} in {directory}")
