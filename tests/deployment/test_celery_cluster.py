"""The provider on a real multi-worker deployment: CeleryExecutor, two workers, PostgreSQL run store.

What users of a scaled-out Airflow rely on: mapped training runs spread over the workers land in one
run history that the api-server shows; a task pinned to a host's queue runs there; a worker that
dies mid-run loses nothing (the retry on the other worker reattaches, the script runs once); and
the workers share no local folder. Reading a run's log and outputs from another host needs the
artifact store on object storage (issue 15), which these tests do not assert yet.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_mltrain.core.store import RunStore
from tests.deployment.cluster import CeleryCluster, Worker, uid_of_pid, wait_for, worker_user

# Generous: the first test also waits for the deployment to start, and a busy 2-core machine is slow.
pytestmark = [pytest.mark.deployment, pytest.mark.integration, pytest.mark.timeout(900)]

STEP = re.compile(r"^step (\d+) loss", re.MULTILINE)


def run_store(cluster: CeleryCluster) -> RunStore:
    return RunStore(cluster.run_store_url)


def worker_named(cluster: CeleryCluster, user: str) -> Worker:
    return next(w for w in cluster.workers.values() if w.user == user)


def collected_log(worker: Worker, run_id: str) -> str:
    """The run's log as the worker that finished following it collected it into its workspace."""
    return (worker.workspace / "runs" / run_id / "logs" / "std_log.txt").read_text(errors="replace")


def metric_values(store: RunStore, run_id: str, name: str) -> list[Any]:
    return [float(row["value"]) for row in store.get_metric_rows(run_id, name)]


def test_mapped_runs_spread_over_both_workers_share_one_run_history(cluster):
    dag_run = cluster.trigger("cluster_fanout")
    print(f"deployment up in {cluster.startup_seconds:.1f} s")
    assert cluster.wait_dag_run("cluster_fanout", dag_run) == "success", cluster.logs()

    tis = cluster.task_instances("cluster_fanout", dag_run)
    assert [(t.map_index, t.state) for t in tis] == [(i, "success") for i in range(6)]

    store = run_store(cluster)
    runs = store.list_runs(experiment="cluster-fanout")
    assert len(runs) == 6  # one per task instance, whatever tries it took
    assert Counter(r["target"] for r in runs) == {"local": 2, "deploy_docker": 2, "deploy_ssh": 2}
    assert {r["status"] for r in runs} == {"Completed"}
    assert {r["properties"]["airflow.run_id"] for r in runs} == {dag_run}
    assert sorted(int(r["properties"]["airflow.map_index"]) for r in runs) == list(range(6))
    # Each worker takes two tasks at a time, so six tasks of several seconds need both.
    assert {r["tags"]["worker"] for r in runs} == {worker_user("w1"), worker_user("w2")}
    for r in runs:
        assert metric_values(store, r["id"], "loss") == pytest.approx([1 / (i + 1) for i in range(8)])
        assert metric_values(store, r["id"], "final_loss") == pytest.approx([1 / 8])

    # The api-server's own workspace has no run folder: it lists the runs from the shared store.
    listing = cluster.get_json("/mltrain/api/experiments/cluster-fanout/runs?metric=final_loss")
    assert listing["total"] == 6
    assert {row["run_id"] for row in listing["runs"]} == {r["id"] for r in runs}
    for row in listing["runs"]:
        assert row["status"] == "Completed", row
        assert row["metric"] == pytest.approx(1 / 8), row
    for r in runs:
        metrics = cluster.get_json(f"/mltrain/api/runs/{r['id']}/metrics")
        assert "final_loss" in str(metrics), metrics


def test_local_runs_pinned_to_a_hosts_queue_run_on_that_host(cluster):
    dag_run = cluster.trigger("cluster_pinned")
    assert cluster.wait_dag_run("cluster_pinned", dag_run) == "success", cluster.logs()

    store = run_store(cluster)
    runs = {r["properties"]["airflow.task_id"]: r for r in store.list_runs(experiment="cluster-pinned")}
    assert set(runs) == {"pinned_w1", "pinned_w2"}
    for name, worker in cluster.workers.items():
        record = runs[f"pinned_{name}"]
        assert record["status"] == "Completed"
        assert record["tags"]["worker"] == worker.user
        # A local run's folder is on the host that ran it, and only there.
        assert (worker.workspace / "runs" / record["id"]).is_dir()
        for other in cluster.workers.values():
            if other is not worker:
                assert not (other.workspace / "runs" / record["id"]).exists()


def _as_user(worker: Worker, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv,
        user=worker.pw.pw_uid,
        group=worker.pw.pw_gid,
        extra_groups=[],
        env={"PATH": "/usr/bin:/bin", "HOME": str(worker.home)},
        cwd="/",
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_workers_share_no_local_folder(cluster):
    w1, w2 = cluster.workers["w1"], cluster.workers["w2"]
    for worker, other in ((w1, w2), (w2, w1)):
        listing = _as_user(worker, "ls", str(other.home))
        assert listing.returncode != 0 and "Permission denied" in listing.stderr, listing
        key = _as_user(worker, "cat", str(other.home / ".ssh" / "id_mltrain_vm"))
        assert key.returncode != 0 and "Permission denied" in key.stderr, key
        controller = _as_user(worker, "ls", str(cluster.home))
        assert controller.returncode != 0 and "Permission denied" in controller.stderr, controller

    # The folders each process writes to: none is, or is inside, another process's.
    places = ("HOME", "TMPDIR", "AIRFLOW_HOME", "MLTRAIN_WORKSPACE", "XDG_CACHE_HOME")
    for worker in (w1, w2):
        assert worker.proc is not None and uid_of_pid(worker.proc.pid) == worker.pw.pw_uid
    folders = {
        name: [Path(cluster.environments[name][k]) for k in places] for name in ("w1", "w2", "api-server")
    }
    for name, mine in folders.items():
        for other_name, theirs in folders.items():
            if other_name == name:
                continue
            for a in mine:
                for b in theirs:
                    assert not (a == b or a.is_relative_to(b) or b.is_relative_to(a)), (
                        name,
                        a,
                        other_name,
                        b,
                    )


@pytest.mark.parametrize("target", ["docker", "ssh"])
def test_worker_killed_mid_run_retry_on_the_other_worker_reattaches(cluster, target):
    dag_id, experiment = f"cluster_kill_{target}", f"cluster-kill-{target}"
    store = run_store(cluster)
    dag_run = cluster.trigger(dag_id)

    def running_record() -> dict[str, Any] | None:
        runs = store.list_runs(experiment=experiment)
        if runs and runs[0]["status"] == "Running" and len(metric_values(store, runs[0]["id"], "loss")) >= 3:
            return runs[0]
        return None

    record = wait_for(running_record, 300, f"the {target} run to be running", cluster)
    victim = worker_named(cluster, record["tags"]["worker"])
    survivor = next(w for w in cluster.workers.values() if w is not victim)
    try:
        cluster.kill_worker(victim.name)
        assert cluster.wait_dag_run(dag_id, dag_run) == "success", cluster.logs()
    finally:
        cluster.start_worker(victim.name)
        wait_for(cluster.workers_registered, 180, f"worker {victim.name} to answer again", cluster)

    [ti] = cluster.task_instances(dag_id, dag_run)
    assert (ti.state, ti.try_number) == ("success", 2)
    first = cluster.task_log(victim.name, dag_id, dag_run, "train", 1)
    retry = cluster.task_log(survivor.name, dag_id, dag_run, "train", 2)
    assert first is not None and cluster.task_log(survivor.name, dag_id, dag_run, "train", 1) is None
    assert retry is not None and cluster.task_log(victim.name, dag_id, dag_run, "train", 2) is None
    # Airflow's ResumableJobMixin found the run id the first try stored and followed that run.
    assert "Reconnecting to existing job" in retry and record["id"] in retry, retry[:3000]

    # One run, the one the dead worker submitted, finished by the survivor; the script ran once.
    [final] = store.list_runs(experiment=experiment)
    assert final["id"] == record["id"]
    assert final["status"] == "Completed", final
    assert final["tags"]["worker"] == victim.user
    log = collected_log(survivor, final["id"])
    assert log.count("script started") == 1, log[:3000]
    assert [int(n) for n in STEP.findall(log)] == list(range(60)), log[-3000:]
    assert f"script finished: kill-{target}" in log
    assert metric_values(store, final["id"], "loss") == pytest.approx([1 / (i + 1) for i in range(60)])
    assert os.path.exists(victim.workspace)  # the dead worker's folders are simply left behind
