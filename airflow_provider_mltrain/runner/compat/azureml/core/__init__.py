"""``from azureml.core import Run`` for scripts moved off Azure ML, backed by mltrain's run history."""

from mltrain import Run

from azureml.core.run import _missing

__all__ = ["Run"]


def __getattr__(name):
    return _missing(name)
