"""The /mltrain app over runs whose script made links to a host secret: an active run (its log
swapped for a link too) and a finished one. Without login nothing is served; with it, links are
listed as links and no page, API answer or download carries a byte of the secret."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from urllib.parse import quote

import pytest
from fastapi.testclient import TestClient

from airflow_provider_mltrain import Experiment, ScriptRunConfig, Workspace
from airflow_provider_mltrain.plugins.app import create_app, get_workspace
from tests.plugins.test_app import client_for

MARKER = "mltrain-ui-secret-81d2"

SCRIPT = """
import os, sys, time
secret, stay = sys.argv[1], sys.argv[2] == "stay"
run_dir = os.environ["MLTRAIN_RUN_DIR"]
os.makedirs("outputs", exist_ok=True)
open("outputs/model.txt", "w").write("weights")
os.symlink(secret, "outputs/airflow.cfg")
os.symlink(os.path.dirname(secret), "outputs/hostdir")
os.symlink("/etc/passwd", "outputs/passwd")
os.symlink(secret, os.path.join(run_dir, "outputs", "live.cfg"))
os.symlink(os.path.dirname(secret), os.path.join(run_dir, "logs", "hostdir"))
print("links made", flush=True)
if stay:
    log = os.path.join(run_dir, "logs", "std_log.txt")
    os.unlink(log)
    os.symlink(secret, log)
    open(os.path.join(run_dir, "outputs", "swapped"), "w").write("1")
    time.sleep(600)
"""


class Runs:
    def __init__(self, ws: Workspace, secret: Path, active: str, finished: str):
        self.ws, self.secret, self.active, self.finished = ws, secret, active, finished


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    base = tmp_path_factory.mktemp("mltrain-links")
    folder = Path(tempfile.mkdtemp(prefix="mltrain-secret-", dir=base))
    secret = folder / "airflow.cfg"
    secret.write_text(f"[api_auth]\njwt_secret = {MARKER}\n")
    src = base / "src"
    src.mkdir()
    (src / "train.py").write_text(SCRIPT)
    ws = Workspace(base / "ws")
    exp = Experiment(ws, "links")
    finished = exp.submit(ScriptRunConfig(src, "train.py", arguments=[str(secret), "go"]))
    finished.wait_for_completion()
    active = exp.submit(ScriptRunConfig(src, "train.py", arguments=[str(secret), "stay"]))
    deadline = time.monotonic() + 120
    while "outputs/swapped" not in active.get_file_names():
        assert time.monotonic() < deadline, "the script did not swap its log in time"
        time.sleep(0.1)
    yield Runs(ws, secret, active.id, finished.id)
    active.cancel(grace_period=1)


def _urls(run_id: str) -> list[str]:
    files = ("outputs/airflow.cfg", "outputs/hostdir/airflow.cfg", "outputs/live.cfg", "outputs/passwd")
    return [
        f"/api/runs/{run_id}",
        f"/api/runs/{run_id}/files",
        f"/api/runs/{run_id}/log",
        f"/runs/{run_id}",
        f"/runs/{run_id}/live",
        *(f"/api/runs/{run_id}/files/{quote(f)}" for f in files),
        *(f"/runs/{run_id}/files/{quote(f)}" for f in files),
        f"/api/runs/{run_id}/files/logs/std_log.txt",
        f"/api/runs/{run_id}/files/logs/hostdir/airflow.cfg",
    ]


@pytest.mark.parametrize("which", ["active", "finished"])
def test_without_login_nothing_with_it_links_listed_never_served(runs, which):
    run_id = getattr(runs, which)
    app = create_app()
    app.dependency_overrides[get_workspace] = lambda: runs.ws
    anonymous = TestClient(app, root_path="/mltrain")
    # (pages send a browser to Airflow's login: tests/plugins/test_ui_browser.py)
    for url in [u for u in _urls(run_id) if u.startswith("/api/")]:
        response = anonymous.get(url, follow_redirects=False)
        assert response.status_code == 401, (url, response.status_code)
        assert MARKER not in response.text and "weights" not in response.text
    client = client_for(runs.ws)
    for url in _urls(run_id):
        response = client.get(url)
        assert MARKER not in response.text, url
        assert "root:" not in response.text, url  # /etc/passwd
    details = client.get(f"/api/runs/{run_id}").json()
    assert details["active"] == (which == "active")
    links = {link["path"]: link["target"] for link in details["links"]}
    if which == "finished":  # the script's ./outputs join the run's at its end
        assert links["outputs/airflow.cfg"] == str(runs.secret)
        assert links["outputs/hostdir"] == str(runs.secret.parent)
        assert links["outputs/passwd"] == "/etc/passwd"
    assert links["outputs/live.cfg"] == str(runs.secret)
    assert links["logs/hostdir"] == str(runs.secret.parent)
    assert not set(links) & set(details["files"])
    assert not [f for f in details["files"] if "hostdir/" in f]
    for name in links:
        assert client.get(f"/api/runs/{run_id}/files/{quote(name)}").status_code == 404
    page = client.get(f"/runs/{run_id}").text
    assert "outputs/live.cfg" in page and str(runs.secret) in page  # shown as a link, by its text
    if which == "finished":
        assert client.get(f"/api/runs/{run_id}/files/outputs/model.txt").content == b"weights"
    else:
        assert client.get(f"/api/runs/{run_id}/files/outputs/swapped").content == b"1"
        assert links["logs/std_log.txt"] == str(runs.secret)
        assert client.get(f"/api/runs/{run_id}/log").json()["text"] == ""
