"""``headwater groups``: list, describe, reset and delete the offsets of, and delete
consumer groups.

The groups are a data directory's or a broker's (``--bootstrap``), through
:class:`~headwater.cli._access.LogAccess`. In a data directory, which one process uses at
a time, the groups have no live members (they are Empty) and what the commands show and
change are the committed offsets in ``__consumer_offsets``; on a broker they may have
members, and a group with active members cannot be reset or deleted.

``reset-offsets --execute`` commits the new offsets in batches of partitions
(``_offset_reset.py``); on a terminal a progress bar (``_progress.py``) advances with each.
"""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime
from typing import Literal

import click
from rich.table import Table

from ._access import GroupRow, GroupView, OffsetDeleteRow, ResetRow
from ._datadir import data_option
from ._local import LocalAccess
from ._output import info, stdout_console
from ._progress import CountProgress, progress_shown
from ._run import run_async
from ._target import log_access, log_option

_NONE = "-"


@click.group()
@data_option
@log_option
def groups(data: object, bootstrap: str | None) -> None:
    """List, describe, reset and delete consumer groups and their committed offsets."""


@groups.command("list")
@data_option
@log_option
@click.pass_context
def list_(ctx: click.Context, data: object, bootstrap: str | None) -> None:
    """List the consumer groups with their state and committed partitions."""
    access = log_access(ctx)
    if isinstance(access, LocalAccess) and not access.directory.is_dir():
        info(f"no consumer groups (no data directory at {access.directory})")
        return

    async def body() -> list[GroupRow]:
        async with access.groups(writer=False) as admin:
            return await admin.list_groups()

    rows = run_async(body)
    if not rows:
        info(f"no consumer groups in {access.description}")
        return
    table = Table("group", "state", "members", "topics", "committed partitions")
    for row in rows:
        table.add_row(
            row.group_id,
            row.state,
            str(row.members),
            ", ".join(row.topics) or _NONE,
            str(row.partitions),
        )
    stdout_console().print(table)


@groups.command()
@click.argument("group")
@data_option
@log_option
@click.pass_context
def describe(ctx: click.Context, group: str, data: object, bootstrap: str | None) -> None:
    """Show GROUP's members and, per partition, its committed offset, log end and lag."""
    access = log_access(ctx)

    async def body() -> GroupView:
        async with access.groups(writer=False) as admin:
            return await admin.describe_group(group)

    description = run_async(body)
    title = f"group {group}: {description.state}, {description.members} member(s)"
    table = Table(
        "topic",
        "partition",
        "committed offset",
        "log end offset",
        "lag",
        "member",
        "client",
        title=title,
        title_justify="left",
    )
    for row in description.partitions:
        table.add_row(
            row.partition.topic,
            str(row.partition.partition),
            _text(row.committed),
            _text(row.log_end_offset),
            _text(row.lag),
            row.member[0] if row.member else _NONE,
            row.member[1] if row.member else _NONE,
        )
    stdout_console().print(table)


def _text(value: int | None) -> str:
    return _NONE if value is None else str(value)


def parse_datetime(
    ctx: click.Context, param: click.Parameter, value: str | None
) -> datetime | None:
    """Read an ISO-8601 time (UTC unless it says otherwise).

    :raises click.BadParameter: if it is not one.
    """
    if value is None:
        return None
    try:
        when = datetime.fromisoformat(value.strip())
    except ValueError:
        raise click.BadParameter(f"expected an ISO-8601 time, got {value!r}") from None
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


@groups.command("reset-offsets")
@click.argument("group")
@click.option("--topic", "-t", required=True, help="The topic whose offsets to reset.")
@click.option("--to-earliest", is_flag=True, help="Reset to the log start of each partition.")
@click.option("--to-latest", is_flag=True, help="Reset to the end of each partition.")
@click.option(
    "--to-offset",
    type=click.IntRange(min=0),
    metavar="N",
    help="Reset to offset N (clamped into each partition's log).",
)
@click.option(
    "--to-datetime",
    callback=parse_datetime,
    metavar="TIME",
    help="Reset to the first record at or after an ISO-8601 time (UTC unless it says).",
)
@click.option("--execute", is_flag=True, help="Apply the plan (without it: only print it).")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar (--execute).")
@data_option
@log_option
@click.pass_context
def reset_offsets(
    ctx: click.Context,
    *,
    group: str,
    topic: str,
    to_earliest: bool,
    to_latest: bool,
    to_offset: int | None,
    to_datetime: datetime | None,
    execute: bool,
    quiet: bool,
    data: object,
    bootstrap: str | None,
) -> None:
    """Reset GROUP's committed offsets for TOPIC; a dry run unless --execute is given.

    Prints the plan: each partition's current and new offset. Refused while the group
    has active members. With --execute on a terminal, a progress bar shows the partitions
    committed (--quiet: none).
    """
    targets: list[Literal["earliest", "latest"] | int | datetime] = []
    if to_earliest:
        targets.append("earliest")
    if to_latest:
        targets.append("latest")
    if to_offset is not None:
        targets.append(to_offset)
    if to_datetime is not None:
        targets.append(to_datetime)
    if len(targets) != 1:
        raise click.UsageError(
            "give exactly one of --to-earliest, --to-latest, --to-offset, --to-datetime"
        )
    (to,) = targets
    access = log_access(ctx)

    bar = None
    if execute and progress_shown(quiet):
        bar = CountProgress(f"reset group {group!r} on {topic!r}", "partitions")

    async def body() -> list[ResetRow]:
        async with access.groups(writer=execute) as admin:
            return await admin.reset_offsets(group, topic, to, execute=execute, progress=bar)

    with bar or contextlib.nullcontext():
        plan = run_async(body)
    table = Table("topic", "partition", "current offset", "new offset")
    for row in plan:
        tp = row.partition
        table.add_row(tp.topic, str(tp.partition), _text(row.current), str(row.new))
    stdout_console().print(table)
    if execute:
        info(f"reset the offsets of group {group!r} on topic {topic!r}")
    else:
        info("dry run: nothing changed (add --execute to apply this plan)")


@groups.command()
@click.argument("group")
@data_option
@log_option
@click.pass_context
def delete(ctx: click.Context, group: str, data: object, bootstrap: str | None) -> None:
    """Delete GROUP and its committed offsets (refused while it has active members)."""
    access = log_access(ctx)

    async def body() -> None:
        async with access.groups(writer=True) as admin:
            await admin.delete_group(group)

    run_async(body)
    info(f"deleted group {group!r}")


@groups.command("delete-offsets")
@click.argument("group")
@click.option("--topic", "-t", required=True, help="The topic whose committed offsets to delete.")
@click.option(
    "--partition",
    "-p",
    "partitions",
    type=click.IntRange(min=0),
    multiple=True,
    help="A partition whose offset to delete (repeatable; default: every partition).",
)
@data_option
@log_option
@click.pass_context
def delete_offsets(
    ctx: click.Context,
    *,
    group: str,
    topic: str,
    partitions: tuple[int, ...],
    data: object,
    bootstrap: str | None,
) -> None:
    """Delete GROUP's committed offsets of a topic; the group then starts those partitions
    where its auto_offset_reset says.

    Offsets of a topic that the group's active members consume are kept (as Kafka does):
    the command then prints which, and exits non-zero.
    """
    access = log_access(ctx)

    async def body() -> list[OffsetDeleteRow]:
        async with access.groups(writer=True) as admin:
            return await admin.delete_offsets(group, topic, partitions)

    rows = run_async(body)
    table = Table("topic", "partition", "offset")
    for row in rows:
        tp = row.partition
        table.add_row(tp.topic, str(tp.partition), row.kept_because or "deleted")
    stdout_console().print(table)
    kept = [row for row in rows if row.kept_because is not None]
    if kept:
        reason = kept[0].kept_because
        raise click.ClickException(
            f"kept the offsets of {len(kept)} partition(s) of group {group!r}: {reason}"
        )
    info(f"deleted the offsets of group {group!r} on topic {topic!r}")
