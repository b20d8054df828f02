"""Every target: a script registers models with Run.get_context().register_model(); they are
registered when the run's files are collected, once, and a hostile request file never blocks it."""

from __future__ import annotations

from pathlib import Path

from airflow_provider_mltrain import Model, Workspace
from tests.targets.suite import submit

SCRIPT = """
import json, os
from mltrain import Run
run = Run.get_context()
os.makedirs("outputs/net", exist_ok=True)
open("outputs/model.pkl", "wb").write(b"pickled")
open("outputs/net/w.bin", "wb").write(b"w" * 5000)
run.register_model("churn", "outputs/model.pkl", tags={"stage": "candidate"}, description="from the script")
from azureml.core import Run as AzureRun  # the Azure ML v1 name of the same run
AzureRun.get_context().register_model("net", "outputs/net/", properties={"auc": 0.9})
for bad in ("has space", "../up"):
    try:
        run.register_model(bad, "outputs/model.pkl")
        raise SystemExit("accepted " + bad)
    except ValueError:
        pass
# What a script may write by hand to the request file: the controller checks each line.
with open(os.path.join(os.environ["MLTRAIN_RUN_DIR"], "logs", "models.jsonl"), "a") as f:
    f.write("not json\\n")
    f.write(json.dumps({"model_name": "ghost", "model_path": "outputs/never.pkl"}) + "\\n")
    f.write(json.dumps({"model_name": "evil", "model_path": "../../../etc/passwd"}) + "\\n")
    reserved = {"model_name": "x", "model_path": "outputs/model.pkl", "tags": {"mltrain.y": "1"}}
    f.write(json.dumps(reserved) + "\\n")
os.symlink("/etc/passwd", "outputs/leak")
f = open(os.path.join(os.environ["MLTRAIN_RUN_DIR"], "logs", "models.jsonl"), "a")
f.write(json.dumps({"model_name": "leak", "model_path": "outputs/leak"}) + "\\n")
f.close()
"""


def check_registered_from_the_script(ws: Workspace, target: str, make_tree, tmp_path: Path) -> None:
    run = submit(ws, target, make_tree({"train.py": SCRIPT}))
    assert run.wait_for_completion()["status"] == "Completed"
    churn = Model(ws, "churn")
    assert (churn.version, churn.run_id, churn.tags) == (1, run.id, {"stage": "candidate"})
    assert churn.description == "from the script"
    assert Path(churn.download(tmp_path / "dl")).read_bytes() == b"pickled"
    net = Model(ws, "net")
    assert net.properties == {"auc": "0.9"} and [f["path"] for f in net.files] == ["net/w.bin"]
    assert sorted(m.name for m in Model.list(ws)) == ["churn", "net"]
    warnings = " ".join(run.warnings)
    for expected in (
        "line 3 is not JSON",
        "'outputs/never.pkl'",
        "line 5",
        "belong to the provider",
        "line 7",
    ):
        assert expected in warnings, (expected, warnings)
    # The requests taken again (a second follower, a retry after a crash): nothing registered twice.
    before = run.warnings
    assert len(before) == 5
    run._register_requested_models()
    assert [m.id for m in Model.list(ws)] == ["churn:1", "net:1"]
    assert run.warnings == before


def test_a_script_registers_models(workspace, workspace_kind, target, make_tree, tmp_path):
    check_registered_from_the_script(workspace, target, make_tree, tmp_path)
    if workspace_kind == "s3":  # another host, with no local files, downloads the model
        other = Workspace(
            tmp_path / "other-host", database_url=workspace.database_url, artifact_store=workspace.artifacts
        )
        assert Path(Model(other, "net").download(tmp_path / "o") + "/w.bin").read_bytes() == b"w" * 5000
