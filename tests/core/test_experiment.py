"""Bad input: a clear error before anything is submitted, and nothing written to the run store."""

from __future__ import annotations

import json
import os

import pytest

from airflow_provider_mltrain import (
    Environment,
    Experiment,
    InvalidRunConfig,
    PythonSection,
    ScriptRunConfig,
    SnapshotError,
    SnapshotLimits,
    SnapshotTooLarge,
    UnknownComputeTarget,
    Workspace,
)


@pytest.fixture
def src(make_tree):
    return make_tree({"train.py": "print('hi')\n", "pkg/helper.py": ""})


def assert_refused(workspace, config, error, match, **submit_kwargs):
    with pytest.raises(error, match=match):
        Experiment(workspace, "exp").submit(config, **submit_kwargs)
    assert workspace.store.list_runs() == []
    assert not (workspace.root / "targets").exists()


def test_missing_source_directory(workspace, tmp_path):
    assert_refused(
        workspace, ScriptRunConfig(tmp_path / "nope", "train.py"), InvalidRunConfig, "does not exist"
    )


def test_source_directory_is_a_file(workspace, src):
    assert_refused(workspace, ScriptRunConfig(src / "train.py", "train.py"), InvalidRunConfig, "not a folder")


@pytest.mark.parametrize(
    ("script", "match"),
    [
        ("missing.py", "does not exist"),
        ("pkg", "is a folder"),
        ("../train.py", "outside source_directory"),
        ("/etc/hostname", "outside source_directory"),
        ("pkg/../../x.py", "outside source_directory"),
        ("", "script is empty"),
    ],
)
def test_bad_script(workspace, src, script, match):
    assert_refused(workspace, ScriptRunConfig(src, script), InvalidRunConfig, match)


@pytest.mark.parametrize(
    ("script", "suggestion"),
    [("trian.py", "'train.py'"), ("train", "'train.py'"), ("pkg/helpr.py", "'pkg/helper.py'")],
)
def test_mistyped_script_name_suggests_the_closest_file(workspace, src, script, suggestion):
    assert_refused(
        workspace,
        ScriptRunConfig(src, script),
        InvalidRunConfig,
        f"does not exist.*Did you mean {suggestion}\\?",
    )


def test_script_name_far_from_every_file_gets_no_suggestion(workspace, src):
    with pytest.raises(InvalidRunConfig) as caught:
        Experiment(workspace, "exp").submit(ScriptRunConfig(src, "evaluate_model.py"))
    assert "Did you mean" not in str(caught.value)


def test_absolute_script_inside_the_folder_is_accepted(workspace, src):
    run = Experiment(workspace, "exp").submit(ScriptRunConfig(src, str(src / "train.py")))
    assert run.get_details()["script"] == "train.py"
    run.wait_for_completion()


def test_script_symlink_is_refused(workspace, src):
    os.symlink("train.py", src / "link.py")
    assert_refused(workspace, ScriptRunConfig(src, "link.py"), InvalidRunConfig, "symlink")


def test_script_left_out_by_ignore_file(workspace, src):
    (src / ".mltrainignore").write_text("train.py\n")
    assert_refused(workspace, ScriptRunConfig(src, "train.py"), SnapshotError, "left out of the snapshot")
    assert not any((workspace.root / "snapshots").rglob("*.json"))


@pytest.mark.parametrize(
    ("arguments", "match"),
    [
        ("--epochs 5", "Split it"),
        ([None], r"arguments\[0\]"),
        (["--x", {"a": 1}], r"arguments\[1\]"),
        ([True], "strings or numbers"),
        ([b"bytes"], "strings or numbers"),
        (["a\0b"], "NUL"),
        (5, "list"),
    ],
)
def test_bad_arguments(workspace, src, arguments, match):
    assert_refused(workspace, ScriptRunConfig(src, "train.py", arguments=arguments), InvalidRunConfig, match)


def test_unknown_compute_target(workspace, src):
    assert_refused(
        workspace,
        ScriptRunConfig(src, "train.py", compute_target="gpu-box"),
        UnknownComputeTarget,
        "Unknown compute target 'gpu-box'",
    )


def test_snapshot_over_the_limits(tmp_path, src):
    ws = Workspace(tmp_path / "ws", snapshot_limits=SnapshotLimits(max_files=1))
    assert_refused(ws, ScriptRunConfig(src, "train.py"), SnapshotTooLarge, "too large")


def test_bad_interpreter_path(workspace, src):
    env = Environment(python=PythonSection(interpreter_path="/no/such/python"))
    assert_refused(
        workspace,
        ScriptRunConfig(src, "train.py", environment=env),
        InvalidRunConfig,
        "not an executable file",
    )


def test_unknown_environment_name_suggests_close_ones(workspace, src):
    assert_refused(
        workspace,
        ScriptRunConfig(src, "train.py", environment="sklearn"),
        InvalidRunConfig,
        "Unknown environment 'sklearn'. Did you mean 'mltrain-sklearn'",
    )


def test_environment_of_the_wrong_type(workspace, src):
    assert_refused(
        workspace,
        ScriptRunConfig(src, "train.py", environment=42),
        InvalidRunConfig,
        "must be an Environment, a YAML file's path or an environment name",
    )


def test_interpreter_that_is_not_python(workspace, src):
    env = Environment(python=PythonSection(interpreter_path="/bin/true"))
    assert_refused(
        workspace,
        ScriptRunConfig(src, "train.py", environment=env),
        InvalidRunConfig,
        "is not a Python interpreter",
    )


@pytest.mark.parametrize("name", ["", "has space", "../up", "x" * 300])
def test_bad_experiment_name(workspace, name):
    with pytest.raises(InvalidRunConfig, match="Experiment name"):
        Experiment(workspace, name)


def test_bad_run_id(workspace, src):
    assert_refused(workspace, ScriptRunConfig(src, "train.py"), InvalidRunConfig, "run_id", run_id="a/b")


@pytest.mark.parametrize("name", ["exp\n", "exp\r\n", "exp\nrm"])
def test_a_name_or_run_id_with_a_line_break_is_refused_whole(workspace, src, name):
    """``$`` in a ``re.match`` pattern also matches before a final newline: names are matched whole."""
    with pytest.raises(InvalidRunConfig, match="Experiment name"):
        Experiment(workspace, name)
    assert_refused(workspace, ScriptRunConfig(src, "train.py"), InvalidRunConfig, "run_id", run_id=name)
    with pytest.raises(InvalidRunConfig, match="Environment name"):
        Environment(name=name).validate()


def test_same_run_id_returns_the_existing_run(workspace, make_tree):
    src = make_tree({"train.py": "import os\nopen(os.environ['COUNT_FILE'], 'a').write('x')\n"})
    count = src.parent / "count.txt"
    env = Environment(environment_variables={"COUNT_FILE": str(count)})
    exp = Experiment(workspace, "exp")
    first = exp.submit(ScriptRunConfig(src, "train.py", environment=env), run_id="fixed-id")
    second = exp.submit(ScriptRunConfig(src, "train.py", environment=env), run_id="fixed-id")
    assert first == second
    first.wait_for_completion()
    assert count.read_text() == "x"
    assert [r.id for r in exp.list_runs()] == ["fixed-id"]


def test_list_runs_filters_and_orders(workspace, src):
    exp = Experiment(workspace, "exp")
    a = exp.submit(ScriptRunConfig(src, "train.py"), tags={"kind": "a"})
    b = exp.submit(ScriptRunConfig(src, "train.py"), tags={"kind": "b"})
    a.wait_for_completion()
    b.wait_for_completion()
    assert [r.id for r in exp.list_runs()] == [b.id, a.id]
    assert [r.id for r in exp.list_runs(tags={"kind": "a"})] == [a.id]
    assert [r.id for r in exp.list_runs(status="Completed")] == [b.id, a.id]
    assert workspace.list_experiments() == ["exp"]


def test_target_object_is_followed_by_name(tmp_path, src):
    from airflow_provider_mltrain.targets.local import LocalTarget

    ws = Workspace(tmp_path / "ws")
    target = LocalTarget(tmp_path / "elsewhere")  # named "local", with its own root
    run = Experiment(ws, "exp").submit(ScriptRunConfig(src, "train.py", compute_target=target))
    assert run.wait_for_completion()["status"] == "Completed"
    assert (tmp_path / "elsewhere" / "runs" / run.id).exists()


def test_reader_of_another_workspace_gives_no_verdict(tmp_path, make_tree):
    """Same run store, other workspace root: a run it cannot see is not declared lost."""
    import subprocess
    import sys

    src = make_tree({"train.py": "print('ok')\n"})
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    code = (
        "from airflow_provider_mltrain import Experiment, ScriptRunConfig, Workspace\n"
        f"ws = Workspace({str(tmp_path / 'a')!r}, database_url={url!r})\n"
        f"print(Experiment(ws, 'exp').submit(ScriptRunConfig({str(src)!r}, 'train.py')).id)\n"
    )
    run_id = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.split()[-1]
    other = Workspace(tmp_path / "b", database_url=url).get_run(run_id)
    assert other.get_status() != "Failed"
    owner = Workspace(tmp_path / "a", database_url=url).get_run(run_id)
    assert owner.wait_for_completion()["status"] == "Completed"


def test_framework_and_target_options_are_checked_before_submission(workspace, make_tree):
    src = make_tree({"train.py": "print(1)"})
    with pytest.raises(InvalidRunConfig, match="framework 'pyspark' is not supported by the local target"):
        Experiment(workspace, "x").submit(ScriptRunConfig(src, "train.py", framework="pyspark"))
    with pytest.raises(InvalidRunConfig, match=r"takes no target_options \(got mem_limit\)"):
        Experiment(workspace, "x").submit(
            ScriptRunConfig(src, "train.py", target_options={"mem_limit": "1g"})
        )
    with pytest.raises(InvalidRunConfig, match="target_options must be a dict"):
        Experiment(workspace, "x").submit(ScriptRunConfig(src, "train.py", target_options=["a"]))
    assert workspace.store.list_runs() == []
    run = Experiment(workspace, "x").submit(ScriptRunConfig(src, "train.py", framework="python"))
    assert run.wait_for_completion()["properties"]["mltrain.framework"] == "python"


def test_submission_reports_and_records_the_secret_files_it_left_out(workspace, make_tree):
    src = make_tree({"train.py": "print('ok')\n", ".env": "A=1\n", ".aws/credentials": "[default]\n"})
    lines: list[str] = []
    run = Experiment(workspace, "sec").submit(ScriptRunConfig(src, "train.py"), log=lines.append)
    run.wait_for_completion()
    assert any("likely secrets: .aws/, .env" in line and "'!.aws/'" in line for line in lines), lines
    assert json.loads(run.properties["mltrain.snapshot.secrets_skipped"]) == [".aws/", ".env"]
    assert workspace.snapshots.get(run.get_details()["snapshot_id"]).paths() == ["train.py"]
