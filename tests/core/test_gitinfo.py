from __future__ import annotations

import os
import subprocess

import pytest

from airflow_provider_mltrain.core import gitinfo
from airflow_provider_mltrain.core.gitinfo import git_properties
from airflow_provider_mltrain.core.redact import redact_url


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


# -- the same properties as before, with fewer git processes ---------------------------------------


def reference(folder):
    """The properties as recorded before git_properties learnt to skip processes: three git commands
    (rev-parse, config, porcelain v1 status), a fourth in a repository without commits."""

    def out(*args):
        done = subprocess.run(
            ["git", "-C", str(folder), *args],
            capture_output=True,
            text=True,
            env={**os.environ, "GIT_TERMINAL_PROMPT": "0", "GIT_OPTIONAL_LOCKS": "0", "LC_ALL": "C"},
        )
        return done.stdout.strip() if done.returncode == 0 else None

    head = out("rev-parse", "--show-toplevel", "HEAD", "--symbolic-full-name", "HEAD")
    remote, status = out("config", "--get", "remote.origin.url"), out("status", "--porcelain", "--", ".")
    if head is None:
        if status is None:
            return {}
        top = out("rev-parse", "--show-toplevel")
        if not top:
            return {}
        lines = [top]
    else:
        lines = head.splitlines()
    props = {}
    if len(lines) == 3:
        if lines[2].startswith("refs/heads/"):
            props["mltrain.git.branch"] = lines[2][len("refs/heads/") :]
        props["mltrain.git.commit"] = lines[1]
    props["mltrain.git.repository_uri"] = redact_url(remote, "") if remote else lines[0]
    if status is not None:
        props["mltrain.git.dirty"] = "true" if status else "false"
    return props


@pytest.fixture
def git_runs(monkeypatch):
    """The git commands git_properties starts, as lists of arguments after ``git -C FOLDER``."""
    started = []
    real = gitinfo.subprocess.Popen

    def spy(argv, *args, **kwargs):
        started.append(list(argv[3:]))
        return real(argv, *args, **kwargs)

    monkeypatch.setattr(gitinfo.subprocess, "Popen", spy)
    return started


def make_repo(path, remote=None):
    path.mkdir(parents=True)
    (path / "src").mkdir()
    (path / "src/train.py").write_text("print(1)\n")
    (path / "README").write_text("x\n")
    git(path, "init", "-q", "-b", "main")
    if remote:
        git(path, "remote", "add", "origin", remote)
    git(path, "add", ".")
    git(path, "commit", "-q", "-m", "first")
    return path


def check(folder, git_runs, processes):
    """git_properties(folder), checked against the reference and its number of git processes."""
    expected = reference(folder)
    git_runs.clear()
    props = git_properties(folder)
    assert len(git_runs) == processes, git_runs
    assert props == expected
    return props


def test_outside_a_repository_no_git_process_starts(tmp_path, git_runs):
    (tmp_path / "src").mkdir()
    assert git_properties(tmp_path / "src") == {} and git_runs == []


def test_a_stray_dot_git_that_is_no_repository_is_still_asked(tmp_path, git_runs):
    (tmp_path / ".git").mkdir()  # git looks past it: still no repository
    assert check(tmp_path, git_runs, 4) == {}  # porcelain v2 fails, then the v1 path says so


def test_git_dir_in_the_environment_is_honoured(tmp_path, monkeypatch, git_runs):
    repo = make_repo(tmp_path / "repo", remote="https://git.example.invalid/m.git")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.setenv("GIT_DIR", str(repo / ".git"))
    monkeypatch.setenv("GIT_WORK_TREE", str(repo))
    props = check(elsewhere, git_runs, 2)
    assert props["mltrain.git.branch"] == "main"


def test_a_linked_folder_is_looked_up_where_it_really_is(tmp_path, git_runs):
    repo = make_repo(tmp_path / "repo", remote="https://git.example.invalid/m.git")
    link = tmp_path / "outside" / "link"
    link.parent.mkdir()
    link.symlink_to(repo / "src")
    props = check(link, git_runs, 2)
    assert props["mltrain.git.repository_uri"] == "https://git.example.invalid/m.git"


def test_on_a_branch_with_a_remote_two_processes(tmp_path, git_runs):
    repo = make_repo(tmp_path / "repo", remote="https://user:token@git.example.invalid/m.git")
    props = check(repo / "src", git_runs, 2)
    assert props["mltrain.git.branch"] == "main" and props["mltrain.git.dirty"] == "false"
    (repo / "src/train.py").write_text("print(2)\n")
    assert check(repo / "src", git_runs, 2)["mltrain.git.dirty"] == "true"
    (repo / "src/train.py").write_text("print(1)\n")
    (repo / "README").write_text("changed outside the source folder\n")
    assert check(repo / "src", git_runs, 2)["mltrain.git.dirty"] == "false"
    (repo / "src/new.py").write_text("")
    assert check(repo / "src", git_runs, 2)["mltrain.git.dirty"] == "true"


def test_without_a_remote_the_top_folder_is_asked(tmp_path, git_runs):
    repo = make_repo(tmp_path / "repo")
    props = check(repo / "src", git_runs, 3)
    assert props["mltrain.git.repository_uri"] == str(repo)


def test_packed_refs(tmp_path, git_runs):
    repo = make_repo(tmp_path / "repo", remote="https://git.example.invalid/m.git")
    git(repo, "checkout", "-q", "-b", "feature/x")
    git(repo, "pack-refs", "--all")
    assert not (repo / ".git/refs/heads/feature/x").exists()
    assert check(repo, git_runs, 2)["mltrain.git.branch"] == "feature/x"


def test_detached_head_and_odd_branch_names_ask_rev_parse(tmp_path, git_runs):
    repo = make_repo(tmp_path / "repo", remote="https://git.example.invalid/m.git")
    git(repo, "checkout", "-q", "--detach")
    props = check(repo, git_runs, 3)
    assert "mltrain.git.branch" not in props
    git(repo, "checkout", "-q", "-b", "(detached)")  # a legal branch name that git status prints as such
    assert check(repo, git_runs, 3)["mltrain.git.branch"] == "(detached)"
    git(repo, "update-ref", "refs/remotes/origin/main", "HEAD")
    git(repo, "symbolic-ref", "HEAD", "refs/remotes/origin/main")  # HEAD naming no branch
    assert "mltrain.git.branch" not in check(repo, git_runs, 3)


def test_worktree(tmp_path, git_runs):
    repo = make_repo(tmp_path / "repo", remote="https://git.example.invalid/m.git")
    git(repo, "worktree", "add", "-q", "-b", "other", str(tmp_path / "wt"))
    (tmp_path / "wt/src/train.py").write_text("print(3)\n")
    props = check(tmp_path / "wt" / "src", git_runs, 2)
    assert props["mltrain.git.branch"] == "other" and props["mltrain.git.dirty"] == "true"
    git(repo, "config", "--unset", "remote.origin.url")
    assert check(tmp_path / "wt", git_runs, 3)["mltrain.git.repository_uri"] == str(tmp_path / "wt")


def test_repository_without_commits(tmp_path, git_runs):
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    (repo / "a.py").write_text("")
    props = check(repo, git_runs, 3)
    assert props == {"mltrain.git.repository_uri": str(repo), "mltrain.git.dirty": "true"}


def test_a_git_without_porcelain_v2_gets_the_same(tmp_path, monkeypatch, git_runs):
    repo = make_repo(tmp_path / "repo")
    real = gitinfo._start

    def old_git(folder, *args):
        if "--porcelain=v2" in args:
            return real(folder, "status", "--no-such-option")  # fails as an old git would
        return real(folder, *args)

    monkeypatch.setattr(gitinfo, "_start", old_git)
    assert git_properties(repo / "src") == reference(repo / "src")
