"""Code that travels to compute targets: standard library only, any Python >= 3.9."""

import os

RUNNER_DIR = os.path.dirname(os.path.abspath(__file__))
