"""``azureml.train`` over mltrain: ``train.hyperdrive``."""
