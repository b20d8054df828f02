"""`mltrain models list|show|download|register|alias` (cli.py) over a real workspace."""

from __future__ import annotations

import json
from pathlib import Path

from airflow_provider_mltrain import Model
from tests.core.test_model import finished_run
from tests.test_cli import cli  # noqa: F401 - the fixture


def test_models_register_list_show_download_and_alias(workspace, make_tree, cli, tmp_path):  # noqa: F811
    run = finished_run(workspace, make_tree, seed=3)
    code, out, err = cli("models", "register", run.id, "churn", "outputs/model.pkl", "--tag", "team=risk")
    assert (code, err) == (0, "") and "registered churn:1" in out
    run.register_model("churn", "outputs/model")

    code, out, _ = cli("models", "list")
    assert code == 0
    rows = [line.split() for line in out.splitlines()[1:]]
    assert [(r[0], r[1]) for r in rows] == [("churn", "2"), ("churn", "1")]
    code, out, _ = cli("models", "list", "--tag", "team=risk", "--json")
    assert [(m["id"], m["run_id"], m["tags"]) for m in json.loads(out)] == [
        ("churn:1", run.id, {"team": "risk"})
    ]

    code, out, _ = cli("models", "alias", "churn", "production", "1")
    assert code == 0 and "production -> version 1 (new)" in out
    code, out, _ = cli("models", "alias", "churn:2", "production")
    assert code == 0 and "production -> version 2 (was version 1)" in out
    code, out, _ = cli("models", "show", "churn", "--alias", "production", "--json")
    shown = json.loads(out)
    assert (shown["version"], shown["aliases"], shown["run_id"]) == (2, ["production"], run.id)
    assert sorted(f["path"] for f in shown["files"]) == ["model/a.bin", "model/sub/b.txt"]
    code, out, _ = cli("models", "show", "churn:1")
    assert code == 0 and "Model       churn:1" in out and "team=risk" in out and run.id in out

    code, out, _ = cli("models", "download", "churn", "--version", "1", "-o", str(tmp_path / "dl"))
    assert code == 0 and (tmp_path / "dl" / "model.pkl").read_bytes() == b"weights-3"
    code, _, err = cli("models", "download", "churn", "--version", "1", "-o", str(tmp_path / "dl"))
    assert code == 1 and "exist_ok" in err
    code, _, _ = cli("models", "download", "churn:1", "-o", str(tmp_path / "dl"), "--overwrite")
    assert code == 0

    code, out, _ = cli("models", "alias", "churn", "production", "--delete")
    assert code == 0 and Model(workspace, "churn").aliases == []


def test_models_bad_input_exits_2_and_writes_nothing(workspace, make_tree, cli, tmp_path):  # noqa: F811
    run = finished_run(workspace, make_tree)
    code, _, err = cli("models", "register", run.id, "bad name", "outputs/model.pkl")
    assert code == 2 and "letters, digits, '-', '_' and '.'" in err
    code, _, err = cli("models", "register", run.id, "churn", "outputs/never.pkl")
    assert code == 2 and "no file or folder 'outputs/never.pkl'" in err
    assert Model.list(workspace) == []
    code, _, err = cli("models", "show", "churn")
    assert code == 2 and "No model named 'churn'" in err
    run.register_model("churn", "outputs/model.pkl")
    code, _, err = cli("models", "show", "churn", "--version", "9")
    assert code == 2 and "no version 9" in err
    code, _, err = cli("models", "download", "churn", "--alias", "production", "-o", str(tmp_path))
    assert code == 2 and "no alias 'production'" in err
    assert not Path(tmp_path / "model.pkl").exists()
    code, _, err = cli("models", "alias", "churn", "production", "7")
    assert code == 2 and "no version 7" in err
    code, _, err = cli("models", "alias", "churn", "9lives", "1")
    assert code == 2 and "starting with a letter" in err
