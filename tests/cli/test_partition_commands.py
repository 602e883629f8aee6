"""``topics add-partitions``, ``topics delete-records`` and ``groups delete-offsets``.

The tests that use ``log`` run on a data directory, against ``headwater broker`` and
against Apache Kafka, with the same assertions; one more runs them on a data directory
that a running broker owns (the commands then work through it).
"""

from __future__ import annotations

import json
import signal
from pathlib import Path

from broker.running import BrokerProcess

from .helpers import Headwater, Log, assert_error
from .test_follow import Follower


def produce(log: Log | Headwater, topic: str, values: range, *args: str) -> None:
    lines = "".join(json.dumps({"n": n}) + "\n" for n in values)
    result = log("produce", topic, "--quiet", *args, input=lines)
    assert result.returncode == 0, result.stderr


def numbers(stdout: str) -> list[int]:
    return [json.loads(line)["n"] for line in stdout.splitlines()]


def rows(stdout: str) -> list[list[str]]:
    """The cells of a rich table's body rows."""
    return [
        [cell.strip() for cell in line.strip("│").split("│")]
        for line in stdout.splitlines()
        if line.startswith("│")
    ]


def log_starts(log: Log | Headwater, topic: str) -> list[int]:
    described = log("topics", "describe", topic)
    assert described.returncode == 0, described.stderr
    table = described.stdout.split("log_start_offset", 1)[1]
    return [int(row[1]) for row in rows(table)]


def test_delete_records_on_every_log(log: Log, name: str) -> None:
    assert log("topics", "create", name, "-p", "2").returncode == 0
    produce(log, name, range(10), "--partition", "0")
    produce(log, name, range(100, 103), "--partition", "1")

    deleted = log("topics", "delete-records", name, "--partition", "0", "--before", "4")
    assert deleted.returncode == 0, deleted.stderr
    assert rows(deleted.stdout) == [["0", "4"]]
    assert log_starts(log, name) == [4, 0]
    consumed = log("consume", name, "-p", "0")
    assert numbers(consumed.stdout) == [4, 5, 6, 7, 8, 9]

    everything = log("topics", "delete-records", name, "--before", "end")
    assert everything.returncode == 0, everything.stderr
    assert rows(everything.stdout) == [["0", "10"], ["1", "3"]]
    assert log("consume", name).stdout == ""
    produce(log, name, range(200, 201), "--partition", "1")
    assert numbers(log("consume", name).stdout) == [200]

    assert_error(log("topics", "delete-records", name, "--partition", "0", "--before", "11"))
    assert_error(log("topics", "delete-records", name, "--partition", "7", "--before", "0"))
    assert_error(log("topics", "delete-records", f"{name}-missing", "--before", "0"))
    assert_error(log("topics", "delete-records", name, "--before", "soon"), "--before", status=2)
    assert log_starts(log, name) == [10, 3]


def test_add_partitions_on_every_log(log: Log, name: str) -> None:
    assert log("topics", "create", name, "-p", "2").returncode == 0
    produce(log, name, range(20), "--key", "n")
    grown = log("topics", "add-partitions", name, "--partitions", "4")
    assert grown.returncode == 0, grown.stderr
    assert "now has 4 partition(s)" in grown.stderr
    assert len(log_starts(log, name)) == 4
    # Records already written stay where they were.
    assert sorted(numbers(log("consume", name).stdout)) == list(range(20))
    for partition in (2, 3):
        assert log("consume", name, "-p", str(partition)).stdout == ""
    produce(log, name, range(20, 60), "--key", "n")
    new = [numbers(log("consume", name, "-p", str(p)).stdout) for p in (2, 3)]
    assert new[0] and new[1]  # keys go over four partitions now

    for count in ("4", "3"):
        assert_error(log("topics", "add-partitions", name, "--partitions", count))
    assert_error(log("topics", "add-partitions", f"{name}-missing", "--partitions", "5"))
    assert_error(log("topics", "add-partitions", name, "--partitions", "0"), status=2)
    assert len(log_starts(log, name)) == 4


def test_delete_offsets_on_every_log(log: Log, name: str) -> None:
    assert log("topics", "create", name, "-p", "2").returncode == 0
    produce(log, name, range(10), "--partition", "0")
    produce(log, name, range(10, 20), "--partition", "1")
    group = f"{name}-g"
    assert len(log("consume", name, "--group", group).stdout.splitlines()) == 20

    deleted = log("groups", "delete-offsets", group, "--topic", name, "--partition", "0")
    assert deleted.returncode == 0, deleted.stderr
    assert rows(deleted.stdout) == [[name, "0", "deleted"]]
    described = rows(log("groups", "describe", group).stdout)
    committed = {row[1]: row[2] for row in described if row[0] == name}
    assert committed == {"0": "-", "1": "10"}
    # Without a committed offset, the group starts partition 0 again (--from earliest).
    again = log("consume", name, "--group", group, "--from", "earliest")
    assert numbers(again.stdout) == list(range(10))

    assert_error(log("groups", "delete-offsets", f"{name}-nobody", "--topic", name))
    assert_error(log("groups", "delete-offsets", group, "--topic", name, "-p", "5"))

    if log.kind == "broker":
        # A live member consuming the topic keeps the group's offsets of it. (A follower
        # of a data directory nobody serves lets go of it between reads, and with it of
        # the group: there is no live member there to protect.)
        produce(log, name, range(20, 21), "--partition", "1")
        argv = log.command("consume", name, "--group", group, "--follow")
        follower = Follower(log.data, argv=argv)
        try:
            assert follower.next_line() == {"n": 20}
            refused = log("groups", "delete-offsets", group, "--topic", name)
            assert refused.returncode == 1
            assert "active members consume" in refused.stderr
            kept = f"the group's active members consume topic '{name}'"
            assert [row[2] for row in rows(refused.stdout)] == [kept, kept]
        finally:
            follower.stop(signal.SIGTERM)
    after = log("groups", "delete-offsets", group, "--topic", name)
    assert after.returncode == 0, after.stderr
    assert [row[2] for row in rows(after.stdout)] == ["deleted", "deleted"]


def test_the_commands_work_through_the_owner_of_a_data_directory(hw: Headwater, data: Path) -> None:
    assert hw("topics", "create", "t", "-p", "1").returncode == 0
    produce(hw, "t", range(5))
    broker = BrokerProcess(data).start()
    try:
        deleted = hw("topics", "delete-records", "t", "--before", "2")
        assert deleted.returncode == 0, deleted.stderr
        assert "served by pid" in deleted.stderr
        grown = hw("topics", "add-partitions", "t", "--partitions", "2")
        assert grown.returncode == 0, grown.stderr
        assert numbers(hw("consume", "t", "--group", "g").stdout) == [2, 3, 4]
        offsets = hw("groups", "delete-offsets", "g", "--topic", "t")
        assert offsets.returncode == 0, offsets.stderr
        assert [row[2] for row in rows(offsets.stdout)] == ["deleted", "deleted"]
    finally:
        assert broker.stop() == 0, broker.log()
    # What the broker did is in the directory.
    assert log_starts(hw, "t") == [2, 0]
    assert_error(hw("groups", "describe", "g"), "'g'")
