"""Before a study runs: can it decide its findings at the margin?

A finding compares a quantized cell with its FP reference on the same test examples, seed by seed.
Its interval (:mod:`robquant.report.intervals`) has a test-sample part, about ``q / n`` for ``n``
examples of which a share ``q`` change outcome between the cell and the reference (the discordant
pairs), and a seed part, ``sd^2 / S`` over ``S`` seeds, at t(S - 1): the planner builds that interval. Planned with ``q = DISCORDANCE`` and the seed
spread ``SEED_SD`` (smaller when every seed shares one FP model), the 95 % half-width must be below
the findings' 2-point margin, or a cell whose drop is within the margin cannot be called kept. The
report then plans again from the variance it observed (each "not significant" verdict says what
would decide it).
"""

from __future__ import annotations

import math
from typing import Any, Callable

from robquant.pipeline.study import FPWeightsSection
from robquant.report.findings import MARGIN
from robquant.report.intervals import MAX_EXAMPLES, Estimate

DISCORDANCE = 0.10  # share of test examples whose robustness differs between a quantized cell and its FP parent
SEED_SD = {True: 0.01, False: 0.03}  # spread of a cell's difference over seeds: FP model shared / trained per seed


def _prior(shared_fp: bool, discordance: float) -> Estimate:
    """The planning assumptions as variance components of the report's estimate: a seed spread of
    ``SEED_SD`` and a per-example variance of ``discordance`` (changed examples count 1 each)."""
    return Estimate(math.nan, 0.0, 0.0, math.inf, 0, 0, SEED_SD[shared_fp] ** 2, discordance, 0.0)


def planned_half_width(examples: int, seeds: int, shared_fp: bool, discordance: float = DISCORDANCE) -> float:
    """The planned 95 % half-width of a cell-minus-reference difference (a share): the report's interval
    (:class:`robquant.report.intervals.Estimate`) at this design, the seed part at t(seeds - 1)."""
    return _prior(shared_fp, discordance).planned(seeds, examples).half


def examples_needed(seeds: int, shared_fp: bool, half_width: float = MARGIN,
                    discordance: float = DISCORDANCE) -> int | None:
    """Test examples for a planned half-width of ``half_width`` (None: the seeds alone are wider)."""
    prior = _prior(shared_fp, discordance)
    if prior.planned(seeds, MAX_EXAMPLES).half > half_width:
        return None
    low, high = 1, MAX_EXAMPLES  # the half-width shrinks as examples grow
    while low < high:
        mid = (low + high) // 2
        low, high = (low, mid) if prior.planned(seeds, mid).half <= half_width else (mid + 1, high)
    return low


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
