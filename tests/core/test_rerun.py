from __future__ import annotations

import shutil
import uuid
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
from airflow_provider_mltrain.core.inputs import InputChanged
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


# -- inputs and outputs ----------------------------------------------------------------------------

INPUT_SCRIPT = """\
import os, sys
from mltrain import Run
out = os.environ.get("MLTRAIN_OUTPUT_MODEL", "outputs/model")  # set when the run declares it
os.makedirs(out, exist_ok=True)
with open(os.path.join(sys.argv[2], "x.txt")) as f:
    seen = f.read()
with open(os.path.join(os.environ["MLTRAIN_INPUT_DATA"], "x.txt")) as f:
    assert f.read() == seen, "the argument and the variable name different copies"
with open(os.path.join(out, "seen.txt"), "w") as f:
    f.write(Run.get_context().id + "|" + seen)
"""


def _input_run(workspace, make_tree, data, outputs=None):
    src = make_tree({"train.py": INPUT_SCRIPT})
    config = ScriptRunConfig(
        src, "train.py", arguments=["--data", "${{inputs.data}}"], inputs={"data": str(data)}, outputs=outputs
    )
    run = Experiment(workspace, "re").submit(config)
    assert run.wait_for_completion()["status"] == "Completed", run.get_log_tail()
    return run


def _model_seen(run, tmp_path) -> str:
    return run.download_file("outputs/model/seen.txt", tmp_path / run.id).read_text()


def test_a_rerun_reads_its_inputs_again_and_refuses_changed_data(workspace, make_tree, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "x.txt").write_text("one")
    first = _input_run(workspace, make_tree, data)
    # Same data (copied anew: a new inode and mtime, the same content): the rerun runs, its
    # argument is the input's path again, and its input record is the first one's content.
    shutil.rmtree(data)
    data.mkdir()
    (data / "x.txt").write_text("one")
    again = rerun(workspace, first.id)
    assert again.wait_for_completion()["status"] == "Completed", again.get_log_tail()
    assert _model_seen(again, tmp_path).endswith("|one")
    (a,), (b,) = first.get_details()["inputDatasets"], again.get_details()["inputDatasets"]
    assert b["uri"] == a["uri"] and b["sha256"] == a["sha256"]
    assert again.get_details()["arguments"] == ["--data", b["path"]]

    (data / "x.txt").write_text("two")
    before = len(workspace.store.list_runs())
    with pytest.raises(InputChanged, match=r"'data'.*allow_changed_inputs=True"):
        rerun(workspace, first.id)
    assert len(workspace.store.list_runs()) == before  # nothing submitted

    allowed = rerun(workspace, first.id, allow_changed_inputs=True)
    assert allowed.wait_for_completion()["status"] == "Completed", allowed.get_log_tail()
    assert _model_seen(allowed, tmp_path).endswith("|two")

    other = tmp_path / "other"
    other.mkdir()
    (other / "x.txt").write_text("three")
    given = rerun(workspace, first.id, inputs={"data": str(other)})
    assert given.wait_for_completion()["status"] == "Completed", given.get_log_tail()
    assert _model_seen(given, tmp_path).endswith("|three")
    # A rerun of a rerun still knows where the arguments take the input.
    assert rerun(workspace, given.id).wait_for_completion()["status"] == "Completed"

    with pytest.raises(InvalidRunConfig, match=r"no input named 'train' \(its inputs: data\)"):
        rerun(workspace, first.id, inputs={"train": str(other)})


def test_a_rerun_uploads_outputs_only_where_told(workspace, make_tree, tmp_path):
    import fsspec

    from airflow_provider_mltrain.core.outputs import Output
    from tests.conftest import s3_options

    options = s3_options()
    base = f"s3://mltrain-test/{uuid.uuid4().hex}"
    data = tmp_path / "data"
    data.mkdir()
    (data / "x.txt").write_text("one")
    outputs = {"model": Output(f"{base}/first/", storage_options=options)}
    first = _input_run(workspace, make_tree, data, outputs)
    fs = fsspec.filesystem("s3", **options)
    published = fs.cat_file(f"{base}/first/seen.txt").decode()
    assert published.startswith(first.id + "|")

    said: list[str] = []
    again = rerun(workspace, first.id, log=said.append)
    assert again.wait_for_completion()["status"] == "Completed", again.get_log_tail()
    assert _model_seen(again, tmp_path).startswith(again.id + "|")  # the script wrote its output
    fs.invalidate_cache()
    assert fs.cat_file(f"{base}/first/seen.txt").decode() == published  # not overwritten
    assert any("output 'model'" in line and "uploads it nowhere" in line for line in said), said

    elsewhere = rerun(
        workspace, first.id, outputs={"model": Output(f"{base}/rerun/", storage_options=options)}
    )
    assert elsewhere.wait_for_completion()["status"] == "Completed", elsewhere.get_log_tail()
    assert fs.cat_file(f"{base}/rerun/seen.txt").decode().startswith(elsewhere.id + "|")
    with pytest.raises(InvalidRunConfig, match=r"no output named 'weights'"):
        rerun(workspace, first.id, outputs={"weights": f"{base}/w/"})


def test_a_rerun_keeps_the_runs_duration_limit(workspace, make_tree):
    src = make_tree({"train.py": "import time\nwhile True:\n    time.sleep(0.2)\n"})
    first = Experiment(workspace, "re").submit(ScriptRunConfig(src, "train.py", max_run_duration_seconds=1))
    assert first.wait_for_completion(raise_on_error=False, timeout=120)["status"] == "Canceled"
    again = rerun(workspace, first.id)
    details = again.wait_for_completion(raise_on_error=False, timeout=120)
    assert details["status"] == "Canceled" and "max_run_duration_seconds=1" in details["error"]
