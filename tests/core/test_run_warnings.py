"""Run warnings: the runner's own (status.json) merge with the metric ones, once each."""

from __future__ import annotations

from typing import Any

from airflow_provider_mltrain import Experiment, ScriptRunConfig
from airflow_provider_mltrain.targets.local import LocalTarget

CGROUP = "no cgroup for the run (cgroup v2 is read-only here): its memory and CPU are not limited"


class RunnerWithWarnings(LocalTarget):
    """The local target, with a runner whose status.json carries ``warnings`` (as a runner that
    cannot make a cgroup writes them), plus junk a script could have put there."""

    def read_status(self, run_id: str) -> dict[str, Any] | None:
        status = super().read_status(run_id)
        if status is not None:
            status["warnings"] = [CGROUP, 42, {"x": 1}, ""]
        return status


def test_runner_warnings_join_the_metric_ones_once(workspace, make_tree, tmp_path):
    src = make_tree(
        {
            "train.py": "import os\nfrom mltrain import Run\nRun.get_context().log('a', 1)\n"
            "open(os.environ['MLTRAIN_METRICS_FILE'], 'a').write('oops\\n')\n"
        }
    )
    target = RunnerWithWarnings(tmp_path / "target")
    run = Experiment(workspace, "w").submit(ScriptRunConfig(src, "train.py", compute_target=target))
    details = run.wait_for_completion()
    assert details["status"] == "Completed" and run.get_metrics() == {"a": 1}
    assert len(details["warnings"]) == 2, details["warnings"]
    assert CGROUP in details["warnings"]
    assert any("skipped 1 malformed line" in w for w in details["warnings"])
    assert run.warnings == details["warnings"]
