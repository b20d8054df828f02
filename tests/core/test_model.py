"""The model registry (core/model.py): registering from a run, versions, aliases, downloads."""

from __future__ import annotations

import multiprocessing
import threading
from pathlib import Path

import pytest

from airflow_provider_mltrain import (
    Experiment,
    InvalidModelName,
    Model,
    ModelNotFound,
    ModelPathNotFound,
    RunNotFinished,
    ScriptRunConfig,
    Workspace,
)
from airflow_provider_mltrain.core.model import BLOB_PREFIX

TRAIN = """
import os, sys
os.makedirs("outputs/model", exist_ok=True)
open("outputs/model.pkl", "wb").write(b"weights-" + sys.argv[1].encode())
open("outputs/model/a.bin", "wb").write(b"A" * 3000)
os.makedirs("outputs/model/sub", exist_ok=True)
open("outputs/model/sub/b.txt", "w").write("b")
os.symlink("/etc/passwd", "outputs/leak")
from mltrain import Run
Run.get_context().log("accuracy", 0.5 + int(sys.argv[1]) / 100)
"""


def finished_run(ws: Workspace, make_tree, seed: int = 1):
    src = make_tree({"train.py": TRAIN})
    run = Experiment(ws, "models").submit(ScriptRunConfig(src, "train.py", arguments=[str(seed)]))
    assert run.wait_for_completion()["status"] == "Completed"
    return run


def model_objects(ws: Workspace) -> dict[str, int]:
    return ws.artifacts.list(BLOB_PREFIX)


def check_register_and_download(ws: Workspace, make_tree, tmp_path: Path) -> None:
    run = finished_run(ws, make_tree, seed=7)
    model = run.register_model(
        "churn", "outputs/model.pkl", tags={"team": "risk"}, properties={"auc": 0.91}, description="first"
    )
    assert (model.name, model.version, model.id) == ("churn", 1, "churn:1")
    assert model.run_id == run.id and model.run == run
    assert model.tags == {"team": "risk"} and model.properties == {"auc": "0.91"}
    assert model.description == "first"

    again = Model(Workspace(ws.root, database_url=ws.database_url, artifact_store=ws.artifacts), "churn")
    assert again.version == 1 and again.run_id == run.id
    path = again.download(tmp_path / "dl")
    assert Path(path) == tmp_path / "dl" / "model.pkl"
    assert Path(path).read_bytes() == b"weights-7"

    folder = run.register_model("churn", "outputs/model/")
    assert folder.version == 2
    assert sorted(f["path"] for f in folder.files) == ["model/a.bin", "model/sub/b.txt"]
    out = Path(folder.download(tmp_path / "dl2"))
    assert out == tmp_path / "dl2" / "model"
    assert (out / "a.bin").read_bytes() == b"A" * 3000 and (out / "sub" / "b.txt").read_text() == "b"
    with pytest.raises(FileExistsError):
        folder.download(tmp_path / "dl2")
    folder.download(tmp_path / "dl2", exist_ok=True)

    assert Model(ws, "churn").version == 2
    assert Model(ws, "churn", version=1).tags == {"team": "risk"}
    assert Model(ws, id="churn:1").version == 1
    assert [m.version for m in Model.list(ws, name="churn")] == [2, 1]
    assert [m.id for m in Model.list(ws, tags=[["team", "risk"]])] == ["churn:1"]
    assert [m.id for m in Model.list(ws, tags=["team"])] == ["churn:1"]
    assert [m.id for m in Model.list(ws, tags={"team": "other"})] == []
    assert [m.id for m in Model.list(ws, latest=True)] == ["churn:2"]
    assert [m.id for m in run.get_models()] == ["churn:2", "churn:1"]

    # The same file registered again is a new version over the same stored object.
    objects = model_objects(ws)
    assert run.register_model("churn", "outputs/model.pkl").version == 3
    assert model_objects(ws) == objects


def test_register_from_a_finished_run_and_download(workspace, make_tree, tmp_path):
    check_register_and_download(workspace, make_tree, tmp_path)


@pytest.mark.integration
def test_register_and_download_on_s3(s3_workspace, make_tree, tmp_path):
    check_register_and_download(s3_workspace, make_tree, tmp_path)
    assert any(name.startswith(f"{BLOB_PREFIX}/") for name in s3_workspace.artifacts.list("models"))
    # Another host: a workspace of its own with the same run store and artifact store.
    other = Workspace(
        tmp_path / "other", database_url=s3_workspace.database_url, artifact_store=s3_workspace.artifacts
    )
    path = Model(other, "churn", version=1).download(tmp_path / "elsewhere")
    assert Path(path).read_bytes() == b"weights-7"


def test_aliases_move_and_name_one_version(workspace, make_tree):
    run = finished_run(workspace, make_tree)
    v1 = run.register_model("churn", "outputs/model.pkl")
    v2 = run.register_model("churn", "outputs/model.pkl")
    assert v1.set_alias("production") is None
    assert Model(workspace, "churn", alias="production") == v1
    assert v1.aliases == ["production"]
    assert v2.set_alias("production") == 1
    assert Model(workspace, "churn", alias="production") == v2
    assert v1.aliases == [] and v2.aliases == ["production"]
    Model.delete_alias(workspace, "churn", "production")
    with pytest.raises(ModelNotFound, match="no alias 'production'"):
        Model(workspace, "churn", alias="production")


def test_bad_input_is_refused_before_anything_is_written(workspace, make_tree):
    run = finished_run(workspace, make_tree)
    for name in ("", "has space", "-dash-first", "a/b", "x" * 256, "naïve"):
        with pytest.raises(InvalidModelName, match="letters, digits"):
            run.register_model(name, "outputs/model.pkl")
    with pytest.raises(ModelPathNotFound, match=r"no file or folder 'outputs/nope\.pkl'.*outputs/model\.pkl"):
        run.register_model("churn", "outputs/nope.pkl")
    with pytest.raises(ModelPathNotFound, match="symbolic link"):
        run.register_model("churn", "outputs/leak")
    with pytest.raises(ModelPathNotFound):
        run.register_model("churn", "../../etc/passwd")
    with pytest.raises(Exception, match="belong to the provider"):
        run.register_model("churn", "outputs/model.pkl", tags={"mltrain.x": "1"})
    assert Model.list(workspace) == [] and model_objects(workspace) == {}

    with pytest.raises(ModelNotFound, match="No model named 'churn'"):
        Model(workspace, "churn")
    run.register_model("churn", "outputs/model.pkl")
    with pytest.raises(ModelNotFound, match="no version 5; its latest version is 1"):
        Model(workspace, "churn", version=5)
    with pytest.raises(ModelNotFound, match="not a version number"):
        Model(workspace, "churn", version="latest")
    with pytest.raises(InvalidModelName, match="starting with a letter"):
        Model(workspace, "churn").set_alias("1")


def test_a_running_run_is_not_registered_from_the_driver(workspace, make_tree):
    src = make_tree({"train.py": "import time\ntime.sleep(60)\n"})
    run = Experiment(workspace, "models").submit(ScriptRunConfig(src, "train.py"))
    try:
        with pytest.raises(RunNotFinished, match="wait_for_completion"):
            run.register_model("churn", "outputs/model.pkl")
        assert Model.list(workspace) == []
    finally:
        run.cancel(grace_period=1)


def test_register_local_files_as_azure_model_register(workspace, tmp_path):
    folder = tmp_path / "net"
    (folder / "layers").mkdir(parents=True)
    (folder / "layers" / "w.bin").write_bytes(b"w")
    model = Model.register(workspace, folder, "net", tags={"k": "v"})
    assert (model.version, model.run_id, model.tags) == (1, None, {"k": "v"})
    assert Path(model.download(tmp_path / "out")) == tmp_path / "out" / "net"
    assert (tmp_path / "out" / "net" / "layers" / "w.bin").read_bytes() == b"w"


# -- concurrent registration -----------------------------------------------------------------------


def _register_many(root: str, url: str, worker: int, count: int) -> None:
    ws = Workspace(root, database_url=url)
    src = Path(root).parent / f"file{worker}"
    src.write_text(str(worker))
    for _ in range(count):
        Model.register(ws, src, "shared", tags={"worker": str(worker)})


def check_no_lost_version(root: Path, url: str, workers: int = 4, count: int = 10) -> None:
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_register_many, args=(str(root), url, w, count)) for w in range(workers)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(300)
    assert [p.exitcode for p in procs] == [0] * workers
    ws = Workspace(root, database_url=url)
    versions = Model.list(ws, name="shared")
    assert sorted(m.version for m in versions) == list(range(1, workers * count + 1))
    for w in range(workers):
        assert len(Model.list(ws, name="shared", tags={"worker": str(w)})) == count


def test_no_version_is_lost_when_processes_register_at_once(tmp_path):
    root = tmp_path / "ws"
    check_no_lost_version(root, f"sqlite:///{root / 'runs.db'}")


def test_no_version_is_lost_when_threads_register_at_once(workspace, tmp_path):
    src = tmp_path / "m.bin"
    src.write_bytes(b"m")
    errors: list[BaseException] = []

    def work() -> None:
        try:
            for _ in range(10):
                Model.register(workspace, src, "threads")
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert errors == []
    assert sorted(m.version for m in Model.list(workspace, name="threads")) == list(range(1, 41))


def _move_alias(root: str, url: str, worker: int) -> None:
    ws = Workspace(root, database_url=url)
    for version in range(1, 6):
        Model(ws, "aliased", version=version).set_alias("production")
        assert Model(ws, "aliased", alias="production").version in range(1, 6)


def check_alias_moves_from_processes(root: Path, url: str) -> None:
    ws = Workspace(root, database_url=url)
    src = root.parent / "alias.bin"
    src.write_bytes(b"x")
    for _ in range(5):
        Model.register(ws, src, "aliased")
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_move_alias, args=(str(root), url, w)) for w in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(300)
    assert [p.exitcode for p in procs] == [0, 0, 0]
    assert ws.store.model_aliases("aliased")[0]["alias"] == "production"
    assert len(ws.store.model_aliases("aliased")) == 1


def test_an_alias_moved_by_processes_at_once_stays_one_alias(tmp_path):
    root = tmp_path / "ws"
    check_alias_moves_from_processes(root, f"sqlite:///{root / 'runs.db'}")
