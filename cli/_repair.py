"""``headwater repair``: move damaged bytes of a topic's log aside, keeping what is valid.

Opening a log refuses damage that has valid batches after it (it is no torn write, and
acknowledged records may follow it), so that nothing is deleted behind the user's back.
This command is the way out: it checks every batch, and with ``--yes`` moves each damaged
byte range into a quarantine file in the partition's folder and keeps every valid batch
after it (see ``headwater.store.repair_partition``). Without ``--yes`` it only says what
it would do.
"""

from __future__ import annotations

import click

from headwater.store import repair_topic

from ._datadir import check_exists, data_dir, data_option
from ._output import info


@click.command()
@click.argument("topic")
@click.option("--partition", "-p", type=click.IntRange(min=0), help="Repair only this partition.")
@click.option(
    "--yes",
    "apply",
    is_flag=True,
    help="Move the damaged bytes aside. Without it nothing changes: the command only says "
    "what it would move.",
)
@data_option
@click.pass_context
def repair(
    ctx: click.Context, *, topic: str, partition: int | None, apply: bool, data: object
) -> None:
    """Check every record batch of TOPIC and move damaged bytes aside.

    Each damaged byte range goes into a quarantine file in its partition's folder (nothing
    is deleted); the valid batches after it stay, and readers skip the offsets the damage
    held. Without --yes nothing changes and the exit status is 1 if there is damage. No
    other process may use the data directory meanwhile.
    """
    directory = data_dir(ctx)
    check_exists(directory)
    reports = repair_topic(directory, topic, partition, apply=apply)
    damaged = False
    for report in reports:
        where = f"{topic}/{report.directory.name}"
        if not report.damaged:
            click.echo(f"{where}: no damage found")
            continue
        damaged = True
        verb = "moved" if report.applied else "would move"
        for action in report.actions:
            click.echo(f"{where}: {verb} {action.describe()}")
    if damaged and not apply:
        info("nothing was changed; run again with --yes to move the damaged bytes aside")
        ctx.exit(1)
