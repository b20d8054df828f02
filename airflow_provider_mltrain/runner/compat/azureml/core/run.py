"""``from azureml.core.run import Run``: the in-script run of mltrain under Azure ML's name."""

from mltrain import Run

__all__ = ["Run"]


def _missing(name):
    if name.startswith("__"):
        raise AttributeError(name)
    raise ImportError(
        "azureml.core.%s is not available: this script runs under mltrain, whose azureml "
        "compatibility layer provides only Run (get_context, log, log_list, log_row, log_table, "
        "log_image, tag, set_tags, upload_file, register_model, parent, child_run, "
        "create_children). Install azureml-core in the run's "
        "environment to use the real SDK, or pass data to the script as arguments." % name
    )


def __getattr__(name):
    return _missing(name)
