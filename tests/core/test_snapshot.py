from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from airflow_provider_mltrain.core import snapshot as snapshot_mod
from airflow_provider_mltrain.core.errors import SnapshotError, SnapshotTooLarge
from airflow_provider_mltrain.core.settings import SnapshotLimits
from airflow_provider_mltrain.core.snapshot import Snapshot, SnapshotStore, diff, scan


@pytest.fixture
def store(tmp_path: Path) -> SnapshotStore:
    return SnapshotStore(tmp_path / "store")


def age(root: Path, seconds: float = 10) -> None:
    """Move every mtime into the past, out of the stat cache's racy window."""
    past = time.time() - seconds
    for dirpath, _dirs, files in os.walk(root):
        for f in files:
            os.utime(os.path.join(dirpath, f), (past, past), follow_symlinks=False)


def test_same_tree_same_id_and_content_changes_it(store, make_tree):
    a = make_tree({"train.py": "print(1)\n", "lib/util.py": "X = 1\n"})
    b = make_tree({"train.py": "print(1)\n", "lib/util.py": "X = 1\n"})
    snap_a, snap_b = store.take(a), store.take(b)
    assert snap_a.id == snap_b.id
    assert snap_a.paths() == ["lib/util.py", "train.py"]
    (b / "lib/util.py").write_text("X = 2\n")
    snap_c = store.take(b)
    assert snap_c.id != snap_a.id
    assert diff(snap_a, snap_c) == {"added": [], "removed": [], "changed": ["lib/util.py"]}


def test_executable_bit_is_part_of_the_snapshot(store, make_tree):
    src = make_tree({"run.sh": "echo hi\n"})
    first = store.take(src)
    os.chmod(src / "run.sh", 0o755)
    age(src)
    second = store.take(src)
    assert first.id != second.id
    assert second.files[0].mode == 0o755


def test_gitignore_is_honoured(store, make_tree):
    src = make_tree(
        {
            ".gitignore": "*.log\ndata/\n!keep.log\n",
            "train.py": "",
            "a.log": "",
            "keep.log": "",
            "data/big.csv": "x",
        }
    )
    assert store.take(src).paths() == [".gitignore", "keep.log", "train.py"]


def test_mltrainignore_wins_over_gitignore(store, make_tree):
    src = make_tree(
        {".gitignore": "*.csv\n", ".mltrainignore": "*.log\n", "a.csv": "", "a.log": "", "t.py": ""}
    )
    assert store.take(src).paths() == [".gitignore", ".mltrainignore", "a.csv", "t.py"]


def test_nested_ignore_files_apply_below_their_folder(store, make_tree):
    src = make_tree(
        {"t.py": "", "sub/.gitignore": "*.tmp\n!keep.tmp\n", "sub/x.tmp": "", "sub/keep.tmp": "", "y.tmp": ""}
    )
    assert store.take(src).paths() == ["sub/.gitignore", "sub/keep.tmp", "t.py", "y.tmp"]


def test_git_pycache_and_virtualenvs_are_always_left_out(store, make_tree):
    src = make_tree(
        {
            "t.py": "",
            ".git/HEAD": "ref",
            "__pycache__/t.cpython-311.pyc": "x",
            "myenv/pyvenv.cfg": "home = /usr",
            "myenv/lib/site.py": "",
            "pkg/__pycache__/a.pyc": "",
        }
    )
    assert store.take(src).paths() == ["t.py"]


def test_empty_folders_are_kept(store, make_tree, tmp_path):
    src = make_tree({"t.py": ""})
    (src / "data" / "cache").mkdir(parents=True)
    snap = store.take(src)
    assert snap.dirs == ("data/cache",)
    store.materialize(snap, tmp_path / "out")
    assert (tmp_path / "out/data/cache").is_dir()


def test_too_many_files_names_folders_and_ignore_file(store, make_tree):
    files = {f"data/part-{i}.csv": "1,2\n" for i in range(30)}
    src = make_tree({"train.py": "", **files, "notes/a.txt": "hello"})
    with pytest.raises(SnapshotTooLarge) as err:
        store.take(src, SnapshotLimits(max_files=10))
    message = str(err.value)
    assert "32 files" in message and "10 files" in message
    assert "data/ (30 files)" in message
    assert str(src / ".mltrainignore") in message
    assert "MLTRAIN_SNAPSHOT_MAX_FILES" in message
    assert not any(store.blobs.rglob("*")), "limits are checked before any file is stored"


def test_too_large_names_the_largest_files(store, make_tree):
    src = make_tree(
        {"train.py": "", "model.bin": b"\0" * 3_000_000, "small.txt": "x", ".gitignore": "*.log\n"}
    )
    with pytest.raises(SnapshotTooLarge) as err:
        store.take(src, SnapshotLimits(max_bytes=1_000_000))
    lines = str(err.value).splitlines()
    assert "2.9 MB  model.bin" in lines[2]
    assert "(it takes precedence over .gitignore)" in str(err.value)


def test_stat_cache_skips_reading_unchanged_files(store, make_tree, monkeypatch):
    src = make_tree({f"f{i}.txt": f"content {i}" for i in range(20)})
    age(src)
    first = store.take(src)
    reads: list[str] = []
    original = SnapshotStore._store_small

    def counting(self, root, files, pack, after=None):
        reads.extend(f.path for f in files)
        return original(self, root, files, pack, after)

    monkeypatch.setattr(SnapshotStore, "_store_small", counting)
    assert store.take(src).id == first.id
    assert reads == []
    (src / "f3.txt").write_text("changed")
    past = time.time() - 10
    os.utime(src / "f3.txt", (past, past))
    third = store.take(src)
    assert reads == ["f3.txt"]
    assert third.id != first.id


def test_recently_modified_files_are_rehashed_even_with_same_stat(store, make_tree, monkeypatch):
    src = make_tree({"a.txt": "one"})
    store.take(src)
    # Same size and restored mtime: only the racy-window rule catches this edit.
    st = (src / "a.txt").stat()
    (src / "a.txt").write_text("two")
    os.utime(src / "a.txt", ns=(st.st_atime_ns, st.st_mtime_ns))
    snap = store.take(src)
    assert store.read_blob(snap.id, snap.files[0].hash) == b"two"


def test_materialized_snapshot_does_not_change_when_source_is_edited(store, make_tree, tmp_path):
    src = make_tree({"train.py": "print('v1')\n"})
    snap = store.take(src)
    (src / "train.py").write_text("print('v2')\n")
    store.materialize(snap, tmp_path / "run")
    assert (tmp_path / "run/train.py").read_text() == "print('v1')\n"


def test_symlinks_are_kept_as_links_and_never_followed(store, make_tree, tmp_path, caplog):
    outside = tmp_path / "secret.txt"
    outside.write_text("do not copy")
    src = make_tree({"train.py": "", "data/real.csv": "1"})
    os.symlink("data/real.csv", src / "inside.csv")
    os.symlink(str(outside), src / "outside.txt")
    os.symlink("../../", src / "data/up")
    with caplog.at_level(logging.WARNING):
        snap = store.take(src)
    assert dict(snap.symlinks) == {
        "inside.csv": "data/real.csv",
        "outside.txt": str(outside),
        "data/up": "../../",
    }
    assert "outside.txt" in caplog.text and "never followed" in caplog.text
    stored = [p.read_bytes() for p in store.blobs.rglob("*") if p.is_file()]
    assert stored and not any(b"do not copy" in data for data in stored)  # loose or in a pack
    store.materialize(snap, tmp_path / "run")
    assert os.readlink(tmp_path / "run/inside.csv") == "data/real.csv"
    assert (tmp_path / "run/inside.csv").read_text() == "1"


def test_non_utf8_file_names_are_kept(store, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    name = b"caf\xe9.txt"
    with open(os.path.join(os.fsencode(src), name), "wb") as f:
        f.write(b"latin-1 name")
    snap = store.take(src)
    assert len(snap.files) == 1
    again = store.get(snap.id)
    assert again == snap
    store.materialize(again, tmp_path / "run")
    assert os.listdir(os.fsencode(tmp_path / "run")) == [name]


def test_special_files_are_left_out_with_a_warning(store, make_tree, caplog):
    src = make_tree({"t.py": ""})
    os.mkfifo(src / "pipe")
    with caplog.at_level(logging.WARNING):
        assert store.take(src).paths() == ["t.py"]
    assert "pipe" in caplog.text


def test_unreadable_file_is_a_clear_error(tmp_path):
    """The error names the file and the ignore file to edit."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "t.py").write_text("")
    (src / "secret.dat").write_text("k")
    os.chmod(src / "secret.dat", 0o000)
    code = (
        "import sys\n"
        "from airflow_provider_mltrain.core.snapshot import SnapshotStore\n"
        "from airflow_provider_mltrain.core.errors import SnapshotError\n"
        "try:\n"
        f"    SnapshotStore({str(tmp_path / 'store')!r}).take({str(src)!r})\n"
        "except SnapshotError as e:\n"
        "    print(e); sys.exit(3)\n"
    )
    prefix = []
    if os.geteuid() == 0:
        # Root reads any file; without its capabilities it obeys the file mode like anyone else.
        prefix = ["setpriv", "--bounding-set", "-all", "--inh-caps", "-all"]
    proc = subprocess.run([*prefix, sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 3, proc.stderr
    assert "secret.dat" in proc.stdout and "permission denied" in proc.stdout
    assert ".mltrainignore" in proc.stdout


def test_manifest_paths_cannot_escape(store):
    for bad in ("../x", "/etc/passwd", "a/../../b", "a//b"):
        with pytest.raises(SnapshotError):
            Snapshot.from_dict({"version": 1, "files": [[bad, "0" * 64, 1, 0o644]]})


def test_materialize_never_writes_through_a_symlink(store, tmp_path):
    data = {"version": 1, "files": [["link/evil.txt", "0" * 64, 1, 0o644]], "symlinks": [["link", "/tmp"]]}
    snap = Snapshot.from_dict(data)
    with pytest.raises(SnapshotError, match="under a symlink"):
        store.materialize(snap, tmp_path / "run")


def test_corrupt_manifest_is_detected(store, make_tree):
    snap = store.take(make_tree({"t.py": "x"}))
    path = store.manifests / snap.id[:2] / f"{snap.id}.json"
    data = json.loads(path.read_text())
    data["files"][0][2] = 999
    path.write_text(json.dumps(data))
    with pytest.raises(SnapshotError, match="corrupt"):
        store.get(snap.id)


def test_large_files_stream_into_the_store(store, make_tree, monkeypatch):
    monkeypatch.setattr(snapshot_mod, "SMALL_FILE", 1024)
    payload = os.urandom(5000)
    src = make_tree({"weights.bin": payload, "t.py": ""})
    snap = store.take(src)
    entry = next(f for f in snap.files if f.path == "weights.bin")
    with store.open_blob(entry.hash) as stored:
        assert stored.read() == payload
    assert entry.size == 5000
    assert not list(store.blobs.glob(".tmp-*"))


def test_scan_reports_missing_folder(tmp_path):
    with pytest.raises(SnapshotError, match="does not exist"):
        scan(tmp_path / "nope")


def test_top_level_outputs_and_logs_are_not_snapshotted(store, make_tree):
    src = make_tree({"t.py": "", "outputs/model.pkl": "old", "logs/x.txt": "", "pkg/outputs/keep.txt": ""})
    assert store.take(src).paths() == ["pkg/outputs/keep.txt", "t.py"]


def test_required_script_is_checked_before_anything_is_stored(store, make_tree):
    src = make_tree({"t.py": "", ".mltrainignore": "t.py\n", "data.bin": "x" * 100})
    with pytest.raises(SnapshotError, match="left out of the snapshot"):
        store.take(src, required="t.py")
    assert not store.blobs.exists() or not any(store.blobs.rglob("*"))


def test_unreadable_subfolder_is_named(tmp_path):
    src = tmp_path / "src"
    (src / "private").mkdir(parents=True)
    (src / "t.py").write_text("")
    os.chmod(src / "private", 0o000)
    code = (
        "from airflow_provider_mltrain.core.snapshot import scan\n"
        "from airflow_provider_mltrain.core.errors import SnapshotError\n"
        "try:\n"
        f"    scan({str(src)!r})\n"
        "except SnapshotError as e:\n"
        "    print(e)\n"
    )
    prefix = ["setpriv", "--bounding-set", "-all", "--inh-caps", "-all"] if os.geteuid() == 0 else []
    proc = subprocess.run([*prefix, sys.executable, "-c", code], capture_output=True, text=True)
    os.chmod(src / "private", 0o755)
    assert f"Cannot list folder {src / 'private'}" in proc.stdout, proc.stdout + proc.stderr


def test_cleaned_store_is_refilled_not_trusted(store, make_tree, tmp_path):
    import shutil

    src = make_tree({"a.txt": "one", "b.txt": "two"})
    age(src)
    first = store.take(src)
    shutil.rmtree(store.blobs)
    shutil.rmtree(store.manifests)
    again = store.take(src)
    assert again.id == first.id
    store.materialize(again, tmp_path / "run")
    assert (tmp_path / "run/a.txt").read_text() == "one"


def test_missing_blob_is_a_clear_error(store, make_tree, tmp_path):
    import shutil

    snap = store.take(make_tree({"a.txt": "one"}))
    shutil.rmtree(store.blobs)
    with pytest.raises(SnapshotError, match="no longer in"):
        store.materialize(snap, tmp_path / "run")


def test_unchanged_tree_reuses_the_manifest(store, make_tree):
    src = make_tree({"a.txt": "one", "d/b.txt": "two"})
    os.symlink("a.txt", src / "link")
    age(src)
    first = store.take(src)
    second = store.take(src)
    assert second == first
    os.unlink(src / "link")
    third = store.take(src)
    assert third.id != first.id and third.symlinks == ()


def test_deleted_blob_folder_alone_is_noticed(store, make_tree, tmp_path):
    import shutil

    src = make_tree({"a.txt": "one"})
    age(src)
    store.take(src)
    shutil.rmtree(store.blobs)
    snap = store.take(src)
    store.materialize(snap, tmp_path / "run")
    assert (tmp_path / "run/a.txt").read_text() == "one"


def test_blob_folder_recreated_by_another_source_is_noticed(store, make_tree, tmp_path):
    import shutil

    a = make_tree({"a.txt": "one"})
    b = make_tree({"b.txt": "two"})
    age(a)
    store.take(a)
    shutil.rmtree(store.blobs)
    store.take(b)  # makes the blob folder again, possibly with the same inode
    snap = store.take(a)
    store.materialize(snap, tmp_path / "run")
    assert (tmp_path / "run/a.txt").read_text() == "one"


def test_ignore_decisions_follow_edited_added_and_removed_ignore_files(store, make_tree):
    src = make_tree({".gitignore": "*.tmp\n", "a.py": "", "b.log": "", "sub/c.log": "", "sub/d.py": ""})
    age(src)
    assert store.take(src).paths() == [".gitignore", "a.py", "b.log", "sub/c.log", "sub/d.py"]
    (src / ".gitignore").write_text("*.tmp\n*.log\n")  # edited at the root
    assert store.take(src).paths() == [".gitignore", "a.py", "sub/d.py"]
    (src / ".gitignore").write_text("*.tmp\n")
    (src / "sub/.mltrainignore").write_text("d.py\n")  # added below
    assert store.take(src).paths() == [".gitignore", "a.py", "b.log", "sub/.mltrainignore", "sub/c.log"]
    (src / "sub/.mltrainignore").unlink()  # removed again
    assert store.take(src).paths() == [".gitignore", "a.py", "b.log", "sub/c.log", "sub/d.py"]


# -- secrets at rest -----------------------------------------------------------------------------

SECRET_FILES = [
    ".env",
    ".env.production",
    "config/.env",
    "id_rsa",
    "id_rsa.pub",
    "deploy/id_ed25519",
    "tls/server.pem",
    "api.key",
    ".netrc",
    ".pypirc",
    "credentials",
    ".git-credentials",
]


@pytest.mark.parametrize("path", SECRET_FILES)
def test_well_known_secret_files_are_left_out_and_reported(store, make_tree, path):
    src = make_tree({"train.py": "", path: "secret"})
    snap = store.take(src)
    assert snap.paths() == ["train.py"]
    assert snap.secrets_skipped == (path,)


@pytest.mark.parametrize("folder", [".aws", ".ssh", "home/.ssh"])
def test_well_known_secret_folders_are_left_out_and_reported(store, make_tree, folder):
    src = make_tree({"train.py": "", f"{folder}/config": "[default]\n"})
    snap = store.take(src)
    assert snap.paths() == ["train.py"]
    assert snap.secrets_skipped == (folder + "/",)


def test_names_that_only_look_alike_are_kept(store, make_tree):
    files = ["keys.py", "key.py", ".envrc", "env.py", "credentials.json", "aws/config", "pem.txt"]
    src = make_tree({"train.py": "", **{f: "" for f in files}})
    snap = store.take(src)
    assert snap.paths() == sorted(["train.py", *files])
    assert snap.secrets_skipped == ()


def test_mltrainignore_re_includes_a_secret_file_with_a_bang(store, make_tree):
    src = make_tree(
        {
            "train.py": "",
            ".mltrainignore": "!.env\n!.ssh/\n",
            ".env": "A=1",
            "sub/.env": "B=2",
            "x.pem": "",
            ".ssh/cfg": "",
        }
    )
    snap = store.take(src)
    assert snap.paths() == [".env", ".mltrainignore", ".ssh/cfg", "sub/.env", "train.py"]
    assert snap.secrets_skipped == ("x.pem",)


def test_gitignore_negation_does_not_re_include_a_secret_file(store, make_tree):
    """A .gitignore decides what git tracks, not what may travel: ``!`` there is not enough."""
    src = make_tree(
        {"train.py": "", ".gitignore": "*.log\n!.env.example\n", ".env.example": "A=", "a.log": ""}
    )
    snap = store.take(src)
    assert snap.paths() == [".gitignore", "train.py"]
    assert snap.secrets_skipped == (".env.example",)


def test_secret_files_an_ignore_file_leaves_out_are_not_reported(store, make_tree):
    src = make_tree({"train.py": "", ".gitignore": ".env\n", ".env": "A=1", "b.key": ""})
    snap = store.take(src)
    assert snap.paths() == [".gitignore", "train.py"]
    assert snap.secrets_skipped == ("b.key",)


def test_secret_files_are_left_out_even_when_the_stat_cache_kept_them(store, make_tree):
    """A stat cache written before (or while) a file was re-included does not smuggle it in."""
    src = make_tree({"train.py": "", ".mltrainignore": "!.env\n", ".env": "A=1"})
    age(src)
    assert ".env" in store.take(src).paths()
    (src / ".mltrainignore").write_text("# nothing re-included\n")
    age(src)
    snap = store.take(src)
    assert snap.paths() == [".mltrainignore", "train.py"]
    assert snap.secrets_skipped == (".env",)
    # unchanged tree, fast path: still reported
    assert store.take(src).secrets_skipped == (".env",)


def test_owner_only_files_stay_owner_only_in_store_and_copy(store, make_tree, tmp_path):
    src = make_tree({"train.py": "", "private.cfg": "token", "run.sh": "echo", "shared.txt": ""})
    os.chmod(src / "private.cfg", 0o600)
    os.chmod(src / "run.sh", 0o700)
    os.chmod(src / "shared.txt", 0o640)  # group-readable only: still not for everyone
    os.chmod(src / "train.py", 0o644)
    snap = store.take(src)
    modes = {f.path: f.mode for f in snap.files}
    assert modes == {"private.cfg": 0o600, "run.sh": 0o700, "shared.txt": 0o600, "train.py": 0o644}
    for f in snap.files:
        place = store._where(f.hash)
        assert place is not None and os.stat(place.file).st_mode & 0o777 == 0o600
    store.materialize(snap, tmp_path / "copy")
    for path, mode in modes.items():
        assert (tmp_path / "copy" / path).stat().st_mode & 0o777 == mode, path
    # Reading the manifest back gives the same modes (what targets and the UI are served).
    assert {f.path: f.mode for f in store.get(snap.id).files} == modes


def test_store_folders_are_owner_only(store, make_tree):
    store.take(make_tree({"train.py": "", "big.bin": os.urandom(2 << 20)}))
    for folder in [store.root, store.blobs, store.manifests, store.statcache, *store.blobs.iterdir()]:
        if folder.is_dir():
            assert folder.stat().st_mode & 0o777 == 0o700, folder
    for path in store.root.rglob("*"):
        if path.is_file() and path.name != ".store-id":
            assert path.stat().st_mode & 0o077 == 0, path


IGNORE_CASES = {
    "names at any depth": {
        ".gitignore": "*.pyc\n__pycache__/\nbuild/\n*.egg-info/\n.ipynb_*/\ndata?.csv\n[ab]*.log\n"
    },
    "nested, names only": {".gitignore": "*.log\n", "pkg/.gitignore": "tmp/\n*.bin\n"},
    "anchored and nested": {".gitignore": "/build\ndocs/*.md\n*.pyc\n", "pkg/.mltrainignore": "**/deep/\n"},
    "a negation": {".gitignore": "*.log\n!keep.log\nbuild/\n"},
    "a folder excluded and a deeper one re-including": {".gitignore": "tmp/\n", "pkg/.gitignore": "!tmp/\n"},
}


@pytest.mark.parametrize("case", list(IGNORE_CASES), ids=list(IGNORE_CASES))
def test_ignore_decisions_by_name_are_pathspecs_own(make_tree, monkeypatch, case):
    """An ignore file of names (no "/" but a trailing one) is matched against each entry's name,
    not its path: the walk must keep and leave out exactly what pathspec decides for the path."""
    names = ["a.py", "b.pyc", "c.log", "bx.log", "keep.log", "data1.csv", "data12.csv", "w.bin", "r.md"]
    folders = ["", "build/", "tmp/", "pkg/", "pkg/tmp/", "pkg/build/", "x.egg-info/", "pkg/deep/", "docs/"]
    folders.append(".ipynb_cp/")
    files: dict[str, str] = {f"{folder}{name}": name for folder in folders for name in names}
    files.update(IGNORE_CASES[case])
    files["pkg/sub/deep/z.py"] = "z"
    src = make_tree(files)
    by_name = scan(src)
    monkeypatch.setattr(snapshot_mod, "_name_sources", lambda spec: None)
    by_path = scan(src)
    assert [f.path for f in by_name.files] == [f.path for f in by_path.files]
    assert by_name.dirs == by_path.dirs and by_name.secrets_skipped == by_path.secrets_skipped
    assert len(by_name.files) < len(files)  # the rules left something out


def test_only_name_patterns_are_matched_by_name():
    import pathspec

    def sources(text: str) -> list[str] | None:
        return snapshot_mod._name_sources(pathspec.GitIgnoreSpec.from_lines(text.splitlines()))

    assert sources("# a comment\n\n*.pyc\nbuild/\n**/cache/\n[ab]?.log\n") is not None
    for anchored in ("/build", "docs/*.md", "a/**/b", "!keep.log", "build/\n!build/keep"):
        assert sources(anchored) is None, anchored


@pytest.mark.parametrize(
    "names",
    [
        ["train.py", "pkg/a b.py", "x~!#$%&'()*+,-.;<=>?@[]^_`{|}.txt"],
        ['quote".py', "plain.py"],
        ["back\\slash.py"],
        ["tab\there.py", "new\nline.py"],
        ["caf\u00e9.py", "\u65e5\u672c.py"],
        ["bad-\udcff.py"],  # a name that is not UTF-8, as os.fsdecode gives it
    ],
    ids=["plain", "quote", "backslash", "control", "non-ascii", "surrogate"],
)
def test_manifest_bytes_are_jsons_own_and_the_stat_cache_reads_back_every_name(names, tmp_path):
    """The manifest's bytes (its hash is the snapshot id, checked by every host) are written by
    hand for plain names: they must be exactly what json.dumps writes. The stat cache (marshal)
    reads back every name, hash and stat as written, the extremes of each integer included."""
    files = [snapshot_mod.FileEntry(n, f"{i:064x}", i * 7, 0o644) for i, n in enumerate(sorted(names))]
    symlinks = [("link", "train.py")]
    dirs = ["empty"]
    snap = Snapshot("0" * 64, tuple(files), tuple(symlinks), tuple(dirs))
    assert snapshot_mod._manifest_bytes(files, symlinks, dirs) == snapshot_mod._canonical(snap.to_dict())
    sigs = [(2**64 - 1, -(2**63), 2**63 - 1, 2**64 - 1), (0, 10**18, 10**18 + 1, 99)]
    scanned = [snapshot_mod._Scanned(f.path, f.size, f.mode, sigs[i % 2]) for i, f in enumerate(files)]
    rest = {"written_at_ns": 1, "blobs_id": None, "ignore_files": {"": [".gitignore", 3, 4, 5]}}
    path = tmp_path / "cache.stat"
    path.write_bytes(snapshot_mod._stat_cache_bytes(snap, scanned, rest))
    cache = snapshot_mod._read_stat_cache(path)
    assert cache is not None and cache.snapshot_id == snap.id and cache.rest == rest
    assert cache.entries() == {s.path: (*s.sig, f.hash) for s, f in zip(scanned, files)}
    back = cache.snapshot()
    assert (
        back == snap and back.files == snap.files and (back.symlinks, back.dirs) == (snap.symlinks, snap.dirs)
    )


def test_a_stat_no_machine_integer_holds_leaves_no_stat_cache(store, make_tree, monkeypatch):
    """A stat out of every machine integer's range (no file system gives one today) writes no
    stat cache: the snapshot is right, and the next one reads every file again."""
    src = make_tree({"train.py": "print(1)\n", "lib/a.py": "A = 1\n"})
    first = store.take(src)
    assert list(store.statcache.glob("*.stat"))
    real_scan = snapshot_mod.scan

    def huge_inodes(*args, **kwargs):
        result = real_scan(*args, **kwargs)
        result.files = [f._replace(sig=(*f.sig[:3], 2**64)) for f in result.files]
        return result

    monkeypatch.setattr(snapshot_mod, "scan", huge_inodes)
    (src / "lib" / "a.py").write_text("A = 2\n")
    second = store.take(src)
    assert second.id != first.id and not list(store.statcache.glob("*.stat"))
    monkeypatch.setattr(snapshot_mod, "scan", real_scan)
    assert store.take(src).id == second.id


def test_a_manifest_with_a_hash_that_is_not_a_string_is_corrupt():
    data = {"version": 1, "files": [["a.py", 5, 1, 420]], "symlinks": [], "dirs": []}
    with pytest.raises(SnapshotError, match="corrupt"):
        Snapshot.from_dict(data, "0" * 64)


def test_a_json_stat_cache_of_version_1_is_not_trusted_and_is_deleted(store, make_tree, tmp_path):
    """The stat cache was JSON (``<key>.json``) before it was marshal: one left by an older version,
    whatever it claims, is not read, and the next walk deletes it."""
    src = make_tree({"train.py": "print(1)\n"})
    first = store.take(src)
    (stat_file,) = store.statcache.glob("*.stat")
    legacy = stat_file.with_suffix(".json")
    st = (src / "train.py").stat()
    legacy.write_text(
        json.dumps(
            {
                "written_at_ns": time.time_ns() + 10**12,
                "snapshot_id": first.id,
                "layout": [[], []],
                "blobs_id": snapshot_mod._folder_id(store.blobs),
                "ignore_files": {},
                "entries": {"train.py": [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, "0" * 64]},
            }
        )
    )
    stat_file.unlink()
    again = store.take(src)  # the whole snapshot: a trusted entry would keep the id, not the hash
    assert again == first == SnapshotStore(tmp_path / "fresh").take(src)
    assert again.files[0].hash != "0" * 64
    assert not legacy.exists() and stat_file.exists()
