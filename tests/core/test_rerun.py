from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from airflow_provider_mltrain import (
    Environment,
    Experiment,
    InvalidEnvironment,
    InvalidRunConfig,
    RunNotFound,
    ScriptRunConfig,
    SnapshotError,
)
from airflow_provider_mltrain.core import compute
from airflow_provider_mltrain.core.rerun import RERUN_OF, rerun
from airflow_provider_mltrain.targets.local import LocalTarget

SCRIPT = """\
import os, sys
from mltrain import Run
os.makedirs("outputs", exist_ok=True)
with open("outputs/seen.txt", "w") as f:
    f.write(" ".join(sys.argv[1:]) + "|" + os.environ.get("API_TOKEN", "-") + "|" + open("data.txt").read())
Run.get_context().log("n", len(sys.argv) - 1)
"""


@pytest.fixture
def other_target():
    """A second local target called "other", with its own root: a run there is not on "local"."""

    def resolve(name: str, root: Path):
        return LocalTarget(root / "targets" / "other", name="other") if name == "other" else None

    compute.register_resolver(resolve, first=True)
    yield "other"
    compute._resolvers.remove(resolve)


def _seen(run) -> str:
    return (run.output_dir / "outputs/seen.txt").read_text()


def test_rerun_runs_the_same_snapshot_without_the_source_folder(workspace, make_tree):
    src = make_tree({"train.py": SCRIPT, "data.txt": "v1"})
    first = Experiment(workspace, "re").submit(
        ScriptRunConfig(src, "train.py", arguments=["--lr", "0.1", "-x"]), properties={"p": "1"}
    )
    first.wait_for_completion()
    shutil.rmtree(src)  # the snapshot store holds the content
    again = rerun(workspace, first.id, tags={"why": "repro"})
    again.wait_for_completion()
    a, b = first.get_details(), again.get_details()
    assert b["snapshot_id"] == a["snapshot_id"]
    assert b["script"] == "train.py" and b["arguments"] == ["--lr", "0.1", "-x"]
    assert b["environment"]["hash"] == a["environment"]["hash"]
    assert b["target"] == "local" and b["experiment"] == "re"
    assert b["properties"][RERUN_OF] == first.id
    assert "p" not in b["properties"] and b["tags"] == {"why": "repro"}
    assert _seen(again) == _seen(first) == "--lr 0.1 -x|-|v1"
    assert again.get_metrics() == {"n": 3}


def test_rerun_on_another_target_and_back(workspace, make_tree, other_target):
    src = make_tree({"train.py": SCRIPT, "data.txt": "v2"})
    first = Experiment(workspace, "re").submit(ScriptRunConfig(src, "train.py", compute_target="other"))
    first.wait_for_completion()
    assert (workspace.root / "targets/other/runs" / first.id).is_dir()
    back = rerun(workspace, first.id, "local", experiment="re-local")
    back.wait_for_completion()
    assert back.get_details()["target"] == "local" and back.get_details()["experiment"] == "re-local"
    assert (workspace.root / "targets/local/runs" / back.id).is_dir()
    assert _seen(back) == _seen(first) == "|-|v2"
    same = rerun(workspace, back.id)  # its own target: local
    same.wait_for_completion()
    assert same.get_details()["target"] == "local"


def test_registered_environment_is_found_again_with_its_secret(workspace, make_tree):
    env = Environment(name="tokened", environment_variables={"API_TOKEN": "s3cret"})
    env.register(workspace)
    src = make_tree({"train.py": SCRIPT, "data.txt": "v3"})
    first = Experiment(workspace, "re").submit(ScriptRunConfig(src, "train.py", environment="tokened"))
    first.wait_for_completion()
    assert first.get_details()["environment"]["environment_variables"] == {"API_TOKEN": "***"}
    again = rerun(workspace, first.id)
    again.wait_for_completion()
    assert _seen(again) == "|s3cret|v3"


def test_unregistered_secret_must_be_given_again(workspace, make_tree):
    env = Environment(name="adhoc", environment_variables={"API_TOKEN": "s3cret"})
    src = make_tree({"train.py": SCRIPT, "data.txt": "v4"})
    first = Experiment(workspace, "re").submit(ScriptRunConfig(src, "train.py", environment=env))
    first.wait_for_completion()
    with pytest.raises(InvalidEnvironment, match="set API_TOKEN, whose values the run history"):
        rerun(workspace, first.id)
    assert [r["id"] for r in workspace.store.list_runs()] == [first.id]
    again = rerun(workspace, first.id, environment_variables={"API_TOKEN": "again"})
    again.wait_for_completion()
    assert _seen(again) == "|again|v4"


def test_managed_environment_from_a_changed_requirements_file_is_refused(workspace, make_tree):
    src = make_tree(
        {
            "train.py": "print('ok')\n",
            "env.yaml": "python:\n  requirements_file: reqs.txt\n",
            "reqs.txt": "six==1.17.0\n",
        }
    )
    first = Experiment(workspace, "re").submit(ScriptRunConfig(src, "train.py", environment="env.yaml"))
    first.wait_for_completion()
    again = rerun(workspace, first.id)  # the file is unchanged: same hash, the cached build
    again.wait_for_completion()
    assert again.get_details()["environment"]["cache_hit"] is True
    (src / "reqs.txt").write_text("six==1.16.0\n")
    with pytest.raises(InvalidEnvironment, match="cannot be rebuilt as it was"):
        rerun(workspace, first.id)
    assert len(workspace.store.list_runs()) == 2


def test_bad_input_is_refused_before_anything_is_recorded(workspace, make_tree):
    with pytest.raises(RunNotFound, match="'nope' is not in the run store"):
        rerun(workspace, "nope")
    src = make_tree({"train.py": SCRIPT, "data.txt": "v5"})
    first = Experiment(workspace, "re").submit(ScriptRunConfig(src, "train.py"))
    first.wait_for_completion()
    assert rerun(workspace, first.id, new_run_id=first.id) == first  # an existing id reattaches
    workspace.store.update(first.id, properties={**first.properties, "mltrain.framework": "pyspark"})
    with pytest.raises(InvalidRunConfig, match="framework 'pyspark' is not supported"):
        rerun(workspace, first.id)
    shutil.rmtree(workspace.snapshots.blobs)
    with pytest.raises(SnapshotError, match="the snapshot store was cleaned since"):
        rerun(workspace, first.id)
    assert [r["id"] for r in workspace.store.list_runs()] == [first.id]


def test_unregistered_url_credentials_must_be_given_again(workspace, make_tree):
    env = Environment(name="adhoc", environment_variables={"DATABASE_URL": "postgresql://app:s3cret@db/ml"})
    src = make_tree({"train.py": SCRIPT, "data.txt": "v6"})
    first = Experiment(workspace, "re").submit(ScriptRunConfig(src, "train.py", environment=env))
    first.wait_for_completion()
    assert first.get_details()["environment"]["environment_variables"] == {
        "DATABASE_URL": "postgresql://***@db/ml"
    }
    with pytest.raises(InvalidEnvironment, match="set DATABASE_URL, whose values the run history"):
        rerun(workspace, first.id)
