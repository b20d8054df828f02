"""Run outputs on every target: ./outputs/NAME/ is uploaded to the real S3 server after the run."""

from __future__ import annotations

import uuid

import pytest

from airflow_provider_mltrain import Experiment, Output, ScriptRunConfig
from airflow_provider_mltrain.core.errors import InvalidRunConfig
from tests.conftest import s3_options

SCRIPT = """
import os, sys
folder = sys.argv[1]
assert folder == os.environ["MLTRAIN_OUTPUT_MODEL"], (folder, os.environ["MLTRAIN_OUTPUT_MODEL"])
assert os.path.isdir(folder), "the output folder exists before the script starts"
os.makedirs(os.path.join(folder, "sub"), exist_ok=True)
open(os.path.join(folder, "weights.bin"), "wb").write(b"w" * 1000)
open(os.path.join(folder, "sub", "config.json"), "w").write("{}")
"""


@pytest.fixture
def s3_prefix():
    import s3fs

    fs = s3fs.S3FileSystem(**s3_options(), skip_instance_cache=True)
    prefix = f"mltrain-test/outputs-{uuid.uuid4().hex}"
    yield fs, prefix
    if fs.exists(prefix):
        fs.rm(prefix, recursive=True)


def test_outputs_are_uploaded_after_the_run(workspace, harness, make_tree, s3_prefix):
    fs, prefix = s3_prefix
    src = make_tree({"train.py": SCRIPT})
    config = ScriptRunConfig(
        src,
        "train.py",
        arguments=["${{outputs.model}}"],
        compute_target=harness.name,
        outputs={
            "model": Output(f"s3://{prefix}/model/", storage_options=s3_options()),
            "extra": Output(f"s3://{prefix}/extra/", required=False, storage_options=s3_options()),
        },
    )
    run = Experiment(workspace, "outputs").submit(config)
    assert run.wait_for_completion()["status"] == "Completed", run.get_log_tail()
    assert fs.cat(f"{prefix}/model/weights.bin") == b"w" * 1000
    assert fs.cat(f"{prefix}/model/sub/config.json") == b"{}"
    assert not fs.exists(f"{prefix}/extra")
    details = run.get_details()
    outputs = {o["name"]: o for o in details["outputDatasets"]}
    assert outputs["model"]["uploaded"] and outputs["model"]["files"] == 2
    assert outputs["model"]["size"] == 1002
    assert outputs["extra"]["uploaded"] is False  # optional: a warning, not an error
    assert not details["error"]


def test_a_file_url_output_is_copied_into_a_folder_that_did_not_exist(workspace, make_tree, tmp_path):
    """file:// is the output of a one-machine deployment (and of the retraining example)."""
    src = make_tree({"train.py": SCRIPT})
    dest = tmp_path / "models" / "2026-11-30"
    config = ScriptRunConfig(
        src, "train.py", arguments=["${{outputs.model}}"], outputs={"model": f"file://{dest}/"}
    )
    run = Experiment(workspace, "outputs").submit(config)
    assert run.wait_for_completion()["status"] == "Completed", run.get_log_tail()
    assert (dest / "weights.bin").read_bytes() == b"w" * 1000
    assert (dest / "sub" / "config.json").read_text() == "{}"
    [output] = run.get_details()["outputDatasets"]
    assert output["uploaded"] and output["files"] == 2


def test_a_required_output_the_script_never_wrote_is_the_runs_error(workspace, make_tree, s3_prefix):
    fs, prefix = s3_prefix
    src = make_tree({"train.py": "print('no model')\n"})
    config = ScriptRunConfig(
        src, "train.py", outputs={"model": Output(f"s3://{prefix}/model/", storage_options=s3_options())}
    )
    run = Experiment(workspace, "outputs").submit(config)
    run.wait_for_completion()
    details = run.get_details()
    assert "output 'model': the script wrote nothing to outputs/model/" in details["error"]
    assert not fs.exists(f"{prefix}/model")


@pytest.mark.parametrize(
    ("outputs", "arguments", "match"),
    [
        ({"model": "nosuch://b/m"}, [], "scheme 'nosuch'"),
        ({"model": "/local/folder"}, [], "must be an object-store URL"),
        ({"model": "s3://key:secret@b/m"}, [], "no credentials in the URL"),
        ({"model": "s3://b/{{ ds }}/"}, [], "unrendered template"),
        ({}, ["${{outputs.model}}"], "names output 'model'"),
    ],
)
def test_bad_outputs_are_refused_before_submission(workspace, make_tree, outputs, arguments, match):
    src = make_tree({"train.py": "print('hi')\n"})
    config = ScriptRunConfig(src, "train.py", arguments=arguments, outputs=outputs)
    with pytest.raises(InvalidRunConfig, match=match):
        Experiment(workspace, "outputs").submit(config)
    assert workspace.store.list_runs() == []
