"""Every target: an Azure ML v1 script that creates its own child runs runs unchanged, and its
children show under its run in the store, with their metrics and ends."""

from __future__ import annotations

import json

from tests.targets.suite import submit

SCRIPT = """
import os
from azureml.core import Run  # Azure ML v1's import, served by mltrain's compatibility layer

run = Run.get_context()
assert run.parent is None
children = run.create_children(tag_key="fold", tag_values=["a", "b", "c"])
for i, child in enumerate(children):
    assert child.parent is run
    for step in range(3):
        child.log("loss", 1.0 / (i + 1 + step), step=step)
    if i < 2:
        child.complete()
children[2].fail("fold c diverged")
with run.child_run(name="summary") as summary:
    summary.log("folds", 3)
left_open = run.child_run()
left_open.log("partial", 1)
run.log("parent_metric", 42)
# What a script may write by hand to the children file: the controller checks each line.
with open(os.path.join(os.environ["MLTRAIN_RUN_DIR"], "logs", "children.jsonl"), "a") as f:
    f.write("not json\\n")
    f.write('{"child": -1, "event": "created"}\\n')
"""


def test_a_script_creates_child_runs(workspace, target, make_tree):
    run = submit(workspace, target, make_tree({"train.py": SCRIPT}))
    assert run.wait_for_completion()["status"] == "Completed"
    children = run.get_children()
    assert [c.id for c in children] == [f"{run.id}_{i}" for i in range(5)]
    statuses = [c.get_status() for c in children]
    assert statuses == ["Completed", "Completed", "Failed", "Completed", "Completed"]
    assert children[2].get_details()["error"] == "fold c diverged"
    assert "ended with its parent run" in json.dumps(workspace.store.get_events(children[4].id))
    assert [c.tags.get("fold") for c in children[:3]] == ["a", "b", "c"]
    assert children[0].get_metrics()["loss"] == [1.0, 0.5, 1 / 3]
    assert children[1].get_metrics()["loss"] == [0.5, 1 / 3, 0.25]
    assert children[3].get_metrics() == {"folds": 3}
    assert children[3].tags["mltrain.child.name"] == "summary"
    assert children[4].get_metrics() == {"partial": 1}
    assert run.get_metrics() == {"parent_metric": 42}  # the children's values stay theirs
    assert all(c.parent == run for c in children)
    warnings = " ".join(run.warnings)
    assert "line 10 is not JSON" in warnings and "line 11 names no child index" in warnings
    assert len(workspace.store.list_runs()) == 6
