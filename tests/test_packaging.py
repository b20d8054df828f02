"""Packaging as an official provider does it: declared dependencies, licence, the Airflow floor."""

from __future__ import annotations

import ast
import importlib.metadata
import re
import sys
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    tomllib = pytest.importorskip("tomli")

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "airflow_provider_mltrain"
RUNNER = PACKAGE / "runner"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def requirements(*extras: str) -> list[Requirement]:
    project = PYPROJECT["project"]
    found = [Requirement(r) for r in project["dependencies"]]
    for extra in extras:
        found += [Requirement(r) for r in project["optional-dependencies"][extra]]
    return found


def imported_modules(path: Path) -> set[str]:
    """Top-level names of every module ``path`` imports (absolute imports, anywhere in the file)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names |= {alias.name.partition(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.partition(".")[0])
    return names


def test_every_imported_library_is_declared_with_a_lower_bound():
    """A library we import but do not declare works only while another package happens to bring it."""
    declared = requirements("docker", "ssh", "spark", "sweep", "openlineage")
    declared_names = {r.name.lower() for r in declared}
    distributions = importlib.metadata.packages_distributions()
    missing = {}
    for path in PACKAGE.rglob("*.py"):
        if RUNNER in path.parents:
            continue  # stdlib only: checked below
        for name in imported_modules(path) - set(sys.stdlib_module_names) - {"airflow_provider_mltrain"}:
            dists = {d.lower() for d in distributions.get(name, [name])}
            if name == "airflow":
                dists = {"apache-airflow"}  # the distribution that pins its core and task SDK
            if not dists & declared_names:
                missing.setdefault(name, []).append(str(path.relative_to(ROOT)))
    assert not missing, f"imported but not declared in pyproject.toml: {missing}"
    unbounded = [str(r) for r in declared if not any(s.operator in (">=", "==", "~=") for s in r.specifier)]
    assert not unbounded, f"declared without a lower bound: {unbounded}"


# The one exception: MLflow's own entry point loads it, inside a script that imported mlflow.
MLFLOW_PLUGIN = RUNNER / "pylib" / "mltrain" / "mlflow_store.py"


def test_the_runner_imports_the_standard_library_only():
    own = {p.stem for p in RUNNER.rglob("*.py")} | {p.name for p in RUNNER.rglob("*") if p.is_dir()}
    for path in RUNNER.rglob("*.py"):
        allowed = {"mlflow"} if path == MLFLOW_PLUGIN else set()
        other = (
            imported_modules(path)
            - set(sys.stdlib_module_names)
            - own
            - allowed
            - {"airflow_provider_mltrain"}
        )
        assert not other, (path, other)


def test_the_licence_is_apache_2_in_the_file_and_the_metadata():
    text = (ROOT / "LICENSE").read_text()
    assert text.split()[:5] == ["Apache", "License", "Version", "2.0,", "January"]
    assert "END OF TERMS AND CONDITIONS" in text and len(text.splitlines()) > 190  # the full text
    assert PYPROJECT["project"]["license"] == "Apache-2.0"  # an SPDX expression (PEP 639)
    assert PYPROJECT["project"]["license-files"] == ["LICENSE"]
    build = [Requirement(r) for r in PYPROJECT["build-system"]["requires"]]
    [setuptools] = [r for r in build if r.name == "setuptools"]
    assert setuptools.specifier.contains("77") and not setuptools.specifier.contains("76")
    metadata = importlib.metadata.metadata("airflow-provider-mltrain")
    assert metadata["License-Expression"] == "Apache-2.0", "reinstall: make install-dev"


def test_the_floor_job_installs_the_lowest_airflow_allowed():
    """make test-floor tests the Airflow that ``apache-airflow>=...`` allows at its lowest."""
    [airflow] = [r for r in requirements() if r.name == "apache-airflow"]
    [floor] = [Version(s.version) for s in airflow.specifier if s.operator == ">="]
    makefile = (ROOT / "Makefile").read_text()
    pinned = re.search(r"^FLOOR_AIRFLOW := (\S+)$", makefile, re.MULTILINE)
    assert pinned and Version(pinned.group(1)) == floor
    # make test runs the floor job beside the others (make -j: lint typecheck unit test-floor)
    assert re.search(r"^test:.*\n(\t.*\n)*\t.*\blint typecheck unit test-floor\b", makefile, re.MULTILINE)
