from __future__ import annotations

import json
import multiprocessing
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from airflow_provider_mltrain import Workspace
from airflow_provider_mltrain.core.states import RunStatus
from airflow_provider_mltrain.core.store import RunExists, RunStore


def record(run_id: str) -> dict:
    return {
        "id": run_id,
        "experiment": "exp",
        "status": "Queued",
        "target": "local",
        "source_directory": "/src",
        "script": "t.py",
        "arguments": [],
        "snapshot_id": "0" * 64,
        "environment": {},
        "tags": {},
        "properties": {},
    }


def test_create_get_and_duplicate(tmp_path):
    store = RunStore(f"sqlite:///{tmp_path / 'runs.db'}")
    store.create_run(record("a"))
    assert store.get_run("a")["status"] == "Queued"
    with pytest.raises(RunExists):
        store.create_run(record("a"))
    assert store.get_run("missing") is None


def test_states_only_move_forward_and_terminal_is_final(tmp_path):
    store = RunStore(f"sqlite:///{tmp_path / 'runs.db'}")
    store.create_run(record("a"))
    now = time.time()
    assert store.record_states("a", [(RunStatus.RUNNING, now, None)]) == RunStatus.RUNNING
    assert store.record_states("a", [(RunStatus.STARTING, now, None)]) == RunStatus.RUNNING
    assert store.record_states("a", [(RunStatus.FAILED, now + 1, "boom")]) == RunStatus.FAILED
    assert store.record_states("a", [(RunStatus.COMPLETED, now + 2, None)]) == RunStatus.FAILED
    statuses = [e["status"] for e in store.get_events("a")]
    assert sorted(statuses) == ["Failed", "Queued", "Running", "Starting"]


def test_recording_no_state_reads_the_status_and_writes_nothing(tmp_path):
    """A follower's poll that learnt nothing new: the status as it is, read with no write (the
    run's updated_at and events stay as they were)."""
    store = RunStore(f"sqlite:///{tmp_path / 'runs.db'}")
    store.create_run(record("a"))
    store.record_states("a", [(RunStatus.RUNNING, time.time(), None)])
    before, events = store.get_run("a")["updated_at"], store.get_events("a")
    statements = []
    sa.event.listen(store.engine, "before_cursor_execute", lambda *args: statements.append(args[2]))
    assert store.record_states("a", []) == RunStatus.RUNNING
    assert store.record_states("a", iter(())) == RunStatus.RUNNING
    assert statements and all(s.lstrip().upper().startswith(("SELECT", "BEGIN")) for s in statements)
    assert store.get_run("a")["updated_at"] == before and store.get_events("a") == events
    with pytest.raises(KeyError):
        store.record_states("missing", [])


def test_a_follower_of_a_run_elsewhere_than_the_local_target_needs_no_store_read_to_know_it(
    tmp_path, monkeypatch
):
    from types import SimpleNamespace

    from airflow_provider_mltrain.core.run import Run

    ws = Workspace(tmp_path / "ws")
    ws.store.create_run({**record("a"), "target": "docker_test"})
    run = Run(ws, "a")
    run._target = SimpleNamespace(kind="docker")
    monkeypatch.setattr(ws.store, "get_run", lambda run_id: pytest.fail("read the run store"))
    assert run.elsewhere() is None


def test_metric_ingestion_is_compare_and_set(tmp_path):
    store = RunStore(f"sqlite:///{tmp_path / 'runs.db'}")
    store.create_run(record("a"))
    row = {
        "run_id": "a",
        "seq": 0,
        "name": "m",
        "kind": "scalar",
        "step": None,
        "value": "1",
        "logged_at": 0.0,
    }
    assert store.ingest_metrics("a", 0, 10, [row]) is True
    assert store.ingest_metrics("a", 0, 10, [row]) is False  # a second reader of the same bytes
    assert len(store.get_metric_rows("a")) == 1


def _writer(url: str, worker: int, n: int) -> None:
    store = RunStore(url)
    for i in range(n):
        run_id = f"w{worker}-{i}"
        store.create_run(record(run_id))
        store.record_states(run_id, [(RunStatus.RUNNING, time.time(), None)])
        row = {
            "run_id": run_id,
            "seq": 0,
            "name": "m",
            "kind": "scalar",
            "step": i,
            "value": "1",
            "logged_at": 0.0,
        }
        store.ingest_metrics(run_id, 0, 2, [row])
        store.update(run_id, tags={"worker": str(worker)})


def test_several_processes_write_at_once(tmp_path):
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(url, w, 40)) for w in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0, 0, 0, 0]
    store = RunStore(url)
    runs = store.list_runs()
    assert len(runs) == 160
    assert {r["status"] for r in runs} == {"Running"}
    assert sum(len(store.get_metric_rows(r["id"])) for r in runs) == 160


def _property_writer(url: str, worker: int, n: int) -> None:
    store = RunStore(url)
    for i in range(n):
        store.change_properties("shared", lambda props, key=f"w{worker}.{i}": {**props, key: "1"})


def check_no_lost_property(url: str, workers: int = 4, n: int = 25) -> None:
    """Processes changing different properties of one run at once (an input's hash landing while
    the script adds its own) lose none of each other's changes."""
    RunStore(url).create_run(record("shared"))
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_property_writer, args=(url, w, n)) for w in range(workers)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0] * workers
    properties = RunStore(url).get_run("shared")["properties"]
    assert properties == {f"w{w}.{i}": "1" for w in range(workers) for i in range(n)}


def test_no_property_is_lost_when_processes_change_them_at_once(tmp_path):
    check_no_lost_property(f"sqlite:///{tmp_path / 'runs.db'}")


def make_schema_1_store(url: str) -> None:
    """A run store as version 1 of this package left it: no warnings or summarized column, no
    metric summaries, schema_version 1, a run with 100 metric values."""
    import sqlalchemy as sa

    from airflow_provider_mltrain.core import store as store_module

    engine = sa.create_engine(url)
    with engine.begin() as conn:
        store_module.metadata.drop_all(conn)
        store_module.metadata.create_all(conn)
        conn.execute(sa.text("ALTER TABLE mltrain_runs DROP COLUMN warnings"))
        conn.execute(sa.text("ALTER TABLE mltrain_runs DROP COLUMN summarized"))
        conn.execute(sa.text("ALTER TABLE mltrain_metrics DROP COLUMN description"))
        store_module.metric_series.drop(conn)
        store_module.metric_blocks.drop(conn)
        store_module.model_aliases.drop(conn)
        store_module.models.drop(conn)
        conn.execute(store_module.meta.insert().values(key="schema_version", value="1"))
        conn.execute(
            sa.text(
                "INSERT INTO mltrain_runs (id, experiment, status, target, source_directory, script, "
                "arguments, snapshot_id, environment, tags, properties, created_at, updated_at, "
                "metrics_offset, collected) VALUES ('old', 'exp', 'Completed', 'local', '/src', 't.py', "
                "'[]', :snap, '{}', '{}', '{}', 1.0, 1.0, 0, :yes)"
            ),
            {"snap": "0" * 64, "yes": True},
        )
        conn.execute(
            store_module.metrics.insert(),
            [
                {
                    "run_id": "old",
                    "seq": 10 * i,
                    "name": "loss",
                    "kind": "scalar",
                    "step": i,
                    "value": str(100 - i),
                    "logged_at": float(i),
                }
                for i in range(100)
            ],
        )
    engine.dispose()
    store_module._engines.pop(url, None)


def _open_and_warn(url: str, worker: int) -> None:
    store = RunStore(url)
    store.create_run(record(f"new{worker}"))
    store.add_warnings(f"new{worker}", [{"key": "runner:w", "text": f"from {worker}", "count": 1}])


def check_schema_1_store_upgrades(url: str) -> None:
    """Several processes of the new version open a store of version 1 at once: each works, the
    columns are added once, the old run reads with no warnings and takes new ones, and its metric
    summaries are built from its rows on first read, then kept as new rows arrive."""
    import sqlalchemy as sa

    from airflow_provider_mltrain.core import store as store_module

    make_schema_1_store(url)
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_open_and_warn, args=(url, w)) for w in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0, 0]
    store = RunStore(url)
    assert store.get_run("old")["warnings"] == []
    assert store.get_run("new1")["warnings"][0]["text"] == "from 1"
    store.add_warnings("old", [{"key": "runner:x", "text": "x", "count": 1}])
    assert [r["id"] for r in store.list_runs(experiment="exp")][-1] == "old"
    assert store.get_run("old")["warnings"][0]["text"] == "x"
    with store.engine.connect() as conn:
        version = conn.execute(
            sa.select(store_module.meta.c.value).where(store_module.meta.c.key == "schema_version")
        ).scalar_one()
        assert version == str(store_module.SCHEMA_VERSION) == "5"
        columns = [c["name"] for c in sa.inspect(conn).get_columns("mltrain_runs")]
        assert columns.count("warnings") == 1 and columns.count("summarized") == 1
        columns = [c["name"] for c in sa.inspect(conn).get_columns("mltrain_metrics")]
        assert columns.count("description") == 1
    (loss,) = store.metric_summaries("old")
    assert (loss["rows"], loss["min"], loss["max"], loss["last"], loss["last_step"]) == (100, 1, 100, 1, 99)
    late = {"run_id": "old", "seq": 5000, "name": "loss", "kind": "scalar", "step": 100, "value": "0.5"}
    assert store.ingest_metrics("old", 0, 5001, [late | {"logged_at": 100.0}])
    (loss,) = store.metric_summaries("old")
    assert (loss["rows"], loss["min"], loss["last"]) == (101, 0.5, 0.5)


def test_a_store_of_schema_1_is_upgraded_in_place(tmp_path):
    check_schema_1_store_upgrades(f"sqlite:///{tmp_path / 'runs.db'}")


def _register_in(root: str, url: str, worker: int) -> None:
    from airflow_provider_mltrain import Model

    src = Path(root).parent / f"model{worker}.bin"
    src.write_bytes(b"m")
    Model.register(Workspace(root, database_url=url), src, "upgraded")


def check_schema_3_store_upgrades(root: Path, url: str) -> None:
    """A store of schema 3 (before the model registry), opened by several processes of the new
    version at once: the model tables are created once, its runs read as before, and each process
    registers a version of one model without losing one."""
    import sqlalchemy as sa

    from airflow_provider_mltrain.core import store as store_module

    engine = sa.create_engine(url)
    with engine.begin() as conn:
        store_module.metadata.drop_all(conn)
        store_module.metadata.create_all(conn)
        store_module.model_aliases.drop(conn)
        store_module.models.drop(conn)
        conn.execute(store_module.meta.insert().values(key="schema_version", value="3"))
    engine.dispose()
    store_module._engines.pop(url, None)
    old = RunStore.__new__(RunStore)  # a version-3 process writes a run without the new code
    old.url, old.engine = url, sa.create_engine(url)
    old.create_run(record("old"))
    old.engine.dispose()
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_register_in, args=(str(root), url, w)) for w in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0, 0, 0]
    store = RunStore(url)
    assert store.get_run("old")["status"] == "Queued"
    assert sorted(m["version"] for m in store.list_model_versions("upgraded")) == [1, 2, 3]
    with store.engine.connect() as conn:
        version = conn.execute(
            sa.select(store_module.meta.c.value).where(store_module.meta.c.key == "schema_version")
        ).scalar_one()
    assert version == "5"


def test_a_store_of_schema_3_gets_the_model_registry(tmp_path):
    root = tmp_path / "ws"
    root.mkdir()
    check_schema_3_store_upgrades(root, f"sqlite:///{root / 'runs.db'}")


def test_warnings_merge_in_one_transaction_with_the_metrics_they_came_with(tmp_path):
    store = RunStore(f"sqlite:///{tmp_path / 'runs.db'}")
    store.create_run(record("a"))
    bad = [{"key": "metrics.malformed", "count": 2, "reasons": {"not a JSON object": 2}, "first": 5}]
    assert store.ingest_metrics("a", 0, 10, [], bad) is True
    assert store.ingest_metrics("a", 0, 10, [], bad) is False  # the same bytes again: not counted twice
    assert store.ingest_metrics("a", 10, 20, [], bad) is True
    assert store.get_run("a")["warnings"] == [
        {"key": "metrics.malformed", "count": 4, "reasons": {"not a JSON object": 4}, "first": 5}
    ]


def check_bounded_metric_reads(store: RunStore) -> None:
    """Summaries, buckets, pages and the last number, computed by the database: numbers are told
    from every other JSON value (strings, booleans, lists, NaN, infinities) before any cast."""
    store.create_run(record("m"))
    odd = ['"1.5"', "true", "null", "[1, 2]", '{"a": 1}', "NaN", "Infinity", "-Infinity", "1" * 400]
    values = [json.dumps(i / 10) for i in range(1000)] + odd + ["-7", "2.5e3"]
    rows = [
        {
            "run_id": "m",
            "seq": seq,
            "name": "loss",
            "kind": "scalar",
            "step": seq,
            "value": v,
            "logged_at": seq,
        }
        for seq, v in enumerate(values)
    ]
    rows.append(
        {
            "run_id": "m",
            "seq": 5000,
            "name": "tags",
            "kind": "tags",
            "step": None,
            "value": "{}",
            "logged_at": 0,
        }
    )
    assert store.ingest_metrics("m", 0, 1, rows)
    (summary,) = store.metric_summaries("m")
    assert (summary["name"], summary["rows"], summary["count"]) == ("loss", len(values), 1002)
    assert (summary["min"], summary["max"], summary["last"]) == (-7.0, 2500.0, 2500.0)
    assert store.last_numeric("m", "loss") == 2500.0 and store.last_numeric("m", "none") is None
    assert store.metric_names("m") == ["loss"]
    (overview,) = store.metric_overview("m", buckets=10, limit=10)
    buckets = overview.pop("buckets")
    assert overview == summary
    # Buckets of consecutive values (whole blocks of metric_summary.BLOCK): at most the number asked.
    assert 5 <= len(buckets) <= 10 and sum(b["count"] for b in buckets) == 1002
    assert buckets[0]["first_step"] == 0 and buckets[-1]["max"] == 2500.0
    page = store.metric_page("m", "loss", offset=1000, limit=5)
    assert [r["value"] for r in page] == odd[:5]
    assert [r["value"] for r in store.metric_page("m", "loss", limit=100, non_numeric=True)] == odd


def test_bounded_metric_reads(tmp_path):
    check_bounded_metric_reads(RunStore(f"sqlite:///{tmp_path}/runs.db"))


def test_run_properties_are_write_once_and_a_missing_run_says_so(tmp_path):
    from airflow_provider_mltrain.core.errors import RunNotFound
    from airflow_provider_mltrain.core.run import Run

    ws = Workspace(tmp_path / "ws")
    ws.store.create_run(record("r1"))
    run = Run(ws, "r1")
    run.add_properties({"team": "vision", "n": 3})
    run.add_properties({"team": "vision"})  # the same value again is no change
    with pytest.raises(ValueError, match=r"write-once; already set: \['team'\]"):
        run.add_properties({"team": "nlp", "other": "x"})
    assert ws.store.get_run("r1")["properties"] == {"team": "vision", "n": "3"}  # nothing half-done
    with pytest.raises(RunNotFound, match="'nope' is not in the run store"):
        Run(ws, "nope").add_properties({"team": "vision"})
