"""A table of a topic produced on the command line meets the streams ``key_by`` keys:
``headwater produce --key FIELD`` encodes keys as ``key_by`` does."""

from __future__ import annotations

import json
from pathlib import Path

from headwater.processing import encode_key
from headwater.store import partition_for_key

from .helpers import Headwater

APP = """
from headwater.processing import App

app = App("geo")
users = app.table("users")
clicks = app.stream("clicks").key_by(lambda e: e["user"])
clicks.join(users, lambda c, u: {**c, "country": u["country"]}, name="geo").to("clicks-geo")
clicks.left_join(users, lambda c, u: {**c, "known": u is not None}, name="all").to("clicks-all")
users.map_values(lambda u: u["country"]).to("countries")
"""

USERS = [{"id": "ada", "country": "fr"}, {"id": "bob", "country": "de"}, {"id": 7, "country": "nl"}]
CLICKS = [{"user": "ada", "n": 1}, {"user": "eve", "n": 2}, {"user": "bob", "n": 3}, {"user": 7}]


def lines(values: list[dict[str, object]]) -> str:
    return "".join(json.dumps(v) + "\n" for v in values)


def consumed(hw: Headwater, topic: str) -> list[dict[str, object]]:
    result = hw("consume", topic, "--format", "json")
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()]


def test_a_table_produced_with_key_joins_a_key_by_stream(hw: Headwater, tmp_path: Path) -> None:
    app = tmp_path / "geo.py"
    app.write_text(APP)
    for topic in ("users", "clicks"):
        assert hw("topics", "create", topic, "--partitions", "3").returncode == 0
    produced = hw("produce", "users", "--key", "id", input=lines(USERS))
    assert produced.returncode == 0, produced.stderr
    # Placed as key_by places its keys: by the canonical JSON of the field.
    assert [line.split(":")[0] for line in produced.stdout.split()] == [
        str(partition_for_key(encode_key(u["id"]), 3)) for u in USERS
    ]
    # The table is loaded (and its changelog written) before any click arrives.
    first = hw("run", str(app), "--until-caught-up")
    assert first.returncode == 0, first.stderr
    assert hw("produce", "clicks", input=lines(CLICKS)).returncode == 0
    second = hw("run", str(app), "--until-caught-up")  # the table comes back from its changelog
    assert second.returncode == 0, second.stderr

    geo = sorted(consumed(hw, "clicks-geo"), key=lambda m: json.dumps(m["value"]["user"]))
    assert [m["value"] for m in geo] == [
        {"user": "ada", "n": 1, "country": "fr"},
        {"user": "bob", "n": 3, "country": "de"},
        {"user": 7, "country": "nl"},
    ]
    assert sorted(m["key"] for m in geo) == ['"ada"', '"bob"', "7"]
    known = {
        json.dumps(m["value"]["user"]): m["value"]["known"] for m in consumed(hw, "clicks-all")
    }
    assert known == {'"ada"': True, '"bob"': True, '"eve"': False, "7": True}
    countries = {m["key"]: m["value"] for m in consumed(hw, "countries")}
    assert countries == {'"ada"': "fr", '"bob"': "de", "7": "nl"}
