"""The run store on a real PostgreSQL server (started by tests/services/postgres.sh)."""

from __future__ import annotations

import multiprocessing

import pytest

from airflow_provider_mltrain import Experiment, ScriptRunConfig, Workspace
from airflow_provider_mltrain.core.store import RunStore
from tests.core.test_store import _writer, check_bounded_metric_reads, check_no_lost_property

pytestmark = pytest.mark.integration


def test_several_processes_write_at_once(pg_url):
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(pg_url, w, 25)) for w in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0, 0, 0, 0]
    runs = RunStore(pg_url).list_runs()
    assert len(runs) == 100 and {r["status"] for r in runs} == {"Running"}


def test_no_property_is_lost_when_processes_change_them_at_once_on_postgres(pg_url):
    check_no_lost_property(pg_url)


def test_a_whole_run_with_the_store_on_postgres(pg_url, tmp_path, make_tree):
    src = make_tree({"train.py": "from mltrain import Run\nRun.get_context().log('acc', 0.5, step=1)\n"})
    ws = Workspace(tmp_path / "ws", database_url=pg_url)
    run = Experiment(ws, "pg").submit(ScriptRunConfig(src, "train.py"), tags={"db": "postgres"})
    details = run.wait_for_completion()
    assert details["status"] == "Completed"
    assert run.get_metric_history("acc")[0]["step"] == 1
    assert Workspace(tmp_path / "ws", database_url=pg_url).get_run(run.id).tags == {"db": "postgres"}


def test_a_store_of_schema_1_is_upgraded_in_place(pg_url):
    from tests.core.test_store import check_schema_1_store_upgrades

    check_schema_1_store_upgrades(pg_url)


def test_bounded_metric_reads_on_postgres(pg_url):
    check_bounded_metric_reads(RunStore(pg_url))


def test_a_store_of_schema_3_gets_the_model_registry_on_postgres(pg_url, tmp_path):
    from tests.core.test_store import check_schema_3_store_upgrades

    check_schema_3_store_upgrades(tmp_path / "ws", pg_url)


def test_no_model_version_is_lost_when_processes_register_at_once_on_postgres(pg_url, tmp_path):
    from tests.core.test_model import check_no_lost_version

    check_no_lost_version(tmp_path / "ws", pg_url, workers=4, count=10)


def test_an_alias_moved_by_processes_at_once_stays_one_alias_on_postgres(pg_url, tmp_path):
    from tests.core.test_model import check_alias_moves_from_processes

    check_alias_moves_from_processes(tmp_path / "ws", pg_url)
