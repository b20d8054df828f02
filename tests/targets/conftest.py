"""Fixtures of the shared target suite: ``harness`` and ``target`` run a test once per target, and
once more per target with the workspace's artifact store on the real S3 server (``workspace_kind``).

Test ids: ``[docker_test]`` is the local workspace (the artifact store is the workspace folder),
``[docker_test-s3]`` the object-store workspace, so ``-k s3`` selects the object-store variants and
``-k 'not s3'`` the others. A test marked ``no_object_store_variant(reason)`` has no s3 variant, one
marked ``object_store_only`` only that one; on the Spark targets (the slowest) only the tests marked
``object_store_on_every_target`` (or ``object_store_only``) have one. ``object_store_on(*targets)``
names the targets of the s3 variant, for a test whose store part is the same on every target.
"""

from __future__ import annotations

import contextlib

import pytest

from airflow_provider_mltrain import Workspace
from tests.conftest import s3_options
from tests.targets.harnesses import HARNESSES, Harness

TARGETS = list(HARNESSES)
WORKSPACE_KINDS = ("local", "s3")


def _is_spark(target: str) -> bool:
    return "spark" in target


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "harness" not in metafunc.fixturenames:
        return
    marked = metafunc.definition.get_closest_marker
    local_only = marked("no_object_store_variant") is not None
    s3_only = marked("object_store_only") is not None
    object_store_on_every_target = s3_only or marked("object_store_on_every_target") is not None
    only_on = marked("object_store_on")
    cases = []
    for name in TARGETS:
        if not s3_only:
            cases.append(pytest.param(name, "local", id=name))
        if only_on is not None:
            s3 = name in only_on.args
        else:
            s3 = not local_only and (object_store_on_every_target or not _is_spark(name))
        if s3:
            cases.append(pytest.param(name, "s3", id=f"{name}-s3"))
    metafunc.parametrize(("harness", "workspace_kind"), cases, indirect=True)


@pytest.fixture
def workspace_kind(request) -> str:
    """``local`` (the artifact store is the workspace folder) or ``s3`` (the real S3 server)."""
    return getattr(request, "param", "local")


@pytest.fixture
def workspace(tmp_path, workspace_kind):
    if workspace_kind != "s3":
        yield Workspace(tmp_path / "ws")
        return
    import uuid

    from airflow_provider_mltrain.core.artifacts import FsspecArtifactStore

    store = FsspecArtifactStore(f"s3://mltrain-test/{uuid.uuid4().hex}", s3_options())
    yield Workspace(tmp_path / "ws", artifact_store=store)
    # The test's own prefix, removed after it (best effort: batched deletes of s3fs), so that the
    # shared server's disk does not fill up with every run of the suite.
    with contextlib.suppress(Exception):
        store.fs.rm(store.url, recursive=True)


@pytest.fixture
def harness(request, monkeypatch, workspace):
    monkeypatch.setenv("MLTRAIN_HEARTBEAT_INTERVAL", "0.5")
    instance = HARNESSES[request.param]()
    instance.setup(monkeypatch, workspace)
    yield instance
    instance.teardown()


@pytest.fixture
def target(harness: Harness) -> str:
    return harness.name
