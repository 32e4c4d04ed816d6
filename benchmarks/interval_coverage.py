"""Coverage of the report's 95 % intervals by simulation, per branch of the mean squares (docs/reports.md).

A simulated study compares a quantized cell with its FP reference on the same ``n`` test examples over
``S`` seeds; per-example outcomes come from a latent threshold model (an example is right when its latent
score exceeds a threshold): the example's difficulty ``u`` (shared by every model), the FP model's seed
effects ``f``, ``g`` (zero when every seed shares one FP model), and what quantization changes: an example
effect ``v`` shared by the seeds, a seed effect ``a`` and an interaction ``e``::

    reference[s, i] = u[i] + f[s] + g[s, i]                         > 0.5
    cell[s, i]      = u[i] + f[s] + g[s, i] + v[i] + a[s] + e[s, i] > 0.6

The truth is the expected difference over test samples (and FP models where they vary with the seed). Each
study's interval is robquant's own (:func:`robquant.report.intervals.estimate`: the seed part
max(MS_seed, 1.5 MS_residual) at t(S - 1) and the example part at Satterthwaite's t, in quadrature), beside the
estimate it replaced (``before``: one Satterthwaite t for MS_seed + MS_example - MS_residual, with a floor
that used the larger of MS_seed and MS_example alone where that sum fell below it). Each study is counted in
the branch its mean squares put the replaced estimate in: ``unbiased``, ``floor: seed term dropped`` (the
sum fell below MS_example: MS_example alone, n - 1 df), ``floor: example term dropped`` (below MS_seed).

A configuration's coverage over a few hundred studies is itself uncertain (0.011 at 400 studies), so the
lowest of 384 configurations sits well below the truth by chance: ``--confirm K`` runs the K lowest
configurations of each estimator again with ``--confirm-studies`` fresh studies (0.002 at 10,000).

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


def before_half(mean_sq: tuple[np.ndarray, np.ndarray, np.ndarray], s: int, n: int) -> np.ndarray:
    """The replaced estimate's 95 % half-width (module docstring)."""
    ms_s, ms_i, ms_e = mean_sq
    total = ms_s + ms_i - ms_e
    low = total < np.maximum(ms_s, ms_i)
    with np.errstate(divide="ignore", invalid="ignore"):
        df = total**2 / (ms_s**2 / (s - 1) + ms_i**2 / (n - 1) + ms_e**2 / ((s - 1) * (n - 1)))
    df = np.where(low, np.where(ms_s >= ms_i, s - 1, n - 1), df)
    total = np.where(low, np.maximum(ms_s, ms_i), total)
    half = stats.t.ppf(0.975, np.maximum(np.nan_to_num(df, nan=1.0), 1.0)) * np.sqrt(total / (s * n))
    return np.where(total == 0, 3.0 / n, half)  # every outcome alike: the rule of three


def coverage(regime: Regime, s: int, n: int, studies: int, rng: np.random.Generator
             ) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """Per study: covered or not by each estimator, the branch, and robquant's half-width over the
    replaced one's; drawn in chunks of about 2 million outcomes."""
    truth = regime.truth()
    covered: dict[str, list[np.ndarray]] = {"before": [], "robquant": []}
    where, ratio = [], []
    per = max(1, 2_000_000 // (s * n))
    for start in range(0, studies, per):
        y = regime.draw(min(per, studies - start), s, n, rng)
        mean, *ms = mean_squares(y)
        ours = np.array([estimate(study).half for study in y])
        old = before_half(tuple(ms), s, n)  # type: ignore[arg-type]
        covered["before"].append(np.abs(mean - truth) <= old)
        covered["robquant"].append(np.abs(mean - truth) <= ours)
        where.append(branch(*ms))
        ratio.append(ours / np.where(old > 0, old, np.nan))
    return {k: np.concatenate(v) for k, v in covered.items()}, np.concatenate(where), np.concatenate(ratio)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--studies", type=int, default=400, help="simulated studies per configuration")
    parser.add_argument("--quick", action="store_true", help="S = 2, 3 and n = 100, 1000 only")
    parser.add_argument("--min-studies", type=int, default=50,
                        help="a configuration's branch enters the worst-case column from this many studies")
    parser.add_argument("--confirm", type=int, default=6, help="rerun this many lowest configurations per estimator")
    parser.add_argument("--confirm-studies", type=int, default=10_000, help="studies of each rerun")
    args = parser.parse_args()
    seeds_grid = (2, 3) if args.quick else (2, 3, 5, 10)
    n_grid = (100, 1000) if args.quick else (100, 1000, 10000)
    regimes = [Regime(*r) for r in itertools.product((0.0, 0.05, 0.15, 0.4), (0.05, 0.5), (0.02, 0.3), (True, False))]
    rng = np.random.default_rng(0)
    names = ("before", "robquant")
    hits: dict[tuple[int, int, str], list[np.ndarray]] = {}
    worst: dict[tuple[int, int, str], float] = {}
    worst_config: dict[tuple[int, int], tuple[float, int, int, Regime]] = {}  # robquant's, per (S, branch)
    width: dict[int, list[float]] = {}
    overall: dict[str, list[tuple[float, int, int, Regime]]] = {k: [] for k in names}
    t0 = time.perf_counter()
    for s, n, regime in itertools.product(seeds_grid, n_grid, regimes):
        covered, where, ratio = coverage(regime, s, n, args.studies, rng)
        width.setdefault(s, []).append(float(np.nanmedian(ratio)))
        for name in names:
            overall[name].append((float(covered[name].mean()), s, n, regime))
            for b in range(len(BRANCHES)):
                pick = where == b
                key = (s, b, name)
                hits.setdefault(key, []).append(covered[name][pick])
                if pick.sum() >= args.min_studies:
                    worst[key] = min(worst.get(key, 1.0), float(covered[name][pick].mean()))
                    if name == "robquant" and worst[key] < worst_config.get((s, b), (2.0,))[0]:
                        worst_config[(s, b)] = (worst[key], s, n, regime)
    print(f"{len(seeds_grid) * len(n_grid) * len(regimes)} configurations x {args.studies} studies "
          f"({len(regimes)} regimes x S {list(seeds_grid)} x n {list(n_grid)}) in {time.perf_counter() - t0:.0f} s\n")
    print("| S | branch | studies | before: coverage | before: worst configuration | robquant: coverage "
          "| robquant: worst configuration |")
    print("|---|---|---|---|---|---|---|")
    for s in seeds_grid:
        for b, label in enumerate(BRANCHES):
            old, ours = (np.concatenate(hits[(s, b, k)]) for k in names)
            if not len(ours):
                continue

            def w(k: str) -> str:
                return f"{worst[(s, b, k)]:.3f}" if (s, b, k) in worst else "-"
            print(f"| {s} | {label} | {len(ours):,} | {old.mean():.3f} | {w('before')} | {ours.mean():.3f} | "
                  f"{w('robquant')} |")
    print("\nrobquant's half-width / the replaced one's (median over a configuration's studies; median and max "
          "over configurations): " + ", ".join(f"S={s}: {np.median(v):.2f} (max {np.max(v):.2f})"
                                                for s, v in width.items()))
    if args.confirm:
        print(f"\nagain with {args.confirm_studies:,} fresh studies: the {args.confirm} lowest configurations of each "
              "estimator (all its studies), and robquant's lowest configuration of each S and branch (that branch's "
              "studies):\n")
        print("| S | n | seed | example | interaction | FP | branch | studies | before (grid; again) "
              "| robquant (grid; again) |")
        print("|---|---|---|---|---|---|---|---|---|---|")
        t0 = time.perf_counter()
        runs: dict[tuple[int, int, Regime, int | None], None] = {}
        for name in names:
            for _, s, n, r in sorted(overall[name], key=lambda t: t[0])[:args.confirm]:
                runs[(s, n, r, None)] = None
        for (s, b), (_, _, n, r) in sorted(worst_config.items(), key=lambda kv: kv[0]):
            runs[(s, n, r, b)] = None
        grid = {(s, n, r): {name: c for name in names for c, s2, n2, r2 in overall[name] if (s2, n2, r2) == (s, n, r)}
                for s, n, r, _ in runs}
        for s, n, r, b in runs:
            covered, where, _ = coverage(r, s, n, args.confirm_studies, rng)
            pick = np.ones(len(where), bool) if b is None else where == b
            before = grid[(s, n, r)]
            label = "all" if b is None else BRANCHES[b]
            print(f"| {s} | {n} | {r.seed_sd} | {r.example_sd} | {r.interaction_sd} | "
                  f"{'shared' if r.shared_fp else 'per seed'} | {label} | {int(pick.sum()):,} | "
                  f"{before['before']:.3f}; {covered['before'][pick].mean():.4f} | "
                  f"{before['robquant']:.3f}; {covered['robquant'][pick].mean():.4f} |", flush=True)
        print(f"\n(reruns: {time.perf_counter() - t0:.0f} s; the grid's column is over all of a configuration's studies)")

if __name__ == "__main__":
    main()
