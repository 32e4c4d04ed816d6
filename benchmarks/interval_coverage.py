"""Coverage of the report's 95 % intervals by simulation, per branch of the estimate (docs/reports.md).

A simulated study compares a quantized cell with its FP reference on the same ``n`` test examples over
``S`` seeds; per-example outcomes come from a latent threshold model (an example is right when its latent
score exceeds a threshold): the example's difficulty ``u`` (shared by every model), the FP model's seed
effects ``f``, ``g`` (zero when every seed shares one FP model), and what quantization changes: an example
effect ``v`` shared by the seeds, a seed effect ``a`` and an interaction ``e``::

    reference[s, i] = u[i] + f[s] + g[s, i]                         > 0.5
    cell[s, i]      = u[i] + f[s] + g[s, i] + v[i] + a[s] + e[s, i] > 0.6

The truth is the expected difference over test samples (and FP models where they vary with the seed). Each
study's interval is robquant's own (:func:`robquant.report.intervals.estimate`), and each study is counted in
the branch its mean squares put it in: ``unbiased`` (MS_seed + MS_example - MS_residual used as it is),
``floor: seed term dropped`` (that sum fell below MS_example: MS_example alone, n - 1 df), ``floor: example
term dropped`` (below MS_seed: MS_seed alone, S - 1 df). Beside it, for comparison, a candidate estimator
(``--candidate``): the seed part (MS_seed, or 3 MS_residual where it falls below) with t at S - 1 df and the
example part (MS_example - MS_residual, plus two pseudo-discordant examples) with t at Satterthwaite's df,
combined in quadrature.

    python benchmarks/interval_coverage.py                 # the grid of docs/reports.md (minutes)
    python benchmarks/interval_coverage.py --quick         # S = 2, 3; n = 100, 1000
"""

from __future__ import annotations

import argparse
import itertools
import math
import time
from dataclasses import dataclass

import numpy as np
from scipy import stats

from robquant.report.intervals import estimate

BRANCHES = ("unbiased", "floor: seed term dropped", "floor: example term dropped")


@dataclass(frozen=True)
class Regime:
    """Effects' standard deviations in latent units (an example's latent score has sd 1)."""

    seed_sd: float
    example_sd: float
    interaction_sd: float
    shared_fp: bool
    fp_sd: float = 0.1
    fp_interaction_sd: float = 0.3

    def truth(self) -> float:
        fp = 0.0 if self.shared_fp else self.fp_sd**2 + self.fp_interaction_sd**2
        cell = fp + self.example_sd**2 + self.seed_sd**2 + self.interaction_sd**2
        return float(stats.norm.sf(0.6 / math.sqrt(1 + cell)) - stats.norm.sf(0.5 / math.sqrt(1 + fp)))

    def draw(self, studies: int, seeds: int, n: int, rng: np.random.Generator) -> np.ndarray:
        """``(studies, seeds, n)`` per-example cell-minus-reference differences."""
        def normal(sd: float, shape: tuple[int, ...]) -> np.ndarray | float:
            return rng.standard_normal(shape, dtype=np.float32) * np.float32(sd) if sd else 0.0

        ref = rng.standard_normal((studies, 1, n), dtype=np.float32)
        if not self.shared_fp:
            ref = ref + normal(self.fp_sd, (studies, seeds, 1)) + normal(self.fp_interaction_sd, (studies, seeds, n))
        cell = (ref + normal(self.example_sd, (studies, 1, n)) + normal(self.seed_sd, (studies, seeds, 1))
                + normal(self.interaction_sd, (studies, seeds, n)))
        return (cell > 0.6).astype(np.float32) - (np.broadcast_to(ref, cell.shape) > 0.5).astype(np.float32)


def mean_squares(y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(mean, MS_seed, MS_example, MS_residual)`` of each study of ``y`` ``(studies, S, n)``."""
    _, s, n = y.shape
    y = y.astype(np.float64)
    grand = y.mean((1, 2))
    ss_s = n * ((y.mean(2) - grand[:, None]) ** 2).sum(1)
    ss_i = s * ((y.mean(1) - grand[:, None]) ** 2).sum(1)
    ss_e = np.maximum(((y - grand[:, None, None]) ** 2).sum((1, 2)) - ss_s - ss_i, 0.0)
    return grand, ss_s / (s - 1), ss_i / (n - 1), ss_e / ((s - 1) * (n - 1))


def branch(ms_s: np.ndarray, ms_i: np.ndarray, ms_e: np.ndarray) -> np.ndarray:
    """The branch of robquant's estimate (:data:`BRANCHES`) each study took."""
    low = ms_s + ms_i - ms_e < np.maximum(ms_s, ms_i)
    return np.where(~low, 0, np.where(ms_s >= ms_i, 2, 1))


def candidate_half(mean_sq: tuple[np.ndarray, np.ndarray, np.ndarray], s: int, n: int) -> np.ndarray:
    """The candidate's 95 % half-width (module docstring)."""
    ms_s, ms_i, ms_e = mean_sq
    seed = np.where(ms_s < ms_e, 3.0 * ms_e, ms_s)
    excess = np.maximum(ms_i - ms_e, 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        df = np.where(excess > 0, excess**2 / (ms_i**2 / (n - 1) + ms_e**2 / ((s - 1) * (n - 1))), np.inf)
    example = excess + 2.0 * s / n
    square = stats.t.ppf(0.975, s - 1) ** 2 * seed + stats.t.ppf(0.975, np.maximum(df, 1.0)) ** 2 * example
    return np.sqrt(square / (s * n))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--studies", type=int, default=400, help="simulated studies per configuration")
    parser.add_argument("--quick", action="store_true", help="S = 2, 3 and n = 100, 1000 only")
    parser.add_argument("--min-studies", type=int, default=50,
                        help="a configuration's branch enters the worst-case column from this many studies")
    args = parser.parse_args()
    seeds_grid = (2, 3) if args.quick else (2, 3, 5, 10)
    n_grid = (100, 1000) if args.quick else (100, 1000, 10000)
    regimes = [Regime(*r) for r in itertools.product((0.0, 0.05, 0.15, 0.4), (0.05, 0.5), (0.02, 0.3), (True, False))]
    rng = np.random.default_rng(0)
    hits: dict[tuple[int, int, str], list[np.ndarray]] = {}
    worst: dict[tuple[int, int, str], float] = {}
    width: dict[int, list[float]] = {}
    t0 = time.perf_counter()
    for s, n, regime in itertools.product(seeds_grid, n_grid, regimes):
        truth = regime.truth()
        y = regime.draw(args.studies, s, n, rng)
        mean, *ms = mean_squares(y)
        where = branch(*ms)
        ours = np.array([estimate(study).half for study in y])
        cand = candidate_half(tuple(ms), s, n)  # type: ignore[arg-type]
        width.setdefault(s, []).append(float(np.median(cand / np.where(ours > 0, ours, np.nan))))
        for name, half in (("robquant", ours), ("candidate", cand)):
            covered = np.abs(mean - truth) <= half
            for b in range(len(BRANCHES)):
                pick = where == b
                key = (s, b, name)
                hits.setdefault(key, []).append(covered[pick])
                if pick.sum() >= args.min_studies:
                    worst[key] = min(worst.get(key, 1.0), float(covered[pick].mean()))
    print(f"{len(seeds_grid) * len(n_grid) * len(regimes)} configurations x {args.studies} studies "
          f"({len(regimes)} regimes x S {list(seeds_grid)} x n {list(n_grid)}) in {time.perf_counter() - t0:.0f} s\n")
    print("| S | branch | studies | robquant: coverage | robquant: worst configuration | candidate: coverage "
          "| candidate: worst configuration |")
    print("|---|---|---|---|---|---|---|")
    for s in seeds_grid:
        for b, label in enumerate(BRANCHES):
            ours, cand = (np.concatenate(hits[(s, b, k)]) for k in ("robquant", "candidate"))
            if not len(ours):
                continue

            def w(k: str) -> str:
                return f"{worst[(s, b, k)]:.3f}" if (s, b, k) in worst else "-"
            print(f"| {s} | {label} | {len(ours):,} | {ours.mean():.3f} | {w('robquant')} | {cand.mean():.3f} | "
                  f"{w('candidate')} |")
    print("\ncandidate half-width / robquant's (median over a configuration's studies; median and max over "
          "configurations): " + ", ".join(f"S={s}: {np.median(v):.2f} (max {np.max(v):.2f})" for s, v in width.items()))


if __name__ == "__main__":
    main()
