"""Train in a Docker container: the quickstart's folder and script, in an image built for its environment.

Create an Airflow connection of type ``mltrain_docker`` named ``docker_gpu`` (or pass another id as
the ``compute_target`` param): host = the daemon URL (``unix:///var/run/docker.sock``, or
``tcp://host:2376`` with the TLS extras), extra ``image`` = a base image with ``python3`` (for
example ``python:3.11-slim``). ``train`` builds ``mltrain-env:<hash>`` from that image and
``train_digits/environment.yaml`` once (later runs reuse it), sends only the snapshot files the
daemon's cache lacks, runs the script as a non-root user with the limits below, and streams the log
into the task log. The container is named after the run id: a retry reattaches to it.
See docs/targets/docker.md.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from airflow.sdk import Param, dag, task

from airflow_provider_mltrain.operators.script_run import ScriptRunOperator

HERE = Path(__file__).parent


@dag(
    dag_id="mltrain_docker_training",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    params={
        "compute_target": Param("docker_gpu", type="string", description="Id of an mltrain_docker connection")
    },
    tags=["mltrain", "example", "docker"],
)
def mltrain_docker_training():
    train = ScriptRunOperator(
        task_id="train",
        experiment_name="digits-docker",
        source_directory=str(HERE / "train_digits"),
        script="train.py",
        arguments=["--epochs", 10],
        compute_target="{{ params.compute_target }}",
        environment="environment.yaml",  # the same spec as on the local target, built into an image
        # Per-run container settings; the connection's extras give the defaults.
        target_options={"cpus": 1, "mem_limit": "2g", "shm_size": "256m", "cleanup": "on_success"},
        poll_interval=2,
    )

    @task
    def report(mltrain_run_id: str) -> float:
        from airflow_provider_mltrain import Workspace

        run = Workspace().get_run(mltrain_run_id)
        accuracy = run.get_metrics("final_accuracy")["final_accuracy"]
        if accuracy < 0.9:
            raise ValueError(f"accuracy {accuracy:.3f} in the container is below 0.9")
        return accuracy

    report(train.output)


mltrain_docker_training()
