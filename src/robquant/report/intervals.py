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
``sigma_a^2 / S + sigma_b^2 / n + sigma_e^2 / (S n)``, which the two-way ANOVA mean squares split in two
parts, each estimated from mean squares of its own degrees of freedom:

- the **seed part**, ``sigma_a^2 / S + sigma_e^2 / (S n)``, the variance of the seeds' means: MS_seed /
  (S n), with S - 1 degrees of freedom. Its expectation is at least the interaction's, which MS_residual
  estimates on (S - 1)(n - 1) degrees of freedom. With few seeds MS_seed often falls below MS_residual by
  chance, and a seed effect of the interaction's size is still well within what S - 1 degrees of freedom
  allow: the seed part is ``max(MS_seed, SEED_FLOOR x MS_residual)``, SEED_FLOOR = 1.5. With a floor of
  1 MS_residual, the studies in which MS_seed fell below MS_residual were covered 0.90 of the time in the
  worst configuration simulated; with 1.5, 0.95 (the simulation's grid with 3,000 studies each).
- the **example part**, ``sigma_b^2 / n``: ``(MS_example - MS_residual) / (S n)`` (0 where negative), with
  Satterthwaite's degrees of freedom, plus two pseudo-examples (one changed each way, ``2 / n^2``): with
  few changed examples the normal interval undercovers as the Wald interval of a proportion does, and
  two pseudo-observations mend it as they mend that one (Agresti and Caffo).

The 95 % half-width is ``sqrt(t(S - 1)^2 seed_part + t(df)^2 example_part)``: each part with the t
quantile of its own degrees of freedom, combined in quadrature. For two independent means with separately
estimated variances this interval covers at least its level whatever the ratio of the variances
(Banerjee 1961); where the seeds dominate it is the t interval over the seeds' means, where the test sample
dominates it is the per-example one. Simulated by ``benchmarks/interval_coverage.py`` over seed, example
and interaction effects, S = 2-10 and n = 100-10,000 (table in docs/reports.md), it covers at least 0.94 in
every configuration; its price is width where few seeds leave the seed part uncertain (t(1) = 12.7, t(2)
= 4.3). It replaced an estimate with one Satterthwaite t for ``MS_seed + MS_example - MS_residual`` and a
floor that dropped the seed term whenever MS_seed fell below MS_residual, which covered 0.82 of the time
in the studies that took the floor at S = 2 and 0.90 at S = 3. A seed-only t interval estimates
``sigma_a^2 / S + sigma_e^2 / (S n)`` and leaves out ``sigma_b^2 / n``, the test-sample term, which
dominates when every seed shares one FP model. With one seed only the example terms can be counted
(``MS_example / n`` at n - 1 degrees of freedom, plus the pseudo-examples), and :attr:`Estimate.seeds`
says so. Where every outcome is alike (no example and no seed differs) the half-width is the rule of
three, 3 / n: no variation seen in n examples bounds the share that varies. ``tests/test_intervals.py``
checks the coverage by simulation.

Trend labels draw the mean vector of several conditions (bit-widths) from the same model: the seed
part as a multivariate t over the seeds' residuals (n - 1 degrees of freedom), the example part as a
normal with the examples' covariance.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import optimize, stats

POWER = 0.8  # the power the planned sizes are for
RULE_OF_THREE = 3.0  # no variation in n examples: a 95 % bound of 3 / n on the share that varies
MAX_EXAMPLES = 1_000_000  # beyond this a planned size is reported as out of reach
PSEUDO = 2.0  # pseudo-examples, one changed each way, added to the example part (few changed examples)
SEED_FLOOR = 1.5  # the seed part's mean square is at least this many MS_residuals


@dataclass(frozen=True)
class Estimate:
    """A mean over seeds and test examples with its 95 % interval and variance components.

    The interval is ``mean ± sqrt(t(S - 1)^2 seed_part + t(example_df)^2 example_part)`` (see the
    module docstring): each part of the mean's variance with the quantile of its own degrees of freedom.

    Attributes:
        mean: The estimate (a share, or a difference of shares).
        seed_part: The variance the seeds bring to the mean, ``max(MS_seed, 1.5 MS_residual) / (S n)`` (0 with
            one seed: not estimable).
        example_part: The variance the test sample brings, ``(max(MS_example - MS_residual, 0) + 2 S / n)
            / (S n)`` (two pseudo-examples; with one seed ``(MS_example + 2 / n) / n``).
        example_df: Degrees of freedom of the example part (Satterthwaite's for the difference of mean
            squares; n - 1 with one seed; inf where the rule of three stands in).
        seeds: Seeds it is taken over.
        examples: Test examples it is taken over (every seed on the same ones).
        seed_var: sigma_a^2 (NaN with one seed: not estimable).
        example_var: sigma_b^2 (with one seed: sigma_b^2 + sigma_e^2).
        residual_var: sigma_e^2 (NaN with one seed).
        level: The interval's confidence level.
    """

    mean: float
    seed_part: float
    example_part: float
    example_df: float
    seeds: int
    examples: int
    seed_var: float
    example_var: float
    residual_var: float
    level: float = 0.95

    @property
    def se(self) -> float:
        """The standard error, ``sqrt(seed_part + example_part)``."""
        return math.sqrt(self.seed_part + self.example_part) if self.examples else math.nan

    def half_at(self, level: float) -> float:
        """Half-width of the two-sided interval at ``level`` (NaN when nothing could be estimated)."""
        if self.examples == 0 or math.isnan(self.se):
            return math.nan
        seed = _quantile(level, self.seeds - 1) ** 2 * self.seed_part if self.seed_part > 0 else 0.0
        return math.sqrt(seed + _quantile(level, self.example_df) ** 2 * self.example_part)

    @property
    def half(self) -> float:
        """Half-width of the interval (NaN when nothing could be estimated)."""
        return self.half_at(self.level)

    @property
    def low(self) -> float:
        return self.mean - self.half

    @property
    def high(self) -> float:
        return self.mean + self.half

    def p_beyond(self, bound: float, below: bool) -> float:
        """One-sided p-value that the truth lies beyond ``bound`` (``below`` it, or above it): small when
        the interval sits on that side; the interval at two-sided level 1 - 2p has its end at the bound,
        so the interval's own decision is p < 0.025 at 95 %."""
        if self.examples == 0 or math.isnan(self.se):
            return 1.0
        distance = (bound - self.mean) if below else (self.mean - bound)
        if distance == 0:
            return 0.5
        if self.se == 0:
            return 0.0 if distance > 0 else 1.0
        p = _p_at(self, abs(distance))
        return p if distance > 0 else 1.0 - p

    def planned(self, seeds: int, examples: int) -> "Estimate":
        """This estimate's interval planned at ``seeds`` seeds and ``examples`` examples from the observed
        variance components (the seed term left out when it could not be estimated)."""
        a = 0.0 if math.isnan(self.seed_var) else self.seed_var
        e = 0.0 if math.isnan(self.residual_var) else self.residual_var
        seed_part = max(a + e / examples, SEED_FLOOR * e / examples) / seeds if seeds > 1 else 0.0
        example_part = (self.example_var + (e / seeds if seeds == 1 else 0.0) + PSEUDO / examples) / examples
        return Estimate(self.mean, seed_part, example_part, math.inf, seeds, examples, self.seed_var,
                        self.example_var, self.residual_var, self.level)

    def variance_at(self, seeds: int, examples: int) -> float:
        """The variance of the estimate with ``seeds`` seeds and ``examples`` examples, planned from
        the observed components (the seed term left out when it could not be estimated)."""
        return self.planned(seeds, examples).se ** 2

    def detectable(self, power: float = POWER) -> float:
        """The smallest distance from a decision boundary this design detects with ``power``: the
        interval excludes the boundary when the truth is that far from it."""
        return float(self.half + stats.norm.ppf(power) * self.se)

    def needed(self, distance: float, power: float = POWER, max_examples: int = MAX_EXAMPLES
               ) -> tuple[int | None, int]:
        """The design that decides a truth ``distance`` from a boundary with ``power``, planned from the
        observed variance components with this interval: ``(examples, seeds)``, more test examples at this
        design's seeds where at most ``max_examples`` (the test split) do, else all ``max_examples`` and
        the fewest seeds that do (the seed term dominates); examples None when 100 seeds would not do
        either."""
        def decides(seeds: int, examples: int) -> bool:
            return self.planned(seeds, examples).detectable(power) <= abs(distance)

        seeds = max(self.seeds, 1)
        if decides(seeds, max_examples):
            low, high = 1, max_examples  # the fewest examples that decide: decides() grows with examples
            while low < high:
                mid = (low + high) // 2
                low, high = (low, mid) if decides(seeds, mid) else (mid + 1, high)
            return low, seeds
        for more in range(seeds + 1, 101):
            if decides(more, max_examples):
                return max_examples, more
        return None, seeds


def _quantile(level: float, df: float) -> float:
    """The two-sided ``level`` quantile of Student's t with ``df`` degrees of freedom (normal at inf)."""
    q = 0.5 + level / 2
    return float(stats.norm.ppf(q) if math.isinf(df) or df > 1e9 else stats.t.ppf(q, max(df, 1.0)))


def _p_at(est: Estimate, distance: float) -> float:
    """The one-sided p at which the interval's half-width is ``distance`` (> 0)."""
    def gap(p: float) -> float:
        return est.half_at(1.0 - 2.0 * p) - distance

    tiny = 1e-15
    if gap(tiny) < 0:
        return tiny
    if gap(0.5 - tiny) > 0:
        return 0.5
    return float(optimize.brentq(gap, tiny, 0.5 - tiny, xtol=1e-12))


def _alike(mean: float, seeds: int, n: int, level: float) -> Estimate:
    """Every outcome alike (no example and no seed differs): the rule of three, 3 / n, bounds the
    share that varies; its half-width is that bound."""
    no_seed_term = math.nan if seeds == 1 else 0.0
    return Estimate(mean, 0.0, (RULE_OF_THREE / n / stats.norm.ppf(0.5 + level / 2)) ** 2, math.inf, seeds, n,
                    no_seed_term, 0.0, no_seed_term, level)


def estimate(y: np.ndarray, level: float = 0.95) -> Estimate:
    """The crossed-design estimate of ``y`` ``(S seeds, n examples)``: its mean and its interval's
    seed and example parts (see the module docstring)."""
    y = np.asarray(y, dtype=float)
    if y.ndim != 2:
        raise ValueError(f"y must be (seeds, examples), got shape {y.shape}")
    s, n = y.shape
    if s == 0 or n == 0:
        return Estimate(math.nan, math.nan, math.nan, math.nan, s, n, math.nan, math.nan, math.nan, level)
    mean = float(y.mean())
    ms_s, ms_i, ms_e = (float(m[0, 0]) for m in _mean_squares(y[:, :, None]))
    if s == 1:
        if n == 1:
            return Estimate(mean, 0.0, math.nan, math.nan, 1, 1, math.nan, math.nan, math.nan, level)
        if ms_i == 0:
            return _alike(mean, 1, n, level)
        return Estimate(mean, 0.0, (ms_i + PSEUDO / n) / n, n - 1, 1, n, math.nan, ms_i, math.nan, level)
    if n == 1:  # the seeds' spread only
        return Estimate(mean, ms_s / s, 0.0, math.inf, s, 1, ms_s, 0.0, 0.0, level)
    if ms_s == ms_i == ms_e == 0:
        return _alike(mean, s, n, level)
    # MS_seed estimates n sigma_a^2 + sigma_e^2 >= sigma_e^2, which MS_residual knows well: the seed part is
    # at least SEED_FLOOR x MS_residual (module docstring)
    seed = max(ms_s, SEED_FLOOR * ms_e)
    excess = max(ms_i - ms_e, 0.0)  # S sigma_b^2
    denom = ms_i**2 / (n - 1) + ms_e**2 / ((s - 1) * (n - 1))
    df = excess**2 / denom if excess > 0 and denom > 0 else math.inf
    return Estimate(mean, seed / (s * n), (excess + PSEUDO * s / n) / (s * n), float(min(df, 1e9)), s, n,
                    max(0.0, (ms_s - ms_e) / n), excess / s, ms_e, level)


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
