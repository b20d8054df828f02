"""Shared fixtures. Airflow's home is a temporary folder for the whole session, set before Airflow loads."""

from __future__ import annotations

import os
import tempfile
import textwrap
from collections.abc import Iterator
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
)
# The test Spark cluster has 2 one-core workers, and some tests kill a worker: every test that
# uses it runs in one xdist group, one at a time.
SPARK_GROUP = "spark"
_SPARK_HARNESSES = ("mltrain_test_spark", "mltrain_test_spark_gw")


def uses_spark(item: pytest.Item) -> bool:
    """Whether a test talks to the test Spark cluster: by its file (``test_*spark*.py``), its target
    suite harness, or a ``@pytest.mark.spark`` it (or its parameter) carries."""
    params = getattr(getattr(item, "callspec", None), "params", {})
    return (
        "spark" in item.path.name
        or params.get("harness") in _SPARK_HARNESSES
        or item.get_closest_marker("spark") is not None
    )


def pytest_configure(config: pytest.Config) -> None:
    # `pytest -n N` alone hands out test by test ("load"), Spark tests to several workers at once:
    # loadgroup is the same distribution, with the groups kept together.
    if getattr(config.option, "numprocesses", None) and config.option.dist == "load":
        config.option.dist = "loadgroup"


@pytest.hookimpl(tryfirst=True)  # before xdist reads the xdist_group marks
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.pluginmanager.hasplugin("xdist"):
        for item in items:
            if uses_spark(item):
                item.add_marker(pytest.mark.xdist_group(SPARK_GROUP))
    rank = {path: i for i, path in enumerate(SLOW_FILES)}
    # sort is stable: the other tests keep their order
    items.sort(key=lambda item: rank.get(item.nodeid.split("::", 1)[0], len(rank)))
