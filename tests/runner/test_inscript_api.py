"""The in-script ``mltrain`` module, run by hand (offline) and against a metrics file."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from airflow_provider_mltrain.runner import RUNNER_DIR

PYLIB = os.path.join(RUNNER_DIR, "pylib")


def run_script(code: str, env: dict[str, str] | None = None, cwd: Path | None = None):
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MLTRAIN_")}
    clean["PYTHONPATH"] = PYLIB
    return subprocess.run(
        [sys.executable, "-c", code], env={**clean, **(env or {})}, capture_output=True, text=True, cwd=cwd
    )


def test_offline_run_keeps_metrics_in_memory():
    proc = run_script(
        "import logging; logging.basicConfig(level=logging.INFO)\n"
        "from mltrain import Run\n"
        "run = Run.get_context()\n"
        "assert run.offline and run.id.startswith('OfflineRun')\n"
        "run.log('a', 1); run.log('a', 2); run.log_row('t', x=1)\n"
        "print(run.get_metrics())\n"
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "{'a': [1, 2], 't': {'x': [1]}}"
    assert "mltrain offline run" in proc.stderr


def test_offline_refused_when_not_allowed():
    proc = run_script("from mltrain import Run\nRun.get_context(allow_offline=False)\n")
    assert proc.returncode == 1 and "not running inside an mltrain run" in proc.stderr


def test_records_are_json_lines_with_step_and_time(tmp_path):
    metrics = tmp_path / "metrics.jsonl"
    env = {
        "MLTRAIN_RUN_ID": "r1",
        "MLTRAIN_EXPERIMENT": "e",
        "MLTRAIN_METRICS_FILE": str(metrics),
        "MLTRAIN_RUN_DIR": str(tmp_path),
    }
    proc = run_script(
        "from mltrain import Run\n"
        "run = Run.get_context()\n"
        "run.log('loss', 0.5, step=3, description='train loss')\n"
        "run.log_table('tbl', {'x': [1, 2], 'y': [3, 4]})\n"
        "run.upload_file('sub/notes.txt', __import__('io').BytesIO(b'hi'))\n"
        "print(run.id, run.experiment.name, run.get_metrics())\n",
        env,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "r1 e {'loss': 0.5, 'tbl': {'x': [1, 2], 'y': [3, 4]}}"
    records = [json.loads(line) for line in metrics.read_text().splitlines()]
    assert records[0]["step"] == 3 and records[0]["description"] == "train loss" and records[0]["time"] > 0
    # Azure ML's names: the file is the run file "sub/notes.txt", kept apart from ./outputs.
    assert (tmp_path / "uploads/sub/notes.txt").read_bytes() == b"hi"


@pytest.mark.parametrize("name", ["../escape.txt", "/abs.txt", "a/../../b", "outputs"])
def test_upload_file_names_stay_in_the_run(tmp_path, name):
    proc = run_script(
        f"from mltrain import Run\nRun.get_context().upload_file({name!r}, 'x')\n",
        _online(tmp_path),
        cwd=tmp_path,
    )
    assert proc.returncode == 1 and "ValueError: mltrain: run file name" in proc.stderr, proc.stderr
    assert not (tmp_path / "uploads").exists()


def _online(tmp_path: Path) -> dict[str, str]:
    return {
        "MLTRAIN_RUN_ID": "r1",
        "MLTRAIN_EXPERIMENT": "e",
        "MLTRAIN_METRICS_FILE": str(tmp_path / "metrics.jsonl"),
        "MLTRAIN_RUN_DIR": str(tmp_path),
    }


@pytest.mark.parametrize(
    ("call", "message"),
    [
        ("run.log('m', 1, step=float('nan'))", "the step of metric 'm' must be a whole number; got nan"),
        ("run.log('m', 1, step=float('inf'))", "the step of metric 'm' must be a whole number; got inf"),
        (
            "run.log('m', 1, step=2**63)",
            "the step of metric 'm' must be between -2**63 and 2**63-1; got a 64-bit number",
        ),
        ("run.log('m', 1, step=-(2**63) - 1)", "the step of metric 'm' must be between -2**63 and 2**63-1"),
        ("run.log('m', 1, step='x')", "the step of metric 'm' must be a whole number; got 'x'"),
        ("run.log('m' * 256, 1)", "a metric name must be at most 255 characters"),
        ("run.log('m', 10**400)", "the value of metric 'm' is too large a number to store"),
    ],
)
def test_out_of_range_values_are_refused_before_anything_is_written(tmp_path, call, message):
    proc = run_script(
        f"from mltrain import Run\nrun = Run.get_context()\n{call}\n", _online(tmp_path), cwd=tmp_path
    )
    assert proc.returncode == 1 and f"ValueError: mltrain: {message}" in proc.stderr, proc.stderr
    assert not (tmp_path / "metrics.jsonl").exists()


def test_edge_steps_are_accepted(tmp_path):
    proc = run_script(
        "from mltrain import Run\nrun = Run.get_context()\n"
        "run.log('m', 1, step=2**63 - 1); run.log('m', 2, step=-(2**63)); run.log('m', 3, step=4.0)\n",
        _online(tmp_path),
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    steps = [json.loads(line)["step"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert steps == [2**63 - 1, -(2**63), 4]


@pytest.mark.parametrize(
    "call",
    [
        "run.set_tags({'airflow.dag_id': 'payroll'})",
        "run.tag('mltrain.rerun_of', 'x')",
        "run.add_properties({'ok': '1', 'airflow.task_id': 'pay'})",
        "run.add_properties({'MLTrain.workspace': '/elsewhere'})",
    ],
)
def test_reserved_tags_and_properties_are_refused(tmp_path, call):
    code = f"from mltrain import Run\nrun = Run.get_context()\n{call}\n"
    for env in (_online(tmp_path), {}):  # in a run, and offline: the same script fails the same way
        proc = run_script(code, env, cwd=tmp_path)
        assert proc.returncode == 1, proc.stderr
        assert "is set by the provider at submission and cannot be set by the script" in proc.stderr
    assert not (tmp_path / "metrics.jsonl").exists()


def test_get_metrics_in_the_script_skips_lines_it_cannot_read(tmp_path):
    (tmp_path / "metrics.jsonl").write_bytes(
        b'not json\n[1]\n{"name": "r", "kind": "row", "value": [1]}\n\xff\n{"name": "a", "value": 1}\n'
    )
    proc = run_script(
        "from mltrain import Run\nrun = Run.get_context()\nrun.log('a', 2)\nprint(run.get_metrics())\n",
        _online(tmp_path),
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "{'r': [1], 'a': [1, 2]}"


def test_register_model_writes_one_request_line_and_refuses_bad_names_at_once(tmp_path):
    (tmp_path / "logs").mkdir()
    env = {
        "MLTRAIN_RUN_ID": "r1",
        "MLTRAIN_EXPERIMENT": "e",
        "MLTRAIN_METRICS_FILE": str(tmp_path / "logs" / "metrics.jsonl"),
        "MLTRAIN_RUN_DIR": str(tmp_path),
    }
    proc = run_script(
        "from mltrain import Run\n"
        "run = Run.get_context()\n"
        "assert run.register_model('churn', './outputs/model.pkl', tags={'a': 1}) is None\n"
        "bad = (('bad name', 'x', None), ('ok', '../x', None), ('ok', 'x', {'mltrain.k': 1}))\n"
        "for name, path, tags in bad:\n"
        "    try:\n"
        "        run.register_model(name, path, tags=tags)\n"
        "    except ValueError as exc:\n"
        "        print(exc)\n",
        env,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    assert "letters, digits" in proc.stdout and "relative to the run folder" in proc.stdout
    assert "reserved" in proc.stdout
    (request,) = [json.loads(line) for line in (tmp_path / "logs" / "models.jsonl").read_text().splitlines()]
    assert request == {
        "model_name": "churn",
        "model_path": "outputs/model.pkl",
        "tags": {"a": "1"},
        "properties": {},
        "description": None,
    }


def test_register_model_offline_writes_nothing(tmp_path):
    proc = run_script(
        "import logging; logging.basicConfig(level=logging.INFO)\n"
        "from mltrain import Run\n"
        "assert Run.get_context().register_model('churn', 'outputs/model.pkl') is None\n",
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    assert "would be registered" in proc.stderr and list(tmp_path.iterdir()) == []


def test_child_runs_offline_and_refusals():
    proc = run_script(
        "from mltrain import Run\n"
        "run = Run.get_context()\n"
        "assert run.parent is None\n"
        "kids = run.create_children(2)\n"
        "assert [k.parent for k in kids] == [run, run] and kids[0].id != kids[1].id\n"
        "kids[0].log('loss', 0.5); kids[0].complete(); kids[1].fail('x')\n"  # fail() on a child does not exit
        "assert kids[0].get_metrics() == {'loss': 0.5} and run.get_metrics() == {}\n"
        "for bad in (lambda: run.create_children(tag_values=['a']), lambda: run.create_children(-1),\n"
        "            lambda: kids[0].child_run()):\n"
        "    try:\n"
        "        bad()\n"
        "    except (ValueError, RuntimeError) as exc:\n"
        "        print(type(exc).__name__, exc)\n"
        "    else:\n"
        "        raise SystemExit('accepted')\n"
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [
        "ValueError mltrain: create_children(tag_values=...) needs tag_key=.",
        "ValueError mltrain: create_children(count) needs a whole number, got -1.",
        "RuntimeError mltrain: a child run cannot create children of its own; create them on the run.",
    ]


def test_a_sweep_child_sees_its_parent(tmp_path):
    proc = run_script(
        "from mltrain import Run\n"
        "run = Run.get_context()\n"
        "print(run.parent.id)\n"
        "run.parent.log('x', 1)\n",  # not recorded: said on stderr, never an error
        env={
            "MLTRAIN_RUN_ID": "sweep1_3",
            "MLTRAIN_PARENT_RUN_ID": "sweep1",
            "MLTRAIN_METRICS_FILE": str(tmp_path / "metrics.jsonl"),
        },
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "sweep1"
    assert "is not recorded" in proc.stderr
    assert not (tmp_path / "metrics.jsonl").exists()


def test_an_azure_call_the_layer_lacks_names_itself_and_what_to_use(tmp_path):
    env = {"MLTRAIN_RUN_ID": "r1", "MLTRAIN_METRICS_FILE": str(tmp_path / "m.jsonl")}
    proc = run_script(
        "from mltrain import Run\n"
        "run = Run.get_context()\n"
        "assert not hasattr(run, 'wait_for_completion')\n"
        "for call in (lambda: run.wait_for_completion(), lambda: run.frobnicate()):\n"
        "    try:\n"
        "        call()\n"
        "    except AttributeError as exc:\n"
        "        print(exc)\n",
        env,
    )
    assert proc.returncode == 0, proc.stderr
    folder, other = proc.stdout.strip().splitlines()
    assert "Run.wait_for_completion is not available" in folder and "From the driver" in folder
    assert "Run.frobnicate is not available" in other and "upload_file" in other


def test_offline_uploads_and_reads_back_and_cancel_ends_the_script(tmp_path):
    proc = run_script(
        "import io, azureml.core\n"
        "from azureml.core import Run\n"
        "run = Run.get_context()\n"
        "run.upload_file('a/b.txt', io.BytesIO(b'kept'))\n"
        "run.download_file('a/b.txt', 'back.txt')\n"
        "print(run.get_file_names(), open('back.txt').read(), run.get_status(), azureml.core.VERSION)\n"
        "print(run.get_details()['runId'] == run.id, run.experiment.workspace.name)\n"
        "try:\n"
        "    Run(run.experiment, 'x')\n"
        "except LookupError as exc:\n"
        "    print(type(exc).__name__)\n"
        "run.cancel()\n"
        "print('not reached')\n",
        env={"PYTHONPATH": PYLIB + os.pathsep + os.path.join(RUNNER_DIR, "compat")},
        cwd=tmp_path,
    )
    assert proc.returncode == 1, proc.stderr
    assert proc.stdout.splitlines() == [
        "['a/b.txt'] kept Running 0+mltrain.compat",
        "True mltrain",
        "RunNotAvailable",
    ]
    assert "canceled by the script" in proc.stderr
