"""Evaluating a model under the attack library (:mod:`robquant.attacks`): clean and robust accuracy over
attacks and budgets with per-example outcomes (:func:`evaluate`), the typed runs a stage keys
(:class:`AttackRun`, :class:`Budget`), the trust checks that robustness is not an artefact of masked
gradients (:func:`diagnose`), the evaluation add-ons (:mod:`robquant.evaluation.addons`) and the
evaluate stage's handler and numbers of record (:mod:`robquant.evaluation.stage`).

Example:
    >>> result = evaluate(model, test_set, ["pgd"], [1 / 255, 8 / 255], n=1000)
"""

from __future__ import annotations

from robquant.evaluation.evaluate import EvalResult, evaluate, record_mask, worst_case
from robquant.evaluation.outcomes import Outcomes
from robquant.evaluation.runs import AttackRun, Budget
from robquant.evaluation.trust import (TRUST_CHECKS, TrustCheck, diagnose, diagnose_cost, input_gradients, register_check,
                                       zero_gradient_fraction)

__all__ = ["AttackRun", "Budget", "EvalResult", "Outcomes", "TRUST_CHECKS", "TrustCheck", "diagnose", "diagnose_cost",
           "evaluate", "input_gradients", "record_mask", "register_check", "worst_case", "zero_gradient_fraction"]
