"""mltrain's stand-in for ``azureml``: enough of ``azureml.core`` for scripts that log metrics.

Only found when the real ``azureml-core`` is not installed (it sits at the end of ``sys.path``).
"""
