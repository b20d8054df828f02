"""Every target: a sweep's children are ordinary runs of the target, with their hyperparameters as
arguments, a policy stopping the laggard through the target's own cancel, and run.parent set."""

from __future__ import annotations

import json

from airflow_provider_mltrain import Experiment, ScriptRunConfig
from airflow_provider_mltrain.core.sweep import EARLY_TERMINATED, HYPERPARAMETERS
from airflow_provider_mltrain.train.hyperdrive import (
    BanditPolicy,
    GridParameterSampling,
    HyperDriveConfig,
    PrimaryMetricGoal,
    choice,
)

SCRIPT = """
import argparse, time
from mltrain import Run
p = argparse.ArgumentParser()
p.add_argument("--quality")
a = p.parse_args()
run = Run.get_context()
run.tag("parent_seen", run.parent.id)
for i in range(40 if a.quality == "bad" else 5):
    run.log("accuracy", 1.0 if a.quality == "good" else 0.2)
    time.sleep(0.5 if a.quality == "bad" else 0.01)
"""


def test_a_sweep_on_the_target(workspace, target, make_tree):
    config = HyperDriveConfig(
        run_config=ScriptRunConfig(make_tree({"train.py": SCRIPT}), "train.py", compute_target=target),
        hyperparameter_sampling=GridParameterSampling({"--quality": choice("good", "bad")}),
        policy=BanditPolicy(slack_factor=0.2),
        primary_metric_name="accuracy",
        primary_metric_goal=PrimaryMetricGoal.MAXIMIZE,
        max_total_runs=2,
        max_concurrent_runs=1,
    )
    sweep = Experiment(workspace, "suite").submit(config)
    sweep.wait_for_completion(timeout=300, poll_interval=0.2)
    good, bad = sweep.get_children()
    assert json.loads(good.properties[HYPERPARAMETERS]) == {"--quality": "good"}
    assert (good.get_status(), bad.get_status()) == ("Completed", "Canceled")
    assert "BanditPolicy" in bad.properties[EARLY_TERMINATED]
    assert len(workspace.store.get_metric_rows(bad.id, "accuracy")) < 40  # stopped long before its end
    assert good.tags["parent_seen"] == bad.tags["parent_seen"] == sweep.id
    assert good.get_details()["target"] == target
    assert sweep.get_best_run_by_primary_metric() == good
