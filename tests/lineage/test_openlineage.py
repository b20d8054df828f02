"""ScriptRunOperator's OpenLineage events, through the real openlineage provider and its file
transport (``airflow dags test``, SQLite): START names what the task will read and write, COMPLETE
what the run read (with content versions), wrote and registered, and our run facet; FAIL too."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from airflow_provider_mltrain.lineage.openlineage import (
    SCHEMA_FILE,
    dataset_identity,
    schema_url,
    source_location,
)
from tests.conftest import s3_options
from tests.test_dags import AIRFLOW, _env

SCHEMA = json.loads(SCHEMA_FILE.read_text())
# The api-server address of the DAG tests' Airflow home: the facet's _schemaURL is under it.
BASE_URL = "http://127.0.0.1:28793/airflow"
SCHEMA_URL = f"{BASE_URL}/mltrain/lineage/MLTrainRunFacet.json#/$defs/MLTrainRunFacet"


@pytest.mark.parametrize(
    ("location", "identity"),
    [
        ("s3://bucket/data/train.csv", ("s3://bucket", "data/train.csv")),
        ("s3://bucket/models/", ("s3://bucket", "models")),
        ("s3a://bucket/x", ("s3://bucket", "x")),
        ("s3://bucket", ("s3://bucket", "/")),
        ("s3://user:secret@bucket/x", ("s3://bucket", "x")),
        ("gcs://b/p/q", ("gs://b", "p/q")),
        ("gs://b/p/", ("gs://b", "p")),
        ("abfss://data@acct.dfs.core.windows.net/p/f", ("abfss://data@acct.dfs.core.windows.net", "p/f")),
        ("file:///data/train.csv", ("file", "/data/train.csv")),
        ("file://localhost/data/", ("file", "/data")),
        ("file://nas/data/x", ("file://nas", "/data/x")),
        ("/data/labels/", ("file", "/data/labels")),
    ],
)
def test_a_location_has_the_namespace_and_name_the_openlineage_converters_give(location, identity):
    assert dataset_identity(location) == identity


def test_a_relative_path_is_the_absolute_path_the_input_is_read_from(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert dataset_identity("data/train.csv") == ("file", str(tmp_path / "data" / "train.csv"))


def test_every_kind_of_input_has_a_location():
    from airflow.sdk import Asset, ObjectStoragePath

    from airflow_provider_mltrain import Input

    assert source_location(Asset(name="d", uri="s3://b/d.csv")) == "s3://b/d.csv"
    assert source_location(Input("s3://b/x/", mode="download")) == "s3://b/x/"
    assert source_location(Input(Asset(name="a", uri="file:///data/a"))) == "file:///data/a"
    assert source_location(ObjectStoragePath("s3://conn@bucket/key")) == "s3://bucket/key"
    assert source_location(Path("/data/x")) == "/data/x"
    assert source_location(42) is None


def test_the_facets_schema_url_is_served_by_the_api_server_it_names(monkeypatch):
    """_schemaURL is <[api] base_url>/mltrain/lineage/MLTrainRunFacet.json#/$defs/MLTrainRunFacet:
    the ML Training app answers that path with the schema, to a client with no login, and the
    pointer names the facet's definition; with no base_url, Airflow's default address."""
    from fastapi.testclient import TestClient

    from airflow_provider_mltrain.lineage.openlineage import run_facet
    from airflow_provider_mltrain.plugins.app import create_app
    from airflow_provider_mltrain.plugins.ui_plugin import URL_PREFIX

    monkeypatch.setenv("AIRFLOW__API__BASE_URL", BASE_URL + "/")
    facet = run_facet({"experiment": "e", "computeTarget": "local"})
    assert facet._schemaURL == SCHEMA_URL
    url, pointer = SCHEMA_URL.split("#", 1)
    assert url.startswith(BASE_URL + URL_PREFIX + "/")
    response = TestClient(create_app()).get(url.removeprefix(BASE_URL + URL_PREFIX))
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/schema+json")
    served = response.json()
    assert served == SCHEMA
    node = served
    for part in pointer.strip("/").split("/"):
        node = node[part]
    assert "runId" in node["allOf"][1]["properties"]

    monkeypatch.delenv("AIRFLOW__API__BASE_URL")
    assert schema_url() == "http://localhost:8080/mltrain/lineage/MLTrainRunFacet.json#/$defs/MLTrainRunFacet"


def test_the_operator_imports_no_openlineage_library():
    """Without apache-airflow-providers-openlineage the operator must work: neither the provider's
    extractors nor the OpenLineage client are imported until the listener asks for lineage
    (Airflow itself reads every installed provider's get_provider_info)."""
    code = (
        "import sys; import airflow_provider_mltrain.operators.script_run; "
        "names = ('openlineage', 'airflow.providers.openlineage.extractors'); "
        "print(sorted(m for m in sys.modules if m.startswith(names)))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert proc.stdout.strip() == "[]", proc.stdout


DAGS = """
import datetime, os, pathlib
from airflow.sdk import DAG, Asset
from airflow_provider_mltrain import Input
from airflow_provider_mltrain.operators.script_run import ScriptRunOperator

DATA = pathlib.Path(os.environ["MLTRAIN_TEST_DATA"])
PREFIX = os.environ["MLTRAIN_TEST_S3_PREFIX"]
SRC = pathlib.Path(__file__).parent / "train"

for dag_id, fail in (("mltrain_test_lineage", ""), ("mltrain_test_lineage_fails", "1")):
    with DAG(dag_id, schedule=None, start_date=datetime.datetime(2026, 1, 1)):
        ScriptRunOperator(
            task_id="train",
            experiment_name="lineage",
            source_directory=str(SRC),
            script="train.py",
            arguments=["${{inputs.train}}", "${{outputs.model}}", fail],
            inputs={
                "train": Asset(name="training_data", uri=f"file://{DATA}/train.csv"),
                "labels": str(DATA / "labels"),
                "extra": Input(f"s3://{PREFIX}/extra.csv", conn_id="mltrain_test_s3"),
            },
            outputs={"model": f"file://{DATA}/models/{{{{ ds }}}}/"},
            register_model={"name": "churn", "path": "outputs/model"},
            poll_interval=0.5,
        )
"""

TRAIN = """
import os, sys
from mltrain import Run
data, out, fail = sys.argv[1:4] if len(sys.argv) > 3 else (*sys.argv[1:3], "")
open(os.path.join(out, "model.txt"), "w").write(open(data).read())
run = Run.get_context()
run.log("auc", 0.91)
for loss in (0.5, 0.25):
    run.log("loss", loss)
sys.exit(3 if fail else 0)
"""


@pytest.fixture(scope="module")
def lineage_home(tmp_path_factory):
    """An Airflow home whose OpenLineage events go to a file, and its DAG runs' events."""
    import s3fs

    tmp = tmp_path_factory.mktemp("lineage")
    options = s3_options()
    prefix = f"mltrain-test/lineage-{uuid.uuid4().hex}"
    fs = s3fs.S3FileSystem(**options, skip_instance_cache=True)
    fs.pipe(f"{prefix}/extra.csv", b"x,y\n1,2\n")
    dags, data, home = tmp / "dags", tmp / "data", tmp / "home"
    (dags / "train").mkdir(parents=True)
    (dags / "lineage_dags.py").write_text(DAGS)
    (dags / "train" / "train.py").write_text(TRAIN)
    (data / "labels").mkdir(parents=True)
    (data / "train.csv").write_text("a,b\n1,2\n")
    (data / "labels" / "l.txt").write_text("x\n")
    git = ["git", "-C", str(dags), "-c", "user.name=t", "-c", "user.email=t@t"]
    for argv in (["init", "-q", "-b", "main"], ["add", "."], ["commit", "-qm", "train"]):
        subprocess.run([*git, *argv], check=True, capture_output=True)
    commit = subprocess.run([*git, "rev-parse", "HEAD"], check=True, capture_output=True, text=True).stdout
    events_file = tmp / "openlineage.jsonl"
    conn = {
        "conn_type": "aws",
        "login": options["key"],
        "password": options["secret"],
        "extra": {"endpoint_url": options["client_kwargs"]["endpoint_url"]},
    }
    env = _env(
        home,
        dags,
        MLTRAIN_TEST_DATA=str(data),
        MLTRAIN_TEST_S3_PREFIX=prefix,
        AIRFLOW_CONN_MLTRAIN_TEST_S3=json.dumps(conn),
        AIRFLOW__OPENLINEAGE__TRANSPORT=json.dumps(
            {"type": "file", "log_file_path": str(events_file), "append": True}
        ),
        AIRFLOW__OPENLINEAGE__NAMESPACE="mltrain-tests",
        AIRFLOW__API__BASE_URL=BASE_URL + "/",
    )
    try:
        subprocess.run([AIRFLOW, "db", "migrate"], env=env, check=True, capture_output=True, timeout=300)
        results = {}
        for dag_id in ("mltrain_test_lineage", "mltrain_test_lineage_fails"):
            results[dag_id] = subprocess.run(
                [AIRFLOW, "dags", "test", dag_id, "2026-11-30"],
                env=env,
                capture_output=True,
                text=True,
                timeout=600,
            )
    finally:
        fs.rm(prefix, recursive=True)
    events = [json.loads(line) for line in events_file.read_text().splitlines() if line.strip()]
    return {
        "data": data,
        "home": home,
        "prefix": prefix,
        "commit": commit.strip(),
        "results": results,
        "events": events,
    }


def _task_events(home, dag_id):
    return {e["eventType"]: e for e in home["events"] if e["job"]["name"] == f"{dag_id}.train"}


def _datasets(items):
    return {(d["namespace"], d["name"]): d for d in items}


def _check_facet(facet):
    import jsonschema

    assert facet["_schemaURL"] == SCHEMA_URL
    assert facet["_producer"]
    own = SCHEMA["$defs"]["MLTrainRunFacet"]["allOf"][1]
    jsonschema.Draft202012Validator(own).validate(facet)


@pytest.mark.airflow
@pytest.mark.timeout(1200)  # the module fixture runs two `airflow dags test`
def test_start_and_complete_events_name_the_runs_data_and_carry_the_run(lineage_home):
    home = lineage_home
    proc = home["results"]["mltrain_test_lineage"]
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    events = _task_events(home, "mltrain_test_lineage")
    assert {"START", "COMPLETE"} <= set(events), sorted(events)
    data, bucket, key = home["data"], *home["prefix"].split("/", 1)
    inputs = {
        ("file", f"{data}/train.csv"),  # the Asset file://...: as the common-io converter names it
        ("file", f"{data}/labels"),  # a local folder
        (f"s3://{bucket}", f"{key}/extra.csv"),
    }
    model_output = ("file", f"{data}/models")  # the output's Asset, not the dated folder

    start = events["START"]
    assert set(_datasets(start["inputs"])) == inputs
    assert set(_datasets(start["outputs"])) == {model_output}
    facet = start["run"]["facets"]["mltrain_run"]
    _check_facet(facet)
    assert {k: facet[k] for k in ("experiment", "computeTarget")} == {
        "experiment": "lineage",
        "computeTarget": "local",
    }
    assert "runId" not in facet  # chosen when the task submits

    complete = events["COMPLETE"]
    read = _datasets(complete["inputs"])
    assert set(read) == inputs
    versions = {k: d["facets"]["version"]["datasetVersion"] for k, d in read.items()}
    assert all(len(v) == 64 for v in versions.values()), versions  # each input's content sha256
    written = _datasets(complete["outputs"])
    workspace_models = ("file", f"{home['home']}/mltrain/models/churn")  # the registry, in the workspace
    assert set(written) == {model_output, workspace_models}, set(written)
    assert written[model_output]["outputFacets"]["outputStatistics"] == {
        **written[model_output]["outputFacets"]["outputStatistics"],
        "fileCount": 1,
        "size": len("a,b\n1,2\n"),
    }
    assert written[workspace_models]["facets"]["version"]["datasetVersion"] == "1"

    facet = complete["run"]["facets"]["mltrain_run"]
    _check_facet(facet)
    assert facet["runId"].startswith("mltrain_test_lineage.train.")
    assert facet["experiment"] == "lineage" and facet["computeTarget"] == "local"
    assert facet["status"] == "Completed" and facet["exitCode"] == 0
    assert facet["metrics"] == {"auc": 0.91, "loss": 0.25}
    assert facet["gitCommit"] == home["commit"] and facet["gitDirty"] is False
    assert len(facet["environmentHash"]) == 64 and len(facet["snapshotId"]) == 64
    assert facet["outputs"] == {"model": f"file://{data}/models/2026-11-30/"}
    assert facet["model"] == {"name": "churn", "version": 1}


@pytest.mark.airflow
@pytest.mark.timeout(1200)  # the module fixture runs two `airflow dags test`
def test_a_failed_runs_event_names_what_it_read_and_how_it_ended(lineage_home):
    home = lineage_home
    proc = home["results"]["mltrain_test_lineage_fails"]
    assert proc.returncode != 0
    events = _task_events(home, "mltrain_test_lineage_fails")
    assert {"START", "FAIL"} <= set(events), sorted(events)
    fail = events["FAIL"]
    assert len(fail["inputs"]) == 3
    assert all(len(d["facets"]["version"]["datasetVersion"]) == 64 for d in fail["inputs"])
    # The script wrote its output before it failed: uploaded all the same; no model registered.
    assert set(_datasets(fail["outputs"])) == {("file", f"{home['data']}/models")}
    facet = fail["run"]["facets"]["mltrain_run"]
    _check_facet(facet)
    assert facet["status"] == "Failed" and facet["exitCode"] == 3
    assert facet["runId"].startswith("mltrain_test_lineage_fails.train.")
    assert facet["metrics"] == {"auc": 0.91, "loss": 0.25}
    assert "model" not in facet
    assert "exit code 3" in fail["run"]["facets"]["errorMessage"]["message"]
