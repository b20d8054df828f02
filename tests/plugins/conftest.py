"""A workspace with real runs on the local target, made once per session for the UI tests.

Probe strings (``<script>alert(1)</script>`` and friends) sit in a tag, an argument, a log line,
a metric name and an output file name, so every page shows user-supplied text somewhere.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from airflow_provider_mltrain import Experiment, ScriptRunConfig, Workspace
from airflow_provider_mltrain.operators.script_run import run_id_for_task

PROBE = "<script>alert(1)</script>"
PROBE_IMG = '"><img src=x onerror=alert(2)>'
EXPERIMENT = "ui-probe"
TASK = {"dag_id": "mltrain_ui_dag", "task_id": "train", "run_id": "manual__2026-11-29T08:00:00+00:00"}
SECRET_DAG = "other_team_dag"
MODEL = "churn-model"

TRAIN = """
import argparse, os, sys
from mltrain import Run

parser = argparse.ArgumentParser()
parser.add_argument("--lr", type=float, default=0.1)
parser.add_argument("--note", default="")
parser.add_argument("--fail", action="store_true")
args = parser.parse_args()
run = Run.get_context()
run.set_tags({"probe": PROBE, "lr": str(args.lr)})
for step in range(8):
    run.log("loss", 1.0 / (step + 1) + args.lr, step=step)
    run.log("accuracy", 0.5 + step * 0.05, step=step)
run.log("final_accuracy", 0.85)
run.log_list("lr_schedule", [args.lr, args.lr / 2, args.lr / 4])
run.log_row("confusion", tp=10, fp=2)
run.log("model_name", "sgd-" + PROBE)
print("line with a probe:", PROBE, flush=True)
print("and another:", PROBE_IMG, flush=True)
os.makedirs("outputs/sub", exist_ok=True)
with open("outputs/model.txt", "w") as f:
    f.write("weights\\n")
with open("outputs/sub/report.html", "w") as f:
    f.write("<html><script>alert(3)</script></html>")
if args.fail:
    print("failing on purpose", file=sys.stderr)
    sys.exit(3)
print("done")
"""


def _source(root: Path, version: int) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    body = f"PROBE = {PROBE!r}\nPROBE_IMG = {PROBE_IMG!r}\n" + textwrap.dedent(TRAIN)
    if version == 2:
        body = body.replace('print("done")', 'print("done, version 2")')
        (root / "extra.py").write_text("VALUE = 2\n")
    else:
        (root / "old_helper.py").write_text("VALUE = 1\n")
    (root / "train.py").write_text(body)
    (root / "config.yaml").write_text("epochs: 8\n")
    return root


class Populated:
    """The session's workspace and the ids of its runs."""

    def __init__(self, ws: Workspace, runs: dict[str, str]):
        self.ws = ws
        self.runs = runs

    @property
    def root(self) -> Path:
        return self.ws.root


@pytest.fixture(scope="session")
def populated(tmp_path_factory: pytest.TempPathFactory) -> Populated:
    base = tmp_path_factory.mktemp("mltrain-ui")
    ws = Workspace(base / "ws")
    exp = Experiment(ws, EXPERIMENT)
    v1, v2 = _source(base / "src1", 1), _source(base / "src2", 2)
    runs = {}
    first = exp.submit(
        ScriptRunConfig(v1, "train.py", arguments=["--lr", 0.1, "--note", PROBE]),
        tags={"owner": "ana", "html": PROBE_IMG},
    )
    first.wait_for_completion()
    runs["first"] = first.id
    second = exp.submit(ScriptRunConfig(v2, "train.py", arguments=["--lr", 0.3]), tags={"owner": "bo"})
    second.wait_for_completion()
    runs["second"] = second.id
    failed = exp.submit(ScriptRunConfig(v1, "train.py", arguments=["--fail"]), tags={"owner": "ana"})
    failed.wait_for_completion(raise_on_error=False)
    runs["failed"] = failed.id
    task_run_id = run_id_for_task(TASK["dag_id"], TASK["task_id"], TASK["run_id"])
    from_dag = exp.submit(
        ScriptRunConfig(v1, "train.py", arguments=["--lr", 0.2]),
        run_id=task_run_id,
        properties={
            "airflow.dag_id": TASK["dag_id"],
            "airflow.task_id": TASK["task_id"],
            "airflow.run_id": TASK["run_id"],
            "airflow.map_index": "-1",
        },
    )
    from_dag.wait_for_completion()
    runs["from_dag"] = from_dag.id
    secret = Experiment(ws, "other-team").submit(
        ScriptRunConfig(v1, "train.py"), properties={"airflow.dag_id": SECRET_DAG}
    )
    secret.wait_for_completion()
    runs["secret"] = secret.id
    # The model registry: two versions from readable runs (an alias on the second), one from the
    # run of a DAG some users may not read.
    first.register_model(MODEL, "outputs/model.txt", tags={"probe": PROBE}, description=PROBE_IMG)
    second.register_model(MODEL, "outputs/model.txt").set_alias("production")
    secret.register_model(MODEL, "outputs/model.txt")
    secret.register_model("secret-model", "outputs/model.txt")
    return Populated(ws, runs)


SWEEP_EXPERIMENT = "ui-sweep"
SWEEP_ID = "ui-sweep-random"
SWEEP_MIN_ID = "ui-sweep-minimize"
# The third quality is a probe: it reaches the script as an argument, the hyperparameters recorded
# on the child, the table and the parallel-coordinates axis, and must show as text everywhere.
SWEEP_BAD = PROBE
SWEEP_TRAIN = """
import argparse, time
from mltrain import Run
p = argparse.ArgumentParser()
p.add_argument("--quality")
p.add_argument("--lr", type=float)
a = p.parse_args()
run = Run.get_context()
base = {"good": 1.0, "ok": 0.95}.get(a.quality, 0.5)
for i in range(6):
    run.log("accuracy", base * (1 - 0.5 ** (i + 1)) + a.lr, step=i)
    time.sleep(0.05 if a.quality in ("good", "ok") else 1.0)
"""


class Swept:
    """Two sweeps of the UI's workspace: a random one whose laggards a bandit policy stopped
    (maximizing accuracy) and a small grid that minimizes it."""

    def __init__(self, ws: Workspace, sweep_id: str, minimize_id: str):
        self.ws = ws
        self.sweep_id = sweep_id
        self.minimize_id = minimize_id


@pytest.fixture(scope="session")
def swept(populated: Populated, tmp_path_factory: pytest.TempPathFactory) -> Swept:
    import math

    from airflow_provider_mltrain.train.hyperdrive import (
        BanditPolicy,
        GridParameterSampling,
        HyperDriveConfig,
        PrimaryMetricGoal,
        RandomParameterSampling,
        choice,
        loguniform,
    )

    src = tmp_path_factory.mktemp("ui-sweep-src")
    (src / "train.py").write_text(textwrap.dedent(SWEEP_TRAIN))
    space = {"--quality": choice("good", "ok", SWEEP_BAD), "--lr": loguniform(math.log(1e-4), math.log(1e-1))}
    # A seed whose first child is good (the laggards then have a leader to lag behind) and whose
    # six children hold at least one of each kind: the policy must stop exactly the probe ones.
    seed = next(
        s
        for s in range(1000)
        if (q := [RandomParameterSampling(space).sample(i, s, [], True)["--quality"] for i in range(6)])[0]
        == "good"
        and q.count(SWEEP_BAD) >= 2
        and q.count("ok") >= 1
    )
    exp = Experiment(populated.ws, SWEEP_EXPERIMENT)
    config = HyperDriveConfig(
        run_config=ScriptRunConfig(src, "train.py"),
        hyperparameter_sampling=RandomParameterSampling(space, seed=seed),
        policy=BanditPolicy(slack_factor=0.1, evaluation_interval=1),
        primary_metric_name="accuracy",
        primary_metric_goal=PrimaryMetricGoal.MAXIMIZE,
        max_total_runs=6,
        max_concurrent_runs=3,
    )
    exp.submit(config, run_id=SWEEP_ID).wait_for_completion(poll_interval=0.1)
    grid = GridParameterSampling({"--quality": choice("good", "ok"), "--lr": choice(0.001)})
    minimize = HyperDriveConfig(
        run_config=ScriptRunConfig(src, "train.py"),
        hyperparameter_sampling=grid,
        primary_metric_name="accuracy",
        primary_metric_goal=PrimaryMetricGoal.MINIMIZE,
        max_total_runs=2,
    )
    exp.submit(minimize, run_id=SWEEP_MIN_ID).wait_for_completion(poll_interval=0.1)
    return Swept(populated.ws, SWEEP_ID, SWEEP_MIN_ID)
