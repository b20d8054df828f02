"""Early termination policies: Azure ML HyperDrive's semantics, judged on series of primary-metric values."""

from __future__ import annotations

import pytest

from airflow_provider_mltrain.train.hyperdrive import (
    BanditPolicy,
    InvalidSweep,
    MedianStoppingPolicy,
    NoTerminationPolicy,
    TruncationSelectionPolicy,
)


def test_bandit_slack_factor_azure_example():
    # Azure's example: best 0.8 at interval 10, slack_factor 0.2 -> below 0.8 / 1.2 = 0.667 is stopped.
    policy = BanditPolicy(slack_factor=0.2, evaluation_interval=1)
    series = {"best": [0.8] * 10, "near": [0.7] * 10, "far": [0.6] * 10}
    decided = policy.decide(series, ["near", "far"], maximize=True)
    assert set(decided) == {"far"}
    assert "BanditPolicy" in decided["far"] and "interval 10" in decided["far"]


def test_bandit_minimize_and_slack_amount():
    policy = BanditPolicy(slack_amount=0.1)
    series = {"a": [1.0, 0.5], "b": [1.0, 0.55], "c": [1.0, 0.7]}
    assert set(policy.decide(series, ["b", "c"], maximize=False)) == {"c"}


def test_bandit_compares_values_at_the_same_interval():
    # "slow" has 2 values; at interval 2 the leader had 0.5, so 0.48 is within 10% although the
    # leader's later values are far better.
    policy = BanditPolicy(slack_factor=0.1)
    series = {"leader": [0.4, 0.5, 0.9, 0.95], "slow": [0.39, 0.48]}
    assert policy.decide(series, ["slow"], maximize=True) == {}


def test_evaluation_interval_and_delay():
    policy = BanditPolicy(slack_factor=0.1, evaluation_interval=2, delay_evaluation=4)
    leader = [1.0] * 6
    for reports, judged in [(1, False), (2, False), (3, False), (4, True), (5, True)]:
        decided = policy.decide({"leader": leader, "lag": [0.1] * reports}, ["lag"], maximize=True)
        assert bool(decided) is judged, reports
    assert policy.judged_interval(5) == 4
    assert policy.judged_interval(3) is None


def test_median_stopping():
    policy = MedianStoppingPolicy(delay_evaluation=1)
    series = {"a": [0.9, 0.9], "b": [0.8, 0.85], "c": [0.1, 0.2]}
    assert set(policy.decide(series, ["a", "b", "c"], maximize=True)) == {"c"}
    assert policy.decide({"alone": [0.1]}, ["alone"], maximize=True) == {}


def test_truncation_selection():
    policy = TruncationSelectionPolicy(truncation_percentage=25)
    series = {f"r{i}": [float(i)] for i in range(8)}
    assert set(policy.decide(series, list(series), maximize=True)) == {"r0", "r1"}
    assert set(policy.decide(series, list(series), maximize=False)) == {"r6", "r7"}
    finished_only = TruncationSelectionPolicy(truncation_percentage=50, exclude_finished_jobs=True)
    assert finished_only.decide(series, ["r0"], maximize=True) == {}


def test_no_termination():
    assert NoTerminationPolicy().decide({"a": [0.0], "b": [1.0]}, ["a"], maximize=True) == {}


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: BanditPolicy(), "exactly one of slack_factor and slack_amount"),
        (lambda: BanditPolicy(slack_factor=0.1, slack_amount=0.1), "exactly one"),
        (lambda: BanditPolicy(slack_factor=-1), "slack_factor must be a number of at least 0"),
        (lambda: BanditPolicy(slack_factor=0.1, evaluation_interval=0), "evaluation_interval"),
        (lambda: MedianStoppingPolicy(delay_evaluation=-1), "delay_evaluation"),
        (lambda: TruncationSelectionPolicy(truncation_percentage=100), "1 to 99"),
    ],
)
def test_bad_policies(make, match):
    with pytest.raises(InvalidSweep, match=match):
        make()
