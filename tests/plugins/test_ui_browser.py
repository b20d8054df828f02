"""The UI for real: a real ``airflow api-server`` (SQLite, simple auth manager) and Debian's Chromium.

The server reads the session's workspace of real runs (tests/plugins/conftest.py) plus the run a
real ``ScriptRunOperator`` task submitted through ``airflow dags test``. Screenshots are taken on
every run into a temporary folder; with ``MLTRAIN_UPDATE_DOC_IMAGES=1`` they replace docs/images/
(the pictures in docs/ui.md), so a plain ``make test`` leaves the tree clean.
"""

from __future__ import annotations

import atexit
import json
import os
import re
import secrets
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import pytest

from airflow_provider_mltrain import Experiment, ScriptRunConfig
from tests.plugins.conftest import EXPERIMENT, MODEL, PROBE, PROBE_IMG
from tests.targets.harnesses import service_missing

pytestmark = [pytest.mark.integration, pytest.mark.airflow]

ROOT = Path(__file__).resolve().parents[2]
IMAGES = (
    ROOT / "docs" / "images"
    if os.environ.get("MLTRAIN_UPDATE_DOC_IMAGES") == "1"
    else Path(tempfile.mkdtemp(prefix="mltrain-ui-screenshots-"))
)
if IMAGES.name.startswith("mltrain-ui-screenshots-"):
    atexit.register(shutil.rmtree, IMAGES, ignore_errors=True)
AIRFLOW = str(Path(sys.executable).with_name("airflow"))
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
DAG_ID = "mltrain_ui_dag"
DAG_EXPERIMENT = "ui-dag"

DAG_FILE = """
from datetime import datetime

from airflow.sdk import DAG

from airflow_provider_mltrain.operators.script_run import ScriptRunOperator

with DAG({dag_id!r}, schedule=None, start_date=datetime(2026, 1, 1), catchup=False):
    ScriptRunOperator(
        task_id="train",
        experiment_name={experiment!r},
        source_directory={source!r},
        script="train.py",
        arguments=["--lr", 0.05],
        tags={{"probe": {probe!r}}},
    )
"""

TICKER = """
import os, sys, time
from mltrain import Run

run = Run.get_context()
deadline = time.time() + 120
i = 0
while time.time() < deadline:
    print(f"tick {i}", flush=True)
    run.log("ticks", i, step=i)
    if os.path.exists(sys.argv[1]):
        break
    i += 1
    time.sleep(0.3)
print("released", flush=True)
"""


@dataclass
class Server:
    url: str
    home: Path
    passwords: dict[str, str]
    dag_run_id: str
    dag_mltrain_run: str


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(home: Path, port: int, workspace: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "MLTRAIN"))}
    env.update(
        AIRFLOW_HOME=str(home),
        AIRFLOW__CORE__DAGS_FOLDER=str(home / "dags"),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS="admin:admin,viewer:viewer",
        AIRFLOW__API__BASE_URL=f"http://127.0.0.1:{port}",
        MLTRAIN_WORKSPACE=str(workspace),
    )
    return env


def _wait_until_up(proc: subprocess.Popen, url: str, log: Path) -> None:
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"airflow api-server exited with {proc.returncode}:\n{log.read_text()[-4000:]}")
        try:
            with urllib.request.urlopen(f"{url}/api/v2/monitor/health", timeout=5):
                return
        except OSError:
            time.sleep(0.5)
    pytest.fail(f"airflow api-server did not answer within 240 s:\n{log.read_text()[-4000:]}")


@pytest.fixture(scope="module")
def server(tmp_path_factory, populated, make_tree_module) -> Iterator[Server]:
    home = tmp_path_factory.mktemp("airflow-ui-home")
    port = _free_port()
    env = _env(home, port, populated.root)
    source = make_tree_module(
        {
            "train.py": "from mltrain import Run\nrun = Run.get_context()\n"
            "for step in range(12):\n    run.log('loss', 1.0 / (step + 1), step=step)\n"
            f"print('log line with a probe:', {PROBE!r})\n"
        }
    )
    (home / "dags").mkdir()
    (home / "dags" / "ui_dag.py").write_text(
        textwrap.dedent(
            DAG_FILE.format(dag_id=DAG_ID, experiment=DAG_EXPERIMENT, source=str(source), probe=PROBE)
        )
    )
    passwords = {"admin": secrets.token_urlsafe(12), "viewer": secrets.token_urlsafe(12)}
    (home / "simple_auth_manager_passwords.json.generated").write_text(json.dumps(passwords))
    subprocess.run([AIRFLOW, "db", "migrate"], env=env, check=True, capture_output=True, timeout=300)
    test = subprocess.run(
        [AIRFLOW, "dags", "test", DAG_ID], env=env, capture_output=True, text=True, timeout=600
    )
    assert test.returncode == 0, test.stdout[-3000:] + test.stderr[-3000:]
    with sqlite3.connect(home / "airflow.db") as db:
        (dag_run_id,) = db.execute("SELECT run_id FROM dag_run WHERE dag_id = ?", (DAG_ID,)).fetchone()
    (mltrain_run,) = [r["id"] for r in populated.ws.store.list_runs(experiment=DAG_EXPERIMENT)]
    log = home / "api-server.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [AIRFLOW, "api-server", "--host", "127.0.0.1", "--port", str(port)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_until_up(proc, url, log)
        yield Server(url, home, passwords, dag_run_id, mltrain_run)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)


@pytest.fixture(scope="module")
def make_tree_module(tmp_path_factory):
    def make(files: dict[str, str]) -> Path:
        root = tmp_path_factory.mktemp("ui-dag-src")
        for rel, content in files.items():
            (root / rel).write_text(content)
        return root

    return make


@pytest.fixture(scope="module")
def browser():
    chromium = os.environ.get("MLTRAIN_TEST_CHROMIUM") or "/usr/bin/chromium"
    if not os.access(chromium, os.X_OK):
        service_missing(f"no Chromium at {chromium}: run tests/services/chromium.sh (make test does)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        service_missing("Python playwright is not installed: pip install -e '.[dev]'")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1360, "height": 900})
    page = context.new_page()
    page.dialogs = []
    page.on("dialog", lambda d: (page.dialogs.append(d.message), d.dismiss()))
    yield page
    context.close()


def login(page, server: Server, user: str = "viewer", start: str = "/mltrain/") -> None:
    page.goto(server.url + start)
    page.get_by_label("Username").fill(user)
    page.get_by_label("Password").fill(server.passwords[user])
    page.get_by_role("button", name="Sign in").click()
    # The api-server renders the page after the login's redirect: over 30 s on a loaded 2-core VM.
    # Waited for until the response arrives ("commit"), then until the page's HTML is parsed, not
    # the load event: a live run's page loads its log and charts meanwhile, and the callers wait
    # for what they need of those. Without the second wait, a check that does not wait (count(),
    # is_visible()) could look at a page half received: one CI run found no probe text that way.
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    try:
        page.wait_for_url(server.url + start, timeout=90_000, wait_until="commit")
        page.wait_for_load_state("domcontentloaded", timeout=90_000)
    except PlaywrightTimeout:
        raise AssertionError(f"signed in as {user}, the browser is at {page.url}, not {start}") from None


def shot(page, name: str, full_page: bool = True) -> None:
    IMAGES.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(IMAGES / name), full_page=full_page)
    assert (IMAGES / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def assert_chart_drawn(frame) -> None:
    chart = frame.locator("svg.mltrain-chart").first
    chart.wait_for()
    assert int(chart.get_attribute("data-points")) > 0
    points = chart.locator("polyline.series").first.get_attribute("points")
    assert len(points.split()) > 1
    box = chart.bounding_box()
    assert box and box["width"] > 100 and box["height"] > 50


# -- tests ---------------------------------------------------------------------------------------


def _get(url: str, headers: dict[str, str] | None = None) -> tuple[int, str, dict[str, str]]:
    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args, **kwargs):
            return None

    opener = urllib.request.build_opener(NoRedirect)
    try:
        with opener.open(urllib.request.Request(url, headers=headers or {}), timeout=30) as r:
            return r.status, r.read().decode(), dict(r.headers)
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode(), dict(err.headers)


def test_without_login_no_run_data(server, populated):
    run_id = populated.runs["first"]
    for path in (
        "/mltrain/",
        f"/mltrain/experiments/{EXPERIMENT}",
        f"/mltrain/runs/{run_id}",
        f"/mltrain/runs/{run_id}/files/outputs/model.txt",
        f"/mltrain/api/runs/{run_id}",
        f"/mltrain/api/runs/{run_id}/log",
        f"/mltrain/api/experiments/{EXPERIMENT}/runs",
    ):
        for headers in ({}, {"Cookie": "_token=forged"}, {"Authorization": "Bearer forged"}):
            status, body, response_headers = _get(server.url + path, headers)
            assert status in (401, 403, 303), (path, headers, status)
            assert run_id not in body and "weights" not in body
            if status == 303:
                assert response_headers["location"].startswith("/auth/login?next=")


def token(server: Server, user: str = "viewer") -> str:
    body = json.dumps({"username": user, "password": server.passwords[user]}).encode()
    request = urllib.request.Request(
        f"{server.url}/auth/token", data=body, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=30) as r:
        return json.load(r)["access_token"]


def test_a_token_from_the_auth_manager_reads_the_api(server, populated):
    status, text, _ = _get(
        f"{server.url}/mltrain/api/runs/{populated.runs['first']}",
        {"Authorization": f"Bearer {token(server)}"},
    )
    assert status == 200 and json.loads(text)["arguments"][-1] == PROBE
    status, text, _ = _get(f"{server.url}/mltrain/openapi.json")
    assert status == 200 and "/api/runs/{run_id}/log" in json.loads(text)["paths"]


def test_the_operators_extra_link_opens_its_run_page(server):
    auth = {"Authorization": f"Bearer {token(server)}"}
    status, text, _ = _get(
        f"{server.url}/api/v2/dags/{DAG_ID}/dagRuns/{quote(server.dag_run_id, safe='')}"
        "/taskInstances/train/links",
        auth,
    )
    assert status == 200, text
    links = json.loads(text)
    links = links.get("extra_links", links)
    (url,) = [u for u in links.values() if u]
    assert url == f"{server.url}/mltrain/runs/{server.dag_mltrain_run}"
    status, text, _ = _get(url, auth)
    assert status == 200 and 'id="run-status"' in text


def test_list_runs_open_one_see_its_chart_and_compare(page, server, populated):
    login(page, server)
    page.get_by_role("link", name=EXPERIMENT).click()
    page.locator("#runs").wait_for()
    assert page.locator("#runs tbody tr").count() == 4
    shot(page, "ui-runs.png")
    page.goto(f"{server.url}/mltrain/")
    shot(page, "ui-experiments.png")
    page.get_by_role("link", name=EXPERIMENT).click()
    page.get_by_role("link", name=populated.runs["first"]).click()
    page.wait_for_url(f"**/mltrain/runs/{populated.runs['first']}")
    assert_chart_drawn(page)
    assert page.locator("svg.mltrain-chart").count() == 3  # loss, accuracy, the list; the rest are values
    assert page.locator("#single-values").inner_text().split() == [
        "final_accuracy",
        "0.85",
        "confusion.tp",
        "10",
        "confusion.fp",
        "2",
    ]
    assert page.locator("#run-status").inner_text() == "Completed"
    shot(page, "ui-run.png")

    page.goto(f"{server.url}/mltrain/experiments/{EXPERIMENT}")
    page.check(f"input[value='{populated.runs['first']}']")
    page.check(f"input[value='{populated.runs['second']}']")
    page.get_by_role("button", name="Compare").click()
    page.locator("#metrics-table").wait_for()
    page.get_by_role("link", name="train.py").click()
    page.locator("pre.diff").wait_for()
    assert 'print("done, version 2")' in page.locator("pre.diff").inner_text()
    assert_chart_drawn(page)
    shot(page, "ui-compare.png")
    assert page.dialogs == []


def test_probe_strings_render_as_text(page, server, populated):
    login(page, server, start=f"/mltrain/runs/{populated.runs['first']}")
    assert page.get_by_text(f"probe={PROBE}").is_visible()
    assert page.get_by_text(f"line with a probe: {PROBE}").is_visible()
    assert PROBE in page.locator("#tags").inner_text()
    assert PROBE_IMG in page.locator("#tags").inner_text()
    assert PROBE in page.locator("#arguments").inner_text()
    assert f"line with a probe: {PROBE}" in page.locator("#log").inner_text()
    assert page.locator("script").count() == 1  # only the app's own file
    assert page.locator("img").count() == 0
    page.goto(f"{server.url}/mltrain/experiments/{EXPERIMENT}?tag=html")
    assert PROBE_IMG in page.locator("#runs").inner_text()
    page.goto(f"{server.url}/mltrain/experiments/{quote(PROBE_IMG, safe='')}")
    assert PROBE_IMG in page.locator(".error-message").inner_text()
    assert page.dialogs == []


def test_task_instance_tab_and_navigation_entry(page, server):
    login(page, server, start="/")
    ti_page = f"/dags/{DAG_ID}/runs/{quote(server.dag_run_id, safe='')}/tasks/train"
    page.goto(server.url + ti_page)
    page.get_by_role("link", name="ML Training run").click()
    page.frame_locator("iframe").locator("svg.mltrain-chart").first.wait_for()
    frame = next(f for f in page.frames if "/mltrain/" in f.url)
    assert frame.url == f"{server.url}/mltrain/runs/{server.dag_mltrain_run}"
    assert_chart_drawn(frame)
    assert PROBE in frame.locator("#tags").inner_text()
    shot(page, "ui-task-instance-tab.png", full_page=False)

    page.goto(server.url + "/")
    nav = page.get_by_role("link", name="Training", exact=True).first
    label_fits = """a => {
        const labels = [...a.querySelectorAll("*")].filter(
            e => e.childElementCount === 0 && e.textContent.trim() === "Training");
        return labels.length > 0 && labels.every(e => e.scrollWidth <= e.clientWidth);
    }"""
    assert nav.evaluate(label_fits)  # the whole label shows, not "ML Traini…"
    nav.click()
    # Airflow keeps the address bar in step with the page shown in the iframe: /plugin/mltrain, then
    # /plugin/mltrain/<the iframe's path> once it has loaded (a busy 2-core machine loads it slowly).
    page.wait_for_url(re.compile(r".*/plugin/mltrain(/mltrain/)?$"), timeout=90_000)
    frame = page.frame_locator("iframe").first
    frame.get_by_role("link", name=DAG_EXPERIMENT).wait_for()
    shot(page, "ui-nav.png", full_page=False)
    assert page.dialogs == []

    # A page reached inside the iframe has an address of its own: copied and opened again (a link
    # shared with a colleague), it shows the same page.
    frame.get_by_role("link", name=DAG_EXPERIMENT).click()
    page.wait_for_url(f"**/plugin/mltrain/mltrain/experiments/{DAG_EXPERIMENT}", timeout=90_000)
    shared = page.url
    page.goto(server.url + "/")
    page.goto(shared)
    inner = page.frame_locator("iframe").first
    inner.locator(f"h1:has-text('{DAG_EXPERIMENT}')").wait_for(timeout=90_000)
    assert next(f for f in page.frames if "/mltrain/" in f.url).url.endswith(
        f"/mltrain/experiments/{DAG_EXPERIMENT}"
    )


def test_live_tail_and_refresh_follow_a_running_run(page, server, populated, tmp_path, make_tree):
    from playwright.sync_api import expect

    release = tmp_path / "release"
    source = make_tree({"ticker.py": TICKER})
    run = Experiment(populated.ws, "live").submit(
        ScriptRunConfig(source, "ticker.py", arguments=[str(release)])
    )
    try:
        login(page, server, start=f"/mltrain/runs/{run.id}")
        page.wait_for_function("() => document.getElementById('log').textContent.includes('tick 1')")
        first = page.locator("#log").inner_text()
        seen = max(int(line.split()[1]) for line in first.splitlines() if line.startswith("tick "))
        page.wait_for_function(
            "n => document.getElementById('log').textContent.includes('tick ' + n)", arg=seen + 3
        )
        listing = page.context.new_page()
        listing.goto(f"{server.url}/mltrain/experiments/live")
        assert listing.locator("body").get_attribute("data-reload") == "5"  # reloads while active
        assert listing.locator(f"tr[data-run-id='{run.id}'] .status").inner_text() == "Running"
        listing.locator(f"tr[data-run-id='{run.id}'] td.num [data-elapsed]").wait_for()  # a ticking duration
        release.write_text("")
        # locator waits survive the reload the page does once the run has ended
        page.locator("#run-status.status-completed").wait_for(timeout=120_000)
        # a locator wait survives the list's own reloads
        listing.locator(f"tr[data-run-id='{run.id}'] .status-completed").wait_for(timeout=60_000)
        assert listing.locator("body").get_attribute("data-reload") is None
        expect(page.locator("#log")).to_contain_text("released", timeout=60_000)
        assert_chart_drawn(page)
    finally:
        release.write_text("")
        run.wait_for_completion(raise_on_error=False, timeout=120)


def _box(locator):
    box = locator.bounding_box()
    assert box, locator
    return box


def _overlap(a, b) -> bool:
    return not (
        a["x"] + a["width"] <= b["x"]
        or b["x"] + b["width"] <= a["x"]
        or a["y"] + a["height"] <= b["y"]
        or b["y"] + b["height"] <= a["y"]
    )


def _chart_order(page) -> list[str]:
    return page.locator("#charts > figure").evaluate_all("fs => fs.map(f => f.dataset.metric)")


def test_charts_in_logging_order_pinned_per_experiment_legends_off_the_plot(page, server, populated):
    login(page, server, start=f"/mltrain/runs/{populated.runs['first']}")
    assert _chart_order(page) == ["loss", "accuracy", "lr_schedule"]  # as the script logged them
    assert page.locator("figure[data-metric='final_accuracy']").count() == 0
    assert "0.85" in page.locator("#single-values").inner_text()
    # integer steps: no tick like 1.75 on a step axis
    ticks = page.locator("figure[data-metric='loss'] text.x-tick").all_text_contents()
    assert ticks and all(t.isdigit() for t in ticks)

    page.locator("figure[data-metric='lr_schedule'] button.pin").click()
    assert _chart_order(page) == ["lr_schedule", "loss", "accuracy"]
    page.reload()
    assert _chart_order(page) == ["lr_schedule", "loss", "accuracy"]
    assert (
        page.locator("figure[data-metric='lr_schedule'] button.pin").get_attribute("aria-pressed") == "true"
    )
    page.goto(f"{server.url}/mltrain/runs/{populated.runs['second']}")  # the same experiment
    assert _chart_order(page) == ["lr_schedule", "loss", "accuracy"]
    shot(page, "ui-run-pinned.png", full_page=False)
    page.locator("figure[data-metric='lr_schedule'] button.pin").click()
    assert _chart_order(page) == ["loss", "accuracy", "lr_schedule"]

    three = [populated.runs["first"], populated.runs["second"], populated.runs["failed"]]
    page.goto(f"{server.url}/mltrain/compare?" + "&".join(f"runs={quote(r, safe='')}" for r in three))
    figures = page.locator("#charts > figure")
    assert figures.count() == 3
    for i in range(figures.count()):
        plot = _box(figures.nth(i).locator("rect.plot"))
        legend = figures.nth(i).locator("text.legend")
        assert legend.count() == 3
        for k in range(3):
            assert not _overlap(_box(legend.nth(k)), plot), (i, k)
    assert page.dialogs == []


def test_compare_three_runs_differences_and_parallel_coordinates(page, server, populated):
    three = [populated.runs["first"], populated.runs["second"], populated.runs["from_dag"]]
    login(page, server, start="/mltrain/compare?" + "&".join(f"runs={quote(r, safe='')}" for r in three))
    lr = page.locator("#param-differences tr[data-name='--lr']")
    assert "differs" in lr.get_attribute("class")
    assert lr.locator("td").all_inner_texts()[2:] == ["0.1", "0.3", "0.2"]  # oldest run first
    assert page.locator("#param-differences tr[data-name='--note']").count() == 1
    assert page.locator("#param-same").count() == 1 and not page.locator("#param-same").is_visible()
    assert page.locator("#compared-runs td.arguments").first.inner_text().startswith("--lr 0.1")
    parallel = page.locator("svg#parallel")
    parallel.scroll_into_view_if_needed()
    assert _box(parallel)["width"] > 500
    labels = parallel.locator("polyline.series").evaluate_all("ls => ls.map(l => l.dataset.label)")
    assert set(labels) == set(three)  # a line per run (broken where a run lacks a parameter)
    names = [
        n.strip()
        for n in parallel.locator("text.pc-name").evaluate_all("ts => ts.map(t => t.firstChild.data)")
    ]
    assert "lr" in names and "loss" in names
    shot(page, "ui-compare-parallel.png")
    assert page.dialogs == []


def test_cancel_button_for_who_may_and_a_ticking_duration(
    browser, page, server, populated, tmp_path, make_tree
):
    release = tmp_path / "release"
    run = Experiment(populated.ws, "live").submit(
        ScriptRunConfig(make_tree({"ticker.py": TICKER}), "ticker.py", arguments=[str(release)])
    )
    try:
        viewer = browser.new_context(viewport={"width": 1360, "height": 900}).new_page()
        login(viewer, server, "viewer", start=f"/mltrain/runs/{run.id}")
        viewer.locator("#run-status.status-running").wait_for(timeout=120_000)
        viewer.reload()
        assert viewer.locator("#cancel").count() == 0  # a viewer may not edit DAGs: no button
        token = viewer.locator("meta[name='mltrain-csrf']").get_attribute("content")
        post = """([url, token]) => fetch(url, {method: "POST", credentials: "same-origin",
            headers: {"Content-Type": "application/x-www-form-urlencoded"},
            body: token ? "csrf_token=" + token : ""}).then(r => r.status)"""
        cancel_url = f"{server.url}/mltrain/runs/{run.id}/cancel"
        assert viewer.evaluate(post, [cancel_url, token]) == 403
        viewer.context.close()

        login(page, server, "admin", start=f"/mltrain/runs/{run.id}")
        duration = page.locator("#run-duration [data-elapsed]")
        first = duration.inner_text()
        page.wait_for_function(
            "t => document.querySelector('#run-duration [data-elapsed]').textContent !== t", arg=first
        )
        assert page.evaluate(post, [cancel_url, None]) == 403  # no CSRF token: refused
        assert page.evaluate(post, [cancel_url, "0" * 64]) == 403
        assert populated.ws.store.get_run(run.id)["status"] == "Running"
        page.locator("#cancel summary").click()
        shot(page, "ui-cancel.png", full_page=False)
        page.get_by_role("button", name="Yes, cancel the run").click()
        page.locator("#run-status.status-canceled").wait_for(timeout=120_000)
        assert page.locator("#cancel").count() == 0
        assert populated.ws.store.get_run(run.id)["status"] == "Canceled"
        assert page.dialogs == []
    finally:
        release.write_text("")
        run.wait_for_completion(raise_on_error=False, timeout=120)


def test_models_page_versions_aliases_and_source_runs(page, server, populated):
    login(page, server)
    page.get_by_role("link", name="Models").click()
    page.locator("#models").wait_for()
    row = page.locator("#models tbody tr", has_text=MODEL)
    assert "production → 2" in row.inner_text()
    shot(page, "ui-models.png")
    row.get_by_role("link", name=MODEL).click()
    page.locator("#versions").wait_for()
    versions = page.locator("#versions tbody tr")
    assert versions.count() == 3  # the viewer reads every DAG: the secret DAG's version too
    second = page.locator("#version-2")
    assert "production" in second.inner_text() and "Completed" in second.inner_text()
    first = page.locator("#version-1")
    assert PROBE in first.inner_text()  # shown as text, never run
    assert "0.85" in first.inner_text()  # the source run's final_accuracy
    shot(page, "ui-model.png")
    first.get_by_role("link", name=populated.runs["first"]).click()
    page.wait_for_url(f"**/mltrain/runs/{populated.runs['first']}")
    assert page.locator("#run-status").inner_text() == "Completed"
    assert page.dialogs == []


def test_a_sweep_page_ranks_its_children_and_draws_their_curves(page, server, swept):
    from tests.plugins.conftest import SWEEP_EXPERIMENT

    login(page, server, start=f"/mltrain/experiments/{SWEEP_EXPERIMENT}")
    assert page.locator("#runs tbody tr").count() == 2  # the two sweeps; their children folded in
    assert "8 child runs" in page.locator("#children-hidden").inner_text()
    page.check("#show-children")
    page.get_by_role("button", name="Apply").click()
    page.locator("#runs tbody tr").nth(9).wait_for()
    assert page.locator("#runs tbody tr").count() == 10
    page.goto(f"{server.url}/mltrain/runs/{swept.sweep_id}")
    page.locator("#sweep-link").click()
    page.wait_for_url(f"**/mltrain/sweeps/{swept.sweep_id}")
    rows = page.locator("#children tbody tr")
    assert rows.count() == 6
    assert rows.first.locator(".best-mark").is_visible()
    stopped = page.locator("#children tbody tr.stopped")
    assert stopped.count() >= 2 and "BanditPolicy" in stopped.first.locator("td.reason").inner_text()
    assert PROBE in stopped.first.inner_text()  # the probe hyperparameter, shown as text
    curves = page.locator("svg#sweep-curves")
    assert curves.locator("polyline.series").count() == 6
    assert len(curves.locator("polyline.series.best").get_attribute("points").split()) == 6
    assert _box(curves)["width"] > 400
    parallel = page.locator("svg#sweep-parallel")
    parallel.scroll_into_view_if_needed()
    assert _box(parallel)["width"] > 500 and parallel.locator("polyline.series").count() == 6
    shot(page, "ui-sweep.png")
    rows.first.get_by_role("link").first.click()
    page.wait_for_url("**/mltrain/runs/**")
    assert page.locator("#parent-link").inner_text() == swept.sweep_id
    assert page.dialogs == []
