"""``--bootstrap HOST:PORT`` (and ``$HEADWATER_BOOTSTRAP``) on the log commands: choosing
the broker, following over the protocol, and the errors a user meets on the way.

The round trips themselves run on both paths in ``test_produce_consume.py``,
``test_groups.py``, ``test_produce_options.py`` and ``test_consume_formats.py``.
"""

from __future__ import annotations

import json
import signal
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from broker.running import BrokerProcess

from .helpers import Log, assert_error, env_without_data, run_headwater
from .test_follow import Follower


@pytest.fixture
def refusing() -> Iterator[str]:
    """``127.0.0.1:PORT`` of a port this test holds without listening: connects are refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield f"127.0.0.1:{sock.getsockname()[1]}"


def test_the_environment_names_the_broker(broker: BrokerProcess, name: str, data: Path) -> None:
    env = {**env_without_data(), "HEADWATER_BOOTSTRAP": broker.bootstrap}
    assert run_headwater(None, "topics", "create", name, env=env).returncode == 0
    produced = run_headwater(None, "produce", name, input='{"n": 1}\n', env=env)
    assert (produced.returncode, produced.stdout) == (0, "0:0\n"), produced.stderr
    assert run_headwater(None, "consume", name, env=env).stdout == '{"n":1}\n'
    assert not data.exists()  # nothing went to a data directory
    # $HEADWATER_DATA is a default too: a named broker wins over it.
    env["HEADWATER_DATA"] = str(data)
    assert run_headwater(None, "consume", name, env=env).stdout == '{"n":1}\n'
    assert not data.exists()
    # Both named on the command line: which one was meant?
    both = run_headwater(data, "consume", name, "--bootstrap", broker.bootstrap)
    assert_error(both, "give --data or --bootstrap, not both", status=2)
    # --data on the command line wins over $HEADWATER_BOOTSTRAP.
    local = run_headwater(data, "topics", "create", name, env=env)
    assert local.returncode == 0, local.stderr
    assert run_headwater(data, "consume", name, env=env).stdout == ""  # the local, empty one
    assert (data / name).is_dir()


def test_a_broker_that_cannot_be_reached_is_one_line(refusing: str) -> None:
    reason = f"cannot reach the broker at {refusing}"
    for args, stdin in [
        (["produce", "t"], '{"n": 1}\n'),
        (["consume", "t"], None),
        (["consume", "t", "--group", "g"], None),
        (["groups", "list"], None),
        (["trace", "t", "0", "0"], None),
    ]:
        result = run_headwater(None, *args, "--bootstrap", refusing, input=stdin)
        assert_error(result, reason, "Connection refused")
    malformed = run_headwater(None, "consume", "t", "--bootstrap", "localhost:http")
    assert_error(malformed, "--bootstrap", "port must be a number", status=2)


def test_unknown_topics_and_partitions_over_the_protocol(broker: BrokerProcess, name: str) -> None:
    log = Log(Path("unused"), broker.bootstrap)
    assert_error(log("produce", name, input='{"n": 1}\n'), f"unknown topic {name!r}")
    assert_error(log("consume", name), f"unknown topic {name!r}")
    # The lookup did not create it (a producer's metadata request would have).
    assert_error(log("consume", name), f"unknown topic {name!r}")
    assert log("topics", "create", name).returncode == 0
    assert_error(log("consume", name, "-p", "1"), f"topic {name!r} has no partition 1 (it has 1)")


def test_internal_topics_refuse_records_over_the_protocol(broker: BrokerProcess) -> None:
    log = Log(Path("unused"), broker.bootstrap)
    produced = log("produce", "__consumer_offsets", input='{"n": 1}\n')
    assert_error(produced, "TOPIC_EXCEPTION", "internal")
    assert produced.stdout == ""


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_follow_over_the_protocol_sees_records_as_they_come(
    broker: BrokerProcess, name: str, signum: int
) -> None:
    log = Log(Path("unused"), broker.bootstrap)
    assert log("topics", "create", name, "-p", "2").returncode == 0
    assert log("produce", name, input='{"n": 0}\n').returncode == 0
    follower = Follower(Path("unused"), argv=log.command("consume", name, "--show-meta", "-f"))
    try:
        assert follower.next_line()["value"] == {"n": 0}  # caught up, now waiting
        # With the follower still running: no taking turns over a broker.
        assert log("produce", name, "--key", "n", input='{"n": 1}\n{"n": 2}\n').returncode == 0
        got = {json.dumps(follower.next_line()["value"]) for _ in range(2)}
        assert got == {'{"n": 1}', '{"n": 2}'}
    finally:
        status, stderr = follower.stop(signum)
    assert (status, stderr) == (0, "")
