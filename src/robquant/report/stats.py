"""Statistics of a report: intervals and the Table-1 trend labels.

Intervals of a report's cells and comparisons count the seeds and the test sample
(:mod:`robquant.report.intervals`, :func:`format_estimate`); :func:`t_interval` (over seeds alone)
remains for quantities that have no per-example evidence (wall time, passes).

Trend label of robustness vs bit-width (one pipeline, one attack strength), at three or more
bit-widths (full precision counts as 32 bits):

- A bit-width with fewer than 2 values (converged seeds) is dropped, not fatal; fewer than 3
  bit-widths left is ``n.s.``.
- Draw ``n_boot`` plausible sets of means. From per-example outcomes (:func:`trend_label_examples`,
  what reports use) the draws count the seeds and the test examples
  (:func:`robquant.report.intervals.draw_means`): every bit-width is evaluated on the same examples
  and the bit-widths of one seed share their FP parent, so both pairings are kept. From per-seed
  values (:func:`trend_label`): **paired** (the default, when at least 2 seeds have a value at every
  bit-width) mean + sqrt((n-1)/chi2(n-1)) G R / sqrt(n (n-1)), R the seeds' residual vectors, G
  standard normal (a multivariate t with n - 1 degrees of freedom), so a seed effect shared by all
  bit-widths cancels in the comparisons; **unpaired**: at each bit-width independently, mean +
  standard error x a Student-t variate with n - 1 degrees of freedom.
- In each draw compute the Spearman rank correlation rho between bit-width and mean robustness, and
  where the peak lies.
- ``~`` (a middle bit-width is best): in >= ``level`` (95 %) of draws the peak is at an interior
  bit-width and beats both ends by more than ``min_effect`` (2 points: the smallest effect worth a label);
- else ``+`` (lower bits -> higher robustness): rho < 0 in >= ``level`` of draws and the means
  span more than ``min_effect``;
- else ``-`` (lower bits -> lower robustness): rho > 0 likewise;
- else ``n.s.``: the seeds support none of them.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import numpy as np
from scipy import stats

from robquant.defaults import N_BOOT
from robquant.report.intervals import Estimate, draw_means

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


def bounded_interval(values: Sequence[float], low: float = 0.0, high: float = 1.0,
                     level: float = 0.95) -> tuple[float, float, float, int]:
    """Mean, and the two-sided t interval intersected with ``[low, high]`` (a share cannot leave
    it), and n: ``(mean, lo, hi, n)``; lo and hi are NaN when n < 2."""
    mean, half, n = t_interval(values, level)
    if n < 2 or math.isnan(half):
        return mean, math.nan, math.nan, n
    return mean, max(low, mean - half), min(high, mean + half), n


def format_interval(values: Sequence[float], scale: float = 100.0, signed: bool = False,
                    low: float = 0.0, high: float = 1.0) -> str:
    """``m ± h`` (in units of ``1 / scale``), or ``m (lo–hi)`` when the interval was clipped to
    ``[low, high]``; ``m`` alone for one value, empty for none."""
    mean, lo, hi, n = bounded_interval(values, low, high)
    if n == 0:
        return ""
    text = f"{scale * mean:+.1f}" if signed else f"{scale * mean:.1f}"
    if math.isnan(lo):
        return text
    if math.isclose(mean - lo, hi - mean, rel_tol=1e-9, abs_tol=1e-12):
        return f"{text} ± {scale * (hi - mean):.1f}"
    return f"{text} ({scale * lo:.1f}–{scale * hi:.1f})"


def format_estimate(est: Estimate, scale: float = 100.0, signed: bool = False, low: float = 0.0,
                    high: float = 1.0) -> str:
    """``m ± h`` (in units of ``1 / scale``), or ``m (lo–hi)`` when the interval was clipped to
    ``[low, high]``; ``m`` alone when no interval could be estimated, empty for no examples."""
    if est.examples == 0 or math.isnan(est.mean):
        return ""
    text = f"{scale * est.mean:+.1f}" if signed else f"{scale * est.mean:.1f}"
    if math.isnan(est.half):
        return text
    lo, hi = max(low, est.low), min(high, est.high)
    if lo == est.low and hi == est.high:
        return f"{text} ± {scale * est.half:.1f}"
    return f"{text} ({scale * lo:.1f}–{scale * hi:.1f})"


def trend_label_examples(y: np.ndarray, bits: Sequence[int], *, n_boot: int = N_BOOT, level: float = 0.95,
                         min_effect: float = 0.02, seed: int = 0) -> tuple[str, dict[str, Any]]:
    """The trend label from per-example outcomes ``y`` ``(S seeds, n examples, k bit-widths)``, the
    bit-widths ``bits`` ascending (see the module docstring); the draws count seeds and examples.

    Returns:
        ``(label, {"p_plus", "p_minus", "p_middle", "n_bits", "min_seeds", "paired", "dropped",
        "examples"})``.
    """
    info: dict[str, Any] = {"n_bits": float(len(bits)), "dropped": [], "paired": True, "min_seeds": float(y.shape[0]),
                            "examples": int(y.shape[1]), "p_plus": math.nan, "p_minus": math.nan, "p_middle": math.nan}
    if len(bits) < 3 or y.shape[0] == 0 or y.shape[1] == 0:
        return "n.s.", info
    means = draw_means(y, n_boot, np.random.default_rng(seed))
    return _label(means, min_effect, level, info)


def _label(means: np.ndarray, min_effect: float, level: float, info: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    p_plus, p_minus, p_middle = _shape_probabilities(means, min_effect)
    info.update(p_plus=p_plus, p_minus=p_minus, p_middle=p_middle)
    if p_middle >= level:
        return "~", info
    if p_plus >= level:
        return "+", info
    if p_minus >= level:
        return "-", info
    return "n.s.", info


def trend_label(values: Mapping[int, Sequence[float] | Mapping[int, float]], *, n_boot: int = N_BOOT,
                level: float = 0.95, min_effect: float = 0.02, seed: int = 0, paired: bool = True
                ) -> tuple[str, dict[str, Any]]:
    """The trend label of robustness vs bit-width (see the module docstring).

    Args:
        values: ``{bits: {seed: robustness}}`` (fractions; pairing by seed), or ``{bits: [robustness,
            ...]}`` (unpaired).
        paired: Use the seeds' pairing when the values allow it.

    Returns:
        ``(label, {"p_plus", "p_minus", "p_middle", "n_bits", "min_seeds", "paired", "dropped"})``;
        ``dropped`` lists the bit-widths left out for having fewer than 2 values.
    """
    by_seed = {b: dict(v) if isinstance(v, Mapping) else dict(enumerate(v)) for b, v in values.items()}
    dropped = sorted(b for b, v in by_seed.items() if len(v) < 2)
    bits = sorted(b for b in by_seed if b not in dropped)
    info: dict[str, Any] = {"n_bits": float(len(bits)), "dropped": dropped, "paired": False,
                            "min_seeds": float(min((len(by_seed[b]) for b in bits), default=0)),
                            "p_plus": math.nan, "p_minus": math.nan, "p_middle": math.nan}
    if len(bits) < 3:
        return "n.s.", info
    rng = np.random.default_rng(seed)
    common = sorted(set.intersection(*(set(by_seed[b]) for b in bits)))
    if paired and all(isinstance(values[b], Mapping) for b in bits) and len(common) >= 2:
        info["paired"] = True
        seeds_by_bits = np.array([[by_seed[b][s] for b in bits] for s in common], dtype=float)  # (S, k)
        means = draw_means(seeds_by_bits[:, None, :], n_boot, rng)  # one value per seed: the seed part alone
    else:
        arrays = [np.asarray(list(by_seed[b].values()), dtype=float) for b in bits]
        means = np.stack([a.mean() + a.std(ddof=1) / np.sqrt(len(a)) * rng.standard_t(len(a) - 1, size=n_boot)
                          for a in arrays], axis=1)
    return _label(means, min_effect, level, info)


def _shape_probabilities(means: np.ndarray, min_effect: float) -> tuple[float, float, float]:
    """Share of draws (rows of ``means``, bit-widths ascending) with a falling, rising or peaked trend."""
    k = means.shape[1]
    ranks = stats.rankdata(means, axis=1)
    rx = np.arange(k, dtype=float) - (k - 1) / 2
    ry = ranks - ranks.mean(1, keepdims=True)
    denom = np.sqrt((rx**2).sum() * (ry**2).sum(1))
    rho = np.where(denom > 0, (ry * rx).sum(1) / np.where(denom > 0, denom, 1), 0.0)
    span = means.max(1) - means.min(1)
    peak = means.argmax(1)
    interior = (peak > 0) & (peak < k - 1)
    margin = means.max(1) - np.maximum(means[:, 0], means[:, -1])
    return (float(((rho < 0) & (span > min_effect)).mean()), float(((rho > 0) & (span > min_effect)).mean()),
            float((interior & (margin > min_effect)).mean()))
