"""``headwater produce`` as kcat users write it: partition, headers, key delimiter, raw lines,
and skipping bad lines. Each test runs on a data directory and against a broker."""

from __future__ import annotations

import json

import pytest

from headwater.store import partition_for_key

from .helpers import Log, assert_error


@pytest.fixture
def topic(log: Log, name: str) -> str:
    assert log("topics", "create", name, "--partitions", "3").returncode == 0
    return name


def metas(log: Log, topic: str, *args: str) -> list[dict[str, object]]:
    result = log("consume", topic, "--format", "json", *args)
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()]


def test_partition_sends_every_record_to_one(log: Log, topic: str) -> None:
    lines = "".join(json.dumps({"user": f"u{i}"}) + "\n" for i in range(20))
    produced = log("produce", topic, "--key", "user", "--partition", "2", input=lines)
    assert produced.returncode == 0, produced.stderr
    assert produced.stdout.splitlines() == [f"2:{i}" for i in range(20)]
    got = metas(log, topic)
    assert {m["partition"] for m in got} == {2}
    assert [m["key"] for m in got] == [f'"u{i}"' for i in range(20)]  # keys kept, not placed by
    missing = log("produce", topic, "-p", "3", input='{"a": 1}\n')
    assert_error(missing, f"topic {topic!r} has no partition 3 (it has 3)")
    assert len(metas(log, topic)) == 20


def test_headers_go_on_every_record(log: Log, topic: str) -> None:
    produced = log(
        "produce", topic, "-H", "source=web", "-H", "trace=a=b", "-H", "source=again",
        input='{"n": 1}\n{"n": 2}\n',
    )  # fmt: skip
    assert produced.returncode == 0, produced.stderr
    got = metas(log, topic)
    assert [m["value"] for m in got] == [{"n": 1}, {"n": 2}]
    for m in got:
        assert m["headers"] == [["source", "web"], ["trace", "a=b"], ["source", "again"]]
    assert_error(log("produce", topic, "-H", "novalue", input=""), "NAME=VALUE", status=2)


def test_key_delimiter_splits_key_and_value(log: Log, topic: str) -> None:
    lines = 'ada:{"page": "/"}\nbob:{"page": "/buy"}\n\nada:{"page": "/x:y"}\n'
    produced = log("produce", topic, "-K", ":", input=lines)
    assert produced.returncode == 0, produced.stderr
    acks = [tuple(map(int, line.split(":"))) for line in produced.stdout.splitlines()]
    assert [p for p, _ in acks] == [partition_for_key(k, 3) for k in (b"ada", b"bob", b"ada")]
    by_key = {(m["key"], json.dumps(m["value"])) for m in metas(log, topic)}
    assert by_key == {
        ("ada", '{"page": "/"}'),
        ("bob", '{"page": "/buy"}'),
        ("ada", '{"page": "/x:y"}'),  # split at the first delimiter only
    }
    bad = log("produce", topic, "--key-delimiter", "::", input='a::{"n": 1}\nno key here\n')
    assert_error(bad, "line 2: no key delimiter '::' in the line", "1 records before it")
    both = log("produce", topic, "-K", ":", "--key", "user", input="")
    assert_error(both, "key field or a key delimiter, not both", status=2)


def test_raw_lines_are_stored_as_they_are(log: Log, topic: str) -> None:
    lines = "plain text\n{not json\r\n\n  spaced  \nk\tv\n"
    produced = log("produce", topic, "--format", "raw", "-p", "0", input=lines)
    assert produced.returncode == 0, produced.stderr
    values = log("consume", topic, "--format", "%s\n")
    assert values.stdout.splitlines() == ["plain text", "{not json", "  spaced  ", "k\tv"]
    keyed = log("produce", topic, "--format", "raw", "-K", "\t", "-p", "1", input="k\tv w\n")
    assert keyed.returncode == 0, keyed.stderr
    assert log("consume", topic, "-p", "1", "--format", "%k|%s\n").stdout == "k|v w\n"
    with_field = log("produce", topic, "--format", "raw", "--key", "f", input="")
    assert_error(with_field, "needs JSON lines", status=2)


def test_skip_invalid_reports_each_bad_line_and_fails_at_the_end(log: Log, topic: str) -> None:
    lines = '{"n": 1}\nnot json\n{"n": 2}\n{"n": \n{"n": 3}\n'
    stopped = log("produce", topic, "-p", "0", input=lines)
    assert_error(stopped, "line 2: invalid JSON", "the 1 records before it are stored")
    skipping = log("produce", topic, "-p", "1", "--skip-invalid", input=lines)
    assert skipping.returncode == 1
    assert skipping.stdout.splitlines() == ["1:0", "1:1", "1:2"]
    reports = skipping.stderr.splitlines()
    assert reports[0].startswith("headwater: skipped line 2: invalid JSON")
    assert reports[1].startswith("headwater: skipped line 4: invalid JSON")
    summary = "skipped 2 invalid line(s) (reported above); stored 3 records"
    assert reports[2] == f"headwater: error: {summary}"
    assert len(reports) == 3
    assert [m["value"] for m in metas(log, topic, "-p", "1")] == [{"n": 1}, {"n": 2}, {"n": 3}]
    clean = log("produce", topic, "--skip-invalid", "--quiet", input='{"n": 4}\n')
    assert clean.returncode == 0, clean.stderr  # nothing skipped: success
    assert clean.stderr.startswith(f"stored 1 records in {topic!r}")
