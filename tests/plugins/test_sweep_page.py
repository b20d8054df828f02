"""The sweep page, its JSON API and how sweeps show in the runs list, over real sweeps on the local
target (tests/plugins/conftest.py's ``swept``)."""

from __future__ import annotations

import html
import json
import re
import xml.etree.ElementTree as ET

import pytest

from airflow_provider_mltrain.core.sweep import SweepRun
from airflow_provider_mltrain.plugins import queries
from tests.plugins.conftest import PROBE, SWEEP_BAD, SWEEP_EXPERIMENT
from tests.plugins.test_app import api, client_for

SVG = "{http://www.w3.org/2000/svg}"


@pytest.fixture(scope="module")
def client(swept):
    return client_for(swept.ws)


@pytest.fixture(scope="module")
def data(client, swept):
    return api(client, f"/sweeps/{swept.sweep_id}")


@pytest.fixture(scope="module")
def page(client, swept):
    response = client.get(f"/sweeps/{swept.sweep_id}")
    assert response.status_code == 200, response.text
    return response.text


def _svg(page: str, chart_id: str) -> ET.Element:
    match = re.search(rf'<svg [^>]*id="{chart_id}".*?</svg>', page, re.S)
    assert match, chart_id
    return ET.fromstring(match.group(0))


def _rows(page: str) -> list[str]:
    table = page[page.index('id="children"') :]
    return re.findall(r'<tr data-run-id="([^"]+)"', table[: table.index("</table>")])


# -- the JSON API --------------------------------------------------------------------------------


def test_children_best_first_as_the_core_ranks_them_with_the_best_marked(data, swept):
    children = data["children"]
    assert data["children_total"] == len(children) == 6
    values = [c["best_primary_metric"] for c in children]
    assert values == sorted(values, reverse=True)  # maximizing accuracy: highest first
    core = SweepRun(swept.ws, swept.sweep_id).get_children_sorted_by_primary_metric()
    assert [c["run_id"] for c in children] == [c["run_id"] for c in core]
    assert [c["best"] for c in children] == [True] + [False] * 5
    assert [c["rank"] for c in children] == [1, 2, 3, 4, 5, 6]
    best = SweepRun(swept.ws, swept.sweep_id).get_best_run_by_primary_metric()
    assert data["best_run_id"] == best.id == children[0]["run_id"]
    assert data["best_primary_metric"] == values[0]


def test_the_children_the_policy_stopped_carry_its_reason(data):
    for child in data["children"]:
        if child["hyperparameters"]["--quality"] == SWEEP_BAD:
            assert child["status"] == "Canceled"
            assert child["early_terminated"].startswith("BanditPolicy: at interval ")
        else:
            assert child["status"] == "Completed" and child["early_terminated"] is None
    assert data["early_terminated"] == sum(
        1 for c in data["children"] if c["hyperparameters"]["--quality"] == SWEEP_BAD
    )
    assert data["statuses"]["Canceled"] == data["early_terminated"]


def test_the_sweeps_definition(data):
    assert data["sampling"] == "random" and data["policy"] == "bandit"
    assert data["policy_settings"] == {"evaluation_interval": 1, "delay_evaluation": 0, "slack_factor": 0.1}
    assert data["primary_metric_name"] == "accuracy" and data["primary_metric_goal"] == "MAXIMIZE"
    assert data["parameter_space"]["--lr"][0] == "loguniform"
    assert data["definition"]["max_total_runs"] == 6 and data["definition"]["max_concurrent_runs"] == 3


def test_a_minimizing_sweep_ranks_the_lowest_first(client, swept):
    data = api(client, f"/sweeps/{swept.minimize_id}")
    assert [c["hyperparameters"]["--quality"] for c in data["children"]] == ["ok", "good"]
    assert data["children"][0]["best"] and data["best_run_id"] == data["children"][0]["run_id"]
    assert data["children"][0]["best_primary_metric"] < data["children"][1]["best_primary_metric"]


def test_children_are_paged(client, swept, data):
    first = api(client, f"/sweeps/{swept.sweep_id}", limit=4)
    assert first["next_offset"] == 4 and len(first["children"]) == 4
    rest = api(client, f"/sweeps/{swept.sweep_id}", offset=4, limit=4)
    assert rest["next_offset"] is None and [c["rank"] for c in rest["children"]] == [5, 6]
    assert [c["run_id"] for c in first["children"] + rest["children"]] == [
        c["run_id"] for c in data["children"]
    ]


def test_a_run_that_is_no_sweep_is_404(client, populated):
    detail = api(client, f"/sweeps/{populated.runs['first']}", 404)["detail"]
    assert "is not a sweep" in detail
    assert client.get(f"/sweeps/{populated.runs['first']}").status_code == 404


# -- the page ------------------------------------------------------------------------------------


def test_the_page_lists_children_best_first_linked_to_their_runs(page, data):
    assert _rows(page) == [c["run_id"] for c in data["children"]]
    for child in data["children"]:
        assert f'href="/mltrain/runs/{child["run_id"]}"' in page
    best = data["children"][0]["run_id"]
    row = re.search(rf'<tr data-run-id="{best}" class="([^"]*)">(.*?)</tr>', page, re.S)
    assert row and "best" in row.group(1).split() and 'class="best-mark">best<' in row.group(2)
    assert page.count('class="best-mark"') == 1


def test_the_page_shows_each_stopped_childs_reason_and_the_config(page, data):
    stopped = [c for c in data["children"] if c["early_terminated"]]
    assert stopped
    for child in stopped:
        row = re.search(rf'<tr data-run-id="{child["run_id"]}" class="([^"]*)">(.*?)</tr>', page, re.S)
        assert row and "stopped" in row.group(1).split()
        assert html.escape(child["early_terminated"], quote=False) in row.group(2)
    config = page[page.index('id="sweep-config"') : page.index("</dl>")]
    text = re.sub(r"<[^>]+>", "", config)
    assert "random, seed " in text and "bandit, evaluation_interval=1" in text and "slack_factor=0.1" in text
    assert "accuracy (maximize" in text and "6 runs, 3 at once" in text
    assert "loguniform(" in text


def test_text_from_the_sweep_is_escaped(page):
    assert PROBE not in page  # the probe hyperparameter, in the table and on an axis
    assert html.escape(PROBE, quote=False) in page


def test_every_childs_curve_on_one_chart(page, data):
    svg = _svg(page, "sweep-curves")
    lines = {p.get("data-label"): p for p in svg.iter(f"{SVG}polyline")}
    assert set(lines) == {c["run_id"] for c in data["children"]}
    best = data["children"][0]["run_id"]
    assert "best" in lines[best].get("class").split()
    assert list(lines)[-1] == best  # drawn last: on top of the others
    for child in data["children"]:
        assert ("stopped" in lines[child["run_id"]].get("class").split()) == bool(child["early_terminated"])
        assert lines[child["run_id"]].find(f"{SVG}title").text == child["run_id"]
    assert len(lines[best].get("points").split()) == 6  # a completed child's six values


def test_parallel_coordinates_of_hyperparameters_against_the_metric(page, data):
    svg = _svg(page, "sweep-parallel")
    names = [t.text for t in svg.iter(f"{SVG}text") if (t.get("class") or "").startswith("pc-name")]
    assert names == ["quality", "lr", "accuracy"]
    captions = [t.text for t in svg.iter(f"{SVG}text") if t.get("class") == "pc-kind"]
    assert captions == ["choice", "loguniform (log)", "best (max)"]
    ticks = {t.text for t in svg.iter(f"{SVG}text") if t.get("class") == "tick"}
    assert {"good", PROBE[:13] + "…"} <= ticks  # the text choices, each on its own place
    assert any(re.fullmatch(r"0\.0+1|1e-0\d", t) for t in ticks)  # powers of ten on the log axis
    labels = [p.get("data-label") for p in svg.iter(f"{SVG}polyline") if p.get("data-label")]
    assert sorted(labels) == sorted(c["run_id"] for c in data["children"])


def test_run_pages_link_the_sweep_and_its_children(client, swept, data):
    parent = client.get(f"/runs/{swept.sweep_id}").text
    assert f'id="sweep-link" href="/mltrain/sweeps/{swept.sweep_id}"' in parent
    assert "6 children" in parent
    stopped = next(c for c in data["children"] if c["early_terminated"])
    child = client.get(f"/runs/{stopped['run_id']}").text
    assert f'id="parent-link" href="/mltrain/sweeps/{swept.sweep_id}"' in child
    assert html.escape(stopped["early_terminated"], quote=False) in child
    hyper = re.search(r'id="hyperparameters">(.*?)</dd>', child, re.S).group(1)
    assert f"--lr {stopped['hyperparameters']['--lr']}" in hyper


# -- the runs list -------------------------------------------------------------------------------


def test_a_sweep_is_one_row_of_the_runs_list_its_children_on_request(client, swept):
    data = api(client, f"/experiments/{SWEEP_EXPERIMENT}/runs")
    rows = {r["run_id"]: r for r in data["runs"]}
    assert set(rows) == {swept.sweep_id, swept.minimize_id}
    assert rows[swept.sweep_id]["sweep"] and rows[swept.sweep_id]["children"] == 6
    assert rows[swept.minimize_id]["children"] == 2
    assert data["children_hidden"] == 8 and data["total"] == 2
    every = api(client, f"/experiments/{SWEEP_EXPERIMENT}/runs", children="true")
    assert every["total"] == 10 and every["children_hidden"] == 0
    parents = {r["parent"] for r in every["runs"] if r["parent"]}
    assert parents == {swept.sweep_id, swept.minimize_id}

    listing = client.get(f"/experiments/{SWEEP_EXPERIMENT}").text
    assert len(re.findall(r'<tr data-run-id="', listing)) == 2
    assert f'href="/mltrain/sweeps/{swept.sweep_id}">sweep · 6 children</a>' in listing
    assert "8 child runs of the runs listed are left out" in listing
    listing = client.get(f"/experiments/{SWEEP_EXPERIMENT}", params={"children": "1"}).text
    assert len(re.findall(r'<tr data-run-id="', listing)) == 10
    assert 'id="show-children" checked' in listing
    assert "children=1" in re.search(r'<a href="(\?[^"]*sort=id[^"]*)"', listing).group(1)


def test_a_filter_that_leaves_the_sweep_out_lists_its_matching_children(client, swept):
    data = api(client, f"/experiments/{SWEEP_EXPERIMENT}/runs", status="Canceled")
    assert data["runs"] and all(r["parent"] == swept.sweep_id for r in data["runs"])


# -- bounded -------------------------------------------------------------------------------------


def test_a_sweep_of_500_children_is_paged_and_its_charts_bounded(client, swept):
    """500 children copied in the run store from a real one, each with a long curve: the table
    shows a page, the curves chart the best MAX_SWEEP_CURVES within MAX_SWEEP_POINTS points."""
    store = swept.ws.store
    parent, child = (
        {k: v for k, v in store.get_run(rid).items() if k != "warnings"}
        for rid in (swept.minimize_id, f"{swept.minimize_id}_0")
    )
    big = "ui-sweep-500"
    store.create_run({**parent, "id": big, "experiment": "ui-sweep-big"})
    for i in range(500):
        rid = f"{big}_{i}"
        props = {
            **child["properties"],
            "mltrain.parent": big,
            "mltrain.sweep.index": str(i),
            "mltrain.hyperparameters": json.dumps({"--quality": "good", "--lr": i / 1000}),
        }
        copy = {**child, "id": rid, "experiment": "ui-sweep-big", "properties": props, "metrics_offset": 0}
        store.create_run(copy)
        rows = [
            {
                "run_id": rid,
                "seq": s,
                "name": "accuracy",
                "kind": "scalar",
                "step": s,
                "value": str(i / 1000 + s / 1e6),
                "logged_at": 1.0 + s,
            }
            for s in range(300)
        ]
        assert store.ingest_metrics(rid, 0, 300, rows)
    data = api(client, f"/sweeps/{big}")
    assert data["children_total"] == 500 and len(data["children"]) == queries.SWEEP_CHILDREN_PAGE
    assert data["children"][0]["run_id"] == f"{big}_0"  # minimizing: the lowest accuracy first
    page = client.get(f"/sweeps/{big}").text
    assert len(_rows(page)) == queries.SWEEP_CHILDREN_PAGE and 'rel="next"' in page
    curves = _svg(page, "sweep-curves")
    lines = [p for p in curves.iter(f"{SVG}polyline")]
    assert len(lines) == queries.MAX_SWEEP_CURVES
    assert {p.get("data-label") for p in lines} == {f"{big}_{i}" for i in range(queries.MAX_SWEEP_CURVES)}
    assert sum(len(p.get("points").split()) for p in lines) <= queries.MAX_SWEEP_POINTS
    assert not list(curves.iter(f"{SVG}circle"))  # no markers on so many lines
    parallel = _svg(page, "sweep-parallel")
    assert int(parallel.get("data-runs")) == 500 and not list(parallel.iter(f"{SVG}circle"))
    listing = api(client, "/experiments/ui-sweep-big/runs")
    assert [r["run_id"] for r in listing["runs"]] == [big] and listing["children_hidden"] == 500
