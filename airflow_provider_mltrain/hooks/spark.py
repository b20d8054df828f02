"""SparkComputeHook: a Spark compute target from an Airflow ``spark`` (or ``mltrain_spark``) connection.

``spark`` connections are the official Apache Spark provider's: its hook stays the one Airflow gives
for that type, and this hook reads the same connection, so one connection serves a
``SparkSubmitOperator`` and a ``ScriptRunOperator``. The connection means what it means there: host
is the master URL (``spark://host``, ``yarn``, ``k8s://https://host``, ``local[*]``) with an optional
port, and the extras ``deploy-mode``, ``queue``, ``spark-binary`` (one of the provider's allowlist),
``namespace`` (Kubernetes) and ``principal``/``keytab`` (Kerberos, as Spark properties) are honoured;
``rest-scheme``, ``rest-port`` and ``yarn_resourcemanager_webapp_address`` are accepted and not used.
Our own extras: ``spark-conf`` (Spark properties for every run), ``master-ui`` (a standalone master's
web UI, from which the application's state is read), ``gateway-conn-id`` (an ``ssh`` connection:
the edge node where spark-submit runs) and ``spark-home`` (the Spark installation there). The
``mltrain_spark`` type is the same connection with a form for them all.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow_provider_mltrain.core.environment import Environment
from airflow_provider_mltrain.core.errors import InvalidRunConfig, MLTrainError
from airflow_provider_mltrain.hooks.compute import TEST_FAILURES, ComputeHook
from airflow_provider_mltrain.targets.spark import (
    SPARK_HOME_NEEDS_GATEWAY,
    SparkSettings,
    SparkTarget,
    check_java,
    check_reachable,
    find_spark_submit,
    normalize_conf,
)

if TYPE_CHECKING:
    from airflow_provider_mltrain.targets.ssh import SSHTarget

# Ours, with a field each in the mltrain_spark form.
EXTRAS = (
    "deploy-mode",
    "queue",
    "spark-binary",
    "spark-conf",
    "master-ui",
    "namespace",
    "gateway-conn-id",
    "spark-home",
)
# The official provider's that a compute target has no use for: accepted, so its connections work.
OFFICIAL_UNUSED_EXTRAS = ("rest-scheme", "rest-port", "yarn_resourcemanager_webapp_address")
KERBEROS_EXTRAS = ("principal", "keytab")
KNOWN_EXTRAS = (*EXTRAS, *KERBEROS_EXTRAS, *OFFICIAL_UNUSED_EXTRAS)


class SparkComputeHook(ComputeHook):
    """Builds the Spark target of one connection; ``test_connection`` reaches the master."""

    conn_type = "mltrain_spark"
    hook_name = "ML Training: Spark compute"
    default_conn_name = "spark_default"

    def settings(self) -> SparkSettings:
        conn = self.get_connection(self.conn_id)
        extra = dict(conn.extra_dejson)
        where = f"Connection {self.conn_id!r}"
        unknown = sorted(set(extra) - set(KNOWN_EXTRAS))
        if unknown:
            raise InvalidRunConfig(
                f"{where} has unknown extras {', '.join(unknown)}; known: {', '.join(KNOWN_EXTRAS)}."
            )
        if extra.get("spark-home") and not extra.get("gateway-conn-id"):
            raise InvalidRunConfig(f"{where}: {SPARK_HOME_NEEDS_GATEWAY}")
        host = (conn.host or "").strip()
        if not host:
            raise InvalidRunConfig(
                f"{where} has no host: set it to the Spark master URL (spark://HOST, yarn, "
                "k8s://https://HOST or local[*]) and the port separately or in the URL."
            )
        master = f"{host}:{conn.port}" if conn.port and host.startswith(("spark://", "k8s://")) else host
        conf = extra.get("spark-conf") or {}
        if isinstance(conf, str):
            try:
                conf = json.loads(conf)
            except ValueError:
                raise InvalidRunConfig(
                    f"{where}: extra spark-conf must be a JSON object of Spark properties."
                ) from None
        if extra.get("namespace") and master.startswith("k8s://"):
            conf = {"spark.kubernetes.namespace": extra["namespace"], **conf}
        conf = {**_kerberos_conf(extra, where), **conf}
        try:
            return SparkSettings(
                master=master,
                deploy_mode=extra.get("deploy-mode") or "client",
                queue=extra.get("queue") or None,
                spark_binary=extra.get("spark-binary") or "spark-submit",
                conf=normalize_conf(conf, f"{where} extra spark-conf"),
                ui_url=extra.get("master-ui") or None,
                spark_home=extra.get("spark-home") or None,
            )
        except InvalidRunConfig as exc:
            raise InvalidRunConfig(f"{where}: {exc}") from None

    def gateway(self, workspace_root: Path) -> SSHTarget | None:
        """The SSH target of the ``gateway-conn-id`` extra (spark-submit runs there), or None."""
        extra = dict(self.get_connection(self.conn_id).extra_dejson)
        gateway_id = extra.get("gateway-conn-id")
        if not gateway_id:
            return None
        where = f"Connection {self.conn_id!r}"
        if not isinstance(gateway_id, str):
            raise InvalidRunConfig(
                f"{where}: extra gateway-conn-id must be an ssh connection id, got {gateway_id!r}."
            )
        try:
            conn = self.get_connection(gateway_id)
        except Exception as exc:  # AirflowNotFoundException moved between versions: match on the name
            if type(exc).__name__ != "AirflowNotFoundException":
                raise
            raise InvalidRunConfig(
                f"{where}: extra gateway-conn-id names {gateway_id!r}, which is not an Airflow connection. "
                "Create an ssh connection with that id (host, login, key: the edge node that runs "
                "spark-submit) or fix the extra; nothing was submitted."
            ) from None
        if conn.conn_type not in ("ssh", "mltrain_ssh"):
            raise InvalidRunConfig(
                f"{where}: extra gateway-conn-id names {gateway_id!r}, a connection of type "
                f"{conn.conn_type!r}; the gateway must be an ssh (or mltrain_ssh) connection."
            )
        from airflow_provider_mltrain.hooks.ssh import SSHComputeHook

        return SSHComputeHook(conn_id=gateway_id).get_target(workspace_root)

    def get_target(self, workspace_root: Path) -> SparkTarget:
        settings = self.settings()
        return SparkTarget(
            self.conn_id,
            Path(workspace_root) / "targets" / f"spark-{self.conn_id}",
            settings,
            gateway=self.gateway(workspace_root),
        )

    def test_connection(self) -> tuple[bool, str]:
        """Find spark-submit and Java and reach the master, where runs would: here or on the gateway."""
        try:
            settings = self.settings()
            target = self.get_target(Path("/nonexistent-unused"))
        except TEST_FAILURES as exc:
            return False, str(exc)
        try:
            if target.gateway is not None:
                # The checks of a submission with the gateway's own Python (a user-managed environment).
                target.check_environment(Environment(name="connection-test"))
                found = target.check_gateway(None)["spark_submit"]
                binary = f"{found} on {target.gateway.settings.host}"
            else:
                binary = find_spark_submit(settings.spark_binary)
                check_java()
                check_reachable(settings.master)
            message = f"{binary} can submit to {settings.master}"
            if settings.ui_url:
                state = target.master_state()
                if state is None:
                    ui = settings.ui_url
                    return False, f"The Spark master answers at {settings.master}, but its UI {ui} does not."
                message += f" ({state.get('status', '?')}, {state.get('aliveworkers', '?')} alive workers)"
            return True, message
        except MLTrainError as exc:
            return False, str(exc)
        finally:
            target.close()

    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        return {
            "hidden_fields": ["schema", "login", "password"],
            "relabeling": {"host": "Master URL"},
            "placeholders": {
                "host": "spark://spark-master, yarn, k8s://https://k8s-api or local[*]",
                "port": "7077",
            },
        }


def _kerberos_conf(extra: dict[str, Any], where: str) -> dict[str, str]:
    """The official ``principal`` and ``keytab`` extras as the Spark properties spark-submit reads."""
    conf: dict[str, str] = {}
    if extra.get("principal"):
        conf["spark.kerberos.principal"] = str(extra["principal"])
    keytab = extra.get("keytab")
    if keytab:
        if not (isinstance(keytab, str) and keytab.startswith("/")):
            raise InvalidRunConfig(
                f"{where}: extra keytab must be the absolute path of a keytab file on the machine that "
                "runs spark-submit; keytab contents (base64) are not supported by the Spark compute target."
            )
        conf["spark.kerberos.keytab"] = keytab
    return conf
