"""A deferrable SweepOperator on the local target, and a downstream task that reads its XComs."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from airflow.sdk import DAG, task

from airflow_provider_mltrain.operators.sweep import SweepOperator
from airflow_provider_mltrain.train.hyperdrive import BanditPolicy, GridParameterSampling, choice

with DAG("mltrain_test_sweep", schedule=None, start_date=datetime(2026, 1, 1), catchup=False):
    sweep = SweepOperator(
        task_id="sweep",
        experiment_name="sweep-operator",
        source_directory=str(Path(__file__).parent / "sweep_scripts"),
        script="train.py",
        hyperparameter_sampling=GridParameterSampling({"--quality": choice("good", "bad", "ok")}),
        policy=BanditPolicy(slack_factor=0.1),
        primary_metric_name="accuracy",
        primary_metric_goal="MAXIMIZE",
        max_total_runs=3,
        max_concurrent_runs=2,
        poll_interval=0.5,
    )

    @task
    def report(best_run_id: str, summary: dict) -> dict:
        """What a downstream task does with the sweep: register or deploy the best child."""
        stopped = [c["run_id"] for c in summary["children"] if c["early_terminated"]]
        return {"best": best_run_id, "best_of_summary": summary["best_run_id"], "stopped": stopped}

    report(sweep.output, sweep.output["sweep_summary"])
