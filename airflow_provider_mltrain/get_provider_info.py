"""Provider metadata Airflow reads through the ``apache_airflow_provider`` entry point. Plain data."""

from __future__ import annotations

from typing import Any


def _field(label: str, kind: str, default: Any = None) -> dict[str, Any]:
    """One connection form field (Airflow 3.2+ ``conn-fields``); empty means "not set"."""
    schema: dict[str, Any] = {"type": [kind, "null"]}
    if default is not None:
        schema["default"] = default
    return {"label": label, "schema": schema}


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
                "python-modules": [
                    "airflow_provider_mltrain.operators.script_run",
                    "airflow_provider_mltrain.operators.sweep",
                ],
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
                "python-modules": [
                    "airflow_provider_mltrain.triggers.run",
                    "airflow_provider_mltrain.triggers.sweep",
                ],
            }
        ],
        "extra-links": ["airflow_provider_mltrain.links.run.MLTrainRunLink"],
        "hooks": [
            {
                "integration-name": "ML Training",
                "python-modules": [
                    "airflow_provider_mltrain.hooks.environment",
                    "airflow_provider_mltrain.hooks.compute",
                    "airflow_provider_mltrain.hooks.ssh",
                    "airflow_provider_mltrain.hooks.docker",
                    "airflow_provider_mltrain.hooks.spark",
                ],
            }
        ],
        # Connection types of our own only, with the form fields the Airflow UI shows. Airflow keeps one
        # hook per type, so declaring the official providers' ssh or spark would take them over; those
        # connections are read as they are (hooks/compute.py).
        "connection-types": [
            {
                "connection-type": "mltrain_docker",
                "hook-class-name": "airflow_provider_mltrain.hooks.docker.DockerComputeHook",
                "hook-name": "ML Training: Docker compute",
                "conn-fields": {
                    "image": _field("Default image (when the environment names none)", "string"),
                    "network_mode": _field("Network mode (none, host, bridge, ...)", "string"),
                    "build_network_mode": _field("Network mode of image builds", "string"),
                    "user": _field("Container user (uid[:gid] or root)", "string", "1000:1000"),
                    "cpus": _field("CPUs", "number"),
                    "mem_limit": _field("Memory limit (e.g. 4g)", "string"),
                    "shm_size": _field("Shared memory size (e.g. 1g)", "string"),
                    "gpus": _field("GPUs (a count, or 'all')", "string"),
                    "cleanup": {
                        "label": "Remove finished containers",
                        "schema": {
                            "type": ["string", "null"],
                            "enum": ["never", "on_success", "always", None],
                            "default": "on_success",
                        },
                    },
                    "tls_ca_cert": _field("TLS CA certificate (path)", "string"),
                    "tls_client_cert": _field("TLS client certificate (path)", "string"),
                    "tls_client_key": _field("TLS client key (path)", "string"),
                    "tls_verify": _field("Verify the daemon's TLS certificate", "boolean", True),
                },
                "ui-field-behaviour": {
                    "hidden-fields": ["schema", "login", "password", "port"],
                    "relabeling": {"host": "Docker daemon URL"},
                    "placeholders": {
                        "host": "unix:///var/run/docker.sock or tcp://gpu-box:2376",
                        "extra": '{"environment": {"KEY": "value"}, "volumes": ["/data:/data:ro"]}',
                    },
                },
            },
            {
                # An ssh connection (the official SSH provider's type, which stays its own) with a form
                # for our extras too; the compute hooks read both types alike (hooks/compute.py).
                "connection-type": "mltrain_ssh",
                "hook-class-name": "airflow_provider_mltrain.hooks.ssh.SSHComputeHook",
                "hook-name": "ML Training: SSH compute",
                "conn-fields": {
                    "key_file": _field("Private key file (path on the Airflow workers)", "string"),
                    # format "password": Airflow masks these and keeps them out of logs.
                    "private_key": {
                        "label": "Private key (OpenSSH/PEM text)",
                        "schema": {"type": ["string", "null"], "format": "password"},
                    },
                    "private_key_passphrase": {
                        "label": "Private key passphrase",
                        "schema": {"type": ["string", "null"], "format": "password"},
                    },
                    "host_key": _field("Host public key (ssh-ed25519 AAAA...)", "string"),
                    "known_hosts": _field("known_hosts file (default ~/.ssh/known_hosts)", "string"),
                    "no_host_key_check": _field("Skip host key verification (unsafe)", "boolean", False),
                    "look_for_keys": _field("Try the keys in ~/.ssh and the SSH agent", "boolean", True),
                    "remote_root": _field("Remote root folder", "string", "~/.mltrain"),
                    "interpreter_path": _field("Remote Python", "string", "python3"),
                    "cleanup": {
                        "label": "Remove finished run folders",
                        "schema": {
                            "type": ["string", "null"],
                            "enum": ["never", "on_success", "always", None],
                            "default": "never",
                        },
                    },
                    "conn_timeout": _field("Connect timeout (seconds)", "number", 10),
                    "reconnect_timeout": _field("Reconnect for up to (seconds)", "number", 60),
                },
                "ui-field-behaviour": {
                    "hidden-fields": ["schema"],
                    "relabeling": {"login": "Username"},
                    "placeholders": {"host": "gpu-box.example.com", "port": "22"},
                },
            },
            {
                # A spark connection (the official Apache Spark provider's type, which stays its own)
                # with a form for our extras too.
                "connection-type": "mltrain_spark",
                "hook-class-name": "airflow_provider_mltrain.hooks.spark.SparkComputeHook",
                "hook-name": "ML Training: Spark compute",
                "conn-fields": {
                    "deploy-mode": {
                        "label": "Deploy mode (the driver runs on the gateway)",
                        "schema": {"type": ["string", "null"], "enum": ["client", None], "default": "client"},
                    },
                    "queue": _field("YARN queue", "string"),
                    "spark-binary": {
                        "label": "spark-submit binary",
                        "schema": {
                            "type": ["string", "null"],
                            "enum": ["spark-submit", "spark2-submit", "spark3-submit", None],
                            "default": "spark-submit",
                        },
                    },
                    "namespace": _field("Kubernetes namespace", "string"),
                    "principal": _field("Kerberos principal", "string"),
                    "keytab": _field("Kerberos keytab (path where spark-submit runs)", "string"),
                    "spark-conf": _field("Spark properties for every run (JSON object)", "object"),
                    "master-ui": _field("Standalone master web UI (http://master:8080)", "string"),
                    "gateway-conn-id": _field("SSH gateway: ssh connection id of the edge node", "string"),
                    "spark-home": _field("Spark installation on the SSH gateway (e.g. /opt/spark)", "string"),
                },
                "ui-field-behaviour": {
                    "hidden-fields": ["schema", "login", "password"],
                    "relabeling": {"host": "Master URL"},
                    "placeholders": {
                        "host": "spark://spark-master, yarn, k8s://https://k8s-api or local[*]",
                        "port": "7077",
                    },
                },
            },
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
                    "artifact_store": {
                        "description": "Where snapshots (and run files) are kept: a folder or an "
                        "fsspec URL such as s3://bucket/prefix, shared by every host. Default: the "
                        "workspace root; with a URL, the root is a local cache.",
                        "version_added": "0.1.0",
                        "type": "string",
                        "example": "s3://mltrain-artifacts/prod",
                        "default": None,
                    },
                    "artifact_store_conn_id": {
                        "description": "Airflow connection whose credentials open the artifact "
                        "store (aws for s3://). Unset: the backend's own configuration (AWS_* "
                        "variables, ~/.aws).",
                        "version_added": "0.1.0",
                        "type": "string",
                        "example": "mltrain_s3",
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
