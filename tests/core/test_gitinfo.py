from __future__ import annotations

import subprocess

import pytest

from airflow_provider_mltrain.core.gitinfo import git_properties


def git(cwd, *args):
    subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@example.invalid", *args],
        cwd=cwd,
        check=True,
        capture_output=True,
    )


def test_repository_branch_commit_dirty(tmp_path):
    repo = tmp_path / "repo"
    (repo / "src").mkdir(parents=True)
    (repo / "src/train.py").write_text("print(1)\n")
    git(repo, "init", "-q", "-b", "main")
    git(repo, "remote", "add", "origin", "https://user:token@git.example.invalid/team/models.git")
    git(repo, "add", ".")
    git(repo, "commit", "-q", "-m", "first")
    commit = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True
    ).stdout.strip()
    props = git_properties(repo / "src")
    assert props == {
        "mltrain.git.repository_uri": "https://git.example.invalid/team/models.git",
        "mltrain.git.branch": "main",
        "mltrain.git.commit": commit,
        "mltrain.git.dirty": "false",
    }
    (repo / "src/train.py").write_text("print(2)\n")
    assert git_properties(repo / "src")["mltrain.git.dirty"] == "true"


def test_untracked_file_in_source_folder_is_dirty(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "a.py").write_text("")
    git(repo, "init", "-q")
    git(repo, "add", ".")
    git(repo, "commit", "-q", "-m", "x")
    (repo / "new.py").write_text("")
    props = git_properties(repo)
    assert props["mltrain.git.dirty"] == "true"
    assert props["mltrain.git.repository_uri"] == str(repo)


def test_outside_a_repository_is_silent(tmp_path):
    assert git_properties(tmp_path) == {}


def test_without_git_is_silent(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    assert git_properties(tmp_path) == {}


def test_detached_head_and_repository_without_commits(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q")
    assert git_properties(repo) == {"mltrain.git.repository_uri": str(repo), "mltrain.git.dirty": "false"}
    (repo / "a.py").write_text("")
    git(repo, "add", ".")
    git(repo, "commit", "-q", "-m", "x")
    git(repo, "checkout", "-q", "--detach")
    props = git_properties(repo)
    assert "mltrain.git.branch" not in props and len(props["mltrain.git.commit"]) == 40


@pytest.mark.parametrize(
    ("remote", "recorded"),
    [
        ("https://user:p@ss@git.example.invalid/m.git", "https://git.example.invalid/m.git"),
        ("https://user:pa/ss@git.example.invalid/m.git", "https://git.example.invalid/m.git"),
        (
            "https://git.example.invalid/m.git?access_token=abc123",
            "https://git.example.invalid/m.git?access_token=***",
        ),
        ("https://git.example.invalid/m.git?token=abc123", "https://git.example.invalid/m.git?token=***"),
        ("ssh://git:s3cret@git.example.invalid/team/m.git", "ssh://git.example.invalid/team/m.git"),
        ("deploy:s3cret@git.example.invalid:team/m.git", "git.example.invalid:team/m.git"),
    ],
)
def test_remote_credentials_never_reach_the_record(tmp_path, remote, recorded):
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q")
    git(repo, "remote", "add", "origin", remote)
    assert git_properties(repo)["mltrain.git.repository_uri"] == recorded
