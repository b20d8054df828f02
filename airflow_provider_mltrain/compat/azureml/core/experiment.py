"""``azureml.core.Experiment``: mltrain's Experiment taking Azure ML's configs and filters."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

from airflow_provider_mltrain.compat.azureml.core.run import Run
from airflow_provider_mltrain.compat.azureml.core.script_run_config import ScriptRunConfig
from airflow_provider_mltrain.core.compute import ComputeTarget, get_target
from airflow_provider_mltrain.core.environment import InvalidEnvironment
from airflow_provider_mltrain.core.errors import InvalidRunConfig
from airflow_provider_mltrain.core.experiment import Experiment as CoreExperiment
from airflow_provider_mltrain.core.run_config import ScriptRunConfig as CoreScriptRunConfig
from airflow_provider_mltrain.core.sweep import PARENT, HyperDriveConfig


class Experiment(CoreExperiment):
    """``Experiment(workspace=ws, name="digits")``. ``submit`` takes this layer's
    :class:`ScriptRunConfig` (or mltrain's) and returns this layer's :class:`Run`."""

    def __init__(self, workspace: Any, name: str, _skip_name_validation: bool = False, **kwargs: Any):
        super().__init__(workspace, name)

    def submit(self, config: Any, tags: dict[str, Any] | None = None, **kwargs: Any) -> Any:  # type: ignore[override]
        """Azure's ``submit(config, tags=None, **kwargs)``; mltrain's keywords (``run_id``,
        ``properties``, ``log``, ...) pass through."""
        if isinstance(config, HyperDriveConfig):
            azure = getattr(config, "_azureml_run_config", None)
            if azure is not None:
                config = copy.copy(config)
                config.run_config = self._prepare(azure)
            elif isinstance(config.run_config, CoreScriptRunConfig):
                config = copy.copy(config)
                config.run_config = self._map_target(config.run_config)
            return super().submit(config, tags=tags, **kwargs)
        if isinstance(config, ScriptRunConfig):
            config = self._prepare(config)
        elif isinstance(config, CoreScriptRunConfig):
            config = self._map_target(config)
        run = super().submit(config, tags=tags, **kwargs)
        return Run(self.workspace, run.id)

    def _map_target(self, config: CoreScriptRunConfig) -> CoreScriptRunConfig:
        """mltrain's own config: its Azure compute name mapped, and an Environment of this layer
        with ``docker.enabled`` checked as for this layer's config."""
        mapping = getattr(self.workspace, "compute_targets", None) or {}
        if isinstance(config.compute_target, str) and config.compute_target in mapping:
            config = copy.copy(config)
            config.compute_target = mapping[config.compute_target]
        env: Any = config.environment
        if getattr(getattr(env, "docker", None), "enabled", False):
            self._check_container(config, f"environment {env.name!r} has docker.enabled = True", False)
        return config

    def _prepare(self, src: ScriptRunConfig) -> CoreScriptRunConfig:
        """mltrain's config for ``src``, refused when it asks for a container the target lacks."""
        config = src.to_mltrain(getattr(self.workspace, "compute_targets", None))
        return self._check_container(config, src.needs_docker(), src.refuses_docker())

    def _check_container(
        self, config: CoreScriptRunConfig, why: str | None, refuses: bool
    ) -> CoreScriptRunConfig:
        if why is None and not refuses:
            return config
        target = config.compute_target
        if not isinstance(target, (str, ComputeTarget)):
            return config  # ScriptRunConfig's own type check says what is wrong
        kind = get_target(target, self.workspace.root).kind
        if why and kind != "docker":
            raise InvalidEnvironment(
                f"The run must be in a container ({why}), but compute_target {_name(target)!r} is a "
                f"{kind} target, which runs no container. Submit to a Docker connection (type "
                "mltrain_docker; map an Azure compute name to it in config.json's "
                "mltrain.compute_targets), or turn the container off (env.docker.enabled = False)."
            )
        if refuses and kind == "docker":
            raise InvalidRunConfig(
                f"docker_runtime_config has use_docker=False, but compute_target {_name(target)!r} is a "
                "Docker connection: its runs are containers. Drop use_docker=False or pick another target."
            )
        return config

    def get_runs(
        self,
        type: str | None = None,
        tags: str | dict[str, Any] | None = None,
        properties: str | dict[str, Any] | None = None,
        include_children: bool = False,
    ) -> Iterator[Run]:
        """Runs of this experiment, newest first. ``tags``/``properties``: a name (the run has it)
        or a dict of names to values (the run has each value). ``type`` ``"hyperdrive"`` keeps
        sweeps; children of sweeps and runs are left out unless ``include_children``."""
        wanted_tags = _filter(tags, "tags")
        wanted_props = _filter(properties, "properties")
        for record in self.workspace.store.list_runs(experiment=self.name):
            props = record["properties"]
            if not include_children and props.get(PARENT):
                continue
            if type is not None:
                kind = "hyperdrive" if props.get("mltrain.kind") == "sweep" else "azureml.scriptrun"
                if type.lower() not in (kind, kind.split(".")[-1]):
                    continue
            if _matches(record["tags"], wanted_tags) and _matches(props, wanted_props):
                yield Run(self.workspace, record["id"])

    def list_runs(self, status: str | None = None, tags: dict[str, str] | None = None) -> list[Run]:  # type: ignore[override]
        return [Run(self.workspace, r.id) for r in super().list_runs(status=status, tags=tags)]


def _name(target: Any) -> str:
    return target if isinstance(target, str) else getattr(target, "name", str(target))


def _filter(value: str | dict[str, Any] | None, what: str) -> dict[str, str | None]:
    if value is None:
        return {}
    if isinstance(value, str):
        return {value: None}
    if isinstance(value, dict):
        return {str(k): None if v is None else str(v) for k, v in value.items()}
    raise InvalidRunConfig(f"get_runs {what} must be a name or a dict of names to values, got {value!r}.")


def _matches(have: dict[str, Any], wanted: dict[str, str | None]) -> bool:
    return all(k in have and (v is None or str(have[k]) == v) for k, v in wanted.items())


__all__ = ["Experiment"]
