"""EnvironmentHook: resolve an environment (name, YAML path or object) and build it for a target."""

from __future__ import annotations

import os
from typing import Any

from airflow.sdk import BaseHook

from airflow_provider_mltrain.core.compute import PreparedEnvironment, get_target
from airflow_provider_mltrain.core.environment import Environment, resolve_environment
from airflow_provider_mltrain.core.errors import MLTrainError
from airflow_provider_mltrain.core.workspace import Workspace


class EnvironmentHook(BaseHook):
    """Builds environments ahead of a run, e.g. in a task of its own; build output goes to the task log.

    ``ScriptRunOperator`` builds (or finds) its environment by itself; use this hook to build once
    before a fan-out of training tasks, or to check a spec in a DAG.
    """

    hook_name = "ML Training environment"

    def __init__(self, workspace: str | os.PathLike[str] | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.workspace = Workspace(workspace) if workspace else Workspace()

    def resolve(
        self, environment: Environment | str | os.PathLike[str] | None, base_dir: str | None = None
    ) -> Environment:
        """An Environment from an object, a YAML path (relative to ``base_dir`` first) or a name."""
        return resolve_environment(environment, self.workspace, base_dir)

    def build(
        self,
        environment: Environment | str | os.PathLike[str],
        compute_target: str = "local",
        rebuild: bool = False,
        base_dir: str | None = None,
    ) -> PreparedEnvironment:
        """Build the environment on the target, or return the cached build."""
        env = self.resolve(environment, base_dir)
        target = get_target(compute_target, self.workspace.root)
        target.check_environment(env)
        try:
            prepared = target.prepare_environment(
                env, lambda line: self.log.info("%s", line), rebuild=rebuild
            )
        except MLTrainError as exc:
            self.workspace.store.record_build(env.content_hash(), target.name, "failed", error=str(exc))
            raise
        if prepared.built:
            self.workspace.store.record_build(
                env.content_hash(), target.name, "built", seconds=prepared.seconds
            )
        self.log.info(
            "Environment %s (%s) %s on %s: %s",
            env.name,
            env.content_hash()[:12],
            "built" if prepared.built else "found in the cache",
            target.name,
            prepared.interpreter,
        )
        return prepared
