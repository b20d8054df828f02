"""The first hour: `make demo` ends with how to look at the run, and `make ui` serves it with a login."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

pytestmark = pytest.mark.airflow

ROOT = Path(__file__).resolve().parent.parent


def make_env() -> dict[str, str]:
    """The environment of a newcomer's shell: nothing of Airflow or mltrain set."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "MLTRAIN_", "MAKE"))}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.timeout(1200)
def test_make_demo_ends_with_the_commands_that_show_the_run(tmp_path):
    home = tmp_path / "airflow"
    proc = subprocess.run(
        ["make", "-s", "demo", f"AIRFLOW_HOME_DEMO={home}"],
        cwd=ROOT, env=make_env(), capture_output=True, text=True, timeout=1100,
    )  # fmt: skip
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-6000:]
    assert "== DAG run finished: state=success" in out and "Status     Completed" in out, out[-6000:]
    assert "make ui" in out
    # The commands it prints work as printed, in a shell that has only the printed variable.
    export = re.search(r"^\s+export (MLTRAIN_WORKSPACE=\S+)$", out, flags=re.M)
    assert export, out[-3000:]
    name, _, value = export.group(1).partition("=")
    assert Path(value) == home / "mltrain"
    listing = re.search(r"^\s+(\S+/mltrain) runs list --experiment digits$", out, flags=re.M)
    assert listing, out[-3000:]
    env = {**make_env(), name: value}
    shown = subprocess.run(
        [listing.group(1), "runs", "list", "--experiment", "digits", "--json"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    runs = json.loads(shown.stdout)
    assert [r["status"] for r in runs] == ["Completed"], shown.stdout + shown.stderr


class Lines:
    """Collects a process's output lines in a thread, so a test can wait for one without blocking."""

    def __init__(self, stream):
        self.lines: list[str] = []
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._thread.start()

    def _read(self, stream) -> None:
        with stream:  # closed at the end of the output, not left to the gc
            for line in stream:
                self.lines.append(line.rstrip("\n"))

    def wait_for(self, pattern: str, deadline: float) -> re.Match[str]:
        while time.monotonic() < deadline:
            for line in list(self.lines):
                if m := re.search(pattern, line):
                    return m
            time.sleep(0.5)
        raise AssertionError(f"no line matching {pattern!r} in:\n" + "\n".join(self.lines[-80:]))


def http(method: str, url: str, body: dict | None = None, token: str | None = None) -> tuple[int, str]:
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, headers=headers, method=method)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


@pytest.mark.timeout(1200)
def test_make_ui_serves_the_demo_home_with_the_printed_login(tmp_path):
    port = free_port()
    proc = subprocess.Popen(
        ["make", "-s", "ui", f"AIRFLOW_HOME_DEMO={tmp_path / 'airflow'}", f"UI_PORT={port}"],
        cwd=ROOT, env=make_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True,  # its own process group: stopped below, api-server workers included
    )  # fmt: skip
    try:
        out = Lines(proc.stdout)
        deadline = time.monotonic() + 900
        login = out.wait_for(r"^== Login: (\S+) / (\S+)\s", deadline)
        user, password = login.group(1), login.group(2)
        url = out.wait_for(r"^== Airflow UI: (http://127\.0\.0\.1:(\d+)/)", deadline)
        base = url.group(1)
        assert int(url.group(2)) == port
        while True:
            try:
                if http("GET", f"{base}api/v2/monitor/health")[0] == 200:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline and proc.poll() is None, "\n".join(out.lines[-80:])
            time.sleep(1)
        status, body = http("POST", f"{base}auth/token", {"username": user, "password": password})
        assert status in (200, 201), body
        token = json.loads(body)["access_token"]
        status, body = http("GET", f"{base}mltrain/api/experiments", token=token)
        assert status == 200 and isinstance(json.loads(body), list), body
        assert http("POST", f"{base}auth/token", {"username": user, "password": "wrong"})[0] == 401
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=30)
