"""Runs the user's script as ``python SCRIPT ARGS...`` would, with mltrain's in-script API available.

Standard library only. ``sys.path[0]`` becomes the script's folder, as Python sets it. The
``azureml`` compatibility package goes at the *end* of ``sys.path``, so an environment that has the
real ``azureml-core`` installed keeps using it.

When the script raises, a one-line summary of the exception goes to ``exception.txt`` in the run
folder (``MLTRAIN_RUN_DIR``), for the run's error; the traceback and exit code stay Python's own.

A plain source file runs as ``runpy.run_path(path, run_name="__main__")`` would run it, without
importing ``runpy``: its ``pkgutil`` imports ``typing`` (through ``functools.singledispatch``),
which cost every run about as much as the interpreter's own start-up. Anything else runpy accepts
(a folder or zip file with ``__main__.py``, compiled code) still goes through runpy.
"""

import io
import os
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
    sys.meta_path.insert(0, AzuremlRunHook(os.path.join(here, "compat")))
    try:
        run_path(path)
    except SystemExit:
        raise
    except BaseException as exc:
        _record(exc)
        raise
    return 0


def run_path(path):
    """``runpy.run_path(path, run_name="__main__")``: the code of the file at ``path`` runs in a
    fresh ``__main__`` module (``__file__`` is ``path``, ``__package__`` empty, no spec or loader),
    with ``sys.argv[0]`` set to ``path``; both are put back afterwards, as runpy does."""
    code = _source_code(path)
    if code is None:  # runpy's own cases: a folder, a zip file, compiled code
        import runpy

        runpy.run_path(path, run_name="__main__")
        return
    module = type(sys)("__main__")
    module.__dict__.update(
        __name__="__main__",
        __file__=path,
        __cached__=None,
        __doc__=None,
        __loader__=None,
        __package__="",
        __spec__=None,
    )
    saved = sys.modules.get("__main__")
    sys.modules["__main__"] = module
    argv0 = sys.argv[0]
    sys.argv[0] = path
    try:
        exec(code, module.__dict__)  # noqa: S102 - the user's own script, as runpy runs it
    finally:
        sys.argv[0] = argv0
        if saved is not None:
            sys.modules["__main__"] = saved
        else:
            del sys.modules["__main__"]


def _source_code(path):
    """The compiled source of ``path`` when runpy would compile it as a source file; None when a
    path hook accepts ``path`` (runpy then imports ``__main__`` from it) or it holds compiled code."""
    if sys.path_importer_cache.get(path) is not None:
        return None
    for hook in sys.path_hooks:  # pkgutil.get_importer, which runpy asks first
        try:
            hook(path)
        except ImportError:
            continue
        return None
    bootstrap = sys.modules.get("_frozen_importlib_external")
    magic = getattr(bootstrap, "MAGIC_NUMBER", None)
    with io.open_code(path) as f:
        source = f.read()
    if magic is None or source[:4] == magic:
        return None
    return compile(source, path, "exec", dont_inherit=True)


class AzuremlRunHook:
    """When the real ``azureml-core`` is installed, route its ``Run.get_context()`` to the mltrain run.

    Its offline run prints "Attempted to log scalar metric" and drops every value; with this hook the
    values land in the run history and the rest of the SDK stays the real one. Says so on stderr.
    """

    TARGET = "azureml.core.run"

    def __init__(self, compat_dir):
        self.compat_dir = os.path.realpath(compat_dir)
        self.busy = False

    def find_spec(self, fullname, path=None, target=None):
        if fullname != self.TARGET or self.busy:
            return None
        import importlib.util

        self.busy = True
        try:
            spec = importlib.util.find_spec(fullname)
        finally:
            self.busy = False
        origin = os.path.realpath(spec.origin) if spec and spec.origin else ""
        if not spec or not spec.loader or origin.startswith(self.compat_dir + os.sep):
            return spec
        run_module = spec.loader.exec_module

        def exec_module(module):
            run_module(module)
            _route_get_context(module)

        spec.loader.exec_module = exec_module
        return spec


def _route_get_context(module):
    real = getattr(module, "Run", None)
    if real is None or not os.environ.get("MLTRAIN_RUN_ID"):
        return
    from mltrain import Run

    def get_context(cls, allow_offline=True, used_for_context_manager=False, **kwargs):
        return Run.get_context()

    real.get_context = classmethod(get_context)
    sys.stderr.write(
        "mltrain: the real azureml-core is installed in this environment; azureml.core.Run.get_context() "
        "returns the mltrain run, so what the script logs lands in the run history.\n"
    )


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
