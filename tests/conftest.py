"""Shared fixtures. Airflow's home is a temporary folder for the whole session, set before Airflow loads."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
import textwrap
from collections.abc import Iterator
from pathlib import Path

_SESSION_HOME = tempfile.mkdtemp(prefix="mltrain-test-airflow-")
atexit.register(shutil.rmtree, _SESSION_HOME, ignore_errors=True)  # each xdist worker has its own
os.environ["AIRFLOW_HOME"] = _SESSION_HOME
os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
os.environ.setdefault("AIRFLOW__CORE__UNIT_TEST_MODE", "False")
for var in ("MLTRAIN_WORKSPACE", "MLTRAIN_DATABASE_URL", "AIRFLOW__MLTRAIN__WORKSPACE"):
    os.environ.pop(var, None)

import pytest  # noqa: E402

from airflow_provider_mltrain import Workspace  # noqa: E402
from tests.s3server import OwnWeed  # noqa: E402


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
def own_weed(tmp_path: Path):
    """A started SeaweedFS of this test's own (see :class:`OwnWeed`), stopped after the test."""
    server = OwnWeed(tmp_path / "own-weed")
    server.start()
    try:
        yield server
    finally:
        server.stop()


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


def _pg_schema() -> str:
    """This test process's schema: xdist workers and other pytest sessions share the database."""
    return f"t_{os.environ.get('PYTEST_XDIST_WORKER', 'main')}_{os.getpid()}".lower()


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A clean run store on the PostgreSQL started by tests/services/postgres.sh (make test): an
    empty schema of this test's own (the URL's search_path), dropped after it."""
    import sqlalchemy as sa

    from airflow_provider_mltrain.core import store

    base = os.environ.get("MLTRAIN_TEST_POSTGRES_URL")
    if not base:
        if os.environ.get("CI"):
            pytest.fail("MLTRAIN_TEST_POSTGRES_URL is not set: tests/services/postgres.sh did not run")
        pytest.skip("no PostgreSQL: run `make test` (it starts one) or set MLTRAIN_TEST_POSTGRES_URL")
    schema = _pg_schema()
    admin = sa.create_engine(base)

    def reset(create: bool) -> None:
        with admin.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
            if create:
                conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))

    reset(create=True)
    url = (
        sa.make_url(base)
        .update_query_dict({"options": f"-csearch_path={schema}"})
        .render_as_string(hide_password=False)
    )
    try:
        yield url
    finally:
        cached = store._engines.pop(url, None)
        if cached is not None:
            cached.dispose()  # its pooled connections, closed now rather than leaked (ResourceWarning)
        reset(create=False)
        admin.dispose()


# -- running in parallel (pytest-xdist, `make unit`) ---------------------------------------------

# Files whose tests take minutes, slowest first: they start first, so the run does not end with one
# worker going through them alone while the others idle (measured: docs/benchmarks.md).
SLOW_FILES = (
    "tests/test_makefile.py",
    "tests/test_providers_coexist.py",
    "tests/test_docs.py",
    "tests/test_airflow_faults.py",
    "tests/test_dags.py",
)
# The test Spark cluster has 2 one-core workers, and some tests kill an executor: every test that
# runs Spark jobs on it (or counts its workers) runs in one xdist work unit, in one worker, one at a
# time. The scheduler sees test ids only: such a test is in one of these files or listed here. The
# shared suites' Spark variants (a plain script through spark-submit, no application on the master)
# run beside everything else like any other target's.
CLUSTER_FILES = (
    "tests/targets/test_spark.py",
    "tests/targets/test_spark_gateway.py",
    "tests/test_dags_spark.py",
    "tests/hooks/test_spark.py",
)
SPARK_TESTS = ("tests/test_providers_coexist.py::test_one_connection_serves_the_official_operators_and_ours",)


def uses_spark(nodeid: str) -> bool:
    return nodeid.split("::", 1)[0] in CLUSTER_FILES or nodeid in SPARK_TESTS


@pytest.hookimpl(optionalhook=True)  # a hook of pytest-xdist, absent from the floor's venv
def pytest_xdist_make_scheduler(config: pytest.Config, log):
    """``load`` (what ``-n`` does), with every Spark test in one work unit. xdist's own
    ``--dist loadgroup`` is not used: it renames test ids, which pytest 9.2 no longer lets it do."""
    if config.option.dist not in ("load", "loadgroup"):
        return None
    from xdist.scheduler import LoadScopeScheduling

    class SparkInOneWorker(LoadScopeScheduling):
        # Work units: the Spark tests, and each other test alone. Units go out biggest first (the
        # Spark one), then in collection order (slowest files first: below).
        def _split_scope(self, nodeid: str) -> str:
            if nodeid.startswith("tests/deployment/"):
                return "deployment"  # one deployment, two worker users: see tests/deployment/
            return "spark" if uses_spark(nodeid) else nodeid

    return SparkInOneWorker(config, log)


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    rank = {path: i for i, path in enumerate(SLOW_FILES)}
    # sort is stable: the other tests keep their order
    items.sort(key=lambda item: rank.get(item.nodeid.split("::", 1)[0], len(rank)))
