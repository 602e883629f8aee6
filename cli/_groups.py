"""``headwater groups``: list, describe, reset the offsets of, and delete consumer groups.

A group's members live in the process that runs its consumers, and one process uses a
data directory at a time; so the groups these commands see have no live members (they
are Empty), and what they show and change are the committed offsets in
``__consumer_offsets``. The coordinator still refuses to reset or delete a group with
active members, which is what a broker hosting live groups will answer.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

import click
from rich.table import Table

from headwater.groups import (
    GroupCoordinator,
    GroupDescription,
    OffsetAndMetadata,
    TopicPartition,
    decode_assignment,
)
from headwater.store import Store

from ._datadir import data_dir, data_option, locked_store
from ._output import info, stdout_console
from ._run import run_async

_NONE = "-"


@click.group()
@data_option
def groups(data: object) -> None:
    """List, describe, reset and delete consumer groups."""


@contextlib.asynccontextmanager
async def open_coordinator(
    directory: Path, *, writer: bool
) -> AsyncIterator[tuple[Store, GroupCoordinator]]:
    """Open the store in ``directory`` and the group coordinator over it."""
    async with (
        locked_store(directory, writer=writer) as store,
        GroupCoordinator(store) as coordinator,
    ):
        yield store, coordinator


@dataclass(frozen=True, slots=True)
class GroupRow:
    """One group of ``groups list``."""

    group_id: str
    state: str
    members: int
    topics: tuple[str, ...]
    partitions: int


@groups.command("list")
@data_option
@click.pass_context
def list_(ctx: click.Context, data: object) -> None:
    """List the consumer groups with their state and committed partitions."""
    directory = data_dir(ctx)
    if not directory.is_dir():
        info(f"no consumer groups (no data directory at {directory})")
        return

    async def body() -> list[GroupRow]:
        async with open_coordinator(directory, writer=False) as (_, coordinator):
            rows = []
            for overview in coordinator.list_groups():
                committed = coordinator.committed(overview.group_id)
                rows.append(
                    GroupRow(
                        overview.group_id,
                        overview.state,
                        len(coordinator.describe_group(overview.group_id).members),
                        tuple(sorted({tp.topic for tp in committed})),
                        len(committed),
                    )
                )
            return rows

    rows = run_async(body)
    if not rows:
        info(f"no consumer groups in {directory}")
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


@dataclass(frozen=True, slots=True)
class PartitionRow:
    """One partition of ``groups describe``."""

    partition: TopicPartition
    committed: OffsetAndMetadata | None
    log_end_offset: int | None
    member: tuple[str, str] | None  # (member id, client id)

    @property
    def lag(self) -> int | None:
        if self.committed is None or self.log_end_offset is None:
            return None
        return max(self.log_end_offset - self.committed.offset, 0)


def describe_rows(
    store: Store, description: GroupDescription, committed: dict[TopicPartition, OffsetAndMetadata]
) -> list[PartitionRow]:
    """Every partition of every topic the group has committed to or is assigned."""
    owners: dict[TopicPartition, tuple[str, str]] = {}
    for member in description.members:
        if member.assignment:
            for tp in decode_assignment(member.assignment).partitions:
                owners[tp] = (member.member_id, member.client_id)
    topics = {tp.topic for tp in committed} | {tp.topic for tp in owners}
    partitions = set(committed) | set(owners)
    ends: dict[TopicPartition, int] = {}
    for topic in topics:
        if store.has_topic(topic):
            for partition in store.partitions(topic):
                tp = TopicPartition(topic, partition.index)
                ends[tp] = partition.high_watermark
                partitions.add(tp)
    return [
        PartitionRow(tp, committed.get(tp), ends.get(tp), owners.get(tp))
        for tp in sorted(partitions)
    ]


@groups.command()
@click.argument("group")
@data_option
@click.pass_context
def describe(ctx: click.Context, group: str, data: object) -> None:
    """Show GROUP's members and, per partition, its committed offset, log end and lag."""
    directory = data_dir(ctx)

    async def body() -> tuple[GroupDescription, list[PartitionRow]]:
        async with open_coordinator(directory, writer=False) as (store, coordinator):
            description = coordinator.describe_group(group)
            rows = describe_rows(store, description, coordinator.committed(group))
            return description, rows

    description, rows = run_async(body)
    members = len(description.members)
    title = f"group {group}: {description.state}, {members} member(s)"
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
    for row in rows:
        table.add_row(
            row.partition.topic,
            str(row.partition.partition),
            _text(None if row.committed is None else row.committed.offset),
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
@data_option
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
    data: object,
) -> None:
    """Reset GROUP's committed offsets for TOPIC; a dry run unless --execute is given.

    Prints the plan: each partition's current and new offset. Refused while the group
    has active members.
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
    directory = data_dir(ctx)

    async def body() -> tuple[dict[TopicPartition, int | None], dict[TopicPartition, int]]:
        async with open_coordinator(directory, writer=execute) as (_, coordinator):
            current = {tp: o.offset for tp, o in coordinator.committed(group).items()}
            if execute:
                plan = await coordinator.reset_offsets(group, topic, to)
            else:
                plan = coordinator.plan_offset_reset(group, topic, to)
            return {tp: current.get(tp) for tp in plan}, plan

    current, plan = run_async(body)
    table = Table("topic", "partition", "current offset", "new offset")
    for tp, offset in plan.items():
        table.add_row(tp.topic, str(tp.partition), _text(current[tp]), str(offset))
    stdout_console().print(table)
    if execute:
        info(f"reset the offsets of group {group!r} on topic {topic!r}")
    else:
        info("dry run: nothing changed (add --execute to apply this plan)")


@groups.command()
@click.argument("group")
@data_option
@click.pass_context
def delete(ctx: click.Context, group: str, data: object) -> None:
    """Delete GROUP and its committed offsets (refused while it has active members)."""
    directory = data_dir(ctx)

    async def body() -> None:
        async with open_coordinator(directory, writer=True) as (_, coordinator):
            await coordinator.delete_group(group)

    run_async(body)
    info(f"deleted group {group!r}")
