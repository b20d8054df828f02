"""ScriptRunConfig: what to run (folder, script, arguments), where, and in which environment."""

from __future__ import annotations

import difflib
import numbers
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow_provider_mltrain.core.environment import Environment
from airflow_provider_mltrain.core.errors import InvalidRunConfig

if TYPE_CHECKING:
    from airflow_provider_mltrain.core.compute import ComputeTarget


def type_error(field: str, value: Any, wanted: str, hint: str = "") -> InvalidRunConfig:
    """The error for a value of the wrong type: names the field, the type given and the one expected."""
    shown = repr(value)
    if len(shown) > 80:
        shown = shown[:77] + "..."
    return InvalidRunConfig(f"{field} must be {wanted}, got {shown} ({type(value).__name__}).{hint}")


def check_type(
    field: str, value: Any, expected: type | tuple[type, ...], wanted: str, hint: str = ""
) -> None:
    """Raise :func:`type_error` unless ``value`` is an ``expected`` (a bool is no number here)."""
    if isinstance(value, bool) and bool not in (expected if isinstance(expected, tuple) else (expected,)):
        raise type_error(field, value, wanted, hint)
    if not isinstance(value, expected):
        raise type_error(field, value, wanted, hint)


def check_str_keys(field: str, value: Any, wanted: str, hint: str = "") -> None:
    check_type(field, value, Mapping, wanted, hint)
    for key in value:
        if not isinstance(key, str):
            raise InvalidRunConfig(
                f"{field} must be {wanted}; its key {key!r} is {type(key).__name__}, not str."
            )


PATH_TYPES = (str, os.PathLike)
TAG_VALUE_TYPES = (str, int, float, bool, type(None))


def check_tags(field: str, tags: Any, hint: str = "", kind: str = "tag") -> None:
    """Tags (or properties): a mapping of names to strings or numbers (None records "")."""
    wanted = f"a dict of {kind} names to strings or numbers"
    check_str_keys(field, tags, wanted, hint)
    for key, value in tags.items():
        if not isinstance(value, TAG_VALUE_TYPES):
            raise InvalidRunConfig(
                f"{field}[{key!r}] must be a string or number, got {value!r:.80} ({type(value).__name__})."
            )


@dataclass
class ScriptRunConfig:
    source_directory: str | os.PathLike[str]
    script: str
    arguments: Sequence[Any] = ()
    compute_target: str | ComputeTarget = "local"
    environment: Environment | str | os.PathLike[str] | None = None
    tags: dict[str, str] = field(default_factory=dict)
    # "python" runs the script with the environment's Python; "pyspark" submits it to Spark.
    # None: the target's default (Spark targets default to "pyspark").
    framework: str | None = None
    # Per-run settings of the target (Docker resources, Spark executors, ...): each target names
    # the keys it takes and refuses others before anything is submitted.
    target_options: dict[str, Any] = field(default_factory=dict)
    # Named data the script reads (core/inputs.py): a URL (s3://...), a local path, an
    # ObjectStoragePath or an Input(source, mode="download"|"mount"). The script finds each by
    # ${{inputs.NAME}} in arguments, MLTRAIN_INPUT_NAME, or Run.get_context().input_datasets[NAME].
    inputs: dict[str, Any] = field(default_factory=dict)
    # Where ./outputs/NAME/ goes after the run (core/outputs.py): a URL or an Output(url,
    # required=...). The script writes to ${{outputs.NAME}} / MLTRAIN_OUTPUT_NAME.
    outputs: dict[str, Any] = field(default_factory=dict)
    # Azure ML's limit: the runner cancels the script once it has run this long (None: no limit).
    max_run_duration_seconds: float | None = None

    def check_types(self, owner: str = "ScriptRunConfig", hint: str = "") -> None:
        """Refuse a field of the wrong type with :class:`InvalidRunConfig` naming it, before any
        other check: a template that rendered to a number, bytes, a list or None is caught here."""
        from airflow_provider_mltrain.core.compute import ComputeTarget

        folder = "a folder path (str or Path)"
        check_type(f"{owner} source_directory", self.source_directory, PATH_TYPES, folder)
        check_type(f"{owner} script", self.script, PATH_TYPES, "a file path (str or Path)")
        if self.arguments is not None and not isinstance(self.arguments, (str, bytes)):
            wanted = "a list of strings or numbers"
            check_type(f"{owner} arguments", self.arguments, (list, tuple), wanted, hint)
        check_type(
            f"{owner} compute_target", self.compute_target, (str, ComputeTarget), "a target name (str)"
        )
        if self.environment is not None:
            check_type(
                f"{owner} environment",
                self.environment,
                (Environment, *PATH_TYPES),
                "an Environment, a YAML file's path or an environment name",
            )
        if self.tags is not None:
            check_tags(f"{owner} tags", self.tags, hint)
        if self.framework is not None:
            check_type(f"{owner} framework", self.framework, str, "a framework name (str) or None")
        limit = self.max_run_duration_seconds
        if limit is not None:
            check_type(
                f"{owner} max_run_duration_seconds", limit, (int, float), "a number of seconds or None"
            )
            if not limit > 0 or limit != limit or limit == float("inf"):
                raise InvalidRunConfig(
                    f"{owner} max_run_duration_seconds must be above 0 seconds, got {limit!r}; "
                    "leave it None for no limit."
                )
        if self.target_options is not None:
            check_str_keys(
                f"{owner} target_options", self.target_options, "a dict of option names to values", hint
            )

    def resolved_inputs(self) -> dict[str, Any]:
        """The inputs, checked without I/O (names, modes, mount paths)."""
        from airflow_provider_mltrain.core.inputs import normalize_inputs

        return normalize_inputs(self.inputs)

    def resolved_outputs(self) -> dict[str, Any]:
        """The outputs, checked without I/O (names, URLs, schemes)."""
        from airflow_provider_mltrain.core.outputs import normalize_outputs

        return normalize_outputs(self.outputs)

    def resolved_source_directory(self) -> Path:
        raw = self.source_directory
        if raw is None or str(raw) == "":
            raise InvalidRunConfig("source_directory is empty. Pass the folder that holds the script.")
        path = Path(raw).expanduser()
        if not path.exists():
            raise InvalidRunConfig(
                f"source_directory {path} does not exist. Pass the folder that holds the script."
            )
        if not path.is_dir():
            raise InvalidRunConfig(
                f"source_directory {path} is not a folder. Pass the folder that holds the script."
            )
        return path.resolve()

    def resolved_script(self, source: Path) -> str:
        """The script as a clean relative POSIX path inside ``source``."""
        script = os.fspath(self.script) if isinstance(self.script, os.PathLike) else self.script
        if not isinstance(script, str) or not script.strip():
            raise InvalidRunConfig("script is empty. Name the script to run, relative to source_directory.")
        raw = Path(script).expanduser()
        candidate = raw if raw.is_absolute() else source / raw
        lexical = Path(os.path.normpath(candidate))
        try:
            rel = lexical.relative_to(source)
        except ValueError:
            raise InvalidRunConfig(
                f"script {script!r} is outside source_directory {source}. Only the source folder "
                "travels to the compute target: move the script into it, or pick a source_directory "
                "that contains it."
            ) from None
        if str(rel) in ("", "."):
            raise InvalidRunConfig(f"script {script!r} names source_directory itself, not a script in it.")
        if lexical.is_symlink():
            raise InvalidRunConfig(f"script {script!r} is a symlink; name the file it points to instead.")
        if not lexical.exists():
            raise InvalidRunConfig(
                f"script {script!r} does not exist in {source}.{_did_you_mean(rel.as_posix(), source)}"
            )
        if lexical.is_dir():
            raise InvalidRunConfig(f"script {script!r} is a folder, not a Python file, in {source}.")
        return rel.as_posix()

    def resolved_target_options(self) -> dict[str, Any]:
        options = self.target_options
        if options is None:
            return {}
        if not isinstance(options, dict) or not all(isinstance(k, str) for k in options):
            raise InvalidRunConfig(
                f"target_options must be a dict of option names to values, got {options!r}."
            )
        return dict(options)

    def resolved_arguments(self) -> list[str]:
        args = self.arguments
        if args is None:
            return []
        if isinstance(args, (str, bytes)):
            raise InvalidRunConfig(
                f"arguments must be a list, got the string {args!r}. Split it into items, "
                "for example ['--epochs', '5']."
            )
        if not isinstance(args, Sequence):
            raise InvalidRunConfig(
                f"arguments must be a list of strings or numbers, got {type(args).__name__}."
            )
        out = []
        for i, arg in enumerate(args):
            if isinstance(arg, os.PathLike):
                arg = os.fspath(arg)
            if isinstance(arg, bool) or not isinstance(arg, (str, numbers.Real)):
                raise InvalidRunConfig(
                    f"arguments[{i}] is {arg!r} ({type(arg).__name__}); arguments must be strings or "
                    "numbers. Convert it with str() to pass it as text."
                )
            text = str(arg)
            if "\0" in text:
                raise InvalidRunConfig(
                    f"arguments[{i}] contains a NUL byte, which no process argument can hold."
                )
            out.append(text)
        return out


def _did_you_mean(missing: str, source: Path, limit: int = 2000) -> str:
    """ " Did you mean 'train.py'?" for the closest file names in ``source``, or ""."""
    names: list[str] = []
    for dirpath, dirnames, filenames in os.walk(source):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        base = Path(dirpath).relative_to(source)
        names.extend((base / name).as_posix() for name in sorted(filenames))
        if len(names) >= limit:  # a huge tree: the first files are enough to catch a typo
            break
    close = difflib.get_close_matches(missing, names, n=3, cutoff=0.6)
    if not close:
        return ""
    return " Did you mean " + " or ".join(repr(name) for name in close) + "?"
