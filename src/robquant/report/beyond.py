"""Findings beyond the paper: does a lower bit-width, or adversarial QAT, change how a quantized model
fares against the attackers a deployed model meets besides white-box PGD?

- **Transfer from FP** (a study's ``transfer`` attack, or the transfer matrix's ``transfer:FP``: PGD crafted
  on the model's full-precision parent):
  robustness at the main eps, compared between two cells seed by seed and example by example, with the
  interval that counts the seeds and the test sample (as the paper's findings:
  :func:`robquant.report.records.contrast`).
- **Natural corruptions** (``evaluation.corruptions``): per example the share of the corruptions and
  severities it is classified right under, compared between two cells seed by seed and example by example
  with the interval that counts the seeds and the test sample.
- **Bit flips** (``evaluation.bitflip``): the flips the progressive bit search needs to break a model,
  compared between two cells by a Welch t-interval over their runs (models' seeds x attack batches). A
  run not broken within its cap counts at the cap: the difference is then a bound, and the row says so.

Comparisons: within each pipeline, its lowest weight bit-width against its highest (the same activation
bits where the study has them); and, at each init and precision, adversarial QAT against vanilla QAT.
An answer is *higher* / *lower* (more / fewer flips) when the interval excludes 0, else *not significant
at this scale*.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
from scipy import stats

from robquant.report.findings import NOT_SIGNIFICANT, power_text
from robquant.report.intervals import POWER, estimate
from robquant.report.records import Row, by_cell, cell_name, comparable, contrast, corruption_outcomes
from robquant.report.stats import format_estimate
from robquant.report.tables import Table
from robquant.report.sections import report_table

TRANSFERS = ("transfer", "transfer:FP")  # the study's transfer attack, or the transfer matrix's FP source


def _pairs(cells: dict[tuple[str, str | None, str, str], list[Row]], has: Any
           ) -> list[tuple[str, tuple[Any, ...], tuple[Any, ...]]]:
    """``(question, cell a, cell b)``: a pipeline's lowest weight bit-width against its highest, and
    adversarial against vanilla QAT at each init and precision; only cells where ``has(runs)``."""
    out = []
    pipes: dict[tuple[str, str | None, str], list[tuple[Any, ...]]] = {}
    for key, runs in cells.items():
        if has(runs) and runs[0].weight_bits < 32:
            pipes.setdefault(key[:3], []).append(key)
    for pipe, keys in pipes.items():
        keys.sort(key=lambda k: (cells[k][0].weight_bits, cells[k][0].act_bits))
        low, high = keys[0], keys[-1]
        if cells[low][0].weight_bits < cells[high][0].weight_bits:
            out.append(("lower weight bit-width", low, high))
    for (method, strategy, init, precision), runs in cells.items():
        vanilla = ("qat", "vanilla", init, precision)
        if strategy == "adversarial" and method == "qat" and vanilla in cells and has(runs) and has(cells[vanilla]):
            out.append(("adversarial QAT (vs vanilla)", (method, strategy, init, precision), vanilla))
    return out


def _answer(low: float, high: float, up: str, down: str) -> str:
    if low > 0:
        return up
    if high < 0:
        return down
    return NOT_SIGNIFICANT


def flips_difference(a: Sequence[float], b: Sequence[float]) -> tuple[float, float, float]:
    """Mean difference ``a - b`` of two samples of flip counts and its 95 % Welch t-interval (nan
    half-width when either sample has fewer than 2 runs or no spread)."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    diff = float(a.mean() - b.mean())
    if len(a) < 2 or len(b) < 2:
        return diff, math.nan, math.nan
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    se = math.sqrt(va + vb)
    if se == 0:
        return diff, diff, diff
    dof = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    half = float(stats.t.ppf(0.975, dof)) * se
    return diff, diff - half, diff + half


def runs_needed(a: Sequence[float], b: Sequence[float], power: float = POWER) -> int | None:
    """Runs per cell for a two-sided 5 % test to detect the observed mean difference of flip counts
    ``a - b`` with ``power``, planned from the spreads observed (normal approximation); None when the
    difference is 0 or no spread was seen."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    diff = abs(float(a.mean() - b.mean()))
    spread = (a.var(ddof=1) if len(a) > 1 else 0.0) + (b.var(ddof=1) if len(b) > 1 else 0.0)
    if diff == 0 or spread == 0:
        return None
    return math.ceil((stats.norm.ppf(0.975) + stats.norm.ppf(power)) ** 2 * spread / diff**2)


def _flips_power(a: Sequence[float], b: Sequence[float]) -> str:
    need = runs_needed(a, b)
    if need is None:
        return "the difference is 0 or the runs did not vary: more runs are needed to say"
    return (f"to decide a difference of {abs(float(np.mean(a) - np.mean(b))):.1f} flips: about {need:,} runs per cell "
            f"({100 * POWER:g} % power, from the spread observed)")


def _flips(runs: list[Row]) -> tuple[list[float], int]:
    """Every search run's flips (censored ones at their cap) and how many were censored."""
    out, censored = [], 0
    for r in runs:
        for f in r.bitflip.flips("search"):
            out.append(float(r.bitflip.cap("search") if f is None else f))
            censored += f is None
    return out, censored


@report_table(40, "rows", "main_eps")
def beyond_table(rows: list[Row], main_eps: float) -> Table | None:
    """The findings beyond the paper the study's records can answer (None when none)."""
    rows = comparable(rows)
    cells = by_cell(rows)
    out = []

    transfer = next((t for t in TRANSFERS if any(r.outcomes.attack(t, r.main_eps) is not None for r in rows)),
                    TRANSFERS[0])

    def has_transfer(runs: list[Row]) -> bool:
        return all(r.outcomes.attack(transfer, r.main_eps) is not None for r in runs)

    for question, a, b in _pairs(cells, has_transfer):
        est = contrast([(cells[a], transfer), (cells[b], transfer)], (1.0, -1.0))
        if est.examples == 0:
            continue
        text = format_estimate(est, signed=True, low=-1.0)
        answer = _answer(est.low, est.high, "higher", "lower") if not math.isnan(est.half) else NOT_SIGNIFICANT
        split = max((r.outcomes.split_size for r in cells[a] + cells[b]), default=0)
        out.append([f"{question}: robustness to transfer from FP at {main_eps:g}/255", cell_name(*a), cell_name(*b),
                    f"{text} points (n={est.seeds}x{est.examples})", answer,
                    power_text(est, est.mean, split) if answer == NOT_SIGNIFICANT else ""])

    def has_flips(runs: list[Row]) -> bool:
        return all(r.bitflip and r.bitflip.flips("search") for r in runs)

    for question, a, b in _pairs(cells, has_flips):
        (fa, ca), (fb, cb) = _flips(cells[a]), _flips(cells[b])
        diff, low, high = flips_difference(fa, fb)
        answer = NOT_SIGNIFICANT if math.isnan(low) else _answer(low, high, "more flips", "fewer flips")
        bound = " (censored runs at their cap: a bound)" if ca or cb else ""
        interval = "" if math.isnan(low) else f" [{low:+.1f}, {high:+.1f}]"
        out.append([f"{question}: bit flips to break (search)", cell_name(*a), cell_name(*b),
                    f"{diff:+.1f} flips{interval} ({len(fa)} vs {len(fb)} runs){bound}", answer,
                    _flips_power(fa, fb) if answer == NOT_SIGNIFICANT else ""])

    def has_corruptions(runs: list[Row]) -> bool:
        return all(r.corruptions for r in runs)

    for question, a, b in _pairs(cells, has_corruptions):
        other = {r.seed: r for r in cells[b]}
        paired = [(r, other[r.seed]) for r in cells[a] if r.seed in other]
        if not paired:
            continue
        ya, yb = corruption_outcomes([x for x, _ in paired]), corruption_outcomes([y for _, y in paired])
        n = min(ya.shape[1], yb.shape[1])
        est = estimate(ya[:, :n] - yb[:, :n])
        answer = _answer(est.low, est.high, "higher", "lower") if not math.isnan(est.half) else NOT_SIGNIFICANT
        split = max((r.outcomes.split_size for r in cells[a] + cells[b]), default=0)
        out.append([f"{question}: accuracy under natural corruptions (mean over corruptions and severities)",
                    cell_name(*a), cell_name(*b), f"{format_estimate(est, signed=True, low=-1.0)} points "
                    f"(n={est.seeds}x{est.examples})", answer,
                    power_text(est, est.mean, split) if answer == NOT_SIGNIFICANT else ""])
    if not out:
        return None
    return Table("beyond", "Beyond the paper: lower bit-width and adversarial QAT against transfer from FP, bit "
                 "flips and natural corruptions", ["question", "cell", "compared with", "difference (cell - compared), 95 % interval",
                           "answer", "what would decide it"], out,
                 ["Transfer from FP: the study's transfer attack (PGD crafted on the model's full-precision parent), "
                  "compared seed by seed and example by example; its interval counts the seeds and the test sample, "
                  "as the paper's findings. Bit flips: the flips the progressive bit search needs to bring clean "
                  "accuracy to chance + 1 point, compared by a Welch t-interval over the runs (models' seeds x "
                  "attack batches). Natural corruptions: the share of corruptions and severities an example is "
                  "right under, compared seed by seed and example by example. An answer is given where the interval excludes 0; where it does not, what "
                  "would decide the difference observed, planned from the variance observed."])
