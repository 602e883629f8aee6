"""``headwater ui`` in a real browser: Debian's headless Chromium, driven by selenium.

The page is loaded as a person would load it; the test produces a record and commits a
group's offsets with the real commands, and waits (on the page's DOM, never on a timer)
for the record to appear and the lag to fall, then browses the records and follows a
lineage link. A screenshot of the page is saved in the test's temporary directory and as
``build/test-screenshots/ui.png``. One browser serves the whole module.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from .helpers import run_headwater
from .test_ui import APP, CLICKS
from .ui_server import WAIT_S, UiProcess

webdriver = pytest.importorskip(
    "selenium.webdriver", reason="selenium is not installed (pip install -e '.[test]')"
)
from selenium.common.exceptions import StaleElementReferenceException  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
#: Flags that let Chromium run headless on a machine without a display or a network.
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1280,2000",
)
SCREENSHOTS = Path(__file__).resolve().parents[2] / "build" / "test-screenshots"

Driver = Any


@pytest.fixture(scope="module")
def browser() -> Iterator[Driver]:
    """One headless Chromium for the module, with a fresh profile."""
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.exists()]
    if missing:
        pytest.skip(
            f"{' and '.join(missing)} missing: install Debian's chromium and chromium-driver "
            "(make chromium)"
        )
    profile = tempfile.mkdtemp(prefix="headwater-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (*FLAGS, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(str(CHROMEDRIVER)))
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def ok(result: subprocess.CompletedProcess[str]) -> None:
    assert result.returncode == 0, result.stderr


def wait(driver: Driver, condition: Callable[[Driver], Any], what: str) -> Any:
    """Wait until ``condition`` on the page is true (re-checked as the DOM changes; the
    live tables are redrawn as the log changes, so an element found may be gone when
    read: that check is made again)."""
    return WebDriverWait(
        driver, WAIT_S, poll_frequency=0.05, ignored_exceptions=(StaleElementReferenceException,)
    ).until(condition, what)


def text_of(driver: Driver, selector: str) -> str | None:
    """The text of the first element ``selector`` finds (None: none), read in one step."""
    text: str | None = driver.execute_script(
        "const found = document.querySelector(arguments[0]);"
        "return found === null ? null : found.innerText;",
        selector,
    )
    return text


def click(driver: Driver, selector: str) -> None:
    """Click the element ``selector`` finds, as a person would, once it is there."""
    wait(driver, lambda d: d.find_element(By.CSS_SELECTOR, selector).click() or True, selector)


@pytest.fixture
def data(tmp_path: Path) -> Path:
    """A data directory with clicks (2 records) and what the app made of them."""
    data = tmp_path / "data"
    (tmp_path / "app.py").write_text(APP)
    for topic in ("clicks", "enriched", "copied"):
        ok(run_headwater(data, "topics", "create", topic))
    ok(
        run_headwater(
            data, "produce", "clicks", "-H", "origin=test", input=CLICKS[: CLICKS.rindex("{")]
        )
    )
    ok(run_headwater(data, "run", str(tmp_path / "app.py"), "--until-caught-up", "--quiet"))
    return data


def test_the_page_shows_a_produced_record_and_lag_falling(
    browser: Driver, data: Path, tmp_path: Path
) -> None:
    ui = UiProcess(["--data", str(data)], "--interval", "0.3", "--app", str(tmp_path / "app.py"))
    ui.start()
    try:
        browser.get(ui.url)
        wait(browser, lambda d: text_of(d, "#status") == "live", "the page follows the log")
        end = '#topics tr[data-topic="clicks"][data-partition="0"] td.end'
        assert text_of(browser, end) == "2"
        nodes = browser.find_elements(
            By.CSS_SELECTOR, 'svg.topology[data-app="ui-app"] g[data-node]'
        )
        assert len(nodes) == 5  # source, filter, map, and the two sinks

        ok(run_headwater(data, "produce", "clicks", input=CLICKS[CLICKS.rindex("{") :]))
        wait(browser, lambda d: text_of(d, end) == "3", "the produced record appears")

        lag = '#groups tr[data-group="readers"][data-topic="clicks"][data-partition="0"] td.lag'
        ok(run_headwater(data, "consume", "clicks", "-g", "readers", "--max", "1"))
        wait(browser, lambda d: text_of(d, lag) == "2", "the group's lag shows")
        ok(run_headwater(data, "consume", "clicks", "-g", "readers"))
        wait(browser, lambda d: text_of(d, lag) == "0", "the lag falls")
        chart = browser.find_elements(By.CSS_SELECTOR, '#chart-lag polyline[data-name="readers"]')
        assert chart, "the lag chart draws the group"

        click(browser, '#topics tr[data-topic="clicks"][data-partition="0"] a.browse')
        rows = "#records tbody tr[data-offset]"
        wait(browser, lambda d: len(d.find_elements(By.CSS_SELECTOR, rows)) == 3, "records")
        values = [e.text for e in browser.find_elements(By.CSS_SELECTOR, f"{rows} td.value")]
        assert '"user": "ada"' in values[0] and '"user": "cy"' in values[2]
        assert "origin: test" in browser.find_element(By.CSS_SELECTOR, rows).text

        # The lineage link of a record the app wrote leads to its source record.
        click(browser, '#topics tr[data-topic="enriched"][data-partition="0"] a.browse')
        first = '#records tbody tr[data-topic="enriched"][data-offset="0"] a.source'
        wait(browser, lambda d: text_of(d, first) == "clicks/0/1", "the lineage link")
        click(browser, first)
        picked = '#records tbody tr.picked[data-topic="clicks"][data-offset="1"]'
        wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, picked), "the source record")
        steps = "#lineage-steps li"
        wait(browser, lambda d: len(d.find_elements(By.CSS_SELECTOR, steps)) == 1, "its lineage")
        assert "a source event" in text_of(browser, steps)

        # Integers past 2**53 show as written, not as the browser's JSON.parse reads them.
        wide = '{"id": 123456789012345678901234567890, "seq": 9007199254740993}\n'
        ok(run_headwater(data, "produce", "copied", input=wide))
        click(browser, '#topics tr[data-topic="copied"][data-partition="0"] a.browse')
        cells = '#records tbody tr[data-topic="copied"] td.value'

        def shown(d: Driver) -> bool:
            texts = [e.text for e in d.find_elements(By.CSS_SELECTOR, cells)]
            return any('"seq": 9007199254740993' in t for t in texts) and any(
                '"id": 123456789012345678901234567890' in t for t in texts
            )

        wait(browser, shown, "the integers as written")

        browser.execute_script("window.scrollTo(0, 0)")
        shot = tmp_path / "ui.png"
        assert browser.save_screenshot(str(shot))
        assert shot.read_bytes().startswith(b"\x89PNG")
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shot, SCREENSHOTS / "ui.png")
    finally:
        status, log = ui.stop()
    assert status == 0, log
    assert "Traceback" not in log, log


def test_the_page_asks_for_the_token_and_uses_it(browser: Driver, data: Path) -> None:
    ui = UiProcess(["--data", str(data)], "--interval", "0.3", "--token", "s3cret").start()
    try:
        browser.get(ui.url)
        wait(browser, lambda d: d.find_element(By.ID, "token-form").is_displayed(), "the form")
        browser.find_element(By.ID, "token").send_keys("s3cret")
        browser.find_element(By.CSS_SELECTOR, "#token-form button").click()
        wait(browser, lambda d: text_of(d, "#status") == "live", "the page follows the log")
        end = '#topics tr[data-topic="clicks"][data-partition="0"] td.end'
        assert text_of(browser, end) == "2"
    finally:
        status, log = ui.stop()
    assert status == 0, log
