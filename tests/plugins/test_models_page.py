"""The models pages and their JSON API (plugins/registry.py) over real registered versions."""

from __future__ import annotations

from airflow_provider_mltrain.plugins.app import create_app, get_workspace
from airflow_provider_mltrain.plugins.auth import Access, require_reader
from tests.plugins.conftest import MODEL, PROBE, PROBE_IMG, SECRET_DAG
from tests.plugins.test_app import api, client_for


def test_models_list_leaves_out_versions_of_unreadable_runs(populated):
    client = client_for(populated.ws)
    models = {m["name"]: m for m in api(client, "/models")}
    assert set(models) == {MODEL}  # secret-model's only version comes from the secret DAG's run
    churn = models[MODEL]
    assert (churn["versions"], churn["latest_version"], churn["aliases"]) == (2, 2, {"production": 2})
    assert churn["latest_run_id"] == populated.runs["second"]


def test_model_versions_with_source_runs_and_their_final_metrics(populated):
    client = client_for(populated.ws)
    data = api(client, f"/models/{MODEL}")
    assert [v["version"] for v in data["versions"]] == [2, 1]
    assert data["aliases"] == {"production": 2}
    v2, v1 = data["versions"]
    assert (v2["run_id"], v2["run_status"], v2["aliases"]) == (
        populated.runs["second"],
        "Completed",
        ["production"],
    )
    assert v1["run_id"] == populated.runs["first"] and v1["tags"] == {"probe": PROBE}
    assert v1["metrics"]["final_accuracy"] == 0.85 and "final_accuracy" in data["metric_names"]
    assert (v1["files"], v1["size"], v1["model_path"]) == (1, len("weights\n"), "outputs/model.txt")
    assert api(client, "/models/secret-model", 404)["detail"] == "No model 'secret-model' in the registry."
    assert api(client, "/models/nothing", 404)


def test_everyone_who_reads_every_dag_sees_every_version(populated):
    app = create_app()
    app.dependency_overrides[get_workspace] = lambda: populated.ws
    app.dependency_overrides[require_reader] = lambda: Access(lambda dag_id: True)
    from fastapi.testclient import TestClient

    client = TestClient(app, root_path="/mltrain")
    assert [v["version"] for v in api(client, f"/models/{MODEL}")["versions"]] == [3, 2, 1]
    assert {m["name"] for m in api(client, "/models")} == {MODEL, "secret-model"}


def test_models_pages_link_runs_and_escape_what_scripts_chose(populated):
    client = client_for(populated.ws)
    page = client.get("/models")
    assert page.status_code == 200
    assert f'href="/mltrain/models/{MODEL}"' in page.text and "production → 2" in page.text
    page = client.get(f"/models/{MODEL}")
    assert page.status_code == 200
    assert f'href="/mltrain/runs/{populated.runs["first"]}"' in page.text
    assert PROBE not in page.text and PROBE_IMG not in page.text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page.text
    assert client.get("/models/secret-model").status_code == 404
    assert SECRET_DAG not in page.text
