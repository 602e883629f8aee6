"""``headwater groups ...`` and ``headwater consume --group``: resuming, resetting, deleting.

The tests that use ``log`` run on a data directory and, with the same assertions, against
a ``headwater broker`` over the Kafka protocol; their topic and groups are their own.
"""

from __future__ import annotations

import json
import signal
import time

import pytest

from .helpers import Headwater, Log, assert_error
from .test_follow import Follower


def produce(log: Log | Headwater, start: int, count: int, topic: str = "clicks") -> None:
    lines = "".join(json.dumps({"n": n}) + "\n" for n in range(start, start + count))
    result = log("produce", topic, "--key", "n", "--quiet", input=lines)
    assert result.returncode == 0, result.stderr


def numbers(stdout: str) -> list[int]:
    return [json.loads(line)["n"] for line in stdout.splitlines()]


@pytest.fixture
def clicks(log: Log, name: str) -> str:
    """A topic of 3 partitions holding 30 records."""
    assert log("topics", "create", name, "--partitions", "3").returncode == 0
    produce(log, 0, 30, name)
    return name


def rows(stdout: str) -> list[list[str]]:
    """The cells of a rich table's body rows."""
    return [
        [cell.strip() for cell in line.strip("│").split("│")]
        for line in stdout.splitlines()
        if line.startswith("│")
    ]


def test_consume_with_a_group_resumes_where_it_stopped(log: Log, clicks: str) -> None:
    g, late = f"{clicks}-g", f"{clicks}-late"
    first = log("consume", clicks, "--group", g, "--max", "10")
    assert first.returncode == 0, first.stderr
    assert first.stderr == ""
    second = log("consume", clicks, "-g", g)
    assert second.returncode == 0, second.stderr
    seen = numbers(first.stdout) + numbers(second.stdout)
    assert len(numbers(first.stdout)) == 10
    assert sorted(seen) == list(range(30))  # each record once, across the two runs
    assert log("consume", clicks, "--group", g).stdout == ""  # nothing new
    # --from applies only where the group has no offsets: here, the end.
    assert log("consume", clicks, "--group", late, "--from", "latest").stdout == ""
    produce(log, 30, 5, clicks)
    assert sorted(numbers(log("consume", clicks, "--group", g).stdout)) == list(range(30, 35))
    again = log("consume", clicks, "--group", late, "--from", "earliest")
    assert sorted(numbers(again.stdout)) == list(range(30, 35))  # its commits win over --from
    # Without --group the topic reads from the start, as always.
    assert len(log("consume", clicks).stdout.splitlines()) == 35


def test_list_describe_and_delete(log: Log, clicks: str) -> None:
    g, other = f"{clicks}-g", f"{clicks}-other"
    if log.kind == "data":
        assert log("groups", "list").stderr.startswith("no consumer groups in ")
    log("consume", clicks, "--group", g, "--max", "12")
    log("consume", clicks, "--group", other, "--max", "1")
    listed = log("groups", "list")
    assert listed.returncode == 0, listed.stderr
    assert [row for row in rows(listed.stdout) if row[0].startswith(clicks)] == [
        [g, "Empty", "0", clicks, "3"],
        [other, "Empty", "0", clicks, "3"],
    ]
    described = log("groups", "describe", g)
    assert described.returncode == 0, described.stderr
    assert f"group {g}: Empty, 0 member(s)" in described.stdout
    table = rows(described.stdout)
    assert [row[:2] for row in table] == [[clicks, "0"], [clicks, "1"], [clicks, "2"]]
    committed = sum(int(row[2]) for row in table)
    ends = sum(int(row[3]) for row in table)
    lags = sum(int(row[4]) for row in table)
    assert (committed, ends, lags) == (12, 30, 18)
    assert all(row[5:] == ["-", "-"] for row in table)  # no live members
    assert_error(log("groups", "describe", f"{clicks}-nope"), "does not exist")
    deleted = log("groups", "delete", g)
    assert deleted.returncode == 0 and f"deleted group '{g}'" in deleted.stderr
    listed_again = [row[0] for row in rows(log("groups", "list").stdout)]
    assert g not in listed_again and other in listed_again
    assert_error(log("groups", "delete", g), "does not exist")
    # A deleted group starts over.
    assert len(log("consume", clicks, "--group", g).stdout.splitlines()) == 30


def test_list_without_a_data_directory(hw: Headwater) -> None:
    result = hw("groups", "list")
    assert result.returncode == 0 and "no data directory" in result.stderr


def test_reset_offsets_is_a_dry_run_unless_executed(log: Log, clicks: str) -> None:
    g = f"{clicks}-g"
    assert log("consume", clicks, "--group", g).returncode == 0
    plan = log("groups", "reset-offsets", g, "--topic", clicks, "--to-earliest")
    assert plan.returncode == 0, plan.stderr
    assert "dry run" in plan.stderr and "--execute" in plan.stderr
    table = rows(plan.stdout)
    assert [row[3] for row in table] == ["0", "0", "0"]
    assert sum(int(row[2]) for row in table) == 30
    applied = log("groups", "reset-offsets", g, "-t", clicks, "--to-offset", "2", "--execute")
    assert applied.returncode == 0, applied.stderr
    assert f"reset the offsets of group '{g}'" in applied.stderr
    assert [row[2:] for row in rows(applied.stdout)] == [[row[2], "2"] for row in table]
    assert len(log("consume", clicks, "--group", g).stdout.splitlines()) == 30 - 3 * 2
    # To a time: the records produced after it.
    time.sleep(0.02)
    middle = time.time()
    time.sleep(0.02)
    produce(log, 30, 4, clicks)
    when = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(middle)) + f".{int(middle % 1 * 1e6):06d}"
    reset = log("groups", "reset-offsets", g, "-t", clicks, "--to-datetime", when, "--execute")
    assert reset.returncode == 0, reset.stderr
    assert sorted(numbers(log("consume", clicks, "--group", g).stdout)) == [30, 31, 32, 33]
    missing = log("groups", "reset-offsets", g, "-t", f"{clicks}-nope", "--to-latest")
    assert_error(missing, "unknown topic")


def test_usage_errors(hw: Headwater) -> None:
    for args, fragment in [
        ((), "give exactly one of --to-earliest"),
        (("--to-earliest", "--to-latest"), "give exactly one of"),
        (("--to-datetime", "yesterday"), "expected an ISO-8601 time"),
        (("--to-offset", "-1"), "-1"),
    ]:
        result = hw("groups", "reset-offsets", "g", "--topic", "clicks", *args)
        assert_error(result, fragment, status=2)
    assert hw("topics", "create", "clicks").returncode == 0
    assert_error(hw("consume", "clicks", "--group", "g", "-p", "0"), "--partition", status=2)
    assert_error(hw("consume", "clicks", "--group", ""), "group name is empty", status=2)
    assert_error(hw("consume", "nope", "--group", "g"), "unknown topic 'nope'")


def test_a_group_follower_commits_what_it_printed(log: Log, clicks: str) -> None:
    g = f"{clicks}-g"
    follower = Follower(log.data, argv=log.command("consume", clicks, "--group", g, "--follow"))
    try:
        got = {follower.next_line()["n"] for _ in range(30)}
        assert got == set(range(30))
        produce(log, 30, 2, clicks)  # on a data directory: read once this process lets go
        assert {follower.next_line()["n"] for _ in range(2)} == {30, 31}
    finally:
        status, stderr = follower.stop(signal.SIGTERM)
    assert (status, stderr) == (0, "")
    # The stopped member left the group (a broker would otherwise wait out its session).
    assert f"group {g}: Empty, 0 member(s)" in log("groups", "describe", g).stdout
    assert log("consume", clicks, "--group", g).stdout == ""  # all committed
