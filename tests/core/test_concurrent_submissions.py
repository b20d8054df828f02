"""20 submissions from separate processes at once, on SQLite and on a real PostgreSQL."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from airflow_provider_mltrain import Workspace
from airflow_provider_mltrain.core.states import ORDER, RunStatus

SUBMIT = textwrap.dedent("""
    import sys
    from airflow_provider_mltrain import Experiment, ScriptRunConfig, Workspace
    ws = Workspace(sys.argv[1], database_url=sys.argv[2] or None)
    run = Experiment(ws, "crowd").submit(ScriptRunConfig(sys.argv[3], "train.py", arguments=[sys.argv[4]]))
    run.wait_for_completion()
""")


def crowd(tmp_path, make_tree, url: str | None) -> Workspace:
    src = make_tree(
        {"train.py": "import sys\nfrom mltrain import Run\nRun.get_context().log('n', int(sys.argv[1]))\n"}
    )
    root = tmp_path / "ws"
    procs = [
        subprocess.Popen([sys.executable, "-c", SUBMIT, str(root), url or "", str(src), str(i)])
        for i in range(20)
    ]
    assert [p.wait(timeout=600) for p in procs] == [0] * 20
    return Workspace(root, database_url=url)


def check(ws: Workspace) -> None:
    runs = ws.experiment("crowd").list_runs()
    assert len(runs) == 20
    assert sorted(r.get_metrics()["n"] for r in runs) == list(range(20))
    for run in runs:
        events = [RunStatus(e["status"]) for e in ws.store.get_events(run.id)]
        assert events[-1] == RunStatus.COMPLETED and run.get_status() == "Completed"
        ranks = [ORDER.index(e) for e in events]
        assert ranks == sorted(ranks), events  # never backwards
        assert len(set(events)) == len(events)


def test_twenty_at_once_on_sqlite(tmp_path, make_tree):
    check(crowd(tmp_path, make_tree, None))


@pytest.mark.integration
def test_twenty_at_once_on_postgres(tmp_path, make_tree, pg_url):
    check(crowd(tmp_path, make_tree, pg_url))
