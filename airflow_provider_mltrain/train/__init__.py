"""Azure ML v1's ``azureml.train`` names: ``from airflow_provider_mltrain.train.hyperdrive import ...``."""
