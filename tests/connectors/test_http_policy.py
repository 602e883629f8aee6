"""The ingest endpoint's rules without I/O (IngestPolicy) and its idempotency window."""

from __future__ import annotations

from typing import Any

import anyio
import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from headwater.connectors import (
    ConnectorConfigError,
    IdempotencyWindow,
    IngestLimits,
    IngestPolicy,
    ParsedBody,
    Refusal,
)

POLICY = IngestPolicy(IngestLimits(max_body_bytes=100, max_depth=3), (b"alpha", b"beta"))


def depth_of(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max(map(depth_of, value.values()), default=0)
    if isinstance(value, list):
        return 1 + max(map(depth_of, value), default=0)
    return 0


def test_tokens() -> None:
    assert POLICY.check_token("Bearer alpha") is None
    assert POLICY.check_token("bearer beta") is None
    for header in (None, "", "Bearer", "Bearer gamma", "Basic alpha", "Bearer alphabet"):
        refusal = POLICY.check_token(header)
        assert refusal is not None and refusal.status == 401
    assert IngestPolicy().check_token(None) is None  # no tokens: no authentication


def test_content_types_and_lengths() -> None:
    assert POLICY.body_kind("application/json") == "json"
    assert POLICY.body_kind("Application/JSON; charset=UTF-8") == "json"
    assert POLICY.body_kind("application/x-ndjson") == "ndjson"
    for refused in (None, "text/plain", "application/json; charset=utf-16"):
        kind = POLICY.body_kind(refused)
        assert isinstance(kind, Refusal) and kind.status == 415
    assert POLICY.check_length("100") is None
    assert POLICY.check_length(None) is None
    too_large = POLICY.check_length("101")
    assert too_large is not None and too_large.status == 413
    not_a_number = POLICY.check_length("lots")
    assert not_a_number is not None and not_a_number.status == 400


def test_keys_from_a_field() -> None:
    parsed = POLICY.parse("ndjson", b'{"u":"a"}\n{"u":1}\n{"v":2}\n[1]\n{"u":null}\n', "u")
    assert isinstance(parsed, ParsedBody)
    assert parsed.keys == [b"a", b"1", None, None, None]
    unkeyed = POLICY.parse("json", b'[{"v":1}]', "u")
    assert isinstance(unkeyed, ParsedBody) and unkeyed.keys is None


json_values = st.recursive(
    st.none() | st.integers(-(2**63), 2**63 - 1) | st.text(alphabet="{}[]\"'\\ab", max_size=6),
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(st.text(alphabet="{}[]ab", max_size=3), children, max_size=3)
    ),
    max_leaves=20,
)


@pytest.mark.parametrize("limit", [3, 254])
def test_a_record_nested_past_what_json_writes_is_refused_not_raised(limit: int) -> None:
    policy = IngestPolicy(IngestLimits(max_depth=limit))
    deep = b'{"a":' * 255 + b"1" + b"}" * 255  # read by orjson, too deep for it to write
    for body, where in ((deep, "the record"), (b"[1," + deep + b"]", "record 2")):
        refusal = policy.parse("json", body, None)
        assert isinstance(refusal, Refusal)
        assert (refusal.status, refusal.code) == (400, "malformed_body")
        assert refusal.message == f"{where} is nested deeper than {limit} levels"


@given(st.lists(json_values, min_size=1, max_size=5))
def test_nesting_is_refused_exactly_beyond_the_limit(records: list[Any]) -> None:
    """Brackets inside strings only ever make the cheap count larger: the exact walk
    decides, so a record is refused if and only if it nests deeper than the limit."""
    policy = IngestPolicy(IngestLimits(max_depth=3))
    body = b"\n".join(orjson.dumps(r) for r in records)
    result = policy.parse("ndjson", body, None)
    too_deep = any(depth_of(r) > 3 for r in records)
    assert isinstance(result, Refusal) == too_deep
    as_array = policy.parse("json", orjson.dumps(records), None)
    assert isinstance(as_array, Refusal) == too_deep


def test_json_integers_beyond_64_bits_are_kept_exactly() -> None:
    policy = IngestPolicy()
    array = policy.parse("json", b'[{"id": 123456789012345678901, "x": 1.5}, 7]', None)
    assert isinstance(array, ParsedBody)
    assert array.values == [b'{"id":123456789012345678901,"x":1.5}', b"7"]
    alone = policy.parse("json", b'{"id": -92233720368547758090}', None)
    assert isinstance(alone, ParsedBody) and alone.values == [b'{"id":-92233720368547758090}']
    widest = b"9" * 308  # longer ones orjson refuses as infinite
    kept = policy.parse("json", b"[" + widest + b"]", None)
    assert isinstance(kept, ParsedBody) and kept.values == [widest]
    too_long = policy.parse("json", b"[" + widest + b"9]", None)
    assert isinstance(too_long, Refusal) and too_long.status == 400


def test_keys_beyond_64_bits_are_taken_exactly() -> None:
    policy = IngestPolicy()
    records = b'{"id": 123456789012345678901}', b'{"id": 123456789012345678902, "x": 1}'
    for kind, body in (("json", b"[" + b",".join(records) + b"]"), ("ndjson", b"\n".join(records))):
        parsed = policy.parse(kind, body, "id")
        assert isinstance(parsed, ParsedBody), kind
        assert parsed.keys == [b"123456789012345678901", b"123456789012345678902"], kind


def test_limits_are_validated() -> None:
    with pytest.raises(ConnectorConfigError, match="max_depth"):
        IngestLimits(max_depth=0)
    with pytest.raises(ConnectorConfigError, match="max_depth must be at most 254"):
        IngestLimits(max_depth=255)
    assert IngestLimits(max_depth=254).max_depth == 254
    with pytest.raises(ConnectorConfigError, match="receive_deadline_s"):
        IngestLimits(receive_deadline_s=0)


@pytest.mark.parametrize(
    ("deadline", "head", "body"), [(10.0, 5.0, 5.0), (60.0, 5.0, 55.0), (1.0, 0.5, 0.5)]
)
def test_the_receive_deadline_is_shared_by_head_and_body(
    deadline: float, head: float, body: float
) -> None:
    limits = IngestLimits(receive_deadline_s=deadline)
    assert (limits.head_deadline_s, limits.body_deadline_s) == (head, body)


async def test_the_window_replays_conflicts_releases_and_forgets() -> None:
    now = [0.0]
    window = IdempotencyWindow(window_s=10, max_keys=2, clock=lambda: now[0])
    first = await window.claim("t", "k", b"body")
    assert first.owner
    waiting: list[Any] = []

    async def second() -> None:
        waiting.append(await window.claim("t", "k", b"body"))

    async with anyio.create_task_group() as tg:
        tg.start_soon(second)
        await anyio.wait_all_tasks_blocked()
        assert not waiting  # waits for the owner
        window.complete(first, b"answer")
    assert waiting[0].answer == b"answer"
    assert (await window.claim("t", "k", b"other")).conflict
    assert (await window.claim("u", "k", b"other")).owner  # keys are per topic

    failed = await window.claim("t", "j", b"x")
    window.release(failed)
    assert (await window.claim("t", "j", b"x")).owner

    now[0] = 11.0
    window.complete(await window.claim("t", "z", b"x"), b"z")
    assert (await window.claim("t", "k", b"body")).owner  # forgotten after 10 s
