"""The Docker target against the real engine (tests/services/docker.sh): images, blob cache, options, faults.

The suite every target runs is tests/targets/test_target_suite.py; these are the Docker-only parts.
"""

from __future__ import annotations

import contextlib
import functools
import http.server
import io
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import zipfile
from pathlib import Path

import pytest

from airflow_provider_mltrain import (
    Environment,
    EnvironmentBuildFailed,
    Experiment,
    InvalidRunConfig,
    PythonSection,
    ScriptRunConfig,
    TargetError,
    Workspace,
)
from airflow_provider_mltrain.core.compute import remember_target
from airflow_provider_mltrain.core.errors import TargetUnreachable
from airflow_provider_mltrain.core.run import Run
from airflow_provider_mltrain.hooks.docker import DockerComputeHook
from airflow_provider_mltrain.targets.docker import DockerOptions, DockerTarget, container_name
from tests.targets.harnesses.docker import (
    CONN_ID,
    docker_connection,
    join_removals,
    remove_test_containers,
    require_docker,
)
from tests.targets.suite import wait_until

pytestmark = pytest.mark.integration


@pytest.fixture
def docker_conn(monkeypatch, tmp_path):
    require_docker()
    monkeypatch.setenv("MLTRAIN_HEARTBEAT_INTERVAL", "0.5")
    monkeypatch.setenv(f"AIRFLOW_CONN_{CONN_ID.upper()}", docker_connection())
    yield CONN_ID
    remove_test_containers(CONN_ID, tmp_path)
    while _made:
        _made.pop().close()  # the client's connections, not left to the gc


@functools.cache
def _client():
    """One client of the test daemon for the module's checks (one each left its socket to the gc)."""
    import docker

    return docker.DockerClient(base_url=os.environ["MLTRAIN_TEST_DOCKER_HOST"])


_made: list[DockerTarget] = []  # target objects the tests made, closed at the end of each test


def target_for(workspace: Workspace) -> DockerTarget:
    """A target object of the test connection (so a test can read what it sent)."""
    _made.append(DockerComputeHook(CONN_ID).get_target(workspace.root))
    return _made[-1]


def submit(workspace, target, src, script="train.py", **kwargs):
    return Experiment(workspace, "docker").submit(
        ScriptRunConfig(src, script, compute_target=target, **kwargs)
    )


# -- a package index on loopback, for image builds without the internet ---------------------------


def _wheel(name: str, version: str) -> tuple[str, bytes]:
    module = name.replace("-", "_")
    dist = f"{module}-{version}.dist-info"
    files = {
        f"{module}/__init__.py": f"VERSION = {version!r}\n",
        f"{dist}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
        f"{dist}/WHEEL": "Wheel-Version: 1.0\nGenerator: mltrain-tests\nRoot-Is-Purelib: true\n"
        "Tag: py3-none-any\n",
    }
    files[f"{dist}/RECORD"] = "".join(f"{path},,\n" for path in files) + f"{dist}/RECORD,,\n"
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for path, text in files.items():
            zf.writestr(path, text)
    return f"{module}-{version}-py3-none-any.whl", buf.getvalue()


@pytest.fixture(scope="module")
def package_index(tmp_path_factory):
    """A PEP 503 index on 127.0.0.1 serving one small wheel, mltrain-probe 1.0."""
    root = tmp_path_factory.mktemp("index")
    filename, data = _wheel("mltrain-probe", "1.0")
    (root / "simple/mltrain-probe").mkdir(parents=True)
    (root / "simple/mltrain-probe" / filename).write_bytes(data)
    (root / "simple/mltrain-probe/index.html").write_text(f'<a href="{filename}">{filename}</a>\n')

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(root), **kwargs)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/simple"
    server.shutdown()
    server.server_close()


def probe_environment(index: str, *requirements: str) -> Environment:
    env = Environment(name="probe", python=PythonSection(requirements=[*requirements]))
    env.python.requirements[:0] = [f"--index-url {index}", "--trusted-host 127.0.0.1"]
    return env


@pytest.fixture
def remove_images():
    tags: list[str] = []
    yield tags
    client = _client()
    for tag in tags:
        with contextlib.suppress(Exception):
            client.images.remove(tag, force=True)


# -- images ---------------------------------------------------------------------------------------


def test_managed_environment_builds_an_image_once_then_reuses_it(
    workspace, docker_conn, make_tree, package_index, remove_images
):
    src = make_tree(
        {"train.py": "import mltrain_probe, sys\nprint('probe', mltrain_probe.VERSION, sys.executable)\n"}
    )
    env = probe_environment(package_index, "mltrain-probe==1.0")
    # The base image is the connection's: the tag's hash covers the environment and that image.
    tag = target_for(workspace).image_tag(env)
    assert tag.startswith("mltrain-env:") and tag != f"mltrain-env:{env.content_hash()}"
    remove_images.append(tag)
    lines: list[str] = []
    first = Experiment(workspace, "docker").submit(
        ScriptRunConfig(src, "train.py", compute_target=docker_conn, environment=env), log=lines.append
    )
    first.wait_for_completion()
    details = first.get_details()["environment"]
    assert "probe 1.0 /opt/mltrain/env/bin/python" in first.get_log_tail()
    assert details["image"] == tag and details["cache_hit"] is False
    assert "mltrain-probe==1.0" in details["packages"]
    assert any("Successfully installed mltrain-probe-1.0" in line for line in lines)  # the build streamed
    second = submit(workspace, docker_conn, src, environment=env)
    second.wait_for_completion()
    assert second.get_details()["environment"]["cache_hit"] is True
    assert [b["status"] for b in workspace.store.list_builds(env.content_hash())] == ["built"]


def test_a_failing_build_step_puts_its_output_in_the_error(
    workspace, docker_conn, make_tree, package_index, remove_images
):
    src = make_tree({"train.py": "print(1)\n"})
    env = probe_environment(package_index, "mltrain-no-such-package==9.9")
    env.docker.base_image = os.environ["MLTRAIN_TEST_DOCKER_IMAGE"]  # named here: the tag is the env hash
    remove_images.append(f"mltrain-env:{env.content_hash()}")
    with pytest.raises(EnvironmentBuildFailed) as err:
        submit(workspace, docker_conn, src, environment=env)
    message = str(err.value)
    assert "mltrain-no-such-package" in message and "pip install" in message
    [record] = workspace.store.list_runs()
    assert record["status"] == "Failed" and "mltrain-no-such-package" in record["error"]
    assert not _client().images.list(name=f"mltrain-env:{env.content_hash()}")


def test_a_missing_base_image_says_to_pull_or_build_it(workspace, docker_conn, make_tree):
    src = make_tree({"train.py": "print(1)\n"})
    env = Environment(name="nope")
    env.docker.base_image = "mltrain-no-such-image:1"
    with pytest.raises(EnvironmentBuildFailed) as err:
        submit(workspace, docker_conn, src, environment=env)
    message = str(err.value)
    assert "'mltrain-no-such-image:1'" in message and "docker pull mltrain-no-such-image:1" in message
    assert "docker build" in message


def test_an_image_without_python_is_refused_clearly(
    workspace, docker_conn, make_tree, tmp_path, remove_images
):
    rootfs = tmp_path / "rootfs"
    (rootfs / "etc").mkdir(parents=True)
    (rootfs / "etc/hostname").write_text("empty\n")
    tar = subprocess.run(["tar", "-C", str(rootfs), "-c", "."], capture_output=True, check=True).stdout
    remove_images.append("mltrain-test-nopython:1")
    _client().images.client.api.import_image_from_data(tar, repository="mltrain-test-nopython", tag="1")
    src = make_tree({"train.py": "print(1)\n"})
    env = Environment(name="nopython")
    env.docker.base_image = "mltrain-test-nopython:1"
    with pytest.raises(EnvironmentBuildFailed, match="has no python3") as err:
        submit(workspace, docker_conn, src, environment=env)
    assert "install python3 in the image" in str(err.value).lower()


def test_without_any_image_the_error_says_where_to_set_one(workspace, monkeypatch, make_tree):
    require_docker()
    monkeypatch.setenv(
        f"AIRFLOW_CONN_{CONN_ID.upper()}",
        json.dumps({"conn_type": "mltrain_docker", "host": os.environ["MLTRAIN_TEST_DOCKER_HOST"]}),
    )
    with pytest.raises(InvalidRunConfig, match=r"needs an image: set docker\.base_image"):
        submit(workspace, CONN_ID, make_tree({"train.py": "print(1)"}))
    assert workspace.store.list_runs() == []


# -- the blob cache -------------------------------------------------------------------------------


def test_resubmission_sends_only_the_changed_blob(workspace, docker_conn, make_tree):
    nonce = os.urandom(8).hex()  # the volume outlives test sessions: make these blobs new to it
    files = {f"data/part{i:03}.txt": f"content {i} {nonce}\n" * 50 for i in range(200)}
    train = "import os\nprint(len(os.listdir('data')), open('data/part007.txt').read()[:7])\n"
    src = make_tree({"train.py": train, **files})
    target = target_for(workspace)
    first = submit(workspace, target, src)
    assert target.last_upload["blobs"] == 201 and target.last_upload["files"] == 201
    first.wait_for_completion()
    assert "200" in first.get_log_tail()
    (src / "data/part007.txt").write_text("changed\n")
    second = submit(workspace, target, src)
    assert target.last_upload["blobs"] == 1 and target.last_upload["files"] == 201
    assert target.last_upload["bytes"] == len("changed\n")
    # The manifest travels as its difference to the first one: the cache's part stays small.
    assert target.last_upload["delta_manifest"] == 1 and target.last_upload["cache_bytes"] < 8192
    second.wait_for_completion()
    assert "200 changed" in second.get_log_tail()
    third = submit(workspace, target, src)  # the same snapshot again: nothing to send
    assert target.last_upload["blobs"] == 0
    third.wait_for_completion()
    # Another controller with no notes of its own still finds the volume's blobs by the marker.
    other = DockerTarget(
        CONN_ID, workspace.root / "other-notes", os.environ["MLTRAIN_TEST_DOCKER_HOST"], None, target.options
    )
    _made.append(other)
    submit(workspace, other, src).wait_for_completion()
    assert other.last_upload["blobs"] == 0


def test_the_script_cannot_change_the_blob_cache(workspace, docker_conn, make_tree):
    src = make_tree(
        {
            "data.txt": "original",
            "train.py": """
        import glob
        open('data.txt', 'w').write('edited by the script')
        blobs = glob.glob('/mltrain/cache/blobs/*/*')
        try:
            open(blobs[0], 'w').write('x')
            print('cache writable')
        except PermissionError:
            print('cache read-only')
    """,
        }
    )
    submit(workspace, docker_conn, src).wait_for_completion()
    run = submit(workspace, docker_conn, src, script="train.py")
    run.wait_for_completion()
    assert "cache read-only" in run.get_log_tail()
    check = make_tree({"data.txt": "original", "train.py": "print(open('data.txt').read())\n"})
    again = submit(workspace, docker_conn, check)
    again.wait_for_completion()
    assert "original" in again.get_log_tail()


# -- container options ----------------------------------------------------------------------------


def test_options_reach_the_container(workspace, docker_conn, make_tree, monkeypatch):
    src = make_tree(
        {
            "train.py": """
        import os
        print('uid', os.getuid())
        print('shm', os.statvfs('/dev/shm').f_blocks * os.statvfs('/dev/shm').f_frsize)
        print('var', os.environ.get('FROM_CONNECTION'), os.environ.get('FROM_ENV'))
        print('net', sorted(os.listdir('/sys/class/net')))
    """
        }
    )
    monkeypatch.setenv(
        f"AIRFLOW_CONN_{CONN_ID.upper()}",
        docker_connection(environment={"FROM_CONNECTION": "yes"}, cleanup="never"),
    )
    target = target_for(workspace)
    options = {"cpus": 0.5, "mem_limit": "256m", "shm_size": "32m"}
    run = Experiment(workspace, "docker").submit(
        ScriptRunConfig(
            src,
            "train.py",
            compute_target=target,
            target_options=options,
            environment=Environment(environment_variables={"FROM_ENV": "also"}),
        ),
        properties={"airflow.dag_id": "retrain", "airflow.task_id": "train"},
    )
    run.wait_for_completion()
    tail = run.get_log_tail()
    assert "uid 1000" in tail  # not root unless asked
    assert f"shm {32 * 1024 * 1024}" in tail
    assert "var yes also" in tail
    assert "net ['lo']" in tail  # network_mode none
    container = _client().containers.get(container_name(run.id))  # cleanup "never" kept it
    host = container.attrs["HostConfig"]
    assert host["NanoCpus"] == 500_000_000 and host["Memory"] == 256 * 1024 * 1024
    labels = container.labels
    assert labels["mltrain.run_id"] == run.id and labels["airflow.dag_id"] == "retrain"
    assert labels["airflow.task_id"] == "train"


def test_gpu_requests_are_rendered_into_the_container_config(workspace, docker_conn):
    # No GPU here: check the request the daemon receives, not its effect.
    options = DockerOptions().merged(DockerOptions.parse({"gpus": 2}, "test"))
    client = _client()
    container = client.containers.create(
        os.environ["MLTRAIN_TEST_DOCKER_IMAGE"],
        ["true"],
        labels={"mltrain.target": CONN_ID, "mltrain.workspace": str(workspace.root)},  # removed at teardown
        **options.host_config(),
    )
    [request] = container.attrs["HostConfig"]["DeviceRequests"]
    assert request["Count"] == 2 and request["Capabilities"] == [["gpu"]]
    ids = DockerOptions().merged(DockerOptions.parse({"gpus": ["0", "3"]}, "test")).host_config()
    assert ids["device_requests"][0]["DeviceIDs"] == ["0", "3"]
    assert DockerOptions.parse({"gpus": "all"}, "test") == {"gpus": -1}


def test_a_gpu_run_without_gpus_fails_with_the_daemons_reason(workspace, docker_conn, make_tree):
    src = make_tree({"train.py": "print(1)\n"})
    with pytest.raises(TargetError) as err:
        submit(workspace, docker_conn, src, target_options={"gpus": 1})
    assert "gpu" in str(err.value).lower()
    [record] = workspace.store.list_runs()
    assert record["status"] == "Failed"
    assert not _client().containers.list(all=True, filters={"name": container_name(record["id"])})


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"memory": "1g"}, "unknown Docker option(s) memory"),
        ({"cpus": "many"}, "cpus='many' is not valid"),
        ({"mem_limit": "lots"}, "mem_limit='lots' is not valid"),
        ({"cleanup": "sometimes"}, "use one of never, on_success, always"),
        ({"user": "alice"}, "numeric uid"),
        ({"gpus": 0}, "GPU count"),
        ({"volumes": ["relative:path"]}, "host_path_or_volume:/container/path"),
    ],
)
def test_bad_options_are_refused_before_submission(workspace, docker_conn, make_tree, options, message):
    src = make_tree({"train.py": "print(1)\n"})
    with pytest.raises(InvalidRunConfig) as err:
        submit(workspace, docker_conn, src, target_options=options)
    assert message in str(err.value)
    assert workspace.store.list_runs() == []


@pytest.mark.parametrize(
    ("policy", "kept_after_success", "kept_after_failure"),
    [
        ("never", True, True),
        ("on_success", False, True),
        ("always", False, False),
    ],
)
def test_cleanup_policy(workspace, docker_conn, make_tree, policy, kept_after_success, kept_after_failure):
    ok = submit(
        workspace, docker_conn, make_tree({"train.py": "print(1)\n"}), target_options={"cleanup": policy}
    )
    ok.wait_for_completion()
    bad = submit(
        workspace,
        docker_conn,
        make_tree({"train.py": "raise SystemExit(2)\n"}),
        target_options={"cleanup": policy},
    )
    bad.wait_for_completion(raise_on_error=False)
    join_removals()  # removal runs off the waiting path: let it finish
    listed = _client().containers.list(all=True, sparse=True, filters={"label": f"mltrain.target={CONN_ID}"})
    names = {c.attrs["Names"][0].lstrip("/") for c in listed}  # sparse: no inspect of each
    assert (container_name(ok.id) in names) == kept_after_success
    assert (container_name(bad.id) in names) == kept_after_failure
    assert "1" in ok.get_log_tail() and bad.get_details()["exit_code"] == 2  # collected either way


def test_a_container_being_removed_reads_as_gone_not_as_a_daemon_error(tmp_path):
    """Reading a finished run while its removal (cleanup on_success, off the waiting path) is under
    way: the daemon answers 500 "RWLayer ... is unexpectedly nil" or 409 "removal ... in progress"."""
    from docker.errors import APIError

    class Removing:
        def __init__(self, explanation):
            self.explanation = explanation

        def get_archive(self, path):
            raise APIError("500 Server Error", explanation=self.explanation)

    target = DockerTarget(CONN_ID, tmp_path, "unix:///nowhere.sock", None, DockerOptions(image="img"))
    for explanation in (
        "RWLayer of container 31bc698f is unexpectedly nil",
        "removal of container 31bc698f is already in progress",
    ):
        assert target._get_archive_and_stat(Removing(explanation), "/runs/r/status.json") == (None, {})
        assert target._read_whole(Removing(explanation), "/runs/r/status.json") is None
    with pytest.raises(APIError, match="disk full"):  # any other daemon error still surfaces
        target._get_archive_and_stat(Removing("write /var/lib/docker: disk full"), "/x")


# -- faults ---------------------------------------------------------------------------------------


def test_unreachable_daemon_names_the_url(workspace, monkeypatch, make_tree):
    monkeypatch.setenv(
        "AIRFLOW_CONN_DEAD_DOCKER",
        json.dumps({"conn_type": "mltrain_docker", "host": "tcp://127.0.0.1:9", "extra": {"image": "x"}}),
    )
    with pytest.raises(TargetUnreachable) as err:
        submit(workspace, "dead_docker", make_tree({"train.py": "print(1)"}))
    assert "tcp://127.0.0.1:9" in str(err.value) and "docker -H tcp://127.0.0.1:9 info" in str(err.value)
    assert workspace.store.list_runs() == []
    ok, message = DockerComputeHook("dead_docker").test_connection()
    assert not ok and "tcp://127.0.0.1:9" in message


def test_test_connection_reaches_the_daemon(docker_conn):
    ok, message = DockerComputeHook(docker_conn).test_connection()
    assert ok and message.startswith("Docker ") and os.environ["MLTRAIN_TEST_DOCKER_HOST"] in message


def test_container_killed_from_outside_fails_the_run_with_the_reason(workspace, docker_conn, make_tree):
    src = make_tree({"train.py": "import time\nprint('up', flush=True)\ntime.sleep(600)\n"})
    run = submit(workspace, docker_conn, src)
    wait_until(lambda: "up" in run.get_log_tail(), timeout=60)
    _client().containers.get(container_name(run.id)).kill()
    details = run.wait_for_completion(raise_on_error=False, poll_interval=0.2)
    assert details["status"] == "Failed"
    assert "exit code 137" in details["error"] and "killed" in details["error"]


def test_a_follower_wakes_when_the_container_stops(workspace, docker_conn, make_tree):
    """wait_for_change follows the daemon's wait endpoint: a follower sees the run end when its
    container stops, not at its next poll, and a still-running run keeps it waiting."""
    src = make_tree({"train.py": "import time\nprint('up', flush=True)\ntime.sleep(4)\n"})
    run = submit(workspace, docker_conn, src)
    wait_until(lambda: "up" in run.get_log_tail(), timeout=60)
    target = run.target
    target.wait_for_change(run.id, 0.2)  # running: returns after its time, without an error
    woke = threading.Event()
    waiter = threading.Thread(target=lambda: (target.wait_for_change(run.id, 600), woke.set()), daemon=True)
    waiter.start()
    assert woke.wait(120), "wait_for_change slept on after the container stopped"
    assert _client().containers.get(container_name(run.id)).status == "exited"
    assert run.wait_for_completion(poll_interval=600)["status"] == "Completed"


def test_a_new_controller_reattaches_and_the_run_happens_once(workspace, docker_conn, make_tree, request):
    run_id = f"dag.task.{os.urandom(6).hex()}"  # run ids stay taken on the daemon's volume
    src = make_tree(
        {
            "train.py": "import time\nprint('started', flush=True)\ntime.sleep(4)\nprint('finished')\n",
        }
    )
    code = textwrap.dedent(f"""
        import sys
        from airflow_provider_mltrain import Experiment, ScriptRunConfig, Workspace
        ws = Workspace({str(workspace.root)!r})
        config = ScriptRunConfig({str(src)!r}, "train.py", compute_target={docker_conn!r})
        run = Experiment(ws, "docker").submit(config, run_id={run_id!r})
        print("RUN_ID=" + run.id, flush=True)
        run.wait_for_completion(poll_interval=0.2)
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)

    def stop_controller() -> None:  # never leave the controller or its pipe behind, whatever fails
        proc.kill()
        proc.wait()
        proc.stdout.close()

    request.addfinalizer(stop_controller)
    line = ""
    while not line.startswith("RUN_ID="):  # Airflow may log to stdout first
        line = proc.stdout.readline()
        assert line, "the controller exited before printing the run id"
    assert line.strip() == f"RUN_ID={run_id}"
    ws = Workspace(workspace.root)
    wait_until(lambda: "started" in ws.get_run(run_id).get_log_tail(), timeout=60)
    proc.send_signal(signal.SIGKILL)  # the controller dies mid-wait
    proc.wait()
    # The retry submits under the same id: it reattaches instead of starting a second container.
    again = Experiment(ws, "docker").submit(
        ScriptRunConfig(src, "train.py", compute_target=docker_conn), run_id=run_id
    )
    assert again.wait_for_completion()["status"] == "Completed"
    log = again.get_log_tail()
    assert log.count("started") == 1 and "finished" in log
    target = again.target
    assert (
        target.start(  # the target itself refuses a second start of the same run id
            _spec_of(again), ws.snapshots.get(again.get_details()["snapshot_id"]), ws.snapshots
        )
        is False
    )


def _counting(target: DockerTarget) -> list[str]:
    """The Docker API requests ``target`` sends from now on, as "METHOD /path"."""
    api = target.client().api
    sent: list[str] = []
    send = api.send

    def counting(request, **kwargs):
        sent.append(f"{request.method} {request.path_url.split('?')[0].split('/', 2)[2]}")
        return send(request, **kwargs)

    api.send = counting
    return sent


def _archive_calls(sent: list[str]) -> list[str]:
    return [r for r in sent if r.endswith("/archive")]


def test_a_run_that_ended_between_refreshes_is_collected_from_its_log(workspace, docker_conn, make_tree):
    """A follower that finds the container stopped (the run ended while nobody looked, or before
    a new controller reattached) reads status, log, metrics and outputs from the frame the entry
    script left on the container's log, with no archive call: each costs the daemon tens of
    milliseconds."""
    src = make_tree(
        {
            "train.py": """
        import os
        from mltrain import Run
        run = Run.get_context()
        for i in range(3):
            run.log('loss', 1 / (i + 1), step=i)
        os.makedirs('outputs/model', exist_ok=True)
        open('outputs/model/weights.txt', 'w').write('w' * 1000)
        print('trained')
    """
        }
    )
    run = submit(workspace, docker_conn, src)
    client = _client()
    wait_until(lambda: client.containers.get(container_name(run.id)).status == "exited", timeout=120)
    fresh = target_for(workspace)  # a new controller: nothing known about the run but its id
    remember_target(run.id, fresh)
    sent = _counting(fresh)
    details = Run(Workspace(workspace.root), run.id).wait_for_completion(poll_interval=0.1)
    assert details["status"] == "Completed"
    assert not [r for r in _archive_calls(sent) if r.startswith("GET")], sent
    assert len([r for r in sent if r.endswith("/logs")]) == 1, sent
    again = Run(Workspace(workspace.root), run.id)
    assert again.get_metrics()["loss"] == [1.0, 0.5, 1 / 3]
    assert "trained" in again.get_log_tail()
    assert (Path(details["output_dir"]) / "outputs/model/weights.txt").read_text() == "w" * 1000
    history = [e["status"] for e in workspace.store.get_events(run.id)]
    assert history[-4:] == ["Starting", "Running", "Finalizing", "Completed"]


def test_a_running_runs_unchanged_status_is_not_copied_again(workspace, docker_conn, make_tree, monkeypatch):
    """While the container runs, the follower asks the daemon whether status.json changed (a stat)
    and copies it only when it did: polling a long run costs no archive per poll."""
    monkeypatch.setenv("MLTRAIN_HEARTBEAT_INTERVAL", "600")  # status.json changes only with the state
    src = make_tree({"train.py": "import time\nprint('up', flush=True)\ntime.sleep(600)\n"})
    run = submit(workspace, docker_conn, src)
    wait_until(lambda: run.get_status() == "Running" and "up" in run.get_log_tail(), timeout=120)
    fresh = target_for(workspace)  # reattached mid-run by a new controller
    sent = _counting(fresh)
    first = fresh.read_status(run.id)
    assert first is not None and first["state"] == "Running"
    assert len([r for r in _archive_calls(sent) if r.startswith("GET")]) == 1
    sent.clear()
    for _ in range(5):
        assert fresh.read_status(run.id) == first
    assert not [r for r in _archive_calls(sent) if r.startswith("GET")], sent
    run.cancel(grace_period=1)
    assert fresh.read_status(run.id)["state"] == "Canceled"  # a change is seen at once


REPLACED_WHILE_READ = """
import json, os, time
run_dir = os.environ["MLTRAIN_RUN_DIR"]
status_path = os.path.join(run_dir, "status.json")
print("up", flush=True)
# What the supervisor does to status.json at each heartbeat (the parent, every 5 ms here), and a
# script to a checkpoint it saves by rename (the child, without a pause): each replaced by a copy of
# another size.
child = os.fork() == 0
i = 0
while True:
    if child:
        path, body = os.path.join(run_dir, "outputs/ckpt.bin"), b"a" * 10 if i % 2 else b"x" * 3000
    else:
        with open(status_path, "rb") as f:
            path, body = status_path, json.dumps(json.load(f), indent=i % 2 or None).encode()
    temporary = f"replacing-{os.getpid()}.tmp"
    with open(temporary, "wb") as f:
        f.write(body)
    os.replace(temporary, path)
    i += 1
    if not child:
        time.sleep(0.005)
"""


def test_files_replaced_while_the_daemon_archives_them_are_read_again(workspace, docker_conn, make_tree):
    """The daemon archives a running container's file from its stat, then copies what it opens: a
    file replaced in between ends the archive early (tarfile: "unexpected end of data"). A follower
    and the UI read such a file again, and never fail on it (it failed a CI run's refresh)."""
    src = make_tree({"train.py": REPLACED_WHILE_READ})
    run = submit(workspace, docker_conn, src)
    try:
        wait_until(lambda: "up" in run.get_log_tail(), timeout=120)
        target = target_for(workspace)  # a new controller's: no copy of status.json read yet
        for _ in range(40):
            assert target.read_status(run.id)["state"] == "Running"
            data = target.read_file(run.id, "outputs/ckpt.bin")
            assert len(set(data)) <= 1, data[:40]  # one copy's bytes, or none for now
            listed = target.list_entries(run.id).files
            assert {name for name in listed if name.startswith("outputs/")} <= {"outputs/ckpt.bin"}
        assert run.get_status() == "Running"  # the follower's refresh too
    finally:
        run.cancel(grace_period=1)


def test_requests_to_the_daemon_share_one_connection(workspace, docker_conn, monkeypatch):
    """docker-py pools unix-socket connections by request URL; the target pools them by daemon,
    so following a run does not open a connection to the daemon per request."""
    from docker.transport import unixconn

    if not os.environ["MLTRAIN_TEST_DOCKER_HOST"].startswith("unix://"):
        pytest.skip("the test daemon is not on a unix socket")
    target = target_for(workspace)
    target.client()
    opened: list[int] = []
    connect = unixconn.UnixHTTPConnection.connect
    monkeypatch.setattr(
        unixconn.UnixHTTPConnection, "connect", lambda self: (opened.append(1), connect(self))[1]
    )
    for i in range(10):  # ten different URLs
        assert target.has_run(f"no-such-run-{i}") is False
    assert len(opened) <= 1


def test_a_run_id_taken_by_another_workspace_is_refused(workspace, docker_conn, make_tree, tmp_path):
    run_id = f"shared.{os.urandom(6).hex()}"
    src = make_tree({"train.py": "print('mine')\n"})
    config = ScriptRunConfig(src, "train.py", compute_target=docker_conn)
    Experiment(workspace, "docker").submit(config, run_id=run_id).wait_for_completion()
    other = Workspace(tmp_path / "other-ws")
    with pytest.raises(TargetError, match="already used on the Docker daemon") as err:
        Experiment(other, "docker").submit(
            ScriptRunConfig(src, "train.py", compute_target=docker_conn), run_id=run_id
        )
    assert str(workspace.root) in str(err.value) and "another run id" in str(err.value)


def _spec_of(run):
    from airflow_provider_mltrain.core.compute import RunSpec

    d = run.get_details()
    return RunSpec(
        run.id,
        "docker",
        d["script"],
        (),
        d["snapshot_id"],
        image=d["environment"].get("image"),
        labels={"mltrain.workspace": d["properties"]["mltrain.workspace"]},
    )


def test_metrics_and_outputs_come_back_through_the_api(workspace, docker_conn, make_tree, tmp_path):
    src = make_tree(
        {
            "train.py": """
        import os
        from mltrain import Run
        run = Run.get_context()
        for i in range(3):
            run.log('loss', 1 / (i + 1), step=i)
        os.makedirs('outputs/model', exist_ok=True)
        open('outputs/model/weights.bin', 'wb').write(os.urandom(3 * 1024 * 1024))
    """
        }
    )
    run = submit(workspace, docker_conn, src)
    run.wait_for_completion()
    assert run.get_metrics()["loss"] == [1.0, 0.5, 1 / 3]
    path = Path(run.get_details()["output_dir"]) / "outputs/model/weights.bin"
    assert path.stat().st_size == 3 * 1024 * 1024


def test_upload_progress_is_reported_while_the_snapshot_is_sent(workspace, docker_conn, make_tree):
    src = make_tree({"train.py": "print('ok')\n", "data.bin": os.urandom(3 * 1024 * 1024)})
    target = target_for(workspace)
    reports: list[tuple[int, int]] = []
    target.upload_progress = lambda done, total: reports.append((done, total))
    run = submit(workspace, target, src)
    assert reports and reports[-1] == (target.last_upload["wire_bytes"],) * 2
    assert [done for done, _ in reports] == sorted(done for done, _ in reports)
    assert len(reports) > 2  # reported as it goes, not once at the end
    run.wait_for_completion()
    assert "ok" in run.get_log_tail()


def test_a_random_sweep_with_a_bandit_cancels_exactly_the_laggards(workspace, docker_conn, make_tree):
    """The 12-child random sweep of tests/core/test_sweep.py, each child a container."""
    from tests.core.test_sweep import random_bandit_sweep_cancels_exactly_the_laggards

    random_bandit_sweep_cancels_exactly_the_laggards(workspace, make_tree, docker_conn, bad_sleep=1.0)


@pytest.fixture
def own_volume_target(workspace, docker_conn):
    """A target with a cache volume of its own, so that pruning it leaves other tests' caches be."""
    target = DockerTarget(
        f"prune-{os.urandom(4).hex()}",
        workspace.root / "notes",
        os.environ["MLTRAIN_TEST_DOCKER_HOST"],
        None,
        DockerOptions(image=os.environ["MLTRAIN_TEST_DOCKER_IMAGE"], network_mode="none"),
    )
    yield target
    target.close()
    remove_test_containers(target.name, workspace.root.parent)
    _client().volumes.get(target.volume).remove(force=True)


def test_prune_removes_blobs_no_recent_snapshot_uses(workspace, own_volume_target, make_tree):
    target = own_volume_target
    old = make_tree({"train.py": "print('old')\n", "old.txt": "o" * 1000})
    submit(workspace, target, old).wait_for_completion()
    assert target.prune_cache(days=7) == {
        "removed": 0,
        "bytes": 0,
        "kept": 2,
        "inputs_removed": 0,
        "inputs_bytes": 0,
    }
    # Everything older than "now" goes: nothing used since.
    result = target.prune_cache(days=0)
    assert result["removed"] == 2 and result["bytes"] == 1000 + len("print('old')\n")
    assert result["kept"] == 0
    # The volume no longer claims that snapshot: the next submission sends it again, and runs.
    again = submit(workspace, target, old)
    assert target.last_upload["blobs"] == 2
    again.wait_for_completion()
    assert "old" in again.get_log_tail()


def test_prune_removes_cached_inputs_no_recent_or_unfinished_run_uses(
    workspace, own_volume_target, make_tree, tmp_path
):
    """Inputs travel into the cache volume once per content key; a prune deletes the ones no start
    used in its window but never one a run still names, and a later run sends it again."""
    target = own_volume_target
    data = tmp_path / "data"
    data.mkdir()
    (data / "x.csv").write_text("1,2\n")
    src = make_tree({"train.py": "import os\nprint(open(os.environ['MLTRAIN_INPUT_D'] + '/x.csv').read())\n"})
    run = submit(workspace, target, src, inputs={"d": str(data)})
    assert run.wait_for_completion()["status"] == "Completed", run.get_log_tail()
    assert target.last_input_upload["inputs"] == 1
    (key,) = {d["cache_key"] for d in run.get_details()["inputDatasets"]}
    assert target.prune_cache(days=7, keep_inputs=())["inputs_removed"] == 0  # used today
    assert target.prune_cache(days=0, keep_inputs={key})["inputs_removed"] == 0  # a run names it
    pruned = target.prune_cache(days=0, keep_inputs=())
    assert pruned["inputs_removed"] == 1 and pruned["inputs_bytes"] == len("1,2\n")
    again = submit(workspace, target, src, inputs={"d": str(data)})
    assert target.last_input_upload == {"inputs": 1, "bytes": len("1,2\n")}  # sent again
    assert again.wait_for_completion()["status"] == "Completed"
    assert "1,2" in again.get_log_tail()


def test_mltrain_target_prune_command(workspace, docker_conn, make_tree, capsys):
    from airflow_provider_mltrain.cli import main

    code = main(
        ["--workspace", str(workspace.root), "target", "prune", docker_conn, "--days", "3650", "--json"]
    )
    out = json.loads(capsys.readouterr().out)
    assert code == 0 and out["removed"] == 0 and out["kept"] >= 0
    code = main(["--workspace", str(workspace.root), "target", "prune", "local"])
    assert code == 1 and "keeps no blob cache" in capsys.readouterr().err


# -- starting without an archive, the finished folder on the log ---------------------------------


def test_a_warm_resubmission_starts_with_no_archive_and_runs_once_only(workspace, docker_conn, make_tree):
    """A resubmission whose snapshot and runner the volume holds sends no archive before the start:
    run.json travels in the container's environment (never the script's) and the entry script makes
    the run folder. The started mark follows after the start, so once the container is cleaned up
    a second start of the run id is refused, by a controller that knows nothing of it too."""
    src = make_tree({"train.py": "import os\nprint('spec', os.environ.get('MLTRAIN_RUN_SPEC'))\n"})
    target = target_for(workspace)
    assert submit(workspace, target, src).wait_for_completion()["status"] == "Completed"  # a warm volume
    sent = _counting(target)
    run = submit(workspace, target, src)
    before_start = sent[: next(i for i, r in enumerate(sent) if r.endswith("/start"))]
    assert not [r for r in before_start if r.startswith("PUT")], sent
    assert target.last_upload["wire_bytes"] == 0
    details = run.wait_for_completion()
    assert details["status"] == "Completed"
    assert "spec None" in run.get_log_tail()
    join_removals(run.id)
    fresh = target_for(workspace)
    assert fresh.has_run(run.id) is False  # cleaned up (on_success)
    snapshot = workspace.snapshots.get(details["snapshot_id"])
    assert fresh.start(_spec_of(run), snapshot, workspace.snapshots) is False
    assert fresh.has_run(run.id) is False  # the refused start left no container behind


def test_the_container_is_not_inspected_before_its_start(workspace, docker_conn, make_tree):
    """No container is looked up before the start: not before the creation (a container of the
    run id that exists makes the creation fail, which says so), not after it (docker-py's
    ``containers.create`` inspects; the low-level API does not). The container keeps the same
    configuration as before: the cache volume, docker-init, the non-root user, the entry script.
    A second start of the run id finds the container and starts nothing."""
    src = make_tree({"train.py": "print('ok')\n"})
    target = target_for(workspace)
    assert submit(workspace, target, src).wait_for_completion()["status"] == "Completed"  # a warm volume
    join_removals()  # the first run's container is removed in the background
    sent = _counting(target)
    run = submit(workspace, target, src)
    created = next(i for i, r in enumerate(sent) if r.endswith("containers/create"))
    started = next(i for i, r in enumerate(sent) if r.endswith("/start"))
    assert not [r for r in sent[:started] if r.startswith("GET containers/")], sent
    assert created < started
    attrs = _client().api.inspect_container(container_name(run.id))
    assert attrs["HostConfig"]["Init"] is True and attrs["Config"]["User"] == "1000:1000"
    assert f"{target.volume}:/mltrain/cache:rw" in attrs["HostConfig"]["Binds"]
    assert attrs["HostConfig"]["NetworkMode"] == "none"
    assert attrs["Config"]["Cmd"][1:3] == ["-I", "-S"] and attrs["Config"]["Cmd"][3].endswith(
        "/docker_entry.py"
    )
    fresh = target_for(workspace)
    snapshot = workspace.snapshots.get(run.get_details()["snapshot_id"])
    assert fresh.start(_spec_of(run), snapshot, workspace.snapshots) is False  # the name is taken
    assert run.wait_for_completion()["status"] == "Completed"
    assert run.get_log_tail().count("ok") == 1


def test_a_run_with_a_secret_looking_variable_keeps_run_json_out_of_the_environment(
    workspace, docker_conn, make_tree
):
    """The daemon shows a container's environment to whoever inspects it: a run whose variables
    look secret sends run.json in the archive, as before."""
    src = make_tree({"train.py": "import os\nprint('token', os.environ['API_TOKEN'])\n"})
    target = target_for(workspace)
    run = submit(
        workspace, target, src, environment=Environment(environment_variables={"API_TOKEN": "s3cr3t"})
    )
    env = _client().containers.get(container_name(run.id)).attrs["Config"]["Env"]
    assert not [e for e in env if e.startswith("MLTRAIN_RUN_SPEC=") or "s3cr3t" in e]
    assert run.wait_for_completion()["status"] == "Completed"
    assert "token s3cr3t" in run.get_log_tail()


def test_a_container_left_created_by_a_stopped_controller_is_started_by_the_next(
    workspace, docker_conn, make_tree, monkeypatch
):
    """A controller that died between creating and starting a container with run.json in its
    environment: the next start of the run id starts that container (nothing else had to travel),
    and the run happens once."""
    from docker.models.containers import Container

    src = make_tree({"train.py": "print('ran once')\n"})
    target = target_for(workspace)
    assert submit(workspace, target, src).wait_for_completion()["status"] == "Completed"  # a warm volume
    start = Container.start
    monkeypatch.setattr(Container, "start", lambda self, **kwargs: None)  # the controller "dies" here
    run = submit(workspace, target, src)
    monkeypatch.setattr(Container, "start", start)
    assert _client().containers.get(container_name(run.id)).status == "created"
    fresh = target_for(workspace)
    snapshot = workspace.snapshots.get(run.get_details()["snapshot_id"])
    assert fresh.start(_spec_of(run), snapshot, workspace.snapshots) is False  # not a second container
    remember_target(run.id, fresh)
    assert run.wait_for_completion()["status"] == "Completed"
    assert run.get_log_tail().count("ran once") == 1


def test_a_run_canceled_before_its_container_started_never_runs_the_script(
    workspace, docker_conn, make_tree, monkeypatch
):
    """Cancel makes the run folder the entry script would make, with the cancel marker in it, then
    starts the container: the supervisor records Canceled without starting the script."""
    from docker.models.containers import Container

    src = make_tree({"train.py": "print('the script ran')\n"})
    target = target_for(workspace)
    assert submit(workspace, target, src).wait_for_completion()["status"] == "Completed"  # a warm volume
    start = Container.start
    monkeypatch.setattr(Container, "start", lambda self, **kwargs: None)
    run = submit(workspace, target, src)
    monkeypatch.setattr(Container, "start", start)
    run.cancel(grace_period=1)
    assert run.wait_for_completion(raise_on_error=False)["status"] == "Canceled"
    assert "the script ran" not in run.get_log_tail()


def test_without_a_readable_log_driver_the_run_folder_comes_in_one_archive(
    workspace, docker_conn, make_tree, monkeypatch
):
    """The finished run folder is read from the container's log only where the daemon can read
    logs back (json-file, local); else from one archive of the stopped container, as before."""
    from docker.types import LogConfig

    src = make_tree({"train.py": "open('outputs/a.txt', 'w').write('a')\nprint('hello')\n"})
    target = target_for(workspace)
    assert submit(workspace, target, src).wait_for_completion()["status"] == "Completed"  # image probed
    host_config = DockerOptions.host_config
    monkeypatch.setattr(
        DockerOptions, "host_config", lambda self: {**host_config(self), "log_config": LogConfig(type="none")}
    )
    sent = _counting(target)
    run = submit(workspace, target, src)
    details = run.wait_for_completion()
    assert details["status"] == "Completed"
    assert (Path(details["output_dir"]) / "outputs/a.txt").read_text() == "a"
    assert "hello" in run.get_log_tail()
    assert not [r for r in sent if r.endswith("/logs")], sent
    assert [r for r in _archive_calls(sent) if r.startswith("GET")], sent


_FORGER = """
import binascii, io, os, tarfile, time
environ = open('/proc/1/environ', 'rb').read().split(b'\\0')
token = [e.split(b'=', 1)[1] for e in environ if e.startswith(b'MLTRAIN_FOLDER_TOKEN=')][0].decode()
buf = io.BytesIO()
with tarfile.open(fileobj=buf, mode='w') as tar:
    for name, body in (('status.json', b'{"state": "Failed", "error": "forged"}'),
                       ('outputs/forged.txt', b'forged')):
        info = tarfile.TarInfo(name)
        info.size = len(body)
        tar.addfile(info, io.BytesIO(body))
data = buf.getvalue()
frame = ('\\nMLTRAIN-FOLDER %s %d %d\\n' % (token, len(data), binascii.crc32(data))).encode()
frame += binascii.b2a_base64(data) + ('MLTRAIN-FOLDER-END %s\\n' % token).encode()
out = os.open('/proc/1/fd/1', os.O_WRONLY)  # the container's stdout, past the supervisor
os.write(out, frame)
if os.fork() == 0:  # left behind in a session of its own, writing the frame until it is killed
    os.setsid()
    while True:
        os.write(out, frame)
        time.sleep(0.002)
open('outputs/real.txt', 'w').write('real')
time.sleep(0.1)
"""


def test_a_frame_forged_by_the_script_does_not_replace_the_run_folder(workspace, docker_conn, make_tree):
    """The script can read the frame's token (/proc/1/environ) and write to the container's stdout,
    and can leave a process behind that keeps writing: the entry script kills every other process
    before its own frame, which is the log's last, so the run's real folder and status are read."""
    src = make_tree({"train.py": _FORGER})
    target = target_for(workspace)
    sent = _counting(target)
    run = submit(workspace, target, src)
    details = run.wait_for_completion()
    assert details["status"] == "Completed", details
    out = Path(details["output_dir"]) / "outputs"
    assert (out / "real.txt").read_text() == "real" and not (out / "forged.txt").exists()
    assert not [r for r in _archive_calls(sent) if r.startswith("GET")], sent  # the log's frame was read


def test_only_a_whole_last_frame_with_the_token_is_taken():
    import binascii

    from airflow_provider_mltrain.targets.docker import _parse_frame

    data = os.urandom(5000)
    lines = [binascii.b2a_base64(data[i : i + 3072]) for i in range(0, len(data), 3072)]

    def frame(token="t0k", size=len(data), crc=binascii.crc32(data), body=None, end="t0k"):
        head = f"\nMLTRAIN-FOLDER {token} {size} {crc}\n".encode()
        return head + b"".join(lines if body is None else body) + f"MLTRAIN-FOLDER-END {end}\n".encode()

    assert _parse_frame(b"noise\n" + frame(), "t0k") == data
    assert _parse_frame(frame(token="other", end="other") + frame(), "t0k") == data  # the last one
    assert _parse_frame(frame() + b"written after it\n", "t0k") is None
    assert _parse_frame(frame(), "other") is None
    assert _parse_frame(frame(token="other"), "t0k") is None
    assert _parse_frame(frame(size=len(data) - 1), "t0k") is None
    assert _parse_frame(frame(crc=0), "t0k") is None
    assert _parse_frame(frame(body=lines[1:]), "t0k") is None  # a line lost
    assert _parse_frame(frame(body=[b"not base64 at all!\n"]), "t0k") is None
    assert _parse_frame(frame()[:-10], "t0k") is None  # cut short
    assert _parse_frame(b"MLTRAIN-FOLDER-NONE t0k\n", "t0k") is None


def test_the_runner_travels_with_bytecode_its_python_loads_from_a_read_only_folder(tmp_path):
    """The volume is read-only for the run's user: the runner's modules come with .pyc files that
    Python loads as they are, instead of compiling the supervisor at every run."""
    from airflow_provider_mltrain.targets.docker import _runner_files

    root = tmp_path / "runner"
    for rel, data in _runner_files():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    cached = {p.name.split(".")[0] for p in (root / "__pycache__").iterdir()}
    assert {"supervisor", "tree"} <= cached and not cached & {"docker_entry", "bootstrap"}  # run as __main__
    for folder in [root, *root.rglob("*")]:
        if folder.is_dir():
            folder.chmod(0o555)
    try:
        out = subprocess.run(
            [
                sys.executable,
                "-I",
                "-S",
                "-v",
                "-c",
                "import sys; sys.path.insert(0, sys.argv[1]); import supervisor, tree",
                str(root),
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stderr
    finally:
        for folder in [root, *root.rglob("*")]:
            if folder.is_dir():
                folder.chmod(0o755)
    for module in ("supervisor", "tree"):
        assert f"code object from '{root}/__pycache__/{module}." in out, out[-2000:]
