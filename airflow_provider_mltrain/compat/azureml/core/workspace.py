"""``azureml.core.Workspace``: an mltrain workspace found through Azure ML's ``config.json``.

``Workspace.from_config()`` looks where Azure ML does (``config.json`` or ``.azureml/config.json``
in the given folder, else the current one, then each parent) and reads::

    {
      "subscription_id": "...", "resource_group": "...", "workspace_name": "digits-ws",
      "mltrain": {
        "workspace": "/data/mltrain",          # the root; relative: to the project folder
        "database_url": "postgresql://...",    # optional, as Workspace(database_url=)
        "artifact_store": "s3://bucket/ml",    # optional, as Workspace(artifact_store=)
        "compute_targets": {"cpu-cluster": "docker_default"}   # Azure names -> connection ids
      }
    }

A relative ``workspace`` is taken from the project folder: the one holding ``config.json``, or
holding the ``.azureml`` folder it is in. Without it, the root is ``Workspace()``'s
(``MLTRAIN_WORKSPACE``, ...). Azure's three keys are kept as ``subscription_id``,
``resource_group`` and ``name``; nothing talks to Azure.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from airflow_provider_mltrain.core.errors import InvalidRunConfig, MLTrainError
from airflow_provider_mltrain.core.workspace import Workspace as CoreWorkspace

log = logging.getLogger(__name__)

MLTRAIN_KEYS = ("workspace", "database_url", "artifact_store", "compute_targets")


class WorkspaceConfigNotFound(MLTrainError, FileNotFoundError):
    """``Workspace.from_config()`` found no ``config.json``."""


class Workspace(CoreWorkspace):
    """Also ``Workspace(root)`` as in mltrain; ``compute_targets`` maps Azure compute names (what
    notebooks pass as ``compute_target="cpu-cluster"``) to mltrain target names."""

    def __init__(
        self,
        root: str | os.PathLike[str] | None = None,
        database_url: str | None = None,
        snapshot_limits: Any = None,
        artifact_store: Any = None,
        *,
        name: str | None = None,
        subscription_id: str | None = None,
        resource_group: str | None = None,
        compute_targets: dict[str, str] | None = None,
    ):
        super().__init__(root, database_url, snapshot_limits, artifact_store)
        self.name = name or self.root.name
        self.subscription_id = subscription_id
        self.resource_group = resource_group
        self.compute_targets: dict[str, str] = dict(compute_targets or {})

    @classmethod
    def from_config(
        cls,
        path: str | os.PathLike[str] | None = None,
        auth: Any = None,
        _logger: Any = None,
        _file_name: str | None = None,
    ) -> Workspace:
        """The workspace a ``config.json`` describes (see the module's docstring). ``auth`` is not
        used: an mltrain workspace has no Azure login."""
        file = find_config(path, _file_name or "config.json")
        try:
            data = json.loads(file.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise InvalidRunConfig(f"Cannot read workspace config {file}: {exc}.") from None
        if not isinstance(data, dict):
            raise InvalidRunConfig(f"Workspace config {file} must hold a JSON object.")
        ours = data.get("mltrain") or {}
        if not isinstance(ours, dict):
            raise InvalidRunConfig(f"Workspace config {file}: 'mltrain' must be an object.")
        unknown = sorted(set(ours) - set(MLTRAIN_KEYS))
        if unknown:
            raise InvalidRunConfig(
                f"Workspace config {file}: unknown key(s) mltrain.{', mltrain.'.join(unknown)}. "
                f"Known: {', '.join(MLTRAIN_KEYS)}."
            )
        targets = ours.get("compute_targets") or {}
        if not isinstance(targets, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in targets.items()
        ):
            raise InvalidRunConfig(
                f"Workspace config {file}: mltrain.compute_targets must map Azure compute names to "
                'connection ids, such as {"cpu-cluster": "docker_default"}.'
            )
        root = ours.get("workspace")
        if root is not None:
            root = Path(str(root)).expanduser()
            if not root.is_absolute():
                project = (
                    file.parent.parent if file.parent.name in (".azureml", "aml_config") else file.parent
                )
                root = project / root
        if auth is not None:
            log.info("Workspace.from_config: auth is not used; an mltrain workspace has no Azure login")
        ws = cls(
            root,
            database_url=ours.get("database_url"),
            artifact_store=ours.get("artifact_store"),
            name=data.get("workspace_name"),
            subscription_id=data.get("subscription_id"),
            resource_group=data.get("resource_group"),
            compute_targets=targets,
        )
        log.info("Workspace %s from %s: %s", ws.name, file, ws.root)
        return ws

    @classmethod
    def get(
        cls,
        name: str,
        auth: Any = None,
        subscription_id: str | None = None,
        resource_group: str | None = None,
        location: str | None = None,
        cloud: str | None = None,
        id: str | None = None,
    ) -> Workspace:
        """The default workspace (``MLTRAIN_WORKSPACE``, ...), called ``name``."""
        return cls(name=name, subscription_id=subscription_id, resource_group=resource_group)

    def target_name(self, name: str) -> str:
        """The mltrain target (``"local"`` or a connection id) for an Azure compute name."""
        return self.compute_targets.get(name, name)

    def get_run(self, run_id: str) -> Any:
        from airflow_provider_mltrain.compat.azureml.core.run import Run

        super().get_run(run_id)  # RunNotFound for an unknown id
        return Run(self, run_id)

    @property
    def experiments(self) -> dict[str, Any]:
        from airflow_provider_mltrain.compat.azureml.core.experiment import Experiment

        return {name: Experiment(self, name) for name in self.list_experiments()}

    def get_details(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "subscriptionId": self.subscription_id,
            "resourceGroup": self.resource_group,
            "root": str(self.root),
            "computeTargets": dict(self.compute_targets),
        }


def find_config(path: str | os.PathLike[str] | None, file_name: str = "config.json") -> Path:
    """Azure ML's search: a file given; else ``NAME`` or ``.azureml/NAME`` in the folder (default:
    the current one) and each of its parents."""
    start = Path(path).expanduser() if path is not None else Path.cwd()
    if start.is_file():
        return start.resolve()
    for folder in [start.resolve(), *start.resolve().parents]:
        for sub in ("", ".azureml", "aml_config"):
            candidate = folder / sub / file_name
            if candidate.is_file():
                return candidate
    raise WorkspaceConfigNotFound(
        f"No workspace config {file_name} in {start} or its parents (looked for {file_name} and "
        f".azureml/{file_name}). Write one (its 'mltrain' object names the workspace folder), or use "
        "Workspace() with MLTRAIN_WORKSPACE set."
    )


__all__ = ["Workspace", "WorkspaceConfigNotFound", "find_config"]
