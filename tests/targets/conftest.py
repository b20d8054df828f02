"""Fixtures of the shared target suite: ``harness`` and ``target`` run a test once per target."""

from __future__ import annotations

import pytest

from tests.targets.harnesses import HARNESSES, Harness

TARGETS = list(HARNESSES)


@pytest.fixture(params=TARGETS)
def harness(request, monkeypatch, workspace):
    monkeypatch.setenv("MLTRAIN_HEARTBEAT_INTERVAL", "0.5")
    instance = HARNESSES[request.param]()
    instance.setup(monkeypatch, workspace)
    yield instance
    instance.teardown()


@pytest.fixture
def target(harness: Harness) -> str:
    return harness.name
