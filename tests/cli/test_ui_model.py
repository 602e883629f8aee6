"""What ``headwater ui`` answers, from samples and records (pure), and who it serves."""

from __future__ import annotations

import base64
import json

import click
import orjson
import pytest

from headwater.cli._top_view import AppSample, GroupSample, Sample
from headwater.cli._ui import check_exposure, is_loopback
from headwater.cli._ui_feed import failure_message
from headwater.cli._ui_model import (
    MAX_SHOWN_DEPTH,
    chart_point,
    overview,
    partition_offsets,
    record_json,
)
from headwater.groups import TopicPartition
from headwater.store import Record, TopicNotFoundError


def test_rates_come_from_two_samples_and_lag_per_group() -> None:
    tp0, tp1 = TopicPartition("clicks", 0), TopicPartition("clicks", 1)
    first = Sample(
        10.0,
        {"clicks": ((0, 100), (0, 50)), "__consumer_offsets": ((0, 9),)},
        {"app": GroupSample("Stable", 2, {tp0: (40, 100), tp1: (10, 50)})},
        {"app": AppSample({"#1 source clicks": (100, 100, 0, 0)}, {"0_0": 5})},
    )
    second = Sample(
        12.0,
        {"clicks": ((0, 200), (20, 150)), "__consumer_offsets": ((0, 12),)},
        {"app": GroupSample("Stable", 2, {tp0: (190, 200), tp1: (10, 150)})},
        {"app": AppSample({"#1 source clicks": (300, 260, 1, 2)}, {"0_0": 3})},
    )
    view = overview(second, first, wall_ms=1_000)
    clicks = next(t for t in view["topics"] if t["name"] == "clicks")
    assert clicks == {
        "name": "clicks",
        "internal": False,
        "records": 330,
        "rate_in": 100.0,  # 200 more records in 2 s
        "rate_out": 75.0,  # the group committed 150 more
        "partitions": [
            {"partition": 0, "log_start_offset": 0, "high_watermark": 200},
            {"partition": 1, "log_start_offset": 20, "high_watermark": 150},
        ],
    }
    assert next(t for t in view["topics"] if t["name"] == "__consumer_offsets")["internal"]
    [group] = view["groups"]
    assert (group["group"], group["lag"]) == ("app", 10 + 140)
    assert [(p["lag"], p["lag_before"]) for p in group["partitions"]] == [(10, 60), (140, 40)]
    [app] = view["apps"]
    assert app["operators"] == [
        {
            "operator": "#1 source clicks",
            "records_in": 300,
            "records_out": 260,
            "skipped": 1,
            "dead_lettered": 2,
            "rate_in": 100.0,
            "rate_out": 80.0,
        }
    ]
    assert app["lag"] == {"0_0": 3}
    assert chart_point(view) == {"at": 1_000, "rate_in": {"clicks": 100.0}, "lag": {"app": 150}}
    # The first look has no rates, and the charts skip them.
    alone = overview(first, None, wall_ms=0)
    assert all(t["rate_in"] is None and t["rate_out"] is None for t in alone["topics"])
    assert chart_point(alone)["rate_in"] == {}


def test_a_group_without_known_lag_has_none() -> None:
    sample = Sample(0.0, {}, {"g": GroupSample("Empty", 0, {TopicPartition("t", 0): (None, 5)})})
    [group] = overview(sample, None, wall_ms=0)["groups"]
    assert group["lag"] is None and group["partitions"][0]["lag"] is None


def test_records_show_json_text_or_base64_and_their_source() -> None:
    record = Record(
        7,
        1_700_000_000_000,
        b"ada",
        b'{"page": "/"}',
        (("headwater.source", b"clicks/2/41"), ("raw", b"\xff\x00"), ("empty", None)),
    )
    shown = record_json("enriched", 0, record)
    assert shown == {
        "topic": "enriched",
        "partition": 0,
        "offset": 7,
        "timestamp": 1_700_000_000_000,
        "key": {"text": "ada"},
        "value": {"json": {"page": "/"}},
        "headers": [
            {"name": "headwater.source", "value": {"text": "clicks/2/41"}},
            {"name": "raw", "value": {"base64": base64.b64encode(b"\xff\x00").decode()}},
            {"name": "empty", "value": None},
        ],
        "source": {"topic": "clicks", "partition": 2, "offset": 41},
    }
    binary = record_json("t", 0, Record(0, 0, None, b"\x80\x81", ()))
    assert binary["key"] is None and binary["value"] == {"base64": "gIE="}
    assert binary["source"] is None
    assert record_json("t", 0, Record(0, 0, None, b"12", ()))["value"] == {"json": 12}


@pytest.mark.parametrize("depth", [MAX_SHOWN_DEPTH, MAX_SHOWN_DEPTH + 1, 300])
def test_json_nested_past_what_an_answer_can_carry_is_shown_as_text(depth: int) -> None:
    deep = b"[" * depth + b"1" + b"]" * depth  # orjson reads up to 1024 levels
    shown = record_json("t", 0, Record(0, 0, deep, deep, ()))
    kind = "json" if depth <= MAX_SHOWN_DEPTH else "text"
    assert set(shown["key"]) == set(shown["value"]) == {kind}
    page = orjson.loads(orjson.dumps({"records": [shown]}))  # what the browser is sent
    assert page["records"][0]["value"] == ({"text": deep.decode()} if kind == "text" else
                                          {"json": orjson.loads(deep)})  # fmt: skip


def test_partition_offsets_say_why_there_are_none() -> None:
    topics = {"t": ((3, 9),)}
    assert partition_offsets(topics, "t", 0) == (3, 9)
    assert partition_offsets(topics, "u", 0) == "no topic named 'u'"
    assert partition_offsets(topics, "t", 1) == "topic 't' has no partition 1 (it has 1)"


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.5.0.1", True),
        ("::1", True),
        ("localhost", True),
        ("0.0.0.0", False),
        ("::", False),
        ("10.0.0.4", False),
        ("example.org", False),
    ],
)
def test_beyond_loopback_needs_a_token(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback
    check_exposure(host, "s3cret")
    if loopback:
        check_exposure(host, None)
    else:
        with pytest.raises(click.UsageError, match="give --token"):
            check_exposure(host, None)
    with pytest.raises(click.UsageError, match="--token is empty"):
        check_exposure(host, "")


def test_a_failed_look_is_said_in_one_line() -> None:
    busy = click.ClickException("data directory d is busy")
    assert failure_message(ExceptionGroup("x", [busy])) == "data directory d is busy"
    assert failure_message(TopicNotFoundError("no topic 'x'")) == "no topic 'x'"
    assert failure_message(RuntimeError("boom")) == "RuntimeError: boom"


def test_integers_a_browser_would_round_are_kept_and_shown_as_written() -> None:
    text = b'{"id": 123456789012345678901234567890, "seq": 9007199254740993, "x": [1.5]}'
    value = record_json("t", 0, Record(0, 0, None, text, ()))["value"]
    exact = {"id": 123456789012345678901234567890, "seq": 9007199254740993, "x": [1.5]}
    assert value["json"] == exact
    # The page prints this text: a browser's JSON.parse would read 9007199254740992.
    assert value["shown"] == json.dumps(exact, indent=2)
    assert "9007199254740993" in value["shown"]
    # Fifteen digits or fewer: a browser reads them exactly, and renders the value itself.
    assert record_json("t", 0, Record(0, 0, None, b'{"n": 123456789012345}', ()))["value"] == {
        "json": {"n": 123456789012345}
    }
