"""The model registry: registering and downloading a big model file, against copying it by hand.

    .venv/bin/python bench/bench_models.py [--mb 256] [--reps 3]

a. ``run.register_model`` of a finished run's ``outputs/model.bin`` (read, hashed, copied into the
   artifact store by content), a new version of new content; b. the same content registered again
   (the object is in the store: read and hashed only); c. ``model.download``, which checks the
   sha256. Baselines in the same run: ``cp`` of the file, and ``sha256sum`` of it. With
   MLTRAIN_TEST_S3_ENDPOINT set (tests/services/seaweedfs.sh), also a and c against an S3 artifact
   store, with one s3fs ``put`` and ``get`` of the same file as the baseline.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from airflow_provider_mltrain import Experiment, ScriptRunConfig, Workspace

SCRIPT = """
import os, random, sys
os.makedirs("outputs", exist_ok=True)
rng = random.Random(int(sys.argv[2]))
with open("outputs/model.bin", "wb") as f:
    for _ in range(int(sys.argv[1])):
        f.write(rng.randbytes(1 << 20))
"""


def timed(fn, reps: int) -> float:
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mb", type=int, default=256)
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="bench-models-"))
    cleanup: list = []
    try:
        src = base / "src"
        src.mkdir()
        (src / "train.py").write_text(SCRIPT)
        rows: list[tuple[str, float]] = []

        def bench(label: str, ws: Workspace) -> None:
            seeds = iter(range(1000))
            runs = []
            for _ in range(args.reps):
                run = Experiment(ws, "bench").submit(
                    ScriptRunConfig(src, "train.py", arguments=[args.mb, next(seeds)])
                )
                run.wait_for_completion()
                runs.append(run)
            made = iter(runs)
            rows.append(
                (
                    f"{label}a. register_model, new content",
                    timed(lambda: next(made).register_model("m", "outputs/model.bin"), args.reps),
                )
            )
            rows.append(
                (
                    f"{label}b. register_model, content already stored",
                    timed(lambda: runs[0].register_model("m", "outputs/model.bin"), args.reps),
                )
            )
            from airflow_provider_mltrain import Model

            model = Model(ws, "m", version=1)
            rows.append(
                (
                    f"{label}c. model.download",
                    timed(lambda: model.download(base / f"dl-{uuid.uuid4().hex}"), args.reps),
                )
            )

        ws = Workspace(base / "ws")
        bench("local store: ", ws)
        model_file = ws.run_files_dir(Experiment(ws, "bench").list_runs()[0].id) / "outputs" / "model.bin"
        rows.append(
            (
                "baseline: cp",
                timed(lambda: shutil.copyfile(model_file, base / f"cp-{uuid.uuid4().hex}"), args.reps),
            )
        )
        rows.append(
            (
                "baseline: sha256sum",
                timed(
                    lambda: subprocess.run(["sha256sum", str(model_file)], check=True, capture_output=True),
                    args.reps,
                ),
            )
        )
        if os.environ.get("MLTRAIN_TEST_S3_ENDPOINT"):
            import s3fs

            from airflow_provider_mltrain.core.artifacts import FsspecArtifactStore

            options = {
                "key": os.environ["MLTRAIN_TEST_S3_KEY"],
                "secret": os.environ["MLTRAIN_TEST_S3_SECRET"],
                "client_kwargs": {"endpoint_url": os.environ["MLTRAIN_TEST_S3_ENDPOINT"]},
            }
            prefix = f"mltrain-test/bench-models-{uuid.uuid4().hex}"
            fs = s3fs.S3FileSystem(**options)
            cleanup.append(lambda: fs.rm(prefix, recursive=True))  # a shared test server: leave nothing
            store = FsspecArtifactStore(f"s3://{prefix}", options)
            bench("S3 store: ", Workspace(base / "ws3", artifact_store=store))
            rows.append(
                (
                    "baseline: s3fs put",
                    timed(
                        lambda: fs.put_file(str(model_file), f"{prefix}/raw/{uuid.uuid4().hex}"), args.reps
                    ),
                )
            )
            raw = f"{prefix}/raw/one"
            fs.put_file(str(model_file), raw)
            rows.append(
                (
                    "baseline: s3fs get",
                    timed(lambda: fs.get_file(raw, str(base / f"get-{uuid.uuid4().hex}")), args.reps),
                )
            )
        print(f"model file: {args.mb} MiB, median of {args.reps}")
        for label, seconds in rows:
            print(f"{label:<52} {seconds:8.3f} s")
    finally:
        for step in cleanup:
            step()
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
