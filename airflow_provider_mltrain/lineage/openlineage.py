"""What ``ScriptRunOperator`` reports to OpenLineage: its input and output datasets and a run facet.

Only the OpenLineage provider's listener calls in here, so ``openlineage`` and
``airflow.providers.openlineage`` are imported inside the functions: without that provider the
operator works as before and nothing of this module's dependencies is loaded.

Everything is built from what the operator kept in memory while it ran (the run's details, final
metrics, registered model): the listener may call from a forked process, which must not use the
parent's run-store connections.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from airflow.providers.openlineage.extractors import OperatorLineage

# The key of our run facet in an event's ``run.facets``. Its JSON Schema ships in this package and
# the ML Training app of every api-server serves it (SCHEMA_PATH, no login: it holds no data), so
# the facet's ``_schemaURL`` is an address the deployment that sent the event answers.
RUN_FACET = "mltrain_run"
SCHEMA_FILE = Path(__file__).with_name("MLTrainRunFacet.json")
SCHEMA_PATH = "/mltrain/lineage/MLTrainRunFacet.json"
SCHEMA_POINTER = "#/$defs/MLTrainRunFacet"
_SCHEMES = {"s3a": "s3", "s3n": "s3", "gcs": "gs", "local": "file"}


@dataclass
class RunLineage:
    """What the operator keeps of its run for the lineage events: the run's details once it ended
    (``Run.get_details()``), its final metrics, and the model version it registered."""

    run_id: str
    details: dict[str, Any] | None = None
    metrics: dict[str, float] | None = None  # None: not read (yet, or the read failed)
    model: dict[str, Any] | None = None  # name, version, size, files
    artifacts_url: str = ""


def dataset_identity(location: str) -> tuple[str, str]:
    """OpenLineage's (namespace, name) of a URL or local path, as the openlineage provider's asset
    converters give them: ``s3://bucket/key`` is ``("s3://bucket", "key")``, a local path or
    ``file:///p`` is ``("file", "/p")``; a trailing ``/`` is dropped, so a folder is one dataset."""
    if "://" not in location:
        path = os.path.abspath(os.path.expanduser(location))
        return "file", path.rstrip("/") or "/"
    scheme, rest = location.split("://", 1)
    scheme = _SCHEMES.get(scheme.lower(), scheme.lower())
    authority, _, path = rest.partition("/")
    authority = authority.rsplit("@", 1)[-1] if scheme != "abfss" else authority  # no user:password
    path = path.rstrip("/")
    if scheme == "file":
        namespace = f"file://{authority}" if authority and authority != "localhost" else "file"
        return namespace, "/" + path
    return f"{scheme}://{authority}", path or "/"


def source_location(value: Any) -> str | None:
    """The URL or path of one entry of ``inputs=``: a string, a path, an ``Input``, an Airflow
    ``Asset`` (its URI) or an ``ObjectStoragePath``; None for anything else (never raises)."""
    from airflow_provider_mltrain.core.inputs import Input

    if isinstance(value, Input):
        value = value.source
    uri = getattr(value, "uri", None)
    if isinstance(uri, str):  # an Asset
        return uri
    if hasattr(value, "path") and hasattr(value, "protocol"):  # not .fs: that resolves credentials
        protocol = value.protocol if isinstance(value.protocol, str) else value.protocol[0]
        path = str(value.path)
        return path if protocol in ("", "file", "local") else f"{protocol}://{path}"
    if isinstance(value, (str, os.PathLike)):
        return os.fspath(value)
    return None


def schema_url() -> str:
    """``<[api] base_url>/mltrain/lineage/MLTrainRunFacet.json#/$defs/MLTrainRunFacet``: an absolute
    URL, as OpenLineage asks, so with no ``base_url`` set the api-server's default address
    (``http://localhost:8080``, Airflow's own fallback for the log URLs of task instances)."""
    from airflow_provider_mltrain.version_compat import conf

    base = (conf.get("api", "base_url", fallback="") or "").rstrip("/")
    if "://" not in base:
        base = "http://localhost:8080" + base
    return f"{base}{SCHEMA_PATH}{SCHEMA_POINTER}"


@functools.cache
def _run_facet_class() -> type:
    from openlineage.client.facet_v2 import RunFacet

    class MLTrainRunFacet(RunFacet):  # type: ignore[misc]
        """The mltrain run behind a task: fields added per event (see MLTrainRunFacet.json)."""

        @staticmethod
        def _get_schema() -> str:
            return schema_url()

    return MLTrainRunFacet


def run_facet(fields: Mapping[str, Any]) -> Any:
    """Our run facet holding ``fields`` (None values left out), with our ``_schemaURL``."""
    facet = _run_facet_class()()
    return facet.with_additional_properties(**{k: v for k, v in fields.items() if v is not None})


def _version(version: str | None) -> dict[str, Any]:
    from openlineage.client.facet_v2 import dataset_version_dataset

    return {"version": dataset_version_dataset.DatasetVersionDatasetFacet(version)} if version else {}


def _input(location: str, version: str | None = None) -> Any:
    from openlineage.client.event_v2 import InputDataset

    namespace, name = dataset_identity(location)
    return InputDataset(namespace=namespace, name=name, facets=_version(version))


def _output(
    location: str, version: str | None = None, size: int | None = None, files: int | None = None
) -> Any:
    from openlineage.client.event_v2 import OutputDataset
    from openlineage.client.facet_v2 import output_statistics_output_dataset as statistics

    namespace, name = dataset_identity(location)
    stats: dict[str, Any] = {}
    if size is not None or files is not None:
        stats["outputStatistics"] = statistics.OutputStatisticsOutputDatasetFacet(size=size, fileCount=files)
    return OutputDataset(namespace=namespace, name=name, facets=_version(version), outputFacets=stats)


def _declared_inputs(inputs: Any) -> list[Any]:
    out = []
    for value in (inputs or {}).values() if isinstance(inputs, Mapping) else ():
        location = source_location(value)
        if location:
            out.append(_input(location))
    return out


def _git(properties: Mapping[str, Any]) -> dict[str, Any]:
    dirty = properties.get("mltrain.git.dirty")
    return {
        "gitCommit": properties.get("mltrain.git.commit"),
        "gitBranch": properties.get("mltrain.git.branch"),
        "gitDirty": None if dirty is None else dirty == "true",
        "gitRepositoryUri": properties.get("mltrain.git.repository_uri"),
    }


def on_start(experiment: str, target: str, inputs: Any, output_assets: Mapping[str, str]) -> OperatorLineage:
    """What the task is about to read and write, from its rendered fields (no I/O): the run does
    not exist yet, so the run facet holds the experiment and compute target only."""
    from airflow.providers.openlineage.extractors import OperatorLineage

    return OperatorLineage(
        inputs=_declared_inputs(inputs),
        outputs=[_output(uri) for uri in output_assets.values()],
        run_facets={RUN_FACET: run_facet({"experiment": experiment, "computeTarget": target})},
    )


def on_end(
    experiment: str, target: str, inputs: Any, output_assets: Mapping[str, str], run: RunLineage | None
) -> OperatorLineage:
    """What the run read (each input with its content hash as version), wrote (each uploaded
    output under the Asset it publishes to, and the registered model version) and its run facet.
    A run that never started, or was not followed to its end, reports the declared inputs and
    what is known of it."""
    from airflow.providers.openlineage.extractors import OperatorLineage

    details = run.details if run else None
    if details is None:
        fields: dict[str, Any] = {
            "runId": run.run_id if run else None,
            "experiment": experiment,
            "computeTarget": target,
        }
        return OperatorLineage(inputs=_declared_inputs(inputs), run_facets={RUN_FACET: run_facet(fields)})
    assert run is not None
    records = [r for r in details.get("inputDatasets") or [] if isinstance(r.get("uri"), str)]
    uploaded = [o for o in details.get("outputDatasets") or [] if o.get("uploaded")]
    outputs = [
        _output(output_assets.get(o["name"], o["uri"]), size=o.get("size"), files=o.get("files"))
        for o in uploaded
    ]
    model = run.model
    if model is not None:
        outputs.append(
            _output(
                f"{run.artifacts_url.rstrip('/')}/models/{model['name']}",
                version=str(model["version"]),
                size=model.get("size"),
                files=model.get("files"),
            )
        )
    environment = details.get("environment") or {}
    properties = details.get("properties") or {}
    fields = {
        "runId": details["run_id"],
        "experiment": details["experiment"],
        "computeTarget": details["target"],
        "status": details["status"],
        "exitCode": details.get("exit_code"),
        "environmentName": environment.get("name"),
        "environmentVersion": environment.get("version"),
        "environmentHash": environment.get("hash"),
        "snapshotId": details.get("snapshot_id"),
        **_git(properties),
        "previousRunId": properties.get("mltrain.previous_run_id"),
        "metrics": dict(run.metrics or {}),
        "outputs": {o["name"]: o["uri"] for o in uploaded} or None,
        "model": {"name": model["name"], "version": model["version"]} if model else None,
    }
    return OperatorLineage(
        inputs=[_input(r["uri"], r.get("sha256") or r.get("version")) for r in records],
        outputs=outputs,
        run_facets={RUN_FACET: run_facet(fields)},
    )
