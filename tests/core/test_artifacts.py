"""The artifact store: a local folder and the real S3 server (SeaweedFS), and the errors a user
meets with a store that cannot be used, raised before anything is submitted."""

from __future__ import annotations

import logging
import os
import uuid
from pathlib import Path

import pytest

from airflow_provider_mltrain import Experiment, ScriptRunConfig, Workspace
from airflow_provider_mltrain.core import artifacts as artifacts_mod
from airflow_provider_mltrain.core.artifacts import (
    ArtifactStoreBackendMissing,
    ArtifactStoreBucketMissing,
    ArtifactStoreCredentialsRefused,
    ArtifactStoreError,
    ArtifactStoreUnreachable,
    FsspecArtifactStore,
    LocalArtifactStore,
    open_store,
)
from tests.conftest import s3_options


@pytest.fixture(params=["local", "s3"])
def any_store(request, tmp_path: Path):
    if request.param == "local":
        return LocalArtifactStore(tmp_path / "store")
    return request.getfixturevalue("s3_store")


def test_objects_round_trip_with_ranged_reads_and_listings(any_store, tmp_path: Path):
    any_store.put_bytes("a/b/one", b"0123456789")
    big = tmp_path / "big"
    big.write_bytes(os.urandom(6 << 20))
    any_store.put_file("a/big", big)
    assert any_store.get_bytes("a/b/one", 3, 4) == b"3456"
    assert any_store.get_bytes("a/b/one", 8) == b"89"
    assert any_store.size("a/big") == 6 << 20
    assert any_store.size("a/none") is None
    assert any_store.list("a") == {"a/b/one": 10, "a/big": 6 << 20}
    assert any_store.exists_many(["a/b/one", "a/b/two"], "a") == {"a/b/one"}
    any_store.get_file("a/big", tmp_path / "copy")
    assert (tmp_path / "copy").read_bytes() == big.read_bytes()
    with pytest.raises(FileNotFoundError):
        any_store.get_bytes("a/none")
    any_store.delete(["a/b/one", "a/none"])
    assert any_store.list("a") == {"a/big": 6 << 20}
    any_store.check(force=True)


def _store(url: str, **changes) -> FsspecArtifactStore:
    options = s3_options()
    client_kwargs = {**options["client_kwargs"], **changes.pop("client_kwargs", {})}
    return FsspecArtifactStore(url, {**options, **changes, "client_kwargs": client_kwargs})


def test_wrong_secret_is_refused_by_name_without_showing_it(caplog):
    caplog.set_level(logging.DEBUG)
    store = _store("s3://mltrain-test/x", secret="not-the-secret-8f3a1c")
    with pytest.raises(ArtifactStoreCredentialsRefused, match="refused the credentials") as info:
        store.check()
    assert "artifact_store_conn_id" in str(info.value) or "AWS_" in str(info.value)
    assert "not-the-secret-8f3a1c" not in str(info.value)
    assert "not-the-secret-8f3a1c" not in caplog.text
    assert "not-the-secret-8f3a1c" not in repr(store)


def test_missing_credentials_say_where_to_give_them(monkeypatch, tmp_path: Path):
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    store = FsspecArtifactStore(
        "s3://mltrain-test/x", {"client_kwargs": {"endpoint_url": os.environ["MLTRAIN_TEST_S3_ENDPOINT"]}}
    )
    with pytest.raises(ArtifactStoreCredentialsRefused, match="No credentials"):
        store.check()


def test_missing_bucket_is_asked_for_not_created():
    # SeaweedFS would create the bucket on the first PUT; real S3 refuses: the check asks first.
    bucket = f"mltrain-missing-{uuid.uuid4().hex[:12]}"
    store = _store(f"s3://{bucket}/prefix")
    with pytest.raises(ArtifactStoreBucketMissing, match=bucket):
        store.check()
    assert not store.fs.exists(bucket)


def test_unreachable_endpoint_names_it():
    store = _store("s3://mltrain-test/x", client_kwargs={"endpoint_url": "http://127.0.0.1:9"})
    with pytest.raises(ArtifactStoreUnreachable, match=r"127\.0\.0\.1:9"):
        store.check()


def test_missing_backend_names_the_package_to_install():
    with pytest.raises(ArtifactStoreBackendMissing, match="gcsfs"):
        open_store("gs://bucket/prefix")
    with pytest.raises(ArtifactStoreBackendMissing, match="artifact_store"):
        open_store("nosuchscheme://bucket/prefix")


def test_a_bad_store_stops_submission_before_a_run_is_recorded(tmp_path: Path, make_tree):
    src = make_tree({"train.py": "print('never')\n"})
    ws = Workspace(tmp_path / "ws", artifact_store=_store("s3://mltrain-test/x", secret="wrong-3b1d"))
    with pytest.raises(ArtifactStoreCredentialsRefused):
        Experiment(ws, "exp").submit(ScriptRunConfig(str(src), "train.py"))
    assert ws.store.list_runs() == []
    assert not (ws.root / "snapshots" / "manifests").exists()
    assert not (ws.root / "runs").exists()


def test_settings_and_connection_resolver_open_the_store(monkeypatch, tmp_path: Path):
    seen = []

    def resolver(conn_id: str, url: str) -> dict:
        seen.append((conn_id, url))
        return s3_options()

    monkeypatch.setattr(artifacts_mod, "_resolver", resolver)
    url = f"s3://mltrain-test/{uuid.uuid4().hex}"
    monkeypatch.setenv("MLTRAIN_ARTIFACT_STORE", url)
    monkeypatch.setenv("MLTRAIN_ARTIFACT_STORE_CONN_ID", "my_s3")
    ws = Workspace(tmp_path / "ws")
    assert isinstance(ws.artifacts, FsspecArtifactStore)
    assert ws.artifacts.url == url
    assert seen == [("my_s3", url)]
    ws.check_artifacts()
    assert ws.snapshots.artifacts is ws.artifacts


def test_conn_id_without_a_resolver_says_what_to_do(monkeypatch, tmp_path: Path):
    monkeypatch.setattr(artifacts_mod, "_resolver", None)
    monkeypatch.setenv("MLTRAIN_ARTIFACT_STORE", "s3://mltrain-test/x")
    monkeypatch.setenv("MLTRAIN_ARTIFACT_STORE_CONN_ID", "my_s3")
    with pytest.raises(ArtifactStoreError, match="MLTRAIN_ARTIFACT_STORE_CONN_ID"):
        Workspace(tmp_path / "ws").artifacts


def test_default_store_is_the_workspace_root(tmp_path: Path):
    ws = Workspace(tmp_path / "ws")
    assert isinstance(ws.artifacts, LocalArtifactStore)
    assert ws.artifacts_are_local_root
    assert ws.snapshots.artifacts is None  # the root is the store: no second copy


def test_a_server_that_asks_to_be_asked_again_passes_the_check(s3_store, monkeypatch):
    """S3's 500 InternalError ("please try again", as s3fs raises it): the check before submission
    asks again instead of refusing the store; a store that keeps failing is still refused."""
    import errno

    real = FsspecArtifactStore._probe
    failures = {"left": 2}
    slept: list[float] = []

    def flaky(self):
        if failures["left"]:
            failures["left"] -= 1
            raise OSError(errno.EREMOTEIO, "We encountered an internal error, please try again.")
        real(self)

    monkeypatch.setattr(FsspecArtifactStore, "_probe", flaky)
    monkeypatch.setattr(artifacts_mod.time, "sleep", slept.append)
    s3_store.check(force=True)
    assert failures["left"] == 0 and slept == [0.5, 1.0]

    failures["left"] = 100
    with pytest.raises(ArtifactStoreError, match="internal error"):
        s3_store.check(force=True)
    assert failures["left"] == 94  # six attempts over some 15 s, then the error
