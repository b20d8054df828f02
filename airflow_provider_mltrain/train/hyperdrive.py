"""``azureml.train.hyperdrive`` under mltrain: change the import, keep the sweep code.

    from airflow_provider_mltrain.train.hyperdrive import (
        BanditPolicy, HyperDriveConfig, PrimaryMetricGoal, RandomParameterSampling, choice, uniform,
    )

See docs/sweeps.md.
"""

from airflow_provider_mltrain.core.sweep import HyperDriveConfig, PrimaryMetricGoal, SweepRun
from airflow_provider_mltrain.core.sweep_policy import (
    BanditPolicy,
    EarlyTerminationPolicy,
    MedianStoppingPolicy,
    NoTerminationPolicy,
    TruncationSelectionPolicy,
)
from airflow_provider_mltrain.core.sweep_space import (
    BayesianParameterSampling,
    GridParameterSampling,
    HyperParameterSampling,
    InvalidSweep,
    RandomParameterSampling,
    choice,
    lognormal,
    loguniform,
    normal,
    qlognormal,
    qloguniform,
    qnormal,
    quniform,
    randint,
    uniform,
)

# Azure ML v1 calls the sweep's parent run a HyperDriveRun.
HyperDriveRun = SweepRun

__all__ = [
    "BanditPolicy",
    "BayesianParameterSampling",
    "EarlyTerminationPolicy",
    "GridParameterSampling",
    "HyperDriveConfig",
    "HyperDriveRun",
    "HyperParameterSampling",
    "InvalidSweep",
    "MedianStoppingPolicy",
    "NoTerminationPolicy",
    "PrimaryMetricGoal",
    "RandomParameterSampling",
    "SweepRun",
    "TruncationSelectionPolicy",
    "choice",
    "lognormal",
    "loguniform",
    "normal",
    "qlognormal",
    "qloguniform",
    "qnormal",
    "quniform",
    "randint",
    "uniform",
]
