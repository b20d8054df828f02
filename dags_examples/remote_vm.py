"""Train on a remote VM over SSH: the quickstart's folder and script, run on another machine.

Create an Airflow connection of type ``ssh`` named ``gpu_vm`` (or pass another id as the
``compute_target`` param): host, port, login, and the ``key_file`` extra, with the host's key in
the worker's ``~/.ssh/known_hosts`` or in the ``host_key`` extra (host keys are always verified).
``train`` uploads only the files the VM does not have yet, builds ``train_digits/environment.yaml``
there once (venv + uv or pip, cached by content hash under the remote root) and streams the run's
log into the task log. The run goes on if the worker dies; a retry reattaches to it.
See docs/targets/ssh.md.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from airflow.sdk import Param, dag, task

from airflow_provider_mltrain.operators.script_run import ScriptRunOperator

HERE = Path(__file__).parent


@dag(
    dag_id="mltrain_remote_vm",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    params={"compute_target": Param("gpu_vm", type="string", description="Id of an ssh connection")},
    tags=["mltrain", "example", "ssh"],
)
def mltrain_remote_vm():
    train = ScriptRunOperator(
        task_id="train",
        experiment_name="digits-remote-vm",
        source_directory=str(HERE / "train_digits"),
        script="train.py",
        arguments=["--epochs", 10],
        compute_target="{{ params.compute_target }}",
        environment="environment.yaml",
        # Keep failed runs' folders on the VM for a look; remove the ones that worked.
        target_options={"cleanup": "on_success"},
        poll_interval=2,
    )

    @task
    def report(mltrain_run_id: str) -> float:
        from airflow_provider_mltrain import Workspace

        run = Workspace().get_run(mltrain_run_id)
        accuracy = run.get_metrics("final_accuracy")["final_accuracy"]
        if accuracy < 0.9:
            raise ValueError(f"accuracy {accuracy:.3f} on the VM is below 0.9")
        return accuracy

    report(train.output)


mltrain_remote_vm()
