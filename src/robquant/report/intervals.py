"""Inference over seeds and test examples: intervals that count every source of variation.

Every model of a study is evaluated on the same test examples, and a quantized cell is compared
with the FP reference of its own seed, so a difference is paired twice: by seed and by example.
Per-example outcomes ``y[s, i]`` (1 = correct; for a comparison, a contrast such as cell minus
reference) follow a crossed random-effects model::

    y[s, i] = mu + a[s] + b[i] + e[s, i]

- ``a``: what a seed changes (its FP model when seeds train their own, the calibration sample, the
  fine-tuning data order, the attacks' random starts);
- ``b``: which examples the test sample happens to hold (one sample, shared by every seed);
- ``e``: the seed-by-example interaction (an example one seed's model gets right and another's not).

The estimate is the mean over S seeds and n examples. Its variance is
``sigma_a^2 / S + sigma_b^2 / n + sigma_e^2 / (S n)``, estimated without bias by the two-way ANOVA
mean squares, ``(MS_seed + MS_example - MS_residual) / (S n)``, with Satterthwaite's degrees of
freedom for the t quantile. Where a negative variance component makes that sum fall below the larger
of MS_seed and MS_example, the larger mean square is used alone (with S - 1 or n - 1 degrees of
freedom). That floor drops the seed term exactly when MS_seed fell below MS_residual by chance, and
then undercovers: simulated by ``benchmarks/interval_coverage.py`` (table in docs/reports.md), the
studies that took it were covered 0.82 of the time at S = 2 and 0.90 at S = 3 (0.17 and 0.71 in the
worst configuration). The estimate is not a bootstrap either: a crossed bootstrap over few seeds
weighs the interaction and the seed term differently. A seed-only t interval estimates
``sigma_a^2 / S + sigma_e^2 / (S n)`` and leaves out ``sigma_b^2 / n``, the
test-sample term, which dominates when every seed shares one FP model. With one seed only the
example terms can be counted, and :attr:`Estimate.seeds` says so. Where every outcome is alike (no
example and no seed differs) the half-width is the rule of three, 3 / n: no variation seen in n
examples bounds the share that varies. ``tests/test_intervals.py`` checks the coverage by simulation.

Trend labels draw the mean vector of several conditions (bit-widths) from the same model: the seed
part as a multivariate t over the seeds' residuals (n - 1 degrees of freedom), the example part as a
normal with the examples' covariance.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats

POWER = 0.8  # the power the planned sizes are for
RULE_OF_THREE = 3.0  # no variation in n examples: a 95 % bound of 3 / n on the share that varies
MAX_EXAMPLES = 1_000_000  # beyond this a planned size is reported as out of reach


@dataclass(frozen=True)
class Estimate:
    """A mean over seeds and test examples with its 95 % interval and variance components.

    Attributes:
        mean: The estimate (a share, or a difference of shares).
        se: Its standard error.
        df: Degrees of freedom of the t quantile (Satterthwaite).
        seeds: Seeds it is taken over.
        examples: Test examples it is taken over (every seed on the same ones).
        seed_var: sigma_a^2 (NaN with one seed: not estimable).
        example_var: sigma_b^2 (with one seed: sigma_b^2 + sigma_e^2).
        residual_var: sigma_e^2 (NaN with one seed).
        level: The interval's confidence level.
    """

    mean: float
    se: float
    df: float
    seeds: int
    examples: int
    seed_var: float
    example_var: float
    residual_var: float
    level: float = 0.95

    @property
    def half(self) -> float:
        """Half-width of the interval (NaN when nothing could be estimated)."""
        if self.examples == 0 or math.isnan(self.se):
            return math.nan
        return float(stats.t.ppf(0.5 + self.level / 2, max(self.df, 1.0)) * self.se) if self.se > 0 else 0.0

    @property
    def low(self) -> float:
        return self.mean - self.half

    @property
    def high(self) -> float:
        return self.mean + self.half

    def p_beyond(self, bound: float, below: bool) -> float:
        """One-sided p-value that the truth lies beyond ``bound`` (``below`` it, or above it): small when
        the interval sits on that side; the half of the two-sided interval's level (0.025 at 95 %) is
        the interval's own decision."""
        if self.examples == 0 or math.isnan(self.se):
            return 1.0
        distance = (bound - self.mean) if below else (self.mean - bound)
        if self.se == 0:
            return 0.0 if distance > 0 else 1.0
        return float(stats.t.sf(distance / self.se, max(self.df, 1.0)))

    def variance_at(self, seeds: int, examples: int) -> float:
        """The variance of the estimate with ``seeds`` seeds and ``examples`` examples, planned from
        the observed components (the seed term left out when it could not be estimated)."""
        a = 0.0 if math.isnan(self.seed_var) else self.seed_var
        e = 0.0 if math.isnan(self.residual_var) else self.residual_var
        return a / seeds + self.example_var / examples + e / (seeds * examples)

    def detectable(self, power: float = POWER) -> float:
        """The smallest distance from a decision boundary this design detects with ``power``: the
        interval excludes the boundary when the truth is that far from it."""
        z = stats.norm.ppf(power)
        return float((stats.t.ppf(0.5 + self.level / 2, max(self.df, 1.0)) + z) * self.se)

    def needed(self, distance: float, power: float = POWER, max_examples: int = MAX_EXAMPLES
               ) -> tuple[int | None, int]:
        """The design that decides a truth ``distance`` from a boundary with ``power``, planned from the
        observed variance components: ``(examples, seeds)``, more test examples at this design's seeds
        where at most ``max_examples`` (the test split) do, else all ``max_examples`` and the fewest
        seeds that do (the seed term dominates); examples None when 100 seeds would not do either."""
        target = (abs(distance) / (stats.norm.ppf(0.5 + self.level / 2) + stats.norm.ppf(power))) ** 2
        a = 0.0 if math.isnan(self.seed_var) else self.seed_var
        e = 0.0 if math.isnan(self.residual_var) else self.residual_var

        def examples_at(seeds: int) -> float:
            room = target - a / seeds
            return math.inf if room <= 0 else max(1, math.ceil((self.example_var + e / seeds) / room))

        seeds = max(self.seeds, 1)
        if examples_at(seeds) <= max_examples:
            return int(examples_at(seeds)), seeds
        for more in range(seeds + 1, 101):
            if examples_at(more) <= max_examples:
                return max_examples, more
        return None, seeds


def _alike(mean: float, seeds: int, n: int, level: float) -> Estimate:
    """Every outcome alike (no example and no seed differs): the rule of three, 3 / n, bounds the
    share that varies; its half-width is that bound."""
    no_seed_term = math.nan if seeds == 1 else 0.0
    return Estimate(mean, RULE_OF_THREE / n / stats.norm.ppf(0.5 + level / 2), math.inf, seeds, n, no_seed_term, 0.0,
                    no_seed_term, level)


def estimate(y: np.ndarray, level: float = 0.95) -> Estimate:
    """The crossed-design estimate of ``y`` ``(S seeds, n examples)``: its mean, standard error and
    Satterthwaite degrees of freedom (see the module docstring)."""
    y = np.asarray(y, dtype=float)
    if y.ndim != 2:
        raise ValueError(f"y must be (seeds, examples), got shape {y.shape}")
    s, n = y.shape
    if s == 0 or n == 0:
        return Estimate(math.nan, math.nan, math.nan, s, n, math.nan, math.nan, math.nan, level)
    mean = float(y.mean())
    ms_s, ms_i, ms_e = (float(m[0, 0]) for m in _mean_squares(y[:, :, None]))
    if s == 1:
        var = ms_i / n if n > 1 else math.nan
        if var == 0:
            return _alike(mean, 1, n, level)
        return Estimate(mean, math.sqrt(var) if var == var else math.nan, n - 1, 1, n, math.nan, ms_i,
                        math.nan, level)
    if n == 1:  # the seeds' spread only
        return Estimate(mean, math.sqrt(ms_s / s), s - 1, s, 1, ms_s, 0.0, 0.0, level)
    total = ms_s + ms_i - ms_e
    if ms_s == ms_i == ms_e == 0:
        return _alike(mean, s, n, level)
    floor = max(ms_s, ms_i)  # each expected value is below the true total: a negative estimate is noise
    if total < floor:
        total, df = floor, (s - 1 if ms_s >= ms_i else n - 1)
    else:
        denom = ms_s**2 / (s - 1) + ms_i**2 / (n - 1) + ms_e**2 / ((s - 1) * (n - 1))
        df = total**2 / denom if denom > 0 else math.inf
    return Estimate(mean, math.sqrt(total / (s * n)), float(min(df, 1e9)), s, n, max(0.0, (ms_s - ms_e) / n),
                    max(0.0, (ms_i - ms_e) / s), ms_e, level)


def _mean_squares(y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Two-way ANOVA mean squares of ``y`` ``(S, n, k)``: ``(MS_seed, MS_example, MS_residual)``, each
    ``(k, k)`` (cross-products for several conditions; NaN where not estimable)."""
    s, n, k = y.shape
    seed_means = y.mean(1)  # (S, k)
    example_means = y.mean(0)  # (n, k)
    grand = y.mean((0, 1))  # (k,)
    nan = np.full((k, k), math.nan)
    ds, di = seed_means - grand, example_means - grand
    ms_s = n * ds.T @ ds / (s - 1) if s > 1 else nan
    ms_i = s * di.T @ di / (n - 1) if n > 1 else nan
    if s > 1 and n > 1:
        r = (y - seed_means[:, None, :] - example_means[None, :, :] + grand).reshape(s * n, k)
        ms_e = r.T @ r / ((s - 1) * (n - 1))
    else:
        ms_e = nan
    return ms_s, ms_i, ms_e


def draw_means(y: np.ndarray, n_draws: int, rng: np.random.Generator) -> np.ndarray:
    """``(n_draws, k)`` plausible mean vectors of ``y`` ``(S, n, k)``: the observed means plus a
    seed part (a multivariate t over the seeds' residual mean vectors, S - 1 degrees of freedom) and
    an example part (normal, the examples' covariance net of the interaction), so that bit-widths
    evaluated on the same examples and sharing a seed's parent keep their covariance."""
    y = np.asarray(y, dtype=float)
    s, n, k = y.shape
    draws = np.broadcast_to(y.mean((0, 1)), (n_draws, k)).copy()
    seed_means = y.mean(1)  # (S, k)
    if s > 1:
        resid = seed_means - seed_means.mean(0)
        scale = np.sqrt((s - 1) / rng.chisquare(s - 1, size=n_draws))
        draws += scale[:, None] * (rng.standard_normal((n_draws, s)) @ resid) / math.sqrt(s * (s - 1))
    if n > 1:
        _, ms_i, ms_e = _mean_squares(y)
        cov = (ms_i - (ms_e if s > 1 else 0.0)) / (s * n)
        w, v = np.linalg.eigh((cov + cov.T) / 2)
        root = v * np.sqrt(np.clip(w, 0.0, None))  # (k, k): cov projected on the PSD cone
        draws += rng.standard_normal((n_draws, k)) @ root.T
    return draws


def seed_only(values: list[float], level: float = 0.95) -> tuple[float, float]:
    """The old interval, for comparison: mean and t half-width over per-seed values alone."""
    v = np.asarray(values, dtype=float)
    if len(v) < 2:
        return float(v.mean()) if len(v) else math.nan, math.nan
    return float(v.mean()), float(stats.t.ppf(0.5 + level / 2, len(v) - 1) * v.std(ddof=1) / math.sqrt(len(v)))
