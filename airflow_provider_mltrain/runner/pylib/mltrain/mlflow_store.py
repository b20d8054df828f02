"""MLflow inside an mltrain run: a tracking store and a model registry store for the ``mltrain:`` URI.

The run supervisor sets ``MLFLOW_TRACKING_URI=mltrain:`` and ``MLFLOW_RUN_ID`` and puts a small
distribution on ``PYTHONPATH`` whose entry points (``mlflow.tracking_store`` and
``mlflow.model_registry_store``) name the classes below, so a script's ``mlflow.log_metric``,
``log_param``, ``set_tag``, ``log_artifact``, ``<flavor>.log_model`` and autologging land in the
mltrain run as they happen, with no server and on every target:

- metrics become metric lines of ``logs/metrics.jsonl`` (with their step and time);
- params become run properties, tags become run tags (MLflow's own ``mlflow.*`` tags stay here);
- artifacts and logged models are files under the run's ``./outputs``;
- a model registered through MLflow becomes a request of ``Run.register_model``.

This module is imported only by MLflow (which the script's environment has), never by the runner.
When the run's environment named a tracking URI of its own, the supervisor passes it as
``MLTRAIN_MLFLOW_MIRROR_URI`` and every run value is written there too (:class:`_Mirror`).
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
import time
import uuid

import mlflow

if int(mlflow.__version__.split(".")[0]) < 3:
    raise ImportError(
        "mltrain logs MLflow values into the run with MLflow 3 or newer; this environment has MLflow "
        "%s. Install mlflow>=3 (or mlflow-skinny>=3) in the run's environment." % mlflow.__version__
    )

from mlflow.entities import (
    Experiment,
    LifecycleStage,
    LoggedModel,
    LoggedModelStatus,
    Metric,
    Param,
    Run,
    RunData,
    RunInfo,
    RunInputs,
    RunOutputs,
    RunStatus,
    RunTag,
)
from mlflow.entities.model_registry import ModelVersion, RegisteredModel
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import (
    INVALID_PARAMETER_VALUE,
    RESOURCE_ALREADY_EXISTS,
    RESOURCE_DOES_NOT_EXIST,
)
from mlflow.store.entities.paged_list import PagedList
from mlflow.store.model_registry.abstract_store import AbstractStore as AbstractRegistryStore
from mlflow.store.tracking.abstract_store import AbstractStore
from mlflow.utils.file_utils import local_file_uri_to_path, path_to_local_file_uri

import mltrain

log = logging.getLogger("mltrain.mlflow")

SCHEME = "mltrain"
EXPERIMENT_ID = "0"
MIRROR_VAR = "MLTRAIN_MLFLOW_MIRROR_URI"
RUN_ID_VAR = "MLTRAIN_MLFLOW_RUN_ID"
# MLflow's own bookkeeping tags (source, user, model history...): kept for MLflow, not the history.
SYSTEM_TAG = "mlflow."


def _ms():
    return int(time.time() * 1000)


class _RunState:
    """What this process logged to the mltrain run through MLflow (MLflow reads it back)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.run_id = os.environ.get(RUN_ID_VAR) or os.environ.get("MLTRAIN_RUN_ID") or ""
        self.mltrain_id = os.environ.get("MLTRAIN_RUN_ID", "")
        self.run_dir = os.environ.get("MLTRAIN_RUN_DIR", "")
        self.metrics_file = os.environ.get("MLTRAIN_METRICS_FILE", "")
        self.experiment = os.environ.get("MLTRAIN_EXPERIMENT", "") or "Default"
        self.start_time = _ms()
        self.status = RunStatus.to_string(RunStatus.RUNNING)
        self.end_time = None
        self.params = {}
        self.tags = {"mlflow.runName": self.mltrain_id}
        self.history = {}
        self.model_outputs = []
        self.models = {}
        self.nested_warned = False

    @property
    def outputs_dir(self):
        return os.path.join(self.run_dir, "snapshot", "outputs")

    def owns(self, run_id):
        return run_id in (self.run_id, self.mltrain_id)

    def append(self, records):
        if not records:
            return
        data = "".join(json.dumps(r, allow_nan=True, separators=(",", ":")) + "\n" for r in records)
        fd = os.open(self.metrics_file, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, data.encode("utf-8"))
        finally:
            os.close(fd)


_state = None
_state_lock = threading.Lock()


def _run_state():
    global _state
    with _state_lock:
        if _state is None or _state.mltrain_id != os.environ.get("MLTRAIN_RUN_ID", ""):
            _state = _RunState()
        return _state


def _not_inside_a_run():
    return MlflowException(
        "MLFLOW_TRACKING_URI=mltrain: works only inside an mltrain run, which sets it; outside one, "
        "unset it (MLflow then uses its own default store) or name a tracking server."
    )


class MltrainTrackingStore(AbstractStore):
    """MLflow's tracking store for the one mltrain run this process belongs to.

    Every top-level ``mlflow.start_run()`` attaches to that run; a nested run logs into it too
    (said once on stderr): mltrain has no child runs made from inside a script yet.
    """

    def __init__(self, store_uri=None, artifact_uri=None):
        super().__init__()
        self.state = _run_state()
        if not self.state.mltrain_id or not self.state.metrics_file:
            raise _not_inside_a_run()
        mirror_uri = os.environ.get(MIRROR_VAR)
        self.mirror = _Mirror(mirror_uri, self.state) if mirror_uri else None

    # -- experiments -----------------------------------------------------------------------------

    def _experiment(self, name=None):
        return Experiment(
            experiment_id=EXPERIMENT_ID,
            name=name or self.state.experiment,
            artifact_location=path_to_local_file_uri(self.state.outputs_dir),
            lifecycle_stage=LifecycleStage.ACTIVE,
            tags=[],
        )

    def search_experiments(
        self, view_type=None, max_results=None, filter_string=None, order_by=None, page_token=None
    ):
        return PagedList([self._experiment()], None)

    def create_experiment(self, name, artifact_location=None, tags=None):
        # The run's experiment is the one it was submitted to: any name leads there.
        return EXPERIMENT_ID

    def get_experiment(self, experiment_id):
        return self._experiment()

    def get_experiment_by_name(self, experiment_name):
        return self._experiment(experiment_name)

    def delete_experiment(self, experiment_id):
        raise MlflowException("an mltrain run cannot delete its experiment", INVALID_PARAMETER_VALUE)

    def restore_experiment(self, experiment_id):
        pass

    def rename_experiment(self, experiment_id, new_name):
        raise MlflowException("an mltrain run cannot rename its experiment", INVALID_PARAMETER_VALUE)

    def set_experiment_tag(self, experiment_id, tag):
        pass

    # -- the run -----------------------------------------------------------------------------------

    def _check(self, run_id):
        if not self.state.owns(run_id):
            raise MlflowException(
                "run %r is not this mltrain run (%r): inside an mltrain run MLflow logs to that run "
                "only" % (run_id, self.state.run_id),
                RESOURCE_DOES_NOT_EXIST,
            )

    def _info(self):
        s = self.state
        return RunInfo(
            run_id=s.run_id,
            experiment_id=EXPERIMENT_ID,
            user_id=os.environ.get("USER", "mltrain"),
            status=s.status,
            start_time=s.start_time,
            end_time=s.end_time,
            lifecycle_stage=LifecycleStage.ACTIVE,
            artifact_uri=path_to_local_file_uri(s.outputs_dir),
            run_name=s.mltrain_id,
        )

    def _run(self):
        s = self.state
        with s.lock:
            metrics = [h[-1] for h in s.history.values()]
            data = RunData(
                metrics=metrics,
                params=[Param(k, v) for k, v in s.params.items()],
                tags=[RunTag(k, v) for k, v in s.tags.items()],
            )
            outputs = RunOutputs(model_outputs=list(s.model_outputs))
        return Run(run_info=self._info(), run_data=data, run_inputs=RunInputs([]), run_outputs=outputs)

    def get_run(self, run_id):
        self._check(run_id)
        return self._run()

    def create_run(self, experiment_id, user_id, start_time, tags, run_name):
        tags = list(tags or [])
        if any(t.key == "mlflow.parentRunId" for t in tags) and not self.state.nested_warned:
            self.state.nested_warned = True
            sys.stderr.write(
                "mltrain: a nested MLflow run (%r) logs into the mltrain run %s itself.\n"
                % (run_name, self.state.mltrain_id)
            )
        tags = [t for t in tags if t.key != "mlflow.parentRunId"]
        self.log_batch(self.state.run_id, [], [], tags)
        self.state.status = RunStatus.to_string(RunStatus.RUNNING)
        return self._run()

    def update_run_info(self, run_id, run_status, end_time, run_name):
        self._check(run_id)
        # The supervisor owns the run's state; MLflow's view of it is kept for MLflow only.
        self.state.status = RunStatus.to_string(run_status) if isinstance(run_status, int) else run_status
        self.state.end_time = end_time
        if self.mirror:
            self.mirror.update(run_status, end_time)
        return self._info()

    def delete_run(self, run_id):
        raise MlflowException("an mltrain run cannot delete itself", INVALID_PARAMETER_VALUE)

    def restore_run(self, run_id):
        pass

    def _search_runs(self, experiment_ids, filter_string, run_view_type, max_results, order_by, page_token):
        from mlflow.utils.search_utils import SearchUtils

        runs = [self._run()] if EXPERIMENT_ID in [str(e) for e in experiment_ids] else []
        runs = SearchUtils.filter(runs, filter_string)
        return SearchUtils.sort(runs, order_by), None

    def get_metric_history(self, run_id, metric_key, max_results=None, page_token=None):
        self._check(run_id)
        with self.state.lock:
            return PagedList(list(self.state.history.get(metric_key, [])), None)

    def log_batch(self, run_id, metrics, params, tags):
        self._check(run_id)
        s = self.state
        records = []
        with s.lock:
            new_params = {}
            for p in params or []:
                old = s.params.get(p.key)
                if old is not None and old != str(p.value):
                    raise MlflowException(
                        "param %r was logged as %r already and cannot change to %r (MLflow's rule; "
                        "it is the run property %r)" % (p.key, old, str(p.value), p.key),
                        INVALID_PARAMETER_VALUE,
                    )
                if old is None:
                    new_params[p.key] = str(p.value)
            s.params.update(new_params)
            new_tags = {}
            for t in tags or []:
                s.tags[t.key] = str(t.value)
                if not t.key.startswith(SYSTEM_TAG):
                    new_tags[t.key] = str(t.value)
            now = time.time()
            if new_params:
                records.append({"name": "properties", "kind": "properties", "value": new_params, "time": now})
            if new_tags:
                records.append({"name": "tags", "kind": "tags", "value": new_tags, "time": now})
            for m in metrics or []:
                history = s.history.setdefault(m.key, [])
                # log_model repeats the run's metrics of its step for the model: logged already.
                repeat = m.model_id is not None and any(
                    (h.value, h.step, h.timestamp, h.model_id) == (m.value, m.step or 0, m.timestamp, None)
                    for h in history
                )
                history.append(
                    Metric(m.key, m.value, m.timestamp, m.step or 0, run_id=s.run_id, model_id=m.model_id)
                )
                if repeat:
                    continue
                at = (m.timestamp or _ms()) / 1000.0
                records.append(
                    {"name": m.key, "kind": "scalar", "value": m.value, "step": m.step, "time": at}
                )
            s.append(records)
        if self.mirror:
            self.mirror.log_batch(metrics, params, tags)

    def log_inputs(self, run_id, datasets=None, models=None):
        self._check(run_id)

    def log_outputs(self, run_id, models):
        self._check(run_id)
        with self.state.lock:
            self.state.model_outputs.extend(models)

    def record_logged_model(self, run_id, mlflow_model):
        self._check(run_id)

    # -- logged models: folders under ./outputs ----------------------------------------------------

    def create_logged_model(
        self, experiment_id, name=None, source_run_id=None, tags=None, params=None, model_type=None
    ):
        model_id = "m-" + uuid.uuid4().hex
        base = "".join(c if c.isalnum() or c in "-_." else "_" for c in (name or "model")).lstrip(".")
        base = base or "model"
        folder = os.path.join(self.state.outputs_dir, base)
        with self.state.lock:
            taken = {m.artifact_location for m in self.state.models.values()}
            if os.path.lexists(folder) or path_to_local_file_uri(folder) in taken:
                folder = os.path.join(self.state.outputs_dir, "%s-%s" % (base, model_id))
            now = _ms()
            model = LoggedModel(
                experiment_id=EXPERIMENT_ID,
                model_id=model_id,
                name=name or base,
                artifact_location=path_to_local_file_uri(folder),
                creation_timestamp=now,
                last_updated_timestamp=now,
                model_type=model_type,
                source_run_id=source_run_id,
                status=LoggedModelStatus.PENDING,
                tags={t.key: t.value for t in tags or []},
                params={p.key: p.value for p in params or []},
            )
            self.state.models[model_id] = model
        return model

    def get_logged_model(self, model_id, allow_deleted=False):
        model = self.state.models.get(model_id)
        if model is None:
            raise MlflowException(
                "no logged model %r in this mltrain run" % model_id, RESOURCE_DOES_NOT_EXIST
            )
        return model

    def search_logged_models(
        self,
        experiment_ids,
        filter_string=None,
        datasets=None,
        max_results=None,
        order_by=None,
        page_token=None,
    ):
        return PagedList(list(self.state.models.values()), None)

    def finalize_logged_model(self, model_id, status):
        model = self.get_logged_model(model_id)
        model.status = status
        return model

    def set_logged_model_tags(self, model_id, tags):
        model = self.get_logged_model(model_id)
        model.tags.update({t.key: t.value for t in tags})

    def delete_logged_model_tag(self, model_id, key):
        self.get_logged_model(model_id).tags.pop(key, None)

    def log_logged_model_params(self, model_id, params):
        self.get_logged_model(model_id).params.update({p.key: p.value for p in params})


class MltrainRegistryStore(AbstractRegistryStore):
    """MLflow's model registry inside an mltrain run: ``register_model`` and
    ``log_model(registered_model_name=...)`` become ``Run.register_model`` requests, registered in
    mltrain's model registry when the run's files are collected (the version is known then)."""

    def __init__(self, store_uri=None, tracking_uri=None):
        super().__init__()
        self.state = _run_state()
        if not self.state.mltrain_id:
            raise _not_inside_a_run()
        self.names = {}

    def _await_model_version_creation(self, mv, await_creation_for):
        pass  # nothing to wait for: the request is written, the registration follows collection

    def create_registered_model(self, name, tags=None, description=None, deployment_job_id=None):
        if name in self.names:
            raise MlflowException("model %r was created already" % name, RESOURCE_ALREADY_EXISTS)
        self.names[name] = RegisteredModel(name, _ms(), description=description)
        return self.names[name]

    def get_registered_model(self, name):
        if name not in self.names:
            raise MlflowException(
                "model %r: inside a run, mltrain's model registry is written only; read it from the "
                "driver (airflow_provider_mltrain.Model)" % name,
                RESOURCE_DOES_NOT_EXIST,
            )
        return self.names[name]

    def _model_path(self, source, model_id):
        """The folder ``source`` names, as a path relative to the run folder (``outputs/model``)."""
        if model_id:
            source = MltrainTrackingStore().get_logged_model(model_id).artifact_location
        elif source.startswith("models:/m-"):
            source = MltrainTrackingStore().get_logged_model(source[len("models:/") :]).artifact_location
        path = local_file_uri_to_path(source) if source.startswith("file:") else source
        snapshot = os.path.realpath(os.path.join(self.state.run_dir, "snapshot"))
        full = os.path.realpath(os.path.join(snapshot, path))
        rel = os.path.relpath(full, snapshot)
        if rel == "outputs" or not rel.startswith("outputs" + os.sep):
            raise MlflowException(
                "mltrain registers only models this run wrote under ./outputs (log it with "
                "mlflow.<flavor>.log_model, or save it under outputs/ first); got %r" % source,
                INVALID_PARAMETER_VALUE,
            )
        return rel.replace(os.sep, "/")

    def create_model_version(
        self,
        name,
        source,
        run_id=None,
        tags=None,
        run_link=None,
        description=None,
        local_model_path=None,
        model_id=None,
    ):
        path = self._model_path(source, model_id)
        tag_map = {t.key: t.value for t in tags or []}
        try:
            mltrain.Run.get_context().register_model(name, path, tags=tag_map, description=description)
        except ValueError as exc:
            raise MlflowException(str(exc), INVALID_PARAMETER_VALUE) from None
        return ModelVersion(
            name=name,
            version="pending",
            creation_timestamp=_ms(),
            description=description,
            source=path,
            run_id=self.state.mltrain_id,
            status="READY",
            status_message="registered in mltrain's model registry when the run's files are collected",
            model_id=model_id,
        )


class _Mirror:
    """The user's own tracking store (``MLFLOW_TRACKING_URI`` of the run's environment), written to
    as well: a run named after the mltrain run, created there on first use. A failure there is
    said once on stderr and never stops the script: the mltrain run has every value."""

    def __init__(self, uri, state):
        self.uri = uri
        self.state = state
        self.store = None
        self.run_id = None
        self.failed = False

    def _call(self, fn):
        if self.failed:
            return
        try:
            if self.store is None:
                from mlflow.tracking._tracking_service.utils import _get_store

                self.store = _get_store(self.uri)
                exp = self.store.get_experiment_by_name(self.state.experiment)
                exp_id = exp.experiment_id if exp else self.store.create_experiment(self.state.experiment)
                tags = [
                    RunTag("mltrain.run_id", self.state.mltrain_id),
                    RunTag("mlflow.runName", self.state.mltrain_id),
                ]
                run = self.store.create_run(
                    exp_id, os.environ.get("USER", "mltrain"), _ms(), tags, self.state.mltrain_id
                )
                self.run_id = run.info.run_id
            fn()
        except Exception as exc:  # the mirror is a copy: never the reason a script fails
            self.failed = True
            sys.stderr.write(
                "mltrain: could not log to MLFLOW_TRACKING_URI=%s as well: %s\n" % (self.uri, exc)
            )

    def log_batch(self, metrics, params, tags):
        metrics = [Metric(m.key, m.value, m.timestamp, m.step or 0) for m in metrics or []]
        self._call(lambda: self.store.log_batch(self.run_id, metrics, list(params or []), list(tags or [])))

    def update(self, status, end_time):
        self._call(lambda: self.store.update_run_info(self.run_id, status, end_time, None))


def tracking_store(store_uri=None, artifact_uri=None):
    """The ``mlflow.tracking_store`` entry point."""
    return MltrainTrackingStore(store_uri, artifact_uri)


def registry_store(store_uri=None, tracking_uri=None):
    """The ``mlflow.model_registry_store`` entry point."""
    return MltrainRegistryStore(store_uri, tracking_uri)
