"""``headwater run``, ``describe`` and ``trace``: the processing apps' commands.

``run`` and ``describe`` load a Python file the way ``python app.py`` would, except that
``__name__`` is not ``"__main__"`` (so an ``if __name__ == "__main__": app.run()`` block
does not start the app too), and pick the :class:`~headwater.processing.App` it defines:
the one named after the colon (``app.py:pipeline``), else the only App in the file.

``trace`` follows the lineage headers (``headwater.source``) from one record back to
the source event that produced it, printing each record on the way.
"""

from __future__ import annotations

import logging
import runpy
import sys
from datetime import UTC, datetime
from pathlib import Path

import click

from headwater.processing import App, source_of
from headwater.store import Record

from ._access import RecordLookup
from ._app_run import run_app as run_app_here
from ._datadir import data_dir, data_option
from ._metrics_http import metrics_option
from ._output import info
from ._progress import progress_shown
from ._run import run_async
from ._target import bootstrap_of, log_access, log_option

#: Trace stops after this many steps (lineage cannot loop, but headers can lie).
MAX_TRACE_STEPS = 100


def load_app(target: str) -> App:
    """Load ``FILE[:NAME]`` and return the App it defines.

    :raises click.ClickException: if the file cannot be run or defines no such App.
    """
    path_text, _, name = target.partition(":")
    path = Path(path_text)
    if not path.is_file():
        raise click.ClickException(f"no such file: {path}")
    sys.path.insert(0, str(path.resolve().parent))  # its own imports, as `python app.py`
    try:
        namespace = runpy.run_path(str(path), run_name="__headwater__")
    except SystemExit as exc:
        raise click.ClickException(f"{path} exited while loading (status {exc.code})") from None
    finally:
        sys.path.pop(0)
    if name:
        app = namespace.get(name)
        if not isinstance(app, App):
            raise click.ClickException(f"{path} defines no App named {name!r}")
        return app
    apps = {key: value for key, value in namespace.items() if isinstance(value, App)}
    unique = {id(a): a for a in apps.values()}
    if len(unique) != 1:
        found = ", ".join(sorted(apps)) or "none"
        raise click.ClickException(
            f"{path} must define exactly one App (found: {found}); name one as {path}:NAME"
        )
    return next(iter(unique.values()))


def explicit_data_dir(ctx: click.Context) -> Path | None:
    """Return ``--data`` if given on the command line (else the app's own choice stands)."""
    current: click.Context | None = ctx
    while current is not None:
        if current.params.get("data") is not None:
            return data_dir(ctx)
        current = current.parent
    return None


@click.command("run")
@click.argument("target", metavar="APP.PY[:NAME]")
@click.option(
    "--until-caught-up",
    is_flag=True,
    help="Stop once every input partition is processed up to where it ended at the start.",
)
@click.option("--verbose", "-v", is_flag=True, help="Log what the runtime does.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar (--until-caught-up).")
@metrics_option
@data_option
@click.option(
    "--bootstrap",
    default=None,
    metavar="HOST:PORT",
    help="Run the app on the Kafka-protocol cluster at HOST:PORT (headwater broker or "
    "Apache Kafka) instead of a data directory.",
)
@click.option(
    "--stop-at-end-of-input",
    is_flag=True,
    hidden=True,  # how `headwater worker` runs its workers: they stop when it is gone
    help="Also stop gracefully when standard input ends.",
)
@click.pass_context
def run_app(
    ctx: click.Context,
    *,
    target: str,
    until_caught_up: bool,
    verbose: bool,
    quiet: bool,
    metrics: tuple[str, int] | None,
    data: Path | None,
    bootstrap: str | None,
    stop_at_end_of_input: bool,
) -> None:
    """Run the app in APP.PY until SIGINT/SIGTERM (or until caught up).

    The first signal stops it gracefully (finish the batches in hand, write, commit,
    leave the group); a second one stops it at once. It runs on the cluster at
    --bootstrap if given, else on the data directory --data if given, else where the
    app says, else on the cluster at $HEADWATER_BOOTSTRAP, else on the data directory
    $HEADWATER_DATA, else on ./headwater-data. Every process running an app on a
    cluster joins the app's consumer group and takes a share of its partitions. With
    --until-caught-up on a terminal, a progress bar shows the records to go (--quiet: none).
    """
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="headwater: %(message)s",
        stream=sys.stderr,
    )
    cluster = bootstrap_of(ctx)  # refuses --data with --bootstrap
    app = load_app(target)
    directory = None if cluster is not None else explicit_data_dir(ctx)
    stats = run_app_here(
        app,
        until_caught_up=until_caught_up,
        data_dir=directory,
        bootstrap=cluster,
        metrics=metrics,
        show_progress=progress_shown(quiet),
        stop_at_end_of_input=stop_at_end_of_input,
    )
    # Late records are named only where an app has windows that can drop them.
    late = f", {stats.late:,} late" if stats.late else ""
    info(
        f"app {app.name!r}: processed {stats.records_in:,} records, wrote {stats.records_out:,}"
        f" ({stats.skipped:,} skipped, {stats.dead_lettered:,} dead-lettered{late})"
        f" in {stats.elapsed_s:.2f} s"
    )


@click.command("describe")
@click.argument("target", metavar="APP.PY[:NAME]")
@click.option(
    "--app-metrics",
    "metrics_url",
    metavar="URL",
    help="Also show the running app's state stores from its metrics at URL (headwater run "
    "--metrics): each task's restore from its changelog, records restored of the total.",
)
def describe_app(target: str, metrics_url: str | None) -> None:
    """Print the topology of the app in APP.PY: sources, operators, sinks, internal topics."""
    app = load_app(target)
    click.echo(app.describe(), nl=False)
    if metrics_url is not None:
        click.echo(describe_restores(app.name, scrape_restores(metrics_url)), nl=False)


def scrape_restores(url: str) -> dict[str, dict[tuple[str, str], list[float]]]:
    """Return, per app, each (task, store)'s restore progress from the metrics at ``url``:
    [records restored, total].

    :raises click.ClickException: if the metrics cannot be read.
    """
    # Imported here: only this option needs an HTTP client and the metrics parser.
    import httpx  # noqa: PLC0415
    from prometheus_client.parser import text_string_to_metric_families  # noqa: PLC0415

    fields = {
        "headwater_app_store_restored_records": 0,
        "headwater_app_store_restore_total_records": 1,
    }
    try:
        response = httpx.get(url, timeout=5)
        response.raise_for_status()
        families = list(text_string_to_metric_families(response.text))
    except (httpx.HTTPError, ValueError) as exc:
        raise click.ClickException(
            f"cannot read the app's metrics at {url}: {str(exc) or type(exc).__name__}"
        ) from None
    found: dict[str, dict[tuple[str, str], list[float]]] = {}
    for family in families:
        for sample in family.samples:
            if sample.name in fields:
                labels = sample.labels
                where = (labels["task"], labels["store"])
                pair = found.setdefault(labels["app"], {}).setdefault(where, [0.0, 0.0])
                pair[fields[sample.name]] = sample.value
    return found


def describe_restores(name: str, found: dict[str, dict[tuple[str, str], list[float]]]) -> str:
    """Return the running app's stores and their restores, as lines for ``describe``."""
    mine = found.get(name)
    if not mine:
        return f"running: no task of app {name!r} with a state store in these metrics\n"
    lines = ["running: state stores, per task (restored from the changelog / to read)"]
    for (task, store), (restored, total) in sorted(mine.items()):
        state = "restored" if restored >= total else "restoring"
        lines.append(f"  task {task} store {store!r}: {state} {restored:,.0f} / {total:,.0f}")
    return "\n".join(lines) + "\n"


@click.command("trace", context_settings={"ignore_unknown_options": True})
@click.argument("topic")
@click.argument("partition", type=click.IntRange(min=0))
@click.argument("offset", type=click.IntRange(min=0))
@data_option
@log_option
@click.pass_context
def trace(
    ctx: click.Context,
    *,
    topic: str,
    partition: int,
    offset: int,
    data: Path | None,
    bootstrap: str | None,
) -> None:
    """Print the record at TOPIC PARTITION OFFSET and, following its lineage headers, every
    record it was derived from, back to the source event.

    An argument may start with '-', with or without '--' before it: a topic named '-in'
    is traced, an offset of -1 is refused as out of range.
    """
    access = log_access(ctx)

    async def body() -> list[str]:
        async with access.lookup() as lookup:
            return await trace_lines(lookup, topic, partition, offset)

    for line in run_async(body):
        click.echo(line)


async def lineage(
    lookup: RecordLookup, topic: str, partition: int, offset: int
) -> list[tuple[tuple[str, int, int], Record | str]]:
    """Return the record at ``topic/partition/offset`` and each record its lineage headers
    name, back to the source event: each with its position, or instead of the record a
    sentence saying why there is none. At most :data:`MAX_TRACE_STEPS` steps."""
    steps: list[tuple[tuple[str, int, int], Record | str]] = []
    position = (topic, partition, offset)
    for _ in range(MAX_TRACE_STEPS):
        record = await lookup.record(*position)
        steps.append((position, record))
        if isinstance(record, str):
            return steps
        source = source_of(record.headers)
        if source is None:
            return steps
        position = (source.topic, source.partition, source.offset)
    return steps


async def trace_lines(lookup: RecordLookup, topic: str, partition: int, offset: int) -> list[str]:
    """Return the lines ``headwater trace`` prints for the record at ``topic/partition/offset``.

    :raises click.ClickException: if the first record does not exist.
    """
    lines: list[str] = []
    steps = await lineage(lookup, topic, partition, offset)
    for step, (position, record) in enumerate(steps):
        where = f"{position[0]}/{position[1]}/{position[2]}"
        if isinstance(record, str):
            if step == 0:
                raise click.ClickException(record)
            lines.append(f"  <- {where}: {record}")
            return lines
        lines.append(("" if step == 0 else "  <- ") + _describe(where, record))
    last = steps[-1][1]
    if isinstance(last, Record) and source_of(last.headers) is None:
        lines.append("     (a source event: it carries no lineage header)")
    else:
        lines.append(f"  ... stopped after {MAX_TRACE_STEPS} steps")
    return lines


def _describe(where: str, record: Record) -> str:
    stamp = datetime.fromtimestamp(record.timestamp / 1000, UTC).isoformat(timespec="milliseconds")
    parts = [f"{where}  {stamp.replace('+00:00', 'Z')}"]
    if record.key is not None:
        parts.append(f"key={_text(record.key)}")
    lines = ["  ".join(parts), f"     value: {_text(record.value)}"]
    for name, value in record.headers:
        if name.startswith("headwater.error."):
            lines.append(f"     {name}: {_text(value)}")
    return "\n".join(lines)


def _text(data: bytes | None) -> str:
    if data is None:
        return "(none)"
    try:
        text = data.decode()
    except UnicodeDecodeError:
        return repr(data)
    return text if text.isprintable() else repr(text)
