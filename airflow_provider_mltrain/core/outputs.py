"""Run outputs: ``outputs={"model": "s3://bucket/models/2026-11-30/"}`` uploads the run's
``./outputs/model/`` there once the run ended and its files were collected.

The upload happens where the run is collected (the follower: the submitting process, the
operator's task or trigger, the CLI), from the collected copy, once per run: the result is recorded
in the run's ``mltrain.outputs`` property, which a second follower reads and leaves alone.
Credentials: ``Output(url, conn_id=...)`` (an Airflow connection, which every follower can resolve),
or ``storage_options`` (kept in the submitting process only), or the backend's defaults.
"""

from __future__ import annotations

import json
import logging
import os
import posixpath
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from airflow_provider_mltrain.core.inputs import NAME_RE, InputError, _filesystem, _redact

logger = logging.getLogger(__name__)

OUTPUTS_PROPERTY = "mltrain.outputs"
# storage_options given in this process, by run id: never written to the run store (secrets).
_options: dict[str, dict[str, dict[str, Any]]] = {}


class OutputError(InputError):
    """An output of the run cannot be used as given, or a required one was not written."""


@dataclass
class Output:
    """Where the run's ``./outputs/<name>/`` goes after the run; ``required=False`` makes a
    missing or empty folder a warning instead of an error. ``destination`` is rendered by Airflow
    when the Output is in a templated field (``{{ ds }}``)."""

    template_fields: ClassVar[tuple[str, ...]] = ("destination",)

    destination: str
    required: bool = True
    storage_options: dict[str, Any] | None = None
    conn_id: str | None = None


def output_env_name(name: str) -> str:
    return f"MLTRAIN_OUTPUT_{name.upper()}"


def normalize_outputs(raw: Any) -> dict[str, Output]:
    """Check names and URLs without I/O: a scheme fsspec does not know is refused here."""
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise OutputError(
            f"ScriptRunConfig outputs must be a dict of output names to URLs or Output objects, got "
            f"{type(raw).__name__}."
        )
    out: dict[str, Output] = {}
    seen: dict[str, str] = {}
    for name, value in raw.items():
        if not isinstance(name, str) or not NAME_RE.fullmatch(name):
            raise OutputError(
                f"ScriptRunConfig outputs: the name {name!r} is not valid: use letters, digits and '_', "
                "starting with a letter or '_'."
            )
        if name.upper() in seen:
            raise OutputError(
                f"ScriptRunConfig outputs: {seen[name.upper()]!r} and {name!r} would share "
                f"{output_env_name(name)}: rename one."
            )
        seen[name.upper()] = name
        item = value if isinstance(value, Output) else Output(value)
        dest = os.fspath(item.destination) if isinstance(item.destination, os.PathLike) else item.destination
        if not isinstance(dest, str) or "://" not in dest:
            raise OutputError(
                f"ScriptRunConfig outputs[{name!r}] must be an object-store URL (s3://bucket/prefix/), "
                f"got {dest!r}. The run's ./outputs/ is collected in any case."
            )
        if _redact(dest) != dest:
            raise OutputError(
                f"ScriptRunConfig outputs[{name!r}]: put no credentials in the URL (they would be "
                "recorded with the run): use Output(url, conn_id=...) or storage_options."
            )
        if "{{" in dest:
            raise OutputError(
                f"ScriptRunConfig outputs[{name!r}] {dest!r} holds an unrendered template: render it "
                "(ScriptRunOperator does) before submitting."
            )
        scheme = dest.split("://", 1)[0].lower()
        _filesystem(name, _as_input(item), dest, scheme)  # unknown scheme, missing backend: now
        out[name] = Output(dest, bool(item.required), item.storage_options, item.conn_id)
    return out


def _as_input(item: Output) -> Any:
    from airflow_provider_mltrain.core.inputs import Input

    return Input(item.destination, storage_options=item.storage_options, conn_id=item.conn_id)


def environment(outputs: Iterable[str]) -> dict[str, str]:
    """The variables naming each output's folder (relative to the script's working folder); takes
    the outputs' names (a dict of outputs gives its keys)."""
    env = {output_env_name(name): f"outputs/{name}" for name in outputs}
    if outputs:
        env["MLTRAIN_OUTPUTS"] = json.dumps({name: f"outputs/{name}" for name in outputs})
    return env


def placeholder_values(outputs: Iterable[str]) -> dict[str, str]:
    return {name: f"outputs/{name}" for name in outputs}


def recorded(run_id: str, outputs: Mapping[str, Output]) -> str:
    """The ``mltrain.outputs`` property at submission (no credentials); remembers this process's
    ``storage_options`` for the upload."""
    _options[run_id] = {n: dict(o.storage_options) for n, o in outputs.items() if o.storage_options}
    return json.dumps(
        [
            {"name": n, "uri": o.destination, "required": o.required, "conn_id": o.conn_id}
            for n, o in outputs.items()
        ]
    )


def upload(
    run_id: str, properties: dict[str, Any], collected: Path
) -> tuple[str | None, list[str], list[str]]:
    """Upload each declared output from the collected copy.

    Returns the new property value (None: nothing declared, or done before), warnings, and errors
    (a required output the script never wrote). Store errors propagate: the caller retries.
    """
    raw = properties.get(OUTPUTS_PROPERTY)
    if not raw:
        return None, [], []
    entries = json.loads(raw)
    if not isinstance(entries, list) or all("uploaded" in e for e in entries):
        return None, [], []
    warnings: list[str] = []
    errors: list[str] = []
    for entry in entries:
        if "uploaded" in entry:
            continue
        name = entry["name"]
        folder = collected / "outputs" / name
        files = _files(folder)
        if not files:
            entry.update(uploaded=False, files=0, size=0)
            text = (
                f"output {name!r}: the script wrote nothing to outputs/{name}/ (MLTRAIN_OUTPUT_"
                f"{name.upper()}), so nothing was uploaded to {entry['uri']}"
            )
            (errors if entry.get("required", True) else warnings).append(text)
            continue
        dest = entry["uri"]
        options = _options.get(run_id, {}).get(name)
        scheme = dest.split("://", 1)[0].lower()
        fs = _filesystem(
            name, _as_input(Output(dest, storage_options=options, conn_id=entry.get("conn_id"))), dest, scheme
        )
        base = fs._strip_protocol(dest).rstrip("/")
        local = "file" in (fs.protocol if isinstance(fs.protocol, (tuple, list)) else (fs.protocol,))
        size = 0
        for rel, full in files:
            if local:  # a folder, unlike an object store's prefix, must exist before its files
                fs.makedirs(posixpath.dirname(f"{base}/{rel}"), exist_ok=True)
            fs.put_file(str(full), f"{base}/{rel}")
            size += full.stat().st_size
        entry.update(uploaded=True, files=len(files), size=size)
        logger.info("Run %s: output %s uploaded to %s (%d files)", run_id, name, entry["uri"], len(files))
    return json.dumps(entries), warnings, errors


def _files(folder: Path) -> list[tuple[str, Path]]:
    """Regular files under ``folder``; links the script made are not followed or uploaded."""
    if folder.is_symlink() or not folder.is_dir():
        return []
    out = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not os.path.islink(os.path.join(dirpath, d)))
        for fname in sorted(filenames):
            full = Path(dirpath) / fname
            if full.is_file() and not full.is_symlink():
                out.append((full.relative_to(folder).as_posix(), full))
    return out


def records(properties: Mapping[str, Any]) -> list[dict[str, Any]]:
    raw = properties.get(OUTPUTS_PROPERTY)
    try:
        value = json.loads(raw) if raw else []
    except ValueError:
        return []
    return [e for e in value if isinstance(e, dict)] if isinstance(value, list) else []
