"""Odd text in every field a script or its submitter chooses: pages and the JSON API still answer.

The run's script name, arguments, tags, properties, metric names and values, output file names
and log hold bytes that are not UTF-8 (surrogate escapes), control characters, CSI and OSC
sequences, newlines, bidirectional overrides and 10,000-character strings.
"""

from __future__ import annotations

import json
import os
import re

import pytest

from airflow_provider_mltrain import Experiment, ScriptRunConfig, Workspace
from tests.plugins.test_app import client_for

ODD = "\x1b[31mred\x1b[0m \x1b]0;title\x07 \x1b[2J\x1b[H tab\tnl\nend \u202eevil\x00nul\x9bC1"
ARG = ODD.replace("\x00", "")  # a process argument cannot hold NUL
BYTES = os.fsdecode(b"\xff\xfe")  # two bytes that are not UTF-8, as Python carries them
LONG = "y" * 10_000
SCRIPT = "tr\x1b[1main\n.py"
TRAIN = """
import os, sys
from mltrain import Run
run = Run.get_context()
ODD = {odd!r}
run.set_tags({{"s" + ODD: ODD, "long": "x" * 10000, "argv": sys.argv[1]}})
run.log(ODD, 1.0)
run.log(ODD, 2.0)
run.log("name\\udcff", 2.0)
run.log("x" * 255, 3.0)  # the longest name a run may log (a longer one is refused)
run.log("text", ODD + sys.argv[1])
print(ODD, sys.argv[1:], flush=True)
os.makedirs("outputs", exist_ok=True)
open(b"outputs/\\xff\\xfe bytes.txt", "wb").write(b"x")
open("outputs/" + ODD.replace("/", "").replace("\\x00", "") + ".txt", "w").write("x")
"""
# What a page may hold of all that: no control character but tab and newline, nothing a
# browser would take for markup.
CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u202a-\u202e\ud800-\udfff]")


@pytest.fixture(scope="module")
def odd(tmp_path_factory):
    base = tmp_path_factory.mktemp("odd")
    ws = Workspace(base / "ws")
    src = base / "src"
    src.mkdir()
    (src / SCRIPT).write_text(TRAIN.format(odd=ODD))
    exp = Experiment(ws, "odd")
    config = ScriptRunConfig(src, SCRIPT, arguments=[BYTES + "argv", ARG, LONG])
    run = exp.submit(config, tags={"t" + ODD: ODD + BYTES, "submitted": LONG}, properties={"p" + ODD: BYTES})
    assert run.wait_for_completion()["status"] == "Completed", run.get_log_tail()
    plain = exp.submit(ScriptRunConfig(src, SCRIPT, arguments=["plain", "x", "y"]))
    plain.wait_for_completion()
    return ws, run.id, plain.id


def _page(client, url, **params):
    response = client.get(url, params=params)
    assert response.status_code == 200, response.text[:2000]
    text = response.content.decode("utf-8")  # strict: the page is UTF-8
    assert not CONTROL.search(text), repr(CONTROL.search(text))
    return text


def _json(client, url, **params):
    response = client.get(f"/api{url}", params=params)
    assert response.status_code == 200, response.text[:2000]
    return json.loads(response.content.decode("utf-8"))  # strict UTF-8, strict JSON


def test_pages_render_odd_text_with_replacement_characters(odd):
    ws, run_id, plain_id = odd
    client = client_for(ws)
    page = _page(client, f"/runs/{run_id}")
    assert "\ufffd[31mred\ufffd[0m" in page  # ESC shown, not acted on
    assert "\ufffd\ufffdargv" in page  # the argument's undecodable bytes
    assert "\ufffd\ufffd bytes.txt" in page  # the output file named by bytes
    assert LONG in page
    assert "tr\ufffd[1main\n.py" in page
    _page(client, f"/runs/{run_id}/live")
    listing = _page(client, "/experiments/odd")
    assert run_id in listing
    _page(client, "/experiments/odd", tag="long")
    _page(client, "/compare", runs=[run_id, plain_id])
    _page(client, "/")


def test_the_api_returns_valid_json_for_odd_text(odd):
    ws, run_id, plain_id = odd
    client = client_for(ws)
    details = _json(client, f"/runs/{run_id}")
    assert details["arguments"] == ["\ufffd\ufffdargv", ARG, LONG]  # controls escaped by JSON itself
    assert details["script"] == SCRIPT
    assert details["tags"]["t" + ODD] == ODD + "\ufffd\ufffd" and details["tags"]["submitted"] == LONG
    assert details["properties"]["p" + ODD] == "\ufffd\ufffd"
    assert "outputs/\ufffd\ufffd bytes.txt" in details["files"]
    assert ODD in details["metric_names"] and "name\ufffd" in details["metric_names"]
    metrics = _json(client, f"/runs/{run_id}/metrics")
    assert [p["value"] for p in metrics[ODD]["points"]] == [1.0, 2.0]
    assert metrics["text"]["values"] == [ODD + "\ufffd\ufffdargv"]
    assert "x" * 255 in metrics  # kept whole
    files = _json(client, f"/runs/{run_id}/files")
    assert "outputs/\ufffd\ufffd bytes.txt" in files["files"]
    log = _json(client, f"/runs/{run_id}/log")
    assert ODD.split("\n")[0].replace("\x00", "") in log["text"].replace("\x00", "")
    page = _json(client, f"/runs/{run_id}/metric-values", name=ODD)
    assert [v["value"] for v in page["values"]] == [1.0, 2.0]
    runs = _json(client, "/experiments/odd/runs")
    assert {r["run_id"] for r in runs["runs"]} == {run_id, plain_id}
    assert _json(client, "/compare", runs=[run_id, plain_id])["run_ids"]
    assert any(e["name"] == "odd" for e in _json(client, "/experiments"))
