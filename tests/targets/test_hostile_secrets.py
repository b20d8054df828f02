"""Secrets at rest on every target: what a snapshot leaves out and which files stay owner-only.

The script itself reports what it finds in its working copy, through each target's own channel.
"""

from __future__ import annotations

import json
import os

from tests.targets.suite import submit

REPORT = """
import json, os
paths = ["train.py", "private.cfg", "big_private.bin", "tool.sh", ".env", "conf/.env.local", ".ssh/id_rsa"]
found = {p: (os.stat(p).st_mode & 0o777 if os.path.exists(p) else None) for p in paths}
os.makedirs("outputs", exist_ok=True)
with open("outputs/modes.json", "w") as f:
    json.dump(found, f)
"""


def test_owner_only_files_stay_owner_only_and_secret_files_stay_home(workspace, target, make_tree):
    src = make_tree(
        {
            "train.py": REPORT,
            "private.cfg": "token=abc",
            "big_private.bin": os.urandom(200_000),  # big: its working copy keeps 0600 all the same
            "tool.sh": "echo hi\n",
            ".env": "API_TOKEN=abc\n",
            "conf/.env.local": "DB_PASSWORD=abc\n",
            ".ssh/id_rsa": "-----BEGIN OPENSSH PRIVATE KEY-----\n",
        }
    )
    os.chmod(src / "train.py", 0o644)
    os.chmod(src / "private.cfg", 0o600)
    os.chmod(src / "big_private.bin", 0o600)
    os.chmod(src / "tool.sh", 0o700)
    run = submit(workspace, target, src)
    details = run.wait_for_completion()
    assert details["status"] == "Completed", run.get_log_tail()
    found = json.loads(
        run.download_file("outputs/modes.json", workspace.root.parent / "modes.json").read_text()
    )
    assert found == {
        "train.py": 0o644,
        "private.cfg": 0o600,
        "big_private.bin": 0o600,
        "tool.sh": 0o700,
        ".env": None,
        "conf/.env.local": None,
        ".ssh/id_rsa": None,
    }
    assert json.loads(details["properties"]["mltrain.snapshot.secrets_skipped"]) == [
        ".env",
        ".ssh/",
        "conf/.env.local",
    ]
