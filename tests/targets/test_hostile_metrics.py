"""A hostile or careless script cannot poison the run history through ``logs/metrics.jsonl``.

Runs once per compute target (the shared ``harness``/``target`` fixtures): the script writes every
class of malformed line between good ones, straight into the metrics file as any code could.
"""

from __future__ import annotations

import pytest

from tests.targets.suite import submit

pytestmark = pytest.mark.no_object_store_variant(
    "metrics live in the run store: the artifact store plays no part"
)

# Each line is written as is, followed by a newline; NaN, Infinity and 1e400 are what json.loads
# accepts, and b"\xff" is not UTF-8.
BAD_LINES = r"""
not json at all
{"name": "truncated", "value": 1
[1, 2, 3]
"just a string"
{"name": "k", "kind": "bogus", "value": 1}
{"name": "k", "kind": "row", "value": [1, 2]}
{"name": "k", "kind": "tags", "value": "ab"}
{"name": "k", "kind": "properties", "value": {"nested": {"a": 1}}}
{"name": "k", "value": {"a": 1}}
{"name": "k", "value": 1, "step": NaN}
{"name": "k", "value": 1, "step": Infinity}
{"name": "k", "value": 1, "step": 1e30}
{"name": "k", "value": 1, "step": 18446744073709551616}
{"name": "k", "value": 1, "step": "3"}
{"name": "k", "value": 1, "step": true}
{"name": "k", "value": 1, "time": "yesterday"}
{"name": "k", "value": 1, "time": NaN}
{"name": "k", "value": 1, "time": -Infinity}
{"name": 5, "value": 1}
{"name": "", "value": 1}
{"value": 1}
""".strip().splitlines()
LONG_NAME = '{"name": "' + "n" * 256 + '", "value": 1}'
HUGE_INT = '{"name": "k", "value": 1' + "0" * 400 + "}"
DEEP = "[" * 100_000

HOSTILE = f"""
import os
from mltrain import Run
run = Run.get_context()
path = os.environ["MLTRAIN_METRICS_FILE"]
run.log("loss", 1.0, step=0)
with open(path, "ab") as f:
    for line in {[*BAD_LINES, LONG_NAME, HUGE_INT, DEEP]!r}:
        f.write(line.encode() + b"\\n")
    f.write(b'\\xff\\xfe{{"name": "k"}}\\n')
run.log("loss", 0.5, step=1)
run.log("acc", 0.9)
run.log_row("per_class", cls=0, recall=0.8)
with open(path, "ab") as f:
    f.write(b'{{"name": "cut", "value": 1')  # the last line never ends
"""
BAD_COUNT = len(BAD_LINES) + 5


def test_malformed_metric_lines_are_skipped_counted_and_the_run_completes(workspace, target, make_tree):
    run = submit(workspace, target, make_tree({"train.py": HOSTILE}))
    details = run.wait_for_completion(timeout=240)
    assert details["status"] == "Completed"
    assert run.get_metrics() == {"loss": [1.0, 0.5], "acc": 0.9, "per_class": {"cls": [0], "recall": [0.8]}}
    assert [h["step"] for h in run.get_metric_history("loss")] == [0, 1]
    assert run.tags == {}
    warnings = run.warnings
    assert len(warnings) == 1, warnings
    assert f"skipped {BAD_COUNT} malformed lines" in warnings[0]
    assert details["warnings"] == warnings
    # Reading it again (another controller, the UI) neither fails nor counts the lines twice.
    run.refresh()
    assert workspace.get_run(run.id).warnings == warnings


RESERVED = """
import os
from mltrain import Run
run = Run.get_context()
for call in (
    lambda: run.set_tags({"airflow.dag_id": "payroll"}),
    lambda: run.tag("mltrain.workspace", "/elsewhere"),
    lambda: run.add_properties({"airflow.task_id": "pay", "team": "x"}),
):
    try:
        call()
    except ValueError as exc:
        print("refused:", exc)
run.set_tags({"stage": "train"})
run.add_properties({"team": "vision"})
with open(os.environ["MLTRAIN_METRICS_FILE"], "a") as f:
    f.write('{"name": "properties", "kind": "properties", '
            '"value": {"airflow.dag_id": "payroll", "airflow.task_id": "pay", "owner": "ana"}}\\n')
    f.write('{"name": "tags", "kind": "tags", "value": {"mltrain.rerun_of": "x", "Airflow.run_id": "y"}}\\n')
"""


def test_a_script_cannot_set_airflow_or_mltrain_tags_and_properties(workspace, target, make_tree):
    run = submit(workspace, target, make_tree({"train.py": RESERVED}))
    run.wait_for_completion(timeout=240)
    tail = run.get_log_tail()
    assert tail.count("refused:") == 3, tail
    assert "'airflow.dag_id' is set by the provider" in tail
    assert run.tags == {"stage": "train"}
    props = run.properties
    assert not any(k.lower().startswith("airflow.") for k in props), props
    assert props["team"] == "vision" and props["owner"] == "ana"
    assert props["mltrain.workspace"] == str(workspace.root)
    assert "mltrain.rerun_of" not in props and "mltrain.rerun_of" not in run.tags
    warnings = run.warnings
    assert len(warnings) == 1, warnings
    assert "ignored 4 reserved" in warnings[0] and "airflow.dag_id" in warnings[0]
