import argparse
import time

from mltrain import Run

parser = argparse.ArgumentParser()
parser.add_argument("--seconds", type=float, default=0)
args = parser.parse_args()
run = Run.get_context()
for step in range(3):
    print(f"step {step}", flush=True)
    run.log("score", step / 2, step=step)
    time.sleep(args.seconds / 3)
print("all done")
