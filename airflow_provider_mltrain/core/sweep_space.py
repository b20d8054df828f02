"""Search spaces and samplings of a sweep, under Azure ML v1 HyperDrive's names.

A sampling turns a child's index into its hyperparameters. Grid and random samplings are pure
functions of (seed, index), so a sweep resumed by another process samples exactly what the first
one would have; the Bayesian sampling asks Optuna, given every finished child's result.
"""

from __future__ import annotations

import itertools
import math
import random
import re
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from airflow_provider_mltrain.core.errors import InvalidRunConfig


class InvalidSweep(InvalidRunConfig):
    """A HyperDriveConfig, search space, sampling or policy that cannot run as given."""


# "--lr", "-n", "lr", "batch-size": passed to the script as "--lr 0.01" (a name without a dash gets "--").
PARAMETER_NAME = re.compile(r"-{0,2}[A-Za-z_][A-Za-z0-9_.-]{0,99}")
MAX_GRID = 100_000


@dataclass(frozen=True)
class ParameterExpression:
    """One hyperparameter's distribution; build it with :func:`choice`, :func:`uniform`, ..."""

    kind: str
    args: tuple[Any, ...]

    def sample(self, rng: random.Random) -> Any:
        k, a = self.kind, self.args
        if k == "choice":
            return a[rng.randrange(len(a))]
        if k == "randint":
            return rng.randrange(a[0])
        if k in ("uniform", "quniform"):
            value = rng.uniform(a[0], a[1])
        elif k in ("loguniform", "qloguniform"):
            value = math.exp(rng.uniform(a[0], a[1]))
        elif k in ("normal", "qnormal"):
            value = rng.gauss(a[0], a[1])
        else:  # lognormal, qlognormal
            value = math.exp(rng.gauss(a[0], a[1]))
        return quantize(value, a[2]) if k.startswith("q") else value

    def to_json(self) -> list[Any]:
        return [self.kind, *self.args]

    def __repr__(self) -> str:
        return f"{self.kind}({', '.join(repr(a) for a in self.args)})"


def quantize(value: float, q: float) -> float:
    """Azure's ``round(value / q) * q``, without float noise such as 0.30000000000000004."""
    return float(round(round(value / q) * q, 12))


def _number(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise InvalidSweep(f"{name} must be a finite number, got {value!r}.")
    return float(value)


def _range(kind: str, low: Any, high: Any) -> tuple[float, float]:
    lo, hi = _number(f"{kind}() min_value", low), _number(f"{kind}() max_value", high)
    if not lo < hi:
        raise InvalidSweep(f"{kind}({lo!r}, {hi!r}): min_value must be less than max_value.")
    return lo, hi


def _q(kind: str, q: Any) -> float:
    value = _number(f"{kind}() q", q)
    if value <= 0:
        raise InvalidSweep(f"{kind}() q must be greater than 0, got {q!r}.")
    return value


def _sigma(kind: str, mu: Any, sigma: Any) -> tuple[float, float]:
    m, s = _number(f"{kind}() mu", mu), _number(f"{kind}() sigma", sigma)
    if s <= 0:
        raise InvalidSweep(f"{kind}() sigma must be greater than 0, got {sigma!r}.")
    return m, s


def choice(*options: Any) -> ParameterExpression:
    """One of ``options`` (``choice(16, 32)`` or ``choice([16, 32])``): all numbers, all strings,
    or all bools."""
    values = (
        list(options[0])
        if len(options) == 1 and isinstance(options[0], (list, tuple, range))
        else list(options)
    )
    if not values:
        raise InvalidSweep("choice() needs at least one option, e.g. choice(16, 32, 64).")
    found = {_family(v) for v in values}
    if None in found:
        bad = next(v for v in values if _family(v) is None)
        raise InvalidSweep(
            f"choice() options must be numbers, strings or bools; {bad!r} "
            f"({type(bad).__name__}) is none of them."
        )
    families = {f for f in found if f is not None}
    if len(families) > 1:
        raise InvalidSweep(
            f"choice() options mix types ({', '.join(sorted(families))}): {values!r}. Use one type, "
            "e.g. all numbers or all strings, so results can be compared and sampled by a model."
        )
    if len(set(map(repr, values))) != len(values):
        raise InvalidSweep(f"choice() options repeat a value: {values!r}.")
    return ParameterExpression("choice", tuple(values))


def _family(value: Any) -> str | None:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "number" if math.isfinite(value) else None
    return "string" if isinstance(value, str) else None


def randint(upper: Any) -> ParameterExpression:
    """A random integer in ``[0, upper)``."""
    if isinstance(upper, bool) or not isinstance(upper, int) or upper < 1:
        raise InvalidSweep(f"randint(upper) needs an int of at least 1, got {upper!r}.")
    return ParameterExpression("randint", (upper,))


def uniform(min_value: Any, max_value: Any) -> ParameterExpression:
    """A float uniformly distributed between ``min_value`` and ``max_value``."""
    return ParameterExpression("uniform", _range("uniform", min_value, max_value))


def quniform(min_value: Any, max_value: Any, q: Any) -> ParameterExpression:
    """``round(uniform(min_value, max_value) / q) * q``."""
    return ParameterExpression("quniform", (*_range("quniform", min_value, max_value), _q("quniform", q)))


def loguniform(min_value: Any, max_value: Any) -> ParameterExpression:
    """``exp(uniform(min_value, max_value))``: bounds are natural logarithms, as in Azure ML
    (``loguniform(math.log(1e-4), math.log(1e-1))`` for a learning rate between 1e-4 and 0.1)."""
    return ParameterExpression("loguniform", _range("loguniform", min_value, max_value))


def qloguniform(min_value: Any, max_value: Any, q: Any) -> ParameterExpression:
    """``round(exp(uniform(min_value, max_value)) / q) * q``."""
    lo, hi = _range("qloguniform", min_value, max_value)
    return ParameterExpression("qloguniform", (lo, hi, _q("qloguniform", q)))


def normal(mu: Any, sigma: Any) -> ParameterExpression:
    """A float normally distributed with mean ``mu`` and standard deviation ``sigma``."""
    return ParameterExpression("normal", _sigma("normal", mu, sigma))


def qnormal(mu: Any, sigma: Any, q: Any) -> ParameterExpression:
    """``round(normal(mu, sigma) / q) * q``."""
    return ParameterExpression("qnormal", (*_sigma("qnormal", mu, sigma), _q("qnormal", q)))


def lognormal(mu: Any, sigma: Any) -> ParameterExpression:
    """``exp(normal(mu, sigma))``."""
    return ParameterExpression("lognormal", _sigma("lognormal", mu, sigma))


def qlognormal(mu: Any, sigma: Any, q: Any) -> ParameterExpression:
    """``round(exp(normal(mu, sigma)) / q) * q``."""
    return ParameterExpression("qlognormal", (*_sigma("qlognormal", mu, sigma), _q("qlognormal", q)))


EXPRESSIONS = {
    f.__name__: f
    for f in (
        choice,
        randint,
        uniform,
        quniform,
        loguniform,
        qloguniform,
        normal,
        qnormal,
        lognormal,
        qlognormal,
    )
}


def check_space(
    owner: str, space: Any, allowed: Sequence[str] | None = None
) -> dict[str, ParameterExpression]:
    """The search space as a dict of parameter names to expressions, or :class:`InvalidSweep`."""
    if not isinstance(space, Mapping):
        raise InvalidSweep(
            f"{owner} parameter_space must be a dict of parameter names to expressions, e.g. "
            f"{{'--lr': uniform(0.001, 0.1)}}; got {type(space).__name__}."
        )
    if not space:
        raise InvalidSweep(
            f"{owner} parameter_space is empty: a sweep needs at least one hyperparameter, e.g. "
            "{'--lr': uniform(0.001, 0.1)}."
        )
    flags: dict[str, str] = {}
    for name, expression in space.items():
        if not isinstance(name, str) or not PARAMETER_NAME.fullmatch(name):
            raise InvalidSweep(
                f"{owner}: parameter name {name!r} is not valid: use letters, digits, '_', '-' and "
                "'.', optionally after '-' or '--' (e.g. '--learning-rate')."
            )
        if not isinstance(expression, ParameterExpression):
            raise InvalidSweep(
                f"{owner}: parameter {name!r} must be an expression such as choice(...) or "
                f"uniform(...), got {expression!r}."
            )
        if allowed is not None and expression.kind not in allowed:
            raise InvalidSweep(
                f"{owner}: parameter {name!r} is {expression.kind}(), which this sampling does not "
                f"take; it takes {', '.join(a + '()' for a in allowed)}."
            )
        flag = argument_flag(name)
        if flag in flags:
            raise InvalidSweep(
                f"{owner}: parameters {flags[flag]!r} and {name!r} are the same argument {flag}."
            )
        flags[flag] = name
    return dict(space)


def argument_flag(name: str) -> str:
    return name if name.startswith("-") else "--" + name


def arguments_for(hyperparameters: Mapping[str, Any]) -> list[str]:
    """The script arguments of one child: ``["--lr", "0.01", "--batch", "32"]``."""
    out: list[str] = []
    for name, value in hyperparameters.items():
        out += [argument_flag(name), repr(value) if isinstance(value, float) else str(value)]
    return out


class HyperParameterSampling:
    """Base of the samplings: a search space, a seed, and ``sample(index, history)``."""

    kind = ""
    allowed: Sequence[str] | None = None

    def __init__(
        self, parameter_space: Any, properties: Mapping[str, Any] | None = None, seed: int | None = None
    ):
        owner = type(self).__name__
        self.parameter_space = check_space(owner, parameter_space, self.allowed)
        if seed is None and properties and "rngseed" in properties:
            seed = properties["rngseed"]
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise InvalidSweep(f"{owner} seed must be an int or None, got {seed!r}.")
        self.seed = seed

    @property
    def size(self) -> int | None:
        """How many distinct children the space yields, when that is finite and fixed (a grid)."""
        return None

    def with_seed(self) -> int:
        """The seed to record on the sweep: the one given, else a fresh one (recorded, so a
        resumed sweep samples as the first driver would have)."""
        return self.seed if self.seed is not None else secrets.randbelow(2**31)

    def sample(
        self, index: int, seed: int, history: Sequence[tuple[dict[str, Any], float | None]], maximize: bool
    ) -> dict[str, Any] | None:
        """Hyperparameters of child ``index``; None when the space is exhausted. ``history``
        holds each ended child's hyperparameters and best primary metric (None: not logged)."""
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        return {
            "sampling": self.kind,
            "parameter_space": {k: v.to_json() for k, v in self.parameter_space.items()},
        }

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.parameter_space!r}, seed={self.seed!r})"


class GridParameterSampling(HyperParameterSampling):
    """Every combination of the ``choice`` options, in order; the sweep ends when all have run."""

    kind = "grid"
    allowed = ("choice",)

    def __init__(self, parameter_space: Any, properties: Mapping[str, Any] | None = None):
        super().__init__(parameter_space, properties)
        if self.size > MAX_GRID:
            raise InvalidSweep(
                f"GridParameterSampling has {self.size} combinations; at most {MAX_GRID} are allowed."
            )

    @property
    def size(self) -> int:
        return math.prod(len(e.args) for e in self.parameter_space.values())

    def sample(self, index, seed, history, maximize):  # type: ignore[no-untyped-def]
        if index >= self.size:
            return None
        combo = next(
            itertools.islice(itertools.product(*(e.args for e in self.parameter_space.values())), index, None)
        )
        return dict(zip(self.parameter_space, combo))


class RandomParameterSampling(HyperParameterSampling):
    """Independent random draws; the same seed gives the same children in the same order."""

    kind = "random"

    def sample(self, index, seed, history, maximize):  # type: ignore[no-untyped-def]
        rng = random.Random(f"{seed}:{index}")
        return {name: expression.sample(rng) for name, expression in self.parameter_space.items()}


class BayesianParameterSampling(HyperParameterSampling):
    """Each child's hyperparameters chosen by an Optuna sampler (TPE by default) from the results
    of the children that ended before it. Needs ``pip install 'airflow-provider-mltrain[sweep]'``.

    Azure ML's rules hold: ``choice``, ``uniform``, ``quniform``, ``loguniform``, ``qloguniform``
    and ``randint`` only, and no early termination policy. With one child at a time and a seed,
    a sweep is reproducible; with more, it depends on which children ended first.
    """

    kind = "bayesian"
    allowed = ("choice", "uniform", "quniform", "loguniform", "qloguniform", "randint")

    def __init__(
        self,
        parameter_space: Any,
        properties: Mapping[str, Any] | None = None,
        seed: int | None = None,
        sampler: str = "tpe",
        n_startup_trials: int = 5,
    ):
        super().__init__(parameter_space, properties, seed)
        if sampler not in ("tpe", "gp"):
            raise InvalidSweep(f"BayesianParameterSampling sampler must be 'tpe' or 'gp', got {sampler!r}.")
        if (
            isinstance(n_startup_trials, bool)
            or not isinstance(n_startup_trials, int)
            or n_startup_trials < 1
        ):
            raise InvalidSweep(
                f"BayesianParameterSampling n_startup_trials must be an int >= 1, got {n_startup_trials!r}."
            )
        self.sampler = sampler
        self.n_startup_trials = n_startup_trials
        _optuna()  # refuse at construction, not at the first child

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "sampler": self.sampler, "n_startup_trials": self.n_startup_trials}

    def sample(self, index, seed, history, maximize):  # type: ignore[no-untyped-def]
        optuna = _optuna()
        distributions = {name: _distribution(optuna, e) for name, e in self.parameter_space.items()}
        child_seed = (seed * 1_000_003 + index) % 2**32
        if self.sampler == "gp":
            sampler = optuna.samplers.GPSampler(seed=child_seed, n_startup_trials=self.n_startup_trials)
        else:
            sampler = optuna.samplers.TPESampler(seed=child_seed, n_startup_trials=self.n_startup_trials)
        study = optuna.create_study(direction="maximize" if maximize else "minimize", sampler=sampler)
        for params, value in history:
            internal = {
                n: _internal(self.parameter_space[n], distributions[n], params[n])
                for n in distributions
                if n in params
            }
            if len(internal) != len(distributions):
                continue
            state = optuna.trial.TrialState.COMPLETE if value is not None else optuna.trial.TrialState.FAIL
            study.add_trial(
                optuna.trial.create_trial(
                    params=internal, distributions=distributions, value=value, state=state
                )
            )
        trial = study.ask(distributions)
        out = {}
        for name, expression in self.parameter_space.items():
            value = trial.params[name]
            if expression.kind in ("quniform", "qloguniform"):
                value = quantize(value, expression.args[2])
            out[name] = value
        return out


def _optuna() -> Any:
    try:
        import optuna
    except ImportError as exc:
        raise InvalidSweep(
            "BayesianParameterSampling needs Optuna: pip install 'airflow-provider-mltrain[sweep]'."
        ) from exc
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


def _distribution(optuna: Any, expression: ParameterExpression) -> Any:
    k, a = expression.kind, expression.args
    if k == "choice":
        return optuna.distributions.CategoricalDistribution(a)
    if k == "randint":
        return optuna.distributions.IntDistribution(0, a[0] - 1)
    if k in ("uniform", "quniform"):
        return optuna.distributions.FloatDistribution(a[0], a[1])
    return optuna.distributions.FloatDistribution(math.exp(a[0]), math.exp(a[1]), log=True)


def _internal(expression: ParameterExpression, distribution: Any, value: Any) -> Any:
    """A recorded value as Optuna's distribution holds it (a quantized value may sit just outside)."""
    if expression.kind == "choice":
        return value
    if expression.kind == "randint":
        return int(value)
    return min(max(float(value), distribution.low), distribution.high)
