"""Early termination policies of a sweep, with Azure ML v1 HyperDrive's names and semantics.

An *interval* is one report of the primary metric by a child: its k-th logged value is its value
at interval k. A policy judges a child at interval k when k is a multiple of
``evaluation_interval`` and at least ``delay_evaluation``, against every child (running or ended)
that reached interval k. A child is judged at its latest such interval on every pass of the
driver, so a laggard is stopped as soon as a better child has reached the same point.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from typing import Any

from airflow_provider_mltrain.core.sweep_space import InvalidSweep


def _int(owner: str, name: str, value: Any, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise InvalidSweep(f"{owner} {name} must be an int of at least {low}, got {value!r}.")
    return value


class EarlyTerminationPolicy:
    """Base of the policies: when to judge, and whom to stop (``decide``)."""

    kind = ""

    def __init__(self, evaluation_interval: int = 1, delay_evaluation: int = 0):
        owner = type(self).__name__
        self.evaluation_interval = _int(owner, "evaluation_interval", evaluation_interval, 1)
        self.delay_evaluation = _int(owner, "delay_evaluation", delay_evaluation, 0)

    def judged_interval(self, reports: int) -> int | None:
        """The latest interval (1-based) at which a child with ``reports`` values is judged."""
        k = reports - reports % self.evaluation_interval
        return k if k >= max(1, self.delay_evaluation) else None

    def decide(
        self, series: Mapping[str, Sequence[float]], active: Sequence[str], maximize: bool
    ) -> dict[str, str]:
        """``{child id: reason}`` of the ``active`` children to stop, given every child's series
        of primary-metric values (ended children included)."""
        out = {}
        for child in active:
            k = self.judged_interval(len(series.get(child, ())))
            if k is None:
                continue
            peers = {c: list(v[:k]) for c, v in series.items() if len(v) >= k}
            reason = self._judge(child, k, peers, maximize)
            if reason:
                out[child] = reason
        return out

    def _judge(self, child: str, k: int, peers: dict[str, list[float]], maximize: bool) -> str | None:
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        return {
            "policy": self.kind,
            "evaluation_interval": self.evaluation_interval,
            "delay_evaluation": self.delay_evaluation,
        }

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in self.describe().items() if k != "policy")
        return f"{type(self).__name__}({fields})"


class NoTerminationPolicy(EarlyTerminationPolicy):
    """Every child runs to its end (the default)."""

    kind = "none"

    def decide(self, series, active, maximize):  # type: ignore[no-untyped-def]
        return {}


class BanditPolicy(EarlyTerminationPolicy):
    """Stop a child whose value at an interval is not within the slack of the best value any child
    had at that interval. ``slack_factor`` is a ratio: maximizing, a child below ``best / (1 +
    slack_factor)`` is stopped; minimizing, one above ``best * (1 + slack_factor)``.
    ``slack_amount`` is an absolute distance from the best. (For a negative best the factor is
    applied to its magnitude, so the allowed band always lies on the worse side of the best.)
    """

    kind = "bandit"

    def __init__(
        self,
        evaluation_interval: int = 1,
        slack_factor: float | None = None,
        slack_amount: float | None = None,
        delay_evaluation: int = 0,
    ):
        super().__init__(evaluation_interval, delay_evaluation)
        if (slack_factor is None) == (slack_amount is None):
            raise InvalidSweep(
                "BanditPolicy needs exactly one of slack_factor and slack_amount, e.g. slack_factor=0.1."
            )
        for name, value in (("slack_factor", slack_factor), ("slack_amount", slack_amount)):
            if value is not None and (
                isinstance(value, bool)
                or not isinstance(value, (int, float))
                or not math.isfinite(value)
                or value < 0
            ):
                raise InvalidSweep(f"BanditPolicy {name} must be a number of at least 0, got {value!r}.")
        self.slack_factor = slack_factor
        self.slack_amount = slack_amount

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "slack_factor": self.slack_factor, "slack_amount": self.slack_amount}

    def _judge(self, child, k, peers, maximize):  # type: ignore[no-untyped-def]
        values = {c: v[k - 1] for c, v in peers.items()}
        best = max(values.values()) if maximize else min(values.values())
        if self.slack_factor is not None:
            slack = abs(best) * (
                self.slack_factor / (1 + self.slack_factor) if maximize else self.slack_factor
            )
            how = f"slack_factor {self.slack_factor}"
        else:
            slack = float(self.slack_amount or 0)
            how = f"slack_amount {self.slack_amount}"
        bound = best - slack if maximize else best + slack
        mine = values[child]
        if (mine < bound) if maximize else (mine > bound):
            return (
                f"BanditPolicy: at interval {k} its primary metric {mine:g} is "
                f"{'below' if maximize else 'above'} {bound:g}, the best {best:g} within {how}"
            )
        return None


class MedianStoppingPolicy(EarlyTerminationPolicy):
    """Stop a child whose best value up to an interval is worse than the median of every child's
    running average up to that interval."""

    kind = "median"

    def __init__(self, evaluation_interval: int = 1, delay_evaluation: int = 5):
        super().__init__(evaluation_interval, delay_evaluation)

    def _judge(self, child, k, peers, maximize):  # type: ignore[no-untyped-def]
        if len(peers) < 2:
            return None
        median = statistics.median(sum(v) / len(v) for v in peers.values())
        best = max(peers[child]) if maximize else min(peers[child])
        if (best < median) if maximize else (best > median):
            return (
                f"MedianStoppingPolicy: at interval {k} its best primary metric {best:g} is worse "
                f"than the median {median:g} of the running averages"
            )
        return None


class TruncationSelectionPolicy(EarlyTerminationPolicy):
    """Stop a child whose value at an interval is in the worst ``truncation_percentage`` percent of
    the children's values at that interval (``exclude_finished_jobs``: ended children not counted)."""

    kind = "truncation"

    def __init__(
        self,
        truncation_percentage: int,
        evaluation_interval: int = 1,
        delay_evaluation: int = 0,
        exclude_finished_jobs: bool = False,
    ):
        super().__init__(evaluation_interval, delay_evaluation)
        self.truncation_percentage = _int(
            "TruncationSelectionPolicy", "truncation_percentage", truncation_percentage, 1
        )
        if truncation_percentage > 99:
            raise InvalidSweep(
                "TruncationSelectionPolicy truncation_percentage must be 1 to 99, got "
                f"{truncation_percentage!r}."
            )
        if not isinstance(exclude_finished_jobs, bool):
            raise InvalidSweep("TruncationSelectionPolicy exclude_finished_jobs must be True or False.")
        self.exclude_finished_jobs = exclude_finished_jobs

    def describe(self) -> dict[str, Any]:
        return {
            **super().describe(),
            "truncation_percentage": self.truncation_percentage,
            "exclude_finished_jobs": self.exclude_finished_jobs,
        }

    def decide(self, series, active, maximize):  # type: ignore[no-untyped-def]
        if self.exclude_finished_jobs:
            series = {c: v for c, v in series.items() if c in active}
        return super().decide(series, active, maximize)

    def _judge(self, child, k, peers, maximize):  # type: ignore[no-untyped-def]
        cut = len(peers) * self.truncation_percentage // 100
        if cut < 1:
            return None
        # Worst first; ties broken by id so every driver stops the same children.
        ranked = sorted(peers, key=lambda c: ((peers[c][k - 1] if maximize else -peers[c][k - 1]), c))
        if child in ranked[:cut]:
            return (
                f"TruncationSelectionPolicy: at interval {k} its primary metric {peers[child][k - 1]:g} "
                f"is in the worst {self.truncation_percentage}% of {len(peers)} children"
            )
        return None
