"""``headwater transactions``: list and describe transactional ids and their transactions.

On a data directory nobody serves, the state is read from ``__transaction_state`` (read
only: no transaction is aborted or finished by looking); on one an app or a broker
serves, and on a broker (``--bootstrap``, headwater or Kafka), it is asked over the Kafka
protocol (ListTransactions, DescribeTransactions), so the answer is the live
coordinator's.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import click
from rich.table import Table

from headwater.groups import TxnMetadata, read_transaction_states

from ._datadir import claimed, data_dir, data_option
from ._output import info, stdout_console
from ._owner import Served
from ._remote import admin_client, bootstrap_option
from ._run import run_async
from ._target import bootstrap_of

if TYPE_CHECKING:
    from headwater.broker import RemoteTransaction


@click.group()
@data_option
def transactions(data: object) -> None:
    """List and describe transactional ids and their transactions.

    Each command works on a data directory (--data), or on a running broker through the
    Kafka protocol (--bootstrap HOST:PORT). A data directory that an app or a broker is
    using is reached through the address it serves it at.
    """


@transactions.command("list")
@data_option
@bootstrap_option
@click.pass_context
def list_(ctx: click.Context, data: object, bootstrap: str | None) -> None:
    """List the transactional ids with their producer id and state."""
    found, where = _read(ctx)
    if not found:
        info(f"no transactional ids {where}")
        return
    table = Table("transactional_id", "producer_id", "state")
    for t in found:
        table.add_row(t.transactional_id, str(t.producer_id), t.state)
    stdout_console().print(table)


@transactions.command()
@click.argument("transactional_id")
@data_option
@bootstrap_option
@click.pass_context
def describe(
    ctx: click.Context, transactional_id: str, data: object, bootstrap: str | None
) -> None:
    """Show TRANSACTIONAL_ID's producer, state, timeout, start and partitions."""
    if not transactional_id:
        raise click.BadParameter("must not be empty", param_hint="TRANSACTIONAL_ID")
    found, where = _read(ctx, transactional_id)
    if not found:
        raise click.ClickException(f"no transactional id {transactional_id!r} {where}")
    (t,) = found
    table = Table("field", "value")
    table.add_row("transactional_id", t.transactional_id)
    table.add_row("state", t.state)
    table.add_row("producer_id", str(t.producer_id))
    table.add_row("producer_epoch", str(t.producer_epoch))
    table.add_row("timeout_ms", str(t.timeout_ms))
    table.add_row("start_time", _time(t.start_time_ms))
    partitions = ", ".join(f"{topic}-{index}" for topic, index in t.partitions)
    table.add_row("partitions", partitions or "-")
    stdout_console().print(table)


def _read(
    ctx: click.Context, transactional_id: str | None = None
) -> tuple[Sequence[RemoteTransaction], str]:
    """Every transactional id (or the one named, if known), and where they were read."""
    bootstrap = bootstrap_of(ctx)
    if bootstrap is not None:
        return _remote(bootstrap, transactional_id), f"on the broker at {bootstrap}"
    directory = data_dir(ctx)
    where = f"in {directory}"
    if not directory.is_dir():
        return [], f"(no data directory at {directory})"

    async def body() -> dict[str, TxnMetadata] | Served:
        async with claimed(directory, writer=False) as claim:
            if isinstance(claim, Served):
                return claim
            return await read_transaction_states(claim, int(time.time() * 1000))

    states = run_async(body)
    if isinstance(states, Served):
        return _remote(states.bootstrap, transactional_id), f"in {states.description}"
    wanted = sorted(states) if transactional_id is None else [transactional_id]
    return [_row(states[t]) for t in wanted if t in states], where


def _remote(bootstrap: str, transactional_id: str | None) -> list[RemoteTransaction]:
    from headwater.broker import BrokerResponseError, KafkaErrorCode  # noqa: PLC0415

    with admin_client(bootstrap) as client:
        if transactional_id is None:
            return client.list_transactions()
        try:
            return [client.describe_transaction(transactional_id)]
        except BrokerResponseError as exc:
            if exc.code == KafkaErrorCode.TRANSACTIONAL_ID_NOT_FOUND:
                return []
            raise


def _row(meta: TxnMetadata) -> RemoteTransaction:
    # Imported here, as admin_client does: --help and an empty directory go without it.
    from headwater.broker import RemoteTransaction  # noqa: PLC0415

    return RemoteTransaction(
        meta.transactional_id,
        meta.producer_id,
        meta.state.value,
        meta.producer_epoch,
        meta.timeout_ms,
        meta.started_ms,
        tuple(sorted(meta.partitions)),
    )


def _time(epoch_ms: int) -> str:
    if epoch_ms < 0:
        return "-"
    at = datetime.fromtimestamp(epoch_ms / 1000, UTC)
    return f"{at.isoformat(timespec='milliseconds')} ({epoch_ms})"
