"""Run warnings: problems a run had that did not stop it, one per class with a count.

Stored in the run store's ``warnings`` column as a JSON list of entries ``{"key", "count",
"reasons", "first", "names", "text"}``; :func:`texts` turns them into the sentences a user reads
(``Run.warnings``, ``mltrain runs show``, the run page, the JSON API). A class seen again adds to
its entry's counts instead of adding a line, so a script writing a million bad lines leaves one
warning.
"""

from __future__ import annotations

import json
from typing import Any

from airflow_provider_mltrain.core.metrics import ParsedLines

MALFORMED = "metrics.malformed"
RESERVED = "metrics.reserved"
RUNNER = "runner:"
# A model request of the script's logs/models.jsonl that was not registered: kept once, as RUNNER.
MODELS = "models:"
UPLOAD_PENDING = "store.upload_pending"
LOG_PUSH_FAILING = "store.log_push_failing"
MAX_NAMES = 5
# The runner's own warnings come from status.json, a file the script could rewrite: bounded.
MAX_RUNNER_WARNINGS = 20
MAX_RUNNER_TEXT = 500


def from_metrics(parsed: ParsedLines) -> list[dict[str, Any]]:
    """The warning entries of one stretch of the metrics file (none when every line was good)."""
    out: list[dict[str, Any]] = []
    if parsed.skipped:
        out.append(
            {
                "key": MALFORMED,
                "count": sum(parsed.skipped.values()),
                "reasons": dict(parsed.skipped),
                "first": parsed.first_skipped,
            }
        )
    if parsed.reserved:
        out.append(
            {"key": RESERVED, "count": len(parsed.reserved), "names": list(dict.fromkeys(parsed.reserved))}
        )
    return out


def from_runner(status: dict[str, Any] | None) -> list[dict[str, Any]]:
    """Entries for the ``warnings`` list of the runner's status.json (anything else there is ignored)."""
    items = (status or {}).get("warnings")
    if not isinstance(items, list):
        return []
    texts = [str(t)[:MAX_RUNNER_TEXT] for t in items if isinstance(t, str) and t.strip()]
    return [{"key": RUNNER + t, "text": t, "count": 1} for t in texts[:MAX_RUNNER_WARNINGS]]


def upload_pending(store_url: str, host: str, exc: BaseException) -> dict[str, Any]:
    """The entry of a run whose files could not be sent to the artifact store (yet)."""
    reason = f"{type(exc).__name__}: {exc}"[:MAX_RUNNER_TEXT]
    return {
        "key": UPLOAD_PENDING,
        "count": 1,
        "text": (
            f"The run's outputs and logs are not in the artifact store {store_url} yet ({reason}). "
            f"They are kept in the workspace cache on {host} and the upload is retried each time the "
            f"run is refreshed there (mltrain runs show, the run page); until then other hosts see the "
            f"live log only."
        ),
    }


def log_push_failing(store_url: str, host: str, exc: BaseException) -> dict[str, Any]:
    """The entry of an active run whose live log its follower cannot append to the store."""
    reason = f"{type(exc).__name__}: {exc}"[:MAX_RUNNER_TEXT]
    return {
        "key": LOG_PUSH_FAILING,
        "count": 1,
        "text": (
            f"The run's live log cannot be appended to the artifact store {store_url} ({reason}) by "
            f"its follower on {host}: other hosts see it only up to that point. Nothing is lost: the "
            f"follower keeps retrying, and the whole log is uploaded with the run's files."
        ),
    }


def merge(current: list[dict[str, Any]], new: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``current`` with ``new`` added: counts of a known class add up; a runner warning is kept once."""
    out = [dict(e) for e in current]
    by_key = {e.get("key"): e for e in out}
    for entry in new:
        known = by_key.get(entry["key"])
        if known is None:
            known = by_key[entry["key"]] = dict(entry)
            out.append(known)
        elif not entry["key"].startswith((RUNNER, MODELS)):
            known["count"] = _int(known.get("count")) + entry["count"]
            if "reasons" in entry:
                reasons = dict(known.get("reasons") or {})
                for reason, n in entry["reasons"].items():
                    reasons[reason] = _int(reasons.get(reason)) + n
                known["reasons"] = reasons
            if "names" in entry:
                known["names"] = list(dict.fromkeys([*(known.get("names") or []), *entry["names"]]))
    return out


def decode(stored: Any) -> list[dict[str, Any]]:
    """The entries of a stored column value (NULL or unreadable: none)."""
    if isinstance(stored, str):
        try:
            stored = json.loads(stored)
        except ValueError:
            return []
    if not isinstance(stored, list):
        return []
    return [e for e in stored if isinstance(e, dict) and isinstance(e.get("key"), str)]


def texts(entries: list[dict[str, Any]]) -> list[str]:
    """One sentence per warning class."""
    return [_text(e) for e in entries]


def _text(entry: dict[str, Any]) -> str:
    key, count = entry["key"], _int(entry.get("count"))
    if key == MALFORMED:
        reasons = entry.get("reasons") or {}
        why = "; ".join(f"{n} {reason}" for reason, n in sorted(reasons.items(), key=lambda r: -_int(r[1])))
        first = entry.get("first")
        return (
            f"logs/metrics.jsonl: skipped {count} malformed line{'s' if count != 1 else ''}"
            + (f" (first at byte {first})" if isinstance(first, int) else "")
            + (f": {why}" if why else "")
            + ". The other lines were kept; log with run.log() to write valid lines."
        )
    if key == RESERVED:
        names = [str(n) for n in entry.get("names") or []]
        shown = ", ".join(names[:MAX_NAMES]) + (", ..." if len(names) > MAX_NAMES else "")
        return (
            f"logs/metrics.jsonl: ignored {count} reserved tag{'s' if count != 1 else ''} or "
            f"propert{'ies' if count != 1 else 'y'} ({shown}): airflow.* and mltrain.* are set by the "
            "provider at submission, never by the script."
        )
    return str(entry.get("text") or key)


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0
