"""The commands on a data directory while an app (or a broker) owns and serves it.

An app under ``headwater run`` holds its data directory for as long as it runs and serves
it; every command given the directory works through it at once -- no waiting, no
``--bootstrap`` -- and a follower goes on through whoever has the directory next when the
app stops, crashes or comes back.
"""

from __future__ import annotations

import json
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from broker.running import BrokerProcess

from headwater.store import ADDRESS_FILE, partition_for_key, served_address

from .helpers import HEADWATER, AppProcess, Headwater, assert_error, run_headwater
from .test_follow import Follower

APP = """
from headwater.processing import App

app = App("served-app")
app.stream("in").map(lambda e: {**e, "seen": True}).to("out")
"""


def lines(text: str) -> list[object]:
    return [json.loads(line) for line in text.splitlines()]


@pytest.fixture
def app_file(tmp_path: Path) -> Path:
    path = tmp_path / "app.py"
    path.write_text(APP)
    return path


@pytest.fixture
def app(hw: Headwater, data: Path, app_file: Path) -> Iterator[AppProcess]:
    """The app, running on the test's data directory (topics ``in`` and ``out``, 2 each)."""
    assert hw("topics", "create", "in", "-p", "2").returncode == 0
    assert hw("topics", "create", "out", "-p", "2").returncode == 0
    running = AppProcess(data, app_file).start()
    try:
        yield running
    finally:
        if running.alive():
            status, log = running.stop()
            assert status == 0, log


def test_every_command_works_through_the_app(hw: Headwater, data: Path, app: AppProcess) -> None:
    address = served_address(data)
    assert address is not None and (address.pid, address.bootstrap) == (app.pid, app.bootstrap)
    produced = hw("produce", "in", "--key", "n", input='{"n": 1}\n{"n": 2}\n{"n": 3}\n')
    assert (produced.returncode, produced.stderr) == (0, "")  # no wait for the directory
    assert len(produced.stdout.splitlines()) == 3  # PARTITION:OFFSET acknowledgements

    # The app's output, as it writes it: a reader started now waits for it on events.
    out = hw("consume", "out", "--follow", "--max", "3")
    assert out.returncode == 0, out.stderr
    assert sorted(lines(out.stdout), key=str) == [{"n": n, "seen": True} for n in (1, 2, 3)]

    listed = hw("topics", "list")
    assert listed.returncode == 0, listed.stderr
    assert {"in", "out"} <= {row.split()[1] for row in listed.stdout.splitlines()[3:-1]}
    created = hw("topics", "create", "extra", "-p", "3")
    assert created.returncode == 0, created.stderr
    assert f"in data directory {data} (served by pid {app.pid} at {app.bootstrap})" in (
        created.stderr
    )
    described = hw("topics", "describe", "extra")
    assert described.returncode == 0, described.stderr
    assert "topic extra" in described.stdout

    groups = hw("groups", "describe", "served-app")
    assert groups.returncode == 0, groups.stderr
    assert "group served-app: Stable, 1 member(s)" in groups.stdout  # the live app
    member = hw("consume", "out", "--group", "g", "--max", "2")
    assert member.returncode == 0, member.stderr
    rest = hw("consume", "out", "--group", "g")  # resumes where the commits put it
    assert rest.returncode == 0, rest.stderr
    assert sorted(lines(member.stdout + rest.stdout), key=str) == sorted(lines(out.stdout), key=str)

    p = partition_for_key(b'"1"', 2)  # the produce --key n key: the field's JSON text
    trace = hw("trace", "out", str(p), "0")
    assert trace.returncode == 0, trace.stderr
    assert any(line.startswith(f"  <- in/{p}/") for line in trace.stdout.splitlines())
    assert app.alive()


def test_a_follower_sees_the_apps_output_live(hw: Headwater, data: Path, app: AppProcess) -> None:
    follower = Follower(data, "out")
    try:
        for n in range(3):
            assert hw("produce", "in", input=json.dumps({"n": n}) + "\n").returncode == 0
            assert follower.next_line() == {"n": n, "seen": True}
        assert app.alive()  # every record came while the app ran
    finally:
        status, stderr = follower.stop(signal.SIGTERM)
    assert (status, stderr) == (0, "")


def test_a_follower_goes_on_when_the_app_crashes_and_comes_back(
    hw: Headwater, data: Path, app: AppProcess, app_file: Path
) -> None:
    follower = Follower(data, "out")
    try:
        assert hw("produce", "in", input='{"n": 1}\n').returncode == 0
        assert follower.next_line() == {"n": 1, "seen": True}
        app.kill()
        assert (data / ADDRESS_FILE).exists()  # a stale address, and ignored:
        produced = hw("produce", "out", input='{"n": 2}\n')
        assert (produced.returncode, produced.stderr) == (0, "")
        assert follower.next_line() == {"n": 2}  # read in the follower's own process
        again = AppProcess(data, app_file).start()
        try:
            assert hw("produce", "in", input='{"n": 3}\n').returncode == 0
            # Through the new app, which derives again what the killed one had not
            # committed (at least once: n=1 may come twice, and as the two partitions of
            # 'out' are read in no set order, before or after n=3).
            seen = [follower.next_line()]
            while seen[-1] != {"n": 3, "seen": True}:
                seen.append(follower.next_line())
        finally:
            status, log = again.stop()
        assert status == 0, log
        assert hw("produce", "out", input='{"n": 4}\n').returncode == 0
        after = [follower.next_line()]  # the app stopped: read in process again
        while after[-1] != {"n": 4}:
            after.append(follower.next_line())
        replayed = seen[:-1] + after[:-1]
        assert all(line == {"n": 1, "seen": True} for line in replayed), (seen, after)
    finally:
        status, stderr = follower.stop(signal.SIGTERM)
    assert (status, stderr) == (0, "")


def test_commands_work_through_headwater_broker(hw: Headwater, data: Path) -> None:
    assert hw("topics", "create", "t").returncode == 0
    broker = BrokerProcess(data).start()
    try:
        assert (data / ADDRESS_FILE).exists()
        produced = hw("produce", "t", input='{"n": 1}\n')
        assert (produced.returncode, produced.stderr) == (0, "")
        consumed = hw("consume", "t")
        assert lines(consumed.stdout) == [{"n": 1}]
        # A second broker is refused at once, and told where the first one serves.
        second = run_headwater(None, "broker", "--data", str(data), "--listen", "127.0.0.1:0")
        assert_error(second, f"which serves it at {broker.bootstrap}")
        assert "connection" in broker.log()  # the commands were its clients
    finally:
        broker.kill()
    # The broker was killed: its address is stale, and ignored.
    stale = orjson.loads((data / ADDRESS_FILE).read_bytes())
    assert (stale["pid"], served_address(data)) == (broker.proc.pid, None)  # type: ignore[union-attr]
    consumed = hw("consume", "t")
    assert (consumed.returncode, consumed.stderr, lines(consumed.stdout)) == (0, "", [{"n": 1}])
    # A new owner takes the directory and replaces the address; it withdraws it at exit.
    again = BrokerProcess(data).start()
    try:
        address = served_address(data)
        assert address is not None and address.bootstrap == again.bootstrap
    finally:
        assert again.stop() == 0, again.log()
    assert not (data / ADDRESS_FILE).exists()


def test_a_producer_stops_when_the_app_goes(hw: Headwater, data: Path, app: AppProcess) -> None:
    producer = subprocess.Popen(
        [HEADWATER, "--data", str(data), "produce", "in"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert producer.stdin is not None and producer.stdout is not None
    producer.stdin.write('{"n": 1}\n')
    producer.stdin.flush()
    assert producer.stdout.readline().strip().endswith(":0")  # acknowledged by the app
    app.kill()
    out, err = producer.communicate('{"n": 2}\n', timeout=60)
    assert producer.returncode == 1, err
    assert err.count("\n") == 1 and err.startswith("headwater: error: "), err
    assert f"{data} (served by pid {app.pid} at {app.bootstrap}) stopped while" in err
    assert "1 records were acknowledged before it" in err
    assert out == ""
    # What the app took is stored; the directory is this process's again.
    consumed = hw("consume", "in")
    assert (consumed.returncode, lines(consumed.stdout)) == (0, [{"n": 1}])
