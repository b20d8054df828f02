"""The run store: runs, their state transitions and metrics, on SQLAlchemy.

SQLite (the default) runs in WAL mode with ``BEGIN IMMEDIATE`` write transactions and a busy
timeout, so several processes (workers, triggerer, CLI) can write at once without "database is
locked" errors. Any other SQLAlchemy URL (PostgreSQL for multi-host deployments) works unchanged.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError, OperationalError, ProgrammingError

from airflow_provider_mltrain.core import metric_summary, run_warnings
from airflow_provider_mltrain.core.states import RunStatus

# 2: mltrain_runs.warnings
# 3: mltrain_metric_series and mltrain_metric_blocks, kept at ingestion; mltrain_runs.summarized
# 4: mltrain_models and mltrain_model_aliases (the model registry)
SCHEMA_VERSION = 5

metadata = sa.MetaData()

runs = sa.Table(
    "mltrain_runs",
    metadata,
    sa.Column("id", sa.String(255), primary_key=True),
    sa.Column("experiment", sa.String(255), nullable=False, index=True),
    sa.Column("status", sa.String(32), nullable=False),
    sa.Column("target", sa.String(255), nullable=False),
    sa.Column("source_directory", sa.Text, nullable=False),
    sa.Column("script", sa.Text, nullable=False),
    sa.Column("arguments", sa.Text, nullable=False),
    sa.Column("snapshot_id", sa.String(64), nullable=False),
    sa.Column("environment", sa.Text, nullable=False),
    sa.Column("tags", sa.Text, nullable=False),
    sa.Column("properties", sa.Text, nullable=False),
    sa.Column("created_at", sa.Float, nullable=False, index=True),
    sa.Column("updated_at", sa.Float, nullable=False),
    sa.Column("exit_code", sa.Integer, nullable=True),
    sa.Column("error", sa.Text, nullable=True),
    sa.Column("metrics_offset", sa.BigInteger, nullable=False, default=0),
    sa.Column("collected", sa.Boolean, nullable=False, default=False),
    # JSON list of run_warnings entries; NULL (no warnings) in rows written before schema 2.
    sa.Column("warnings", sa.Text, nullable=True),
    # True once the run's metric summaries are kept at ingestion; NULL for runs whose rows an
    # older version stored: their summaries are built from the rows on first read.
    sa.Column("summarized", sa.Boolean, nullable=True),
)

run_events = sa.Table(
    "mltrain_run_events",
    metadata,
    sa.Column("run_id", sa.String(255), primary_key=True),
    sa.Column("status", sa.String(32), primary_key=True),
    sa.Column("at", sa.Float, nullable=False),
    sa.Column("detail", sa.Text, nullable=True),
)

metrics = sa.Table(
    "mltrain_metrics",
    metadata,
    sa.Column("run_id", sa.String(255), primary_key=True),
    sa.Column("seq", sa.BigInteger, primary_key=True),
    sa.Column("name", sa.String(255), nullable=False),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("step", sa.BigInteger, nullable=True),
    sa.Column("value", sa.Text, nullable=False),
    sa.Column("logged_at", sa.Float, nullable=False),
    # What the script said the value is (run.log(..., description=...)); None when it said nothing.
    sa.Column("description", sa.Text, nullable=True),
)


def _summary_columns() -> list[sa.Column]:
    return [
        sa.Column("rows", sa.BigInteger, nullable=False),
        sa.Column("count", sa.BigInteger, nullable=False),
        sa.Column("min", sa.Float, nullable=True),
        sa.Column("max", sa.Float, nullable=True),
        sa.Column("first_seq", sa.BigInteger, nullable=True),
        sa.Column("last_seq", sa.BigInteger, nullable=True),
        sa.Column("last_num_seq", sa.BigInteger, nullable=True),
        sa.Column("last", sa.Float, nullable=True),
        sa.Column("first_step", sa.BigInteger, nullable=True),
        sa.Column("last_step", sa.BigInteger, nullable=True),
        sa.Column("first_time", sa.Float, nullable=True),
        sa.Column("last_time", sa.Float, nullable=True),
    ]


# One row per series (run, name, kind): what the run page and the API show without reading rows.
metric_series = sa.Table(
    "mltrain_metric_series",
    metadata,
    sa.Column("run_id", sa.String(255), primary_key=True),
    sa.Column("name", sa.String(255), primary_key=True),
    sa.Column("kind", sa.String(16), primary_key=True),
    *_summary_columns(),
)

# The same fields per block of metric_summary.BLOCK consecutive values of a series: chart buckets.
metric_blocks = sa.Table(
    "mltrain_metric_blocks",
    metadata,
    sa.Column("run_id", sa.String(255), primary_key=True),
    sa.Column("name", sa.String(255), primary_key=True),
    sa.Column("kind", sa.String(16), primary_key=True),
    sa.Column("block", sa.BigInteger, primary_key=True, autoincrement=False),
    *_summary_columns(),
)


meta = sa.Table(
    "mltrain_meta",
    metadata,
    sa.Column("key", sa.String(64), primary_key=True),
    sa.Column("value", sa.String(255), nullable=False),
)

environments = sa.Table(
    "mltrain_environments",
    metadata,
    sa.Column("name", sa.String(255), primary_key=True),
    sa.Column("version", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("hash", sa.String(64), nullable=False),
    sa.Column("spec", sa.Text, nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
)

environment_builds = sa.Table(
    "mltrain_environment_builds",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("hash", sa.String(64), nullable=False, index=True),
    sa.Column("target", sa.String(255), nullable=False),
    sa.Column("run_id", sa.String(255), nullable=True),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("seconds", sa.Float, nullable=True),
    sa.Column("error", sa.Text, nullable=True),
    sa.Column("created_at", sa.Float, nullable=False),
)

# One row per registered model version: files (JSON list of {path, sha256, size}) name content
# objects of the artifact store; (name, version) is the key two registrations race for.
models = sa.Table(
    "mltrain_models",
    metadata,
    sa.Column("name", sa.String(255), primary_key=True),
    sa.Column("version", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("run_id", sa.String(255), nullable=True, index=True),
    sa.Column("model_path", sa.Text, nullable=False),
    sa.Column("description", sa.Text, nullable=True),
    sa.Column("tags", sa.Text, nullable=False),
    sa.Column("properties", sa.Text, nullable=False),
    sa.Column("files", sa.Text, nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    # "<run id>#<n>" for the n-th request a script wrote to logs/models.jsonl: registered once
    # however many followers collect the run, or retry after a crash.
    sa.Column("request", sa.String(512), nullable=True, unique=True),
)

# An alias (``production``) names one version of a model; moving it is one row's update.
model_aliases = sa.Table(
    "mltrain_model_aliases",
    metadata,
    sa.Column("name", sa.String(255), primary_key=True),
    sa.Column("alias", sa.String(64), primary_key=True),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
)

JSON_COLUMNS = ("arguments", "environment", "tags", "properties")

_engines: dict[str, Engine] = {}
_engines_lock = threading.Lock()


def _sqlite_engine(url: str) -> Engine:
    engine = sa.create_engine(url, connect_args={"timeout": 60, "check_same_thread": False})

    @sa.event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # we issue BEGIN ourselves
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA busy_timeout = 60000")
        cur.execute("PRAGMA journal_mode = WAL")
        cur.execute("PRAGMA synchronous = NORMAL")
        cur.close()

    @sa.event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


def get_engine(url: str) -> Engine:
    with _engines_lock:
        engine = _engines.get(url)
        if engine is None:
            engine = (
                _sqlite_engine(url) if url.startswith("sqlite") else sa.create_engine(url, pool_pre_ping=True)
            )
            _create_schema(engine)
            _engines[url] = engine
        return engine


# Any constant: serializes schema creation across processes on PostgreSQL.
_SCHEMA_LOCK_KEY = 0x6D6C7472  # "mltr"


def _create_schema(engine: Engine) -> None:
    for attempt in range(5):
        try:
            with engine.begin() as conn:
                if conn.dialect.name == "postgresql":
                    # Without it, two processes' CREATE TABLE race ("relation already exists").
                    conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _SCHEMA_LOCK_KEY})
                metadata.create_all(conn, checkfirst=True)
                _migrate(conn)
            return
        except (OperationalError, IntegrityError, ProgrammingError):
            # Another process created the tables between our check and our CREATE.
            if attempt == 4:
                raise
            time.sleep(0.1 * (attempt + 1))


# Columns added after schema 1, each (version, column): added to a table created by an older version.
_ADDED_COLUMNS = ((2, runs.c.warnings), (3, runs.c.summarized), (5, metrics.c.description))


def _migrate(conn: sa.Connection) -> None:
    """Bring a store created by an older version up to SCHEMA_VERSION, in the caller's transaction.

    Runs under the same lock as the schema creation (``BEGIN IMMEDIATE`` on SQLite, the advisory
    lock on PostgreSQL), so two processes upgrading at once add each column once. Only nullable
    columns are added: a process of the older version goes on working on the upgraded store.
    """
    row = conn.execute(sa.select(meta.c.value).where(meta.c.key == "schema_version")).first()
    version = int(row[0]) if row is not None and str(row[0]).isdigit() else 0
    if version < SCHEMA_VERSION:
        inspector = sa.inspect(conn)
        for added_in, column in _ADDED_COLUMNS:
            table = column.table.name
            if added_in > version and column.name not in {c["name"] for c in inspector.get_columns(table)}:
                kind = column.type.compile(dialect=conn.dialect)
                conn.execute(sa.text(f'ALTER TABLE {table} ADD COLUMN "{column.name}" {kind}'))
    if row is None:
        conn.execute(meta.insert().values(key="schema_version", value=str(SCHEMA_VERSION)))
    elif version < SCHEMA_VERSION:
        conn.execute(meta.update().where(meta.c.key == "schema_version").values(value=str(SCHEMA_VERSION)))


def _decode(row: Any) -> dict[str, Any]:
    data = dict(row._mapping)
    for key in JSON_COLUMNS:
        if key in data and isinstance(data[key], str):
            data[key] = json.loads(data[key])
    if "warnings" in data:
        data["warnings"] = run_warnings.decode(data["warnings"])
    return data


def _encode(values: dict[str, Any]) -> dict[str, Any]:
    out = dict(values)
    for key in JSON_COLUMNS:
        if key in out and not isinstance(out[key], str):
            out[key] = json.dumps(out[key], sort_keys=True)
    return out


def _upsert(
    conn: sa.Connection,
    table: sa.Table,
    run_id: str,
    values: list[dict[str, Any]],
    existing: set[tuple[Any, ...]],
    keys: tuple[str, ...],
) -> None:
    """Insert the rows of ``values`` whose keys are not in ``existing``; update the others."""
    new = [{"run_id": run_id, **v} for v in values if tuple(v[k] for k in keys) not in existing]
    old = [v for v in values if tuple(v[k] for k in keys) in existing]
    if new:
        conn.execute(table.insert(), new)
    if old:
        fields = metric_summary.FIELDS
        stmt = (
            table.update()
            .where(table.c.run_id == run_id, *(table.c[k] == sa.bindparam(f"k_{k}") for k in keys))
            .values({f: sa.bindparam(f"v_{f}") for f in fields})
        )
        conn.execute(
            stmt,
            [{**{f"k_{k}": v[k] for k in keys}, **{f"v_{f}": v[f] for f in fields}} for v in old],
        )


class RunExists(Exception):
    pass


class ModelVersionMissing(LookupError):
    """An alias was to point at a version of a model that is not registered."""


# Registrations racing for one model's next version: each lost race re-reads and tries again.
_VERSION_ATTEMPTS = 50


def _decode_model(row: Any) -> dict[str, Any]:
    data = dict(row._mapping)
    for key in ("tags", "properties", "files"):
        data[key] = json.loads(data[key])
    return data


class RunStore:
    def __init__(self, url: str):
        self.url = url
        self.engine = get_engine(url)

    def create_run(self, record: dict[str, Any], at: float | None = None) -> None:
        now = at or time.time()
        values = _encode(
            {
                "created_at": now,
                "updated_at": now,
                "metrics_offset": 0,
                "collected": False,
                "summarized": True,
                **record,
            }
        )
        try:
            with self.engine.begin() as conn:
                conn.execute(runs.insert().values(**values))
                conn.execute(run_events.insert().values(run_id=record["id"], status=record["status"], at=now))
        except IntegrityError as exc:
            raise RunExists(record["id"]) from exc

    def get_run(self, run_id: str) -> dict[str, Any] | None:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(runs).where(runs.c.id == run_id)).first()
        return _decode(row) if row else None

    def list_runs(
        self, experiment: str | None = None, status: str | None = None, limit: int | None = None
    ) -> list[dict[str, Any]]:
        query = sa.select(runs).order_by(runs.c.created_at.desc(), runs.c.id.desc())
        if experiment is not None:
            query = query.where(runs.c.experiment == experiment)
        if status is not None:
            query = query.where(runs.c.status == status)
        if limit:
            query = query.limit(limit)
        with self.engine.connect() as conn:
            return [_decode(r) for r in conn.execute(query)]

    def list_experiments(self) -> list[str]:
        with self.engine.connect() as conn:
            return sorted(r[0] for r in conn.execute(sa.select(runs.c.experiment).distinct()))

    def update(self, run_id: str, **fields: Any) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                runs.update().where(runs.c.id == run_id).values(updated_at=time.time(), **_encode(fields))
            )

    def change_properties(self, run_id: str, change: Callable[[dict[str, Any]], dict[str, Any]]) -> bool:
        """Replace a run's properties by ``change(properties)`` in one transaction: writers that
        change different keys meanwhile never lose each other's change. False: no such run."""
        with self.engine.begin() as conn:
            row = conn.execute(
                sa.select(runs.c.properties).where(runs.c.id == run_id).with_for_update()
            ).first()
            if row is None:
                return False
            properties = change(json.loads(row[0]))
            conn.execute(
                runs.update()
                .where(runs.c.id == run_id)
                .values(updated_at=time.time(), **_encode({"properties": properties}))
            )
        return True

    def record_states(self, run_id: str, states: Iterable[tuple[RunStatus, float, str | None]]) -> RunStatus:
        """Record transitions not seen yet and move the run's status forward, never back.

        A terminal state, once recorded, is final: a late "Running" from a slow reader cannot undo it.
        Returns the status after the update; with no states, the status as it is, read with no
        write (a follower's poll that learnt nothing new).
        """
        states = list(states)
        if not states:
            with self.engine.connect() as conn:
                row = conn.execute(sa.select(runs.c.status).where(runs.c.id == run_id)).first()
            if row is None:
                raise KeyError(run_id)
            return RunStatus(row[0])
        with self.engine.begin() as conn:
            row = conn.execute(sa.select(runs.c.status).where(runs.c.id == run_id)).first()
            if row is None:
                raise KeyError(run_id)
            current = RunStatus(row[0])
            seen = {
                r[0]
                for r in conn.execute(sa.select(run_events.c.status).where(run_events.c.run_id == run_id))
            }
            for state, at, detail in states:
                if current.is_terminal:
                    break
                if state.value not in seen:
                    conn.execute(
                        run_events.insert().values(run_id=run_id, status=state.value, at=at, detail=detail)
                    )
                    seen.add(state.value)
                if state.rank > current.rank or (state.is_terminal and not current.is_terminal):
                    current = state
            conn.execute(
                runs.update().where(runs.c.id == run_id).values(status=current.value, updated_at=time.time())
            )
            return current

    def get_events(self, run_id: str) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(run_events).where(run_events.c.run_id == run_id).order_by(run_events.c.at)
            )
            return [dict(r._mapping) for r in rows]

    def ingest_metrics(
        self,
        run_id: str,
        old_offset: int,
        new_offset: int,
        records: list[dict[str, Any]],
        warnings: list[dict[str, Any]] | None = None,
    ) -> bool:
        """Store metric records read from ``[old_offset, new_offset)`` of the run's metrics file.

        The offset moves by compare-and-set, so two controllers reading the same file at once
        store each record once, and count each bad line (``warnings``, as
        :mod:`run_warnings` makes them) once. Returns False when another controller got there first.
        """
        with self.engine.begin() as conn:
            moved = conn.execute(
                runs.update()
                .where(runs.c.id == run_id, runs.c.metrics_offset == old_offset)
                .values(metrics_offset=new_offset)
            ).rowcount
            if moved != 1:
                return False
            if records:
                self._summarize(conn, run_id)  # first, for a run an older version stored rows of
                conn.execute(metrics.insert(), records)
                self._fold(conn, run_id, records)
            if warnings:
                self._add_warnings(conn, run_id, warnings)
        return True

    def add_warnings(self, run_id: str, warnings: list[dict[str, Any]]) -> None:
        """Merge warning entries into the run's (see :func:`run_warnings.merge`)."""
        if warnings:
            with self.engine.begin() as conn:
                self._add_warnings(conn, run_id, warnings)

    @staticmethod
    def _add_warnings(conn: sa.Connection, run_id: str, warnings: list[dict[str, Any]]) -> None:
        # Read and written in one write transaction: SQLite's BEGIN IMMEDIATE serializes it; on
        # PostgreSQL the row lock of FOR UPDATE does.
        query = sa.select(runs.c.warnings).where(runs.c.id == run_id)
        if conn.dialect.name != "sqlite":
            query = query.with_for_update()
        row = conn.execute(query).first()
        if row is None:
            return
        current = run_warnings.decode(row[0])
        merged = run_warnings.merge(current, warnings)
        if merged != current:
            conn.execute(runs.update().where(runs.c.id == run_id).values(warnings=json.dumps(merged)))

    def get_metric_rows(self, run_id: str, name: str | None = None) -> list[dict[str, Any]]:
        query = sa.select(metrics).where(metrics.c.run_id == run_id).order_by(metrics.c.seq)
        if name is not None:
            query = query.where(metrics.c.name == name)
        with self.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(query)]

    # Readers that must stay bounded however many values a run logged (the UI, the API): the
    # database aggregates, pages and picks; only what is shown travels into Python.

    def _numeric_value(self) -> Any:
        """The metric value as a float when it is a plain JSON number, else NULL (strings, lists,
        booleans, NaN), in SQL: matched as text before the cast, as PostgreSQL refuses a bad cast."""
        value = metrics.c.value
        # Values are JSON written by json.dumps, so a number is what starts with a digit or with
        # "-" and a digit (not "-Infinity"); more than 300 digits would overflow a float.
        is_number: sa.ColumnElement[bool]
        if self.engine.dialect.name == "sqlite":  # GLOB is native; REGEXP would call Python per row
            is_number = sa.or_(value.op("GLOB")("[0-9]*"), value.op("GLOB")("-[0-9]*"))
        else:
            is_number = value.regexp_match(r"^-?[0-9]")
        return sa.case(
            (sa.and_(is_number, sa.func.length(value) <= 300), sa.cast(value, sa.Float)), else_=None
        )

    # -- summaries kept at ingestion (core/metric_summary.py) ------------------------------------

    @staticmethod
    def _fold(conn: sa.Connection, run_id: str, rows: list[dict[str, Any]]) -> None:
        """Fold new rows (in seq order) into their series' stored summaries and blocks."""
        names = sorted({r["name"] for r in rows})
        series: dict[tuple[str, str], dict[str, Any]] = {}
        open_blocks: dict[tuple[str, str], dict[str, Any]] = {}
        for chunk in range(0, len(names), 500):
            found = conn.execute(
                sa.select(metric_series).where(
                    metric_series.c.run_id == run_id, metric_series.c.name.in_(names[chunk : chunk + 500])
                )
            )
            for r in found:
                data = dict(r._mapping)
                series[(data.pop("name"), data.pop("kind"))] = data
        for (name, kind), data in series.items():
            if data["rows"] % metric_summary.BLOCK:
                row = conn.execute(
                    sa.select(metric_blocks).where(
                        metric_blocks.c.run_id == run_id,
                        metric_blocks.c.name == name,
                        metric_blocks.c.kind == kind,
                        metric_blocks.c.block == data["rows"] // metric_summary.BLOCK,
                    )
                ).first()
                if row is not None:
                    open_blocks[(name, kind)] = dict(row._mapping)
        touched, blocks = metric_summary.fold(rows, series, open_blocks)
        stored_blocks = {(b["name"], b["kind"], b["block"]) for b in open_blocks.values()}
        _upsert(
            conn,
            metric_series,
            run_id,
            [{"name": k[0], "kind": k[1], **v} for k, v in touched.items()],
            existing={(k[0], k[1]) for k in touched if k in series},
            keys=("name", "kind"),
        )
        _upsert(conn, metric_blocks, run_id, blocks, existing=stored_blocks, keys=("name", "kind", "block"))

    def _summarize(self, conn: sa.Connection, run_id: str) -> None:
        """Build the summaries of a run whose rows an older version stored (``summarized`` NULL),
        from its rows, once; in the caller's write transaction."""
        query = sa.select(runs.c.summarized).where(runs.c.id == run_id)
        if conn.dialect.name != "sqlite":
            query = query.with_for_update()
        row = conn.execute(query).first()
        if row is None or row[0]:
            return
        conn.execute(metric_series.delete().where(metric_series.c.run_id == run_id))
        conn.execute(metric_blocks.delete().where(metric_blocks.c.run_id == run_id))
        after = -1
        while True:  # pages by seq: no cursor left open while the fold writes
            batch = [
                dict(r)
                for r in conn.execute(
                    sa.select(
                        metrics.c.name,
                        metrics.c.kind,
                        metrics.c.seq,
                        metrics.c.step,
                        metrics.c.value,
                        metrics.c.logged_at,
                    )
                    .where(metrics.c.run_id == run_id, metrics.c.seq > after)
                    .order_by(metrics.c.seq)
                    .limit(20_000)
                ).mappings()
            ]
            if not batch:
                break
            self._fold(conn, run_id, batch)
            after = batch[-1]["seq"]
        conn.execute(runs.update().where(runs.c.id == run_id).values(summarized=True))

    def _summarized(self, run_id: str) -> None:
        """Readers call this first: builds missing summaries (see :meth:`_summarize`) once."""
        with self.engine.connect() as conn:
            done = conn.execute(sa.select(runs.c.summarized).where(runs.c.id == run_id)).scalar()
        if done is None and self.get_run(run_id) is not None:
            with self.engine.begin() as conn:
                self._summarize(conn, run_id)

    def _series_query(self, run_id: str) -> sa.Select:
        return sa.select(metric_series).where(
            metric_series.c.run_id == run_id, metric_series.c.kind.notin_(("tags", "properties"))
        )

    def metric_summaries(self, run_id: str, limit: int | None = None) -> list[dict[str, Any]]:
        """Per metric name and kind: rows, numeric values, their min, max and last, first and last seq
        (and step and time of the numeric values). Tags and property records are left out. At most
        ``limit`` names (the first logged). Read from the summaries kept at ingestion: one row per
        series, whatever the run's size."""
        self._summarized(run_id)
        query = self._series_query(run_id).order_by(metric_series.c.first_seq)
        if limit:
            query = query.limit(limit)
        with self.engine.connect() as conn:
            out = [dict(r._mapping) for r in conn.execute(query)]
        for r in out:
            del r["run_id"], r["last_num_seq"]
        return out

    def series_summaries(
        self, run_ids: Sequence[str], name: str, kind: str = "scalar"
    ) -> dict[str, dict[str, Any]]:
        """:meth:`metric_summaries`' row of one series (``name``, ``kind``) for each of many runs
        that logged it, by run id: a few queries whatever the number of runs (a sweep's children)."""
        out: dict[str, dict[str, Any]] = {}
        for i in range(0, len(run_ids), 500):
            chunk = list(run_ids[i : i + 500])
            with self.engine.connect() as conn:
                older = [
                    r[0]
                    for r in conn.execute(
                        sa.select(runs.c.id).where(runs.c.id.in_(chunk), runs.c.summarized.is_(None))
                    )
                ]
            for run_id in older:
                self._summarized(run_id)
            query = sa.select(metric_series).where(
                metric_series.c.run_id.in_(chunk), metric_series.c.name == name, metric_series.c.kind == kind
            )
            with self.engine.connect() as conn:
                for r in conn.execute(query):
                    row = dict(r._mapping)
                    del row["last_num_seq"]
                    out[row.pop("run_id")] = row
        return out

    def series_buckets(
        self, run_ids: Sequence[str], name: str, buckets: int, kind: str = "scalar"
    ) -> dict[str, list[dict[str, Any]]]:
        """One series' values in at most ``buckets`` buckets (as :meth:`metric_overview` gives
        them) for each of many runs, by run id, from the blocks kept at ingestion: one query per
        500 runs. Call :meth:`series_summaries` first (it builds an older run's summaries)."""
        out: dict[str, list[dict[str, Any]]] = {}
        for i in range(0, len(run_ids), 500):
            query = (
                sa.select(metric_blocks)
                .where(
                    metric_blocks.c.run_id.in_(list(run_ids[i : i + 500])),
                    metric_blocks.c.name == name,
                    metric_blocks.c.kind == kind,
                )
                .order_by(metric_blocks.c.run_id, metric_blocks.c.block)
            )
            blocks: dict[str, list[dict[str, Any]]] = {}
            with self.engine.connect() as conn:
                for b in conn.execute(query).mappings():
                    blocks.setdefault(b["run_id"], []).append(dict(b))
            for run_id, found in blocks.items():
                out[run_id] = metric_summary.buckets(found, buckets)
        return out

    def series_rows(
        self, run_ids: Sequence[str], name: str, kind: str = "scalar"
    ) -> dict[str, list[dict[str, Any]]]:
        """Every row of one series for each of many runs, by run id, in logging order: for runs
        whose series are short (the caller knows their length from :meth:`series_summaries`)."""
        out: dict[str, list[dict[str, Any]]] = {}
        for i in range(0, len(run_ids), 500):
            query = (
                sa.select(metrics.c.run_id, metrics.c.step, metrics.c.value, metrics.c.logged_at)
                .where(
                    metrics.c.run_id.in_(list(run_ids[i : i + 500])),
                    metrics.c.name == name,
                    metrics.c.kind == kind,
                )
                .order_by(metrics.c.run_id, metrics.c.seq)
            )
            with self.engine.connect() as conn:
                for r in conn.execute(query).mappings():
                    out.setdefault(r["run_id"], []).append(dict(r))
        return out

    def metric_names(self, run_id: str, limit: int | None = None) -> list[str]:
        """Names the run logged metrics under (tags and properties left out), sorted."""
        self._summarized(run_id)
        query = (
            sa.select(metric_series.c.name)
            .where(metric_series.c.run_id == run_id, metric_series.c.kind.notin_(("tags", "properties")))
            .distinct()
            .order_by(metric_series.c.name)
        )
        if limit:
            query = query.limit(limit)
        with self.engine.connect() as conn:
            return [r[0] for r in conn.execute(query)]

    def metric_overview(self, run_id: str, buckets: int, limit: int) -> list[dict[str, Any]]:
        """:meth:`metric_summaries` of the first ``limit`` metrics by name, each with its numeric
        values in at most ``buckets`` buckets of consecutive values (``buckets``: count, min, max,
        first and last step and time), read from the blocks kept at ingestion: a series of a
        million values costs ``1,000,000 / metric_summary.BLOCK`` small rows."""
        self._summarized(run_id)
        query = self._series_query(run_id).order_by(metric_series.c.name, metric_series.c.kind).limit(limit)
        with self.engine.connect() as conn:
            series = [dict(r._mapping) for r in conn.execute(query)]
            for entry in series:
                blocks = conn.execute(
                    sa.select(metric_blocks)
                    .where(
                        metric_blocks.c.run_id == run_id,
                        metric_blocks.c.name == entry["name"],
                        metric_blocks.c.kind == entry["kind"],
                    )
                    .order_by(metric_blocks.c.block)
                ).mappings()
                entry["buckets"] = metric_summary.buckets([dict(b) for b in blocks], buckets)
                del entry["run_id"], entry["last_num_seq"]
        return sorted(series, key=lambda e: e["first_seq"])

    def last_numeric(self, run_id: str, name: str) -> float | None:
        """The last plain number logged under ``name``, or None."""
        self._summarized(run_id)
        query = (
            sa.select(metric_series.c.last)
            .where(
                metric_series.c.run_id == run_id,
                metric_series.c.name == name,
                metric_series.c.last_num_seq.isnot(None),
            )
            .order_by(metric_series.c.last_num_seq.desc())
            .limit(1)
        )
        with self.engine.connect() as conn:
            row = conn.execute(query).first()
        return None if row is None else float(row[0])

    def metric_page(
        self,
        run_id: str,
        name: str,
        offset: int = 0,
        limit: int = 1000,
        kind: str | None = None,
        non_numeric: bool = False,
        seqs: tuple[int, int] | None = None,
    ) -> list[dict[str, Any]]:
        """Rows ``offset`` to ``offset + limit`` of one metric in logging order (with
        ``non_numeric``, only those whose value is not a plain number). ``seqs``, the first and
        last seq of the metric when known, keeps the scan to that range of the run's rows."""
        query = (
            sa.select(metrics)
            .where(metrics.c.run_id == run_id, metrics.c.name == name)
            .order_by(metrics.c.seq)
            .offset(max(0, offset))
            .limit(max(0, limit))
        )
        if kind is not None:
            query = query.where(metrics.c.kind == kind)
        if non_numeric:
            query = query.where(self._numeric_value().is_(None))
        if seqs is not None:
            query = query.where(metrics.c.seq.between(*seqs))
        with self.engine.connect() as conn:
            if offset >= metric_summary.BLOCK and not non_numeric:
                # Jump to the block that holds value ``offset``: its first seq bounds the scan, so a
                # late page costs one block, not every row before it.
                start = self._block_start(conn, run_id, name, kind, offset // metric_summary.BLOCK)
                if start is not None:
                    query = query.where(metrics.c.seq >= start).offset(offset % metric_summary.BLOCK)
            return [dict(r._mapping) for r in conn.execute(query)]

    def _block_start(
        self, conn: sa.Connection, run_id: str, name: str, kind: str | None, block: int
    ) -> int | None:
        """The first seq of block ``block`` of the series ``name`` (of ``kind``), when the name has
        one kind only (blocks count values per kind) and its summaries are kept."""
        kinds = conn.execute(
            sa.select(metric_series.c.kind).where(
                metric_series.c.run_id == run_id, metric_series.c.name == name
            )
        ).all()
        if len(kinds) != 1 or (kind is not None and kinds[0][0] != kind):
            return None
        if not conn.execute(sa.select(runs.c.summarized).where(runs.c.id == run_id)).scalar():
            return None
        return conn.execute(
            sa.select(metric_blocks.c.first_seq).where(
                metric_blocks.c.run_id == run_id,
                metric_blocks.c.name == name,
                metric_blocks.c.kind == kinds[0][0],
                metric_blocks.c.block == block,
            )
        ).scalar()

    # -- environments ------------------------------------------------------------------------------

    def register_environment(self, name: str, content_hash: str, spec: dict[str, Any]) -> str:
        """The version for this spec under ``name``: the latest one if the spec is the same, else the next."""
        with self.engine.begin() as conn:
            rows = conn.execute(
                sa.select(environments.c.version, environments.c.hash, environments.c.spec)
                .where(environments.c.name == name)
                .order_by(environments.c.version.desc())
            ).all()
            if rows:
                latest = json.loads(rows[0].spec)
                latest.pop("version", None)
                if rows[0].hash == content_hash and latest == {
                    k: v for k, v in spec.items() if k != "version"
                }:
                    return str(rows[0].version)
            version = (rows[0].version + 1) if rows else 1
            spec = {**spec, "version": str(version)}
            conn.execute(
                environments.insert().values(
                    name=name,
                    version=version,
                    hash=content_hash,
                    spec=json.dumps(spec),
                    created_at=time.time(),
                )
            )
            return str(version)

    def get_environment(self, name: str, version: str | None = None) -> dict[str, Any] | None:
        query = sa.select(environments).where(environments.c.name == name)
        if version is not None:
            try:
                query = query.where(environments.c.version == int(version))
            except ValueError:
                return None
        query = query.order_by(environments.c.version.desc()).limit(1)
        with self.engine.connect() as conn:
            row = conn.execute(query).first()
        if row is None:
            return None
        data = dict(row._mapping)
        data["spec"] = json.loads(data["spec"])
        data["version"] = str(data["version"])
        return data

    def environment_names(self) -> list[str]:
        with self.engine.connect() as conn:
            return sorted(r[0] for r in conn.execute(sa.select(environments.c.name).distinct()))

    def record_build(
        self,
        content_hash: str,
        target: str,
        status: str,
        seconds: float | None = None,
        error: str | None = None,
        run_id: str | None = None,
    ) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                environment_builds.insert().values(
                    hash=content_hash,
                    target=target,
                    run_id=run_id,
                    status=status,
                    seconds=seconds,
                    error=error,
                    created_at=time.time(),
                )
            )

    def list_builds(self, content_hash: str | None = None) -> list[dict[str, Any]]:
        query = sa.select(environment_builds).order_by(environment_builds.c.id)
        if content_hash is not None:
            query = query.where(environment_builds.c.hash == content_hash)
        with self.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(query)]

    # -- the model registry --------------------------------------------------------------------

    def add_model_version(self, name: str, record: dict[str, Any]) -> int:
        """Store a new version of model ``name`` and return its number: one more than the
        highest so far. Two registrations at once (threads, processes, hosts) never share a
        number: the primary key refuses the second insert, which re-reads and tries again. A
        ``request`` key already stored returns the version it made instead of adding one."""
        values = {
            **record,
            "tags": json.dumps(record.get("tags") or {}, sort_keys=True),
            "properties": json.dumps(record.get("properties") or {}, sort_keys=True),
            "files": json.dumps(record["files"]),
            "created_at": record.get("created_at") or time.time(),
        }
        request = record.get("request")
        for attempt in range(_VERSION_ATTEMPTS):
            try:
                with self.engine.begin() as conn:
                    if request is not None:
                        done = conn.execute(
                            sa.select(models.c.version).where(
                                models.c.name == name, models.c.request == request
                            )
                        ).scalar()
                        if done is not None:
                            return int(done)
                    latest = conn.execute(
                        sa.select(sa.func.max(models.c.version)).where(models.c.name == name)
                    ).scalar()
                    version = (latest or 0) + 1
                    conn.execute(models.insert().values(name=name, version=version, **values))
                return version
            except IntegrityError:
                if attempt == _VERSION_ATTEMPTS - 1:
                    raise
                time.sleep(0.005 * (attempt + 1))
        raise AssertionError("unreachable")

    def get_model_version(
        self, name: str, version: int | None = None, alias: str | None = None
    ) -> dict[str, Any] | None:
        """One version of a model: ``version``, the one ``alias`` names, or the latest."""
        query = sa.select(models).where(models.c.name == name)
        with self.engine.connect() as conn:
            if alias is not None:
                version = conn.execute(
                    sa.select(model_aliases.c.version).where(
                        model_aliases.c.name == name, model_aliases.c.alias == alias
                    )
                ).scalar()
                if version is None:
                    return None
            if version is not None:
                query = query.where(models.c.version == version)
            row = conn.execute(query.order_by(models.c.version.desc()).limit(1)).first()
        return _decode_model(row) if row else None

    def list_model_versions(
        self, name: str | None = None, run_id: str | None = None, limit: int | None = None
    ) -> list[dict[str, Any]]:
        """Model versions by name, newest version first."""
        query = sa.select(models).order_by(models.c.name, models.c.version.desc())
        if name is not None:
            query = query.where(models.c.name == name)
        if run_id is not None:
            query = query.where(models.c.run_id == run_id)
        if limit:
            query = query.limit(limit)
        with self.engine.connect() as conn:
            return [_decode_model(r) for r in conn.execute(query)]

    def model_aliases(self, name: str | None = None) -> list[dict[str, Any]]:
        query = sa.select(model_aliases).order_by(model_aliases.c.name, model_aliases.c.alias)
        if name is not None:
            query = query.where(model_aliases.c.name == name)
        with self.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(query)]

    def set_model_alias(self, name: str, alias: str, version: int) -> int | None:
        """Point ``alias`` of model ``name`` at ``version`` in one transaction; returns the version
        it named before (None: a new alias). Raises :class:`ModelVersionMissing` for a version
        that is not registered. Readers see the old version or the new one, never no version."""
        for attempt in range(_VERSION_ATTEMPTS):
            try:
                with self.engine.begin() as conn:
                    exists = conn.execute(
                        sa.select(models.c.version).where(models.c.name == name, models.c.version == version)
                    ).first()
                    if exists is None:
                        raise ModelVersionMissing(f"{name}:{version}")
                    where = (model_aliases.c.name == name, model_aliases.c.alias == alias)
                    before = conn.execute(sa.select(model_aliases.c.version).where(*where)).scalar()
                    if before is None:
                        conn.execute(
                            model_aliases.insert().values(
                                name=name, alias=alias, version=version, updated_at=time.time()
                            )
                        )
                    else:
                        conn.execute(
                            model_aliases.update()
                            .where(*where)
                            .values(version=version, updated_at=time.time())
                        )
                    return before
            except IntegrityError:  # another process created the alias between our read and insert
                if attempt == _VERSION_ATTEMPTS - 1:
                    raise
                time.sleep(0.005 * (attempt + 1))
        raise AssertionError("unreachable")

    def delete_model_alias(self, name: str, alias: str) -> bool:
        with self.engine.begin() as conn:
            result = conn.execute(
                model_aliases.delete().where(model_aliases.c.name == name, model_aliases.c.alias == alias)
            )
        return bool(result.rowcount)
