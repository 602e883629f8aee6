"""``headwater ui``: its JSON endpoints and event stream, over real HTTP on 127.0.0.1.

One ``headwater ui`` subprocess on a data directory serves most tests of this module
(each uses topics and groups of its own); the token, the owner and the disconnect tests
start their own.
"""

from __future__ import annotations

import os
import re
import select
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from broker.running import BrokerProcess

from headwater.cli._local import LocalAccess
from headwater.cli._metrics_http import base_url, bind, serve_asgi
from headwater.cli._top import take_sample
from headwater.cli._ui_app import UiContext, create_app
from headwater.cli._ui_feed import Feed

from .helpers import HEADWATER, assert_error, env_without_data, run_headwater
from .ui_server import UiProcess, events, group_lag, topic_end, wait_for_overview

APP = """
from headwater.processing import App

app = App("ui-app")
clicks = app.stream("clicks")
clicks.filter(lambda e: e["n"] > 1).map(lambda e: {**e, "seen": True}).to("enriched")
clicks.to("copied")
"""

CLICKS = '{"user": "ada", "n": 1}\n{"user": "bob", "n": 2}\n{"user": "cy", "n": 3}\n'


def read_until(proc: subprocess.Popen[bytes], pattern: re.Pattern[str]) -> re.Match[str]:
    """Read ``proc``'s stderr as it comes until ``pattern`` matches it."""
    assert proc.stderr is not None
    fd, text, deadline = proc.stderr.fileno(), b"", time.monotonic() + 60
    while (found := pattern.search(text.decode(errors="replace"))) is None:
        left = deadline - time.monotonic()
        assert left > 0, f"not logged in time: {text!r}"
        if select.select([fd], [], [], left)[0]:
            chunk = os.read(fd, 65536)
            assert chunk, f"the process exited: {text!r}"
            text += chunk
    return found


def ok(result: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert result.returncode == 0, result.stderr
    return result


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data directory with clicks (2 partitions; 3 records in partition 0, with a
    header) and what the app made of them in enriched (with lineage headers)."""
    root = tmp_path_factory.mktemp("ui")
    data = root / "data"
    (root / "app.py").write_text(APP)
    ok(run_headwater(data, "topics", "create", "clicks", "--partitions", "2"))
    ok(run_headwater(data, "topics", "create", "enriched"))
    ok(run_headwater(data, "topics", "create", "copied"))
    ok(run_headwater(data, "produce", "clicks", "-p", "0", "-H", "origin=test", input=CLICKS))
    ok(run_headwater(data, "run", str(root / "app.py"), "--until-caught-up", "--quiet"))
    return data


@pytest.fixture(scope="module")
def ui(data: Path) -> Iterator[UiProcess]:
    """``headwater ui`` on the module's data directory, with its app's topology."""
    process = UiProcess(
        ["--data", str(data)], "--interval", "0.2", "--app", str(data.parent / "app.py")
    ).start()
    yield process
    status, log = process.stop()
    assert status == 0, log
    assert "Traceback" not in log, log


def test_a_produced_record_appears_and_lag_falls_after_a_commit(ui: UiProcess, data: Path) -> None:
    ok(run_headwater(data, "topics", "create", "orders"))
    view = wait_for_overview(ui, lambda v: topic_end(v, "orders") == 0)
    assert group_lag(view, "buyers") is None
    ok(run_headwater(data, "produce", "orders", input='{"id": 1}\n{"id": 2}\n{"id": 3}\n'))
    ok(run_headwater(data, "consume", "orders", "-g", "buyers", "--max", "1"))
    view = wait_for_overview(
        ui, lambda v: topic_end(v, "orders") == 3 and group_lag(v, "buyers") == 2
    )
    [orders] = [t for t in view["topics"] if t["name"] == "orders"]
    assert orders["records"] == 3 and orders["internal"] is False
    ok(run_headwater(data, "consume", "orders", "-g", "buyers"))  # to the end, committed
    view = wait_for_overview(ui, lambda v: group_lag(v, "buyers") == 0)
    [buyers] = [g for g in view["groups"] if g["group"] == "buyers"]
    assert buyers["partitions"] == [
        {
            "topic": "orders",
            "partition": 0,
            "committed": 3,
            "log_end_offset": 3,
            "lag": 0,
            "lag_before": buyers["partitions"][0]["lag_before"],
        }
    ]
    assert buyers["state"] == "Empty" and buyers["members"] == 0
    # The same, asked for directly, with the title of the log.
    overview = ui.get("api/overview").json()
    assert overview["title"] == f"data directory {data}"
    assert group_lag(overview, "buyers") == 0


def test_records_from_an_offset_or_a_time_decoded_with_their_headers(ui: UiProcess) -> None:
    page = ui.get("api/records", params={"topic": "clicks", "partition": 0}).json()
    assert (page["log_start_offset"], page["high_watermark"]) == (0, 3)
    values = [r["value"] for r in page["records"]]
    assert values == [
        {"json": {"user": "ada", "n": 1}},
        {"json": {"user": "bob", "n": 2}},
        {"json": {"user": "cy", "n": 3}},
    ]
    first = page["records"][0]
    assert first["headers"] == [{"name": "origin", "value": {"text": "test"}}]
    assert first["key"] is None and first["source"] is None
    from_one = ui.get("api/records", params={"topic": "clicks", "offset": 1, "limit": 1}).json()
    assert [r["offset"] for r in from_one["records"]] == [1]
    at_end = ui.get("api/records", params={"topic": "clicks", "offset": 3}).json()
    assert at_end["records"] == []
    stamp = page["records"][0]["timestamp"]
    by_time = ui.get("api/records", params={"topic": "clicks", "time": str(stamp)}).json()
    assert [r["offset"] for r in by_time["records"]] == [0, 1, 2]
    iso = ui.get("api/records", params={"topic": "clicks", "time": "2000-01-01T00:00:00Z"})
    assert [r["offset"] for r in iso.json()["records"]] == [0, 1, 2]
    future = ui.get("api/records", params={"topic": "clicks", "time": "2999-01-01T00:00:00"})
    assert future.json()["records"] == []
    empty = ui.get("api/records", params={"topic": "clicks", "partition": 1}).json()
    assert empty["records"] == [] and empty["high_watermark"] == 0


def test_lineage_leads_back_to_the_source_record(ui: UiProcess) -> None:
    page = ui.get("api/records", params={"topic": "enriched"}).json()
    assert [r["value"]["json"]["user"] for r in page["records"]] == ["bob", "cy"]
    first = page["records"][0]
    assert first["value"]["json"]["seen"] is True
    assert first["source"] == {"topic": "clicks", "partition": 0, "offset": 1}
    found = ui.get("api/lineage", params={"topic": "enriched", "partition": 0, "offset": 0})
    assert found.status_code == 200, found.text
    steps = found.json()["steps"]
    assert [s["position"] for s in steps] == [
        {"topic": "enriched", "partition": 0, "offset": 0},
        {"topic": "clicks", "partition": 0, "offset": 1},
    ]
    assert steps[1]["record"]["value"] == {"json": {"user": "bob", "n": 2}}
    assert steps[1]["record"]["source"] is None  # a source event


def test_apps_have_the_topology_describe_prints(ui: UiProcess, data: Path) -> None:
    [app] = ui.get("api/apps").json()
    described = ok(run_headwater(None, "describe", str(data.parent / "app.py"))).stdout
    assert app["name"] == "ui-app" and app["description"] == described
    by_id = {node["id"]: node for node in app["nodes"]}
    labels = [node["label"] for node in app["nodes"]]
    assert all(label in described for label in labels)
    source = next(n for n in app["nodes"] if n["role"] == "source")
    assert (source["topic"], source["layer"]) == ("clicks", 0)
    sinks = {n["topic"]: n for n in app["nodes"] if n["role"] == "sink"}
    assert set(sinks) == {"enriched", "copied"}
    # Layers: each edge goes one layer down or more; a node's slot is unique in its layer.
    for parent, child in app["edges"]:
        assert by_id[child]["layer"] > by_id[parent]["layer"]
    assert sinks["enriched"]["layer"] == 3 and sinks["copied"]["layer"] == 1
    places = [(n["layer"], n["slot"]) for n in app["nodes"]]
    assert len(set(places)) == len(places)
    assert app["layers"] == 4 and app["width"] == 2


@pytest.mark.parametrize(
    ("path", "params", "status", "fragment"),
    [
        ("api/records", {"topic": "nope"}, 404, "no topic named 'nope'"),
        ("api/records", {"topic": "clicks", "partition": 7}, 404, "has no partition 7"),
        ("api/records", {"topic": "clicks", "offset": 99}, 400, "past the end of clicks/0"),
        ("api/records", {"topic": "clicks", "offset": -1}, 400, "offset must be at least 0"),
        ("api/records", {"topic": "clicks", "offset": "x"}, 400, "offset must be an integer"),
        ("api/records", {"topic": "clicks", "offset": 0, "time": "1"}, 400, "not both"),
        ("api/records", {"topic": "clicks", "time": "yesterday"}, 400, "ISO 8601"),
        ("api/records", {"topic": "clicks", "limit": 0}, 400, "limit must be at least 1"),
        ("api/records", {"topic": "clicks", "limit": 501}, 400, "at most 500"),
        ("api/records", {}, 400, "topic is required"),
        ("api/lineage", {"topic": "clicks", "partition": 0, "offset": 9}, 404, "clicks/0"),
        ("api/lineage", {"topic": "nope", "partition": 0, "offset": 0}, 404, "nope"),
        ("api/lineage", {"topic": "clicks", "partition": 0}, 400, "offset is required"),
        ("api/nothing", {}, 404, "Not Found"),
        ("assets/secret.py", {}, 404, "no asset named 'secret.py'"),
    ],
)
def test_bad_requests_answer_4xx_with_a_json_error(
    ui: UiProcess, path: str, params: dict[str, Any], status: int, fragment: str
) -> None:
    response = ui.get(path, params=params)
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert body["status"] == status and fragment in body["error"], body


def test_it_is_read_only_and_answers_loopback_names_only(ui: UiProcess) -> None:
    for method in ("POST", "PUT", "DELETE"):
        response = httpx.request(method, ui.url + "api/records", timeout=30)
        assert response.status_code == 405
        assert response.json() == {"error": "Method Not Allowed", "status": 405}
    rebound = ui.get("api/overview", headers={"Host": "attacker.example:80"})
    assert rebound.status_code == 421
    assert "loopback only" in rebound.json()["error"]
    assert ui.get("api/overview", headers={"Host": "localhost"}).status_code == 200


def test_the_page_and_its_assets_are_served(ui: UiProcess) -> None:
    page = ui.get("")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert '<script src="/assets/ui.js"' in page.text
    script = ui.get("assets/ui.js")
    assert script.headers["content-type"].startswith("text/javascript")
    assert "/api/events" in script.text
    style = ui.get("assets/ui.css")
    assert style.headers["content-type"].startswith("text/css")
    # Nothing is fetched from elsewhere: the page works offline (SVG's namespace is a name).
    for text in (page.text, script.text.replace("http://www.w3.org/2000/svg", ""), style.text):
        assert "http://" not in text and "https://" not in text


def test_the_event_stream_gives_history_then_each_look(ui: UiProcess) -> None:
    got = list(events(ui.url + "api/events", limit=3))  # ends by itself after 3 overviews
    names = [name for name, _ in got]
    assert names == ["history", "overview", "overview", "overview"]
    history = got[0][1]
    assert history and all({"at", "rate_in", "lag"} <= set(point) for point in history)
    stamps = [data["at"] for name, data in got[1:]]
    assert stamps[0] < stamps[1] < stamps[2]  # each a new look
    assert all("clicks" in data["point"]["rate_in"] for _, data in got[1:])


def test_a_token_is_required_then_accepted(data: Path) -> None:
    ui = UiProcess(["--data", str(data)], "--token", "s3cret").start()
    try:
        missing = ui.get("api/overview")
        assert missing.status_code == 401
        assert missing.headers["www-authenticate"] == "Bearer"
        assert missing.json() == {"error": "a bearer token is required", "status": 401}
        wrong = ui.get(
            "api/records", headers={"Authorization": "Bearer s3cres"}, params={"topic": "clicks"}
        )
        assert wrong.status_code == 401 and wrong.json()["error"] == "the bearer token is wrong"
        assert ui.get("api/events", headers={"Authorization": "Basic s3cret"}).status_code == 401
        right = ui.get("api/overview", headers={"Authorization": "Bearer s3cret"})
        assert right.status_code == 200 and topic_end(right.json(), "clicks") == 3
        stream = events(ui.url + "api/events", headers={"Authorization": "Bearer s3cret"}, limit=1)
        assert [name for name, _ in stream] == ["history", "overview"]
        assert ui.get("").status_code == 200  # the page holds no data; it asks for the token
    finally:
        status, log = ui.stop()
    assert status == 0, log


def test_beyond_loopback_it_refuses_to_start_without_a_token(data: Path) -> None:
    result = run_headwater(data, "ui", "--listen", "0.0.0.0:0")
    assert_error(result, "--listen 0.0.0.0 reaches beyond this machine: give --token", status=2)
    empty = run_headwater(data, "ui", "--listen", "127.0.0.1:0", "--token", " ")
    assert_error(empty, "--token is empty", status=2)
    ui = UiProcess(["--data", str(data)], "--token", "s3cret")
    ui.command[ui.command.index("127.0.0.1:0")] = "0.0.0.0:0"
    ui.start()
    try:
        assert ui.url.startswith("http://0.0.0.0:")
        url = ui.url.replace("0.0.0.0", "127.0.0.1") + "api/overview"
        assert httpx.get(url, timeout=30).status_code == 401
        answer = httpx.get(url, headers={"Authorization": "Bearer s3cret"}, timeout=30)
        assert answer.status_code == 200
    finally:
        status, log = ui.stop()
    assert status == 0, log


def test_a_data_directory_is_seen_through_the_owner_that_serves_it(tmp_path: Path) -> None:
    data = tmp_path / "owned"
    ok(run_headwater(data, "topics", "create", "events"))
    broker = BrokerProcess(data).start()
    try:
        ui = UiProcess(["--data", str(data)], "--interval", "0.2").start()
        try:
            ok(
                run_headwater(
                    None, "produce", "events", "--bootstrap", broker.bootstrap, input='{"a": 1}\n'
                )
            )
            view = wait_for_overview(ui, lambda v: topic_end(v, "events") == 1)
            assert "error" not in view
            page = ui.get("api/records", params={"topic": "events"}).json()
            assert [r["value"] for r in page["records"]] == [{"json": {"a": 1}}]
        finally:
            status, log = ui.stop()
        assert status == 0, log
        assert "Traceback" not in log
    finally:
        assert broker.stop() == 0, broker.log()


async def test_an_event_stream_ends_when_its_client_leaves(tmp_path: Path) -> None:
    data = tmp_path / "data"
    assert (
        await anyio.run_process([HEADWATER, "--data", str(data), "topics", "create", "t"])
    ).returncode == 0
    access = LocalAccess(data)
    feed = Feed(lambda: take_sample(access, None, data, ()), 0.1)
    app = create_app(UiContext(access=access, feed=feed, apps=(), title="t"), None)
    sock = bind(("127.0.0.1", 0), "the ui")
    url = base_url(sock)
    async with anyio.create_task_group() as tg:
        await tg.start(serve_asgi, app, sock)
        await tg.start(feed.run)
        async with (
            httpx.AsyncClient(timeout=30) as client,
            client.stream("GET", url + "/api/events") as response,
        ):
            async for line in response.aiter_lines():
                if line.startswith("event: overview"):
                    break
            assert feed.statistics().watchers == 1
            # The client left mid-stream: the server stops watching the feed.
        with anyio.fail_after(30):
            while feed.statistics().watchers:
                await feed.next_look()
        assert feed.statistics().failures == 0
        tg.cancel_scope.cancel()


def test_a_broker_at_bootstrap_is_seen_and_browsed(broker: BrokerProcess) -> None:
    at = ["--bootstrap", broker.bootstrap]
    ok(run_headwater(None, "topics", "create", "ui-payments", "--partitions", "2", *at))
    ui = UiProcess([], *at, "--interval", "0.2").start()
    try:
        assert ui.get("api/overview").json()["title"] == f"the broker at {broker.bootstrap}"
        lines = '{"amount": 5}\n{"amount": 7}\n'
        ok(run_headwater(None, "produce", "ui-payments", "-p", "1", *at, input=lines))
        ok(run_headwater(None, "consume", "ui-payments", "-g", "ui-payers", "--max", "1", *at))
        view = wait_for_overview(ui, lambda v: group_lag(v, "ui-payers") == 1)
        assert topic_end(view, "ui-payments", 1) == 2
        ok(run_headwater(None, "consume", "ui-payments", "-g", "ui-payers", *at))
        wait_for_overview(ui, lambda v: group_lag(v, "ui-payers") == 0)
        page = ui.get("api/records", params={"topic": "ui-payments", "partition": 1, "offset": 1})
        assert [r["value"] for r in page.json()["records"]] == [{"json": {"amount": 7}}]
        past = ui.get("api/records", params={"topic": "ui-payments", "partition": 1, "offset": 3})
        assert past.status_code == 400 and "past the end" in past.json()["error"]
        trace = ui.get("api/lineage", params={"topic": "ui-payments", "partition": 1, "offset": 0})
        assert [s["record"]["value"] for s in trace.json()["steps"]] == [{"json": {"amount": 5}}]
        wide = '{"id": 123456789012345678901234567890}\n'  # beyond 64 bits: kept exactly
        ok(run_headwater(None, "produce", "ui-payments", "-p", "0", *at, input=wide))
        page = ui.get("api/records", params={"topic": "ui-payments", "partition": 0, "offset": 0})
        (value,) = [r["value"] for r in page.json()["records"]]
        assert value["json"] == {"id": 123456789012345678901234567890}
        assert '"id": 123456789012345678901234567890' in value["shown"]
    finally:
        status, log = ui.stop()
    assert status == 0, log
    assert "Traceback" not in log, log


def test_a_running_app_shows_its_operators_through_its_metrics(tmp_path: Path) -> None:
    data = tmp_path / "data"
    (tmp_path / "app.py").write_text(APP)
    for topic in ("clicks", "enriched", "copied"):
        ok(run_headwater(data, "topics", "create", topic))
    ok(run_headwater(data, "produce", "clicks", input=CLICKS))
    app = subprocess.Popen(
        [HEADWATER, "--data", str(data), "run", str(tmp_path / "app.py"), "-v", "--metrics",
         "127.0.0.1:0"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=env_without_data(),
    )  # fmt: skip
    try:
        logged = read_until(
            app, re.compile(r"(?s)(?=.*serving data directory)(?=.*serving metrics at (\S+))")
        )
        metrics_url = logged[1]
        assert app.stderr is not None  # drained from now on: a full pipe would stop the app
        threading.Thread(target=app.stderr.read, daemon=True).start()
        ui = UiProcess(
            ["--data", str(data)], "--interval", "0.2", "--app-metrics", metrics_url,
            "--app", str(tmp_path / "app.py"),
        ).start()  # fmt: skip
        try:
            view = wait_for_overview(
                ui,
                lambda v: any(
                    op["records_in"] == 3 and op["operator"].startswith("#1 source")
                    for a in v["apps"]
                    for op in a["operators"]
                ),
            )
            [shown] = view["apps"]
            assert shown["name"] == "ui-app"
            operators = {op["operator"]: op for op in shown["operators"]}
            [topology] = ui.get("api/apps").json()
            labels = {node["label"] for node in topology["nodes"]}
            assert set(operators) <= labels  # the page puts each operator's rates on its node
            [filtered] = [op for name, op in operators.items() if " filter " in name]
            assert (filtered["records_in"], filtered["records_out"]) == (3, 2)
            assert topic_end(view, "enriched") == 2  # looked at through the app that owns it
        finally:
            status, log = ui.stop()
        assert status == 0, log
    finally:
        app.send_signal(signal.SIGINT)
        app.wait(timeout=60)
