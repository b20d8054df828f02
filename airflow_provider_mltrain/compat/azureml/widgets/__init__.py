"""``azureml.widgets`` over mltrain: ``RunDetails(run).show()`` as a text progress view."""

from airflow_provider_mltrain.compat.azureml.widgets.run_details import RunDetails

__all__ = ["RunDetails"]
