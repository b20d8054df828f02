"""Shared fixtures. Airflow's home is a temporary folder for the whole session, set before Airflow loads."""

from __future__ import annotations

import os
import tempfile
import textwrap
from pathlib import Path

_SESSION_HOME = tempfile.mkdtemp(prefix="mltrain-test-airflow-")
os.environ["AIRFLOW_HOME"] = _SESSION_HOME
os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
os.environ.setdefault("AIRFLOW__CORE__UNIT_TEST_MODE", "False")
for var in ("MLTRAIN_WORKSPACE", "MLTRAIN_DATABASE_URL", "AIRFLOW__MLTRAIN__WORKSPACE"):
    os.environ.pop(var, None)

import pytest  # noqa: E402

from airflow_provider_mltrain import Workspace  # noqa: E402


@pytest.fixture
def workspace(tmp_path: Path) -> Workspace:
    return Workspace(tmp_path / "ws")


def s3_options() -> dict:
    """fsspec storage options of the SeaweedFS S3 server of tests/services/seaweedfs.sh."""
    endpoint = os.environ.get("MLTRAIN_TEST_S3_ENDPOINT")
    if not endpoint:
        if os.environ.get("CI"):
            pytest.fail("MLTRAIN_TEST_S3_ENDPOINT is not set: tests/services/seaweedfs.sh did not run")
        pytest.skip("no S3 server: run `make test` (it starts SeaweedFS) or set MLTRAIN_TEST_S3_ENDPOINT")
    return {
        "key": os.environ["MLTRAIN_TEST_S3_KEY"],
        "secret": os.environ["MLTRAIN_TEST_S3_SECRET"],
        "client_kwargs": {"endpoint_url": endpoint},
    }


@pytest.fixture
def s3_store():
    """An empty artifact store on the real S3 server: a fresh prefix of the bucket mltrain-test."""
    import uuid

    from airflow_provider_mltrain.core.artifacts import FsspecArtifactStore

    return FsspecArtifactStore(f"s3://mltrain-test/{uuid.uuid4().hex}", s3_options())


@pytest.fixture
def s3_workspace(tmp_path: Path, s3_store) -> Workspace:
    """A workspace whose artifact store is on the real S3 server (run store: SQLite in tmp_path)."""
    return Workspace(tmp_path / "ws", artifact_store=s3_store)


@pytest.fixture
def make_tree(tmp_path: Path):
    """make_tree({"train.py": "print(1)", "data/x.csv": b"..."}) -> a source folder with those files."""
    counter = iter(range(1_000_000))

    def make(files: dict[str, str | bytes], name: str | None = None) -> Path:
        root = tmp_path / (name or f"src{next(counter)}")
        root.mkdir(parents=True, exist_ok=True)
        for rel, content in files.items():
            path = root / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(content, bytes):
                path.write_bytes(content)
            else:
                path.write_text(textwrap.dedent(content))
        return root

    return make


@pytest.fixture
def pg_url() -> str:
    """A clean run store on the PostgreSQL started by tests/services/postgres.sh (make test)."""
    import sqlalchemy as sa

    from airflow_provider_mltrain.core import store
    from airflow_provider_mltrain.core.store import metadata

    url = os.environ.get("MLTRAIN_TEST_POSTGRES_URL")
    if not url:
        if os.environ.get("CI"):
            pytest.fail("MLTRAIN_TEST_POSTGRES_URL is not set: tests/services/postgres.sh did not run")
        pytest.skip("no PostgreSQL: run `make test` (it starts one) or set MLTRAIN_TEST_POSTGRES_URL")
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        metadata.drop_all(conn)
    engine.dispose()
    cached = store._engines.pop(url, None)
    if cached is not None:
        cached.dispose()  # its pooled connections, closed now rather than leaked (ResourceWarning)
    return url
