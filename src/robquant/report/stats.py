"""Statistics of a report: t confidence intervals over seeds and the Table-1 trend labels.

Trend label of robustness vs bit-width (one pipeline, one attack strength), from per-seed values at
three or more bit-widths (full precision counts as 32 bits):

- Draw ``n_boot`` plausible sets of means (a parametric bootstrap over seeds): at each bit-width,
  mean + standard error x a Student-t variate with n - 1 degrees of freedom (the t interval's own
  model; with 2-3 seeds it is wide, as it should be, where resampling the seeds would be overconfident).
  In each draw compute the Spearman rank correlation rho between bit-width and mean robustness, and
  where the peak lies.
- ``~`` (a middle bit-width is best): in >= ``level`` (95 %) of resamples the peak is at an interior
  bit-width and beats both ends by more than ``min_effect`` (2 points: the smallest effect worth a label);
- else ``+`` (lower bits -> higher robustness): rho < 0 in >= ``level`` of resamples and the means
  span more than ``min_effect``;
- else ``-`` (lower bits -> lower robustness): rho > 0 likewise;
- else ``n.s.``: the seeds support none of them. Fewer than 2 seeds at some bit-width, or fewer
  than 3 bit-widths, is always ``n.s.``.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
from scipy import stats

LABELS = ("+", "-", "~", "n.s.")


def t_interval(values: Sequence[float], level: float = 0.95) -> tuple[float, float, int]:
    """Mean, half-width of the two-sided t interval and n (half-width NaN when n < 2)."""
    v = np.asarray([x for x in values if x is not None and not math.isnan(x)], dtype=float)
    n = len(v)
    if n == 0:
        return math.nan, math.nan, 0
    if n < 2:
        return float(v.mean()), math.nan, 1
    half = stats.t.ppf(0.5 + level / 2, n - 1) * v.std(ddof=1) / math.sqrt(n)
    return float(v.mean()), float(half), n


def trend_label(values: dict[int, Sequence[float]], *, n_boot: int = 2000, level: float = 0.95,
                min_effect: float = 0.02, seed: int = 0) -> tuple[str, dict[str, float]]:
    """The trend label of robustness vs bit-width (see the module docstring).

    Args:
        values: ``{bits: [robustness per seed]}`` (fractions).

    Returns:
        ``(label, {"p_plus", "p_minus", "p_middle", "n_bits", "min_seeds"})``.
    """
    bits = sorted(values)
    arrays = [np.asarray(values[b], dtype=float) for b in bits]
    info = {"n_bits": float(len(bits)), "min_seeds": float(min((len(a) for a in arrays), default=0))}
    if len(bits) < 3 or info["min_seeds"] < 2:
        return "n.s.", {**info, "p_plus": math.nan, "p_minus": math.nan, "p_middle": math.nan}
    rng = np.random.default_rng(seed)
    means = np.stack([a.mean() + a.std(ddof=1) / np.sqrt(len(a)) * rng.standard_t(len(a) - 1, size=n_boot)
                      for a in arrays], axis=1)
    ranks = stats.rankdata(means, axis=1)
    x = np.arange(len(bits), dtype=float)
    rx = x - x.mean()
    ry = ranks - ranks.mean(1, keepdims=True)
    denom = np.sqrt((rx**2).sum() * (ry**2).sum(1))
    rho = np.where(denom > 0, (ry * rx).sum(1) / np.where(denom > 0, denom, 1), 0.0)
    span = means.max(1) - means.min(1)
    peak = means.argmax(1)
    interior = (peak > 0) & (peak < len(bits) - 1)
    margin = means.max(1) - np.maximum(means[:, 0], means[:, -1])
    p_middle = float((interior & (margin > min_effect)).mean())
    p_plus = float(((rho < 0) & (span > min_effect)).mean())
    p_minus = float(((rho > 0) & (span > min_effect)).mean())
    info.update(p_plus=p_plus, p_minus=p_minus, p_middle=p_middle)
    if p_middle >= level:
        return "~", info
    if p_plus >= level:
        return "+", info
    if p_minus >= level:
        return "-", info
    return "n.s.", info
