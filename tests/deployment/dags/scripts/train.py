"""A training script for the deployment tests: logs a loss per step, one line per step, and writes
outputs/result.txt."""

import argparse
import os
import time

from mltrain import Run

parser = argparse.ArgumentParser()
parser.add_argument("--name", required=True)
parser.add_argument("--steps", type=int, default=5)
parser.add_argument("--seconds", type=float, default=5.0)
args = parser.parse_args()

run = Run.get_context()
print(f"script started: {args.name} pid {os.getpid()}", flush=True)
for step in range(args.steps):
    loss = 1.0 / (step + 1)
    print(f"step {step} loss {loss:.4f}", flush=True)
    run.log("loss", loss, step=step)
    time.sleep(args.seconds / args.steps)
run.log("final_loss", 1.0 / args.steps)
os.makedirs("outputs", exist_ok=True)
with open(os.path.join("outputs", "result.txt"), "w") as f:
    f.write(f"{args.name}: {args.steps} steps, final loss {1.0 / args.steps:.4f}\n")
print(f"script finished: {args.name}", flush=True)
