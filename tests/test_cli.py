from __future__ import annotations

import json
import os
import time

from airflow_provider_mltrain import Environment, Experiment, PythonSection, ScriptRunConfig
from airflow_provider_mltrain.cli import main


def test_runs_list_and_show(workspace, make_tree, capsys):
    src = make_tree(
        {"train.py": "from mltrain import Run\nr = Run.get_context()\nr.log('acc', 0.5)\nr.log('acc', 0.7)\n"}
    )
    run = Experiment(workspace, "cli").submit(ScriptRunConfig(src, "train.py"), tags={"k": "v"})
    run.wait_for_completion()
    assert main(["--workspace", str(workspace.root), "runs", "list", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [r["run_id"] for r in listed] == [run.id] and listed[0]["status"] == "Completed"
    assert main(["--workspace", str(workspace.root), "runs", "show", "--latest", "--experiment", "cli"]) == 0
    out = capsys.readouterr().out
    assert f"Run        {run.id}" in out and "Status     Completed" in out
    assert "acc                      0.7 (last of 2; min 0.5, max 0.7)" in out
    assert "logs/std_log.txt" in out and "Tags       k=v" in out
    assert main(["--workspace", str(workspace.root), "runs", "show", run.id, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["metrics"] == {"acc": [0.5, 0.7]}


def test_show_unknown_run_is_an_error_not_a_traceback(workspace, capsys):
    assert main(["--workspace", str(workspace.root), "runs", "show", "nope"]) == 1
    assert "Run 'nope' is not in the run store" in capsys.readouterr().err


def test_env_list_build_and_prune(workspace, tmp_path, capsys):
    (tmp_path / "env.yaml").write_text("python:\n  requirements: [six==1.17.0]\n")
    ws = ["--workspace", str(workspace.root)]
    assert main([*ws, "env", "build", str(tmp_path / "env.yaml")]) == 0
    assert "env " in capsys.readouterr().out
    assert main([*ws, "env", "build", str(tmp_path / "env.yaml")]) == 0
    assert "already built (cache hit)" in capsys.readouterr().out
    assert main([*ws, "env", "build", str(tmp_path / "env.yaml"), "--rebuild"]) == 0
    capsys.readouterr()
    builds = workspace.store.list_builds()
    assert [b["status"] for b in builds] == ["built", "built"]
    Environment(name="mine", python=PythonSection(requirements=["six==1.17.0"])).register(workspace)
    assert main([*ws, "env", "list", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert {"mine", "mltrain-minimal", "mltrain-sklearn"} <= set(listed)
    envs = workspace.root / "targets/local/envs"
    build = next(p for p in envs.iterdir() if not p.name.startswith(".") and p.is_dir())
    assert main([*ws, "env", "prune", "--days", "1"]) == 0
    assert build.exists()  # built just now: kept
    old = time.time() - 3 * 86400
    os.utime(build / "mltrain-env.json", (old, old))
    assert main([*ws, "env", "prune", "--days", "1"]) == 0
    assert "1 build(s) removed" in capsys.readouterr().out
    assert not build.exists()


def test_env_show_unknown_name(workspace, capsys):
    assert main(["--workspace", str(workspace.root), "env", "show", "mltrain-sklern"]) == 1
    assert "Did you mean 'mltrain-sklearn'" in capsys.readouterr().err


def test_pythonpath_lets_a_script_run_by_hand(tmp_path, capsys):
    import subprocess
    import sys

    assert main(["pythonpath"]) == 0
    path = capsys.readouterr().out.strip()
    script = tmp_path / "t.py"
    script.write_text("from mltrain import Run\nprint(Run.get_context().offline)\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLTRAIN_")} | {"PYTHONPATH": path}
    out = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "True"
