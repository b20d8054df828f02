"""A run's size never becomes the reader's size: logs are read by range, series are downsampled
by the database, metric values and file names are paged."""

from __future__ import annotations

import re

import pytest

from airflow_provider_mltrain import Experiment, ScriptRunConfig
from airflow_provider_mltrain.core.run import STD_LOG
from airflow_provider_mltrain.plugins import queries
from airflow_provider_mltrain.targets.local import LocalTarget
from tests.plugins.test_app import api, client_for
from tests.targets.suite import wait_until

POINTS = 30_000
SPIKE_AT, DIP_AT = 12_345, 23_456
SERIES = f"""
import json, os, time
from mltrain import Run
run = Run.get_context()
now = time.time()
with open(os.environ["MLTRAIN_METRICS_FILE"], "a") as f:
    for i in range({POINTS}):
        value = 1000.0 if i == {SPIKE_AT} else -1000.0 if i == {DIP_AT} else (i % 100) / 100
        record = {{"name": "loss", "kind": "scalar", "value": value, "step": i, "time": now + i}}
        f.write(json.dumps(record) + "\\n")
run.log("note", "not a number")
for i in range(3):
    run.log("acc", 0.5 + i / 10, step=i)
os.makedirs("outputs/many", exist_ok=True)
for i in range(2500):
    open("outputs/many/f%05d.txt" % i, "w").close()
"""


class CountingTarget(LocalTarget):
    """The local target, counting the bytes its ``read_file`` hands out."""

    bytes_read = 0

    def read_file(self, run_id, name, offset=0, *args, **kwargs):
        data = super().read_file(run_id, name, offset, *args, **kwargs)
        if name == STD_LOG:
            CountingTarget.bytes_read += len(data)
        return data


@pytest.fixture(scope="module")
def big_run(tmp_path_factory):
    from airflow_provider_mltrain import Workspace

    base = tmp_path_factory.mktemp("size")
    ws = Workspace(base / "ws")
    src = base / "src"
    src.mkdir()
    (src / "train.py").write_text(SERIES)
    run = Experiment(ws, "size").submit(ScriptRunConfig(src, "train.py"))
    details = run.wait_for_completion()
    assert details["status"] == "Completed", run.get_log_tail()
    return ws, run.id


def test_a_long_series_is_downsampled_keeping_its_extremes(big_run):
    ws, run_id = big_run
    client = client_for(ws)
    series = api(client, f"/runs/{run_id}/metrics")
    loss = series["loss"]
    assert loss["count"] == POINTS and loss["downsampled"] is True
    assert 100 <= len(loss["points"]) <= queries.MAX_CHART_POINTS
    values = [p["value"] for p in loss["points"]]
    assert max(values) == 1000.0 and min(values) == -1000.0  # the spike and the dip survive
    spike = next(p for p in loss["points"] if p["value"] == 1000.0)
    assert abs(spike["step"] - SPIKE_AT) <= POINTS / (queries.MAX_CHART_POINTS / 2)
    steps = [p["step"] for p in loss["points"]]
    assert steps == sorted(steps) and steps[0] == 0 and steps[-1] >= POINTS - 100
    small = api(client, f"/runs/{run_id}/metrics", max_points=100)["loss"]
    assert len(small["points"]) <= 100 and max(p["value"] for p in small["points"]) == 1000.0
    # Short series are sent whole, non-numeric values as they are.
    assert [p["value"] for p in series["acc"]["points"]] == [0.5, 0.6, 0.7]
    assert series["acc"]["downsampled"] is False and series["note"]["values"] == ["not a number"]


def test_the_run_page_draws_the_downsampled_series(big_run):
    ws, run_id = big_run
    page = client_for(ws).get(f"/runs/{run_id}")
    assert page.status_code == 200
    counts = [int(n) for n in re.findall(r'data-metric="loss"[^>]*data-points="(\d+)"', page.text)]
    assert counts and counts[0] <= queries.MAX_CHART_POINTS


def test_statistics_of_a_downsampled_series_are_exact(big_run):
    ws, run_id = big_run
    stats = {m["name"]: m for m in ws.store.metric_summaries(run_id)}
    assert stats["loss"]["count"] == POINTS
    assert (stats["loss"]["min"], stats["loss"]["max"]) == (-1000.0, 1000.0)
    assert stats["loss"]["last"] == pytest.approx(((POINTS - 1) % 100) / 100)
    assert stats["note"]["count"] == 0 and stats["note"]["rows"] == 1


def test_metric_values_page_through_the_whole_series_exactly(big_run):
    ws, run_id = big_run
    client = client_for(ws)
    values, offset = [], 0
    while offset is not None:
        page = api(client, f"/runs/{run_id}/metric-values", name="loss", offset=offset, limit=10_000)
        assert len(page["values"]) <= 10_000
        values += page["values"]
        offset = page["next_offset"]
    assert len(values) == POINTS
    assert [v["step"] for v in values] == list(range(POINTS))
    assert values[SPIKE_AT]["value"] == 1000.0 and values[1]["value"] == 0.01
    assert api(client, f"/runs/{run_id}/metric-values", name="loss", limit=10_001, expect=422)
    assert api(client, f"/runs/{run_id}/metric-values", name="nope", expect=404)


def test_file_names_page_in_the_api_and_the_run_page(big_run):
    ws, run_id = big_run
    client = client_for(ws)
    first = api(client, f"/runs/{run_id}/files", limit=1000)
    assert first["total"] > 2500 and len(first["files"]) == 1000 and first["next_offset"] == 1000
    names, offset = [], 0
    while offset is not None:
        page = api(client, f"/runs/{run_id}/files", offset=offset, limit=1000)
        names += page["files"]
        offset = page["next_offset"]
    assert names == sorted(names) and len(set(names)) == len(names) == first["total"]
    assert "logs/std_log.txt" in names and sum(n.startswith("outputs/many/") for n in names) == 2500
    details = api(client, f"/runs/{run_id}")
    assert details["files_total"] == first["total"] and len(details["files"]) == queries.FILES_PER_PAGE
    page = client.get(f"/runs/{run_id}")
    listed = re.findall(r'<li><a href="[^"]*/files/outputs/many/', page.text)
    assert len(listed) < queries.FILES_PER_PAGE + 1
    assert f"?x=step&amp;files={queries.FILES_PER_PAGE}#files" in page.text
    second = client.get(f"/runs/{run_id}", params={"files": queries.FILES_PER_PAGE})
    per_page = queries.FILES_PER_PAGE
    assert f'/files/{names[per_page - 1]}"' not in second.text
    assert f'/files/{names[per_page]}"' in second.text
    assert f'/files/{names[2 * per_page - 1]}"' in second.text


def test_a_live_log_is_read_by_range(tmp_path, make_tree):
    """``limit=1`` from the start of a 200 MB live log reads one byte's worth, not the log."""
    from airflow_provider_mltrain import Workspace

    ws = Workspace(tmp_path / "ws")
    target = CountingTarget(tmp_path / "target", name="counting")
    flag = tmp_path / "go"
    src = make_tree(
        {"wait.py": "import os, sys, time\nwhile not os.path.exists(sys.argv[1]):\n    time.sleep(0.05)\n"}
    )
    config = ScriptRunConfig(src, "wait.py", arguments=[str(flag)], compute_target=target)
    run = Experiment(ws, "size").submit(config)
    log = target.run_dir(run.id) / STD_LOG
    try:
        wait_until(lambda: run.get_status() == "Running", timeout=60)
        with open(log, "r+b") as f:
            f.truncate(200 << 20)  # sparse: nothing written, 200 MB long
            f.seek(0)
            f.write(b"first line\nsecond line\n")
        client = client_for(ws)
        CountingTarget.bytes_read = 0
        page = api(client, f"/runs/{run.id}/log", offset=0, limit=1)
        assert page["text"] == "f" and page["next_offset"] == 1 and not page["eof"]
        page = api(client, f"/runs/{run.id}/log", offset=0, limit=100)
        assert page["text"] == "first line\nsecond line\n"
        tail = api(client, f"/runs/{run.id}/log", limit=1000)
        assert tail["size"] == 200 << 20 and tail["eof"]
        assert CountingTarget.bytes_read <= 1 + 100 + 1000 + 4096
        assert client.get(f"/runs/{run.id}").status_code == 200
        assert CountingTarget.bytes_read <= 2 * (queries.DEFAULT_LOG_CHUNK + 4096) + 1101 + 4096
    finally:
        flag.touch()
    assert run.wait_for_completion()["status"] == "Completed"
