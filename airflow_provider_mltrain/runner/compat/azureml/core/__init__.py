"""``from azureml.core import Run`` for scripts moved off Azure ML, backed by mltrain's run history."""

from mltrain import Run

from azureml.core.run import _missing

__all__ = ["VERSION", "Run"]

# Not an Azure ML version: a script that prints or checks it learns it runs on mltrain's layer.
VERSION = "0+mltrain.compat"


def __getattr__(name):
    return _missing(name)
