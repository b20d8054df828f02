"""Provider metadata Airflow reads through the ``apache_airflow_provider`` entry point. Plain data."""

from __future__ import annotations

from typing import Any


def get_provider_info() -> dict[str, Any]:
    return {
        "package-name": "airflow-provider-mltrain",
        "name": "ML Training",
        "description": "Submit training scripts to local, Docker, SSH and Spark compute, with "
        "snapshots, environments and run history.",
        "versions": ["0.1.0"],
        "integrations": [
            {
                "integration-name": "ML Training",
                "external-doc-url": "https://pypi.org/project/airflow-provider-mltrain/",
                "tags": ["software"],
            }
        ],
        "operators": [
            {
                "integration-name": "ML Training",
                "python-modules": ["airflow_provider_mltrain.operators.script_run"],
            }
        ],
        "sensors": [
            {
                "integration-name": "ML Training",
                "python-modules": ["airflow_provider_mltrain.sensors.run"],
            }
        ],
        "triggers": [
            {
                "integration-name": "ML Training",
                "python-modules": ["airflow_provider_mltrain.triggers.run"],
            }
        ],
        "hooks": [
            {
                "integration-name": "ML Training",
                "python-modules": [
                    "airflow_provider_mltrain.hooks.environment",
                    "airflow_provider_mltrain.hooks.compute",
                ],
            }
        ],
        # One connection type per compute target, with the form fields the Airflow UI shows.
        "connection-types": [
            # connection-types: docker
            # connection-types: ssh
            # connection-types: spark
        ],
        "config": {
            "mltrain": {
                "description": "Where airflow-provider-mltrain keeps runs, snapshots and environments.",
                "options": {
                    "workspace": {
                        "description": "Workspace root folder. Default: $AIRFLOW_HOME/mltrain.",
                        "version_added": "0.1.0",
                        "type": "string",
                        "example": "/data/mltrain",
                        "default": None,
                    },
                    "database_url": {
                        "description": "SQLAlchemy URL of the run store. Default: a SQLite file in "
                        "the workspace. Use PostgreSQL when workers on several hosts write runs.",
                        "version_added": "0.1.0",
                        "type": "string",
                        "sensitive": True,
                        "example": "postgresql+psycopg2://user:pass@db/mltrain",
                        "default": None,
                    },
                    "heartbeat_interval": {
                        "description": "Seconds between a runner's status.json heartbeats.",
                        "version_added": "0.1.0",
                        "type": "float",
                        "example": "5",
                        "default": "5",
                    },
                    "snapshot_max_size_mb": {
                        "description": "Largest snapshot accepted, in MB.",
                        "version_added": "0.1.0",
                        "type": "integer",
                        "example": "300",
                        "default": "300",
                    },
                    "snapshot_max_files": {
                        "description": "Most files a snapshot may hold.",
                        "version_added": "0.1.0",
                        "type": "integer",
                        "example": "2000",
                        "default": "2000",
                    },
                },
            }
        },
    }
