"""Documentation that runs: every ```python and ```bash block of README.md and docs/ is executed.

One test per block, named ``file:line``. The convention (docs/contributing.md):

- ```python and ```bash blocks run; ```text, ```console, ```yaml, ```ini, ```json and untagged blocks
  are output or file contents and never run.
- ``<!-- doc-test: skip (reason) -->`` on the line before a block leaves it out; the reason is required.
- ``<!-- doc-test: continue -->`` runs the block after the page's previous runnable block of the same
  language, in one process, as a reader who typed both would.
- ``<!-- doc-test: script -->`` marks a training script: it is submitted as a run's ``train.py`` on the
  local target and must complete.
- ``<!-- doc-test: needs ssh|docker|spark -->``: the block talks to a compute target; the test services
  (tests/services/, /tmp/services.env) stand behind the connection ids the docs use.
- A Python block that defines a DAG runs with ``airflow dags test`` from a DAG folder of its own.

Each block runs in a fresh folder laid out like a clone of the repository (``train_digits/`` and
``dags_examples/train_digits/``), with a temporary Airflow home (SQLite) and workspace.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
RUNNABLE = {"python": "python", "bash": "bash", "sh": "bash", "shell": "bash"}
MARKER = re.compile(r"^<!--\s*doc-test:\s*(?P<kind>[a-z]+)\s*(?P<arg>.*?)\s*-->$")
FENCE = re.compile(r"^(?P<indent> *)```(?P<lang>[\w+-]*)\s*$")
TIMEOUT = 900
# Connection ids the guides use, served by the test services.
SERVICES = ("ssh", "docker", "spark")


@dataclass
class Block:
    page: Path
    line: int  # of the opening fence, 1-based
    lang: str  # "python" or "bash"
    code: str
    markers: dict[str, str]
    previous: Block | None  # the page's previous runnable block of the same language

    @property
    def id(self) -> str:
        return f"{self.page.relative_to(ROOT).as_posix()}:{self.line}"

    def chain(self) -> list[Block]:
        """This block, after the blocks it continues."""
        blocks = [self]
        while "continue" in blocks[0].markers and blocks[0].previous is not None:
            blocks.insert(0, blocks[0].previous)
        return blocks


def parse(page: Path) -> list[Block]:
    lines = page.read_text(encoding="utf-8").splitlines()
    blocks: list[Block] = []
    last: dict[str, Block] = {}
    i = 0
    while i < len(lines):
        fence = FENCE.match(lines[i])
        if not fence:
            i += 1
            continue
        end = i + 1
        while end < len(lines) and not lines[end].strip().startswith("```"):
            end += 1
        markers = {}
        j = i - 1
        while j >= 0 and (m := MARKER.match(lines[j].strip())):
            markers[m["kind"]] = m["arg"]
            j -= 1
        lang = RUNNABLE.get(fence["lang"])
        if lang:
            indent = len(fence["indent"])
            code = "\n".join(line[indent:] for line in lines[i + 1 : end]) + "\n"
            block = Block(page, i + 1, lang, code, markers, last.get(lang))
            blocks.append(block)
            if "skip" not in markers:
                last[lang] = block
        i = end + 1
    return blocks


BLOCKS = [block for page in PAGES for block in parse(page)]


def test_every_page_is_collected():
    assert {p.name for p in PAGES} >= {"README.md", "index.md", "concepts.md", "ssh.md", "contributing.md"}
    assert len(BLOCKS) > 40


@pytest.fixture(scope="session")
def docs_home(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("docs-airflow-home")


def base_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "MLTRAIN_"))}
    env.update(
        PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}",
        VIRTUAL_ENV=str(BIN.parent),
        AIRFLOW_HOME=str(home),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        MLTRAIN_WORKSPACE=str(home / "mltrain"),
    )
    env.pop("PYTHONPATH", None)
    return env


@pytest.fixture(scope="session")
def airflow_db(docs_home) -> None:
    """The temporary Airflow home's database, migrated once for the blocks that run Airflow."""
    subprocess.run(
        [str(BIN / "airflow"), "db", "migrate"],
        env=base_env(docs_home),
        check=True,
        capture_output=True,
        timeout=600,
    )


def service_connections(needs: str) -> dict[str, str]:
    """AIRFLOW_CONN_* for the connection ids the guides use, backed by the test services."""
    from tests.targets.harnesses.docker import docker_connection
    from tests.targets.harnesses.spark import connection_json as spark_json
    from tests.targets.harnesses.spark import spark_service
    from tests.targets.harnesses.ssh import connection_json as ssh_json
    from tests.targets.harnesses.ssh import require_ssh

    conns = {}
    for service in needs.split():
        if service == "ssh":
            conns["AIRFLOW_CONN_GPU_VM"] = ssh_json(require_ssh(), remote_root="~/mltrain-doc-tests")
        elif service == "spark":
            conns["AIRFLOW_CONN_SPARK_CLUSTER"] = spark_json(*spark_service())
        elif service == "docker":
            if not os.environ.get("MLTRAIN_TEST_DOCKER_HOST"):
                from tests.targets.harnesses import service_missing

                service_missing("no Docker engine: run tests/services/docker.sh (make test does)")
            conns["AIRFLOW_CONN_DOCKER_BOX"] = docker_connection()
        else:
            raise AssertionError(f"doc-test: needs {service!r}: not one of {SERVICES}")
    return conns


def workdir_for(tmp_path: Path) -> Path:
    """A folder laid out like a clone of the repository, as the guides assume."""
    work = tmp_path / "work"
    ignore = shutil.ignore_patterns("__pycache__")
    shutil.copytree(ROOT / "dags_examples", work / "dags_examples", ignore=ignore)
    shutil.copytree(ROOT / "dags_examples" / "train_digits", work / "train_digits", ignore=ignore)
    return work


def dag_ids(code: str) -> list[str]:
    ids = re.findall(r"^@dag(?:\(.*?\))?\s*\ndef (\w+)\(", code, flags=re.S | re.M)
    ids += re.findall(r"DAG\(\s*[\"']([\w.-]+)[\"']", code)
    ids += re.findall(r"dag_id=[\"']([\w.-]+)[\"']", code)
    return ids


def check(proc: subprocess.CompletedProcess, block: Block, what: str) -> None:
    assert proc.returncode == 0, (
        f"{block.id}: {what} exited {proc.returncode}\n--- block ---\n{block.code}"
        f"--- output (last 6000 chars) ---\n{(proc.stdout + proc.stderr)[-6000:]}"
    )


@pytest.mark.timeout(TIMEOUT + 300)
@pytest.mark.parametrize("block", BLOCKS, ids=[b.id for b in BLOCKS])
def test_block(block: Block, tmp_path, docs_home, request):
    if "skip" in block.markers:
        reason = block.markers["skip"].strip("() ")
        assert reason, f"{block.id}: <!-- doc-test: skip (...) --> needs a reason"
        pytest.skip(reason)
    unknown = set(block.markers) - {"skip", "continue", "script", "needs"}
    assert not unknown, f"{block.id}: unknown doc-test marker(s) {unknown}"
    chain = block.chain()
    env = base_env(docs_home)
    for part in chain:
        if "needs" in part.markers:
            env.update(service_connections(part.markers["needs"]))
    work = workdir_for(tmp_path)
    code = "".join(part.code for part in chain)

    if "script" in block.markers:
        (work / "script").mkdir()
        (work / "script" / "train.py").write_text(code)
        proc = subprocess.run(
            [str(BIN / "mltrain"), "submit", "--experiment", "doc-test", "script", "train.py"],
            cwd=work, env=env, capture_output=True, text=True, timeout=TIMEOUT,
        )  # fmt: skip
        check(proc, block, "the script, submitted as a run,")
        return

    if block.lang == "bash":
        script = work / "block.sh"
        script.write_text(code)
        if "airflow " in code:
            request.getfixturevalue("airflow_db")
        proc = subprocess.run(
            ["bash", "-euo", "pipefail", str(script)],
            cwd=work, env=env, capture_output=True, text=True, timeout=TIMEOUT,
        )  # fmt: skip
        check(proc, block, "bash")
        return

    dags = dag_ids(code)
    assert dags or not re.search(r"@dag\b|\bDAG\(", code), f"{block.id}: defines a DAG whose id is not found"
    if dags:
        request.getfixturevalue("airflow_db")
        # A DAG folder of its own, with the training folder next to the DAG file.
        dag_folder = work / "dags"
        shutil.copytree(work / "train_digits", dag_folder / "train_digits")
        (dag_folder / "dag_block.py").write_text(code)
        env["AIRFLOW__CORE__DAGS_FOLDER"] = str(dag_folder)
        for dag_id in dags:
            proc = subprocess.run(
                [str(BIN / "airflow"), "dags", "test", dag_id],
                cwd=work, env=env, capture_output=True, text=True, timeout=TIMEOUT,
            )  # fmt: skip
            check(proc, block, f"airflow dags test {dag_id}")
            out = proc.stdout + proc.stderr
            assert re.search(r"DagRun Finished.*state=success", out), (
                f"{block.id}: the DAG run of {dag_id} did not succeed\n{out[-6000:]}"
            )
        return

    (work / "block.py").write_text(code)
    proc = subprocess.run(
        [sys.executable, "block.py"], cwd=work, env=env, capture_output=True, text=True, timeout=TIMEOUT
    )
    check(proc, block, "python")
