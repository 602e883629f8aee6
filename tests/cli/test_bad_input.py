"""Bad input to the CLI: one clear line on stderr, a non-zero status, nothing stored changed."""

from __future__ import annotations

import json
from pathlib import Path

from .helpers import Headwater, assert_error


def test_unknown_topic(hw: Headwater) -> None:
    assert hw("topics", "create", "known").returncode == 0
    assert_error(hw("produce", "unknown", input='{"a": 1}\n'), "unknown topic 'unknown'")
    assert_error(hw("consume", "unknown"), "unknown topic 'unknown'")
    assert_error(hw("consume", "known", "--partition", "1"), "has no partition 1")
    assert_error(hw("consume", "known", "--from", "yesterday"), "--from", status=2)
    assert_error(hw("consume"), "Missing argument 'TOPIC'", status=2)


def test_invalid_json_line_keeps_what_was_acknowledged(hw: Headwater) -> None:
    assert hw("topics", "create", "t", "-p", "2").returncode == 0
    lines = ['{"n": 1}', '{"n": 2}', "", '{"n": 3}', '{"n": 4', '{"n": 5}']
    result = hw("produce", "t", input="\n".join(lines) + "\n")
    line = assert_error(result, "line 5", "invalid JSON", "the 3 records before it are stored")
    assert "column" in line
    assert len(result.stdout.splitlines()) == 3  # each stored record was acknowledged
    assert sorted(json.loads(x)["n"] for x in hw("consume", "t").stdout.splitlines()) == [1, 2, 3]

    # A bad first line stores nothing; a line without the key field is bad input too.
    assert_error(hw("produce", "t", input="nope\n"), "line 1", "the 0 records")
    result = hw("produce", "t", "--key", "user", input='{"user": "a"}\n{"who": "b"}\n')
    assert_error(result, "line 2", "--key user", "the 1 records before it are stored")
    assert len(hw("consume", "t").stdout.splitlines()) == 4


def test_json_nested_past_what_is_stored_is_refused_and_consumed_on_one_line(
    hw: Headwater,
) -> None:
    assert hw("topics", "create", "deep").returncode == 0
    deep = "[" * 300 + "1" + "]" * 300  # valid JSON, deeper than a value is written
    result = hw("produce", "deep", input=f'{{"n": 1}}\n{deep}\n')
    assert_error(result, "line 2", "nests deeper than 254 levels", "the 1 records before it")
    # Stored as it is (raw), with a line end inside: consume prints it on one line.
    raw = hw("produce", "deep", "--format", "raw", input=deep[:300] + "\r" + deep[300:] + "\n")
    assert raw.returncode == 0, raw.stderr
    for args in ((), ("--format", "json")):
        consumed = hw("consume", "deep", *args)
        assert consumed.returncode == 0, consumed.stderr
        lines = consumed.stdout.splitlines()
        assert len(lines) == 2
        assert json.loads(lines[1] if not args else json.dumps(json.loads(lines[1])["value"]))


def test_record_over_max_message_bytes(hw: Headwater) -> None:
    assert hw("topics", "create", "small", "-c", "max.message.bytes=200").returncode == 0
    big = json.dumps({"blob": "x" * 300})
    result = hw("produce", "small", input=f'{{"n": 1}}\n{big}\n')
    assert_error(result, "line 2", "max_message_bytes (200)", "the 1 records before it")
    # Many small lines are split into batches that each fit.
    many = "".join(json.dumps({"n": i}) + "\n" for i in range(100))
    assert hw("produce", "small", "--quiet", input=many).returncode == 0
    assert len(hw("consume", "small").stdout.splitlines()) == 101


def test_corrupt_segment_is_reported_and_kept(hw: Headwater, data: Path) -> None:
    assert hw("topics", "create", "c").returncode == 0
    lines = "".join(json.dumps({"n": i, "pad": "p" * 40}) + "\n" for i in range(3000))
    assert hw("produce", "c", "--quiet", input=lines).returncode == 0
    segment = data / "c" / "0" / "00000000000000000000.log"
    size = segment.stat().st_size
    with segment.open("r+b") as f:  # after a clean shutdown, flip bytes mid-segment
        f.seek(size // 2)
        chunk = f.read(8)
        f.seek(size // 2)
        f.write(bytes(b ^ 0xFF for b in chunk))
    damaged = segment.read_bytes()

    result = hw("consume", "c")
    # The damaged range is reported and stepped over; the exit status says so.
    assert result.returncode == 1, result
    report, error = result.stderr.splitlines()
    assert str(segment) in report and "position " in report, report
    assert error.startswith("headwater: error: 1 damaged range(s) of c were skipped"), error
    assert segment.read_bytes() == damaged  # nothing was cut or rewritten
    assert 0 < len(result.stdout.splitlines()) < 3000
