"""Workspace: the root folder and run store that hold experiments, runs and snapshots.

A workspace holds snapshots of files their owner kept private and the run history: the folders
and the SQLite file it creates are owner-only (0o700, 0o600).
"""

from __future__ import annotations

import logging
import os
import threading
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

from airflow_provider_mltrain.core import settings
from airflow_provider_mltrain.core.artifacts import ArtifactStore, LocalArtifactStore, open_store
from airflow_provider_mltrain.core.errors import RunNotFound
from airflow_provider_mltrain.core.private import create_private_file, make_private_dirs
from airflow_provider_mltrain.core.run import Run
from airflow_provider_mltrain.core.settings import SnapshotLimits

if TYPE_CHECKING:  # both imported where first used: SQLAlchemy and pathspec take most of a start-up
    from airflow_provider_mltrain.core.snapshot import SnapshotStore
    from airflow_provider_mltrain.core.store import RunStore

log = logging.getLogger(__name__)

# Roots this process has already announced: the "where is my workspace" line is said once.
_announced: set[Path] = set()
_announced_lock = threading.Lock()


def _announce(root: Path, given: bool, created: bool) -> None:
    with _announced_lock:
        if root in _announced:
            return
        _announced.add(root)
    if given:
        origin = "given to Workspace()"
    elif os.environ.get("MLTRAIN_WORKSPACE"):
        origin = "from MLTRAIN_WORKSPACE"
    elif settings.get_setting("workspace"):
        origin = "from [mltrain] workspace in Airflow's configuration"
    else:
        origin = "$AIRFLOW_HOME/mltrain; set MLTRAIN_WORKSPACE to choose another folder"
    log.info("mltrain workspace %s: %s (%s)", "created" if created else "in use", root, origin)


class Workspace:
    """``Workspace()`` finds its root from ``MLTRAIN_WORKSPACE``, ``[mltrain] workspace``, or
    ``$AIRFLOW_HOME/mltrain``; its run store from ``MLTRAIN_DATABASE_URL`` /
    ``[mltrain] database_url``, or a SQLite file in the root."""

    def __init__(
        self,
        root: str | os.PathLike[str] | None = None,
        database_url: str | None = None,
        snapshot_limits: SnapshotLimits | None = None,
        artifact_store: str | ArtifactStore | None = None,
    ):
        self.root = Path(root).expanduser().absolute() if root else settings.workspace_root()
        created = not self.root.exists()
        make_private_dirs(self.root)
        _announce(self.root, given=bool(root), created=created)
        self.database_url = database_url or settings.database_url(self.root)
        self._snapshot_limits = snapshot_limits
        if isinstance(artifact_store, ArtifactStore):
            self.__dict__["artifacts"] = artifact_store
        elif artifact_store:
            self.__dict__["artifacts"] = open_store(artifact_store, conn_id=settings.artifact_store_conn_id())

    def __repr__(self) -> str:
        return f"Workspace(root={str(self.root)!r})"

    @cached_property
    def store(self) -> RunStore:
        from airflow_provider_mltrain.core.store import RunStore

        path = _sqlite_file(self.database_url)
        if path is not None:
            make_private_dirs(path.parent)
            create_private_file(path)
        return RunStore(self.database_url)

    @cached_property
    def artifacts(self) -> ArtifactStore:
        """Where snapshot content, run logs and outputs live: ``[mltrain] artifact_store`` (a URL;
        credentials from ``artifact_store_conn_id`` through the Airflow layer), else the root."""
        url = settings.artifact_store()
        if not url:
            return open_store(str(self.root))
        return open_store(url, conn_id=settings.artifact_store_conn_id())

    @property
    def artifacts_are_local_root(self) -> bool:
        """Whether the artifact store is the root folder itself (the default): then the local
        folders are the store, not a cache of it."""
        store = self.artifacts
        return isinstance(store, LocalArtifactStore) and store.root == self.root

    def check_artifacts(self, force: bool = False) -> None:
        """Raise an :class:`~airflow_provider_mltrain.core.artifacts.ArtifactStoreError` subclass
        when the artifact store cannot be used; called before anything is submitted."""
        if not self.artifacts_are_local_root:
            self.artifacts.check(force=force)

    @cached_property
    def snapshots(self) -> SnapshotStore:
        """Snapshots: blobs and manifests under ``<root>/snapshots``; with an artifact store other
        than the root, that folder is a cache and the store holds the snapshots every host shares."""
        from airflow_provider_mltrain.core.snapshot import SnapshotStore

        shared = None if self.artifacts_are_local_root else self.artifacts
        return SnapshotStore(self.root / "snapshots", artifacts=shared)

    @property
    def snapshot_limits(self) -> SnapshotLimits:
        return self._snapshot_limits or SnapshotLimits.from_settings()

    def run_files_dir(self, run_id: str) -> Path:
        return self.root / "runs" / run_id

    def get_run(self, run_id: str) -> Run:
        if self.store.get_run(run_id) is None:
            raise RunNotFound(f"Run {run_id!r} is not in the run store at {self.store.url}.")
        return Run(self, run_id)

    def experiment(self, name: str):  # type: ignore[no-untyped-def]
        from airflow_provider_mltrain.core.experiment import Experiment

        return Experiment(self, name)

    def list_experiments(self) -> list[str]:
        return self.store.list_experiments()


def _sqlite_file(url: str) -> Path | None:
    """The database file of a ``sqlite:///`` URL; None for other databases and in-memory SQLite."""
    if not url.startswith("sqlite"):
        return None
    from sqlalchemy.engine import make_url

    database = make_url(url).database
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    return Path(database).expanduser().absolute()
