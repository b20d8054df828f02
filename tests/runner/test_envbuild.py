"""runner/envbuild.py: the environment builder that runs on a target (stdlib only)."""

from __future__ import annotations

import gc
import sys
import warnings

from airflow_provider_mltrain.runner import envbuild


def test_stream_sends_each_line_and_leaves_no_pipe_open():
    lines: list[str] = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        code, tail = envbuild._stream([sys.executable, "-c", "print('one'); print('two')"], lines.append)
        gc.collect()
    assert code == 0 and lines[1:] == ["one", "two"] and tail == "one\ntwo"
    # gc.collect() may also report other tests' leftovers: only a pipe of _stream's counts here.
    leaks = [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)]
    assert [m for m in leaks if "BufferedReader" in m] == []


def test_stream_returns_the_exit_code_of_a_failed_command():
    code, tail = envbuild._stream([sys.executable, "-c", "import sys; print('bad'); sys.exit(3)"], print)
    assert (code, tail) == (3, "bad")
