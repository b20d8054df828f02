"""``RunDetails(run).show()``: the run's progress as text, where Azure ML drew a Jupyter widget.

``show()`` follows the run until it ends, printing a line when its status changes and when a
metric gets a new value (a sweep: when a child's status changes), then a summary. It writes to
``sys.stdout``, so in a notebook the cell shows it; the run page of the Airflow UI has the charts.
"""

from __future__ import annotations

import json
import sys
import time
from datetime import datetime, timezone
from typing import IO, Any

from airflow_provider_mltrain.core.states import RunStatus
from airflow_provider_mltrain.core.text import for_terminal


def _value(value: Any) -> str:
    if isinstance(value, list):
        last = value[-1] if value else None
        return f"{len(value)} values, last {_value(last)}"
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, (dict, tuple)):
        return for_terminal(json.dumps(value, default=str), 80)
    return for_terminal(str(value), 80)


class RunDetails:
    """A text view of one run (or sweep)."""

    def __init__(self, run_instance: Any):
        self.run = run_instance

    def show(self, poll_interval: float = 2.0, output: IO[str] | None = None) -> None:
        """Print the run's progress until it ends, then its summary; Ctrl-C stops the view only."""
        stream = output or sys.stdout

        def say(line: str) -> None:
            stream.write(line + "\n")
            stream.flush()

        run = self.run
        say(f"Run {for_terminal(run.id, 200)} (experiment {for_terminal(run.experiment.name, 200)})")
        seen_status = None
        seen_metrics: dict[str, str] = {}
        seen_children: dict[str, str] = {}
        try:
            while True:
                status = run.refresh()
                now = datetime.now(timezone.utc).strftime("%H:%M:%S")
                if status != seen_status:
                    say(f"[{now}] {status.value}")
                    seen_status = status
                for name, value in sorted(run.get_metrics().items()):
                    shown = _value(value)
                    if seen_metrics.get(name) != shown:
                        say(f"[{now}]   {for_terminal(name, 80)} = {shown}")
                        seen_metrics[name] = shown
                for child in run.get_children():
                    child_status = child.get_status()
                    if seen_children.get(child.id) != child_status:
                        say(f"[{now}]   child {for_terminal(child.id, 200)}: {child_status}")
                        seen_children[child.id] = child_status
                if status.is_terminal:
                    break
                time.sleep(poll_interval)
        except KeyboardInterrupt:
            say(f"Stopped showing run {run.id}; it goes on running.")
            return
        self._summary(say)

    def _summary(self, say: Any) -> None:
        details = self.run.get_details()
        duration = details.get("duration_seconds")
        say("")
        say(f"{'Run':<12} {for_terminal(details['run_id'], 200)}")
        say(
            f"{'Status':<12} {details['status']}" + (f" ({details['error']})" if details.get("error") else "")
        )
        say(f"{'Target':<12} {for_terminal(str(details['target']), 200)}")
        say(f"{'Duration':<12} " + (f"{duration:.1f} s" if duration is not None else "-"))
        metrics = self.run.get_metrics()
        if metrics:
            width = min(40, max(len(n) for n in metrics))
            say("Metrics")
            for name, value in sorted(metrics.items()):
                say(f"  {for_terminal(name, 40):<{width}}  {_value(value)}")
        if RunStatus(details["status"]) != RunStatus.COMPLETED:
            tail = self.run.get_log_tail(max_lines=10)
            if tail:
                say("Last lines of the log")
                for line in tail.splitlines():
                    say("  " + for_terminal(line, 300))

    def get_widget_data(self) -> dict[str, Any]:
        """The values the view shows: ``get_details()`` and the metrics."""
        return {**self.run.get_details(), "metrics": self.run.get_metrics()}


__all__ = ["RunDetails"]
