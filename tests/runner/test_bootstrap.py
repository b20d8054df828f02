"""The bootstrap: the script run as ``runpy.run_path`` runs it, and its one-line summary of the
exception a script ended with (the run's error)."""

from __future__ import annotations

import json
import os
import py_compile
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from airflow_provider_mltrain.runner import bootstrap
from airflow_provider_mltrain.runner.bootstrap import summarize


def test_a_plain_exception_is_its_type_and_first_line():
    assert summarize(ValueError("bad data\nmore detail")) == "ValueError: bad data"
    assert summarize(KeyError("x")) == "KeyError: 'x'"
    assert summarize(RuntimeError()) == "RuntimeError"


class Py4JJavaError(Exception):
    """py4j's: its message is the call, then the Java exception, then the JVM stack."""


class PythonException(Exception):
    """pyspark's: a Python worker's traceback inside the message."""


def test_a_py4j_error_carries_the_java_exception():
    exc = Py4JJavaError(
        "An error occurred while calling o42.collect.\n"
        ": org.apache.spark.SparkException: Job aborted due to stage failure: executor lost\n"
        "\tat org.apache.spark.scheduler.DAGScheduler.failJobAndIndependentStages(DAGScheduler.scala:1)\n"
        "Caused by: java.io.IOException: boom\n"
    )
    assert summarize(exc) == (
        "Py4JJavaError: An error occurred while calling o42.collect. "
        "org.apache.spark.SparkException: Job aborted due to stage failure: executor lost"
    )


def test_a_remote_python_traceback_ends_with_its_exception():
    exc = PythonException(
        "An exception was thrown from the Python worker:\n"
        "Traceback (most recent call last):\n"
        '  File "job.py", line 5, in ratio\n'
        "    return 1 / (x - x)\n"
        "ZeroDivisionError: division by zero\n"
    )
    assert summarize(exc) == (
        "PythonException: An exception was thrown from the Python worker: ZeroDivisionError: division by zero"
    )


def test_the_summary_is_bounded():
    assert len(summarize(ValueError("x" * 10_000))) == 2000


# -- running the script as runpy.run_path would ---------------------------------------------------

BOOTSTRAP = str(Path(bootstrap.__file__))
PROBE = """\
# -*- coding: latin-1 -*-
import json, pickle, sys
class Thing:
    pass
main = sys.modules["__main__"]
print(json.dumps({
    "name": __name__, "file": __file__, "package": __package__, "spec": repr(__spec__),
    "loader": repr(__loader__), "cached": __cached__, "doc": __doc__, "argv": sys.argv,
    "main_is_globals": main.__dict__ is globals(), "pickled": len(pickle.dumps(Thing())) > 0,
    "code_file": sys._getframe().f_code.co_filename, "text": "\xe9",
    "globals": sorted(globals()), "runpy": "runpy" in sys.modules, "pkgutil": "pkgutil" in sys.modules,
}))
"""
# The reference: runpy itself, as the bootstrap called it before.
RUNPY = "import runpy, sys; sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__')"


def _run(argv, cwd):
    done = subprocess.run([sys.executable, *argv], cwd=cwd, capture_output=True, text=True, timeout=60)
    return done


def test_a_source_file_runs_as_runpy_runs_it_without_importing_runpy(tmp_path):
    script = tmp_path / "probe.py"
    script.write_bytes(PROBE.encode("latin-1"))
    ours = _run([BOOTSTRAP, str(script), "a", "--b"], tmp_path)
    theirs = _run(["-c", RUNPY, str(script), "a", "--b"], tmp_path)
    assert ours.returncode == theirs.returncode == 0, ours.stderr + theirs.stderr
    got, want = json.loads(ours.stdout), json.loads(theirs.stdout)
    assert got["runpy"] is False and got["pkgutil"] is False
    assert want["runpy"] is True
    del got["runpy"], got["pkgutil"], want["runpy"], want["pkgutil"]
    assert got == want
    assert got["argv"] == [str(script), "a", "--b"] and got["text"] == "\xe9"


def test_a_failing_script_keeps_its_traceback_exit_code_and_summary(tmp_path):
    script = tmp_path / "fail.py"
    script.write_text("import sys\n\ndef f():\n    raise ValueError('bad data')\n\nf()\n")
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    done = subprocess.run(
        [sys.executable, BOOTSTRAP, str(script)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={**os.environ, "MLTRAIN_RUN_DIR": str(run_dir)},
        timeout=60,
    )
    assert done.returncode == 1
    assert f'File "{script}", line 4, in f' in done.stderr
    assert f'File "{script}", line 6, in <module>' in done.stderr
    assert done.stderr.rstrip().endswith("ValueError: bad data")
    assert (run_dir / "exception.txt").read_text() == "ValueError: bad data"
    exit_script = tmp_path / "exit.py"
    exit_script.write_text("import sys\nsys.exit(7)\n")
    assert subprocess.run([sys.executable, BOOTSTRAP, str(exit_script)], timeout=60).returncode == 7


def test_main_module_and_argv0_are_put_back(tmp_path, monkeypatch):
    script = tmp_path / "s.py"
    script.write_text("import sys\nSEEN = (sys.argv[0], sys.modules['__main__'].__dict__ is globals())\n")
    before = sys.modules["__main__"]
    monkeypatch.setattr(sys, "argv", ["first", "x"])
    seen = {}
    real_exec = exec

    def spying_exec(code, namespace):
        real_exec(code, namespace)
        seen.update(namespace)

    monkeypatch.setattr(bootstrap, "exec", spying_exec, raising=False)
    bootstrap.run_path(str(script))
    assert seen["SEEN"] == (str(script), True)
    assert sys.modules["__main__"] is before and sys.argv == ["first", "x"]


@pytest.mark.parametrize("kind", ["folder", "zip", "compiled"])
def test_what_only_runpy_runs_still_goes_through_runpy(tmp_path, kind):
    body = "import sys\nprint('ran', __name__, sys.argv[1:])\n"
    if kind == "folder":
        path = tmp_path / "app"
        path.mkdir()
        (path / "__main__.py").write_text(body)
    elif kind == "zip":
        path = tmp_path / "app.pyz"
        with zipfile.ZipFile(path, "w") as zf:
            zf.writestr("__main__.py", body)
    else:
        source = tmp_path / "app_src.py"
        source.write_text(body)
        path = tmp_path / "app.pyc"
        py_compile.compile(str(source), cfile=str(path), doraise=True)
    done = _run([BOOTSTRAP, str(path), "x"], tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "ran __main__ ['x']\n"
