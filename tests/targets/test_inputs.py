"""Run inputs on every target, from the real S3 server: the script finds them by placeholder,
variable and ``input_datasets``; the run records them; a second run fetches and sends nothing."""

from __future__ import annotations

import json
import uuid

import pytest

from airflow_provider_mltrain import Experiment, ScriptRunConfig
from airflow_provider_mltrain.core.compute import get_target
from airflow_provider_mltrain.core.errors import InvalidRunConfig
from airflow_provider_mltrain.core.inputs import Input
from tests.conftest import s3_options

SCRIPT = """
import json, os, sys
from mltrain import Run
run = Run.get_context()
folder, single = sys.argv[1], sys.argv[2]
files = {}
for dirpath, _, names in os.walk(folder):
    for name in names:
        full = os.path.join(dirpath, name)
        files[os.path.relpath(full, folder)] = open(full).read()
os.makedirs("outputs", exist_ok=True)
json.dump({
    "args": [folder, single],
    "env": os.environ.get("MLTRAIN_INPUT_TRAIN"),
    "datasets": run.input_datasets,
    "files": files,
    "single": open(single).read(),
}, open("outputs/seen.json", "w"))
"""


@pytest.fixture
def s3_data():
    """A fresh prefix on the S3 server with a folder (two files, one nested) and one file."""
    import s3fs

    fs = s3fs.S3FileSystem(**s3_options(), skip_instance_cache=True)
    prefix = f"mltrain-test/inputs-{uuid.uuid4().hex}"
    token = uuid.uuid4().hex  # new content per test: no cache of an earlier test can hold it
    fs.pipe(
        {
            f"{prefix}/train/a.csv": f"a,{token}\n".encode(),
            f"{prefix}/train/sub/b.csv": b"b,2\n",
            f"{prefix}/labels.txt": f"labels {token}".encode(),
        }
    )
    yield fs, f"s3://{prefix}", token
    fs.rm(prefix, recursive=True)


def _config(src, target, url, **kwargs):
    return ScriptRunConfig(
        src,
        "train.py",
        arguments=["${{inputs.train}}", "${{ inputs.labels }}"],
        compute_target=target,
        inputs={
            "train": Input(f"{url}/train/", storage_options=s3_options()),
            "labels": Input(f"{url}/labels.txt", storage_options=s3_options()),
        },
        **kwargs,
    )


def test_inputs_reach_the_script_are_recorded_and_travel_once(workspace, harness, make_tree, s3_data):
    fs, url, token = s3_data
    src = make_tree({"train.py": SCRIPT})
    target = get_target(harness.name, workspace.root)
    if target.kind == "spark":
        with pytest.raises(InvalidRunConfig, match="does not take inputs"):
            Experiment(workspace, "inputs").submit(_config(src, target, url))
        assert workspace.store.list_runs() == []
        return
    exp = Experiment(workspace, "inputs")

    first = exp.submit(_config(src, target, url))
    assert first.wait_for_completion()["status"] == "Completed", first.get_log_tail()
    seen = json.loads(first.download_file("outputs/seen.json", workspace.root / "dl1").read_text())
    folder, single = seen["args"]
    assert seen["env"] == folder
    assert seen["datasets"] == {"train": folder, "labels": single}
    assert seen["files"] == {"a.csv": f"a,{token}\n", "sub/b.csv": "b,2\n"}
    assert seen["single"] == f"labels {token}"

    details = {d["name"]: d for d in first.get_details()["inputDatasets"]}
    assert details["train"]["uri"] == f"{url}/train/"
    assert details["train"]["size"] == len(f"a,{token}\n") + len("b,2\n")
    assert details["train"]["files"] == 2 and details["train"]["mode"] == "download"
    labels = details["labels"]
    assert labels["version"] == fs.info(f"{url}/labels.txt")["ETag"].strip('"')
    assert len(labels["sha256"]) == 64 and labels["path"] == single
    assert labels["fetched_bytes"] == len(f"labels {token}") and not labels["cache_hit"]
    if hasattr(target, "last_input_upload"):
        assert target.last_input_upload["inputs"] == 2

    second = exp.submit(_config(src, target, url))
    assert second.wait_for_completion()["status"] == "Completed", second.get_log_tail()
    again = {d["name"]: d for d in second.get_details()["inputDatasets"]}
    assert all(d["cache_hit"] and d["fetched_bytes"] == 0 for d in again.values())
    assert again["labels"]["sha256"] == labels["sha256"]
    if hasattr(target, "last_input_upload"):
        assert target.last_input_upload == {"inputs": 0, "bytes": 0}  # nothing travelled again
    seen2 = json.loads(second.download_file("outputs/seen.json", workspace.root / "dl2").read_text())
    assert seen2["files"] == seen["files"]

    # A changed object is a new version: fetched again, the new content reaches the script.
    fs.pipe(f"{url}/labels.txt"[5:], b"labels v2")
    third = exp.submit(_config(src, target, url))
    assert third.wait_for_completion()["status"] == "Completed", third.get_log_tail()
    changed = {d["name"]: d for d in third.get_details()["inputDatasets"]}
    assert not changed["labels"]["cache_hit"] and changed["labels"]["sha256"] != labels["sha256"]
    assert changed["train"]["cache_hit"]
    seen3 = json.loads(third.download_file("outputs/seen.json", workspace.root / "dl3").read_text())
    assert seen3["single"] == "labels v2"


MOUNT_SCRIPT = """
import json, os, sys
path = os.environ["MLTRAIN_INPUT_DATA"]
try:
    open(os.path.join(path, "new.txt"), "w").write("x")
    writable = True
except OSError:
    writable = False
os.makedirs("outputs", exist_ok=True)
json.dump({"path": path, "arg": sys.argv[1], "content": open(os.path.join(path, "d.txt")).read(),
           "writable": writable}, open("outputs/seen.json", "w"))
"""


def test_a_mounted_local_input(workspace, harness, make_tree, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "d.txt").write_text("mounted")
    src = make_tree({"train.py": MOUNT_SCRIPT})
    target = get_target(harness.name, workspace.root)
    config = ScriptRunConfig(
        src,
        "train.py",
        arguments=["${{inputs.data}}"],
        compute_target=target,
        inputs={"data": Input(str(data), mode="mount")},
    )
    if target.kind in ("ssh", "spark"):
        with pytest.raises(InvalidRunConfig, match=r"mount|does not take inputs"):
            Experiment(workspace, "inputs").submit(config)
        assert workspace.store.list_runs() == []
        return
    run = Experiment(workspace, "inputs").submit(config)
    assert run.wait_for_completion()["status"] == "Completed", run.get_log_tail()
    seen = json.loads(run.download_file("outputs/seen.json", workspace.root / "dl").read_text())
    assert seen["content"] == "mounted" and seen["arg"] == seen["path"]
    if target.kind == "local":
        assert seen["path"] == str(data)  # used in place
    else:
        assert seen["path"] == "/mltrain/inputs/data"
        assert seen["writable"] is False  # a read-only bind mount
        assert not (data / "new.txt").exists()
    (detail,) = run.get_details()["inputDatasets"]
    assert detail["mode"] == "mount" and detail["uri"] == str(data) and len(detail["sha256"]) == 64
