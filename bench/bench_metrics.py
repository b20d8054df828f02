"""What checking each metric line costs the controller, against the unchecked parse it replaced.

    .venv/bin/python bench/bench_metrics.py [--lines 200000] [--reps 5]

A ``logs/metrics.jsonl`` of ``--lines`` lines as ``run.log(name, value, step=i)`` writes them
(four metric names, floats, steps, times) is read the way ``Run._ingest_metrics`` reads it:

- baseline: the parse of the previous version (``json.loads`` per line, name and kind read, step
  and time converted, no checks), copied here as it was;
- checked: :func:`airflow_provider_mltrain.core.metrics.parse_lines` on the same bytes;
- checked, 1% bad: the same with one line in a hundred malformed (skipped and counted);
- each parse followed by storing its rows in a new SQLite run store (``RunStore.ingest_metrics``),
  which is what a refresh pays in full.

Median of ``--reps``, cases interleaved. Nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from airflow_provider_mltrain.core.metrics import parse_lines
from airflow_provider_mltrain.core.store import RunStore


def make_lines(n: int, bad_every: int = 0) -> bytes:
    names = ("loss", "accuracy", "lr", "val_loss")
    t0 = 1_764_000_000.0
    out = []
    for i in range(n):
        if bad_every and i % bad_every == bad_every - 1:
            out.append('{"name": "loss", "value": 0.5, "step": NaN, "time": %r}' % (t0 + i))
            continue
        rec = {"name": names[i % 4], "kind": "scalar", "value": 1.0 / (i + 1), "step": i, "time": t0 + i}
        out.append(json.dumps(rec, separators=(",", ":")))
    return ("\n".join(out) + "\n").encode()


def old_parse(run_id: str, data: bytes, offset: int) -> list[dict[str, Any]]:
    """The previous version's loop, without its store call (it had no checks)."""
    rows: list[dict[str, Any]] = []
    pos = 0
    end = data.rfind(b"\n") + 1
    for line in data[:end].split(b"\n")[:-1]:
        seq = offset + pos
        pos += len(line) + 1
        try:
            rec = json.loads(line)
            name, kind = str(rec["name"]), str(rec.get("kind", "scalar"))
        except (ValueError, KeyError, TypeError):
            continue
        step = rec.get("step")
        rows.append(
            {
                "run_id": run_id,
                "seq": seq,
                "name": name[:255],
                "kind": kind[:16],
                "step": int(step) if isinstance(step, (int, float)) else None,
                "value": json.dumps(rec.get("value")),
                "logged_at": float(rec.get("time") or time.time()),
            }
        )
    return rows


def timed(fn: Any) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def store_rows(tmp: Path, tag: str, rows: list[dict[str, Any]]) -> None:
    store = RunStore(f"sqlite:///{tmp / (tag + '.db')}")
    store.create_run(
        {
            "id": "r",
            "experiment": "bench",
            "status": "Running",
            "target": "local",
            "source_directory": "/src",
            "script": "t.py",
            "arguments": [],
            "snapshot_id": "0" * 64,
            "environment": {},
            "tags": {},
            "properties": {},
        }
    )
    store.ingest_metrics("r", 0, 1, rows)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--lines", type=int, default=200_000)
    parser.add_argument("--reps", type=int, default=5)
    args = parser.parse_args()
    good = make_lines(args.lines)
    bad = make_lines(args.lines, bad_every=100)
    results: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        for rep in range(args.reps):
            cases = {
                "baseline: unchecked parse": lambda: old_parse("r", good, 0),
                "checked parse": lambda: parse_lines("r", good, 0),
                "checked parse, 1% bad lines": lambda: parse_lines("r", bad, 0),
                "baseline: unchecked parse + store": lambda rep=rep: store_rows(
                    tmp, f"old{rep}", old_parse("r", good, 0)
                ),
                "checked parse + store": lambda rep=rep: store_rows(
                    tmp, f"new{rep}", parse_lines("r", good, 0).rows
                ),
            }
            for name, fn in cases.items():
                results.setdefault(name, []).append(timed(fn))
    base = statistics.median(results["baseline: unchecked parse"])
    base_store = statistics.median(results["baseline: unchecked parse + store"])
    print(f"{args.lines:,} lines ({len(good) / 1e6:.1f} MB), median of {args.reps}")
    print(f"{'case':<36} {'seconds':>8} {'us/line':>8} {'ratio':>6}")
    for name, times in results.items():
        median = statistics.median(times)
        ref = base_store if "store" in name else base
        print(f"{name:<36} {median:>8.3f} {median / args.lines * 1e6:>8.2f} {median / ref:>6.2f}")


if __name__ == "__main__":
    main()
