"""Tables in the test driver: a topic's latest value per key, its changes, filter and
map_values (deletes included), writing a table, and reading one by key from a task."""

from __future__ import annotations

import pytest

from headwater.processing import App, ProcessingError
from headwater.processing.testing import TestDriver


def test_a_tables_changes_filter_map_and_write() -> None:
    app = App("tab")
    users = app.table("users")
    users.to_stream().to("changes")
    adults = users.filter(lambda u: u["age"] >= 18)
    adults.map_values(lambda u: u["name"]).to("adult-names")
    driver = TestDriver(app)
    driver.send("users", {"name": "Ada", "age": 36}, key="a")
    driver.send("users", {"name": "Bob", "age": 12}, key="b")
    driver.send("users", {"name": "Bob", "age": 18}, key="b")  # passes now: an insert
    driver.send("users", {"name": "Ada", "age": 17}, key="a")  # fails now: a delete
    driver.send("users", None, key="b")  # a delete of the topic's key
    driver.send("users", None, key="zed")  # nothing to delete: no change
    assert driver.values("changes") == [
        {"name": "Ada", "age": 36},
        {"name": "Bob", "age": 12},
        {"name": "Bob", "age": 18},
        {"name": "Ada", "age": 17},
        None,
    ]
    names = driver.records("adult-names")
    assert [(r.key, r.value) for r in names] == [
        (b'"a"', "Ada"),
        (b'"b"', "Bob"),
        (b'"a"', None),
        (b'"b"', None),
    ]
    assert driver.state("users") == {"a": {"name": "Ada", "age": 17}}


def test_table_get_reads_by_key_from_a_task_that_holds_it() -> None:
    app = App("get")
    users = app.table("users")
    clicks = app.stream("clicks").key_by(lambda c: c["user"])

    def with_friend(click: dict[str, str], user: dict[str, str]) -> dict[str, object]:
        friend = users.get(click["friend"])  # one partition here: every key is in the task
        return {**click, "friend_country": None if friend is None else friend["country"]}

    clicks.join(users, with_friend, name="j").to("out")
    driver = TestDriver(app)
    driver.send("users", {"country": "fr"}, key="ada")
    driver.send("users", {"country": "de"}, key="bob")
    driver.send("clicks", {"user": "ada", "friend": "bob"})
    driver.send("clicks", {"user": "ada", "friend": "eve"})
    assert [v["friend_country"] for v in driver.values("out")] == ["de", None]
    with pytest.raises(ProcessingError, match="can only be read from a function running in a task"):
        users.get("ada")
