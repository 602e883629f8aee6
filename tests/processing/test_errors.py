"""Error policies: raise (the default), skip, dead letter; and what an error names."""

from __future__ import annotations

import logging

import pytest

from headwater.processing import App, ErrorPolicy, OperatorError, Retry, StrSerde, TopologyError
from headwater.processing.testing import TestDriver


def parse(text: str) -> int:
    return int(text)  # the user's line that raises


def make_app(policy: str) -> App:
    app = App("errors")
    app.stream("in", serde=StrSerde(), on_error=policy).map(parse).map(lambda n: 100 // n).to("out")
    return app


def test_raise_names_operator_offset_and_user_line() -> None:
    driver = TestDriver(make_app("raise"))
    driver.send("in", "4")
    with pytest.raises(OperatorError) as caught:
        driver.send("in", "four")
    error = caught.value
    assert error.topic == "in" and error.partition == 0 and error.offset == 1
    assert "#2 map parse (test_errors.py:" in error.operator
    assert error.location is not None
    assert error.location.startswith("test_errors.py:")
    assert "return int(text)" in error.location
    assert "in/0 offset 1" in str(error)
    assert "ValueError: invalid literal" in str(error)
    assert isinstance(error.__cause__, ValueError)
    assert driver.values("out") == [25]


def test_skip_counts_logs_and_goes_on(caplog: pytest.LogCaptureFixture) -> None:
    driver = TestDriver(make_app("skip"))
    with caplog.at_level(logging.WARNING, logger="headwater.processing"):
        driver.send_many("in", ["1", "x", "0", "5"])
    assert driver.values("out") == [100, 20]
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 2
    assert "skipped in/0 offset 1" in messages[0] and "#2 map parse" in messages[0]
    assert "skipped in/0 offset 2" in messages[1] and "ZeroDivisionError" in messages[1]


def test_dead_letter_keeps_the_source_record_with_error_headers() -> None:
    driver = TestDriver(make_app("dead_letter"))
    driver.send_many("in", ["1", "x", "0", "5"], key=b"k", headers=[("trace", b"t1")])
    assert driver.values("out") == [100, 20]
    letters = driver.records("in-dlq")
    assert [r.value for r in letters] == [b"x", b"0"]  # the source records, as read
    assert all(r.key == b"k" for r in letters)
    first = dict(letters[0].headers)
    assert first["trace"] == b"t1"
    assert first["headwater.source"] == b"in/0/1"
    assert first["headwater.error.operator"].startswith(b"#2 map parse")
    assert first["headwater.error.type"] == b"ValueError"
    assert b"invalid literal" in first["headwater.error.message"]
    assert first["headwater.error.location"].startswith(b"test_errors.py:")
    second = dict(letters[1].headers)
    assert second["headwater.source"] == b"in/0/2"
    assert second["headwater.error.type"] == b"ZeroDivisionError"


def test_deserialisation_errors_follow_the_policy() -> None:
    app = App("errors")
    # The driver serialises what is sent with the first stream's serde: str, so any text.
    app.stream("in", serde=StrSerde()).to("copy", serde=StrSerde())
    app.stream("in", on_error="dead_letter", name="events").map(lambda e: e["n"]).to("out")
    driver = TestDriver(app)
    driver.send_many("in", ['{"n": 1}', "{nope", '{"m": 2}'])
    assert driver.values("out") == [1]
    letters = driver.records("events-dlq")
    assert [r.value for r in letters] == [b"{nope", b'{"m": 2}']
    assert dict(letters[0].headers)["headwater.error.operator"] == b"#3 source in"
    assert dict(letters[1].headers)["headwater.error.type"] == b"KeyError"


def test_on_error_applies_to_the_operators_after_it() -> None:
    app = App("errors")
    stream = app.stream("in", serde=StrSerde())
    stream.map(parse).on_error("skip").map(lambda n: 100 // n).to("out")
    driver = TestDriver(app)
    driver.send("in", "0")  # the second map fails: skipped
    assert driver.values("out") == []
    with pytest.raises(OperatorError):
        driver.send("in", "x")  # the first map fails: raise


def test_dead_letter_topic_can_be_named() -> None:
    app = App("errors")
    app.stream("in", serde=StrSerde()).on_error("dead_letter", dead_letter_topic="bad-lines").map(
        parse
    ).to("out")
    driver = TestDriver(app)
    driver.send("in", "x")
    assert [r.value for r in driver.records("bad-lines")] == [b"x"]
    assert "bad-lines" in app.describe()


def test_serialisation_errors_follow_the_policy() -> None:
    app = App("errors")
    app.stream("in", on_error="skip").map(lambda v: {1, 2} if v else v).to("out")
    driver = TestDriver(app)
    driver.send_many("in", [0, 1, 0])
    assert driver.values("out") == [0, 0]


def test_a_value_json_refuses_is_dead_lettered_and_the_rest_of_its_batch_written() -> None:
    # The sink encodes a batch in one call; one value it cannot encode sends it back to
    # encoding value by value, so that only that record meets the policy.
    app = App("errors")
    app.stream("in", on_error="dead_letter").map(lambda v: {v} if v == 2 else {"v": v}).to("out")
    driver = TestDriver(app)
    driver.send_many("in", [1, 2, 3, 4])
    assert driver.values("out") == [{"v": 1}, {"v": 3}, {"v": 4}]
    (letter,) = driver.records("in-dlq")
    assert letter.value == b"2"
    assert dict(letter.headers)["headwater.error.type"] == b"TypeError"


def test_async_failure_after_retries_is_dead_lettered() -> None:
    app = App("errors")
    calls = 0

    async def always_fails(v: int) -> int:
        nonlocal calls
        calls += 1
        raise TimeoutError("the service is down")

    app.stream("in", on_error="dead_letter").map_async(
        always_fails, retry=Retry(attempts=4, backoff_s=0.5)
    ).to("out")
    driver = TestDriver(app)
    driver.send("in", 7)
    assert calls == 4
    assert driver.values("out") == []
    (letter,) = driver.records("in-dlq")
    assert dict(letter.headers)["headwater.error.type"] == b"TimeoutError"


def test_async_failure_under_raise_names_the_record() -> None:
    app = App("errors")

    async def fails_on_two(v: int) -> int:
        if v == 2:
            raise RuntimeError("two")
        return v

    app.stream("in").map_async(fails_on_two).to("out")
    driver = TestDriver(app)
    with pytest.raises(OperatorError, match=r"in/0 offset 2: RuntimeError: two"):
        driver.send_many("in", [0, 1, 2, 3])


def test_retry_only_the_listed_errors() -> None:
    app = App("errors")
    calls = 0

    async def bad_input(v: int) -> int:
        nonlocal calls
        calls += 1
        raise ValueError("not retryable")

    app.stream("in", on_error="skip").map_async(
        bad_input, retry=Retry(attempts=5, on=(ConnectionError,))
    ).to("out")
    TestDriver(app).send("in", 1)
    assert calls == 1


def test_policies_parse() -> None:
    assert ErrorPolicy("dead_letter") is ErrorPolicy.DEAD_LETTER
    with pytest.raises(TopologyError, match="unknown error policy"):
        App("errors").stream("in", on_error="ignore")
    with pytest.raises(TopologyError, match="unknown error policy"):
        App("errors").stream("in").on_error("retry")


def test_a_sink_alone_under_dead_letter_gets_its_topic() -> None:
    app = App("errors")
    app.stream("in").on_error("dead_letter").to("out", serde=StrSerde())  # type: ignore[arg-type]
    driver = TestDriver(app)
    driver.send_many("in", ["ok", 5])
    assert driver.values("out") == ["ok"]
    assert [r.value for r in driver.records("in-dlq")] == [b"5"]
