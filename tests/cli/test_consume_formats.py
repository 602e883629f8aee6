"""``headwater consume --format`` (values, JSON with all metadata, kcat-style templates) and
``headwater trace``'s arguments. Each test runs on a data directory and against a broker."""

from __future__ import annotations

import json

import pytest

from .helpers import Log, assert_error


@pytest.fixture
def topic(log: Log, name: str) -> str:
    """A topic with a keyed record with headers, an unkeyed one, and a non-JSON one."""
    assert log("topics", "create", name, "--partitions", "2").returncode == 0
    keyed = log(
        "produce", name, "-p", "1", "-K", "=", "-H", "h1=x", "-H", "h2=y", input='k={"a": 1}\n'
    )
    assert keyed.returncode == 0, keyed.stderr
    plain = log("produce", name, "-p", "1", input='{"b": [1, 2]}\n')
    assert plain.returncode == 0, plain.stderr
    raw = log("produce", name, "-p", "0", "--format", "raw", input="not json\n")
    assert raw.returncode == 0, raw.stderr
    return name


def test_json_format_and_show_meta_carry_every_field(log: Log, topic: str) -> None:
    shown = log("consume", topic, "--show-meta")
    formatted = log("consume", topic, "--format", "json")
    assert shown.returncode == 0 and formatted.returncode == 0
    assert shown.stdout == formatted.stdout
    records = [json.loads(line) for line in shown.stdout.splitlines()]
    assert [(r["partition"], r["offset"]) for r in records] == [(0, 0), (1, 0), (1, 1)]
    first, keyed, plain = records
    assert first["value"] == "not json" and first["key"] is None and first["headers"] == []
    assert keyed["topic"] == topic
    assert (keyed["key"], keyed["value"]) == ("k", {"a": 1})
    assert keyed["headers"] == [["h1", "x"], ["h2", "y"]]
    assert isinstance(keyed["timestamp"], int) and keyed["timestamp"] > 0
    assert (plain["key"], plain["value"], plain["headers"]) == (None, {"b": [1, 2]}, [])
    assert_error(log("consume", topic, "--show-meta", "--format", "json"), "not both", status=2)


def test_templates_in_kcat_style(log: Log, topic: str) -> None:
    template = r"%t|%p|%o|%k|%s|%h|%K|%S|100%%\n"
    result = log("consume", topic, "--format", template)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        f"{topic}|0|0||not json||-1|8|100%",
        f'{topic}|1|0|k|{{"a":1}}|h1=x,h2=y|1|7|100%',
        f'{topic}|1|1||{{"b":[1,2]}}||-1|11|100%',
    ]
    stamped = log("consume", topic, "-p", "1", "--max", "1", "--format", r"%T\t%o\n")
    stamp, offset = stamped.stdout.rstrip("\n").split("\t")
    shown = json.loads(log("consume", topic, "-p", "1", "--max", "1", "--show-meta").stdout)
    assert (int(stamp), offset) == (shown["timestamp"], "0")
    # No newline unless the template asks for one, as in kcat.
    assert log("consume", topic, "-p", "1", "--format", "%o,").stdout == "0,1,"
    assert_error(log("consume", topic, "--format", "%x"), "unknown code %x", status=2)
    assert_error(log("consume", topic, "--format", "yaml"), "expected value, json", status=2)


def test_trace_follows_lineage_headers(log: Log, name: str) -> None:
    source, derived = f"{name}-src", f"{name}-out"
    for topic in (source, derived):
        assert log("topics", "create", topic).returncode == 0
    assert log("produce", source, input='{"click": 1}\n').returncode == 0
    header = f"headwater.source={source}/0/0"
    assert log("produce", derived, "-H", header, input='{"enriched": 1}\n').returncode == 0
    traced = log("trace", derived, "0", "0")
    assert traced.returncode == 0, traced.stderr
    lines = traced.stdout.splitlines()
    assert lines[0].startswith(f"{derived}/0/0  ")
    assert lines[1] == '     value: {"enriched":1}'
    assert lines[2].startswith(f"  <- {source}/0/0  ")
    assert lines[-1].strip() == "(a source event: it carries no lineage header)"
    assert_error(log("trace", derived, "0", "5"), f"no record at {derived}/0/5")
    assert_error(log("trace", f"{name}-nope", "0", "0"), f"no topic '{name}-nope'")
    assert_error(log("trace", derived, "3", "0"), "has no partition 3")


def test_trace_takes_arguments_that_start_with_a_dash(log: Log, name: str) -> None:
    dashed = f"-{name}"  # a valid topic name
    assert log("topics", "create", "--", dashed).returncode == 0
    assert log("produce", "--", dashed, input='{"n": 1}\n').returncode == 0
    for args in ([dashed, "0", "0"], ["--", dashed, "0", "0"]):
        traced = log("trace", *args)
        assert traced.returncode == 0, traced.stderr
        assert traced.stdout.startswith(f"{dashed}/0/0  ")
    negative = log("trace", dashed, "0", "-1")
    assert_error(negative, "-1 is not in the range x>=0", status=2)
    negative_partition = log("trace", "--", dashed, "-2", "0")
    assert_error(negative_partition, "-2 is not in the range x>=0", status=2)
