"""``python RUNNER_DIR COMMAND ARGS`` runs ``remote.py COMMAND ARGS`` from its cached bytecode.

A script named on the command line is compiled anew at every start (about 20 ms for remote.py, in
every remote call of the SSH target); a module it imports is compiled once, into ``__pycache__``.
"""

import sys

if __package__:  # python -m airflow_provider_mltrain.runner
    from . import remote
else:  # python RUNNER_DIR: the folder is on sys.path
    import remote  # type: ignore[no-redef]

sys.exit(remote.main())
