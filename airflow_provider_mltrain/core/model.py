"""The model registry: named, versioned sets of files in the artifact store, linked to their run.

Azure ML v1's names: ``run.register_model(model_name, model_path, tags=, properties=,
description=)`` from a finished run, ``Model.register(workspace, model_path, model_name)`` from files
on this machine, ``Model(workspace, name, version=)``, ``Model.list(workspace, name=, tags=)``,
``model.download(target_dir)``. Aliases (``production``) are MLflow's idea and names:
``model.set_alias("production")``, ``Model(workspace, name, alias="production")``.

Files are content-addressed objects of the artifact store (``models/sha256/<xx>/<sha256>``): they are
written before the version's row, so a version never names missing content, and registering the same
file twice stores it once. The version number is given by the run store when the row is inserted
(see :meth:`RunStore.add_model_version`): concurrent registrations never lose or share a version.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import posixpath
import re
import tempfile
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from airflow_provider_mltrain.core.artifacts import ArtifactStore, LocalArtifactStore, check_name
from airflow_provider_mltrain.core.errors import MLTrainError
from airflow_provider_mltrain.core.private import make_private_dirs
from airflow_provider_mltrain.core.runfiles import list_folder, shown, stored_name
from airflow_provider_mltrain.core.store import ModelVersionMissing
from airflow_provider_mltrain.runner import tree

if TYPE_CHECKING:
    from airflow_provider_mltrain.core.run import Run
    from airflow_provider_mltrain.core.workspace import Workspace

# Azure ML's rule for model names: what every object store and URL takes unquoted.
NAME_RULE = "1 to 255 characters: letters, digits, '-', '_' and '.', starting with a letter or digit"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,254}")
# An alias starts with a letter, so it never reads as a version number.
ALIAS_RULE = "1 to 64 characters: letters, digits, '-' and '_', starting with a letter"
_ALIAS = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,63}")
RESERVED_PREFIXES = ("mltrain.", "airflow.")
BLOB_PREFIX = "models/sha256"
_CHUNK = 1 << 20


class ModelError(MLTrainError):
    """A model cannot be registered, found or downloaded as asked."""


class InvalidModelName(ModelError, ValueError):
    """A model name or alias the registry refuses (see NAME_RULE and ALIAS_RULE)."""


class ModelNotFound(ModelError, LookupError):
    """No model of that name, version or alias is registered."""


class ModelPathNotFound(ModelError, LookupError):
    """The run has no file at the ``model_path`` given to ``register_model``."""


class RunNotFinished(ModelError):
    """``register_model`` from the driver needs the run's files: the run has not ended yet."""


def check_model_name(name: Any) -> str:
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise InvalidModelName(f"Model name {name!r} is refused: a model name is {NAME_RULE}.")
    return name


def check_alias(alias: Any) -> str:
    if not isinstance(alias, str) or not _ALIAS.fullmatch(alias):
        raise InvalidModelName(f"Model alias {alias!r} is refused: an alias is {ALIAS_RULE}.")
    return alias


def _check_version(version: Any) -> int:
    try:
        number = int(version)
    except (TypeError, ValueError):
        number = 0
    if number < 1 or (isinstance(version, float) and not version.is_integer()):
        raise ModelNotFound(f"Model version {version!r} is not a version number (1, 2, ...).")
    return number


def check_labels(kind: str, values: dict[str, Any] | None, provider: bool = False) -> dict[str, str]:
    """Tags or properties as strings; ``mltrain.*`` and ``airflow.*`` keys belong to the provider."""
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise ModelError(f"Model {kind} must be a dict of strings, not {type(values).__name__}.")
    out = {str(k): "" if v is None else str(v) for k, v in values.items()}
    reserved = sorted(k for k in out if k.startswith(RESERVED_PREFIXES))
    if reserved and not provider:
        raise ModelError(
            f"Model {kind} {reserved} are refused: keys starting with 'mltrain.' or 'airflow.' "
            "belong to the provider; choose other names."
        )
    return out


def blob_name(sha256: str) -> str:
    return f"{BLOB_PREFIX}/{sha256[:2]}/{sha256}"


# A file to register: its path in the model (relative, '/'-separated) and how to open it.
@dataclass(frozen=True)
class _Source:
    path: str
    open: Callable[[], AbstractContextManager[IO[bytes]]]


def _store_files(store: ArtifactStore, sources: Iterable[_Source]) -> list[dict[str, Any]]:
    """Copy each file into the store by content (skipped when the store holds it); their entries.

    Each file is read once: hashed while it is copied to a temporary file, which a local store
    renames into place (it is made in the store's folder) and any other store uploads."""
    local = store if isinstance(store, LocalArtifactStore) else None
    folder = local.path(BLOB_PREFIX) if local else None
    if folder is not None:
        make_private_dirs(folder)
    entries = []
    for source in sources:
        digest = hashlib.sha256()
        size = 0
        with tempfile.NamedTemporaryFile(prefix=".mltrain-model-", dir=folder, delete=False) as tmp:
            try:
                with source.open() as src:
                    while chunk := src.read(_CHUNK):
                        digest.update(chunk)
                        size += len(chunk)
                        tmp.write(chunk)
            except BaseException:
                os.unlink(tmp.name)
                raise
        try:
            sha = digest.hexdigest()
            name = blob_name(sha)
            if store.size(name) != size:
                if local is not None:
                    make_private_dirs(local.path(name).parent)
                    os.replace(tmp.name, local.path(name))
                else:
                    store.put_file(name, tmp.name)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp.name)
        entries.append({"path": source.path, "sha256": sha, "size": size})
    return entries


def _relative(name: str, model_path: str) -> str:
    """The path a run file ``name`` under ``model_path`` has in the model: from the last part of
    ``model_path`` on (``outputs/model/w.bin`` under ``outputs/model`` is ``model/w.bin``)."""
    parent = posixpath.dirname(model_path)
    return name[len(parent) + 1 :] if parent else name


def _normalize_path(model_path: Any) -> str:
    if not isinstance(model_path, (str, os.PathLike)):
        raise ModelPathNotFound(f"model_path must be a path string, not {type(model_path).__name__}.")
    path = posixpath.normpath(str(model_path).replace(os.sep, "/")).strip("/")
    if path in ("", ".") or path.startswith("../") or path == "..":
        raise ModelPathNotFound(
            f"model_path {str(model_path)!r} names no file or folder of the run: give a path the run "
            "wrote, such as 'outputs/model.pkl' or 'outputs/model'."
        )
    return path


class Model:
    """One registered version of a model.

    ``Model(workspace, name)`` is the latest version; ``version=`` a given one; ``alias=`` the version
    an alias names; ``id="name:version"`` as Azure ML writes it. Raises :class:`ModelNotFound`.
    """

    def __init__(
        self,
        workspace: Workspace,
        name: str | None = None,
        id: str | None = None,  # Azure ML's name
        version: int | str | None = None,
        alias: str | None = None,
    ):
        if id is not None:
            name, _, given = id.rpartition(":")
            if not name:
                name, given = given, ""
            version = given or version
        if name is None:
            raise ModelError("Model() needs a name (or an id 'name:version').")
        check_model_name(name)
        number = None if version is None else _check_version(version)
        if alias is not None:
            check_alias(alias)
        record = workspace.store.get_model_version(name, number, alias)
        if record is None:
            if alias is not None:
                known = [a["alias"] for a in workspace.store.model_aliases(name)]
                raise ModelNotFound(
                    f"Model {name!r} has no alias {alias!r}"
                    + (f"; its aliases: {', '.join(known)}." if known else "; it has no aliases.")
                )
            latest = workspace.store.get_model_version(name)
            if latest is None:
                raise ModelNotFound(f"No model named {name!r} is registered; see Model.list(workspace).")
            raise ModelNotFound(
                f"Model {name!r} has no version {number}; its latest version is {latest['version']}."
            )
        self.workspace = workspace
        self._record = record

    @classmethod
    def _from_record(cls, workspace: Workspace, record: dict[str, Any]) -> Model:
        model = cls.__new__(cls)
        model.workspace = workspace
        model._record = record
        return model

    def __repr__(self) -> str:
        return f"Model(name={self.name!r}, version={self.version})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Model) and (other.name, other.version) == (self.name, self.version)

    def __hash__(self) -> int:
        return hash((self.name, self.version))

    @property
    def name(self) -> str:
        return str(self._record["name"])

    @property
    def version(self) -> int:
        return int(self._record["version"])

    @property
    def id(self) -> str:
        return f"{self.name}:{self.version}"

    @property
    def tags(self) -> dict[str, str]:
        return dict(self._record["tags"])

    @property
    def properties(self) -> dict[str, str]:
        return dict(self._record["properties"])

    @property
    def description(self) -> str | None:
        return self._record["description"]

    @property
    def run_id(self) -> str | None:
        """The run that made the model (None when registered from local files)."""
        return self._record["run_id"]

    @property
    def run(self) -> Run | None:
        return self.workspace.get_run(self.run_id) if self.run_id else None

    @property
    def model_path(self) -> str:
        """The path registered: in the run's files, or on the machine that registered it."""
        return str(self._record["model_path"])

    @property
    def created_time(self) -> datetime:
        return datetime.fromtimestamp(self._record["created_at"], tz=timezone.utc)

    @property
    def files(self) -> list[dict[str, Any]]:
        """Each file: its path in the model, sha256 and size."""
        return [dict(f) for f in self._record["files"]]

    @property
    def size(self) -> int:
        return sum(int(f["size"]) for f in self._record["files"])

    @property
    def aliases(self) -> list[str]:
        """The aliases that name this version now."""
        return [
            a["alias"] for a in self.workspace.store.model_aliases(self.name) if a["version"] == self.version
        ]

    def serialize(self) -> dict[str, Any]:
        """What ``mltrain models show --json`` and the UI's API give."""
        return {
            "name": self.name,
            "version": self.version,
            "id": self.id,
            "run_id": self.run_id,
            "model_path": self.model_path,
            "description": self.description,
            "tags": self.tags,
            "properties": self.properties,
            "created_time": self.created_time.isoformat(),
            "aliases": self.aliases,
            "size": self.size,
            "files": self.files,
        }

    # -- aliases -----------------------------------------------------------------------------------

    def set_alias(self, alias: str) -> int | None:
        """Point ``alias`` at this version, in one transaction (readers see the old version or this
        one, never none); returns the version it named before, None for a new alias."""
        check_alias(alias)
        try:
            return self.workspace.store.set_model_alias(self.name, alias, self.version)
        except ModelVersionMissing as exc:
            raise ModelNotFound(f"Model {self.id} is no longer registered.") from exc

    @staticmethod
    def delete_alias(workspace: Workspace, name: str, alias: str) -> None:
        check_model_name(name)
        check_alias(alias)
        if not workspace.store.delete_model_alias(name, alias):
            raise ModelNotFound(f"Model {name!r} has no alias {alias!r}.")

    # -- files -------------------------------------------------------------------------------------

    def download(self, target_dir: str | os.PathLike[str] = ".", exist_ok: bool = False) -> str:
        """Copy the model's files into ``target_dir`` and return the path of the model there (the
        file, or the folder, named as the registered ``model_path`` ends). Each file is checked
        against its sha256. Raises FileExistsError for a file already there unless ``exist_ok``."""
        target = Path(target_dir).expanduser().absolute()
        files = self._record["files"]
        if not exist_ok:
            clash = [f["path"] for f in files if (target / f["path"]).exists()]
            if clash:
                raise FileExistsError(
                    f"Model {self.id}: {target / clash[0]} exists; pass exist_ok=True to replace it."
                )
        store = self.workspace.artifacts
        for entry in files:
            dest = target / check_name(entry["path"])
            dest.parent.mkdir(parents=True, exist_ok=True)
            try:
                store.get_file(blob_name(entry["sha256"]), dest)
            except FileNotFoundError as exc:
                raise ModelError(
                    f"Model {self.id}: the artifact store {store.url} lacks the content of "
                    f"{entry['path']} ({blob_name(entry['sha256'])}); was it deleted by hand?"
                ) from exc
            if _sha256(dest) != entry["sha256"]:
                dest.unlink()
                raise ModelError(
                    f"Model {self.id}: {entry['path']} read from {store.url} does not match its sha256."
                )
        top = files[0]["path"].split("/")[0] if files else ""
        return str(target / top)

    # -- registering and listing ---------------------------------------------------------------

    @classmethod
    def register(
        cls,
        workspace: Workspace,
        model_path: str | os.PathLike[str],
        model_name: str,
        tags: dict[str, Any] | None = None,
        properties: dict[str, Any] | None = None,
        description: str | None = None,
    ) -> Model:
        """Register a file or folder of this machine (no source run), as Azure ML's ``Model.register``."""
        check_model_name(model_name)
        tags = check_labels("tags", tags)
        properties = check_labels("properties", properties)
        root = Path(model_path).expanduser().absolute()
        if root.is_symlink() or not root.exists():
            raise ModelPathNotFound(f"{root} is not a file or folder (links are not followed).")
        if root.is_file():
            paths = [root]
        else:
            paths = sorted(p for p in root.rglob("*") if p.is_file() and not p.is_symlink())
        if not paths:
            raise ModelPathNotFound(f"{root} holds no files.")
        sources = [_Source(p.relative_to(root.parent).as_posix(), _opener(p)) for p in paths]
        for s in sources:
            check_name(s.path)
        return _add(workspace, model_name, str(root), None, sources, tags, properties, description)

    @classmethod
    def list(
        cls,
        workspace: Workspace,
        name: str | None = None,
        tags: Iterable[Any] | dict[str, Any] | None = None,
        properties: Iterable[Any] | dict[str, Any] | None = None,
        run_id: str | None = None,
        latest: bool = False,
    ) -> list[Model]:
        """Registered versions, newest first per name. ``tags``/``properties`` as Azure ML takes
        them: keys, ``[key, value]`` pairs, or a dict; a version must have all. ``latest``: only
        each name's newest (matching) version."""
        if name is not None:
            check_model_name(name)
        want_tags, want_props = _filter(tags), _filter(properties)
        out: list[Model] = []
        seen: set[str] = set()
        for record in workspace.store.list_model_versions(name=name, run_id=run_id):
            if not (_matches(record["tags"], want_tags) and _matches(record["properties"], want_props)):
                continue
            if latest and record["name"] in seen:
                continue
            seen.add(record["name"])
            out.append(cls._from_record(workspace, record))
        return out


def register_from_run(
    run: Run,
    model_name: str,
    model_path: str | os.PathLike[str] | None = None,
    tags: dict[str, Any] | None = None,
    properties: dict[str, Any] | None = None,
    description: str | None = None,
    provider_properties: dict[str, str] | None = None,
) -> Model:
    """``Run.register_model``: see there."""
    check_model_name(model_name)
    tags = check_labels("tags", tags)
    properties = check_labels("properties", properties) | (provider_properties or {})
    path = _normalize_path(model_name if model_path is None else model_path)
    status = run.refresh()
    if not status.is_terminal:
        raise RunNotFinished(
            f"Run {run.id} is {status.value}: register_model from the driver reads the run's files once "
            "it has ended (call run.wait_for_completion() first), or call "
            "Run.get_context().register_model(...) inside the script."
        )
    entries = run.list_entries()
    names = [f for f in entries.files if f == path or f.startswith(path + "/")]
    if not names:
        if path in entries.links:
            why = f"{path!r} is a symbolic link (to {entries.links[path]!r}); links are never followed"
        else:
            # Names the script chose: quoted (control characters escaped) and cut short.
            near = [repr(f[:100]) for f in entries.files if f.startswith("outputs/")][:10]
            why = f"it has no file or folder {path!r}; its outputs: {', '.join(near) or 'none'}"
        raise ModelPathNotFound(f"Run {run.id} cannot register model {model_name!r}: {why}.")
    sources = _sources(entries.files, path, lambda name: _run_opener(run, name), f"Run {run.id}")
    return _add(run.workspace, model_name, path, run.id, sources, tags, properties, description)


def register_requested(
    workspace: Workspace, run_id: str, folder: Path, request: dict[str, Any], key: str
) -> Model:
    """Register one request the script wrote to ``logs/models.jsonl`` (see the in-script
    ``Run.register_model``) from the run's collected files in ``folder``, read without following
    links. The request is untrusted: checked as the driver's arguments are. ``key`` makes it
    idempotent: a request already registered returns its version."""
    if not isinstance(request, dict):
        raise ModelError("a request is not a JSON object")
    name = check_model_name(request.get("model_name"))
    tags = check_labels("tags", request.get("tags"))
    properties = check_labels("properties", request.get("properties"))
    description = request.get("description")
    if description is not None and not isinstance(description, str):
        raise ModelError("description is not a string")
    path = _normalize_path(request.get("model_path") or name)
    entries = shown(list_folder(folder))  # named as get_file_names() names them: uploads too
    if not any(f == path or f.startswith(path + "/") for f in entries.files):
        raise ModelPathNotFound(f"the run wrote no file or folder {path!r}")

    def opener(name: str) -> Callable[[], AbstractContextManager[IO[bytes]]]:
        def open_() -> IO[bytes]:
            fd = tree.open_file(str(folder), stored_name(name))
            if fd is None:
                raise ModelPathNotFound(f"{name!r} is not a regular file of the run")
            return os.fdopen(fd, "rb")

        return open_

    sources = _sources(entries.files, path, opener, f"Run {run_id}")
    return _add(workspace, name, path, run_id, sources, tags, properties, description, request=key)


def _sources(
    files: list[str], path: str, opener: Callable[[str], Callable[[], Any]], where: str
) -> list[_Source]:
    sources = []
    for name in sorted(f for f in files if f == path or f.startswith(path + "/")):
        rel = _relative(name, path)
        try:
            rel.encode("utf-8")
            check_name(rel)
        except (UnicodeEncodeError, ValueError) as exc:
            raise ModelPathNotFound(f"{where}: the file name {name!r} cannot be a model file name.") from exc
        sources.append(_Source(rel, opener(name)))
    return sources


def _add(
    workspace: Workspace,
    name: str,
    model_path: str,
    run_id: str | None,
    sources: list[_Source],
    tags: dict[str, str],
    properties: dict[str, str],
    description: str | None,
    request: str | None = None,
) -> Model:
    files = _store_files(workspace.artifacts, sources)
    record = {
        "run_id": run_id,
        "model_path": model_path,
        "description": None if description is None else str(description),
        "tags": tags,
        "properties": properties,
        "files": files,
        "request": request,
    }
    version = workspace.store.add_model_version(name, record)
    stored = workspace.store.get_model_version(name, version)
    assert stored is not None
    return Model._from_record(workspace, stored)


def _opener(path: Path) -> Callable[[], AbstractContextManager[IO[bytes]]]:
    return lambda: open(path, "rb")


def _run_opener(run: Run, name: str) -> Callable[[], AbstractContextManager[IO[bytes]]]:
    return lambda: run.open_file(name)[0]


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _filter(spec: Iterable[Any] | dict[str, Any] | None) -> list[tuple[str, str | None]]:
    if spec is None:
        return []
    if isinstance(spec, dict):
        return [(str(k), None if v is None else str(v)) for k, v in spec.items()]
    out: list[tuple[str, str | None]] = []
    for item in spec:
        if isinstance(item, str):
            out.append((item, None))
        else:
            key, value = item
            out.append((str(key), str(value)))
    return out


def _matches(labels: dict[str, str], wanted: list[tuple[str, str | None]]) -> bool:
    return all(k in labels and (v is None or labels[k] == v) for k, v in wanted)
