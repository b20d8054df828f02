from __future__ import annotations

import io
import json
import os
import pty
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from airflow_provider_mltrain import Environment, Experiment, PythonSection, ScriptRunConfig
from airflow_provider_mltrain.cli import Feedback, main, split_script_arguments
from airflow_provider_mltrain.core import compute
from airflow_provider_mltrain.targets.local import LocalTarget

TRAIN = """\
import json, os, sys
from mltrain import Run
run = Run.get_context()
print("args", json.dumps(sys.argv[1:]), flush=True)
for step, value in enumerate([0.5, 0.7, 0.9]):
    run.log("acc", value, step=step)
run.log("name", "sgd")
os.makedirs("outputs/models", exist_ok=True)
open("outputs/models/model.txt", "w").write(open("data.txt").read())
open("outputs/summary.json", "w").write("{}")
sys.exit(3 if "--fail" in sys.argv else 0)
"""

# Blocks until the file named by its first argument exists: lets a test act while the run is running.
WAITER = """\
import os, sys, time
print("before", flush=True)
while not os.path.exists(sys.argv[1]):
    time.sleep(0.05)
print("after", flush=True)
"""


@pytest.fixture
def cli(workspace, capsys):
    """cli("runs", "list") -> (exit code, stdout, stderr) of the command over the test workspace."""

    def run(*argv: str) -> tuple[int, str, str]:
        code = main(["--workspace", str(workspace.root), *argv])
        out = capsys.readouterr()
        return code, out.out, out.err

    return run


@pytest.fixture
def other_target():
    """A second local target named "other", with its own root folder."""

    def resolve(name: str, root: Path):
        return LocalTarget(root / "targets" / "other", name="other") if name == "other" else None

    compute.register_resolver(resolve, first=True)
    yield "other"
    compute._resolvers.remove(resolve)


# A terminal's Ctrl-C reaches a foreground job whose SIGINT is neither ignored nor blocked; a child
# of a pytest-xdist worker may inherit either, so a follower starts as a terminal job would.
AS_A_TERMINAL_JOB = (
    "import signal; signal.signal(signal.SIGINT, signal.default_int_handler); "
    "signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})\n"
)


def _subprocess_cli(workspace, *argv: str, **kwargs) -> subprocess.Popen:
    run_cli = "import runpy; runpy.run_module('airflow_provider_mltrain.cli', run_name='__main__')"
    main = AS_A_TERMINAL_JOB + run_cli
    cmd = [sys.executable, "-c", main, "--workspace", str(workspace.root), *argv]
    env = {**kwargs.pop("env", os.environ), "PYTHONFAULTHANDLER": "1"}
    return subprocess.Popen(cmd, env=env, **kwargs)


def interrupted(follower: subprocess.Popen) -> tuple[bytes, bytes]:
    """The output of a follower sent SIGINT; one still there after 60 s (seen once in CI, under
    load) is sent SIGABRT, which PYTHONFAULTHANDLER turns into every thread's stack on stderr."""
    try:
        return follower.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        follower.send_signal(signal.SIGABRT)
        _, err = follower.communicate(timeout=30)
        raise AssertionError(f"still following 60 s after SIGINT; its stacks:\n{err.decode()}") from None


# -- runs list / show ------------------------------------------------------------------------------


def test_runs_list_and_show(workspace, make_tree, cli):
    src = make_tree(
        {"train.py": "from mltrain import Run\nr = Run.get_context()\nr.log('acc', 0.5)\nr.log('acc', 0.7)\n"}
    )
    run = Experiment(workspace, "cli").submit(ScriptRunConfig(src, "train.py"), tags={"k": "v"})
    run.wait_for_completion()
    code, out, _ = cli("runs", "list", "--json")
    listed = json.loads(out)
    assert code == 0 and [r["run_id"] for r in listed] == [run.id] and listed[0]["status"] == "Completed"
    code, out, _ = cli("runs", "show", "--latest", "--experiment", "cli")
    assert code == 0
    assert f"Run        {run.id}" in out and "Status     Completed" in out
    assert "acc                      0.7 (last of 2; min 0.5, max 0.7)" in out
    assert "logs/std_log.txt" in out and "Tags       k=v" in out
    code, out, _ = cli("runs", "show", run.id, "--json")
    assert json.loads(out)["metrics"] == {"acc": [0.5, 0.7]}


def test_unknown_run_or_experiment_exits_2_with_a_message(workspace, make_tree, cli):
    src = make_tree({"train.py": "print(1)\n"})
    Experiment(workspace, "known").submit(ScriptRunConfig(src, "train.py")).wait_for_completion()
    for argv in (
        ["runs", "show", "nope"],
        ["runs", "cancel", "nope"],
        ["logs", "nope"],
        ["metrics", "nope"],
        ["download", "nope"],
        ["rerun", "nope"],
        ["snapshot", "diff", "nope", "nope2"],
    ):
        code, out, err = cli(*argv)
        assert (code, out) == (2, ""), argv
        assert "Run 'nope' is not in the run store" in err and "Traceback" not in err, argv
    code, _, err = cli("runs", "list", "--experiment", "knwon")
    assert code == 2 and "No experiment 'knwon'" in err and "Did you mean 'known'" in err
    code, _, err = cli("runs", "show", "--latest", "--experiment", "nope")
    assert code == 2 and "No experiment 'nope'" in err
    assert len(workspace.store.list_runs()) == 1


# -- submit ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "head", "rest"),
    [
        (["runs", "list"], ["runs", "list"], []),
        (
            ["--workspace", "w", "submit", "--experiment", "e", "--tag=a=b", "d", "t.py", "--lr", "1"],
            ["--workspace", "w", "submit", "--experiment", "e", "--tag=a=b", "d", "t.py"],
            ["--lr", "1"],
        ),
        (
            ["submit", "--no-wait", "d", "t.py", "--", "--help"],
            ["submit", "--no-wait", "d", "t.py"],
            ["--help"],
        ),
        (["submit", "--", "-d", "t.py", "--", "--", "x"], ["submit", "--", "-d", "t.py"], ["--", "x"]),
        (["submit", "d", "t.py", "--experiment", "e"], ["submit", "d", "t.py"], ["--experiment", "e"]),
    ],
)
def test_split_script_arguments(argv, head, rest):
    assert split_script_arguments(argv) == (head, rest)


def test_submit_waits_streams_the_log_and_passes_arguments_through(workspace, make_tree, cli):
    src = make_tree({"train.py": TRAIN, "data.txt": "weights"})
    code, out, err = cli(
        "submit", "--experiment", "cli", "--tag", "k=v", str(src), "train.py",
        "--lr", "0.1", "-x", "--experiment", "inner", "--", "--tag",
    )  # fmt: skip
    assert code == 0, err
    assert 'args ["--lr", "0.1", "-x", "--experiment", "inner", "--", "--tag"]' in out
    (record,) = workspace.store.list_runs()
    assert record["experiment"] == "cli" and record["tags"] == {"k": "v"} and record["status"] == "Completed"
    assert record["arguments"] == ["--lr", "0.1", "-x", "--experiment", "inner", "--", "--tag"]
    assert f"submitted run {record['id']} to local" in err and "Completed in" in err
    assert "\x1b[" not in out + err  # not a terminal: no progress bars, plain lines


def test_submit_no_wait_prints_only_the_run_id(workspace, make_tree, cli):
    src = make_tree({"train.py": TRAIN, "data.txt": "w"})
    code, out, _ = cli(
        "submit", "--experiment", "cli", "--no-wait", "--run-id", "r1", str(src), "train.py", "--", "--help"
    )
    assert (code, out) == (0, "r1\n")
    run = workspace.get_run("r1")
    run.wait_for_completion()
    assert run.get_details()["arguments"] == ["--help"]
    code, out, _ = cli("submit", "--experiment", "cli", "--no-wait", "--run-id", "r1", str(src), "train.py")
    assert (code, out) == (0, "r1\n") and len(workspace.store.list_runs()) == 1  # same id: reattached


def test_submit_of_a_failing_script_exits_1(workspace, make_tree, cli):
    src = make_tree({"train.py": TRAIN, "data.txt": "w"})
    code, out, err = cli("submit", "--experiment", "cli", str(src), "train.py", "--fail")
    assert code == 1 and 'args ["--fail"]' in out
    assert "Failed with exit code 3" in err and "Traceback" not in err


def test_submit_bad_input_records_nothing(workspace, make_tree, cli):
    src = make_tree({"train.py": TRAIN})
    code, _, err = cli("submit", "--experiment", "cli", str(src), "missing.py")
    assert code == 1 and "script 'missing.py' does not exist" in err and "Traceback" not in err
    code, _, err = cli("submit", "--experiment", "cli", "--target", "nowhere", str(src), "train.py")
    assert code == 1 and "Unknown compute target 'nowhere'" in err
    code, _, err = cli("submit", "--experiment", "cli", "--tag", "novalue", str(src), "train.py")
    assert code == 2 and "--tag 'novalue' is not KEY=VALUE" in err
    code, _, err = cli("submit", "--experiment", "bad name", str(src), "train.py")
    assert code == 1 and "Experiment name 'bad name' is not valid" in err
    with pytest.raises(SystemExit) as exc:
        main(["--workspace", str(workspace.root), "submit", str(src), "train.py"])
    assert exc.value.code == 2  # --experiment is required
    assert workspace.store.list_runs() == []


# -- logs, metrics, cancel -----------------------------------------------------------------------


def test_logs_follow_streams_while_the_run_runs(workspace, make_tree, cli, tmp_path):
    src = make_tree({"wait.py": WAITER})
    flag = tmp_path / "go"
    run = Experiment(workspace, "cli").submit(ScriptRunConfig(src, "wait.py", arguments=[str(flag)]))
    follower = _subprocess_cli(
        workspace, "logs", run.id, "-f", stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        assert follower.stdout.readline() == b"before\n"  # printed while the script still waits
        assert run.get_status() in ("Running", "Starting")
        flag.touch()
        rest, err = follower.communicate(timeout=120)
    finally:
        follower.kill()
        flag.touch()  # whatever failed, the waiting script ends
    assert follower.returncode == 0 and rest == b"after\n"
    assert f"run {run.id} ended Completed" in err.decode()
    code, out, _ = cli("logs", run.id)
    assert (code, out) == (0, "before\nafter\n")


def test_ctrl_c_stops_following_not_the_run(workspace, make_tree, tmp_path):
    src = make_tree({"wait.py": WAITER})
    flag = tmp_path / "go"
    run = Experiment(workspace, "cli").submit(ScriptRunConfig(src, "wait.py", arguments=[str(flag)]))
    pipes = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE}
    follower = _subprocess_cli(workspace, "logs", run.id, "-f", **pipes)
    try:
        assert follower.stdout.readline() == b"before\n"
        follower.send_signal(signal.SIGINT)
        _, err = interrupted(follower)
    except BaseException:
        flag.touch()  # never leave the waiting script behind
        raise
    finally:
        follower.kill()
    assert follower.returncode == 130
    assert f"stopped following; run {run.id} goes on" in err.decode() and "Traceback" not in err.decode()
    assert f"mltrain --workspace {workspace.root} runs cancel {run.id}" in err.decode()
    assert run.get_status() == "Running"
    flag.touch()
    assert run.wait_for_completion()["status"] == "Completed"


FOLLOW_IN_PYTHON = """\
import sys
from airflow_provider_mltrain import Workspace
Workspace(sys.argv[1]).get_run(sys.argv[2]).wait_for_completion(show_output=True)
"""


def test_ctrl_c_in_wait_for_completion_says_how_to_get_back_to_the_run(workspace, make_tree, tmp_path):
    src = make_tree({"wait.py": WAITER})
    flag = tmp_path / "go"
    run = Experiment(workspace, "cli").submit(ScriptRunConfig(src, "wait.py", arguments=[str(flag)]))
    follower = subprocess.Popen(
        [sys.executable, "-c", AS_A_TERMINAL_JOB + FOLLOW_IN_PYTHON, str(workspace.root), run.id],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONFAULTHANDLER": "1"},
    )
    try:
        assert follower.stdout.readline() == b"before\n"
        follower.send_signal(signal.SIGINT)
        _, raw = interrupted(follower)
    except BaseException:
        flag.touch()
        raise
    finally:
        follower.kill()
    err = raw.decode()
    assert f"KeyboardInterrupt: Stopped following run {run.id}; it goes on running." in err
    assert f"mltrain --workspace {workspace.root} logs {run.id} -f" in err
    assert f"mltrain --workspace {workspace.root} runs cancel {run.id}" in err
    # The traceback ends in wait_for_completion, not in the target's polling internals.
    assert "targets/" not in err and "During handling" not in err
    assert run.get_status() == "Running"
    flag.touch()
    assert run.wait_for_completion()["status"] == "Completed"


def test_version(capsys):
    from airflow_provider_mltrain import __version__

    with pytest.raises(SystemExit) as exited:
        main(["--version"])
    assert exited.value.code == 0
    assert capsys.readouterr().out == f"mltrain (airflow-provider-mltrain) {__version__}\n"


def test_runs_show_quotes_the_arguments(workspace, make_tree, cli):
    src = make_tree({"train.py": "pass\n"})
    arguments = ["--name", "two words", "--empty", "", "--glob", "*.csv"]
    run = Experiment(workspace, "cli").submit(ScriptRunConfig(src, "train.py", arguments=arguments))
    run.wait_for_completion()
    code, out, _ = cli("runs", "show", run.id)
    assert code == 0
    assert "Script     train.py --name 'two words' --empty '' --glob '*.csv'\n" in out


def test_metrics_json_parses_back(workspace, make_tree, cli):
    src = make_tree({"train.py": TRAIN, "data.txt": "w"})
    run = Experiment(workspace, "cli").submit(ScriptRunConfig(src, "train.py"))
    run.wait_for_completion()
    code, out, _ = cli("metrics", run.id, "--json")
    assert code == 0 and json.loads(out) == run.get_metrics() == {"acc": [0.5, 0.7, 0.9], "name": "sgd"}
    code, out, _ = cli("metrics", run.id)
    lines = out.splitlines()
    assert lines[0].split() == ["METRIC", "LAST", "COUNT", "MIN", "MAX"]
    assert lines[1].split() == ["acc", "0.9", "3", "0.5", "0.9"] and lines[2].split() == ["name", '"sgd"']


LONG = """\
from mltrain import Run
run = Run.get_context()
for i in range(1500):
    run.log("loss", 1.0 / (1 + i % 700), step=i)
run.log("name", "sgd")
"""


def test_a_long_series_is_shown_from_the_store_summary_not_read_value_by_value(
    workspace, make_tree, cli, monkeypatch
):
    from airflow_provider_mltrain.core.store import RunStore

    run = Experiment(workspace, "cli").submit(ScriptRunConfig(make_tree({"train.py": LONG}), "train.py"))
    run.wait_for_completion()
    values = run.get_metrics()["loss"]
    read: list[str | None] = []
    original = RunStore.get_metric_rows

    def recording(self, run_id, name=None):
        read.append(name)
        return original(self, run_id, name)

    monkeypatch.setattr(RunStore, "get_metric_rows", recording)
    code, out, _ = cli("metrics", run.id)
    assert code == 0
    lines = {line.split()[0]: line.split()[1:] for line in out.splitlines()[1:]}
    assert lines["loss"] == [f"{values[-1]:.6g}", "1500", f"{min(values):.6g}", f"{max(values):.6g}"]
    assert lines["name"] == ['"sgd"']
    code, out, _ = cli("runs", "show", run.id)
    expected = f"{values[-1]:.6g} (last of 1500; min {min(values):.6g}, max {max(values):.6g})"
    assert code == 0 and f"loss                     {expected}" in out
    assert read == ["name", "name"]  # the short one by name; the long one never row by row


BROKEN = """\
import os
from mltrain import Run
run = Run.get_context()
run.log("acc", 0.5, step=0)
with open(os.environ["MLTRAIN_METRICS_FILE"], "a") as f:
    f.write('{"name": "acc", "value": 0.6, "step": NaN}\\n')
run.log("acc", 0.7, step=1)
"""


def test_a_run_with_a_malformed_metric_line_is_listed_and_shown_with_its_warning(workspace, make_tree, cli):
    src = make_tree({"train.py": TRAIN, "data.txt": "w"})
    good = Experiment(workspace, "cli").submit(ScriptRunConfig(src, "train.py"))
    good.wait_for_completion()
    broken = Experiment(workspace, "cli").submit(
        ScriptRunConfig(make_tree({"train.py": BROKEN}), "train.py"), tags={"k": "v"}
    )
    # Listed while still unread: `runs list` reads the target and meets the bad line itself.
    code, out, err = cli("runs", "list", "--json")
    assert code == 0, err
    listed = {r["run_id"]: r for r in json.loads(out)}
    assert set(listed) == {good.id, broken.id}
    broken.wait_for_completion()
    code, out, err = cli("runs", "list")
    assert code == 0, err
    row = next(line for line in out.splitlines() if line.startswith(broken.id))
    assert "Completed" in row and f"(1 warning: mltrain runs show {broken.id})" in row
    assert "warning" not in next(line for line in out.splitlines() if line.startswith(good.id))
    code, out, err = cli("runs", "show", broken.id)
    assert code == 0, err
    assert "Status     Completed" in out
    assert "Warning    logs/metrics.jsonl: skipped 1 malformed line (first at byte " in out
    assert "1 a step that is not a whole number within 64 bits" in out
    code, out, _ = cli("runs", "show", broken.id, "--json")
    shown = json.loads(out)
    assert shown["metrics"] == {"acc": [0.5, 0.7]} and len(shown["warnings"]) == 1
    code, out, _ = cli("runs", "list", "--json")
    assert {r["run_id"]: r["warnings"] for r in json.loads(out)} == {
        good.id: [],
        broken.id: shown["warnings"],
    }


def test_metric_rows_stored_by_older_versions_do_not_break_show_or_metrics(workspace, make_tree, cli):
    run = Experiment(workspace, "cli").submit(ScriptRunConfig(make_tree({"train.py": BROKEN}), "train.py"))
    run.wait_for_completion()
    offset = workspace.store.get_run(run.id)["metrics_offset"]
    old = {"run_id": run.id, "step": None, "logged_at": 1.0}
    rows = [
        {**old, "seq": offset, "name": "per_class", "kind": "row", "value": "[1, 2]"},
        {**old, "seq": offset + 1, "name": "per_class", "kind": "row", "value": '{"c": 1}'},
        {**old, "seq": offset + 2, "name": "huge", "kind": "scalar", "value": str(10**400)},
        {**old, "seq": offset + 3, "name": "huge", "kind": "scalar", "value": "2"},
        {**old, "seq": offset + 4, "name": "garbled", "kind": "scalar", "value": "not json"},
    ]
    assert workspace.store.ingest_metrics(run.id, offset, offset + 5, rows)
    for argv in (("runs", "show", run.id), ("runs", "show", run.id, "--json"), ("metrics", run.id)):
        code, out, err = cli(*argv)
        assert code == 0, err
        assert "huge" in out and "per_class" in out
    code, out, _ = cli("metrics", run.id, "--json")
    assert json.loads(out)["acc"] == [0.5, 0.7]


# Text a terminal would act on: clear the screen, set the window title, a line break, a
# right-to-left override; and a byte that is not UTF-8.
ODD = "\x1b[2J\x1b]0;pwned\x07name\nnext\u202e"
ODD_SHOWN = "\\e[2J\\e]0;pwned\\x07name\\nnext\\u202e"
ODD_TRAIN = f"""
import os
from mltrain import Run
r = Run.get_context()
r.log({ODD!r}, 0.5)
r.log("x" * 255, 1.0)  # the longest name a run may log
r.log("text", {ODD!r})
os.makedirs("outputs", exist_ok=True)
open("outputs/" + {ODD!r}, "w").close()
open(b"outputs/\\xff.bin", "wb").close()
"""


def test_tables_show_control_characters_escaped(workspace, make_tree, cli):
    src = make_tree({"train.py": ODD_TRAIN})
    run = Experiment(workspace, "cli").submit(
        ScriptRunConfig(src, "train.py", arguments=[ODD]), tags={"t": ODD}
    )
    run.wait_for_completion()
    outputs = {}
    for argv in (("runs", "list"), ("runs", "show", run.id), ("metrics", run.id)):
        code, out, _ = cli(*argv)
        assert code == 0
        assert not any(c in out for c in "\x1b\x07\u202e\r"), (argv, out)
        outputs[argv[0] + argv[1]] = out
    show = outputs["runsshow"]
    assert (
        f"Tags       t={ODD_SHOWN}" in show and f"train.py '{ODD_SHOWN}'" in show
    )  # shlex-quoted, then escaped
    assert f"outputs/{ODD_SHOWN}" in show and "outputs/\\xff.bin" in show
    metrics = outputs["metrics" + run.id].splitlines()
    assert len(metrics) == 4  # a header and one line per metric: a name cannot break a line
    assert metrics[1].startswith(ODD_SHOWN) and all(len(line) < 120 for line in metrics)
    assert metrics[2].startswith("x" * 59 + "…")
    assert json.loads(cli("metrics", run.id, "--json")[1])[ODD] == 0.5  # --json keeps the text exact


LOG_WRITER = r"""
import sys
out = sys.stdout.buffer
out.write(b"\x1b[31mred\x1b[0m plain\n")
out.write(b"\x1b[2J\x1b[Hcleared\n")
out.write(b"\x1b]0;title\x07titled \x1b]8;;http://x\x1b\\link\x1b]8;;\x1b\\\n")
out.write(b"progress 1\rprogress 2\r\n")
out.write(b"bell\x07 bytes \xff\xfe end\n")
out.flush()
"""
LOG_CLEAN = (
    b"\x1b[31mred\x1b[0m plain\ncleared\ntitled link\nprogress 1\nprogress 2\n"
    + "bell bytes \ufffd\ufffd end\n".encode()
)


def test_logs_strip_terminal_controls_but_colours_unless_raw(workspace, make_tree):
    src = make_tree({"train.py": LOG_WRITER})
    run = Experiment(workspace, "cli").submit(ScriptRunConfig(src, "train.py"))
    run.wait_for_completion()
    raw = (workspace.run_files_dir(run.id) / "logs" / "std_log.txt").read_bytes()
    assert b"\x1b[2J" in raw  # the script did write them
    outputs = {}
    for argv in (("logs", run.id), ("logs", run.id, "--raw"), ("logs", run.id, "-f")):
        follower = _subprocess_cli(workspace, *argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        out, err = follower.communicate(timeout=120)
        assert follower.returncode == 0, err
        outputs[argv[2:]] = out
    assert outputs[()] == LOG_CLEAN
    assert outputs[("--raw",)] == raw
    assert outputs[("-f",)] == LOG_CLEAN


def test_runs_cancel(workspace, make_tree, cli, tmp_path):
    src = make_tree({"wait.py": WAITER})
    run = Experiment(workspace, "cli").submit(
        ScriptRunConfig(src, "wait.py", arguments=[str(tmp_path / "never")])
    )
    while "before" not in run.read_log().decode():
        assert not run.refresh().is_terminal
        time.sleep(0.05)
    code, out, _ = cli("runs", "cancel", run.id, "--grace", "5")
    assert (code, out) == (0, f"{run.id} Canceled\n")
    assert run.get_status() == "Canceled"
    code, out, _ = cli("runs", "cancel", run.id)
    assert (code, out) == (0, f"{run.id} Canceled\n")  # already ended: says so, changes nothing


# -- download ----------------------------------------------------------------------------------


def test_download_all_a_folder_or_one_file(workspace, make_tree, cli, tmp_path, monkeypatch):
    src = make_tree({"train.py": TRAIN, "data.txt": "weights"})
    run = Experiment(workspace, "cli").submit(ScriptRunConfig(src, "train.py"))
    run.wait_for_completion()
    code, out, _ = cli("download", run.id, "-o", str(tmp_path / "all"))
    assert code == 0
    assert sorted(out.split()) == sorted(str(tmp_path / "all" / n) for n in run.get_file_names())
    assert (tmp_path / "all/outputs/models/model.txt").read_text() == "weights"
    code, out, _ = cli("download", run.id, "outputs/models", "-o", str(tmp_path / "some"))
    assert code == 0 and out == f"{tmp_path / 'some/outputs/models/model.txt'}\n"
    code, out, _ = cli("download", run.id, "outputs/models/model.txt", "-o", str(tmp_path / "m.txt"))
    assert code == 0 and (tmp_path / "m.txt").read_text() == "weights"
    monkeypatch.chdir(tmp_path)
    code, out, _ = cli("download", run.id, "outputs/summary.json")
    assert code == 0 and (tmp_path / "summary.json").read_text() == "{}"


@pytest.mark.parametrize("path", ["../runs.db", "outputs/../../runs.db", "/etc/passwd", "outputs/.."])
def test_download_refuses_paths_leaving_the_run(workspace, make_tree, cli, tmp_path, path):
    src = make_tree({"train.py": TRAIN, "data.txt": "w"})
    run = Experiment(workspace, "cli").submit(ScriptRunConfig(src, "train.py"))
    run.wait_for_completion()
    dest = tmp_path / "dest"
    code, out, err = cli("download", run.id, path, "-o", str(dest))
    assert (code, out) == (2, "") and f"Refusing path {path!r}" in err
    assert not dest.exists()
    code, _, err = cli("download", run.id, "outputs/nothing.bin", "-o", str(dest))
    assert code == 2 and "has no file or folder 'outputs/nothing.bin'" in err


HOSTILE = """\
import os, sys
secret = sys.argv[1]
os.makedirs("outputs/real", exist_ok=True)
open("outputs/real/ok.txt", "w").write("fine")
os.symlink(secret, "outputs/secret.cfg")
os.symlink(os.path.dirname(secret), "outputs/hostdir")
os.symlink("real", "outputs/inside")
print("before the swap", flush=True)
log = os.path.join(os.environ["MLTRAIN_RUN_DIR"], "logs", "std_log.txt")
os.unlink(log)
os.symlink(secret, log)
print("after the swap", flush=True)
"""


@pytest.fixture
def host_secret(tmp_path):
    folder = tmp_path / "host"
    folder.mkdir()
    secret = folder / "airflow.cfg"
    secret.write_text("fernet_key = cli-secret-2b7e\n")
    return secret


def test_download_and_logs_never_follow_a_link(workspace, make_tree, cli, tmp_path, host_secret):
    src = make_tree({"train.py": HOSTILE})
    run = Experiment(workspace, "cli").submit(ScriptRunConfig(src, "train.py", arguments=[str(host_secret)]))
    run.wait_for_completion()
    code, out, err = cli("download", run.id, "-o", str(tmp_path / "all"))
    assert code == 0 and out == f"{tmp_path / 'all/outputs/real/ok.txt'}\n"
    assert f"skipped outputs/secret.cfg: a symbolic link to {str(host_secret)!r}" in err
    assert "skipped logs/std_log.txt" in err
    for dirpath, dirs, files in os.walk(tmp_path / "all"):
        for name in dirs + files:
            assert not os.path.islink(os.path.join(dirpath, name))
        for name in files:
            assert "cli-secret" not in Path(dirpath, name).read_text()
    for path in ("outputs/secret.cfg", "outputs/hostdir", "logs/std_log.txt"):
        code, out, err = cli("download", run.id, path, "-o", str(tmp_path / "one"))
        assert (code, out) == (2, "") and "is a symbolic link" in err, path
    code, _, err = cli("download", run.id, "outputs/hostdir/airflow.cfg", "-o", str(tmp_path / "one"))
    assert code == 2 and "has no file or folder" in err
    assert not (tmp_path / "one").exists()
    code, out, _ = cli("logs", run.id)
    assert code == 0 and "cli-secret" not in out
    code, out, _ = cli("runs", "show", run.id)
    assert code == 0 and "cli-secret" not in out
    assert f"  outputs/secret.cfg -> {host_secret}" in out and "  outputs/inside -> real" in out
    code, out, _ = cli("runs", "show", run.id, "--json")
    links = json.loads(out)["links"]
    assert (
        links["outputs/hostdir"] == str(host_secret.parent)
        and "outputs/secret.cfg" not in json.loads(out)["files"]
    )


DEEP = """\
import os
fd = os.open("outputs", os.O_RDONLY)
for _ in range(1200):  # os.makedirs would recurse once per folder
    os.mkdir("d", dir_fd=fd)
    child = os.open("d", os.O_RDONLY, dir_fd=fd)
    os.close(fd)
    fd = child
out = os.open("bottom.txt", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd)
os.write(out, b"deep")
"""


@pytest.fixture
def deep_tmp_path(tmp_path):
    """tmp_path, emptied without recursion afterwards (pytest's clean-up recurses and would fail)."""
    from airflow_provider_mltrain.runner import tree

    yield tmp_path
    for child in tmp_path.iterdir():
        assert tree.rmtree(str(child)) == []


def test_download_all_of_a_deep_tree(deep_tmp_path, make_tree, capsys):
    tmp_path = deep_tmp_path
    workspace = tmp_path / "ws"
    src = make_tree({"deep.py": DEEP, "outputs/.keep": ""})
    code = main(["--workspace", str(workspace), "submit", "--experiment", "cli", str(src), "deep.py"])
    assert code == 0
    run_id = next(iter(json.loads(_capture(capsys, workspace, "runs", "list", "--json"))))["run_id"]
    code = main(["--workspace", str(workspace), "download", run_id, "-o", str(tmp_path / "all")])
    out = capsys.readouterr().out
    bottom = tmp_path / "all" / "outputs" / ("d/" * 1200) / "bottom.txt"
    assert code == 0 and f"{bottom}\n" in out
    assert bottom.read_text() == "deep"


def _capture(capsys, workspace: Path, *argv: str) -> str:
    capsys.readouterr()
    assert main(["--workspace", str(workspace), *argv]) == 0
    return capsys.readouterr().out


# -- snapshot diff -----------------------------------------------------------------------------


def test_snapshot_diff(workspace, make_tree, cli):
    src = make_tree({"train.py": "print(1)\n", "old.txt": "gone\n", "data.bin": b"\0\1", "same.txt": "s"})
    a = Experiment(workspace, "cli").submit(ScriptRunConfig(src, "train.py"))
    (src / "train.py").write_text("print(2)\n")
    (src / "old.txt").unlink()
    (src / "new.txt").write_text("hello\n")
    (src / "data.bin").write_bytes(b"\0\2")
    b = Experiment(workspace, "cli").submit(ScriptRunConfig(src, "train.py"))
    code, out, _ = cli("snapshot", "diff", a.id, b.id, "--json")
    data = json.loads(out)
    assert code == 0 and (data["run_a"], data["run_b"]) == (a.id, b.id)
    assert (data["added"], data["removed"], data["changed"]) == (
        ["new.txt"],
        ["old.txt"],
        ["data.bin", "train.py"],
    )
    assert "diffs" not in data
    code, out, _ = cli("snapshot", "diff", a.id, b.id, "--json", "--text")
    diffs = json.loads(out)["diffs"]
    assert diffs["data.bin"] is None
    assert diffs["train.py"].splitlines() == [
        "--- a/train.py",
        "+++ b/train.py",
        "@@ -1 +1 @@",
        "-print(1)",
        "+print(2)",
    ]
    assert diffs["new.txt"].splitlines()[:2] == ["--- /dev/null", "+++ b/new.txt"]
    assert diffs["old.txt"].splitlines()[:2] == ["--- a/old.txt", "+++ /dev/null"]
    code, out, _ = cli("snapshot", "diff", a.id, b.id, "--text")
    assert code == 0
    assert out.splitlines()[1:5] == ["M  data.bin", "A  new.txt", "D  old.txt", "M  train.py"]
    assert "binary file data.bin changed" in out and "+print(2)" in out
    code, out, _ = cli("snapshot", "diff", a.id, a.id)
    assert out.splitlines()[1] == "no differences"


# -- rerun -------------------------------------------------------------------------------------


def test_rerun_on_the_same_target_and_on_another(workspace, make_tree, cli, other_target):
    src = make_tree({"train.py": TRAIN, "data.txt": "v1"})
    code, out, _ = cli(
        "submit", "--experiment", "cli", "--no-wait", "--target", "other", str(src), "train.py", "-x"
    )
    first = workspace.get_run(out.strip())
    first.wait_for_completion()
    (src / "data.txt").write_text("v2")  # the rerun runs the snapshot, not the folder as it is now
    code, out, err = cli("rerun", first.id, "--target", "local", "--tag", "why=repro")
    assert code == 0, err
    assert 'args ["-x"]' in out
    new_id = err.split("submitted run ")[1].split()[0]
    details = workspace.get_run(new_id).get_details()
    assert details["target"] == "local" and details["properties"]["mltrain.rerun_of"] == first.id
    assert details["snapshot_id"] == first.get_details()["snapshot_id"] and details["tags"] == {
        "why": "repro"
    }
    assert (workspace.get_run(new_id).output_dir / "outputs/models/model.txt").read_text() == "v1"
    code, out, _ = cli("rerun", new_id, "--no-wait", "--run-id", "again")
    assert (code, out) == (0, "again\n")
    again = workspace.get_run("again")
    again.wait_for_completion()
    assert again.get_details()["target"] == "local"  # the run's own target by default
    code, out, _ = cli("runs", "show", "again")
    assert f"Rerun of   {new_id}" in out


@pytest.mark.integration
def test_rerun_of_a_local_run_in_a_docker_container(workspace, make_tree, cli, monkeypatch):
    from tests.targets.harnesses.docker import CONN_ID, docker_connection, require_docker

    require_docker()
    monkeypatch.setenv(f"AIRFLOW_CONN_{CONN_ID.upper()}", docker_connection())
    src = make_tree({"train.py": TRAIN, "data.txt": "v1"})
    code, out, err = cli("submit", "--experiment", "cli", "--no-wait", str(src), "train.py", "-x")
    first = workspace.get_run(out.strip())
    first.wait_for_completion()
    code, out, err = cli("rerun", first.id, "--target", CONN_ID)
    assert code == 0, err
    new_id = err.split("submitted run ")[1].split()[0]
    rerun = workspace.get_run(new_id)
    details = rerun.get_details()
    assert details["target"] == CONN_ID and details["properties"]["mltrain.rerun_of"] == first.id
    assert details["snapshot_id"] == first.get_details()["snapshot_id"]
    assert (rerun.output_dir / "outputs/models/model.txt").read_text() == "v1"
    code, out, _ = cli("runs", "show", new_id, "--json")
    assert json.loads(out)["target"] == CONN_ID


DATA_TRAIN = """\
import os, sys
out = os.environ["MLTRAIN_OUTPUT_MODEL"]
os.makedirs(out, exist_ok=True)
with open(os.path.join(sys.argv[2], "x.txt")) as f, open(os.path.join(out, "seen.txt"), "w") as w:
    w.write(f.read() + "|" + sys.argv[2])
"""


def _s3_conn(monkeypatch) -> dict:
    from tests.conftest import s3_options

    options = s3_options()
    conn = {
        "conn_type": "aws",
        "login": options["key"],
        "password": options["secret"],
        "extra": {"endpoint_url": options["client_kwargs"]["endpoint_url"]},
    }
    monkeypatch.setenv("AIRFLOW_CONN_MLTRAIN_CLI_S3", json.dumps(conn))
    return options


def test_submit_and_rerun_with_inputs_and_outputs(workspace, make_tree, tmp_path, cli, monkeypatch):
    import fsspec

    options = _s3_conn(monkeypatch)
    base = f"s3://mltrain-test/cli-{uuid.uuid4().hex}"
    fs = fsspec.filesystem("s3", **options)
    fs.pipe_file(f"{base}/data/x.txt", b"from-s3")
    src = make_tree({"train.py": DATA_TRAIN})
    code, out, err = cli(
        "submit", "--experiment", "cli", "--no-wait", "--input", f"data={base}/data/",
        "--output", f"model={base}/model/", "--data-conn", "mltrain_cli_s3",
        str(src), "train.py", "--data", "${{inputs.data}}",
    )  # fmt: skip
    assert code == 0, err
    first = workspace.get_run(out.strip())
    assert first.wait_for_completion()["status"] == "Completed", first.get_log_tail()
    (inp,) = first.get_details()["inputDatasets"]
    assert inp["uri"] == f"{base}/data/" and inp["conn_id"] == "mltrain_cli_s3"
    fs.invalidate_cache()
    assert fs.cat_file(f"{base}/model/seen.txt").decode() == f"from-s3|{inp['path']}"

    # The rerun reads the input again with the recorded connection, uploads nowhere unless told.
    code, out, err = cli("rerun", first.id, "--no-wait", "--run-id", "again")
    assert code == 0, err
    again = workspace.get_run("again")
    assert again.wait_for_completion()["status"] == "Completed", again.get_log_tail()
    assert "uploads it nowhere" in err
    code, out, err = cli(
        "rerun", first.id, "--no-wait", "--run-id", "there", "--output", f"model={base}/rerun/",
        "--data-conn", "mltrain_cli_s3",
    )  # fmt: skip
    assert code == 0, err
    assert workspace.get_run("there").wait_for_completion()["status"] == "Completed"
    fs.invalidate_cache()
    assert fs.cat_file(f"{base}/rerun/seen.txt").decode().startswith("from-s3|")

    fs.pipe_file(f"{base}/data/x.txt", b"changed")
    code, out, err = cli("rerun", first.id, "--no-wait")
    assert code != 0 and "no longer holds the data the run read" in err and "--allow-changed-inputs" in err
    code, out, err = cli("rerun", first.id, "--no-wait", "--run-id", "anyway", "--allow-changed-inputs")
    assert code == 0, err
    anyway = workspace.get_run("anyway")
    assert anyway.wait_for_completion()["status"] == "Completed"
    assert anyway.download_file("outputs/model/seen.txt", tmp_path / "dl").read_text().startswith("changed|")


def test_data_options_are_checked(workspace, make_tree, cli, tmp_path):
    src = make_tree({"train.py": "print(1)\n"})
    for argv, message in (
        (["--input", "data"], "--input 'data' is not NAME=VALUE"),
        (["--input", f"d={tmp_path}", "--mount", f"d={tmp_path}"], "input d is given by both"),
        (["--input", f"d={tmp_path}", "--input", f"d={tmp_path}"], "--input d is given twice"),
        (["--output", "model=/not/a/url"], "must be an object-store URL"),
    ):
        code, _, err = cli("submit", "--experiment", "cli", "--no-wait", *argv, str(src), "train.py")
        assert code != 0 and message in err, (argv, err)
    assert workspace.store.list_runs() == []


@pytest.mark.integration
def test_rerun_of_a_run_with_an_input_in_a_docker_container(workspace, make_tree, tmp_path, cli, monkeypatch):
    from tests.targets.harnesses.docker import CONN_ID, docker_connection, require_docker

    require_docker()
    monkeypatch.setenv(f"AIRFLOW_CONN_{CONN_ID.upper()}", docker_connection())
    data = tmp_path / "data"
    data.mkdir()
    (data / "x.txt").write_text("local-data")
    src = make_tree({"train.py": DATA_TRAIN.replace('os.environ["MLTRAIN_OUTPUT_MODEL"]', '"outputs/model"')})
    code, out, err = cli(
        "submit", "--experiment", "cli", "--no-wait", "--input", f"data={data}",
        str(src), "train.py", "--data", "${{inputs.data}}",
    )  # fmt: skip
    first = workspace.get_run(out.strip())
    assert first.wait_for_completion()["status"] == "Completed", first.get_log_tail()
    code, out, err = cli("rerun", first.id, "--target", CONN_ID, "--no-wait")
    assert code == 0, err
    run = workspace.get_run(out.strip())
    assert run.wait_for_completion()["status"] == "Completed", run.get_log_tail()
    (a,), (b,) = first.get_details()["inputDatasets"], run.get_details()["inputDatasets"]
    assert a["path"] != b["path"]  # the container's own place for the input
    assert run.get_details()["arguments"] == ["--data", b["path"]]
    seen = run.download_file("outputs/model/seen.txt", tmp_path / "dl").read_text()
    assert seen == f"local-data|{b['path']}"


def test_inputs_prune_keeps_what_recent_or_unfinished_runs_use(workspace, make_tree, tmp_path, cli):
    src = make_tree({"train.py": "print(1)\n"})
    runs = {}
    for name in ("old", "unfinished", "recent"):
        data = tmp_path / name
        data.mkdir()
        (data / "x.txt").write_text(name)
        code, out, err = cli("submit", "--experiment", "cli", "--input", f"d={data}", str(src), "train.py")
        assert code == 0, err
        runs[name] = workspace.get_run(err.split("submitted run ")[1].split()[0])
    keys = {n: r.get_details()["inputDatasets"][0]["cache_key"] for n, r in runs.items()}
    cache = workspace.root / "cache" / "inputs"
    assert all((cache / k / "data" / "x.txt").is_file() for k in keys.values())
    long_ago = time.time() - 30 * 86400
    for name in ("old", "unfinished"):
        workspace.store.update(runs[name].id, created_at=long_ago)
        os.utime(cache / keys[name] / "meta.json", (long_ago, long_ago))
    workspace.store.update(runs["unfinished"].id, status="Running")
    crashed = cache / f".tmp-{'0' * 40}-abcd"
    (crashed / "data").mkdir(parents=True)
    os.utime(crashed, (long_ago, long_ago))

    code, out, _ = cli("inputs", "prune", "--dry-run")
    assert code == 0 and out.splitlines()[-1] == "2 cached input(s) to remove"
    assert (cache / keys["old"]).is_dir()
    code, out, _ = cli("inputs", "prune", "--days", "7")
    lines = out.splitlines()
    assert sorted(lines[:-1]) == sorted([f"removed {crashed}", f"removed {cache / keys['old']}"])
    assert lines[-1] == "2 cached input(s) removed"
    assert not (cache / keys["old"]).exists() and not crashed.exists()
    assert (cache / keys["unfinished"] / "data" / "x.txt").read_text() == "unfinished"
    assert (cache / keys["recent"] / "data" / "x.txt").read_text() == "recent"
    # The pruned input is fetched again when a run needs it.
    code, out, err = cli("rerun", runs["old"].id)
    assert code == 0, err
    assert (cache / keys["old"] / "data" / "x.txt").read_text() == "old"


# -- environments --------------------------------------------------------------------------------


def test_env_list_build_and_prune(workspace, tmp_path, cli):
    (tmp_path / "env.yaml").write_text("python:\n  requirements: [six==1.17.0]\n")
    code, out, _ = cli("env", "build", str(tmp_path / "env.yaml"))
    assert code == 0 and "env " in out and "\x1b[" not in out
    code, out, _ = cli("env", "build", str(tmp_path / "env.yaml"))
    assert "already built (cache hit)" in out
    assert cli("env", "build", str(tmp_path / "env.yaml"), "--rebuild")[0] == 0
    builds = workspace.store.list_builds()
    assert [b["status"] for b in builds] == ["built", "built"]
    Environment(name="mine", python=PythonSection(requirements=["six==1.17.0"])).register(workspace)
    code, out, _ = cli("env", "list", "--json")
    listed = json.loads(out)
    assert {"mine", "mltrain-minimal", "mltrain-sklearn"} <= set(listed)
    assert listed["mine"]["python"]["requirements"] == ["six==1.17.0"]
    envs = workspace.root / "targets/local/envs"
    build = next(p for p in envs.iterdir() if not p.name.startswith(".") and p.is_dir())
    assert cli("env", "prune", "--days", "1")[0] == 0
    assert build.exists()  # built just now: kept
    old = time.time() - 3 * 86400
    os.utime(build / "mltrain-env.json", (old, old))
    # A Spark target's build of the same environment, with the archive packed for its executors.
    spark_envs = workspace.root / "targets/spark-cluster/envs"
    spark_envs.mkdir(parents=True)
    shutil.copytree(build, spark_envs / build.name, symlinks=True)
    (spark_envs / f"{build.name}.tar.gz").write_bytes(b"archive")
    code, out, _ = cli("env", "prune", "--days", "1")
    assert "2 build(s) removed" in out
    assert not build.exists()
    assert list(spark_envs.iterdir()) == [spark_envs / f"{build.name}.lock"]  # build and archive gone


def test_env_show_unknown_name(cli):
    code, _, err = cli("env", "show", "mltrain-sklern")
    assert code == 1 and "Did you mean 'mltrain-sklearn'" in err


# -- progress ----------------------------------------------------------------------------------


def test_build_progress_follows_the_build_log():
    feedback = Feedback(True, lambda line: None)
    assert feedback.progress is not None
    feedback.progress.console.file = io.StringIO()
    with feedback:
        feedback.build_line("mltrain: building environment 01dcb4681c49 with uv")
        feedback.build_line("Resolved 1 package in 112ms")
        task = feedback.progress.tasks[0]
        assert (task.completed, task.description) == (40, "environment: downloading packages")
        feedback.build_line("mltrain: environment 01dcb4681c49 ready in 0.3 s (1 packages)")
        assert feedback.progress.tasks[0].completed == 100
    docker = Feedback(True, lambda line: None)
    docker.progress.console.file = io.StringIO()  # type: ignore[union-attr]
    with docker:
        docker.build_line("#7 [3/4] RUN pip install six")
        assert docker.progress.tasks[0].completed == 75  # type: ignore[union-attr]
    lines: list[str] = []
    plain = Feedback(False, lines.append)
    with plain:
        plain.build_line("Resolved 1 package in 112ms")
        plain.snapshot(1, 2)
    assert lines == ["Resolved 1 package in 112ms"]


def test_snapshot_progress_reports_the_bytes_read_and_is_quiet_on_a_cache_hit(workspace, make_tree):
    src = make_tree({"a.txt": "x" * 100, "big.bin": os.urandom(3 << 20), "b/c.txt": "y"})
    old = time.time() - 60  # older than the stat cache's racy window: the second take trusts the cache
    for p in src.rglob("*"):
        os.utime(p, (old, old))
    calls: list[tuple[int, int]] = []
    workspace.snapshots.take(src, progress=lambda done, total: calls.append((done, total)))
    assert calls[-1] == (101 + (3 << 20), 101 + (3 << 20)) and len(calls) == 3
    assert [c[0] for c in calls] == sorted(c[0] for c in calls)
    calls.clear()
    workspace.snapshots.take(src, progress=lambda done, total: calls.append((done, total)))
    assert calls == []


def test_progress_bars_on_a_terminal(workspace, make_tree, tmp_path):
    src = make_tree(
        {
            "train.py": "print('trained')\n",
            "env.yaml": "python:\n  requirements: [six==1.17.0]\n",
            "d.bin": b"1" * 4096,
        }
    )
    primary, secondary = pty.openpty()
    env = {**os.environ, "COLUMNS": "160", "TERM": "xterm-256color"}
    env.pop("NO_COLOR", None)
    proc = _subprocess_cli(
        workspace, "submit", "--experiment", "tty", "--env", "env.yaml", "--rebuild-env", str(src),
        "train.py", stdout=secondary, stderr=secondary, stdin=subprocess.DEVNULL, env=env,
    )  # fmt: skip
    os.close(secondary)
    chunks = []
    while True:
        try:
            data = os.read(primary, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(primary)
    assert proc.wait(timeout=120) == 0
    screen = b"".join(chunks).decode("utf-8", "replace")
    assert "snapshot: storing" in screen and "environment: ready" in screen and "100%" in screen
    assert "trained" in screen and "mltrain: building environment" in screen


def test_env_show_and_list_mask_secret_variables(cli, workspace):
    Environment(
        name="with-secrets",
        environment_variables={"API_TOKEN": "s3cret1", "DATABASE_URL": "postgresql://app:s3cret2@db/ml"},
    ).register(workspace)
    for argv in (
        ("env", "show", "with-secrets"),
        ("env", "show", "with-secrets", "--json"),
        ("env", "list", "--json"),
    ):
        code, out, _ = cli(*argv)
        assert code == 0
        assert "s3cret" not in out and "postgresql://***@db/ml" in out, argv


def test_submit_says_which_secret_files_it_left_out(cli, make_tree):
    src = make_tree({"train.py": "print('ok')\n", ".env": "API_TOKEN=x\n", "keys/deploy.pem": "k"})
    code, _, err = cli("submit", "--experiment", "cli", "--run-id", "sec1", str(src), "train.py")
    assert code == 0
    assert "left out of the snapshot as likely secrets: .env, keys/deploy.pem" in err
    assert str(src / ".mltrainignore") in err


# -- workspace show --------------------------------------------------------------------------------


def test_workspace_show_of_the_default_local_workspace(workspace, cli):
    code, out, _ = cli("workspace", "show", "--json")
    facts = json.loads(out)
    assert code == 0
    assert facts["root"] == str(workspace.root)
    assert facts["artifact_store"] == str(workspace.root)
    assert facts["root_is_cache"] is False
    assert facts["artifact_store_ok"] is True
    code, out, _ = cli("workspace", "show")
    assert "(the workspace root)" in out and "ok" in out


def test_workspace_show_checks_an_s3_store_and_masks_secrets(workspace, cli, monkeypatch):
    from tests.conftest import s3_options

    options = s3_options()
    monkeypatch.setenv("MLTRAIN_ARTIFACT_STORE", "s3://mltrain-test/show")
    monkeypatch.setenv("MLTRAIN_DATABASE_URL", f"sqlite:///{workspace.root / 'runs.db'}")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", options["key"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", options["secret"])
    monkeypatch.setenv("AWS_ENDPOINT_URL", options["client_kwargs"]["endpoint_url"])
    code, out, _ = cli("workspace", "show", "--json")
    facts = json.loads(out)
    assert (code, facts["artifact_store_ok"], facts["root_is_cache"]) == (0, True, True)
    assert facts["artifact_store"] == "s3://mltrain-test/show"
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong-secret-5e1f")
    monkeypatch.setenv("MLTRAIN_DATABASE_URL", "postgresql://mltrain:db-pass-9c2@127.0.0.1:1/x")
    code, out, err = cli("workspace", "show")
    assert code == 1
    assert "ArtifactStoreCredentialsRefused" in out and "AWS_SECRET_ACCESS_KEY" in out
    assert "postgresql://mltrain:***@127.0.0.1:1/x" in out
    assert "wrong-secret-5e1f" not in out + err and "db-pass-9c2" not in out + err
