"""SparkComputeHook: a ``spark`` connection read as the official provider reads it, tested for real."""

from __future__ import annotations

import json
import socket

import pytest

from airflow_provider_mltrain import InvalidRunConfig
from airflow_provider_mltrain.get_provider_info import get_provider_info
from airflow_provider_mltrain.hooks import compute
from airflow_provider_mltrain.hooks.spark import EXTRAS, SparkComputeHook
from airflow_provider_mltrain.targets.spark import ALLOWED_SPARK_BINARIES, SparkTarget
from tests.targets.harnesses.spark import connection_json, spark_service


def hook(monkeypatch, conn_id: str = "spk", **conn) -> SparkComputeHook:
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps({"conn_type": "spark", **conn}))
    return SparkComputeHook(conn_id=conn_id)


def test_connection_fields_make_the_settings(monkeypatch, tmp_path):
    h = hook(
        monkeypatch,
        host="spark://master",
        port=7077,
        extra={
            "queue": "training",
            "spark-binary": "spark3-submit",
            "spark-conf": json.dumps({"spark.executor.memory": "2g", "spark.eventLog.enabled": True}),
            "master-ui": "http://master:8080",
        },
    )
    settings = h.settings()
    assert settings.master == "spark://master:7077"
    assert settings.queue == "training" and settings.spark_binary == "spark3-submit"
    assert settings.conf == {"spark.executor.memory": "2g", "spark.eventLog.enabled": "true"}
    assert settings.deploy_mode == "client" and settings.ui_url == "http://master:8080"
    target = h.get_target(tmp_path)
    assert isinstance(target, SparkTarget) and target.name == "spk"
    assert target.root == tmp_path / "targets" / "spark-spk"


def test_gateway_conn_id_makes_the_target_submit_through_that_ssh_target(monkeypatch, tmp_path):
    monkeypatch.setenv(
        "AIRFLOW_CONN_EDGE",
        json.dumps(
            {
                "conn_type": "ssh",
                "host": "edge.example",
                "login": "spark",
                "extra": {"remote_root": "/srv/ml"},
            }
        ),
    )
    h = hook(
        monkeypatch, host="yarn", extra={"gateway-conn-id": "edge", "spark-home": "/opt/spark", "queue": "ml"}
    )
    target = h.get_target(tmp_path)
    assert target.settings.spark_home == "/opt/spark" and target.settings.queue == "ml"
    assert target.gateway is not None and target.gateway.name == "edge"
    assert target.gateway.settings.host == "edge.example" and target.gateway.settings.remote_root == "/srv/ml"
    assert hook(monkeypatch, conn_id="plain", host="local[*]").get_target(tmp_path).gateway is None


@pytest.mark.parametrize(
    ("host", "port", "master"),
    [
        ("local[*]", None, "local[*]"),
        ("yarn", None, "yarn"),
        ("k8s://https://api:6443", None, "k8s://https://api:6443"),
    ],
)
def test_other_masters(monkeypatch, host, port, master):
    assert hook(monkeypatch, host=host, port=port).settings().master == master


def test_kubernetes_namespace_becomes_a_spark_property(monkeypatch):
    settings = hook(monkeypatch, host="k8s://https://api", port=6443, extra={"namespace": "ml"}).settings()
    assert settings.master == "k8s://https://api:6443"
    assert settings.conf == {"spark.kubernetes.namespace": "ml"}


@pytest.mark.parametrize(
    ("conn", "message"),
    [
        ({"host": "local[*]", "extra": {"spark-binary": "python3"}}, "spark-binary 'python3' is not allowed"),
        ({"host": "local[*]", "extra": {"deploy-mode": "yarn"}}, "deploy-mode 'yarn' is not a deploy mode"),
        ({"host": "local[*]", "extra": {"spark_home": "/opt/x"}}, "unknown extras spark_home"),
        (
            {"host": "local[*]", "extra": {"spark-home": "/opt/x"}},
            "spark-home is only used with an SSH gateway",
        ),
        (
            {"host": "local[*]", "extra": {"gateway-conn-id": "gw", "spark-home": "opt/spark"}},
            "spark-home 'opt/spark' is not an absolute path",
        ),
        ({"host": "local[*]", "extra": {"spark-conf": "{not json"}}, "spark-conf must be a JSON object"),
        ({"host": "yarn", "extra": {"keytab": "BQIAAABHAAEAC0VYQU1QTEUuQ09N"}}, "keytab contents (base64)"),
        ({"host": "local[*]", "extra": {"spark-conf": {"executor.memory": "1g"}}}, "is not a Spark property"),
        ({"host": "local[*]", "extra": {"master-ui": "file:///etc"}}, "is not an http(s) URL"),
        ({"host": "mesos://old:5050"}, "is not a master URL: use spark://HOST:PORT"),
        ({}, "has no host: set it to the Spark master URL"),
    ],
)
def test_bad_connections_are_refused_with_the_fix(monkeypatch, conn, message):
    h = hook(monkeypatch, **conn)
    with pytest.raises(InvalidRunConfig) as err:
        h.settings()
    assert "Connection 'spk'" in str(err.value) and message in str(err.value)
    ok, text = h.test_connection()
    assert not ok and message in text


def test_test_connection_reaches_the_cluster(monkeypatch):
    master, ui = spark_service()
    monkeypatch.setenv("AIRFLOW_CONN_SPK", connection_json(master, ui))
    ok, message = SparkComputeHook(conn_id="spk").test_connection()
    assert ok, message
    assert master in message and "ALIVE, 2 alive workers" in message


def test_test_connection_names_an_unreachable_master(monkeypatch):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ok, message = hook(monkeypatch, host="spark://127.0.0.1", port=port).test_connection()
    assert not ok and f"spark://127.0.0.1:{port} is not reachable" in message


def test_a_master_without_its_ui_fails_the_test(monkeypatch):
    master, _ = spark_service()
    scheme_host, _, port = master.rpartition(":")
    h = hook(monkeypatch, host=scheme_host, port=int(port), extra={"master-ui": "http://127.0.0.1:9"})
    ok, message = h.test_connection()
    assert not ok and "its UI http://127.0.0.1:9 does not" in message


def test_connection_type_is_declared_for_the_ui():
    assert compute.hook_class("spark") is compute.hook_class("mltrain_spark") is SparkComputeHook
    info = get_provider_info()
    assert "spark" not in [c["connection-type"] for c in info["connection-types"]]  # the official one's
    [entry] = [c for c in info["connection-types"] if c["connection-type"] == "mltrain_spark"]
    assert entry["hook-class-name"] == "airflow_provider_mltrain.hooks.spark.SparkComputeHook"
    assert set(entry["conn-fields"]) == {*EXTRAS, "principal", "keytab"}
    binaries = entry["conn-fields"]["spark-binary"]["schema"]["enum"]
    assert [b for b in binaries if b] == list(ALLOWED_SPARK_BINARIES)
    assert "airflow_provider_mltrain.hooks.spark" in info["hooks"][0]["python-modules"]


def test_an_official_spark_connection_is_read_with_all_its_extras(monkeypatch, tmp_path):
    """The extras of the official Spark provider's form: Kerberos becomes Spark properties, the REST and
    YARN ResourceManager addresses (its own status polling) are accepted and not needed here."""
    h = hook(
        monkeypatch,
        host="yarn",
        extra={
            "deploy-mode": "client",
            "queue": "training",
            "spark-binary": "spark3-submit",
            "namespace": "ml",
            "principal": "trainer@EXAMPLE.COM",
            "keytab": "/etc/security/keytabs/trainer.keytab",
            "rest-scheme": "https",
            "rest-port": "6066",
            "yarn_resourcemanager_webapp_address": "http://rm.example.com:8088",
        },
    )
    settings = h.settings()
    assert (settings.master, settings.queue, settings.spark_binary) == ("yarn", "training", "spark3-submit")
    assert settings.conf == {
        "spark.kerberos.principal": "trainer@EXAMPLE.COM",
        "spark.kerberos.keytab": "/etc/security/keytabs/trainer.keytab",
    }
    assert isinstance(h.get_target(tmp_path), SparkTarget)
