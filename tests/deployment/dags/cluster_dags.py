"""DAGs of the multi-worker deployment tests (tests/deployment/). Read by every worker and the
dag-processor from one shared folder; ``train.py`` lives beside this file, in ``scripts/``."""

from __future__ import annotations

import os
import pwd
from datetime import datetime, timedelta

from airflow.sdk import DAG

from airflow_provider_mltrain.operators.script_run import ScriptRunOperator

SCRIPTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "scripts")
TARGETS = {"local": "local", "docker": "deploy_docker", "ssh": "deploy_ssh"}
WORKERS = ("w1", "w2")


def worker_user() -> str:
    """The Unix user of the worker that renders the task: each worker runs as a user of its own."""
    return pwd.getpwuid(os.getuid()).pw_name


ARGS = dict(
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    user_defined_macros={"worker_user": worker_user},
    default_args={"retries": 1, "retry_delay": timedelta(seconds=1)},
)
TRAIN = dict(
    source_directory=SCRIPTS,
    script="train.py",
    tags={"worker": "{{ worker_user() }}"},
    poll_interval=1.0,
)

# Six runs, two per target, over whichever worker has a free slot (each takes two at a time).
with DAG("cluster_fanout", **ARGS):
    ScriptRunOperator.partial(task_id="train", experiment_name="cluster-fanout", **TRAIN).expand_kwargs(
        [
            {
                "compute_target": conn_id,
                # 16 s: long enough for the test to read each run's live log from the api-server.
                "arguments": ["--name", f"{target}-{i}", "--steps", 8, "--seconds", 16],
            }
            for target, conn_id in TARGETS.items()
            for i in (1, 2)
        ]
    )

# Local-target runs pinned to a host's own queue: the run's files stay on the worker that follows it.
with DAG("cluster_pinned", **ARGS):
    for name in WORKERS:
        ScriptRunOperator(
            task_id=f"pinned_{name}",
            queue=f"host-{name}",
            experiment_name="cluster-pinned",
            compute_target="local",
            arguments=["--name", f"pinned-{name}", "--steps", 2, "--seconds", 1],
            **TRAIN,
        )

# One long run per remote target; the test kills the worker that follows it.
for target in ("docker", "ssh"):
    with DAG(f"cluster_kill_{target}", **ARGS):
        ScriptRunOperator(
            task_id="train",
            experiment_name=f"cluster-kill-{target}",
            compute_target=TARGETS[target],
            arguments=["--name", f"kill-{target}", "--steps", 60, "--seconds", 60],
            **TRAIN,
        )

# A run whose follower pushes its live log while the test stops and restarts the object store.
with DAG("cluster_store_restart", **ARGS):
    ScriptRunOperator(
        task_id="train",
        experiment_name="cluster-store-restart",
        compute_target="local",
        arguments=["--name", "store-restart", "--steps", 40, "--seconds", 60],
        **TRAIN,
    )

# The same folder submitted by one worker, then by the other with an empty cache.
for name in WORKERS:
    with DAG(f"cluster_resubmit_{name}", **ARGS):
        ScriptRunOperator(
            task_id="train",
            queue=f"host-{name}",
            experiment_name="cluster-resubmit",
            compute_target="local",
            arguments=["--name", f"resubmit-{name}", "--steps", 1, "--seconds", 0],
            **TRAIN,
        )
