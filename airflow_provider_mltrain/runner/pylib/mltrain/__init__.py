"""The in-script API: ``from mltrain import Run; run = Run.get_context(); run.log("accuracy", 0.93)``.

Standard library only, any Python >= 3.9; the run supervisor puts this package on ``PYTHONPATH``
on every target. Inside a run, each logged value is appended as one JSON line to the run's
``logs/metrics.jsonl`` (one ``write`` per line, so several processes may log at once). Outside a
run, ``Run.get_context()`` returns an offline run that keeps values in memory and logs them with
``logging``, so the same script runs unchanged on a laptop.
"""

from __future__ import annotations

import json
import logging
import numbers
import os
import re
import shutil
import threading
import time

__all__ = ["Experiment", "Run"]

log = logging.getLogger("mltrain")

# What the controller stores (see core/metrics.py): a line outside these limits is skipped there,
# so the API refuses it here, where the script can still be fixed.
MAX_NAME = 255
STEP_MIN, STEP_MAX = -(2**63), 2**63 - 1
RESERVED_PREFIXES = ("airflow.", "mltrain.")
# The model registry's rule (core/model.py): checked here too, so the script learns at once.
_MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,254}")
MODEL_REQUESTS = "models.jsonl"
# Child runs a script creates (run.child_run()): one JSON line per creation or end in
# logs/children.jsonl, and each child's metrics in logs/children/<index>/metrics.jsonl. The
# controller turns them into child runs in the run store (core/child_runs.py).
CHILDREN = "children.jsonl"
CHILDREN_DIR = "children"
MAX_CHILDREN = 1000


def _plain(value, what):
    """A JSON-ready copy of value: numpy scalars and arrays become Python numbers and lists."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, numbers.Integral):
        try:
            float(value)
        except OverflowError:
            raise ValueError(
                "mltrain: %s is too large a number to store (%d bits; a float holds up to about 1e308)."
                % (what, int(value).bit_length())
            ) from None
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value)
    if hasattr(value, "tolist"):
        return _plain(value.tolist(), what)
    if hasattr(value, "item") and callable(value.item):
        return _plain(value.item(), what)
    if isinstance(value, (list, tuple)):
        return [_plain(v, what) for v in value]
    raise TypeError(
        "mltrain: %s must be a number, a string, a bool or a list of those; got %s. "
        "Convert it first (for example float(x))." % (what, type(value).__name__)
    )


class Experiment:
    def __init__(self, name):
        self.name = name

    def __repr__(self):
        return "Experiment(name=%r)" % self.name


class Run:
    """The run a script is part of. Get it with ``Run.get_context()``."""

    _context = None
    _context_lock = threading.Lock()

    def __init__(self, run_id, experiment_name, metrics_file=None, run_dir=None):
        self.id = run_id
        self.experiment = Experiment(experiment_name)
        self._metrics_file = metrics_file
        self._run_dir = run_dir
        self._offline_metrics = []
        self._tags = {}
        self._properties = {}
        self._parent = None
        self._child_index = None  # set on a child this script created

    # -- obtaining the run ---------------------------------------------------------------------

    @classmethod
    def get_context(cls, allow_offline=True, **_ignored):
        """The current run; outside a run, an offline run (or RuntimeError with allow_offline=False)."""
        with cls._context_lock:
            run_id = os.environ.get("MLTRAIN_RUN_ID")
            if cls._context is not None and cls._context.id == (run_id or cls._context.id):
                return cls._context
            if run_id:
                cls._context = cls(
                    run_id,
                    os.environ.get("MLTRAIN_EXPERIMENT", ""),
                    os.environ.get("MLTRAIN_METRICS_FILE"),
                    os.environ.get("MLTRAIN_RUN_DIR"),
                )
            elif allow_offline:
                cls._context = _OfflineRun()
            else:
                raise RuntimeError("mltrain: this script is not running inside an mltrain run.")
            return cls._context

    @property
    def offline(self):
        return self._metrics_file is None

    @property
    def input_datasets(self):
        """The run's inputs, name -> local path (Azure ML v1's ``run.input_datasets``); {} offline."""
        if self.offline:
            return {}
        try:
            value = json.loads(os.environ.get("MLTRAIN_INPUTS") or "{}")
        except ValueError:
            return {}
        return {str(k): str(v) for k, v in value.items()} if isinstance(value, dict) else {}

    @property
    def display_name(self):
        return self.id

    def __repr__(self):
        return "Run(id=%r, experiment=%r)" % (self.id, self.experiment.name)

    # -- logging -------------------------------------------------------------------------------

    def _emit(self, kind, name, value, step=None, description=""):
        if not isinstance(name, str) or not name:
            raise TypeError("mltrain: a metric name must be a non-empty string, got %r" % (name,))
        if len(name) > MAX_NAME:
            raise ValueError(
                "mltrain: a metric name must be at most %d characters; %r... has %d."
                % (MAX_NAME, name[:40], len(name))
            )
        record = {"name": name, "kind": kind, "value": value, "step": step, "time": time.time()}
        if description:
            record["description"] = str(description)
        if self.offline:
            self._offline_metrics.append(record)
            log.info(
                "mltrain offline run: %s %s = %r%s", kind, name, value, "" if step is None else " @%s" % step
            )
            return
        line = json.dumps(record, allow_nan=True, separators=(",", ":")) + "\n"
        data = line.encode("utf-8")
        fd = os.open(self._metrics_file, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, data)
        finally:
            os.close(fd)

    def log(self, name, value, description="", step=None):
        """Log one value; logging the same name again makes a series (a chart over steps)."""
        value = _plain(value, "the value of metric %r" % name)
        if isinstance(value, list):
            raise TypeError("mltrain: run.log(%r, ...) takes one value; use run.log_list for a list." % name)
        self._emit("scalar", name, value, _step(step, name), description)

    def log_list(self, name, value, description=""):
        """Log a list of values under one name."""
        value = _plain(list(value), "the values of metric %r" % name)
        self._emit("list", name, value, None, description)

    def log_row(self, name, description=None, **kwargs):
        """Log one row of a table: ``run.log_row("epoch", n=1, loss=0.3)``."""
        row = {str(k): _plain(v, "column %r of %r" % (k, name)) for k, v in kwargs.items()}
        self._emit("row", name, row, None, description or "")

    def log_table(self, name, value, description=""):
        """Log a table as columns: ``run.log_table("t", {"x": [1, 2], "y": [3, 4]})``."""
        table = {str(k): _plain(list(v), "column %r of %r" % (k, name)) for k, v in dict(value).items()}
        self._emit("table", name, table, None, description)

    def log_image(self, name, path=None, plot=None, description=""):
        """Keep an image (a file, or a matplotlib figure/pyplot) as ``outputs/images/<name>.png``."""
        folder = (
            os.path.join(self._run_dir or ".", "snapshot", "outputs", "images") if self._run_dir else None
        )
        if self.offline or folder is None:
            self._emit("image", name, path or "<plot>", None, description)
            return
        os.makedirs(folder, exist_ok=True)
        base = "".join(c if c.isalnum() or c in "-_." else "_" for c in name) or "image"
        if path is not None:
            ext = os.path.splitext(str(path))[1] or ".png"
            dest = os.path.join(folder, base + ext)
            shutil.copyfile(str(path), dest)
        elif plot is not None:
            dest = os.path.join(folder, base + ".png")
            plot.savefig(dest)
        else:
            raise TypeError("mltrain: run.log_image(%r) needs path= or plot=." % name)
        self._emit("image", name, "outputs/images/" + os.path.basename(dest), None, description)

    # -- tags and properties -------------------------------------------------------------------

    def set_tags(self, tags):
        tags = {str(k): "" if v is None else str(v) for k, v in dict(tags).items()}
        _refuse_reserved(tags, "tag")
        self._tags.update(tags)
        self._emit("tags", "tags", tags)

    def tag(self, key, value=None):
        self.set_tags({key: value})

    def get_tags(self):
        return dict(self._tags)

    def add_properties(self, properties):
        props = {str(k): str(v) for k, v in dict(properties).items()}
        _refuse_reserved(props, "property")
        self._properties.update(props)
        self._emit("properties", "properties", props)

    def get_properties(self):
        return dict(self._properties)

    # -- files ---------------------------------------------------------------------------------

    def upload_file(self, name, path_or_stream):
        """Copy a file into the run's outputs as ``name`` (a relative path under ``outputs/``)."""
        name = str(name)
        if name.startswith("outputs/"):
            name = name[len("outputs/") :]
        parts = name.replace("\\", "/").split("/")
        if not name or os.path.isabs(name) or ".." in parts:
            raise ValueError("mltrain: upload_file name %r must be a relative path inside outputs/." % name)
        dest = os.path.join("outputs", *parts)
        os.makedirs(os.path.dirname(dest) or ".", exist_ok=True)
        if hasattr(path_or_stream, "read"):
            with open(dest, "wb") as out:
                shutil.copyfileobj(path_or_stream, out)
        else:
            shutil.copyfile(str(path_or_stream), dest)

    # -- models --------------------------------------------------------------------------------

    def register_model(self, model_name, model_path=None, tags=None, properties=None, description=None):
        """Ask for the file or folder ``model_path`` this run writes (``outputs/model.pkl``;
        default: ``model_name``) to be registered as the next version of model ``model_name``.

        Azure ML v1's signature. The model is registered when the run's files are collected after
        the run ends (the file must exist then), linked to this run; this call returns None. A
        name or path the registry would refuse raises ValueError here, at once.
        """
        if not isinstance(model_name, str) or not _MODEL_NAME.fullmatch(model_name):
            raise ValueError(
                "mltrain: model name %r is refused: 1 to 255 characters: letters, digits, '-', '_' "
                "and '.', starting with a letter or digit." % (model_name,)
            )
        path = model_name if model_path is None else str(model_path)
        parts = [p for p in path.replace("\\", "/").split("/") if p not in ("", ".")]
        if not parts or os.path.isabs(path) or ".." in parts:
            raise ValueError(
                "mltrain: model_path %r must be a path relative to the run folder, e.g. 'outputs/model.pkl'."
                % path
            )
        tags = {str(k): "" if v is None else str(v) for k, v in dict(tags or {}).items()}
        props = {str(k): str(v) for k, v in dict(properties or {}).items()}
        _refuse_reserved(tags, "model tag")
        _refuse_reserved(props, "model property")
        request = {
            "model_name": model_name,
            "model_path": "/".join(parts),
            "tags": tags,
            "properties": props,
            "description": None if description is None else str(description),
        }
        if self.offline:
            log.info("mltrain offline run: model %s (%s) would be registered", model_name, path)
            return None
        folder = os.path.dirname(self._metrics_file)
        data = (json.dumps(request, separators=(",", ":")) + "\n").encode("utf-8")
        fd = os.open(os.path.join(folder, MODEL_REQUESTS), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, data)
        finally:
            os.close(fd)
        return None

    # -- child runs ----------------------------------------------------------------------------

    @property
    def parent(self):
        """The run this one is a child of (the sweep of a sweep child; the run that created a
        child run), or None. A sweep's parent is a handle for its id only: values logged to it
        are not recorded (log them on the child)."""
        if self._parent is None and self._child_index is None:
            parent_id = os.environ.get("MLTRAIN_PARENT_RUN_ID")
            if (
                parent_id
                and not self.offline
                and self._metrics_file == os.environ.get("MLTRAIN_METRICS_FILE")
            ):
                self._parent = _ParentHandle(parent_id, self.experiment.name)
        return self._parent

    def child_run(self, name=None, run_id=None, outputs=None):
        """Create a child run of this run and return it: log to it as to any run; it shows under
        this run once the controller reads it, and ends with ``complete()``/``fail()`` or, at the
        latest, with this run. ``run_id`` and ``outputs`` are accepted for Azure ML's signature;
        the id is always ``<this run's id>_<n>``."""
        if self._child_index is not None:
            raise RuntimeError(
                "mltrain: a child run cannot create children of its own; create them on the run."
            )
        if self.offline:
            child = _OfflineRun()
            child.id = "%s_%d" % (self.id, len(getattr(self, "_offline_children", [])))
            child._parent = self
            child._child_index = 0
            self.__dict__.setdefault("_offline_children", []).append(child)
            log.info("mltrain offline run: child run %s created", child.id)
            return child
        logs = os.path.dirname(self._metrics_file)
        folder = os.path.join(logs, CHILDREN_DIR)
        os.makedirs(folder, exist_ok=True)
        for index in range(MAX_CHILDREN):
            try:
                os.mkdir(os.path.join(folder, str(index)))  # atomic: each index is taken once
                break
            except FileExistsError:
                continue
        else:
            raise RuntimeError("mltrain: a run can create at most %d child runs." % MAX_CHILDREN)
        child = Run(
            "%s_%d" % (self.id, index),
            self.experiment.name,
            os.path.join(folder, str(index), "metrics.jsonl"),
            self._run_dir,
        )
        child._parent = self
        child._child_index = index
        self._child_event(index, "created", name=None if name is None else str(name)[:255])
        return child

    def create_children(self, count=None, tag_key=None, tag_values=None):
        """Create ``count`` child runs (or one per value of ``tag_values``, tagged ``tag_key``)."""
        if tag_values is not None:
            values = list(tag_values)
            if tag_key is None:
                raise ValueError("mltrain: create_children(tag_values=...) needs tag_key=.")
        else:
            if not isinstance(count, int) or isinstance(count, bool) or count < 0:
                raise ValueError("mltrain: create_children(count) needs a whole number, got %r." % (count,))
            values = [None] * count
        children = []
        for value in values:
            child = self.child_run()
            if tag_key is not None:
                child.tag(tag_key, value)
            children.append(child)
        return children

    def _child_event(self, index, event, **fields):
        record = {"child": index, "event": event, "time": time.time()}
        record.update({k: v for k, v in fields.items() if v is not None})
        path = os.path.join(os.path.dirname(self._metrics_file), CHILDREN)
        data = (json.dumps(record, separators=(",", ":")) + "\n").encode("utf-8")
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, data)
        finally:
            os.close(fd)

    # -- metrics read-back ---------------------------------------------------------------------

    def get_metrics(self, name=None):
        """Metrics logged so far in this process's run, in the shape ``Run.get_metrics`` returns."""
        if self.offline:
            records = list(self._offline_metrics)
        else:
            records = []
            try:
                with open(self._metrics_file, "rb") as f:
                    for line in f:
                        if line.endswith(b"\n"):
                            records.append(_record(line))
            except FileNotFoundError:
                pass
        return summarize(records, name)

    # -- lifecycle (the supervisor owns the run's state; these exist for compatibility) ----------

    def complete(self, *_args, **_kwargs):
        """On a child run: it ended Completed. On the script's own run: nothing (the run ends
        with the script)."""
        if self._child_index is not None and not self.offline:
            self._parent._child_event(self._child_index, "completed")

    def flush(self, *_args, **_kwargs):
        pass

    def fail(self, error_details=None, *_args, **_kwargs):
        """On a child run: it ended Failed (the script goes on). On the script's own run: exit."""
        if self._child_index is not None:
            if not self.offline:
                self._parent._child_event(
                    self._child_index, "failed", error=str(error_details or "fail() called")
                )
            return
        raise SystemExit("run marked failed: %s" % (error_details or "fail() called"))

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if self._child_index is not None:
            if exc_type is None:
                self.complete()
            else:
                self.fail("%s: %s" % (exc_type.__name__, exc))
        return False

    def __getattr__(self, name):
        """Azure ML v1 ``Run`` names this API lacks: an error that says what to use instead."""
        if name.startswith("_"):
            raise AttributeError(name)
        instead = _INSTEAD.get(name)
        raise AttributeError(
            "mltrain: Run.%s is not available inside an mltrain run (mltrain's in-script API, also "
            "behind 'from azureml.core import Run'). %s"
            % (name, instead or "Available: %s." % ", ".join(sorted(_public(type(self)))))
        )


_DRIVER = (
    "From the driver (Airflow, a notebook), Run(workspace, run_id).%s() does this once the run is followed."
)
_OUTPUTS = "Write the files under ./outputs (collected with the run), or call run.upload_file per file."
_INSTEAD = {
    "upload_folder": _OUTPUTS,
    "upload_files": _OUTPUTS,
    "download_file": "Inside the run, read the file where the script wrote it; " + _DRIVER % "download_file",
    "download_files": "Inside the run, read the files where the script wrote them; "
    + _DRIVER % "download_files",
    "get_file_names": "Inside the run, list ./outputs; " + _DRIVER % "get_file_names",
    "get_status": "A running script is Running; " + _DRIVER % "get_status",
    "get_details": _DRIVER % "get_details",
    "get_details_with_logs": _DRIVER % "get_details",
    "wait_for_completion": _DRIVER % "wait_for_completion",
    "cancel": "To stop, end the script (sys.exit); " + _DRIVER % "cancel",
    "get_children": "Inside the run, keep the children run.child_run() and run.create_children() "
    "return; " + _DRIVER % "get_children",
    "log_confusion_matrix": "Log it with run.log_table(name, {...}) or save it as JSON under ./outputs.",
    "log_accuracy_table": "Log it with run.log_table(name, {...}) or save it as JSON under ./outputs.",
    "log_predictions": "Log it with run.log_table(name, {...}) or save it as JSON under ./outputs.",
    "log_residuals": "Log it with run.log_table(name, {...}) or save it as JSON under ./outputs.",
    "get_environment": "The run's environment is recorded at submission: " + _DRIVER % "get_details",
    "register_model_with_datasets": "Use run.register_model(model_name, model_path).",
}


def _public(cls):
    return [n for n in dir(cls) if not n.startswith("_")]


def _record(line):
    """One line of the metrics file, or None when it is not one: anything may have written it."""
    try:
        rec = json.loads(line)
    except (ValueError, RecursionError):
        return None
    return rec if isinstance(rec, dict) and isinstance(rec.get("name"), str) else None


def _step(step, name):
    """``step`` as an int the run store can hold, or a ValueError saying why not."""
    if step is None:
        return None
    try:
        number = int(step)
    except (TypeError, ValueError, OverflowError):
        raise ValueError(
            "mltrain: the step of metric %r must be a whole number; got %s." % (name, repr(step)[:40])
        ) from None
    if not STEP_MIN <= number <= STEP_MAX:
        raise ValueError(
            "mltrain: the step of metric %r must be between -2**63 and 2**63-1; got a %d-bit number."
            % (name, number.bit_length())
        )
    return number


def _refuse_reserved(pairs, what):
    for key in pairs:
        if key.lower().startswith(RESERVED_PREFIXES):
            raise ValueError(
                "mltrain: %s %r is set by the provider at submission and cannot be set by the script; "
                "airflow.* and mltrain.* names are reserved. Pick another name." % (what, key)
            )


class _ParentHandle(Run):
    """A sweep child's parent: its id, nothing recorded through it."""

    def _emit(self, kind, name, value, step=None, description=""):
        log.warning(
            "mltrain: %s %r logged on the parent run %s is not recorded; log it on this run.",
            kind,
            name,
            self.id,
        )


class _OfflineRun(Run):
    def __init__(self):
        Run.__init__(self, "OfflineRun_%d" % int(time.time()), "offline")


def summarize(records, name=None):
    """Group metric records by name: one value, or a list for a series (``get_metrics`` shape)."""
    out = {}
    kinds = {}
    for rec in records:
        if rec is None:
            continue
        key = rec.get("name")
        kind = rec.get("kind")
        if kind in ("tags", "properties") or (name is not None and key != name):
            continue
        value = rec.get("value")
        first_kind = kinds.setdefault(key, kind)
        if first_kind != kind or first_kind == "mixed":
            # One name used for two kinds of value: keep everything, in order, as a plain list.
            prev = out.get(key)
            out[key] = (prev if isinstance(prev, list) and first_kind != "list" else [prev]) + [value]
            kinds[key] = "mixed"
        elif kind == "row" and isinstance(value, dict) and isinstance(out.get(key, {}), dict):
            table = out.setdefault(key, {})
            for col, v in value.items():
                table.setdefault(col, []).append(v)
        elif kind in ("table", "list"):
            out[key] = value
        elif key in out:
            prev = out[key]
            out[key] = (prev if isinstance(prev, list) else [prev]) + [value]
        else:
            out[key] = value
    return out
