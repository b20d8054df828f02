"""``[mltrain] artifact_store_conn_id``: an Airflow connection's credentials open the artifact store."""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path

import pytest

from airflow_provider_mltrain import Workspace
from airflow_provider_mltrain.core.artifacts import ArtifactStoreCredentialsRefused, ArtifactStoreError
from airflow_provider_mltrain.hooks.artifact_store import s3_options
from tests.conftest import s3_options as server_options


def _aws_connection(monkeypatch, conn_id: str, login: str, password: str, extra: dict) -> None:
    monkeypatch.setenv(
        f"AIRFLOW_CONN_{conn_id.upper()}",
        json.dumps({"conn_type": "aws", "login": login, "password": password, "extra": extra}),
    )


def test_aws_connection_opens_the_store(monkeypatch, tmp_path: Path):
    options = server_options()
    _aws_connection(
        monkeypatch,
        "mltrain_s3",
        options["key"],
        options["secret"],
        {"endpoint_url": options["client_kwargs"]["endpoint_url"], "region_name": "us-east-1"},
    )
    monkeypatch.setenv("MLTRAIN_ARTIFACT_STORE", f"s3://mltrain-test/{uuid.uuid4().hex}")
    monkeypatch.setenv("MLTRAIN_ARTIFACT_STORE_CONN_ID", "mltrain_s3")
    ws = Workspace(tmp_path / "ws")
    ws.check_artifacts()
    ws.artifacts.put_bytes("x", b"1")
    assert ws.artifacts.get_bytes("x") == b"1"


def test_wrong_secret_in_the_connection_names_the_connection(monkeypatch, tmp_path: Path):
    options = server_options()
    _aws_connection(
        monkeypatch,
        "bad_s3",
        options["key"],
        "wrong-secret-77aa",
        {"endpoint_url": options["client_kwargs"]["endpoint_url"]},
    )
    monkeypatch.setenv("MLTRAIN_ARTIFACT_STORE", "s3://mltrain-test/x")
    monkeypatch.setenv("MLTRAIN_ARTIFACT_STORE_CONN_ID", "bad_s3")
    with pytest.raises(ArtifactStoreCredentialsRefused, match="'bad_s3'") as info:
        Workspace(tmp_path / "ws").check_artifacts()
    assert "wrong-secret-77aa" not in str(info.value)


def test_unknown_connection_says_how_to_create_it(monkeypatch, tmp_path: Path):
    monkeypatch.setenv("MLTRAIN_ARTIFACT_STORE", "s3://mltrain-test/x")
    monkeypatch.setenv("MLTRAIN_ARTIFACT_STORE_CONN_ID", "no_such_conn_" + uuid.uuid4().hex[:6])
    with pytest.raises(ArtifactStoreError, match="airflow connections add"):
        Workspace(tmp_path / "ws").artifacts


def test_s3_options_follow_the_amazon_providers_fields():
    assert s3_options(
        None,
        None,
        None,
        {
            "aws_access_key_id": "AK",
            "aws_secret_access_key": "SK",
            "aws_session_token": "T",
            "service_config": {"s3": {"endpoint_url": "http://minio:9000"}},
            "region_name": "eu-west-1",
            "config_kwargs": {"connect_timeout": 5},
        },
    ) == {
        "key": "AK",
        "secret": "SK",
        "token": "T",
        "client_kwargs": {"endpoint_url": "http://minio:9000", "region_name": "eu-west-1"},
        "config_kwargs": {"connect_timeout": 5},
    }
    assert s3_options(None, None, None, {}) == {}  # the environment's own credentials then apply
    assert os.environ.get("AIRFLOW_CONN_MLTRAIN_S3") is None
