"""The provider on a real multi-worker deployment: CeleryExecutor, two workers, PostgreSQL run store.

What users of a scaled-out Airflow rely on: mapped training runs spread over the workers land in one
run history that the api-server shows; a task pinned to a host's queue runs there; a worker that
dies mid-run loses nothing (the retry on the other worker reattaches, the script runs once); and
the workers share no local folder. The workspace's artifact store is an S3 server of the cluster's
own: a run's live log, its full log, metrics and outputs are read from hosts that never followed it
(the api-server, ``mltrain`` in an empty HOME, a reader with no local files), a restart of the
store mid-run loses nothing, and a worker with an empty cache resubmits a snapshot without
uploading it again.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from airflow_provider_mltrain.core import run_files_store, run_warnings
from airflow_provider_mltrain.core.store import RunStore
from tests.deployment.cluster import (
    S3_CONN_ID,
    CeleryCluster,
    Worker,
    uid_of_pid,
    wait_for,
    worker_user,
)

# Generous: the first test also waits for the deployment to start, and a busy 2-core machine is slow.
pytestmark = [pytest.mark.deployment, pytest.mark.integration, pytest.mark.timeout(900)]

STEP = re.compile(r"^step (\d+) loss", re.MULTILINE)


def run_store(cluster: CeleryCluster) -> RunStore:
    return RunStore(cluster.run_store_url)


def worker_named(cluster: CeleryCluster, user: str) -> Worker:
    return next(w for w in cluster.workers.values() if w.user == user)


def result_text(name: str, steps: int) -> str:
    """What train.py writes to outputs/result.txt."""
    return f"{name}: {steps} steps, final loss {1.0 / steps:.4f}\n"


def get_bytes(cluster: CeleryCluster, path: str) -> bytes:
    with urllib.request.urlopen(f"{cluster.base_url}{path}", timeout=60) as response:
        return bytes(response.read())


def api_log(cluster: CeleryCluster, run_id: str) -> dict[str, Any]:
    """The whole log (a few KB here; a page holds 256 KiB) from the api-server's JSON API."""
    return dict(cluster.get_json(f"/mltrain/api/runs/{quote(run_id, safe='')}/log?offset=0&limit=262144"))


def assert_complete_log(log: str, name: str, steps: int) -> None:
    assert log.count("script started") == 1, log[:3000]
    assert [int(n) for n in STEP.findall(log)] == list(range(steps)), log[-3000:]
    assert f"script finished: {name}" in log, log[-3000:]


def laptop_env(cluster: CeleryCluster, home: Path) -> dict[str, str]:
    """``mltrain`` on a host of its own: an empty HOME and workspace, and nothing configured but the
    run store, the artifact store and the connection holding its credentials."""
    return {
        "PATH": os.environ["PATH"],
        "HOME": str(home),
        "AIRFLOW_HOME": str(home / "airflow"),
        "MLTRAIN_WORKSPACE": str(home / "mltrain"),
        "MLTRAIN_DATABASE_URL": cluster.run_store_url,
        "MLTRAIN_ARTIFACT_STORE": cluster.artifact_store_url,
        "MLTRAIN_ARTIFACT_STORE_CONN_ID": S3_CONN_ID,
        f"AIRFLOW_CONN_{S3_CONN_ID.upper()}": cluster.s3_connection(),
    }


MLTRAIN = str(Path(sys.executable).with_name("mltrain"))
FANOUT = [f"{target}-{i}" for target in ("local", "docker", "ssh") for i in (1, 2)]  # by map index


def metric_values(store: RunStore, run_id: str, name: str) -> list[Any]:
    return [float(row["value"]) for row in store.get_metric_rows(run_id, name)]


def test_mapped_runs_spread_over_both_workers_share_one_run_history(cluster, tmp_path):
    dag_run = cluster.trigger("cluster_fanout")
    print(f"deployment up in {cluster.startup_seconds:.1f} s")
    store = run_store(cluster)

    # While each run goes on, the api-server (not the worker that follows it) shows its live log.
    lags: dict[str, float] = {}  # run id -> seconds from the script logging a step to the API showing it

    def watch_live_logs() -> bool:
        for r in store.list_runs(experiment="cluster-fanout"):
            if r["id"] in lags or r["status"] != "Running":
                continue
            page = api_log(cluster, r["id"])
            steps = [int(n) for n in STEP.findall(page["text"])]
            if page["active"] and steps:
                logged = [row["logged_at"] for row in store.get_metric_rows(r["id"], "loss")]
                if len(logged) > max(steps):
                    lags[r["id"]] = round(time.time() - logged[max(steps)], 1)
        return len(lags) == 6 or cluster.dag_run_state("cluster_fanout", dag_run) in ("success", "failed")

    wait_for(watch_live_logs, 600, "the six runs' live logs on the api-server", cluster)
    print(f"live log on the api-server, seconds behind the script (upper bound), per run: {lags}")
    assert cluster.wait_dag_run("cluster_fanout", dag_run) == "success", cluster.logs()

    tis = cluster.task_instances("cluster_fanout", dag_run)
    assert [(t.map_index, t.state) for t in tis] == [(i, "success") for i in range(6)]

    runs = store.list_runs(experiment="cluster-fanout")
    assert len(runs) == 6  # one per task instance, whatever tries it took
    assert set(lags) == {r["id"] for r in runs}, f"live log seen for {lags} only"
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

    # Every run's full log and outputs, from the api-server's JSON API and pages.
    names = {r["id"]: FANOUT[int(r["properties"]["airflow.map_index"])] for r in runs}
    logs = {}
    for run_id, name in names.items():
        q = quote(run_id, safe="")
        page = api_log(cluster, run_id)
        assert page["eof"] and not page["active"], page
        assert_complete_log(page["text"], name, 8)
        logs[run_id] = page["text"]
        files = cluster.get_json(f"/mltrain/api/runs/{q}/files")
        assert {"logs/std_log.txt", "logs/metrics.jsonl", "outputs/result.txt"} <= set(files["files"]), files
        assert (
            get_bytes(cluster, f"/mltrain/api/runs/{q}/files/outputs/result.txt")
            == result_text(name, 8).encode()
        )
        assert get_bytes(cluster, f"/mltrain/api/runs/{q}/files/logs/std_log.txt").decode() == page["text"]
        html = get_bytes(cluster, f"/mltrain/runs/{q}").decode()
        assert f"script finished: {name}" in html and "outputs/result.txt" in html

    # And from `mltrain` on a host with an empty HOME and workspace (all commands at once).
    home = tmp_path / "laptop"
    env = laptop_env(cluster, home)
    procs = {}
    for run_id in names:
        for cmd in (
            ["runs", "show", run_id, "--json"],
            ["download", run_id, "-o", str(home / "dl" / run_id)],
        ):
            procs[(run_id, cmd[0])] = subprocess.Popen(
                [MLTRAIN, *cmd],
                env=env,
                cwd=tmp_path,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
    out = {}
    for key, proc in procs.items():
        stdout, stderr = proc.communicate(timeout=300)
        assert proc.returncode == 0, (key, stdout, stderr)
        out[key] = stdout
    for run_id, name in names.items():
        shown = json.loads(out[(run_id, "runs")])
        assert shown["status"] == "Completed", shown
        assert shown["metrics"]["final_loss"] == pytest.approx(1 / 8)
        assert {"logs/std_log.txt", "outputs/result.txt"} <= set(shown["files"]), shown["files"]
        folder = home / "dl" / run_id
        assert (folder / "outputs" / "result.txt").read_text() == result_text(name, 8)
        assert (folder / "logs" / "std_log.txt").read_text() == logs[run_id]
    assert not (home / "mltrain" / "runs").exists() or not any((home / "mltrain" / "runs").iterdir())


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
def test_worker_killed_mid_run_retry_on_the_other_worker_reattaches(cluster, target, tmp_path):
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
    assert final["collected"], final
    # The complete log and outputs, read from the artifact store by a host with no files of its own.
    reader = cluster.reader_workspace(tmp_path / "reader").get_run(final["id"])
    log = reader.read_log().decode(errors="replace")
    assert_complete_log(log, f"kill-{target}", 60)
    result = reader.download_file("outputs/result.txt", tmp_path / "result.txt")
    assert result.read_text() == result_text(f"kill-{target}", 60)
    manifest = run_files_store.read_manifest(cluster.artifact_store(), final["id"])
    assert manifest is not None and manifest["files"]["logs/std_log.txt"]["size"] == len(log.encode())
    assert not (tmp_path / "reader" / "runs").exists()
    assert metric_values(store, final["id"], "loss") == pytest.approx([1 / (i + 1) for i in range(60)])
    assert os.path.exists(victim.workspace)  # the dead worker's folders are simply left behind


def test_object_store_restarted_mid_run_loses_nothing(cluster, tmp_path):
    dag_id, experiment = "cluster_store_restart", "cluster-store-restart"
    store = run_store(cluster)
    artifacts = cluster.artifact_store()
    dag_run = cluster.trigger(dag_id)

    def pushing() -> dict[str, Any] | None:
        runs = store.list_runs(experiment=experiment)
        if runs and runs[0]["status"] == "Running":
            log = run_files_store.read_log(artifacts, runs[0]["id"]).decode(errors="replace")
            if len(STEP.findall(log)) >= 3:
                return runs[0]
        return None

    record = wait_for(pushing, 300, "the run's live log in the store", cluster)
    worker = worker_named(cluster, record["tags"]["worker"])
    cluster.stop_object_store()
    try:
        # The run goes on (its metrics still reach the run store) and its follower says why the
        # live log stopped growing in the store.
        logged = len(metric_values(store, record["id"], "loss"))
        wait_for(
            lambda: len(metric_values(store, record["id"], "loss")) >= logged + 3,
            120,
            "the run to go on while the object store is down",
            cluster,
        )
        wait_for(
            lambda: (
                "appending its log to" in (cluster.task_log(worker.name, dag_id, dag_run, "train", 1) or "")
            ),
            120,
            "the follower to report the store's failure",
            cluster,
        )
        assert store.get_run(record["id"])["status"] == "Running"
    finally:
        cluster.start_object_store()
    assert cluster.wait_dag_run(dag_id, dag_run) == "success", cluster.logs()

    final = store.get_run(record["id"])
    assert (final["status"], final["collected"]) == ("Completed", True), final
    assert run_warnings.UPLOAD_PENDING not in {w["key"] for w in final["warnings"]}, final["warnings"]
    reader = cluster.reader_workspace(tmp_path / "reader").get_run(record["id"])
    assert_complete_log(reader.read_log().decode(errors="replace"), "store-restart", 40)
    # The live log chunks, pushed before, during (retried) and after the outage, hold it all too.
    assert_complete_log(
        run_files_store.read_log(artifacts, record["id"]).decode(errors="replace"), "store-restart", 40
    )
    result = reader.download_file("outputs/result.txt", tmp_path / "result.txt")
    assert result.read_text() == result_text("store-restart", 40)


def test_a_worker_with_an_empty_cache_resubmits_a_snapshot_without_uploading_it(cluster):
    store = run_store(cluster)
    artifacts = cluster.artifact_store()
    first = cluster.trigger("cluster_resubmit_w1")
    assert cluster.wait_dag_run("cluster_resubmit_w1", first) == "success", cluster.logs()
    [one] = store.list_runs(experiment="cluster-resubmit")
    before = artifacts.list("snapshots")
    assert any(one["snapshot_id"] in name for name in before), sorted(before)

    w2 = cluster.workers["w2"]
    shutil.rmtree(w2.workspace / "snapshots", ignore_errors=True)  # w2 is idle: nothing else runs
    second = cluster.trigger("cluster_resubmit_w2")
    assert cluster.wait_dag_run("cluster_resubmit_w2", second) == "success", cluster.logs()

    runs = {r["tags"]["worker"]: r for r in store.list_runs(experiment="cluster-resubmit")}
    assert set(runs) == {worker_user("w1"), worker_user("w2")}
    assert {r["status"] for r in runs.values()} == {"Completed"}
    assert runs[worker_user("w2")]["snapshot_id"] == one["snapshot_id"]
    # The second worker hashed the folder, found the manifest in the store and sent nothing; it
    # fetched the files its run needed from the store into its own cache.
    assert artifacts.list("snapshots") == before
    assert (w2.workspace / "snapshots").is_dir()
