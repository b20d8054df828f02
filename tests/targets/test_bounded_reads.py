"""Reading a run file through a target costs what the caller asked for, not the file's size.

Runs on every target: a live log bigger than Docker's read-by-exec threshold is read by ranges
while the script runs, and again once the run has ended.
"""

from __future__ import annotations

import pytest

from airflow_provider_mltrain.core.run import STD_LOG
from tests.targets.suite import submit, wait_until

pytestmark = pytest.mark.no_object_store_variant(
    "reads through the target's own channel: the artifact store plays no part"
)

LINES = 400_000  # 9 bytes each: 3.6 MB, above the Docker target's 1 MB read-by-exec threshold
TALKER = f"""
import os, time
out = os.fdopen(1, "w", buffering=1 << 20)
for i in range({LINES}):
    out.write("%08d\\n" % i)
out.flush()
open("outputs/ready", "w").close()
time.sleep(600)
"""


def _line(i: int) -> bytes:
    return b"%08d\n" % i


def test_read_file_reads_only_the_asked_length_of_a_live_and_an_ended_log(
    workspace, target, harness, make_tree
):
    run = submit(workspace, target, make_tree({"train.py": TALKER, "outputs/.keep": ""}))
    size = LINES * 9
    try:
        wait_until(lambda: run.target.file_size(run.id, STD_LOG) >= size, timeout=120)
        assert run.get_status() == "Running"
        t = run.target
        assert t.read_file(run.id, STD_LOG, 9 * 1000, 18) == _line(1000) + _line(1001)
        assert t.read_file(run.id, STD_LOG, 0, 1) == b"0"
        tail = t.read_file(run.id, STD_LOG, size - 9, 4096)  # more than is left: the rest
        assert tail == _line(LINES - 1)
        assert t.read_file(run.id, STD_LOG, size, 10) == b""
        assert t.read_file(run.id, STD_LOG, 0, 0) == b""
        assert t.read_file(run.id, "logs/none.txt", 0, 10) == b""
    finally:
        run.cancel(grace_period=1)
    t = run.target
    # Ended: read from what the target keeps (Docker: the stopped container's archive).
    assert t.read_file(run.id, STD_LOG, 9 * 5, 9) == _line(5)
    assert len(t.read_file(run.id, STD_LOG, 0, 100)) == 100
