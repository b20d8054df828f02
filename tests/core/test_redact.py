"""Masking of environment variables and credentials in URLs, in every form they come in."""

from __future__ import annotations

import json

import pytest

from airflow_provider_mltrain.core.redact import is_masked, mask_variable, redact_url

# (remote URL as configured, what is recorded): every credential gone, the rest kept.
GIT_REMOTES = [
    ("https://user:token@git.example.invalid/team/models.git", "https://git.example.invalid/team/models.git"),
    ("https://ghp_abc123@github.com/team/models.git", "https://github.com/team/models.git"),
    ("https://user:p@ss@git.example.invalid/models.git", "https://git.example.invalid/models.git"),
    ("https://user:pa/ss@git.example.invalid/models.git", "https://git.example.invalid/models.git"),
    ("https://user:p/a@s/s@git.example.invalid:8443/m.git", "https://git.example.invalid:8443/m.git"),
    ("https://user:pass@[::1]:8080/m.git", "https://[::1]:8080/m.git"),
    (
        "https://git.example.invalid/m.git?access_token=abc123",
        "https://git.example.invalid/m.git?access_token=***",
    ),
    ("https://git.example.invalid/m.git?x=1&token=abc123", "https://git.example.invalid/m.git?x=1&token=***"),
    (
        "https://git.example.invalid/m.git?private_token=abc&y=2",
        "https://git.example.invalid/m.git?private_token=***&y=2",
    ),
    ("ssh://git:s3cret@git.example.invalid:22/team/m.git", "ssh://git.example.invalid:22/team/m.git"),
    ("ssh://git@git.example.invalid/team/m.git", "ssh://git.example.invalid/team/m.git"),
    ("git+ssh://deploy:s3cret@git.example.invalid/m.git", "git+ssh://git.example.invalid/m.git"),
    ("git@github.com:team/models.git", "github.com:team/models.git"),
    ("deploy:s3cret@github.com:team/models.git", "github.com:team/models.git"),
    # no credentials: unchanged, even with "@" or a port in the path
    ("https://git.example.invalid/team/models.git", "https://git.example.invalid/team/models.git"),
    ("https://github.com/team/models@main", "https://github.com/team/models@main"),
    ("https://git.example.invalid:8443/team/models@v1", "https://git.example.invalid:8443/team/models@v1"),
    ("/srv/git/models.git", "/srv/git/models.git"),
    ("file:///srv/git/models.git", "file:///srv/git/models.git"),
]


@pytest.mark.parametrize(("url", "recorded"), GIT_REMOTES)
def test_urls_lose_their_credentials(url, recorded):
    assert redact_url(url, "") == recorded
    for secret in ("token", "abc123", "s3cret", "p@ss", "pa/ss", "ghp_"):
        if secret not in recorded:
            assert secret not in redact_url(url), url


# (name, value, shown)
VARIABLES = [
    ("DB_PASSWORD", "hunter2", "***"),
    ("MYSQL_PASSWD", "hunter2", "***"),
    ("PGPWD", "hunter2", "***"),
    ("client_secret", "hunter2", "***"),
    ("HF_TOKEN", "hf_abc", "***"),
    ("OPENAI_API_KEY", "sk-abc", "***"),
    ("GOOGLE_APPLICATION_CREDENTIALS", "/keys/sa.json", "***"),
    ("BASIC_AUTH", "user:pass", "***"),
    (
        "DATABASE_URL",
        "postgresql://app:hunter2@db.example.invalid:5432/ml",
        "postgresql://***@db.example.invalid:5432/ml",
    ),
    ("MLFLOW_TRACKING_URI", "https://u:p@ss@mlflow.example.invalid/", "https://***@mlflow.example.invalid/"),
    (
        "INDEX",
        "https://pkgs.example.invalid/simple?token=abc",
        "https://pkgs.example.invalid/simple?token=***",
    ),
    ("BROKERS", "amqp://a:b@h1/ amqp://c:d@h2/", "amqp://***@h1/ amqp://***@h2/"),
    ("EPOCHS", "5", "5"),
    ("DATA_URL", "https://data.example.invalid/x.csv", "https://data.example.invalid/x.csv"),
    ("CONTACT", "me@example.invalid", "me@example.invalid"),
]


@pytest.mark.parametrize(("name", "value", "shown"), VARIABLES)
def test_variables_are_masked_by_name_or_by_credentials_in_their_value(name, value, shown):
    assert mask_variable(name, value) == shown
    assert is_masked(name, shown) == (shown != value)


def test_records_written_before_masking_are_masked_when_shown(workspace, make_tree):
    """A run recorded by an older version kept a secret variable, a password in a URL and a git
    remote with a token in plain text: get_details() (what the UI, the API and `mltrain runs
    show` print) masks them anyway."""
    from airflow_provider_mltrain import Experiment, ScriptRunConfig

    run = Experiment(workspace, "old").submit(ScriptRunConfig(make_tree({"t.py": "print(1)\n"}), "t.py"))
    run.wait_for_completion()
    record = workspace.store.get_run(run.id)
    environment = {
        **record["environment"],
        "environment_variables": {"DB_PASSWORD": "hunter2", "DATABASE": "postgresql://u:s3cr3t@db/x"},
        "python": {"requirements": ["git+https://user:t0ken@git.example/pkg.git"]},
    }
    properties = {**record["properties"], "mltrain.git.remote": "https://user:t0ken@git.example/repo.git"}
    workspace.store.update(run.id, environment=environment, properties=properties)
    shown = json.dumps(run.get_details())
    for secret in ("hunter2", "s3cr3t", "t0ken"):
        assert secret not in shown
    details = run.get_details()
    assert details["environment"]["environment_variables"] == {
        "DB_PASSWORD": "***",
        "DATABASE": "postgresql://***@db/x",
    }
    assert details["properties"]["mltrain.git.remote"] == "https://***@git.example/repo.git"
