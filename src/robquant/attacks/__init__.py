"""The attack library: FGSM, PGD, AutoAttack, APGD, Square, transfer (each registers itself in
:data:`~robquant.attacks.registry.ATTACKS` where it is defined) and the bit search on stored weights
(:mod:`robquant.attacks.bitflip`). Evaluating a model under them - accuracies, per-example outcomes,
trust checks, add-ons - is :mod:`robquant.evaluation`.

Example:
    >>> attack = create_attack("pgd", model, eps=8 / 255, steps=20)
    >>> x_adv = attack(x, y)
"""

from __future__ import annotations

from robquant.attacks.autoattack import APGD, AutoAttack, Square
from robquant.attacks.base import NORMS, Attack, Cost
from robquant.attacks.fgsm import FGSM
from robquant.attacks.pgd import PGD
from robquant.attacks.registry import ATTACKS, create_attack, list_attacks
from robquant.attacks.transfer import Transfer

__all__ = ["APGD", "ATTACKS", "Attack", "AutoAttack", "Cost", "FGSM", "NORMS", "PGD", "Square", "Transfer",
           "create_attack", "list_attacks"]
