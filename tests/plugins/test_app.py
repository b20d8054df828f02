"""The /mltrain app's pages and JSON API over real runs, through FastAPI's TestClient.

Authorization is replaced by a fixed policy here (every DAG readable but ``other_team_dag``); the
real auth manager is exercised against a real ``airflow api-server`` in test_ui_browser.py.
"""

from __future__ import annotations

import re
import time
from urllib.parse import quote

import pytest
from fastapi.testclient import TestClient

from airflow_provider_mltrain import Experiment, ScriptRunConfig, Workspace
from airflow_provider_mltrain.plugins import queries
from airflow_provider_mltrain.plugins.app import create_app, get_workspace
from airflow_provider_mltrain.plugins.auth import Access, require_reader
from tests.plugins.conftest import EXPERIMENT, PROBE, PROBE_IMG, SECRET_DAG, TASK
from tests.targets.suite import wait_until


def client_for(ws: Workspace) -> TestClient:
    app = create_app()
    app.dependency_overrides[get_workspace] = lambda: ws
    app.dependency_overrides[require_reader] = lambda: Access(lambda dag_id: dag_id != SECRET_DAG)
    return TestClient(app, root_path="/mltrain")


@pytest.fixture(scope="module")
def client(populated) -> TestClient:
    return client_for(populated.ws)


def api(client: TestClient, url: str, expect: int = 200, **params):
    response = client.get(f"/api{url}", params=params)
    assert response.status_code == expect, response.text
    return response.json()


# -- experiments and runs ------------------------------------------------------------------------


def test_experiments_hide_those_whose_runs_come_from_unreadable_dags(client, populated):
    experiments = {e["name"]: e for e in api(client, "/experiments")}
    assert EXPERIMENT in experiments and "other-team" not in experiments
    assert experiments[EXPERIMENT]["runs"] == 4
    assert experiments[EXPERIMENT]["statuses"] == {"Completed": 3, "Failed": 1}


def test_runs_of_unreadable_dags_are_left_out_of_lists_and_counts(populated):
    app = create_app()
    app.dependency_overrides[get_workspace] = lambda: populated.ws
    app.dependency_overrides[require_reader] = lambda: Access(lambda dag_id: dag_id != TASK["dag_id"])
    client = TestClient(app, root_path="/mltrain")
    experiments = {e["name"]: e for e in api(client, "/experiments")}
    assert experiments[EXPERIMENT]["runs"] == 3 and "other-team" in experiments
    data = api(client, f"/experiments/{EXPERIMENT}/runs")
    assert data["total"] == 3 and populated.runs["from_dag"] not in [r["run_id"] for r in data["runs"]]
    assert api(client, f"/runs/{populated.runs['from_dag']}", 403)
    path = f"/ti/{TASK['dag_id']}/{quote(TASK['run_id'], safe='')}/{TASK['task_id']}"
    assert client.get(path, follow_redirects=False).status_code == 403


def test_an_experiment_of_unreadable_runs_only_does_not_exist_for_the_user(client):
    assert api(client, "/experiments/other-team/runs", 404)["detail"] == (
        "No experiment 'other-team' in the run store."
    )


def test_runs_sorted_by_the_chosen_metric(client, populated):
    data = api(client, f"/experiments/{EXPERIMENT}/runs", metric="loss", sort="metric", order="asc")
    assert "loss" in data["metric_names"] and "accuracy" in data["metric_names"]
    values = [r["metric"] for r in data["runs"]]
    assert values == sorted(values)
    # loss ends at 1/8 + lr: the run with lr=0.1 (first and failed) below lr=0.2 below lr=0.3
    assert data["runs"][-1]["run_id"] == populated.runs["second"]
    desc = api(client, f"/experiments/{EXPERIMENT}/runs", metric="loss", sort="metric", order="desc")
    assert desc["runs"][0]["run_id"] == populated.runs["second"]


def test_runs_filtered_by_status_tag_and_id(client, populated):
    failed = api(client, f"/experiments/{EXPERIMENT}/runs", status="Failed")["runs"]
    assert [r["run_id"] for r in failed] == [populated.runs["failed"]]
    by_tag = api(client, f"/experiments/{EXPERIMENT}/runs", tag="owner=bo")["runs"]
    assert [r["run_id"] for r in by_tag] == [populated.runs["second"]]
    has_tag = api(client, f"/experiments/{EXPERIMENT}/runs", tag="owner")["runs"]
    assert len(has_tag) == 3
    by_id = api(client, f"/experiments/{EXPERIMENT}/runs", search="mltrain_ui_dag")["runs"]
    assert [r["run_id"] for r in by_id] == [populated.runs["from_dag"]]
    row = by_tag[0]
    assert row["target"] == "local" and row["duration_seconds"] > 0 and row["tags"]["owner"] == "bo"


def test_runs_bad_input(client):
    assert api(client, "/experiments/nope/runs", 404)["detail"] == "No experiment 'nope' in the run store."
    assert "sort must be one of" in api(client, f"/experiments/{EXPERIMENT}/runs", 400, sort="x")["detail"]
    bad_status = api(client, f"/experiments/{EXPERIMENT}/runs", 400, status="x")
    assert "status must be one of" in bad_status["detail"]


# -- one run -------------------------------------------------------------------------------------


def test_run_details(client, populated):
    run = api(client, f"/runs/{populated.runs['first']}")
    assert run["status"] == "Completed" and run["exit_code"] == 0
    assert run["arguments"] == ["--lr", "0.1", "--note", PROBE]
    assert run["events"][0]["status"] == "Queued" and run["events"][-1]["status"] == "Completed"
    assert run["tags"]["probe"] == PROBE  # set by the script itself
    assert run["environment"]["interpreter"] and run["packages"]
    assert "outputs/model.txt" in run["files"] and "logs/std_log.txt" in run["files"]
    assert {"loss", "accuracy", "final_accuracy", "lr_schedule", "confusion"} <= set(run["metric_names"])
    assert "output_dir" not in run  # no server paths for the browser
    assert run["airflow"] is None
    assert api(client, f"/runs/{populated.runs['from_dag']}")["airflow"]["dag_id"] == TASK["dag_id"]


def test_unknown_run_is_404_and_an_unreadable_dags_run_is_403(client, populated):
    for path in ("", "/metrics", "/log", "/snapshot", "/files", "/files/outputs/model.txt"):
        assert api(client, f"/runs/nope{path}", 404)["detail"] == "No run 'nope' in the run store."
        assert "Forbidden" in api(client, f"/runs/{populated.runs['secret']}{path}", 403)["detail"]
    assert client.get("/runs/nope").status_code == 404
    assert client.get(f"/runs/{populated.runs['secret']}").status_code == 403


def test_metrics_as_series(client, populated):
    metrics = api(client, f"/runs/{populated.runs['first']}/metrics")
    loss = metrics["loss"]["points"]
    assert [p["step"] for p in loss] == list(range(8))
    assert loss[0]["value"] == pytest.approx(1.1) and loss[-1]["value"] == pytest.approx(0.225)
    assert [p["value"] for p in metrics["lr_schedule"]["points"]] == [0.1, 0.05, 0.025]
    assert metrics["confusion.tp"]["points"][0]["value"] == 10
    assert metrics["model_name"]["values"] == [f"sgd-{PROBE}"]


def test_snapshot_files(client, populated):
    snap = api(client, f"/runs/{populated.runs['first']}/snapshot")
    assert [f["path"] for f in snap["files"]] == ["config.yaml", "old_helper.py", "train.py"]


# -- log -----------------------------------------------------------------------------------------


def test_log_pages_add_up_to_the_whole_log(client, populated):
    run_id = populated.runs["first"]
    whole = (populated.ws.run_files_dir(run_id) / "logs" / "std_log.txt").read_text()
    assert PROBE in whole
    text, offset = "", 0
    while True:
        page = api(client, f"/runs/{run_id}/log", offset=offset, limit=16)
        text += page["text"]
        if page["eof"]:
            break
        assert page["next_offset"] > offset
        offset = page["next_offset"]
    assert text == whole
    assert api(client, f"/runs/{run_id}/log", 422, limit=queries.MAX_LOG_CHUNK + 1)


def test_a_huge_log_is_paged_and_tailed(tmp_path, make_tree):
    ws = Workspace(tmp_path / "ws")
    line = "x" * 99 + "\n"
    src = make_tree({"big.py": f"import sys\nfor i in range(30000):\n    sys.stdout.write({line!r})\n"})
    run = Experiment(ws, "big").submit(ScriptRunConfig(src, "big.py"))
    run.wait_for_completion()
    client = client_for(ws)
    size = (ws.run_files_dir(run.id) / "logs" / "std_log.txt").stat().st_size
    assert size == 3_000_000
    tail = client.get(f"/api/runs/{run.id}/log")
    assert len(tail.content) < 2 * queries.DEFAULT_LOG_CHUNK
    page = tail.json()
    assert page["eof"] and page["next_offset"] == size and page["text"].startswith("x")
    biggest = client.get(f"/api/runs/{run.id}/log", params={"offset": 0, "limit": queries.MAX_LOG_CHUNK})
    assert len(biggest.content) < queries.MAX_LOG_CHUNK + 4096
    assert biggest.json()["next_offset"] % 100 == 0  # cut at a line end
    html = client.get(f"/runs/{run.id}")
    assert html.status_code == 200 and len(html.content) < 2 * queries.DEFAULT_LOG_CHUNK + 200_000


# -- broken runs ---------------------------------------------------------------------------------

BROKEN = """\
import os
from mltrain import Run
run = Run.get_context()
run.log("loss", 0.5, step=0)
with open(os.environ["MLTRAIN_METRICS_FILE"], "a") as f:
    f.write('{"name": "loss", "value": 0.4, "step": NaN}\\n{"name": "loss", "value": 0.3, "time": "now"}\\n')
run.log("loss", 0.2, step=1)
"""


def test_a_broken_run_is_listed_and_shown_with_its_warning(tmp_path, make_tree):
    ws = Workspace(tmp_path / "ws")
    src = make_tree({"train.py": BROKEN})
    older = Experiment(ws, "broken").submit(ScriptRunConfig(src, "train.py"))
    older.wait_for_completion()
    # Rows an older version stored without checking them: a number beyond a float, a row that is a
    # list, text that is not JSON.
    offset = ws.store.get_run(older.id)["metrics_offset"]
    old = {"run_id": older.id, "step": None, "logged_at": 1.0}
    assert ws.store.ingest_metrics(
        older.id,
        offset,
        offset + 3,
        [
            {**old, "seq": offset, "name": "loss", "kind": "scalar", "value": str(10**400)},
            {**old, "seq": offset + 1, "name": "per_class", "kind": "row", "value": "[1, 2]"},
            {**old, "seq": offset + 2, "name": "note", "kind": "scalar", "value": "not json"},
        ],
    )
    # Not read since it ended: the listing is the first reader of its bad lines.
    fresh = Experiment(ws, "broken").submit(ScriptRunConfig(src, "train.py"))
    wait_until(lambda: (fresh.target.read_status(fresh.id) or {}).get("state") == "Completed", 60)
    client = client_for(ws)

    runs = {r["run_id"]: r for r in api(client, "/experiments/broken/runs", metric="loss")["runs"]}
    assert runs[fresh.id]["status"] == "Completed"
    warning = runs[fresh.id]["warnings"]
    assert len(warning) == 1 and "skipped 2 malformed lines" in warning[0]
    assert runs[older.id]["metric"] == 0.2  # the last value that is a number a chart can draw
    experiments = {e["name"]: e for e in api(client, "/experiments")}
    assert experiments["broken"]["runs_with_warnings"] == 2
    details = api(client, f"/runs/{fresh.id}")
    assert details["warnings"] == warning
    series = api(client, f"/runs/{older.id}/metrics")
    assert [p["value"] for p in series["loss"]["points"]] == [0.5, 0.2]
    assert api(client, "/compare", runs=[older.id, fresh.id])["metrics"][0]["name"] == "loss"
    for page in ("/", "/experiments/broken", f"/runs/{fresh.id}", f"/runs/{older.id}"):
        response = client.get(page)
        assert response.status_code == 200, (page, response.text[:2000])
    page = client.get(f"/runs/{fresh.id}").text
    assert 'id="warnings"' in page and "skipped 2 malformed lines" in page
    assert "1 warning" in client.get("/experiments/broken").text


# -- files ---------------------------------------------------------------------------------------


def test_download_an_output(client, populated):
    response = client.get(f"/api/runs/{populated.runs['first']}/files/outputs/model.txt")
    assert response.status_code == 200 and response.text == "weights\n"
    assert "attachment" in response.headers["content-disposition"]
    page = client.get(f"/runs/{populated.runs['first']}/files/outputs/sub/report.html")
    assert page.status_code == 200
    # a run's HTML output is never rendered as a page of this app
    assert page.headers["content-security-policy"] == "sandbox"
    assert "attachment" in page.headers["content-disposition"]


@pytest.mark.parametrize(
    "path",
    [
        "outputs/../../runs.db",
        "outputs/%2e%2e/%2e%2e/runs.db",
        "..%2f..%2fruns.db",
        "%2fetc%2fhostname",
        "snapshot/train.py",
        "outputs\\..\\model.txt",
    ],
)
def test_download_paths_leaving_the_run_folder_are_refused(client, populated, path):
    for prefix in ("/api/runs", "/runs"):
        response = client.get(f"{prefix}/{populated.runs['first']}/files/{path}")
        assert response.status_code in (400, 404), (path, response.status_code)
        assert "weights" not in response.text and "SQLite" not in response.text


def test_safe_run_path():
    assert queries.safe_run_path("outputs/sub/a.txt") == "outputs/sub/a.txt"
    # "x" is a name too: the script may upload_file("x"); whether the run has it is checked after.
    assert queries.safe_run_path("reports/x.txt") == "reports/x.txt"
    for bad in ("../x", "outputs/../x", "/etc/passwd", "outputs//x", "outputs\\x", "outputs/x\x00", ""):
        with pytest.raises(queries.BadRequest):
            queries.safe_run_path(bad)


TYPED_SCRIPT = """
from azureml.core import Run
run = Run.get_context()
labels = ["<script>alert(1)</script>"] + ["c%d" % i for i in range(99)]
matrix = [[(i * 7 + j) % 5 for j in range(100)] for i in range(100)]
run.log_confusion_matrix("confusion", {"schema_type": "confusion_matrix", "schema_version": "1.0.0",
    "data": {"class_labels": labels, "matrix": matrix}}, description="<b>held-out</b>")
run.log_residuals("residuals", {"schema_type": "residuals", "schema_version": "1.0.0",
    "data": {"bin_edges": [i / 10 for i in range(1001)], "bin_counts": [i % 9 for i in range(1000)]}})
run.log_predictions("predictions", {"schema_type": "predictions", "schema_version": "1.0.0",
    "data": {"bin_averages": [0.2, 0.8], "bin_errors": [0.1, 0.05], "bin_counts": [5, 5],
             "bin_edges": [0, 0.5, 1]}})
run.log_accuracy_table("accuracy", {"schema_type": "accuracy_table", "schema_version": "1.0.2",
    "data": {"probability_tables": [[[5, 5, 0, 0], [4, 1, 4, 1], [0, 0, 5, 5]]],
             "percentile_tables": [[[5, 5, 0, 0]]], "probability_thresholds": [0, 0.5, 1],
             "percentiles": [0, 50, 100], "class_labels": ["yes"]}})
run.log("loss", 0.25)
"""


def test_run_page_draws_typed_metrics_bounded_and_escaped(tmp_path, make_tree):
    ws = Workspace(tmp_path / "ws")
    run = Experiment(ws, "typed").submit(ScriptRunConfig(make_tree({"t.py": TYPED_SCRIPT}), "t.py"))
    run.wait_for_completion()
    page = client_for(ws).get(f"/runs/{run.id}").text
    section = page.split('id="typed-metrics"', 1)[1].split("</section>", 1)[0]
    kinds = re.findall(r'data-kind="([a-z_]+)"', section)
    assert kinds == ["confusion_matrix", "residuals", "predictions", "accuracy_table"]
    assert "<script>alert" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in section
    assert "&lt;b&gt;held-out&lt;/b&gt;" in section
    matrix = section.split('class="grid confusion"', 1)[1].split("</table>", 1)[0]
    assert matrix.count("<tr>") == 1 + 30 and "The first 30 of 100 classes" in section
    assert 'data-bars="200"' in section  # 1000 residual bins: the first 200 drawn
    assert "true positive rate" in section
    assert 'data-metric="confusion"' not in page  # a typed value is not drawn as a series too


def test_a_symlink_out_of_the_run_folder_is_not_served(tmp_path, make_tree):
    ws = Workspace(tmp_path / "ws")
    secret = tmp_path / "secret.txt"
    secret.write_text("top secret")
    script = f"import os\nos.makedirs('outputs', exist_ok=True)\nos.symlink({str(secret)!r}, 'outputs/s')\n"
    src = make_tree({"link.py": script})
    run = Experiment(ws, "links").submit(ScriptRunConfig(src, "link.py"))
    run.wait_for_completion()
    out = ws.run_files_dir(run.id) / "outputs" / "s"
    if not out.is_symlink():  # collection recorded the link in links.json: plant one (an old copy)
        out.unlink(missing_ok=True)
        out.symlink_to(secret)
    response = client_for(ws).get(f"/api/runs/{run.id}/files/outputs/s")
    assert response.status_code == 404 and "top secret" not in response.text


# -- compare -------------------------------------------------------------------------------------


def test_compare_metrics_and_snapshot_diff(client, populated):
    a, b = populated.runs["first"], populated.runs["second"]
    data = api(client, "/compare", runs=[a, b])
    loss = next(m for m in data["metrics"] if m["name"] == "loss")
    assert loss["runs"][a]["last"] == pytest.approx(0.225) and loss["runs"][b]["last"] == pytest.approx(0.425)
    (diff,) = data["snapshot_diffs"]
    assert diff["added"] == ["extra.py"] and diff["removed"] == ["old_helper.py"]
    assert diff["changed"] == ["train.py"]
    text = api(client, "/compare/file-diff", base=a, other=b, path="train.py")["diff"]
    assert '-print("done")\n' in text and '+print("done, version 2")\n' in text
    added = api(client, "/compare/file-diff", base=a, other=b, path="extra.py")["diff"]
    assert "--- /dev/null" in added and "+VALUE = 2" in added
    assert api(client, "/compare/file-diff", 404, base=a, other=b, path="nope.py")
    assert api(client, "/compare", 422, runs=[a])
    page = client.get("/compare", params={"runs": [a, b], "file": "train.py"})
    assert page.status_code == 200 and "version 2" in page.text
    # a chart per metric logged more than once, in the order the script logged them; values
    # logged once (final_accuracy, the confusion row) are compared in the table, not as dots
    charts = re.findall(r'<figure data-metric="([^"]+)"', page.text)
    assert charts == ["loss", "accuracy", "lr_schedule"]
    assert page.text.count('class="mltrain-chart"') == 3 and "<td>final_accuracy</td>" in page.text


def test_compare_shows_the_parameters_that_differ(client, populated):
    a, b = populated.runs["first"], populated.runs["second"]
    rows = {(r["group"], r["name"]): r for r in api(client, "/compare", runs=[a, b])["parameters"]}
    assert rows[("argument", "--lr")] == {
        "group": "argument",
        "name": "--lr",
        "values": {a: "0.1", b: "0.3"},
        "differs": True,
    }
    assert rows[("argument", "--note")]["values"] == {a: PROBE, b: None}
    assert rows[("tag", "owner")]["differs"] and not rows[("environment", "name")]["differs"]
    page = client.get("/compare", params={"runs": [a, b]}).text
    differences = page[
        page.index('id="param-differences"') : page.index("</table>", page.index("param-differences"))
    ]
    assert "<code>--lr</code>" in differences and "<code>owner</code>" in differences
    assert "<code>mltrain.framework</code>" not in differences  # the same in both: folded away
    assert 'id="parallel"' not in page  # two runs: no parallel coordinates


def test_three_runs_compared_get_a_parallel_coordinates_chart(client, populated):
    runs = [populated.runs["first"], populated.runs["second"], populated.runs["from_dag"]]
    page = client.get("/compare", params={"runs": runs}).text
    chart = page[page.index('id="parallel"') - 200 : page.index("</svg>", page.index('id="parallel"'))]
    assert 'data-runs="3"' in chart
    axes = re.findall(r'<text class="pc-name pc-(\w+)"[^>]*>([^<]+)<', chart)
    assert ("param", "lr") in axes and ("metric", "loss") in axes and ("metric", "accuracy") not in axes
    assert len(re.findall(r'<polyline class="series"', chart)) >= 3


def test_run_page_shows_values_logged_once_as_values_and_charts_in_logging_order(client, populated):
    page = client.get(f"/runs/{populated.runs['first']}").text
    assert re.findall(r'<figure data-metric="([^"]+)"', page) == ["loss", "accuracy", "lr_schedule"]
    values = page[page.index('id="single-values"') : page.index("</dl>", page.index('id="single-values"'))]
    assert re.findall(r"<dt>([^<]+)</dt><dd>([^<]+)</dd>", values) == [
        ("final_accuracy", "0.85"),
        ("confusion.tp", "10"),
        ("confusion.fp", "2"),
    ]


# -- task instance tab ---------------------------------------------------------------------------


def test_task_instance_link_opens_its_run(client, populated):
    path = f"/ti/{TASK['dag_id']}/{quote(TASK['run_id'], safe='')}/{TASK['task_id']}"
    response = client.get(path, params={"map_index": "{MAP_INDEX}"}, follow_redirects=False)
    assert response.status_code == 307
    assert response.headers["location"] == f"/mltrain/runs/{populated.runs['from_dag']}"
    assert api(client, path.replace("/ti/", "/task-instances/"))["run_id"] == populated.runs["from_dag"]
    other = client.get(f"/ti/{TASK['dag_id']}/other_run/{TASK['task_id']}", follow_redirects=False)
    assert other.status_code == 404 and "No ML training run for this task" in other.text
    assert client.get(f"/ti/{SECRET_DAG}/r/t").status_code == 403


# -- pages: everything escaped -------------------------------------------------------------------


def pages(populated) -> list[str]:
    a, b = populated.runs["first"], populated.runs["second"]
    return [
        "/",
        f"/experiments/{EXPERIMENT}",
        f"/experiments/{EXPERIMENT}?tag=html&metric=loss&sort=metric",
        f"/runs/{a}",
        f"/runs/{a}?x=time",
        f"/runs/{a}/live",
        f"/compare?runs={a}&runs={b}&file=train.py",
    ]


def test_pages_render_user_strings_as_text(client, populated):
    for path in pages(populated):
        response = client.get(path)
        assert response.status_code == 200, path
        assert "script-src 'self'" in response.headers["content-security-policy"]
        body = response.text
        assert "<script>alert" not in body and "<img src=x" not in body, path
        # the only scripts are the app's own file
        own = '<script src="/mltrain/static/mltrain.js" defer>'
        assert re.findall(r"<script[^>]*>", body) in ([], [own])
    run_page = client.get(f"/runs/{populated.runs['first']}").text
    assert run_page.count("&lt;script&gt;alert(1)&lt;/script&gt;") >= 4  # tag, argument, log line, value
    assert "&#34;&gt;&lt;img src=x onerror=alert(2)&gt;" in run_page
    assert 'data-points="8"' in run_page  # the loss chart


def test_probe_in_a_request_is_escaped_too(client):
    response = client.get(f"/experiments/{quote(PROBE_IMG, safe='')}")
    assert response.status_code == 404
    assert "<img src=x" not in response.text and "&lt;img src=x" in response.text


def test_openapi_schema_lists_the_api(client):
    schema = client.get("/openapi.json").json()
    paths = set(schema["paths"])
    assert {
        "/api/experiments",
        "/api/experiments/{experiment}/runs",
        "/api/runs/{run_id}",
        "/api/runs/{run_id}/metrics",
        "/api/runs/{run_id}/log",
        "/api/runs/{run_id}/files/{path}",
        "/api/compare",
    } <= paths
    assert not any(p.startswith("/runs") for p in paths)  # pages stay out of the API schema


def test_without_login_no_data(populated):
    app = create_app()
    app.dependency_overrides[get_workspace] = lambda: populated.ws
    client = TestClient(app, root_path="/mltrain")
    response = client.get(f"/api/runs/{populated.runs['first']}")
    assert response.status_code == 401 and populated.runs["first"] not in response.text
    assert client.get("/api/experiments").status_code == 401


def test_access_asks_the_auth_manager_once_per_dag():
    asked = []
    access = Access(lambda dag_id: asked.append(dag_id) or dag_id != "b")
    runs = [{"properties": {"airflow.dag_id": d}} for d in ("a", "b", "a", "b")] + [{"properties": {}}]
    assert [access.can_read_run(r) for r in runs] == [True, False, True, False, True]
    assert asked == ["a", "b", None]


# -- cancelling a run ----------------------------------------------------------------------------

WAITER = """
import os, sys, time
from mltrain import Run
run = Run.get_context()
for i in range(1200):
    run.log("ticks", i, step=i)
    if os.path.exists(sys.argv[1]):
        break
    time.sleep(0.1)
"""


def _active_run(ws: Workspace, make_tree, release, properties=None):
    run = Experiment(ws, "cancel").submit(
        ScriptRunConfig(make_tree({"wait.py": WAITER}), "wait.py", arguments=[str(release)]),
        properties=properties or {},
    )
    deadline = time.monotonic() + 120
    while run.refresh().value != "Running":
        assert time.monotonic() < deadline, f"run {run.id} did not start: {run.refresh().value}"
        time.sleep(0.2)
    return run


def _client(ws: Workspace, can_edit) -> TestClient:
    app = create_app()
    app.dependency_overrides[get_workspace] = lambda: ws
    app.dependency_overrides[require_reader] = lambda: Access(lambda dag_id: True, can_edit_dag=can_edit)
    return TestClient(app, root_path="/mltrain")


def _form_token(html: str) -> str | None:
    found = re.search(r'name="csrf_token" value="([0-9a-f]+)"', html)
    return found.group(1) if found else None


def test_cancel_needs_the_dags_edit_permission_and_the_pages_csrf_token(tmp_path, make_tree):
    ws = Workspace(tmp_path / "ws")
    release = tmp_path / "release"
    run = _active_run(ws, make_tree, release, {"airflow.dag_id": "train_dag"})
    try:
        viewer = _client(ws, lambda dag_id: False)
        page = viewer.get(f"/runs/{run.id}")
        assert page.status_code == 200 and 'id="cancel"' not in page.text
        token = re.search(r'name="mltrain-csrf" content="([0-9a-f]+)"', page.text).group(1)
        refused = viewer.post(f"/runs/{run.id}/cancel", data={"csrf_token": token}, follow_redirects=False)
        assert refused.status_code == 403 and "permission to edit DAG &#39;train_dag" in refused.text
        api_refused = viewer.post(f"/api/runs/{run.id}/cancel", headers={"X-CSRF-Token": token})
        assert api_refused.status_code == 403 and "edit DAG" in api_refused.json()["detail"]

        editor = _client(ws, lambda dag_id: dag_id == "train_dag")
        page = editor.get(f"/runs/{run.id}")
        token = _form_token(page.text)
        assert 'id="cancel"' in page.text and token
        for data, headers in (
            ({}, {}),  # no token
            ({"csrf_token": "0" * 64}, {}),  # a forged one
            ({"csrf_token": token}, {"Sec-Fetch-Site": "cross-site"}),  # posted by another site
        ):
            response = editor.post(
                f"/runs/{run.id}/cancel", data=data, headers=headers, follow_redirects=False
            )
            assert response.status_code == 403 and ("cross-site" in response.text or "CSRF" in response.text)
        assert editor.post(f"/api/runs/{run.id}/cancel").status_code == 403
        stranger = _client(ws, lambda dag_id: True)  # a browser without the session's cookie
        assert stranger.post(f"/runs/{run.id}/cancel", data={"csrf_token": token}).status_code == 403
        assert run.refresh().value == "Running"

        done = editor.post(f"/runs/{run.id}/cancel", data={"csrf_token": token}, follow_redirects=False)
        assert done.status_code == 303 and done.headers["location"] == f"/mltrain/runs/{run.id}"
        assert ws.store.get_run(run.id)["status"] == "Canceled"
        again = editor.post(f"/api/runs/{run.id}/cancel", headers={"X-CSRF-Token": token})
        assert again.status_code == 200 and again.json() == {"run_id": run.id, "status": "Canceled"}
        assert 'id="cancel"' not in editor.get(f"/runs/{run.id}").text  # nothing left to cancel
    finally:
        release.write_text("")
        run.wait_for_completion(raise_on_error=False, timeout=120)


def test_a_run_no_dag_submitted_is_cancelled_by_administrators_only(tmp_path, make_tree):
    ws = Workspace(tmp_path / "ws")
    release = tmp_path / "release"
    run = _active_run(ws, make_tree, release)
    try:
        dag_editor = _client(ws, lambda dag_id: dag_id is not None)  # may edit DAGs, is no admin
        assert 'id="cancel"' not in dag_editor.get(f"/runs/{run.id}").text
        refused = dag_editor.post(f"/api/runs/{run.id}/cancel", headers={"Authorization": "Bearer t"})
        assert refused.status_code == 403 and "only administrators" in refused.json()["detail"]
        admin = _client(ws, lambda dag_id: True)
        # a token in the Authorization header is no ambient credential: no CSRF token needed
        done = admin.post(f"/api/runs/{run.id}/cancel", headers={"Authorization": "Bearer t"})
        assert done.status_code == 200 and done.json()["status"] == "Canceled", done.text
    finally:
        release.write_text("")
        run.wait_for_completion(raise_on_error=False, timeout=120)


def test_access_asks_the_edit_permission_of_the_runs_dag_or_of_every_dag():
    asked = []
    access = Access(lambda dag_id: True, can_edit_dag=lambda dag_id: asked.append(dag_id) or dag_id == "a")
    runs = [{"properties": {"airflow.dag_id": d}} for d in ("a", "b", "a")] + [{"properties": {}}]
    assert [access.can_cancel_run(r) for r in runs] == [True, False, True, False]
    assert asked == ["a", "b", None]
    assert not Access(lambda dag_id: True).can_cancel_run(runs[0])  # no edit check given: nobody


def test_an_api_server_with_no_local_files_serves_a_run_from_the_artifact_store(
    tmp_path, make_tree, s3_store
):
    """The api-server of a deployment reads runs that workers followed: pages, JSON API, downloads."""
    db = f"sqlite:///{tmp_path / 'shared.db'}"
    worker = Workspace(tmp_path / "worker", database_url=db, artifact_store=s3_store)
    src = make_tree(
        {
            "train.py": "import os\nos.makedirs('outputs', exist_ok=True)\n"
            "open('outputs/model.bin', 'wb').write(b'w' * 3_000_000)\nprint('hello <b>api</b>')\n"
        }
    )
    run = Experiment(worker, EXPERIMENT).submit(ScriptRunConfig(src, "train.py"))
    run.wait_for_completion()
    api_server = Workspace(tmp_path / "api-server", database_url=db, artifact_store=s3_store)
    client = client_for(api_server)
    log = client.get(f"/mltrain/api/runs/{run.id}/log").json()
    assert log["text"] == "hello <b>api</b>\n" and log["eof"]
    files = client.get(f"/mltrain/api/runs/{run.id}/files").json()
    assert files["files"] == ["logs/std_log.txt", "outputs/model.bin"]
    download = client.get(f"/mltrain/api/runs/{run.id}/files/outputs/model.bin")
    assert download.status_code == 200 and download.content == b"w" * 3_000_000
    page = client.get(f"/mltrain/runs/{run.id}")
    assert (
        page.status_code == 200
        and "hello &lt;b&gt;api&lt;/b&gt;" in page.text
        and "outputs/model.bin" in page.text
    )
    assert not (tmp_path / "api-server" / "runs").exists()


def test_run_page_and_api_show_inputs_and_outputs(tmp_path, make_tree):
    """The Inputs table (URI, mode, version, size, hash) and the Outputs table, escaped."""
    from airflow_provider_mltrain import Experiment, Output, ScriptRunConfig

    ws = Workspace(tmp_path / "ws")
    data = tmp_path / "<data>"
    data.mkdir()
    (data / "rows.csv").write_text("1,2\n")
    src = make_tree({"t.py": "print('ok')\n"})
    config = ScriptRunConfig(
        src,
        "t.py",
        inputs={"train": str(data)},
        outputs={"model": Output("s3://bucket/models/x/", required=False)},
    )
    run = Experiment(ws, "io").submit(config)
    run.wait_for_completion()
    client = client_for(ws)
    page = client.get(f"/runs/{run.id}").text
    inputs = page[page.index('id="inputs"') : page.index("</table>", page.index('id="inputs"'))]
    assert "<code>train</code>" in inputs and "&lt;data&gt;" in inputs and "<data>" not in inputs
    sha = run.get_details()["inputDatasets"][0]["sha256"]
    assert sha[:16] in inputs and "download" in inputs
    outputs = page[page.index('id="outputs"') : page.index("</table>", page.index('id="outputs"'))]
    assert "s3://bucket/models/x/" in outputs and "nothing written (optional)" in outputs
    details = api(client, f"/runs/{run.id}")
    assert details["inputDatasets"][0]["uri"] == str(data)
    assert details["outputDatasets"][0]["uploaded"] is False
