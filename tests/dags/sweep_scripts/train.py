"""A training script with a known curve per ``--quality``: the sweep's best child is "good"."""

import argparse
import time

from mltrain import Run

parser = argparse.ArgumentParser()
parser.add_argument("--quality")
args = parser.parse_args()
run = Run.get_context()
value = {"good": 0.9, "ok": 0.85, "bad": 0.4}[args.quality]
for epoch in range(6):
    run.log("accuracy", value)
    time.sleep(0.4 if args.quality == "bad" else 0.05)
print(f"done: {args.quality}")
