"""Runs the user's script as ``python SCRIPT ARGS...`` would, with mltrain's in-script API available.

Standard library only. ``sys.path[0]`` becomes the script's folder, as Python sets it. The
``azureml`` compatibility package goes at the *end* of ``sys.path``, so an environment that has the
real ``azureml-core`` installed keeps using it.

When the script raises, a one-line summary of the exception goes to ``exception.txt`` in the run
folder (``MLTRAIN_RUN_DIR``), for the run's error; the traceback and exit code stay Python's own.
"""

import os
import runpy
import sys


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    if len(sys.argv) < 2:
        sys.stderr.write("usage: bootstrap.py SCRIPT [ARGS...]\n")
        return 2
    script = sys.argv[1]
    path = os.path.abspath(script)
    sys.argv = sys.argv[1:]
    sys.path[0] = os.path.dirname(path)
    sys.path.append(os.path.join(here, "compat"))
    try:
        runpy.run_path(path, run_name="__main__")
    except SystemExit:
        raise
    except BaseException as exc:
        _record(exc)
        raise
    return 0


EXCEPTION_FILE = "exception.txt"
_TRACEBACK = "Traceback (most recent call last):"


def summarize(exc):
    """``Type: message`` on one line, with the cause a Spark exception carries on later lines: the
    Java exception of a Py4JJavaError, the last line of a Python worker's traceback."""
    lines = [line for line in str(exc).splitlines() if line.strip()]
    text = type(exc).__name__
    if lines:
        text += ": " + lines[0].strip()
        if len(lines) > 1 and lines[1].startswith(": "):  # py4j: ": org.apache...Exception: reason"
            text += " " + lines[1][2:].strip()
        elif _TRACEBACK in lines:  # a remote traceback in the message (pyspark's PythonException)
            last = len(lines) - 1 - lines[::-1].index(_TRACEBACK)
            ends = [line for line in lines[last + 1 :] if not line[:1].isspace()]
            if ends:
                text += " " + ends[-1].strip()
    return text[:2000]


def _record(exc):
    run_dir = os.environ.get("MLTRAIN_RUN_DIR")
    if not run_dir:
        return
    try:
        text = summarize(exc)
    except Exception:  # an exception whose __str__ fails: its type still says something
        text = type(exc).__name__
    tmp = os.path.join(run_dir, ".%s.%d" % (EXCEPTION_FILE, os.getpid()))
    try:
        with open(tmp, "w", encoding="utf-8", errors="replace") as f:
            f.write(text)
        os.replace(tmp, os.path.join(run_dir, EXCEPTION_FILE))
    except OSError:
        return  # never hide the script's own exception behind this one


if __name__ == "__main__":
    sys.exit(main())
