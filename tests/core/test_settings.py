from __future__ import annotations

import logging

import pytest

from airflow_provider_mltrain import Workspace
from airflow_provider_mltrain.core import settings
from airflow_provider_mltrain.core.errors import InvalidRunConfig


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("AIRFLOW_HOME", str(tmp_path / "afhome"))
    monkeypatch.delenv("AIRFLOW_CONFIG", raising=False)
    for var in ("MLTRAIN_WORKSPACE", "AIRFLOW__MLTRAIN__WORKSPACE", "MLTRAIN_DATABASE_URL"):
        monkeypatch.delenv(var, raising=False)
    (tmp_path / "afhome").mkdir()
    return tmp_path / "afhome"


def test_default_is_airflow_home_mltrain(home):
    assert settings.workspace_root() == home / "mltrain"
    ws = Workspace()
    assert ws.root == home / "mltrain"
    assert ws.database_url == f"sqlite:///{home / 'mltrain' / 'runs.db'}"


def test_airflow_cfg_then_airflow_env_then_mltrain_env(home, tmp_path, monkeypatch):
    (home / "airflow.cfg").write_text(f"[core]\nx = 1\n[mltrain]\nworkspace = {tmp_path / 'from_cfg'}\n")
    assert settings.workspace_root() == tmp_path / "from_cfg"
    monkeypatch.setenv("AIRFLOW__MLTRAIN__WORKSPACE", str(tmp_path / "from_af_env"))
    assert settings.workspace_root() == tmp_path / "from_af_env"
    monkeypatch.setenv("MLTRAIN_WORKSPACE", str(tmp_path / "from_env"))
    assert settings.workspace_root() == tmp_path / "from_env"


def test_database_url_from_environment(home, monkeypatch, tmp_path):
    url = f"sqlite:///{tmp_path / 'other.db'}"
    monkeypatch.setenv("MLTRAIN_DATABASE_URL", url)
    assert Workspace(tmp_path / "ws").database_url == url


def test_bad_limit_setting_is_a_clear_error(home, monkeypatch):
    monkeypatch.setenv("MLTRAIN_SNAPSHOT_MAX_FILES", "lots")
    with pytest.raises(InvalidRunConfig, match="MLTRAIN_SNAPSHOT_MAX_FILES"):
        settings.SnapshotLimits.from_settings()
    monkeypatch.setenv("MLTRAIN_SNAPSHOT_MAX_FILES", "5000")
    monkeypatch.setenv("MLTRAIN_SNAPSHOT_MAX_SIZE_MB", "1.5")
    limits = settings.SnapshotLimits.from_settings()
    assert limits.max_files == 5000 and limits.max_bytes == int(1.5 * 1024 * 1024)


def test_a_process_says_once_where_its_workspace_is(tmp_path, monkeypatch, caplog):
    root = tmp_path / "fresh-ws"
    monkeypatch.setenv("MLTRAIN_WORKSPACE", str(root))
    with caplog.at_level(logging.INFO, logger="airflow_provider_mltrain.core.workspace"):
        Workspace()
        Workspace()
        Workspace(root)
    said = [r.getMessage() for r in caplog.records if str(root) in r.getMessage()]
    assert said == [f"mltrain workspace created: {root} (from MLTRAIN_WORKSPACE)"]


def test_the_default_workspace_names_the_setting_that_moves_it(home, caplog):
    (home / "mltrain").mkdir()
    with caplog.at_level(logging.INFO, logger="airflow_provider_mltrain.core.workspace"):
        Workspace()
    assert [r.getMessage() for r in caplog.records] == [
        f"mltrain workspace in use: {home / 'mltrain'} "
        "($AIRFLOW_HOME/mltrain; set MLTRAIN_WORKSPACE to choose another folder)"
    ]
