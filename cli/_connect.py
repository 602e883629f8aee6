"""``headwater connect``: run a file or HTTP connector on a data directory or a broker.

Each subcommand builds one connector of :mod:`headwater.connectors` over the log -- the
data directory's store (and, for sinks, its consumer groups), or with ``--bootstrap
HOST:PORT`` (also ``$HEADWATER_BOOTSTRAP``) the topics and groups of a Kafka-protocol
broker: ``headwater broker`` or Kafka -- says on stderr what it runs, and runs until SIGINT or
SIGTERM, or with ``--until-caught-up`` until it has caught up with its input. The first
signal stops it gracefully -- a source saves the position of the chunk in hand, a sink
finishes its open files or batch and commits, the endpoint answers the requests in
flight -- and the command exits 0 with a one-line summary; a second signal stops it at
once (the uncommitted tail is delivered again next time). A connector's own failures
(a destination down, a full disk) are retried and logged on stderr, never fatal; bad
settings and a missing topic are one line ``headwater: error: ...`` and exit status 1.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import anyio
import click
from anyio.abc import TaskStatus

from headwater.broker import parse_address
from headwater.connectors import (
    BackfillProgress,
    ConnectorSite,
    FileSink,
    FileSinkConfig,
    FileSource,
    FileSourceConfig,
    HttpIngest,
    IngestConfig,
    IngestLimits,
    SinkRunner,
    WebhookConfig,
    WebhookSink,
    cluster_site,
    store_site,
)
from headwater.groups import GroupCoordinator

from ._datadir import data_dir, data_option, locked_store
from ._output import info, stderr_console
from ._progress import InputProgress
from ._run import run_async
from ._target import bootstrap_of, log_option

F = TypeVar("F", bound=Callable[..., Any])

SECRET_ENV_VAR = "HEADWATER_WEBHOOK_SECRET"
TOKENS_ENV_VAR = "HEADWATER_INGEST_TOKENS"

until_caught_up_option = click.option(
    "--until-caught-up",
    is_flag=True,
    help="Stop once caught up with the input (instead of running until stopped).",
)


def _default(config: type, name: str) -> Any:
    """Return the default of field ``name`` of the config class ``config``."""
    return next(f.default for f in dataclasses.fields(config) if f.name == name)


def _count_option(flag: str, config: type, name: str, help: str) -> Callable[[F], F]:
    """An option of a whole number from 1, by default field ``name`` of ``config``."""
    return click.option(
        flag, type=click.IntRange(min=1), default=_default(config, name), show_default=True,
        help=help,
    )  # fmt: skip


def _seconds_option(flag: str, config: type, name: str, help: str) -> Callable[[F], F]:
    """An option of a time above 0 s, by default field ``name`` of ``config``."""
    return click.option(
        flag, type=click.FloatRange(min=0, min_open=True), default=_default(config, name),
        show_default=True, metavar="SECONDS", help=help,
    )  # fmt: skip


@click.group()
def connect() -> None:
    """Run a connector: bring records in from files or HTTP, push them out to files or a URL."""


# -- running until a signal --------------------------------------------------------------


@dataclass(slots=True)
class _Stopper:
    """What the first signal stops gracefully; the second cancels ``scope``."""

    stop: Callable[[], None] | None = None
    scope: anyio.CancelScope = field(default_factory=anyio.CancelScope)
    requested: bool = False


def _run(body: Callable[[_Stopper], Awaitable[None]]) -> None:
    """Run ``body`` on trio with SIGINT/SIGTERM handled as the module says."""
    _log_to_stderr()

    async def main() -> None:
        stopper = _Stopper()
        async with anyio.create_task_group() as tg:
            await tg.start(_watch_signals, stopper)
            with stopper.scope:
                await body(stopper)
            tg.cancel_scope.cancel()

    # Outside the watcher (before it starts, after the store is closed) signals are
    # ignored rather than killing the process halfway.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    run_async(main)


async def _watch_signals(
    stopper: _Stopper, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED
) -> None:
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        task_status.started()
        async for signum in signals:
            name = signal.Signals(signum).name
            if not stopper.requested and stopper.stop is not None:
                info(f"{name} received: stopping (a second signal stops at once)")
                stopper.requested = True
                stopper.stop()
            else:
                info(f"{name} received: stopping now")
                stopper.scope.cancel()


def _log_to_stderr() -> None:
    logging.basicConfig(level=logging.WARNING, format="headwater: %(message)s", stream=sys.stderr)


# -- http-ingest ----------------------------------------------------------------------------


def _listen(ctx: click.Context, param: click.Parameter, value: str) -> tuple[str, int]:
    try:
        return parse_address(value, 8080, allow_any_port=True)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


@connect.command("http-ingest")
@data_option
@log_option
@click.option(
    "--listen",
    default="127.0.0.1:8080",
    show_default=True,
    metavar="HOST:PORT",
    callback=_listen,
    help="Address to listen on (port 0: any free port).",
)
@click.option(
    "--token",
    "tokens",
    multiple=True,
    metavar="TOKEN",
    help=f"A bearer token requests must carry (repeatable; also ${TOKENS_ENV_VAR}, "
    "comma-separated). None: no authentication.",
)
@click.option("--auto-create", is_flag=True, help="Create a topic on its first request.")
@click.option("--key-field", metavar="FIELD", help="Key object records by this field.")
@_count_option("--max-body-bytes", IngestLimits, "max_body_bytes", "Largest request body.")
@_seconds_option(
    "--receive-deadline",
    IngestLimits,
    "receive_deadline_s",
    "Longest time to receive a whole request (the head gets min(5 s, half) of it).",
)
@_count_option("--max-depth", IngestLimits, "max_depth", "Deepest nesting of a record.")
@_count_option(
    "--max-inflight", IngestLimits, "max_inflight", "Requests appending at once before 429."
)
@click.pass_context
def http_ingest(
    ctx: click.Context,
    *,
    data: Path | None,
    bootstrap: str | None,
    listen: tuple[str, int],
    tokens: tuple[str, ...],
    auto_create: bool,
    key_field: str | None,
    max_body_bytes: int,
    receive_deadline: float,
    max_depth: int,
    max_inflight: int,
) -> None:
    """Serve POST /topics/TOPIC/records: JSON or NDJSON bodies appended to topics.

    Each request is answered once its records are durable, with their partitions and
    offsets; GET /openapi.json describes the endpoint.
    """
    env_tokens = [t.strip() for t in _env(TOKENS_ENV_VAR).split(",") if t.strip()]
    config = IngestConfig(
        limits=IngestLimits(
            max_body_bytes=max_body_bytes,
            receive_deadline_s=receive_deadline,
            max_depth=max_depth,
            max_inflight=max_inflight,
        ),
        tokens=(*tokens, *env_tokens),
        auto_create=auto_create,
        key_field=key_field,
    )
    host, port = listen

    async def body(stopper: _Stopper) -> None:
        async with _open_log(ctx, create=True, groups=False) as where:
            ingest = HttpIngest(where.log, config)
            stopper.stop = ingest.stop
            async with anyio.create_task_group() as tg:
                try:
                    bound = await tg.start(ingest.serve, host, port)
                except OSError as exc:
                    raise click.ClickException(
                        f"cannot listen on {host}:{port}: {exc.strerror or exc}"
                    ) from None
                auth = f", {len(config.tokens)} token(s)" if config.tokens else ", no tokens"
                info(f"http-ingest: listening on http://{_host(bound[0])}:{bound[1]}{auth}")
            stats = ingest.statistics()
            refused = sum(stats.refused.values())
            info(f"http-ingest: {stats.records:,} records in {stats.requests:,} requests "
                 f"({refused:,} refused)")  # fmt: skip

    _run(body)


async def _check_topic(site: ConnectorSite, topic: str) -> None:
    if not await site.log.has_topic(topic):
        raise click.ClickException(
            f"topic {topic!r} does not exist in {site.description} (see 'headwater topics list')"
        )


@contextlib.asynccontextmanager
async def _open_log(
    ctx: click.Context, *, create: bool, groups: bool
) -> AsyncIterator[ConnectorSite]:
    """Open the log the command works on: the broker of ``--bootstrap``, else the data
    directory (created if missing with ``create``); with ``groups``, its consumer groups."""
    bootstrap = bootstrap_of(ctx)
    if bootstrap is not None:
        async with cluster_site(bootstrap) as site:
            yield site
        return
    directory = data_dir(ctx)
    async with locked_store(directory, writer=True, create=create) as store:
        where = f"data directory {directory}"
        if not groups:
            async with store_site(store, description=where) as site:
                yield site
            return
        async with (
            GroupCoordinator(store) as coordinator,
            store_site(store, coordinator, description=where) as site,
        ):
            yield site


def _host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _env(name: str) -> str:
    return os.environ.get(name, "")


# -- webhook ---------------------------------------------------------------------------------


def _header(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]) -> Any:
    out = []
    for value in values:
        name, sep, text = value.partition(":")
        if not sep or not name.strip():
            raise click.BadParameter(f"{value!r}: expected NAME:VALUE")
        out.append((name.strip(), text.strip()))
    return tuple(out)


@connect.command("webhook")
@data_option
@log_option
@click.argument("topic")
@click.option("--url", required=True, help="Where batches are POSTed (http:// or https://).")
@click.option(
    "--secret",
    envvar=SECRET_ENV_VAR,
    help=f"Sign each body with HMAC-SHA256 (also ${SECRET_ENV_VAR}).",
)
@click.option("--group", metavar="GROUP", help="Consumer group (default: webhook-TOPIC).")
@_count_option("--batch-records", WebhookConfig, "max_batch_records", "Most records per request.")
@_seconds_option("--timeout", WebhookConfig, "timeout_s", "Longest time one request may take.")
@click.option(
    "--header",
    "headers",
    multiple=True,
    callback=_header,
    metavar="NAME:VALUE",
    help="A header sent with every request (repeatable).",
)
@click.option("--dead-letter-topic", metavar="TOPIC", help="Where refused records go.")
@until_caught_up_option
@click.pass_context
def webhook(
    ctx: click.Context,
    *,
    data: Path | None,
    bootstrap: str | None,
    topic: str,
    url: str,
    secret: str | None,
    group: str | None,
    batch_records: int,
    timeout: float,
    headers: tuple[tuple[str, str], ...],
    dead_letter_topic: str | None,
    until_caught_up: bool,
) -> None:
    """POST the records of TOPIC in batches (JSON arrays) to a URL.

    Retries connection errors, timeouts, 408, 429 and 5xx until they succeed; any other
    answer sends the batch to the dead-letter topic. Offsets are committed only after a
    2xx or a dead-letter write.
    """
    config = WebhookConfig(
        topic=topic,
        url=url,
        secret=secret or None,
        max_batch_records=batch_records,
        timeout_s=timeout,
        headers=headers,
        dead_letter_topic=dead_letter_topic,
    )

    async def body(stopper: _Stopper) -> None:
        async with (
            _open_log(ctx, create=False, groups=True) as where,
            WebhookSink(where.log, config) as sink,
        ):
            await _check_topic(where, topic)
            assert where.groups is not None
            runner = SinkRunner(where.groups, topic, group or f"webhook-{topic}", sink)
            stopper.stop = runner.stop
            info(f"webhook: {topic} to {url} (group {runner.group_id})")
            await runner.run(until_caught_up=until_caught_up)
            stats = sink.statistics()
            info(
                f"webhook: {stats.delivered:,} records delivered in {stats.requests:,} requests"
                f" ({stats.retries:,} retried, {stats.dead_lettered:,} dead-lettered)"
            )

    _run(body)


# -- file-source -----------------------------------------------------------------------------


class _ProgressBar(BackfillProgress):
    """A backfill's progress as a bar on stderr (:class:`InputProgress`): bytes, lines
    and lines/s."""

    def __init__(self) -> None:
        self._bar: InputProgress | None = None

    def start(self, total_bytes: int) -> None:
        self._bar = InputProgress(total_bytes, "backfill", unit="lines", show_rate=True)
        self._bar.__enter__()

    def advance(self, lines: int, size: int) -> None:
        assert self._bar is not None
        self._bar.read(size)
        self._bar.stored(lines)

    def finish(self) -> None:
        if self._bar is not None:
            self._bar.__exit__(None, None, None)


@connect.command("file-source")
@data_option
@log_option
@click.argument("path")
@click.option("--topic", "-t", required=True, help="The topic lines go to.")
@click.option(
    "--format",
    "line_format",
    type=click.Choice(["jsonl", "csv", "text"]),
    default="jsonl",
    show_default=True,
    help="JSON lines, CSV with a header row, or plain text lines.",
)
@click.option(
    "--from-beginning",
    is_flag=True,
    help="At the first start, read what the files already hold (a backfill, with a "
    "progress bar on a terminal).",
)
@click.option("--name", help="The name the position is kept under (default: from topic and path).")
@click.option("--dead-letter-topic", metavar="TOPIC", help="Where malformed lines go.")
@_seconds_option(
    "--poll-interval",
    FileSourceConfig,
    "poll_interval_s",
    "How often files are checked for new lines.",
)
@until_caught_up_option
@click.pass_context
def file_source(
    ctx: click.Context,
    *,
    data: Path | None,
    bootstrap: str | None,
    path: str,
    topic: str,
    line_format: str,
    from_beginning: bool,
    name: str | None,
    dead_letter_topic: str | None,
    poll_interval: float,
    until_caught_up: bool,
) -> None:
    """Tail PATH (a file, or a quoted glob such as 'logs/*.jsonl') into a topic.

    Follows rotation and truncation; the position is kept in the log (the data directory,
    or the broker), so a restart goes on where it stopped.
    """
    config = FileSourceConfig(
        path=path,
        topic=topic,
        format=line_format,  # type: ignore[arg-type]
        name=name,
        from_beginning=from_beginning,
        dead_letter_topic=dead_letter_topic,
        poll_interval_s=poll_interval,
    )
    progress = _ProgressBar() if from_beginning and stderr_console().is_terminal else None

    async def body(stopper: _Stopper) -> None:
        async with _open_log(ctx, create=True, groups=False) as where:
            source = FileSource(where.log, where.positions, config, progress=progress)
            stopper.stop = source.stop
            info(f"file-source: {path} to {topic} ({config.format.value})")
            await source.run(until_caught_up=until_caught_up)
            stats = source.statistics()
            info(f"file-source: {stats.lines:,} lines stored, {stats.malformed:,} malformed"
                 f" (to {config.dead_letters}), {stats.bytes:,} bytes read")  # fmt: skip

    _run(body)


# -- file-sink -------------------------------------------------------------------------------


def _columns(ctx: click.Context, param: click.Parameter, value: str | None) -> Any:
    if value is None:
        return None
    columns = tuple(c.strip() for c in value.split(","))
    if not all(columns):
        raise click.BadParameter(f"{value!r}: expected comma-separated column names")
    return columns


@connect.command("file-sink")
@data_option
@log_option
@click.argument("topic")
@click.option(
    "--dir",
    "directory",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Where finished files go.",
)
@click.option(
    "--format",
    "file_format",
    type=click.Choice(["jsonl", "csv"]),
    default="jsonl",
    show_default=True,
    help="JSON lines, or CSV with a header row.",
)
@click.option(
    "--columns",
    callback=_columns,
    metavar="A,B,...",
    help="CSV columns (default: the keys of each file's first object).",
)
@_count_option(
    "--roll-bytes", FileSinkConfig, "roll_bytes", "Finish a file once it holds this many bytes."
)
@click.option(
    "--roll-seconds",
    type=click.FloatRange(min=0, min_open=True),
    default=_default(FileSinkConfig, "roll_s"),
    show_default=True,
    help="Finish a file once it has been open this long.",
)
@click.option("--group", metavar="GROUP", help="Consumer group (default: file-sink-TOPIC).")
@click.option("--dead-letter-topic", metavar="TOPIC", help="Where records a file cannot hold go.")
@until_caught_up_option
@click.pass_context
def file_sink(
    ctx: click.Context,
    *,
    data: Path | None,
    bootstrap: str | None,
    topic: str,
    directory: Path,
    file_format: str,
    columns: tuple[str, ...] | None,
    roll_bytes: int,
    roll_seconds: float,
    group: str | None,
    dead_letter_topic: str | None,
    until_caught_up: bool,
) -> None:
    """Write the records of TOPIC into files in a directory, rolled by size and time.

    A file appears under its final name (TOPIC-PARTITION-FIRST-LAST.jsonl) only once it
    is complete and durable; its offsets are committed after that.
    """
    config = FileSinkConfig(
        topic=topic,
        directory=str(directory),
        format=file_format,  # type: ignore[arg-type]
        columns=columns,
        roll_bytes=roll_bytes,
        roll_s=roll_seconds,
        dead_letter_topic=dead_letter_topic,
    )

    async def body(stopper: _Stopper) -> None:
        async with _open_log(ctx, create=False, groups=True) as where:
            await _check_topic(where, topic)
            assert where.groups is not None
            sink = FileSink(where.log, config)
            runner = SinkRunner(where.groups, topic, group or f"file-sink-{topic}", sink)
            stopper.stop = runner.stop
            info(f"file-sink: {topic} to {directory} (group {runner.group_id})")
            await runner.run(until_caught_up=until_caught_up)
            stats = runner.statistics()
            info(f"file-sink: {stats.records:,} records, {sink.files_written:,} files finished"
                 f" ({sink.dead_letters.written:,} dead-lettered)")  # fmt: skip

    _run(body)
