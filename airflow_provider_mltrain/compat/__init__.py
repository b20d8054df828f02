"""Compatibility layers: other tools' driver APIs over mltrain's core (``compat.azureml``)."""
