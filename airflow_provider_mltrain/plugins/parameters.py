"""What set compared runs apart: their arguments, tags, properties and environment, side by side.

Arguments are read the way ``argparse`` users write them (``--lr 0.01``, ``--lr=0.01``, ``-n 3``,
a lone ``--flag``), so a sweep's hyperparameters line up by name across runs however each run
spelled them. Nothing here reads a workspace: it works on run records.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Any

_NUMBER = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$")
# Properties the provider records for its own bookkeeping: they differ for every run and say
# nothing about how a run was set up, so they are no hyperparameters.
_NOT_HYPERPARAMETERS = ("airflow.", "mltrain.")


def _is_option(token: str) -> bool:
    return token.startswith("-") and len(token) > 1 and not _NUMBER.match(token)


def parse_arguments(arguments: Sequence[Any]) -> dict[str, str]:
    """``["--lr", "0.01", "--fast", "data.csv"]`` -> ``{"--lr": "0.01", "--fast": "true", "#1": "data.csv"}``.

    A positional argument is named by its position among the positionals (``#1``, ``#2``...).
    """
    out: dict[str, str] = {}
    tokens = [str(a) for a in arguments]
    positional = 0
    i = 0
    while i < len(tokens):
        token = tokens[i]
        if token == "--":  # noqa: S105 - the end of options, no password
            for rest in tokens[i + 1 :]:
                positional += 1
                out[f"#{positional}"] = rest
            break
        if _is_option(token):
            name, sep, value = token.partition("=")
            if sep:
                out[name] = value
            elif i + 1 < len(tokens) and not _is_option(tokens[i + 1]):
                out[name] = tokens[i + 1]
                i += 1
            else:
                out[name] = "true"
        else:
            positional += 1
            out[f"#{positional}"] = token
        i += 1
    return out


def _environment(env: dict[str, Any]) -> dict[str, str]:
    out = {}
    for key, value in env.items():
        if isinstance(value, (str, int, float, bool)) and key not in ("hash", "cache_hit"):
            out[key] = str(value)
    if env.get("packages"):
        out["packages"] = f"{len(env['packages'])} packages"
        out["packages (hash)"] = str(env.get("hash") or "")[:12]
    return out


GROUPS = ("argument", "tag", "property", "environment")


def parameter_rows(records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per argument, tag, property and environment field any run has: ``{"group", "name",
    "values": {run_id: text or None}, "differs"}``, in the order of ``GROUPS`` then of the runs."""
    per_run: dict[str, dict[tuple[str, str], str]] = {}
    order: list[tuple[str, str]] = []
    for record in records:
        values: dict[tuple[str, str], str] = {}
        for name, value in parse_arguments(record.get("arguments") or []).items():
            values[("argument", name)] = value
        for name, value in (record.get("tags") or {}).items():
            values[("tag", name)] = "" if value is None else str(value)
        for name, value in (record.get("properties") or {}).items():
            values[("property", name)] = str(value)
        for name, value in _environment(record.get("environment") or {}).items():
            values[("environment", name)] = value
        per_run[record["id"]] = values
        order.extend(k for k in values if k not in order)
    order.sort(key=lambda k: GROUPS.index(k[0]))
    rows = []
    for group, name in order:
        cells = {rid: v.get((group, name)) for rid, v in per_run.items()}
        rows.append({"group": group, "name": name, "values": cells, "differs": len(set(cells.values())) > 1})
    return rows


def hyperparameters(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows a parallel-coordinates chart draws an axis for: arguments and the script's own
    properties that differ between runs; ``numeric`` when every value present is a number."""
    out = []
    for row in rows:
        if not row["differs"] or row["group"] not in ("argument", "property"):
            continue
        if row["group"] == "property" and row["name"].startswith(_NOT_HYPERPARAMETERS):
            continue
        present = [v for v in row["values"].values() if v is not None]
        numeric = bool(present) and all(_NUMBER.match(v) and math.isfinite(float(v)) for v in present)
        values = {rid: (float(v) if numeric and v is not None else v) for rid, v in row["values"].items()}
        out.append({"name": row["name"].lstrip("-") or row["name"], "numeric": numeric, "values": values})
    return out
