"""A hostile training script on every target: links out of its run folder, its log swapped for a
link while it runs, trees too deep or too wide to recurse into.

Each run must finalize and be collected, no reader (listing, download, log, collection) may return
what a link points to, and each link is listed as a link with the text it holds. The host secret is
a file this test makes, readable by anyone (so the SSH test user could follow a link to it).
"""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path

import pytest

from airflow_provider_mltrain.runner import tree
from tests.targets.suite import assert_store_holds, submit, wait_until

MARKER = "mltrain-host-secret-5c1e9"
DEPTH = 1200
WIDE_FOLDERS, WIDE_FILES = 40, 50  # 2,000 files


@pytest.fixture
def host_secret():
    folder = Path(tempfile.mkdtemp(prefix="mltrain-secret-", dir="/tmp"))
    folder.chmod(0o755)
    secret = folder / "airflow.cfg"
    secret.write_text(f"[core]\nfernet_key = {MARKER}\n")
    secret.chmod(0o644)
    yield secret
    secret.unlink()
    folder.rmdir()


LINKS = """
import os, sys, time
secret = sys.argv[1]
host_dir = os.path.dirname(secret)
os.makedirs("outputs/real", exist_ok=True)
os.makedirs("logs", exist_ok=True)
open("outputs/real/ok.txt", "w").write("fine")
os.symlink(secret, "outputs/secret.cfg")
os.symlink(host_dir, "outputs/hostdir")
os.symlink("/etc/passwd", "outputs/passwd")
os.symlink("real/ok.txt", "outputs/inside.txt")
os.symlink("real", "outputs/inside_dir")
os.symlink(secret, "logs/secret.log")
os.symlink(host_dir, "logs/hostdir")
# and straight into the run folder, where the controller reads while the run is active
run_dir = os.environ["MLTRAIN_RUN_DIR"]
os.symlink(secret, os.path.join(run_dir, "outputs", "live.cfg"))
os.symlink(host_dir, os.path.join(run_dir, "logs", "livedir"))
print("links made", flush=True)
time.sleep(600)
"""

EXPECTED_LINKS = {
    "outputs/secret.cfg": "{secret}",
    "outputs/hostdir": "{folder}",
    "outputs/passwd": "/etc/passwd",
    "outputs/inside.txt": "real/ok.txt",
    "outputs/inside_dir": "real",
    "logs/secret.log": "{secret}",
    "logs/hostdir": "{folder}",
}
LIVE_LINKS = {"outputs/live.cfg": "{secret}", "logs/livedir": "{folder}"}


def _expected(table: dict[str, str], secret: Path) -> dict[str, str]:
    return {k: v.format(secret=secret, folder=secret.parent) for k, v in table.items()}


def _assert_nothing_leaks(run, secret: Path, tmp_path: Path, links: dict[str, str]) -> None:
    """Every reader of the run: listing, links, download of each name, the log."""
    names = run.get_file_names()
    found = run.get_links()
    for name, target in links.items():
        assert found.get(name) == target, (name, found)
        assert name not in names
        with pytest.raises(FileNotFoundError):
            run.download_file(name, tmp_path / "dl" / "x")
        assert MARKER.encode() not in run.target.read_file(run.id, name)
    assert not [n for n in names if "/hostdir/" in n or "/livedir/" in n or "/inside_dir/" in n]
    for name in (f"outputs/hostdir/{secret.name}", f"logs/livedir/{secret.name}", "outputs/passwd"):
        with pytest.raises(FileNotFoundError):
            run.download_file(name, tmp_path / "dl" / "y")
    for name in names:
        data = run.download_file(name, tmp_path / "dl" / "z").read_bytes()
        assert MARKER.encode() not in data, name
    assert MARKER.encode() not in run.read_log()


def _assert_collected_copy_is_plain(run) -> None:
    """The collected folder (with an object-store workspace: this host's cache of what went to the
    store) holds regular files and folders only, no byte of the secret."""
    assert run.get_details()["output_dir"] is not None, "the run was not collected"
    root = run.workspace.run_files_dir(run.id)
    for dirpath, dirs, files in os.walk(root):
        for name in dirs + files:
            mode = os.lstat(os.path.join(dirpath, name)).st_mode
            assert stat.S_ISDIR(mode) or stat.S_ISREG(mode), os.path.join(dirpath, name)
        for name in files:
            assert MARKER.encode() not in Path(dirpath, name).read_bytes(), name


def test_links_out_of_the_run_are_listed_never_followed(workspace, target, make_tree, host_secret, tmp_path):
    src = make_tree({"train.py": LINKS, "outputs/.keep": ""})
    run = submit(workspace, target, src, arguments=[str(host_secret)])
    wait_until(lambda: b"links made" in run.read_log(), timeout=120)
    links = _expected({**EXPECTED_LINKS, **LIVE_LINKS}, host_secret)
    # Active: the script owns the run folder; links there are read through the target.
    wait_until(lambda: set(_expected(LIVE_LINKS, host_secret)) <= set(run.get_links()), timeout=60)
    _assert_nothing_leaks(run, host_secret, tmp_path, _expected(LIVE_LINKS, host_secret))
    assert run.cancel(grace_period=1) == "Canceled"
    # Finished: ./outputs and ./logs were moved beside the run's own and collected.
    details = run.get_details()
    assert details["output_dir"] is not None, "the run was not collected"
    assert "outputs/real/ok.txt" in run.get_file_names()
    assert run.download_file("outputs/real/ok.txt", tmp_path / "ok.txt").read_text() == "fine"
    _assert_nothing_leaks(run, host_secret, tmp_path, links)
    _assert_collected_copy_is_plain(run)
    if (elsewhere := assert_store_holds(run)) is not None:  # the store's copy, read from another host
        _assert_nothing_leaks(elsewhere, host_secret, tmp_path, links)


SWAP_LOG = """
import os, sys, time
secret = sys.argv[1]
print("before the swap", flush=True)
log = os.path.join(os.environ["MLTRAIN_RUN_DIR"], "logs", "std_log.txt")
os.unlink(log)
os.symlink(secret, log)
print("after the swap", flush=True)
time.sleep(600)
"""


def test_a_log_swapped_for_a_link_is_not_followed(workspace, target, make_tree, host_secret, tmp_path):
    from airflow_provider_mltrain.core.run import LogFollower

    src = make_tree({"train.py": SWAP_LOG})
    run = submit(workspace, target, src, arguments=[str(host_secret)])
    wait_until(lambda: "logs/std_log.txt" in run.get_links(), timeout=120)
    assert run.get_links()["logs/std_log.txt"] == str(host_secret)
    follower = LogFollower(run)
    assert MARKER not in "\n".join(follower.read(final=True))
    assert MARKER.encode() not in run.read_log()
    assert MARKER not in run.get_log_tail()
    assert run.target_log_size() == 0
    assert "logs/std_log.txt" not in run.get_file_names()
    with pytest.raises(FileNotFoundError):
        run.download_file("logs/std_log.txt", tmp_path / "log.txt")
    assert run.cancel(grace_period=1) == "Canceled"
    details = run.get_details()
    assert details["output_dir"] is not None, "the run was not collected"
    assert run.get_links()["logs/std_log.txt"] == str(host_secret)
    assert MARKER.encode() not in run.read_log()
    assert MARKER not in (details["error"] or "")
    _assert_collected_copy_is_plain(run)


EXCEPTION_LINK = f"""
import os, sys
secret = sys.argv[1]
if not os.path.exists(secret):  # in a container: a secret of the container's own, outside the run
    secret = "/tmp/container-secret"
    open(secret, "w").write("{MARKER}")
os.symlink(secret, os.path.join(os.environ["MLTRAIN_RUN_DIR"], "exception.txt"))
sys.stdout.flush()
os._exit(3)
"""


@pytest.mark.no_object_store_variant("the summary is read from the target, whatever the artifact store")
def test_a_link_in_place_of_the_exception_summary_is_not_read(workspace, target, make_tree, host_secret):
    src = make_tree({"train.py": EXCEPTION_LINK})
    run = submit(workspace, target, src, arguments=[str(host_secret)])
    details = run.wait_for_completion(raise_on_error=False)
    assert details["status"] == "Failed" and details["exit_code"] == 3
    assert MARKER not in (details["error"] or "")


DEEP_AND_WIDE = f"""
import os
fd = os.open("outputs", os.O_RDONLY)
os.mkdir("deep", dir_fd=fd)
# os.makedirs recurses once per folder: open each one from its parent instead
fd2 = os.open("deep", os.O_RDONLY, dir_fd=fd)
os.close(fd)
fd = fd2
for _ in range({DEPTH}):
    os.mkdir("d", dir_fd=fd)
    child = os.open("d", os.O_RDONLY, dir_fd=fd)
    os.close(fd)
    fd = child
out = os.open("bottom.txt", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd)
os.write(out, b"at the bottom")
os.close(out)
os.close(fd)
for i in range({WIDE_FOLDERS}):
    os.makedirs("outputs/wide/f%d" % i)
    for j in range({WIDE_FILES}):
        with open("outputs/wide/f%d/%d.txt" % (i, j), "w") as f:
            f.write(str(i * 1000 + j))
print("trees made", flush=True)
"""


@pytest.fixture
def deep_tmp_path(tmp_path):
    """tmp_path, emptied without recursion afterwards: pytest's own clean-up of old tmp folders
    (shutil.rmtree) would stop at the deep tree with a RecursionError, in every later session."""
    yield tmp_path
    for child in tmp_path.iterdir():
        assert tree.rmtree(str(child)) == []


# The upload to the store starts from the collected copy on this host, whatever the target: its
# s3 variant (2,000 objects and a name longer than an S3 key) runs on the local target only.
@pytest.mark.object_store_on("local")
def test_deep_and_wide_trees_are_collected_without_recursion(workspace, target, make_tree, deep_tmp_path):
    tmp_path = deep_tmp_path
    src = make_tree({"train.py": DEEP_AND_WIDE, "outputs/.keep": ""})
    run = submit(workspace, target, src)
    details = run.wait_for_completion(timeout=600)
    assert details["status"] == "Completed"
    assert details["output_dir"] is not None, "the run was not collected"
    deep = "outputs/deep/" + "d/" * DEPTH + "bottom.txt"
    names = set(run.get_file_names())
    assert deep in names
    wide = {f"outputs/wide/f{i}/{j}.txt" for i in range(WIDE_FOLDERS) for j in range(WIDE_FILES)}
    assert wide <= names
    assert run.download_file(deep, tmp_path / "bottom.txt").read_bytes() == b"at the bottom"
    assert run.download_file("outputs/wide/f7/3.txt", tmp_path / "w.txt").read_text() == "7003"
    assert_store_holds(run)
    # the target removed the run's working copy (and with it any deep tree left there)
    assert "trees made" in run.read_log().decode()
