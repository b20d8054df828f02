"""``from azureml.core.run import Run``: the in-script run of mltrain under Azure ML's name."""

from mltrain import Run

__all__ = ["Run"]


def _missing(name):
    if name.startswith("__"):
        raise AttributeError(name)
    raise ImportError(
        "azureml.core.%s is not available: this script runs under mltrain, whose azureml "
        "compatibility layer provides only Run (get_context, Run(experiment, run_id); log, log_list, "
        "log_row, log_table, log_image, log_confusion_matrix, log_accuracy_table, log_predictions, "
        "log_residuals; tag, set_tags, add_properties; upload_file, upload_files, upload_folder, "
        "get_file_names, download_file; get_status, get_details, cancel; register_model; parent, "
        "child_run, create_children; experiment.workspace.name) and VERSION. Install azureml-core "
        "in the run's environment to use the real SDK, or pass data to the script as run inputs or "
        "arguments." % name
    )


def __getattr__(name):
    return _missing(name)
