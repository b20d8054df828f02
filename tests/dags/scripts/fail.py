import argparse
import sys

parser = argparse.ArgumentParser()
parser.add_argument("--code", type=int, default=1)
args = parser.parse_args()
print("loading data")
print(f"something went wrong, exiting with {args.code}", file=sys.stderr)
sys.exit(args.code)
