"""The attacks (FGSM, PGD, AutoAttack, APGD, Square, transfer; each registers itself in
:data:`~robquant.attacks.registry.ATTACKS` where it is defined) and robustness evaluation.

Example:
    >>> attack = create_attack("pgd", model, eps=8 / 255, steps=20)
    >>> x_adv = attack(x, y)
    >>> result = evaluate(model, test_set, ["pgd"], [1 / 255, 8 / 255], n=1000)
"""

from __future__ import annotations

from robquant.attacks.autoattack import APGD, AutoAttack, Square
from robquant.attacks.base import NORMS, Attack, Cost
from robquant.attacks.evaluate import EvalResult, evaluate, record_mask, worst_case
from robquant.attacks.fgsm import FGSM
from robquant.attacks.outcomes import Outcomes
from robquant.attacks.pgd import PGD
from robquant.attacks.registry import ATTACKS, create_attack, list_attacks
from robquant.attacks.runs import AttackRun, Budget
from robquant.attacks.transfer import Transfer
from robquant.attacks.trust import TRUST_CHECKS, TrustCheck, diagnose, register_check, diagnose_cost, input_gradients, zero_gradient_fraction

__all__ = ["APGD", "ATTACKS", "AttackRun", "Budget", "TRUST_CHECKS", "TrustCheck", "register_check", "Attack", "AutoAttack", "Cost", "diagnose", "diagnose_cost", "EvalResult", "FGSM", "NORMS", "Outcomes", "PGD", "Square", "Transfer",
           "create_attack", "evaluate", "input_gradients", "list_attacks", "record_mask", "worst_case", "zero_gradient_fraction"]
