"""The test driver, and the README's example of it (run here so that it never rots)."""

from __future__ import annotations

import doctest
import re
from pathlib import Path

import pytest

from headwater.processing import App, OperatorError, TopologyError, testing
from headwater.processing.testing import TestDriver

README = Path(__file__).parents[2] / "README.md"


def test_readme_examples_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # the examples use ./headwater-data
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.DOTALL)
    assert len(blocks) == 3
    store_example, app_example, test_example = blocks
    exec(compile(store_example, "README.md", "exec"), {"__name__": "readme"})
    assert (tmp_path / "headwater-data" / "clicks" / "topic.json").exists()
    namespace: dict[str, object] = {"__name__": "readme"}
    exec(compile(app_example, "README.md", "exec"), namespace)
    assert isinstance(namespace["app"], App)
    namespace = {"__name__": "readme"}
    exec(compile(test_example, "README.md", "exec"), namespace)
    tests = [value for name, value in namespace.items() if name.startswith("test_")]
    assert tests
    for test in tests:
        test()  # type: ignore[operator]


def test_module_docstring_example() -> None:
    result = doctest.testmod(testing)
    assert result.attempted > 0 and result.failed == 0


def test_time_advances_and_stamps_records() -> None:
    app = App("t")
    app.stream("in").to("out")
    driver = TestDriver(app, start_ms=1000)
    driver.send("in", 1)
    driver.advance(250)
    driver.send("in", 2)
    driver.send("in", 3, timestamp=5)
    assert [r.timestamp for r in driver.records("out")] == [1000, 1250, 5]
    assert driver.now_ms == 1250
    with pytest.raises(ValueError, match="forward"):
        driver.advance(-1)


def test_driver_is_deterministic() -> None:
    import anyio

    def build() -> App:
        app = App("t")

        async def jitter(n: int) -> int:
            await anyio.sleep((n * 7919) % 13 / 1000)
            return n

        app.stream("in").map_async(jitter, concurrency=5).key_by(lambda n: n % 3).to("out")
        return app

    runs = []
    for _ in range(3):
        driver = TestDriver(build(), partitions={"out": 3})
        driver.send_many("in", range(40))
        runs.append(driver.records("out"))
    assert runs[0] == runs[1] == runs[2]


def test_driver_errors() -> None:
    app = App("t")
    app.stream("in").map(lambda v: v["x"]).to("out")
    driver = TestDriver(app)
    with pytest.raises(TopologyError, match="not an input topic"):
        driver.send("out", 1)
    with pytest.raises(TopologyError, match="no partition 3"):
        driver.send("in", {"x": 1}, partition=3)
    with pytest.raises(TopologyError, match="does not use topic"):
        driver.records("elsewhere")
    with pytest.raises(OperatorError):
        driver.send("in", {"y": 1})
    with pytest.raises(TopologyError, match="writes nothing"):
        TestDriver(App("empty"))


def test_keyed_sends_are_placed_like_the_log_places_them() -> None:
    from headwater.store import partition_for_key

    app = App("t")
    app.stream("in").to("out")
    driver = TestDriver(app, partitions={"in": 4})
    driver.send("in", 1, key="user-7")
    driver.send("in", 2, key=b"user-7")  # bytes: stored as they are
    first, second = sorted(driver.records("out"), key=lambda r: r.value)
    assert first.key == b'"user-7"' and first.partition == partition_for_key(b'"user-7"', 4)
    assert second.key == b"user-7" and second.partition == partition_for_key(b"user-7", 4)
