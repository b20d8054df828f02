"""Wrong types in ScriptRunConfig and Experiment.submit: InvalidRunConfig naming the field, the type
given and the type expected, before anything is recorded or stored; Path objects accepted as paths."""

from __future__ import annotations

from pathlib import Path

import pytest

from airflow_provider_mltrain import Environment, Experiment, InvalidRunConfig, ScriptRunConfig

# (field, wrong value, the type the message must name as given)
CASES = [
    *[("source_directory", v, type(v).__name__) for v in (5, 1.5, b"src", ["src"], None, {"a": 1})],
    *[("script", v, type(v).__name__) for v in (5, b"train.py", ["train.py"], None, 2.0)],
    *[("arguments", v, type(v).__name__) for v in (5, {"a": 1}, 1.5)],
    ("arguments", [None], "NoneType"),
    ("arguments", ["--x", b"bytes"], "bytes"),
    *[("compute_target", v, type(v).__name__) for v in (5, b"local", ["local"], None, Path("local"))],
    *[("environment", v, type(v).__name__) for v in (5, b"env.yaml", ["env.yaml"], {"name": "x"})],
    *[("tags", v, type(v).__name__) for v in (5, "a=1", ["a"])],
    ("tags", {"a": [1]}, "list"),
    ("tags", {"a": b"x"}, "bytes"),
    ("tags", {1: "a"}, "int"),
    *[("framework", v, type(v).__name__) for v in (5, b"python", ["python"])],
    *[("target_options", v, type(v).__name__) for v in (5, "mem=1g", ["mem"])],
    ("target_options", {1: "a"}, "int"),
]


def assert_nothing_written(workspace):
    assert workspace.store.list_runs() == []
    assert not (workspace.root / "targets").exists()
    snapshots = workspace.root / "snapshots"
    assert not snapshots.exists() or not any(p.is_file() for p in snapshots.rglob("*"))


@pytest.mark.parametrize(("name", "value", "given"), CASES, ids=[f"{n}={v!r}" for n, v, _ in CASES])
def test_wrong_type_names_field_given_and_expected_type(workspace, make_tree, name, value, given):
    src = make_tree({"train.py": "print('hi')\n"})
    fields = {"source_directory": src, "script": "train.py", name: value}
    with pytest.raises(InvalidRunConfig) as err:
        Experiment(workspace, "types").submit(ScriptRunConfig(**fields))
    message = str(err.value)
    assert name in message and "must be" in message, message
    assert given in message, message
    assert_nothing_written(workspace)


# (keyword of submit, value)
SUBMIT_WRONG = [
    ("config", {"source_directory": ".", "script": "train.py"}),
    ("config", None),
    ("tags", ["a"]),
    ("tags", "a=1"),
    ("tags", {"a": object()}),
    ("run_id", 5),
    ("run_id", b"r1"),
    ("properties", [("a", "b")]),
    ("log", "print"),
    ("snapshot_progress", 3),
    ("rebuild_environment", "yes"),
    ("rebuild_environment", None),
]


@pytest.mark.parametrize(
    ("keyword", "value"), SUBMIT_WRONG, ids=[f"{k}={v!r}".split(" at 0x")[0] for k, v in SUBMIT_WRONG]
)
def test_wrong_type_in_submit_is_refused_before_anything_is_written(workspace, make_tree, keyword, value):
    src = make_tree({"train.py": "print('hi')\n"})
    kwargs = {"config": ScriptRunConfig(src, "train.py"), keyword: value}
    with pytest.raises(
        InvalidRunConfig, match=rf"submit\(\) {keyword}.* must be .*\(|submit\(\) {keyword}\["
    ):
        Experiment(workspace, "types").submit(**kwargs)
    assert_nothing_written(workspace)


def test_experiment_name_of_the_wrong_type(workspace):
    with pytest.raises(InvalidRunConfig, match=r"Experiment name must be a str.*got 5 \(int\)"):
        Experiment(workspace, 5)


def test_path_objects_are_accepted_wherever_a_path_is(workspace, make_tree):
    src = make_tree(
        {
            "train.py": "import sys\nopen('outputs/argv.txt', 'w').write(' '.join(sys.argv[1:]))\n",
            "env.yaml": "name: from-path\nenvironment_variables:\n  MODE: test\n",
            "data/x.csv": "1\n",
        }
    )
    (src / "outputs").mkdir()
    config = ScriptRunConfig(
        source_directory=Path(src),
        script=Path("train.py"),
        arguments=["--data", Path("data/x.csv")],
        environment=Path("env.yaml"),
    )
    run = Experiment(workspace, "types").submit(config)
    details = run.wait_for_completion()
    assert details["script"] == "train.py" and details["arguments"] == ["--data", "data/x.csv"]
    assert details["environment"]["name"] == "from-path"
    absolute = ScriptRunConfig(
        Path(src), src / "train.py", environment=Environment.from_yaml(src / "env.yaml")
    )
    assert Experiment(workspace, "types").submit(absolute).wait_for_completion()["status"] == "Completed"


@pytest.mark.parametrize("value", [0, -5, float("nan"), float("inf"), True, "60"])
def test_a_bad_max_run_duration_is_refused_before_anything_is_written(workspace, make_tree, value):
    config = ScriptRunConfig(make_tree({"train.py": ""}), "train.py", max_run_duration_seconds=value)
    with pytest.raises(InvalidRunConfig, match="max_run_duration_seconds"):
        Experiment(workspace, "limits").submit(config)
    assert workspace.store.list_runs() == []
