"""Response shapes of the ``/mltrain/api`` JSON API: its OpenAPI schema says what each route returns.

Routes return the plain dicts of :mod:`queries`; FastAPI validates them against these models and
drops any key a model does not list (so a server-side field never leaks by accident).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class Experiment(BaseModel):
    name: str
    runs: int
    active: int = Field(description="runs not in a terminal state")
    statuses: dict[str, int] = Field(description="number of runs per status")
    runs_with_warnings: int = Field(description="runs that have warnings (malformed metric lines, ...)")
    last_run_id: str
    last_run_at: float = Field(description="creation time of the latest run, Unix seconds")


class RunRow(BaseModel):
    run_id: str
    experiment: str
    status: str
    active: bool
    target: str
    environment: str = Field(description="name:version")
    script: str
    created_at: float
    start_time: float | None
    end_time: float | None
    duration_seconds: float | None
    tags: dict[str, Any]
    metric: float | None = Field(description="last numeric value of the chosen metric")
    warnings: list[str] = Field(description="problems the run had that did not stop it")
    sweep: bool = Field(description="the run is a sweep's parent: its page is /sweeps/{run_id}")
    parent: str | None = Field(description="the parent run's id, for a sweep's child or a script-made child")
    children: int = Field(description="child runs of this run")


class RunList(BaseModel):
    experiment: str
    metric: str | None = Field(description="the metric column")
    metric_names: list[str] = Field(description="numeric metrics the runs logged")
    total: int = Field(description="runs matching the filters")
    children_hidden: int = Field(description="child runs left out because their parent is listed")
    active: bool
    runs: list[RunRow]


class RunEvent(BaseModel):
    status: str
    at: float
    detail: str | None


class RunLink(BaseModel):
    path: str
    target: str = Field(description="the text the link holds; what it points to is not read")


class RunDetails(BaseModel):
    run_id: str
    experiment: str
    status: str
    active: bool
    target: str
    source_directory: str
    script: str
    arguments: list[str]
    snapshot_id: str
    environment: dict[str, Any]
    packages: list[str] = Field(description="the packages resolved in the run's environment")
    tags: dict[str, Any]
    properties: dict[str, Any]
    git: dict[str, Any] = Field(description="mltrain.git.* properties without their prefix")
    airflow: dict[str, Any] | None = Field(description="the task that submitted the run, if any")
    created_at: str | None
    start_time: str | None
    end_time: str | None
    duration_seconds: float | None
    state_times: dict[str, str | None]
    events: list[RunEvent]
    exit_code: int | None
    error: str | None
    inputDatasets: list[dict[str, Any]] = Field(
        default_factory=list,
        description="the run's inputs: name, uri, mode, version (ETag), size, files, sha256, path",
    )
    outputDatasets: list[dict[str, Any]] = Field(
        default_factory=list,
        description="the run's declared outputs: name, uri, required; uploaded, files, size once done",
    )
    warnings: list[str] = Field(
        description="problems the run had that did not stop it, one per class with a count "
        "(malformed metric lines skipped, reserved properties ignored, the runner's own)"
    )
    files: list[str] = Field(
        description="the first page of the run's regular files under outputs/ and logs/ (see /files)"
    )
    files_total: int = Field(description="how many files the run has")
    files_offset: int
    files_next_offset: int | None
    links: list[RunLink] = Field(
        description="symbolic links the script left there: listed, never followed or served"
    )
    metric_names: list[str]
    log_size: int


class MetricPoint(BaseModel):
    step: int | None
    time: float
    value: float


class MetricSeries(BaseModel):
    kind: str
    points: list[MetricPoint] = Field(
        description="numeric values; when `downsampled`, the min and max of each run of consecutive values"
    )
    values: list[Any] = Field(description="values that are not numbers (the first 100)")
    count: int = Field(0, description="numeric values logged (all of them, also when downsampled)")
    downsampled: bool = Field(
        False, description="points stand for more values: page them with /metric-values"
    )


class MetricValue(BaseModel):
    step: int | None
    time: float
    kind: str
    value: Any = Field(description="as logged")


class MetricPage(BaseModel):
    run_id: str
    name: str
    offset: int
    next_offset: int | None = Field(description="ask from here for the next page; null at the end")
    values: list[MetricValue]


class LogPage(BaseModel):
    run_id: str
    offset: int
    next_offset: int = Field(description="ask from here for the next page")
    size: int
    eof: bool
    active: bool = Field(description="the run may still write to its log")
    text: str


class FilePage(BaseModel):
    run_id: str
    offset: int
    total: int = Field(description="files the run has")
    next_offset: int | None = Field(description="ask from here for the next page; null at the end")
    files: list[str] = Field(description="names under outputs/ and logs/, sorted")


class SnapshotFile(BaseModel):
    path: str
    size: int | None
    mode: str | None
    link: str | None = Field(description="target of a symbolic link")


class SnapshotFiles(BaseModel):
    snapshot_id: str
    files: list[SnapshotFile]


class MetricStats(BaseModel):
    last: float
    min: float
    max: float
    count: int


class CompareRow(BaseModel):
    name: str
    runs: dict[str, MetricStats | None]


class SnapshotDiff(BaseModel):
    base: str
    other: str
    added: list[str]
    removed: list[str]
    changed: list[str]


class ParameterRow(BaseModel):
    group: str = Field(description="argument, tag, property or environment")
    name: str = Field(description="`--lr` for an option, `#1` for the first positional argument")
    values: dict[str, str | None] = Field(description="run id: value (null: the run has none)")
    differs: bool


class Comparison(BaseModel):
    run_ids: list[str] = Field(description="oldest first")
    runs: list[RunRow]
    metrics: list[CompareRow]
    series: dict[str, dict[str, MetricSeries]]
    snapshot_diffs: list[SnapshotDiff] = Field(description="the oldest run against each other run")
    parameters: list[ParameterRow] = Field(
        default=[], description="arguments (parsed as options), tags, properties, environment of each run"
    )


class Canceled(BaseModel):
    run_id: str
    status: str = Field(
        description="the run's status after the cancel: Canceled, or the state it had ended in"
    )


class FileDiff(BaseModel):
    base: str
    other: str
    path: str
    binary: bool
    diff: str = Field(description="unified diff")


class TaskInstanceRuns(BaseModel):
    run_id: str = Field(description="the latest run")
    runs: list[str]


class ModelSummary(BaseModel):
    name: str
    versions: int = Field(description="versions the user may read")
    latest_version: int
    latest_run_id: str | None = Field(description="the run that made the latest version")
    latest_created_at: float
    aliases: dict[str, int] = Field(description="alias -> version")


class ModelVersion(BaseModel):
    version: int
    id: str = Field(description="name:version")
    aliases: list[str]
    run_id: str | None = Field(description="the run that made it; None for local files")
    run_status: str | None
    experiment: str | None
    model_path: str
    description: str | None
    tags: dict[str, str]
    created_at: float
    files: int
    size: int = Field(description="bytes")
    metrics: dict[str, float] = Field(description="the source run's final numeric metrics")


class ModelDetails(BaseModel):
    name: str
    aliases: dict[str, int] = Field(description="alias -> version")
    metric_names: list[str]
    versions: list[ModelVersion] = Field(description="newest first")


class SweepChild(BaseModel):
    run_id: str
    index: int = Field(description="the child's index in the sweep, 0-based")
    rank: int = Field(description="1 for the best child by the primary metric")
    best: bool = Field(description="the best child (the one that logged the best primary metric)")
    status: str
    hyperparameters: dict[str, Any] = Field(description='as passed to the script: {"--lr": 0.01}')
    best_primary_metric: float | None = Field(description="the child's best value of the primary metric")
    values_logged: int = Field(description="numeric values of the primary metric the child logged")
    early_terminated: str | None = Field(description="why the sweep's policy stopped the child, if it did")


class SweepDetails(BaseModel):
    run_id: str
    experiment: str
    status: str
    active: bool
    created_at: float
    error: str | None
    warnings: list[str]
    definition: dict[str, Any] = Field(description="the sweep's recorded definition (mltrain.sweep)")
    sampling: str | None = Field(description="grid, random or bayesian")
    parameter_space: dict[str, Any] = Field(description='name -> ["choice", 16, 32] and the like')
    policy: str = Field(description="bandit, median, truncation or none")
    policy_settings: dict[str, Any]
    primary_metric_name: str
    primary_metric_goal: str = Field(description="MAXIMIZE or MINIMIZE")
    children_total: int
    early_terminated: int = Field(description="children the policy stopped")
    statuses: dict[str, int] = Field(description="number of children per status")
    best_run_id: str | None
    best_primary_metric: float | None
    offset: int
    next_offset: int | None = Field(description="offset of the next page of children; null on the last")
    children: list[SweepChild] = Field(description="one page of the children, best first")
