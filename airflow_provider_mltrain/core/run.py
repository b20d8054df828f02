"""Run: a submitted script, followed through its target and recorded in the run store."""

from __future__ import annotations

import io
import json
import logging
import os
import shlex
import shutil
import socket
import sys
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, BinaryIO

from airflow_provider_mltrain.core import inputs as run_inputs
from airflow_provider_mltrain.core import outputs as run_outputs
from airflow_provider_mltrain.core import run_files_store, run_warnings, settings
from airflow_provider_mltrain.core.compute import ComputeTarget, target_for_run
from airflow_provider_mltrain.core.errors import (
    MLTrainError,
    RunFailed,
    RunOnOtherHost,
    RunTimeout,
    TargetError,
)
from airflow_provider_mltrain.core.metrics import parse_lines, stored_value
from airflow_provider_mltrain.core.redact import mask_variable, redact_url
from airflow_provider_mltrain.core.runfiles import (
    RunFiles,
    list_folder,
    make_dirs,
    rmtree,
    shown,
    stored_name,
)
from airflow_provider_mltrain.core.states import RunStatus
from airflow_provider_mltrain.runner import tree
from airflow_provider_mltrain.runner.pylib.mltrain import summarize

if TYPE_CHECKING:
    from airflow_provider_mltrain.core.experiment import Experiment
    from airflow_provider_mltrain.core.model import Model
    from airflow_provider_mltrain.core.workspace import Workspace

log = logging.getLogger(__name__)

STD_LOG = "logs/std_log.txt"
METRICS = "logs/metrics.jsonl"
# One JSON line per Run.get_context().register_model() call of the script (runner/pylib/mltrain).
MODEL_REQUESTS = "logs/models.jsonl"
MAX_MODEL_REQUESTS = 100
MAX_MODEL_REQUESTS_BYTES = 1 << 20
# A runner that never wrote status.json this long after submission did not start.
START_TIMEOUT = 120.0
DEFAULT_GRACE_PERIOD = 10.0
# With an artifact store that is not local, a follower appends new log bytes to it this often.
LOG_PUSH_INTERVAL = 1.0


def _iso(ts: float | None) -> str | None:
    return datetime.fromtimestamp(ts, tz=timezone.utc).isoformat() if ts is not None else None


class Run:
    """A handle on one run; cheap to create, reads the store and the target when asked."""

    def __init__(self, workspace: Workspace, run_id: str):
        self.workspace = workspace
        self.id = run_id
        self._target: ComputeTarget | None = None
        self._pushed_log: int | None = None  # end of the log in the store, as this handle wrote it
        self._push_failing = False  # this handle said so on the run (a LOG_PUSH_FAILING warning)

    def __repr__(self) -> str:
        return f"Run(id={self.id!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Run) and other.id == self.id and other.workspace.root == self.workspace.root

    def __hash__(self) -> int:
        return hash(self.id)

    # -- record --------------------------------------------------------------------------------

    def _record(self) -> dict[str, Any]:
        record = self.workspace.store.get_run(self.id)
        if record is None:
            from airflow_provider_mltrain.core.errors import RunNotFound

            raise RunNotFound(f"Run {self.id!r} is not in the run store at {self.workspace.store.url}.")
        return record

    @property
    def experiment(self) -> Experiment:
        from airflow_provider_mltrain.core.experiment import Experiment

        return Experiment(self.workspace, self._record()["experiment"])

    @property
    def warnings(self) -> list[str]:
        """Problems the run had that did not stop it (malformed metric lines, say), one per class."""
        return run_warnings.texts(self._record()["warnings"])

    @property
    def tags(self) -> dict[str, str]:
        return dict(self._record()["tags"])

    @property
    def properties(self) -> dict[str, str]:
        return dict(self._record()["properties"])

    def tag(self, key: str, value: str | None = None) -> None:
        self.set_tags({key: value})

    def set_tags(self, tags: dict[str, Any]) -> None:
        merged = self.tags | {str(k): "" if v is None else str(v) for k, v in tags.items()}
        self.workspace.store.update(self.id, tags=merged)

    def add_properties(self, properties: dict[str, Any]) -> None:
        def change(current: dict[str, Any]) -> dict[str, Any]:
            clash = {k for k, v in properties.items() if k in current and current[k] != str(v)}
            if clash:
                raise ValueError(f"Run properties are write-once; already set: {sorted(clash)}")
            return current | {k: str(v) for k, v in properties.items()}

        if not self.workspace.store.change_properties(self.id, change):
            self._record()  # raises RunNotFound, naming the store

    def register_model(
        self,
        model_name: str,
        model_path: str | os.PathLike[str] | None = None,
        tags: dict[str, Any] | None = None,
        properties: dict[str, Any] | None = None,
        description: str | None = None,
    ) -> Model:
        """Register the file or folder ``model_path`` of this ended run (``outputs/model.pkl``;
        default: ``model_name``) as the next version of model ``model_name``, linked to this run.

        Azure ML v1's signature. Raises :class:`~airflow_provider_mltrain.core.model.InvalidModelName`,
        :class:`~airflow_provider_mltrain.core.model.ModelPathNotFound` (a path the run never wrote)
        and :class:`~airflow_provider_mltrain.core.model.RunNotFinished` before anything is written.
        """
        from airflow_provider_mltrain.core.model import register_from_run

        return register_from_run(self, model_name, model_path, tags, properties, description)

    def get_models(self) -> list[Model]:
        """The model versions registered from this run."""
        from airflow_provider_mltrain.core.model import Model

        return Model.list(self.workspace, run_id=self.id)

    @property
    def parent(self) -> Run | None:
        """The run this one is a child of (a sweep, or a run whose script created it), or None."""
        parent_id = self._record()["properties"].get("mltrain.parent")
        if not parent_id:
            return None
        if self.workspace.store.get_run(parent_id) is None:
            return None
        from airflow_provider_mltrain.core.sweep import sweep_or_run

        return sweep_or_run(self.workspace, parent_id)

    def get_children(self) -> list[Run]:
        """This run's child runs (a sweep's children, or those its script created), oldest first."""
        from airflow_provider_mltrain.core.sweep import children_of

        return children_of(self.workspace, self._record())

    @property
    def target(self) -> ComputeTarget:
        if self._target is None:
            self._target = target_for_run(self.id, self._record()["target"], self.workspace.root)
        return self._target

    @property
    def output_dir(self) -> Path:
        """Where the run's outputs and logs are collected in the workspace once it ends."""
        return self.workspace.run_files_dir(self.id)

    # -- status --------------------------------------------------------------------------------

    def get_status(self) -> str:
        return self.refresh().value

    def refresh(self) -> RunStatus:
        """Read the target once: record new state transitions, metrics, and collect files at the end."""
        record = self._record()
        status = RunStatus(record["status"])
        if record["collected"] or record["properties"].get("mltrain.kind") in ("sweep", "child"):
            return status  # a sweep's driver, or a script-created child's parent, records its states
        if self.elsewhere(record):
            return status  # only a follower on the run's own host can read its target
        if status.is_terminal and self._remote and self.output_dir.is_dir():
            self._finish(None, None)  # collected here, the upload to the store is pending
            return status
        if self._target is None:  # from the record just read, not a second reading
            self._target = target_for_run(self.id, record["target"], self.workspace.root)
        target = self.target
        runner = target.read_status(self.id)
        states = _history(runner)
        self._ingest_metrics(record["metrics_offset"])
        self._ingest_children(record)
        self._add_runner_warnings(record, runner)
        error = None
        if runner is None and status.rank <= RunStatus.PREPARING.rank:
            error = _dead_submitter(record, self.workspace.root)
            if error:
                states.append((RunStatus.FAILED, time.time(), error))
        elif not _terminal(runner) and status.rank >= RunStatus.PREPARING.rank:
            error = self._lost_reason(target, runner, record)
            if error:
                runner = target.read_status(self.id)  # it may have finished in between
                if _terminal(runner):
                    states, error = _history(runner), None
                else:
                    target.kill(self.id, runner)
                    states.append((RunStatus.FAILED, time.time(), error))
        new = self.workspace.store.record_states(self.id, states)
        if new.is_terminal:
            self._finish(runner, error)
        else:
            self.push_log()
        return new

    @property
    def _remote(self) -> bool:
        """Whether the workspace's artifact store is not local: logs and files then go there."""
        return not self.workspace.artifacts.is_local

    def host(self, record: dict[str, Any] | None = None) -> str | None:
        """The host that submitted the run (where a local-target run lives)."""
        owner = (record or self._record())["properties"].get("mltrain.submitted_by", "")
        return owner.rpartition(":")[0] or None

    def elsewhere(self, record: dict[str, Any] | None = None) -> str | None:
        """Why this process cannot read the run's target, or None when it can: a local-target run
        lives on the host and in the workspace folder that submitted it."""
        if self._target is not None and self._target.kind != "local":
            return None  # known without reading the run store (a follower asks at every poll)
        record = record or self._record()
        if record["target"] != "local" or self.target.kind != "local":
            return None
        host = self.host(record)
        root = record["properties"].get("mltrain.workspace")
        if host and host != socket.gethostname():
            where = f"on host {host}"
        elif root and root != str(self.workspace.root):
            where = f"in the workspace folder {root} (this workspace is {self.workspace.root})"
        else:
            return None
        return (
            f"it runs on the local target {where}, and this process on {socket.gethostname()} cannot "
            "read or stop it there; its status comes from a follower on that host"
        )

    def push_log(self, read: Callable[[int, int], bytes] | None = None) -> None:
        """Append the log bytes written since the last push (read from the target, or by ``read``)
        to the artifact store as chunk objects, so a reader on another host sees the live log;
        nothing with a local store. A store that fails is logged and retried on the next push: the
        run goes on."""
        if not self._remote:
            return
        store = self.workspace.artifacts
        if read is None:

            def read(offset: int, length: int) -> bytes:
                return self.target.read_file(self.id, STD_LOG, offset, length)

        try:
            self._pushed_log = run_files_store.push_log(store, self.id, read, self._pushed_log)
        except Exception as exc:  # any failure of the store (or a target read) waits for the next push
            log.warning("Run %s: appending its log to %s failed (%s); retrying", self.id, store.url, exc)
            self._pushed_log = None
            if not self._push_failing:  # the run says so too, once per outage of this follower
                self._push_failing = True
                self.workspace.store.add_warnings(
                    self.id, [run_warnings.log_push_failing(store.url, socket.gethostname(), exc)]
                )
            return
        if self._push_failing:
            self._push_failing = False
            self._drop_warnings(run_warnings.LOG_PUSH_FAILING)

    def _drop_warnings(self, *keys: str) -> None:
        record = self._record()
        kept = [e for e in record["warnings"] if e["key"] not in keys]
        if len(kept) != len(record["warnings"]):
            self.workspace.store.update(self.id, warnings=json.dumps(kept))

    def _add_runner_warnings(self, record: dict[str, Any], runner: dict[str, Any] | None) -> None:
        known = {e["key"] for e in record["warnings"]}
        new = [e for e in run_warnings.from_runner(runner) if e["key"] not in known]
        if new:
            self.workspace.store.add_warnings(self.id, new)

    def _lost_reason(
        self, target: ComputeTarget, runner: dict[str, Any] | None, record: dict[str, Any]
    ) -> str | None:
        now = time.time()
        if runner is None:
            if not target.has_run(self.id):
                # Not on this target as seen from here (the local target of another host, say):
                # nothing to judge by, so no verdict.
                return None
            if now - record["created_at"] < START_TIMEOUT or target.runner_alive(self.id, runner):
                return None
            return f"the runner did not start within {START_TIMEOUT:.0f} s (see supervisor.log on the target)"
        if target.runner_alive(self.id, runner):
            return None
        beat = float(runner.get("heartbeat") or 0)
        reason = target.runner_gone_reason(self.id)
        return (
            f"the runner on {runner.get('host', 'the target')} stopped (last heartbeat "
            f"{_iso(beat)}) while the run was {runner.get('state')}" + (f": {reason}" if reason else "")
        )

    def _ingest_metrics(self, offset: int, final: bool = False) -> None:
        """Store the metric lines written since ``offset``; a bad line is skipped and counted.

        ``final`` (the run has ended) also takes a last line the script never finished.
        """
        data = self.target.read_file(self.id, METRICS, offset)
        end = len(data) if final else data.rfind(b"\n") + 1
        if end <= 0:
            return
        parsed = parse_lines(self.id, data[:end], offset)
        warnings = run_warnings.from_metrics(parsed)
        if parsed.skipped or parsed.reserved:
            log.warning(
                "Run %s: %s",
                self.id,
                " ".join(run_warnings.texts(warnings)),
            )
        stored = self.workspace.store.ingest_metrics(self.id, offset, offset + end, parsed.rows, warnings)
        if stored and (parsed.tags or parsed.properties):
            record = self._record()
            self.workspace.store.update(
                self.id,
                tags=record["tags"] | parsed.tags,
                properties={**parsed.properties, **record["properties"]},
            )

    def _ingest_children(self, record: dict[str, Any], final: bool = False) -> None:
        """Record the child runs the script created (core/child_runs.py); a failure there is
        logged and retried on the next refresh, never the parent's failure."""
        from airflow_provider_mltrain.core import child_runs

        try:
            child_runs.ingest(self, record, final)
        except Exception as exc:
            log.warning("Run %s: recording its child runs failed (%s: %s)", self.id, type(exc).__name__, exc)

    def _finish(self, runner: dict[str, Any] | None, error: str | None) -> None:
        record = self._record()
        if record["collected"]:
            return
        dest = self.output_dir
        pending = self._remote and dest.is_dir()  # collected here before; only the upload is left
        if not pending:
            try:
                run_inputs.complete_hashes(
                    self.workspace.store, self.id, record["properties"], self.workspace.root
                )
            except Exception as exc:  # a hash is part of the record, never of the run's outcome
                log.warning("Run %s: recording its inputs' hashes failed: %s", self.id, exc)
            try:
                self._ingest_metrics(record["metrics_offset"], final=True)
                self._ingest_children(record, final=True)
                tmp = dest.with_name(dest.name + ".collecting")
                rmtree(tmp)
                tmp.mkdir(parents=True)
                self.target.collect(self.id, tmp)
                if self._pending_elsewhere(record) and not list_folder(tmp).files:
                    # Another host collected the files and waits to upload them; the target holds
                    # none any more (a removed container): finishing here would publish an empty
                    # run and mark it collected, and that host's upload would never happen.
                    rmtree(tmp)
                    log.warning(
                        "Run %s: its files wait in the workspace cache of the host that collected it "
                        "(their upload to %s is pending there) and the target holds none any more; "
                        "leaving the run to that host",
                        self.id,
                        self.workspace.artifacts.url,
                    )
                    return
                rmtree(dest)
                os.replace(tmp, dest)
            except (OSError, TargetError) as exc:
                log.warning(
                    "Run %s: collecting outputs failed (%s); will retry on next refresh", self.id, exc
                )
                return
            fields: dict[str, Any] = {}
            if runner:
                fields["exit_code"] = runner.get("exit_code")
            fields["error"] = error or (runner or {}).get("error") or record["error"]
            if not self._remote:
                self._register_requested_models()
                try:
                    missing = self._upload_outputs()
                except Exception as exc:
                    log.warning(
                        "Run %s: uploading its outputs failed (%s: %s); retried on the next refresh",
                        self.id,
                        type(exc).__name__,
                        exc,
                    )
                    return
                if missing:
                    fields["error"] = "; ".join(filter(None, [fields["error"], *missing]))
                self.workspace.store.update(self.id, collected=True, **fields)
                return
            self.workspace.store.update(self.id, **fields)
        self._upload(record)

    def _pending_elsewhere(self, record: dict[str, Any]) -> bool:
        """Whether the run's files wait for their upload in the cache of another host (or another
        workspace folder): said by the run's warning, and this workspace has no collected copy."""
        return (
            self._remote
            and not self.output_dir.is_dir()
            and any(e["key"] == run_warnings.UPLOAD_PENDING for e in record["warnings"])
        )

    def _upload(self, record: dict[str, Any]) -> None:
        """Send the collected files to the artifact store, then mark the run collected. A store
        that fails (down, full, refusing) leaves the files in this host's cache and a warning on
        the run; the next refresh, by anyone on this host, tries again."""
        store = self.workspace.artifacts
        try:
            # The log's last lines, from the collected copy: the target may have let the run go.
            self.push_log(lambda offset, length: read_collected(self.output_dir, STD_LOG, offset, length))
            run_files_store.upload_files(store, self.id, self.output_dir)
            self._register_requested_models(raise_store_errors=True)
            self._upload_outputs()
        except Exception as exc:  # whatever the store raised, the files wait in the cache
            log.warning(
                "Run %s: uploading its files to %s failed (%s: %s); they stay in %s and the upload "
                "is retried on the next refresh",
                self.id,
                store.url,
                type(exc).__name__,
                exc,
                self.output_dir,
            )
            if not any(e["key"] == run_warnings.UPLOAD_PENDING for e in record["warnings"]):
                self.workspace.store.add_warnings(
                    self.id, [run_warnings.upload_pending(store.url, socket.gethostname(), exc)]
                )
            return
        done = (run_warnings.UPLOAD_PENDING, run_warnings.LOG_PUSH_FAILING)  # the whole log is there now
        current = self._record()["warnings"]
        warnings = [e for e in current if e["key"] not in done]
        if len(warnings) != len(current):
            self.workspace.store.update(self.id, collected=True, warnings=json.dumps(warnings))
        else:
            self.workspace.store.update(self.id, collected=True)

    def _upload_outputs(self) -> list[str]:
        """Upload the declared outputs (``ScriptRunConfig(outputs=...)``) once; a required one the
        script never wrote becomes the run's error, an optional one a logged warning."""
        record = self._record()
        value, warnings, errors = run_outputs.upload(self.id, record["properties"], self.output_dir)
        if value is None:
            return []
        fields: dict[str, Any] = {"properties": {**record["properties"], run_outputs.OUTPUTS_PROPERTY: value}}
        for text in warnings:
            log.warning("Run %s: %s", self.id, text)
        if errors:
            fields["error"] = "; ".join(filter(None, [record["error"], *errors]))
        self.workspace.store.update(self.id, **fields)
        return errors

    def _register_requested_models(self, raise_store_errors: bool = False) -> None:
        """Register the models the script asked for in ``logs/models.jsonl``, from the collected
        files. The file is the script's: read bounded and without following a link, each request
        checked on its own; a bad one is a run warning, never a failed collection. Each request
        is registered once (keyed by run id and line), so a retry or a second follower adds nothing.
        A store error is raised with ``raise_store_errors`` (the upload's retry covers it), else
        it is a run warning."""
        from airflow_provider_mltrain.core.model import ModelError, register_requested

        data = tree.read_file(str(self.output_dir), MODEL_REQUESTS, 0, MAX_MODEL_REQUESTS_BYTES + 1)
        if not data:
            return
        problems: list[str] = []
        if len(data) > MAX_MODEL_REQUESTS_BYTES:
            problems.append(f"{MODEL_REQUESTS} is over {MAX_MODEL_REQUESTS_BYTES} bytes: the rest is ignored")
            data = data[: data.rfind(b"\n", 0, MAX_MODEL_REQUESTS_BYTES) + 1]
        lines = data.splitlines()
        if len(lines) > MAX_MODEL_REQUESTS:
            problems.append(
                f"{len(lines)} model requests: only the first {MAX_MODEL_REQUESTS} are registered"
            )
        for number, line in enumerate(lines[:MAX_MODEL_REQUESTS], start=1):
            try:
                request = json.loads(line)
            except (ValueError, RecursionError):
                problems.append(f"{MODEL_REQUESTS} line {number} is not JSON: not registered")
                continue
            try:
                model = register_requested(
                    self.workspace, self.id, self.output_dir, request, key=f"{self.id}#{number}"
                )
                log.info("Run %s: registered model %s", self.id, model.id)
            except ModelError as exc:
                problems.append(f"{MODEL_REQUESTS} line {number}: model not registered: {exc}")
            except Exception as exc:
                if raise_store_errors:
                    raise
                problems.append(
                    f"{MODEL_REQUESTS} line {number}: registering failed ({type(exc).__name__}: {exc})"
                )
        if problems:
            log.warning("Run %s: %s", self.id, "; ".join(problems))
            self.workspace.store.add_warnings(
                self.id,
                [
                    {"key": "models:" + p[:200], "text": p[: run_warnings.MAX_RUNNER_TEXT], "count": 1}
                    for p in problems[:20]
                ],
            )

    # -- waiting -------------------------------------------------------------------------------

    def wait_for_completion(
        self,
        show_output: bool = False,
        timeout: float | None = None,
        raise_on_error: bool = True,
        poll_interval: float = 5.0,
        log_callback: Callable[[str], None] | None = None,
        output: IO[str] | None = None,
        upload_timeout: float | None = None,
    ) -> dict[str, Any]:
        """Follow the run until it ends; returns ``get_details()``.

        ``show_output`` prints the run's log as it grows (to ``output``, default stdout);
        ``log_callback`` receives each complete log line instead. Raises :class:`RunTimeout` when
        ``timeout`` seconds pass first (the run goes on), and :class:`RunFailed` when the run ends
        Failed or Canceled and ``raise_on_error`` is true, and :class:`RunOnOtherHost` for an
        active local-target run of another host (nothing here can follow it).

        With the artifact store on object storage, an ended run whose files this host collected
        but could not upload (the store down, full or refusing) is retried for ``upload_timeout``
        seconds (default ``[mltrain] upload_timeout``, 300) before returning with the files left
        in this host's cache and the run's warning saying so.
        """
        if show_output and log_callback is None:
            stream = output or sys.stdout

            def log_callback(line: str) -> None:
                stream.write(line + "\n")
                stream.flush()

        deadline = None if timeout is None else time.monotonic() + timeout
        follower = LogFollower(self) if log_callback else None
        delay = 0.01
        try:
            while True:
                status = self.refresh()
                if not status.is_terminal and (elsewhere := self.elsewhere()):
                    raise RunOnOtherHost(
                        f"Run {self.id} is {status.value}: {elsewhere}. Follow it on that host (pin "
                        "local-target tasks to one worker per host), or submit a new run."
                    )
                if follower is not None and log_callback is not None:
                    for line in follower.lines(final=status.is_terminal):
                        log_callback(line)
                if status.is_terminal:
                    break
                if deadline is not None and time.monotonic() >= deadline:
                    raise RunTimeout(
                        f"Run {self.id} is still {status.value} after {timeout} s; it goes on running."
                    )
                delay = min(delay * 1.3, poll_interval)
                if deadline is not None:
                    delay = max(0.0, min(delay, deadline - time.monotonic()))
                self._wait_pushing_log(delay)
            self.retry_upload(upload_timeout)
        except KeyboardInterrupt:
            # Ctrl-C stops the following, never the run (it is detached): say so, and how to get
            # back to it, instead of a traceback through the target's internals.
            follow, cancel = self.cli_commands()
            raise KeyboardInterrupt(
                f"Stopped following run {self.id}; it goes on running. Follow it again: {follow}; "
                f"cancel it: {cancel}"
            ) from None
        details = self.get_details()
        if raise_on_error and status != RunStatus.COMPLETED:
            tail = self.get_log_tail()
            code = details["exit_code"]
            raise RunFailed(
                f"Run {self.id} {status.value.lower()}"
                + (f" with exit code {code}" if code not in (None, 0) else "")
                + (f": {details['error']}" if details["error"] else "")
                + (f"\n--- last lines of the log ---\n{tail}" if tail else ""),
                run_id=self.id,
                status=status.value,
                exit_code=code,
                log_tail=tail,
            )
        return details

    def retry_upload(self, timeout: float | None = None) -> bool:
        """Refresh an ended run whose upload to the artifact store is pending on this host until
        it is collected or ``timeout`` seconds (default ``[mltrain] upload_timeout``) pass; returns
        whether the run's files are where every host reads them. On a worker that nothing
        refreshes afterwards (a Celery worker, a pod), returning at once would leave the files in
        its cache alone."""
        record = self._record()
        if record["collected"] or not self._remote:
            return True
        if not RunStatus(record["status"]).is_terminal or not self.output_dir.is_dir():
            return False
        timeout = settings.upload_timeout() if timeout is None else timeout
        deadline = time.monotonic() + timeout
        delay = 1.0
        log.info(
            "Run %s ended; its files wait in %s for the artifact store %s: retrying the upload for "
            "up to %.0f s",
            self.id,
            self.output_dir,
            self.workspace.artifacts.url,
            timeout,
        )
        while time.monotonic() < deadline:
            time.sleep(max(0.0, min(delay, deadline - time.monotonic())))
            self.refresh()
            if self._record()["collected"]:
                return True
            delay = min(delay * 2, 30.0)
        log.warning(
            "Run %s ended, but its files are still not in the artifact store %s after %.0f s: they "
            "stay in %s on %s, and the next `mltrain runs show %s` there uploads them (or raise "
            "[mltrain] upload_timeout)",
            self.id,
            self.workspace.artifacts.url,
            timeout,
            self.output_dir,
            socket.gethostname(),
            self.id,
        )
        return False

    def _wait_pushing_log(self, seconds: float) -> None:
        """``target.wait_for_change`` for ``seconds``, pushing new log bytes to a remote artifact
        store at least every ``LOG_PUSH_INTERVAL`` meanwhile; returns early when the target says
        the status may have changed."""
        if not self._remote:
            self.target.wait_for_change(self.id, seconds)
            return
        deadline = time.monotonic() + seconds
        while True:
            step = min(LOG_PUSH_INTERVAL, max(0.0, deadline - time.monotonic()))
            started = time.monotonic()
            self.target.wait_for_change(self.id, step)
            self.push_log()
            now = time.monotonic()
            if now >= deadline or now - started < step * 0.9:
                return

    def cli_commands(self) -> tuple[str, str]:
        """The ``mltrain`` commands that follow and cancel this run, from any shell on this host."""
        where = ""
        if self.workspace.root != settings.workspace_root():
            where = f"--workspace {shlex.quote(str(self.workspace.root))} "
        run_id = shlex.quote(self.id)
        return f"mltrain {where}logs {run_id} -f", f"mltrain {where}runs cancel {run_id}"

    def cancel(self, grace_period: float = DEFAULT_GRACE_PERIOD) -> str:
        """Stop the run: SIGTERM to the script's process group, SIGKILL after ``grace_period``.
        A sweep stops starting children and cancels those running."""
        if self._record()["properties"].get("mltrain.kind") == "sweep":
            from airflow_provider_mltrain.core.sweep import SweepRun

            if type(self) is Run:
                return SweepRun(self.workspace, self.id).cancel(grace_period)
        status = self.refresh()
        if status.is_terminal:
            return status.value
        target = self.target
        target.request_cancel(self.id, grace_period)
        if target.read_status(self.id) is None and not target.runner_alive(self.id, None):
            # Nothing started on the target yet; the cancel marker stops a late supervisor too.
            self.workspace.store.record_states(
                self.id, [(RunStatus.CANCELED, time.time(), "canceled before start")]
            )
            self._finish(None, "canceled by request before the run started")
            return RunStatus.CANCELED.value
        deadline = time.monotonic() + grace_period + 15
        while time.monotonic() < deadline:
            status = self.refresh()
            if status.is_terminal:
                return status.value
            time.sleep(0.1)
        runner = target.read_status(self.id)
        target.kill(self.id, runner)
        self.workspace.store.record_states(
            self.id, [(RunStatus.CANCELED, time.time(), "forced: the runner did not stop in time")]
        )
        self._finish(runner, "canceled by request (forced after the grace period)")
        return RunStatus.CANCELED.value

    # -- results -------------------------------------------------------------------------------

    def get_metrics(self, name: str | None = None) -> dict[str, Any]:
        """``{name: value}`` for a value logged once, ``{name: [values...]}`` for a series."""
        if not self._record()["collected"]:
            self.refresh()
        rows = self.workspace.store.get_metric_rows(self.id, name)
        records = [{"name": r["name"], "kind": r["kind"], "value": stored_value(r["value"])} for r in rows]
        return summarize(records, name)

    def get_metric_history(self, name: str) -> list[dict[str, Any]]:
        """Every value of one metric with its step and time, in logging order."""
        return [
            {"value": stored_value(r["value"]), "step": r["step"], "time": r["logged_at"]}
            for r in self.workspace.store.get_metric_rows(self.id, name)
        ]

    def get_details(self) -> dict[str, Any]:
        record = self._record()
        events = self.workspace.store.get_events(self.id)
        times = {e["status"]: e["at"] for e in events}
        start = times.get(RunStatus.RUNNING.value)
        end = next((times[s.value] for s in RunStatus if s.is_terminal and s.value in times), None)
        return {
            "run_id": record["id"],
            "experiment": record["experiment"],
            "status": record["status"],
            "target": record["target"],
            "source_directory": record["source_directory"],
            "script": record["script"],
            "arguments": record["arguments"],
            "snapshot_id": record["snapshot_id"],
            "environment": _masked_environment(record["environment"]),
            "tags": record["tags"],
            "properties": {
                k: redact_url(v) if k.startswith("mltrain.git.") and isinstance(v, str) else v
                for k, v in record["properties"].items()
            },
            "created_at": _iso(record["created_at"]),
            "start_time": _iso(start),
            "end_time": _iso(end),
            "duration_seconds": (end - start) if start and end else None,
            "state_times": {e["status"]: _iso(e["at"]) for e in events},
            "exit_code": record["exit_code"],
            "error": record["error"],
            "warnings": run_warnings.texts(record["warnings"]),
            "output_dir": self._files_location() if record["collected"] else None,
            # Azure ML's key: each input's name, URI, mode, version (ETag), size, sha256, path.
            "inputDatasets": input_records(record["properties"]),
            # Each declared output: name, uri, required, and once uploaded: uploaded, files, size.
            "outputDatasets": run_outputs.records(record["properties"]),
        }

    def _files_location(self) -> str:
        """Where the collected files are: a folder on this machine, or the store's URL of them."""
        if self._remote:
            return f"{self.workspace.artifacts.url}/{run_files_store.run_prefix(self.id)}/files"
        return str(self.output_dir)

    def get_file_names(self) -> list[str]:
        """Names of the run's regular files (``outputs/...``, ``logs/...`` and the names the script
        gave ``run.upload_file``): what ``download_file`` takes. Links the script made are not
        files: see :meth:`get_links`."""
        return self.list_entries().files

    def get_links(self) -> dict[str, str]:
        """The symbolic links the script left under ``outputs/`` and ``logs/``: name -> the text the
        link holds. Recorded as links only: what they point to is never read, collected or served."""
        return self.list_entries().links

    def list_entries(self) -> RunFiles:
        """The run's regular files and its links (see get_links) in one listing: from the workspace
        once the run is collected, from its target before (nothing while the target is out of reach
        from here, see :meth:`elsewhere`)."""
        record = self._record()
        if record["collected"]:
            if self._remote:
                return shown(run_files_store.manifest_entries(self._manifest()))
            return shown(list_folder(self.output_dir))
        if self.elsewhere(record):
            return RunFiles()
        return shown(self.target.list_entries(self.id))

    def _manifest(self) -> dict[str, Any] | None:
        return run_files_store.read_manifest(self.workspace.artifacts, self.id)

    def open_file(self, name: str) -> tuple[BinaryIO, int]:
        """One run file (a name from ``get_file_names()``) open for reading, and its size. A file in
        an object store streams from it; a file on this machine is opened without following links.

        Raises FileNotFoundError for a name the run has no regular file of, a link included.
        """
        record = self._record()
        missing = FileNotFoundError(f"Run {self.id} has no file {name!r}; see get_file_names().")
        path = stored_name(name)
        if record["collected"] and self._remote:
            entry = run_files_store.file_entry(self._manifest(), path)
            if entry is None:
                raise missing
            stream = run_files_store.StoredFile(self.workspace.artifacts, entry)
            return io.BufferedReader(stream, run_files_store.STREAM_BLOCK), stream.size
        if record["collected"]:
            fd = tree.open_file(str(self.output_dir), path)
            if fd is None:
                raise missing
            return os.fdopen(fd, "rb"), os.fstat(fd).st_size
        if name not in self.list_entries().files:
            raise missing
        data = self.target.read_file(self.id, path)
        return io.BytesIO(data), len(data)

    def download_file(self, name: str, output_file_path: str | os.PathLike[str] | None = None) -> Path:
        """Copy one run file (a name from ``get_file_names()``) to ``output_file_path``.

        Raises FileNotFoundError for a name the run has no regular file of, a link included.
        """
        entries = self.list_entries()
        if name in entries.links:
            raise FileNotFoundError(
                f"Run {self.id}: {name!r} is a symbolic link (to {entries.links[name]!r}), not a file; "
                "links are listed by get_links() and never followed."
            )
        if name not in entries.files:
            raise FileNotFoundError(f"Run {self.id} has no file {name!r}; see get_file_names().")
        dest = Path(output_file_path) if output_file_path else Path.cwd() / Path(name).name
        if dest.is_dir():
            dest = dest / Path(name).name
        make_dirs(dest.parent)
        src, _size = self.open_file(name)
        with src, open(dest, "wb") as out:
            shutil.copyfileobj(src, out, tree.CHUNK)
        return dest

    def get_log_tail(self, max_lines: int = 30, max_bytes: int = 64 * 1024) -> str:
        size = self.target_log_size()
        data = self.read_log(max(0, size - max_bytes))
        return "\n".join(data.decode("utf-8", "replace").splitlines()[-max_lines:])

    def target_log_size(self) -> int:
        """The log's size in bytes, from where :meth:`read_log` reads it."""
        record = self._record()
        if record["collected"]:
            if self._remote:
                entry = run_files_store.file_entry(self._manifest(), STD_LOG)
                return int(entry["size"]) if entry else 0
            return _collected_size(self.output_dir, STD_LOG)
        if self._remote and self._log_from_store(record):
            return run_files_store.log_end(run_files_store.log_chunks(self.workspace.artifacts, self.id))
        try:
            return self.target.file_size(self.id, STD_LOG)
        except (MLTrainError, OSError) as exc:
            if not self._remote:
                raise
            self._target_unreadable(exc)
            return run_files_store.log_end(run_files_store.log_chunks(self.workspace.artifacts, self.id))

    def read_log(self, offset: int = 0, length: int | None = None) -> bytes:
        """The run's stdout+stderr from ``offset`` (bytes; at most ``length`` of them); b"" when the
        script replaced its log with a link (never followed).

        Read from the collected copy once the run is collected (the artifact store's, or this
        machine's with a local store); before, from the target, or from the live log chunks in the
        artifact store where this host cannot read the target (a local-target run of another host)
        or the store has more of it (the run's files wait in another host's cache, and its
        container is gone).
        """
        record = self._record()
        limit = None if length is None else max(0, length)
        if record["collected"]:
            if self._remote:
                entry = run_files_store.file_entry(self._manifest(), STD_LOG)
                if entry is None:
                    return b""
                return run_files_store.read_file(self.workspace.artifacts, entry, offset, limit)
            return read_collected(self.output_dir, STD_LOG, offset, limit)
        if self._remote and self._log_from_store(record):
            return run_files_store.read_log(self.workspace.artifacts, self.id, offset, limit)
        try:
            return self.target.read_file(self.id, STD_LOG, offset, length)
        except (MLTrainError, OSError) as exc:
            if not self._remote:
                raise
            self._target_unreadable(exc)
            return run_files_store.read_log(self.workspace.artifacts, self.id, offset, limit)

    def _target_unreadable(self, exc: BaseException) -> None:
        # A host without the target's connection or keys (an api-server, a laptop) still reads the
        # live log: the chunks the run's follower pushes to the artifact store.
        log.debug(
            "Run %s: its target is not readable from here (%s); the log comes from the store", self.id, exc
        )

    def _log_from_store(self, record: dict[str, Any]) -> bool:
        """Whether the live log is read from the store's chunks rather than the target: where this
        host cannot read the target, or where the run's files wait in another host's cache and
        the store holds more of the log than the target (which may have let the run go: a
        removed container). Everywhere else the target is as fresh as it gets."""
        if self.elsewhere(record) is not None:
            return True
        if not self._pending_elsewhere(record):
            return False
        try:
            on_target = self.target.file_size(self.id, STD_LOG)
        except (MLTrainError, OSError):
            return True
        in_store = run_files_store.log_end(run_files_store.log_chunks(self.workspace.artifacts, self.id))
        return in_store > on_target


class LogFollower:
    """Yields complete new log lines on each call: the log streams by offset, never re-read, at
    most ``chunk`` bytes per call (``behind`` says more was there), so a log that grew by
    gigabytes between two polls never lands in memory at once."""

    CHUNK = 4 * 1024 * 1024

    def __init__(self, run: Run, offset: int = 0, chunk: int = CHUNK):
        self.run = run
        self.offset = offset
        self.chunk = chunk
        self.behind = False
        self._partial = b""

    def read(self, final: bool = False) -> list[str]:
        """The complete lines of the next chunk; with ``final`` (the run ended) and nothing more
        to read, also a last line the script never ended."""
        data = self.run.read_log(self.offset, self.chunk)
        self.offset += len(data)
        self.behind = len(data) >= self.chunk
        data = self._partial + data
        lines = data.split(b"\n")
        self._partial = lines.pop()
        if len(self._partial) > self.chunk:  # a line longer than a chunk goes out in pieces
            lines.append(self._partial)
            self._partial = b""
        if final and not self.behind and self._partial:
            lines.append(self._partial)
            self._partial = b""
        return [line.decode("utf-8", "replace").rstrip("\r") for line in lines]

    def lines(self, final: bool = False) -> Iterator[str]:
        """Every new line up to the log's current end, a chunk at a time."""
        while True:
            yield from self.read(final)
            if not self.behind:
                return


def _masked_environment(environment: dict[str, Any]) -> dict[str, Any]:
    """The recorded environment, masked again when shown: records written before a variable name
    or URL form was known to be secret get today's masking too (masking is idempotent)."""
    env = dict(environment)
    variables = env.get("environment_variables")
    if isinstance(variables, dict):
        env["environment_variables"] = {
            k: mask_variable(str(k), v) if isinstance(v, str) else v for k, v in variables.items()
        }
    python = env.get("python")
    if isinstance(python, dict) and isinstance(python.get("requirements"), list):
        env["python"] = {
            **python,
            "requirements": [redact_url(r) if isinstance(r, str) else r for r in python["requirements"]],
        }
    return env


def list_run_files(run_dir: Path) -> list[str]:
    """Names of a run folder's regular files under ``outputs/`` and ``logs/``, as ``get_file_names``
    gives them (links left out, none followed)."""
    return list_folder(run_dir).files


def read_collected(run_dir: Path, name: str, offset: int = 0, limit: int | None = None) -> bytes:
    """Bytes of a collected run file from ``offset`` (at most ``limit``), opened without following a
    link; b"" when there is no such regular file."""
    try:
        return tree.read_file(str(run_dir), name, offset, limit)
    except FileNotFoundError:
        return b""


def _collected_size(run_dir: Path, name: str) -> int:
    try:
        return tree.file_size(str(run_dir), name)
    except FileNotFoundError:
        return 0


def _dead_submitter(record: dict[str, Any], workspace_root: Path) -> str | None:
    """Why a run that never reached its target is lost: its submitting process on this host ended."""
    owner = record["properties"].get("mltrain.submitted_by", "")
    host, _, pid = owner.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return None  # submitted elsewhere: nothing to judge by from here
    if record["properties"].get("mltrain.workspace") != str(workspace_root):
        return None  # another workspace's target may hold the run: no verdict from this one
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return f"the submitting process (pid {pid} on {host}) ended while the run was {record['status']}"
    except PermissionError:
        return None
    if int(pid) == os.getpid():
        return None
    try:  # a zombie is not our submitter (a recycled pid is not detected: the run waits)
        with open(f"/proc/{pid}/stat", encoding="utf-8") as f:
            if f.read().split(") ", 1)[1].split()[0] == "Z":
                return (
                    f"the submitting process (pid {pid} on {host}) ended while the run was {record['status']}"
                )
    except (OSError, IndexError):
        pass
    return None


def _history(runner: dict[str, Any] | None) -> list[tuple[RunStatus, float, str | None]]:
    if not runner:
        return []
    out: list[tuple[RunStatus, float, str | None]] = []
    for item in runner.get("history", []):
        try:
            out.append((RunStatus(item[0]), float(item[1]), None))
        except (ValueError, IndexError, TypeError):
            continue
    return out


def _terminal(runner: dict[str, Any] | None) -> bool:
    try:
        return bool(runner) and RunStatus(runner["state"]).is_terminal  # type: ignore[index]
    except (ValueError, KeyError):
        return False


def input_records(properties: dict[str, Any]) -> list[dict[str, Any]]:
    """The inputs a run recorded at submission (``mltrain.inputs``), [] for a run without any."""
    raw = properties.get("mltrain.inputs")
    if not raw:
        return []
    try:
        value = json.loads(raw)
    except ValueError:
        return []
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []
