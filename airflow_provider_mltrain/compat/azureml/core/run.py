"""``azureml.core.Run`` on the driver side: mltrain's Run, with ``Run(experiment, run_id)`` and
Azure ML's keys in ``get_details()`` beside mltrain's."""

from __future__ import annotations

from typing import Any

from airflow_provider_mltrain.core.run import Run as CoreRun

# mltrain framework -> Azure's spelling in runDefinition.
_FRAMEWORK = {"python": "Python", "pyspark": "PySpark"}


def _utc(iso: str | None) -> str | None:
    """Azure's form of a UTC time: ``2021-03-01T10:00:00.123456Z``."""
    return iso.replace("+00:00", "Z") if iso else None


class Run(CoreRun):
    """``Run(experiment, run_id)`` (Azure's order) or ``Run(workspace, run_id)`` (mltrain's)."""

    def __init__(self, experiment: Any, run_id: str, **kwargs: Any):
        from airflow_provider_mltrain.core.experiment import Experiment

        workspace = experiment.workspace if isinstance(experiment, Experiment) else experiment
        super().__init__(workspace, run_id)

    def wait_for_completion(  # type: ignore[override]
        self,
        show_output: bool = False,
        wait_post_processing: bool = False,
        raise_on_error: bool = True,
        **kwargs: Any,
    ) -> dict[str, Any]:
        """Azure's argument order. Post-processing (collecting the files, registering models) is
        always waited for; mltrain's keywords (``timeout``, ``poll_interval``, ...) pass through."""
        return super().wait_for_completion(show_output=show_output, raise_on_error=raise_on_error, **kwargs)

    def get_portal_url(self) -> str:
        """The run's page in the Airflow UI: ``<[api] base_url>/mltrain/runs/<run id>``."""
        from airflow_provider_mltrain.links.run import run_page_url  # imports Airflow: only here

        return run_page_url(self.id)

    def get_details(self) -> dict[str, Any]:
        """mltrain's details, plus Azure's ``runId``, ``startTimeUtc``, ``endTimeUtc``,
        ``runDefinition`` and ``logFiles`` (``status``, ``target``, ``properties``,
        ``inputDatasets`` and ``outputDatasets`` are already the same)."""
        details = super().get_details()
        env = details.get("environment") or {}
        python = env.get("python") or {}
        docker = env.get("docker") or {}
        requirements = list(python.get("requirements") or [])
        limit = details["properties"].get("mltrain.max_run_duration_seconds")
        framework = details["properties"].get("mltrain.framework", "python")
        log_files = {}
        if details.get("output_dir") and "logs/std_log.txt" in self.get_file_names():
            log_files["logs/std_log.txt"] = f"{details['output_dir']}/logs/std_log.txt"
        details.update(
            {
                "runId": details["run_id"],
                "startTimeUtc": _utc(details["start_time"]),
                "endTimeUtc": _utc(details["end_time"]),
                "runDefinition": {
                    "script": details["script"],
                    "arguments": list(details["arguments"] or []),
                    "target": details["target"],
                    "framework": _FRAMEWORK.get(framework, framework),
                    "maxRunDurationSeconds": float(limit) if limit else None,
                    "sourceDirectory": details["source_directory"],
                    "snapshotId": details["snapshot_id"],
                    "environment": {
                        "name": env.get("name"),
                        "version": env.get("version"),
                        "python": {
                            "userManagedDependencies": not env.get("managed", False),
                            "interpreterPath": python.get("interpreter_path"),
                            "condaDependencies": {
                                "dependencies": [
                                    *(
                                        [f"python={python['python_version']}"]
                                        if python.get("python_version")
                                        else []
                                    ),
                                    "pip",
                                    {"pip": requirements},
                                ]
                            },
                        },
                        "environmentVariables": dict(env.get("environment_variables") or {}),
                        "docker": {
                            "baseImage": docker.get("base_image"),
                            "enabled": bool(env.get("image")),  # run in a container image
                        },
                    },
                },
                "logFiles": log_files,
            }
        )
        return details


__all__ = ["Run"]
