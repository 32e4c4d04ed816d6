"""Before a study runs: can it decide its findings at the margin?

A finding compares a quantized cell with its FP reference on the same test examples, seed by seed.
Its interval (:mod:`robquant.report.intervals`) has a test-sample part, about ``q / n`` for ``n``
examples of which a share ``q`` change outcome between the cell and the reference (the discordant
pairs), and a seed part, ``sd^2 / S`` over ``S`` seeds. Planned with ``q = DISCORDANCE`` and the seed
spread ``SEED_SD`` (smaller when every seed shares one FP model), the 95 % half-width must be below
the findings' 2-point margin, or a cell whose drop is within the margin cannot be called kept. The
report then plans again from the variance it observed (each "not significant" verdict says what
would decide it).
"""

from __future__ import annotations

import math
from typing import Any, Callable

from scipy import stats

from robquant.pipeline.study import FPWeightsSection
from robquant.report.findings import MARGIN

DISCORDANCE = 0.10  # share of test examples whose robustness differs between a quantized cell and its FP parent
SEED_SD = {True: 0.01, False: 0.03}  # spread of a cell's difference over seeds: FP model shared / trained per seed


def planned_half_width(examples: int, seeds: int, shared_fp: bool, discordance: float = DISCORDANCE) -> float:
    """The planned 95 % half-width of a cell-minus-reference difference (a share), with
    Satterthwaite's degrees of freedom for the two parts."""
    by_examples, by_seeds = discordance / examples, SEED_SD[shared_fp] ** 2 / seeds
    denom = by_examples**2 / max(examples - 1, 1) + (by_seeds**2 / (seeds - 1) if seeds > 1 else 0.0)
    df = (by_examples + by_seeds) ** 2 / denom if denom > 0 else math.inf
    return float(stats.t.ppf(0.975, df) * math.sqrt(by_examples + by_seeds))


def examples_needed(seeds: int, shared_fp: bool, half_width: float = MARGIN,
                    discordance: float = DISCORDANCE) -> int | None:
    """Test examples for a planned half-width of ``half_width`` (None: the seeds alone are wider)."""
    room = (half_width / 1.96) ** 2 - SEED_SD[shared_fp] ** 2 / seeds
    return None if room <= 0 else math.ceil(discordance / room)


def shares_fp(study: Any) -> bool:
    """Whether every seed's cells share their FP models: ``fp.seed`` set, or every cell's FP model given
    as weights (a zoo model, your own file; no cell from random parameters)."""
    if study.fp.seed is not None:
        return True
    inits = {cell.init for cell in study.expand()[0]}
    return "random" not in inits and all(isinstance(study.fp.spec(i), FPWeightsSection) for i in inits)


def design_warnings(study: Any, test_size: Callable[[], int]) -> list[str]:
    """What a study's design cannot decide at the margin, planned before it runs (empty when fine).

    Args:
        study: The validated study.
        test_size: The test split's size (called only when ``evaluation.n_test`` is unset).
    """
    ev = study.evaluation
    n_test = ev.n_test or test_size()
    seeds = len(study.seeds)
    shared = shares_fp(study)
    at_main = [a for a in ev.attacks if a.eps is None or ev.main_eps in a.eps]
    n = {"worst case": min([min(a.n or n_test, n_test) for a in at_main] or [n_test])}
    ref = ev.reference_pgd()
    if ref is not None:
        n["paper's attack"] = min(ref.n or n_test, n_test)
    out = []
    for measure, examples in n.items():
        half = planned_half_width(examples, seeds, shared)
        if half < MARGIN:
            continue
        need = examples_needed(seeds, shared)
        fix = (f"about {need:,} examples would bring it to ±{100 * MARGIN:g} points" if need is not None else
               "more seeds are needed before more examples help")
        out.append(f"the findings under the {measure} are judged on {examples} test examples and {seeds} seeds"
                   f"{' sharing one FP model' if shared else ''}: assuming {100 * DISCORDANCE:g} % of examples "
                   f"change outcome between a cell and its FP reference, a difference's 95 % half-width is about "
                   f"±{100 * half:.1f} points, not below the {100 * MARGIN:g}-point margin: a cell within the margin "
                   f"cannot be called kept ({fix})")
    return out
