"""Runs the user's script as ``python SCRIPT ARGS...`` would, with mltrain's in-script API available.

Standard library only. ``sys.path[0]`` becomes the script's folder, as Python sets it. The
``azureml`` compatibility package goes at the *end* of ``sys.path``, so an environment that has the
real ``azureml-core`` installed keeps using it.
"""

import os
import runpy
import sys


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    if len(sys.argv) < 2:
        sys.stderr.write("usage: bootstrap.py SCRIPT [ARGS...]\n")
        return 2
    script = sys.argv[1]
    path = os.path.abspath(script)
    sys.argv = sys.argv[1:]
    sys.path[0] = os.path.dirname(path)
    sys.path.append(os.path.join(here, "compat"))
    runpy.run_path(path, run_name="__main__")
    return 0


if __name__ == "__main__":
    sys.exit(main())
