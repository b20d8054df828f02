"""The in-script API: ``from mltrain import Run; run = Run.get_context(); run.log("accuracy", 0.93)``.

Standard library only, any Python >= 3.9; the run supervisor puts this package on ``PYTHONPATH``
on every target. Inside a run, each logged value is appended as one JSON line to the run's
``logs/metrics.jsonl`` (one ``write`` per line, so several processes may log at once). Outside a
run, ``Run.get_context()`` returns an offline run that keeps values in memory and logs them with
``logging``, so the same script runs unchanged on a laptop.
"""

from __future__ import annotations

import datetime
import json
import logging
import numbers
import os
import re
import shutil
import stat
import threading
import time

__all__ = ["Experiment", "Run", "RunNotAvailable", "Workspace"]

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
# Files the script uploads under a name of its own (upload_file("a/b.txt")) live in
# <run folder>/uploads/a/b.txt and are the run file "a/b.txt"; names under outputs/ and logs/ are
# files of those folders. core/runfiles.py maps names the same way on the controller's side.
UPLOADS = "uploads"
FOLDERS = ("outputs", "logs")
CANCEL = "cancel_requested"
# Azure ML v1's typed metrics (log_confusion_matrix, ...): their value is a JSON object
# {"schema_type": <kind>, "schema_version": "...", "data": {...}}, stored as a record of that kind.
TYPED_KINDS = {
    "confusion_matrix": ("class_labels", "matrix"),
    "accuracy_table": ("probability_tables", "percentile_tables", "probability_thresholds", "percentiles"),
    "predictions": ("bin_averages", "bin_errors", "bin_counts", "bin_edges"),
    "residuals": ("bin_edges", "bin_counts"),
}
_READ_LIMIT = 1 << 20


class RunNotAvailable(LookupError):
    """``Run(experiment, run_id)`` inside a run named a run this script cannot reach."""


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


class Workspace:
    """What ``run.experiment.workspace`` is inside a run: a name only. The workspace (run store,
    artifact store, connections) belongs to the controller; a script reaches data through the run's
    inputs (``run.input_datasets``), never through the workspace."""

    def __init__(self, name=None):
        self.name = name or os.environ.get("MLTRAIN_WORKSPACE_NAME") or "mltrain"
        self.subscription_id = None
        self.resource_group = None
        self.location = None

    def get_details(self):
        return {"name": self.name, "id": None, "location": None}

    def __repr__(self):
        return "Workspace(name=%r)" % self.name

    def __getattr__(self, name):
        if name.startswith("_"):
            raise AttributeError(name)
        raise AttributeError(
            "mltrain: Workspace.%s is not available inside an mltrain run: the workspace belongs to the "
            "controller. Pass data to the script as run inputs (ScriptRunConfig(inputs=...), read "
            "run.input_datasets) or as arguments." % name
        )


class Experiment:
    """The run's experiment: its ``name`` and a ``workspace`` with a name. ``Experiment(name)`` and
    Azure ML's ``Experiment(workspace, name)`` both work."""

    def __init__(self, workspace=None, name=None, **_ignored):
        if name is None and isinstance(workspace, str):
            workspace, name = None, workspace
        self.name = "" if name is None else str(name)
        self.workspace = workspace if workspace is not None else Workspace()

    def __repr__(self):
        return "Experiment(name=%r)" % self.name


class Run:
    """The run a script is part of. Get it with ``Run.get_context()``."""

    _context = None
    _context_lock = threading.Lock()

    def __init__(self, experiment, run_id, outer_context_manager=None, **_kwargs):
        """Azure ML v1's ``Run(experiment, run_id)``: inside a run, a handle to this run or to a
        child run it created (log to it, read it); RunNotAvailable for any other run, which only
        the driver can read (``airflow_provider_mltrain.Run(workspace, run_id)``)."""
        found = _find_run(str(run_id))
        self.__dict__.update(found.__dict__)  # the same files, tags and properties as that run

    @classmethod
    def _make(cls, run_id, experiment_name, metrics_file=None, run_dir=None):
        self = object.__new__(cls)
        self._setup(run_id, experiment_name, metrics_file, run_dir)
        return self

    def _setup(self, run_id, experiment_name, metrics_file=None, run_dir=None):
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
                cls._context = cls._make(
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

    def log_confusion_matrix(self, name, value, description=""):
        """Log a confusion matrix: Azure ML's ``{"schema_type": "confusion_matrix", "schema_version":
        "1.0.0", "data": {"class_labels": [...], "matrix": [[...], ...]}}`` (a dict or its JSON)."""
        self._emit_typed("confusion_matrix", name, value, description)

    def log_accuracy_table(self, name, value, description=""):
        """Log an accuracy table: Azure ML's ``accuracy_table`` schema, whose ``data`` holds
        ``probability_tables``, ``percentile_tables`` (per class, per threshold: [TP, FP, TN, FN]),
        ``probability_thresholds``, ``percentiles`` and optionally ``class_labels``."""
        self._emit_typed("accuracy_table", name, value, description)

    def log_predictions(self, name, value, description=""):
        """Log binned predictions: Azure ML's ``predictions`` schema, whose ``data`` holds
        ``bin_averages``, ``bin_errors``, ``bin_counts`` and ``bin_edges`` (one edge more)."""
        self._emit_typed("predictions", name, value, description)

    def log_residuals(self, name, value, description=""):
        """Log a histogram of residuals: Azure ML's ``residuals`` schema, whose ``data`` holds
        ``bin_edges`` and ``bin_counts`` (one edge more than counts)."""
        self._emit_typed("residuals", name, value, description)

    def _emit_typed(self, kind, name, value, description):
        call = "run.log_%s(%r, ...)" % (kind, name)
        if isinstance(value, (str, bytes)):
            try:
                value = json.loads(value)
            except ValueError:
                raise ValueError(
                    "mltrain: %s takes a dict or its JSON text; the text is not JSON." % call
                ) from None
        value = _plain_tree(value, "the value of " + call, 0)
        data = value.get("data") if isinstance(value, dict) else None
        if not isinstance(data, dict):
            raise ValueError(
                "mltrain: %s takes {'schema_type': %r, 'schema_version': '1.0.0', 'data': {...}}."
                % (call, kind)
            )
        if value.get("schema_type", kind) != kind:
            raise ValueError(
                "mltrain: %s got schema_type %r; it logs %r values." % (call, value.get("schema_type"), kind)
            )
        missing = [key for key in TYPED_KINDS[kind] if not isinstance(data.get(key), list)]
        if missing:
            raise ValueError(
                "mltrain: %s: data lacks the list(s) %s (Azure ML's %s schema)."
                % (call, ", ".join(repr(k) for k in missing), kind)
            )
        version = str(value.get("schema_version") or "1.0.0")
        record = {"schema_type": kind, "schema_version": version, "data": data}
        self._emit(kind, name, record, None, description)

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

    def upload_file(self, name, path_or_stream, datastore_name=None):
        """Keep a file (a path or a readable binary stream) as the run file ``name``, as Azure ML
        does: ``upload_file("a/b.txt", ...)`` is read back with ``download_file("a/b.txt")``; a
        name under ``outputs/`` or ``logs/`` is a file of that folder. A name that is absolute,
        holds ``..`` or would pass through a link in the run folder is refused (ValueError)."""
        parts = _file_name_parts(name)
        if self.offline:
            self._offline_files["/".join(parts)] = (
                path_or_stream.read() if hasattr(path_or_stream, "read") else str(path_or_stream)
            )
            log.info("mltrain offline run: %s kept as run file %s", path_or_stream, "/".join(parts))
            return None
        root, inner = self._write_place(parts)
        if hasattr(path_or_stream, "read"):
            _write_file(root, inner, lambda out: shutil.copyfileobj(path_or_stream, out))
        else:
            with open(str(path_or_stream), "rb") as src:
                _write_file(root, inner, lambda out: shutil.copyfileobj(src, out))
        return None

    def upload_files(self, names, paths, return_artifacts=False, timeout_seconds=None, datastore_name=None):
        """``upload_file`` for each pair of ``names`` and ``paths`` (the names are all checked first)."""
        names, paths = list(names), list(paths)
        if len(names) != len(paths):
            raise ValueError(
                "mltrain: upload_files got %d names and %d paths; give one name per path."
                % (len(names), len(paths))
            )
        for name in names:
            _file_name_parts(name)
        for name, path in zip(names, paths):
            self.upload_file(name, path)
        return None

    def upload_folder(self, name, path, datastore_name=None):
        """Keep every file below the folder ``path`` as run files under ``name``
        (``upload_folder("reports", "out/reports")`` makes ``reports/...``). Links in the folder
        are skipped, never followed."""
        prefix = _file_name_parts(name)
        path = str(path)
        if not os.path.isdir(path):
            raise ValueError("mltrain: upload_folder(%r, %r): %r is not a folder." % (name, path, path))
        names, paths = [], []
        for folder, dirs, files in os.walk(path):
            dirs.sort()
            for entry in sorted(files):
                full = os.path.join(folder, entry)
                if os.path.islink(full) or not os.path.isfile(full):
                    log.warning("mltrain: upload_folder skips %s: not a regular file", full)
                    continue
                rel = os.path.relpath(full, path).replace(os.sep, "/")
                names.append("/".join([*prefix, rel]))
                paths.append(full)
        return self.upload_files(names, paths)

    def _write_place(self, parts):
        """Where the run file ``parts`` is written: (a folder we own, the path below it)."""
        if parts[0] in FOLDERS:
            # The script's ./outputs and ./logs are moved into the run folder when it ends.
            return (os.path.join(self._run_dir, "snapshot") if self._run_dir else "."), parts
        return os.path.join(self._run_dir or ".", UPLOADS), parts

    def _read_places(self, parts):
        """The paths the run file ``parts`` may be at while the run runs, most recent first."""
        run_dir = self._run_dir or "."
        if parts[0] in FOLDERS:
            live = os.path.join(self._run_dir, "snapshot") if self._run_dir else "."
            return [(live, parts), (run_dir, parts)]
        return [(os.path.join(run_dir, UPLOADS), parts)]

    def get_file_names(self):
        """The run's files so far, by the names ``download_file`` takes: ``outputs/...``,
        ``logs/...`` and the names given to ``upload_file``. Links are left out."""
        if self.offline:
            return sorted(self._offline_files)
        run_dir = self._run_dir or "."
        found = set()
        for root, prefix in (
            (os.path.join(run_dir, "snapshot"), None),
            (run_dir, None),
            (os.path.join(run_dir, UPLOADS), ""),
        ):
            tops = FOLDERS if prefix is None else None
            found.update(_list_files(root, tops))
        return sorted(found)

    def download_file(self, name, output_file_path=None, _validate_checksum=False):
        """Copy the run file ``name`` (see ``get_file_names``) to ``output_file_path`` (a file or
        a folder; default: the current folder). FileNotFoundError when the run has no such file."""
        parts = _file_name_parts(name)
        dest = str(output_file_path) if output_file_path else parts[-1]
        if os.path.isdir(dest):
            dest = os.path.join(dest, parts[-1])
        if self.offline:
            kept = self._offline_files.get("/".join(parts))
            if kept is None:
                raise FileNotFoundError("mltrain: this offline run has no file %r." % name)
            if isinstance(kept, bytes):
                with open(dest, "wb") as out:
                    out.write(kept)
            else:
                shutil.copyfile(kept, dest)
            return None
        for root, inner in self._read_places(parts):
            fd = _open_below(root, inner)
            if fd is None:
                continue
            with os.fdopen(fd, "rb") as src, open(dest, "wb") as out:
                shutil.copyfileobj(src, out)
            return None
        raise FileNotFoundError(
            "mltrain: run %s has no file %r; run.get_file_names() lists the files it has." % (self.id, name)
        )

    def download_files(self, prefix=None, output_directory=None, output_paths=None, append_prefix=True, **_):
        """Copy every run file whose name starts with ``prefix`` into ``output_directory``."""
        names = [n for n in self.get_file_names() if not prefix or n.startswith(str(prefix))]
        base = str(output_directory or ".")
        for name in names:
            rel = name if append_prefix or not prefix else name[len(str(prefix)) :].lstrip("/")
            dest = os.path.join(base, *rel.split("/"))
            os.makedirs(os.path.dirname(dest) or ".", exist_ok=True)
            self.download_file(name, dest)
        return None

    # -- the run's own state -------------------------------------------------------------------

    def _status(self):
        if self.offline or not self._run_dir:
            return {}
        data = _read_small(os.path.join(self._run_dir, "status.json"))
        try:
            status = json.loads(data) if data else {}
        except ValueError:
            return {}
        return status if isinstance(status, dict) else {}

    def get_status(self):
        """``Running`` while the script runs (``CancelRequested`` once a cancel was asked for);
        a child run this script created: ``Running`` until it is completed or failed."""
        if self.offline:
            return "Running"
        if self._child_index is not None:
            return self._parent._child_state(self._child_index)
        if self._run_dir and os.path.lexists(os.path.join(self._run_dir, CANCEL)):
            return "CancelRequested"
        state = self._status().get("state")
        return state if state in ("Starting", "Running", "Finalizing") else "Running"

    def get_details(self):
        """What the script can know of its run, under Azure ML v1's keys: ``runId``, ``status``,
        ``startTimeUtc``, ``properties``, ``tags``, ``inputDatasets``, ``outputDatasets``,
        ``runDefinition`` (script, arguments, framework), ``target`` (the host it runs on)."""
        status = self._status()
        spec = {}
        if not self.offline and self._run_dir and self._child_index is None:
            try:
                spec = json.loads(_read_small(os.path.join(self._run_dir, "run.json")) or b"{}")
            except ValueError:
                spec = {}
            spec = spec if isinstance(spec, dict) else {}
        started = None
        for entry in status.get("history") or ():
            if isinstance(entry, list) and len(entry) == 2 and entry[0] == "Running":
                started = entry[1]
        outputs = {}
        try:
            outputs = json.loads(os.environ.get("MLTRAIN_OUTPUTS") or "{}") if not self.offline else {}
        except ValueError:
            pass
        args = spec.get("arguments")
        return {
            "runId": self.id,
            "experiment": self.experiment.name,
            "status": self.get_status(),
            "target": status.get("host"),
            "startTimeUtc": _utc(started),
            "properties": self.get_properties(),
            "tags": self.get_tags(),
            "inputDatasets": [{"name": k, "path": v} for k, v in sorted(self.input_datasets.items())],
            "outputDatasets": [{"name": str(k), "path": str(v)} for k, v in sorted((outputs or {}).items())]
            if isinstance(outputs, dict)
            else [],
            "runDefinition": {
                "script": spec.get("script"),
                "arguments": [str(a) for a in args] if isinstance(args, list) else [],
                "framework": spec.get("framework"),
                "snapshotId": spec.get("snapshot_id"),
            },
            "logFiles": {"logs/std_log.txt": "logs/std_log.txt"} if not self.offline else {},
        }

    def cancel(self):
        """Cancel this run from inside: the script stops at once (SystemExit) and the run ends
        Canceled, not Failed. On a child run this script created: the child ends Canceled and the
        script goes on."""
        if self._child_index is not None:
            if not self.offline:
                self._parent._child_event(self._child_index, "canceled")
            return None
        if self.offline:
            log.info("mltrain offline run: cancel() called; the script ends")
        else:
            path = os.path.join(self._run_dir or ".", CANCEL)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW, 0o644)
            with os.fdopen(fd, "w") as f:
                f.write(json.dumps({"by": "script"}))
        raise SystemExit("mltrain: run %s canceled by the script (run.cancel())" % self.id)

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
                self._parent = _ParentHandle._make(parent_id, self.experiment.name)
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
        child = Run._make(
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

    def _child_state(self, index):
        """The state of child ``index`` as this run's ``children.jsonl`` says it."""
        state = "Running"
        data = _read_small(os.path.join(os.path.dirname(self._metrics_file), CHILDREN))
        ends = {"completed": "Completed", "failed": "Failed", "canceled": "Canceled"}
        for line in (data or b"").splitlines():
            rec = _record_any(line)
            if isinstance(rec, dict) and rec.get("child") == index and rec.get("event") in ends:
                state = ends[rec["event"]]
        return state

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
_INSTEAD = {
    "get_details_with_logs": "Inside the run, run.get_details() and the file logs/std_log.txt "
    "(run.download_file); " + _DRIVER % "get_details",
    "wait_for_completion": "A script cannot wait for its own run; " + _DRIVER % "wait_for_completion",
    "get_children": "Inside the run, keep the children run.child_run() and run.create_children() "
    "return; " + _DRIVER % "get_children",
    "get_environment": "The run's environment is recorded at submission: " + _DRIVER % "get_details",
    "register_model_with_datasets": "Use run.register_model(model_name, model_path).",
    "submit_child": "Create child runs with run.child_run() and log to them from this script.",
    "get_snapshot_id": "Inside the run, run.get_details()['runDefinition']['snapshotId'].",
    "clean": "The run's working folder is cleaned up by its target after the run.",
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


def _plain_tree(value, what, depth):
    """``_plain`` for JSON objects too (Azure's typed metrics): dicts with text keys, lists, numbers."""
    if depth > 32:
        raise ValueError("mltrain: %s is nested too deeply (over 32 levels)." % what)
    if isinstance(value, dict):
        return {str(k): _plain_tree(v, what, depth + 1) for k, v in value.items()}
    array = hasattr(value, "tolist") and not isinstance(value, numbers.Number)
    if isinstance(value, (list, tuple)) or array:
        items = value.tolist() if array else value
        if not isinstance(items, list):
            return _plain(items, what)
        return [_plain_tree(v, what, depth + 1) for v in items]
    return _plain(value, what)


def _record_any(line):
    try:
        return json.loads(line)
    except (ValueError, RecursionError):
        return None


def _file_name_parts(name):
    """The parts of a run file name the script gives (``a/b.txt``); ValueError for a name that could
    leave the run folder or names a folder of the run itself."""
    if not isinstance(name, str):
        name = str(name)
    text = name.replace("\\", "/")
    parts = [p for p in text.split("/") if p not in ("", ".")]
    if not parts or text.startswith("/") or os.path.isabs(name) or ".." in parts or "\0" in text:
        raise ValueError(
            "mltrain: run file name %r must be a relative path without '..' (e.g. 'reports/a.txt')." % (name,)
        )
    if parts[0] in FOLDERS and len(parts) == 1:
        raise ValueError("mltrain: run file name %r names a folder; give a file name under it." % (name,))
    return parts


_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)


def _folder_below(root, parts, create):
    """A descriptor of the folder ``root/parts...``, walked without following a link; None when
    it is not there (or is a link) and ``create`` is false."""
    if create:
        os.makedirs(root, exist_ok=True)
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | getattr(os, "O_CLOEXEC", 0))
    try:
        for part in parts:
            if create:
                try:
                    os.mkdir(part, 0o755, dir_fd=fd)
                except FileExistsError:
                    pass
            try:
                child = os.open(part, _DIR_FLAGS, dir_fd=fd)
            except OSError:
                if create:
                    raise ValueError(
                        "mltrain: run file folder %r is a link or a file in the run folder; links are "
                        "never followed. Pick another name." % "/".join(parts)
                    ) from None
                os.close(fd)
                return None
            os.close(fd)
            fd = child
    except BaseException:
        os.close(fd)
        raise
    return fd


def _write_file(root, parts, write):
    folder = _folder_below(root, parts[:-1], create=True)
    try:
        try:
            fd = os.open(
                parts[-1], os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o644, dir_fd=folder
            )
        except OSError as exc:
            raise ValueError(
                "mltrain: run file %r cannot be written (%s); a link there is never followed."
                % ("/".join(parts), exc.strerror or exc)
            ) from None
    finally:
        os.close(folder)
    with os.fdopen(fd, "wb") as out:
        write(out)


def _open_below(root, parts):
    """A read descriptor of the regular file ``root/parts...`` (no link followed), else None."""
    try:
        folder = _folder_below(root, parts[:-1], create=False)
    except OSError:
        return None
    if folder is None:
        return None
    try:
        fd = os.open(parts[-1], os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=folder)
    except OSError:
        return None
    finally:
        os.close(folder)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        return None
    return fd


def _list_files(root, tops=None):
    """Names of the regular files below ``root`` (only below ``tops`` when given); links skipped."""
    names = []
    for folder, dirs, files in os.walk(root):
        rel = os.path.relpath(folder, root)
        if rel == "." and tops is not None:
            dirs[:] = [d for d in dirs if d in tops]
            continue
        dirs[:] = [d for d in dirs if not os.path.islink(os.path.join(folder, d))]
        for entry in files:
            full = os.path.join(folder, entry)
            if not os.path.islink(full) and os.path.isfile(full):
                names.append(entry if rel == "." else rel.replace(os.sep, "/") + "/" + entry)
    return names


def _read_small(path):
    """At most 1 MiB of a file of the run folder, no link followed; None when it cannot be read."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        return f.read(_READ_LIMIT)


def _utc(at):
    """Azure ML's time format (``2024-05-01T10:00:00.000000Z``) of a Unix time, or None."""
    if isinstance(at, bool) or not isinstance(at, (int, float)):
        return None
    try:
        return datetime.datetime.fromtimestamp(at, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    except (OverflowError, OSError, ValueError):
        return None


def _find_run(run_id):
    """The run ``Run(experiment, run_id)`` names inside a run: this one or a child it created."""
    current = Run.get_context()
    if not current.offline:
        if run_id == current.id:
            return current
        prefix = current.id + "_"
        index = run_id[len(prefix) :] if run_id.startswith(prefix) else ""
        folder = os.path.join(os.path.dirname(current._metrics_file), CHILDREN_DIR, index)
        if index.isdigit() and str(int(index)) == index and os.path.isdir(folder):
            metrics = os.path.join(folder, "metrics.jsonl")
            child = Run._make(run_id, current.experiment.name, metrics, current._run_dir)
            child._parent = current
            child._child_index = int(index)
            return child
    where = "this offline run" if current.offline else "run %s" % current.id
    raise RunNotAvailable(
        "mltrain: Run(experiment, %r) is not reachable from %s: a script can open only its own run "
        "(Run.get_context()) and the child runs it created. Read other runs from the driver with "
        "airflow_provider_mltrain.Run(workspace, run_id), or pass what the script needs as "
        "arguments." % (run_id, where)
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
        self._setup("OfflineRun_%d" % int(time.time()), "offline")
        self._offline_files = {}


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
        elif kind in ("table", "list") or kind in TYPED_KINDS:
            out[key] = value
        elif key in out:
            prev = out[key]
            out[key] = (prev if isinstance(prev, list) else [prev]) + [value]
        else:
            out[key] = value
    return out
