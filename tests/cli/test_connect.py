"""``headwater connect``: the four connectors through the real command, end to end; bad
input is one line and a non-zero exit; SIGTERM stops a connector gracefully."""

from __future__ import annotations

import json
import re
import signal
import subprocess
from pathlib import Path

import httpx
import pytest

from .helpers import HEADWATER, Headwater, assert_error, run_headwater


def lines(start: int, stop: int) -> str:
    return "".join(json.dumps({"i": i}) + "\n" for i in range(start, stop))


def final_values(directory: Path) -> list[int]:
    out = []
    for path in sorted(directory.glob("*.jsonl")):
        out.extend(json.loads(line)["i"] for line in path.read_text().splitlines())
    return out


def test_a_file_goes_in_through_file_source_and_out_through_file_sink(
    hw: Headwater, tmp_path: Path
) -> None:
    source = tmp_path / "in.jsonl"
    source.write_text(lines(0, 50) + "not json\n")
    result = hw("connect", "file-source", str(source), "-t", "t", "--from-beginning",
                "--until-caught-up")  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "50 lines stored, 1 malformed (to t-dlq)" in result.stderr
    out = tmp_path / "out"
    result = hw("connect", "file-sink", "t", "--dir", str(out), "--until-caught-up")
    assert result.returncode == 0, result.stderr
    assert final_values(out) == list(range(50))

    # A second run of each goes on from where the first stopped.
    with source.open("a") as f:
        f.write(lines(50, 60))
    assert hw("connect", "file-source", str(source), "-t", "t", "--until-caught-up").returncode == 0
    assert hw("connect", "file-sink", "t", "--dir", str(out), "--until-caught-up").returncode == 0
    assert final_values(out) == list(range(60))
    dead = hw("consume", "t-dlq", "--show-meta")
    assert json.loads(dead.stdout)["value"] == "not json"


def test_csv_out(hw: Headwater, tmp_path: Path) -> None:
    hw("topics", "create", "t")
    hw("produce", "t", input='{"a":1,"b":"x"}\n{"a":2,"b":"y"}\n')
    out = tmp_path / "out"
    result = hw("connect", "file-sink", "t", "--dir", str(out), "--format", "csv",
                "--columns", "b,a", "--until-caught-up")  # fmt: skip
    assert result.returncode == 0, result.stderr
    [path] = out.glob("*.csv")
    assert path.read_text() == "b,a\nx,1\ny,2\n"


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
    ],
)  # fmt: skip
def test_bad_input_is_one_line_and_a_non_zero_exit(
    hw: Headwater, *, args: list[str], fragments: list[str], status: int
) -> None:
    hw("topics", "create", "t")
    assert_error(hw(*args), *fragments, status=status)


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
        with httpx.Client(base_url=url) as http:
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
