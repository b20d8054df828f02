"""SSHComputeHook: an Airflow ``ssh`` connection as a compute target, against the real test sshd."""

from __future__ import annotations

import json
import posixpath
import secrets
from pathlib import Path

import pytest

from airflow_provider_mltrain import Experiment, ScriptRunConfig
from airflow_provider_mltrain.core.errors import InvalidRunConfig
from airflow_provider_mltrain.get_provider_info import get_provider_info
from airflow_provider_mltrain.hooks.compute import hook_class
from airflow_provider_mltrain.hooks.ssh import SSHComputeHook
from airflow_provider_mltrain.targets.ssh import SSHTarget
from tests.targets.harnesses.ssh import connection_json, require_ssh

CONN = "AIRFLOW_CONN_HOOK_VM"


def test_settings_come_from_the_connection_fields_and_extras(monkeypatch):
    monkeypatch.setenv(
        CONN,
        json.dumps(
            {
                "conn_type": "ssh",
                "host": "gpu-box",
                "port": 2222,
                "login": "trainer",
                "password": "pw",
                "extra": {
                    "key_file": "~/.ssh/id_train",
                    "host_key": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIA==",
                    "remote_root": "/data/mltrain",
                    "interpreter_path": "/opt/py/bin/python3",
                    "cleanup": "on_success",
                    "conn_timeout": "5",
                },
            }
        ),
    )
    s = SSHComputeHook("hook_vm").settings()
    assert (s.host, s.port, s.username, s.password) == ("gpu-box", 2222, "trainer", "pw")
    assert s.key_file == "~/.ssh/id_train" and s.host_key.startswith("ssh-ed25519 ")
    assert (s.remote_root, s.interpreter_path, s.cleanup, s.conn_timeout) == (
        "/data/mltrain",
        "/opt/py/bin/python3",
        "on_success",
        5.0,
    )
    assert s.no_host_key_check is False  # verified unless the connection says otherwise
    assert "pw" not in repr(s)
    assert hook_class("ssh") is SSHComputeHook


def test_defaults_verify_host_keys_and_use_the_home_folder(monkeypatch):
    monkeypatch.setenv(CONN, json.dumps({"conn_type": "ssh", "host": "gpu-box"}))
    s = SSHComputeHook("hook_vm").settings()
    assert (s.port, s.remote_root, s.interpreter_path, s.cleanup) == (22, "~/.mltrain", "python3", "never")
    assert s.no_host_key_check is False


def test_bad_extras_are_refused_naming_the_connection(monkeypatch, tmp_path):
    monkeypatch.setenv(CONN, json.dumps({"conn_type": "ssh", "host": "h", "extra": {"cleanup": "weekly"}}))
    with pytest.raises(InvalidRunConfig) as err:
        SSHComputeHook("hook_vm").get_target(tmp_path)
    assert "'hook_vm'" in str(err.value) and "cleanup" in str(err.value) and "on_success" in str(err.value)


def test_provider_declares_the_connection_form():
    types = [c["connection-type"] for c in get_provider_info()["connection-types"]]
    assert "ssh" not in types  # the official SSH provider's type: never taken over
    (entry,) = [c for c in get_provider_info()["connection-types"] if c["connection-type"] == "mltrain_ssh"]
    assert entry["hook-class-name"] == "airflow_provider_mltrain.hooks.ssh.SSHComputeHook"
    assert hook_class("ssh") is hook_class("mltrain_ssh") is SSHComputeHook
    for name in ("key_file", "private_key", "host_key", "remote_root", "interpreter_path", "cleanup"):
        assert name in entry["conn-fields"]
    assert entry["conn-fields"]["private_key"]["schema"]["format"] == "password"


@pytest.mark.integration
def test_test_connection_connects_for_real(monkeypatch, tmp_path):
    env = require_ssh()
    monkeypatch.setenv(CONN, connection_json(env, remote_root="~/mltrain-tests/hook"))
    monkeypatch.chdir(tmp_path)
    ok, message = SSHComputeHook("hook_vm").test_connection()
    assert ok, message
    assert f"mltrain-vm@127.0.0.1:{env['PORT']}" in message and "Python 3." in message
    assert list(tmp_path.iterdir()) == []  # "Test" in the UI leaves nothing in the server's folder


@pytest.mark.integration
def test_test_connection_reports_an_unknown_host_key(monkeypatch, tmp_path):
    env = require_ssh()
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    monkeypatch.setenv(CONN, connection_json(env, known_hosts=str(empty)))
    ok, message = SSHComputeHook("hook_vm").test_connection()
    assert not ok and "unknown" in message and "SHA256:" in message


@pytest.mark.integration
def test_test_connection_reports_a_refused_port(monkeypatch):
    env = require_ssh()
    conn = json.loads(connection_json(env))
    conn["port"] = 1  # nothing listens on 127.0.0.1:1
    monkeypatch.setenv(CONN, json.dumps(conn))
    ok, message = SSHComputeHook("hook_vm").test_connection()
    assert not ok and "127.0.0.1:1" in message and "refused" in message


@pytest.mark.integration
def test_a_run_through_the_connection_id(monkeypatch, workspace, make_tree):
    env = require_ssh()
    root = f"~/mltrain-tests/hook-run-{secrets.token_hex(4)}"  # removed below: this test's alone
    monkeypatch.setenv(CONN, connection_json(env, remote_root=root, cleanup="always"))
    target = SSHComputeHook("hook_vm").get_target(Path(workspace.root))
    assert isinstance(target, SSHTarget)
    src = make_tree({"train.py": "print('via the connection')\n"})
    run = Experiment(workspace, "hook").submit(ScriptRunConfig(src, "train.py", compute_target="hook_vm"))
    details = run.wait_for_completion()
    assert details["target"] == "hook_vm" and "via the connection" in run.get_log_tail()
    target._run(["rm", "-rf", "--", target.root])


@pytest.mark.integration
def test_test_connection_changes_nothing_on_the_host(monkeypatch, tmp_path):
    env = require_ssh()
    root = f"~/mltrain-tests/untouched-{secrets.token_hex(4)}"
    monkeypatch.setenv(CONN, connection_json(env, remote_root=root))
    ok, message = SSHComputeHook("hook_vm").test_connection()
    assert ok, message
    assert "(is created by the first run)" in message
    target = SSHComputeHook("hook_vm").get_target(tmp_path)
    try:
        parent = posixpath.dirname(target.root)
        assert posixpath.basename(target.root) not in target.with_sftp(lambda sftp: sftp.listdir(parent))
    finally:
        target.close()


@pytest.mark.integration
def test_test_connection_refuses_a_root_it_cannot_write(monkeypatch):
    env = require_ssh()
    monkeypatch.setenv(CONN, connection_json(env, remote_root="/etc/mltrain"))
    ok, message = SSHComputeHook("hook_vm").test_connection()
    assert not ok and "/etc is not a folder mltrain-vm can write to" in message and "remote_root" in message


def test_an_official_ssh_connection_is_read_with_all_its_extras(monkeypatch, tmp_path):
    """The extras of the official SSH provider's form: ours reads what it uses, accepts the rest."""
    extra = {
        "key_file": "/keys/id_ed25519",
        "host_key": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIA==",
        "no_host_key_check": "false",
        "allow_host_key_change": "false",
        "look_for_keys": "false",
        "conn_timeout": "7",
        "cmd_timeout": "30",
        "compress": "true",
        "disabled_algorithms": {"pubkeys": ["rsa-sha2-256"]},
        "ciphers": ["aes256-ctr"],
    }
    monkeypatch.setenv(CONN, json.dumps({"conn_type": "ssh", "host": "gpu-box", "extra": extra}))
    target = SSHComputeHook("hook_vm").get_target(tmp_path)
    s = target.settings
    assert (s.key_file, s.look_for_keys, s.no_host_key_check, s.conn_timeout) == (
        "/keys/id_ed25519",
        False,
        False,
        7.0,
    )
