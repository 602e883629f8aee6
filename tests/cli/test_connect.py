"""``headwater connect``: the four connectors through the real command, end to end, on a
data directory and with ``--bootstrap`` against a ``headwater broker``; a backfill's
progress bar; bad input is one line and a non-zero exit; SIGTERM stops a connector
gracefully. Most runs are in this process (``run([...])``); the signal tests start the
command as a process of its own."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import anyio
import httpx
import pytest
from broker.running import BrokerProcess

from headwater.cli._main import run
from headwater.store import NewRecord, open_store

from .conftest import KAFKA_ENV_VAR
from .helpers import HEADWATER, assert_error, run_headwater

#: How long a reply may take before the test counts the endpoint as hung (a loaded
#: machine only makes the wait longer; the figure never decides a pass).
HANG_S = 120

Cli = Callable[..., subprocess.CompletedProcess[str]]


def lines(start: int, stop: int) -> str:
    return "".join(json.dumps({"i": i}) + "\n" for i in range(start, stop))


def final_values(directory: Path) -> list[int]:
    out = []
    for path in sorted(directory.glob("*.jsonl")):
        out.extend(json.loads(line)["i"] for line in path.read_text().splitlines())
    return out


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]) -> Iterator[Cli]:
    """``cli(*args)`` runs ``headwater ARGS...`` in this process and captures its output.

    A connector's run handles SIGINT and SIGTERM itself: the test's handlers come back after.
    """
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}

    def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
        status = run(list(args))
        out, err = capsys.readouterr()
        return subprocess.CompletedProcess(list(args), status, out, err)

    try:
        yield run_cli
    finally:
        for signum, handler in handlers.items():
            signal.signal(signum, handler)


@pytest.fixture(params=["data", "broker", "kafka"])
def where(request: pytest.FixtureRequest, data: Path) -> list[str]:
    """The options that name the log: a data directory, ``headwater broker``, or -- when
    $HEADWATER_TEST_KAFKA names one -- an Apache Kafka broker."""
    if request.param == "data":
        return ["--data", str(data)]
    if request.param == "kafka":
        bootstrap = os.environ.get(KAFKA_ENV_VAR)
        if not bootstrap:
            pytest.skip(f"no Apache Kafka broker named in ${KAFKA_ENV_VAR} (HOST:PORT)")
        return ["--bootstrap", bootstrap]
    broker: BrokerProcess = request.getfixturevalue("broker")
    return ["--bootstrap", broker.bootstrap]


def test_a_file_goes_in_through_file_source_and_out_through_file_sink(
    cli: Cli, where: list[str], tmp_path: Path
) -> None:
    topic = f"t-{uuid.uuid4().hex[:8]}"  # the broker is shared
    source = tmp_path / "in.jsonl"
    source.write_text(lines(0, 50) + "not json\n")
    file_source = ["connect", "file-source", str(source), "-t", topic, *where]
    result = cli(*file_source, "--from-beginning", "--until-caught-up")
    assert result.returncode == 0, result.stderr
    assert f"50 lines stored, 1 malformed (to {topic}-dlq)" in result.stderr
    out = tmp_path / "out"
    file_sink = ["connect", "file-sink", topic, "--dir", str(out), *where]
    result = cli(*file_sink, "--until-caught-up")
    assert result.returncode == 0, result.stderr
    assert final_values(out) == list(range(50))

    # A second run of each goes on from where the first stopped.
    with source.open("a") as f:
        f.write(lines(50, 60))
    assert cli(*file_source, "--until-caught-up").returncode == 0
    assert cli(*file_sink, "--until-caught-up").returncode == 0
    assert final_values(out) == list(range(60))
    dead = cli("consume", f"{topic}-dlq", "--show-meta", *where)
    assert json.loads(dead.stdout)["value"] == "not json"


def test_csv_out(cli: Cli, data: Path, tmp_path: Path) -> None:
    cli("--data", str(data), "topics", "create", "t")

    async def produce() -> None:
        async with open_store(data) as store:
            await store.append("t", [NewRecord(b'{"a":1,"b":"x"}'), NewRecord(b'{"a":2,"b":"y"}')])

    anyio.run(produce, backend="trio")
    out = tmp_path / "out"
    result = cli("--data", str(data), "connect", "file-sink", "t", "--dir", str(out),
                 "--format", "csv", "--columns", "b,a", "--until-caught-up")  # fmt: skip
    assert result.returncode == 0, result.stderr
    [path] = out.glob("*.csv")
    assert path.read_text() == "b,a\nx,1\ny,2\n"


def test_a_backfill_on_a_terminal_shows_a_progress_bar(
    cli: Cli, data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TTY_COMPATIBLE", "1")  # stderr is a terminal, as rich sees it
    source = tmp_path / "in.jsonl"
    source.write_text(lines(0, 1000))
    result = cli("--data", str(data), "connect", "file-source", str(source), "-t", "t",
                 "--from-beginning", "--until-caught-up")  # fmt: skip
    assert result.returncode == 0, result.stderr
    bar = re.sub(r"\x1b\[[0-9;?]*[a-zA-Z]", "", result.stderr)  # colours and cursor moves
    assert "backfill" in bar
    assert "1,000 lines" in bar
    assert re.search(r"[\d,]+ lines/s", bar), bar
    assert "10.9/10.9 kB" in bar  # bytes read, of the total


@pytest.mark.parametrize(
    ("args", "fragments", "status"),
    [
        (["connect", "file-sink", "missing", "--dir", "x"], ["topic 'missing' does not exist"], 1),
        (["connect", "webhook", "t", "--url", "ftp://h/x"], ["not an http:// or https:// URL"], 1),
        (["connect", "webhook", "t"], ["Missing option '--url'"], 2),
        (["connect", "webhook", "t", "--url", "http://h/x", "--header", "nocolon"],
         ["expected NAME:VALUE"], 2),
        (["connect", "http-ingest", "--listen", "127.0.0.1:70000"], ["the port must be"], 2),
        (["connect", "http-ingest", "--max-body-bytes", "0"], ["--max-body-bytes"], 2),
        (["connect", "file-source", "x.log"], ["Missing option '--topic'"], 2),
        (["connect", "file-source", "x.log", "-t", "t", "--format", "xml"], ["'xml'"], 2),
        (["connect", "file-source", "x.log", "-t", "bad topic!", "--until-caught-up"],
         ["bad topic!"], 1),
        (["connect", "file-sink", "t", "--dir", "d", "--columns", "a,,b"],
         ["comma-separated column names"], 2),
        (["connect", "file-sink", "t", "--dir", "d", "--roll-seconds", "0"], ["--roll-seconds"], 2),
        (["connect", "file-sink", "t", "--dir", "d", "--bootstrap", "127.0.0.1:1"],
         ["cannot reach the broker at 127.0.0.1:1"], 1),
        (["connect", "webhook", "t", "--url", "http://h/x", "--bootstrap", "nowhere"],
         ["expected HOST:PORT", "'nowhere'"], 1),
    ],
)  # fmt: skip
def test_bad_input_is_one_line_and_a_non_zero_exit(
    cli: Cli, data: Path, *, args: list[str], fragments: list[str], status: int
) -> None:
    cli("--data", str(data), "topics", "create", "t")
    log = [] if "--bootstrap" in args else ["--data", str(data)]
    assert_error(cli(*log, *args), *fragments, status=status)


def test_http_ingest_serves_until_sigterm(data: Path) -> None:
    run_headwater(data, "topics", "create", "t")
    server = subprocess.Popen(
        [HEADWATER, "--data", str(data), "connect", "http-ingest", "--listen", "127.0.0.1:0",
         "--token", "s3cret"],
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        assert server.stderr is not None
        first = server.stderr.readline()
        found = re.search(r"listening on (http://\S+), 1 token", first)
        assert found, first
        url = found.group(1)
        with httpx.Client(base_url=url, timeout=HANG_S) as http:
            auth = {"authorization": "Bearer s3cret", "content-type": "application/x-ndjson"}
            ok = http.post("/topics/t/records", content=lines(0, 3), headers=auth)
            refused = http.post("/topics/t/records", content=lines(0, 3))
        assert ok.json()["offsets"] == [[0, 0], [0, 1], [0, 2]]
        assert refused.status_code == 401
        server.send_signal(signal.SIGTERM)
        _, err = server.communicate(timeout=60)
    finally:
        server.kill()
    assert server.returncode == 0, err
    assert "3 records in 2 requests (1 refused)" in err
    consumed = run_headwater(data, "consume", "t")
    assert [json.loads(x)["i"] for x in consumed.stdout.splitlines()] == [0, 1, 2]


def test_sigterm_stops_a_file_source_with_its_position_saved(data: Path, tmp_path: Path) -> None:
    source = tmp_path / "in.jsonl"
    source.write_text(lines(0, 20))
    tail = subprocess.Popen(
        [HEADWATER, "--data", str(data), "connect", "file-source", str(source), "-t", "t",
         "--from-beginning", "--poll-interval", "0.01"],
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        assert tail.stderr is not None
        assert "file-source:" in tail.stderr.readline()
        tail.send_signal(signal.SIGTERM)
        _, err = tail.communicate(timeout=60)
    finally:
        tail.kill()
    assert tail.returncode == 0, err
    assert "SIGTERM received: stopping" in err
    with source.open("a") as f:
        f.write(lines(20, 25))
    again = run_headwater(data, "connect", "file-source", str(source), "-t", "t",
                          "--until-caught-up")  # fmt: skip
    assert again.returncode == 0, again.stderr
    consumed = run_headwater(data, "consume", "t")
    assert [json.loads(x)["i"] for x in consumed.stdout.splitlines()] == list(range(25))
