"""Attack registry (FGSM, PGD, AutoAttack, APGD, Square, transfer) and robustness evaluation.

Example:
    >>> attack = create_attack("pgd", model, eps=8 / 255, steps=20)
    >>> x_adv = attack(x, y)
    >>> result = evaluate(model, test_set, ["pgd"], [1 / 255, 8 / 255], n=1000)
"""

from __future__ import annotations

from typing import Any

from torch import nn

from robquant.attacks.autoattack import APGD, AutoAttack, Square
from robquant.attacks.base import NORMS, Attack, Cost
from robquant.attacks.evaluate import EvalResult, evaluate, record_mask, worst_case
from robquant.attacks.fgsm import FGSM
from robquant.attacks.outcomes import Outcomes
from robquant.attacks.pgd import PGD
from robquant.attacks.runs import AttackRun, Budget
from robquant.attacks.transfer import Transfer
from robquant.attacks.trust import TRUST_CHECKS, TrustCheck, diagnose, register_check, diagnose_cost, input_gradients, zero_gradient_fraction
from robquant.errors import ConfigError
from robquant.registry import Registry

ATTACKS: Registry[type[Attack]] = Registry("attack")
ATTACKS.register("fgsm")(FGSM)
ATTACKS.register("pgd")(PGD)
ATTACKS.register("autoattack")(AutoAttack)
ATTACKS.register("apgd")(APGD)
ATTACKS.register("square")(Square)
ATTACKS.register("transfer")(Transfer)


def create_attack(name: str, model: nn.Module, eps: float, **kwargs: Any) -> Attack:
    """Build attack ``name`` against ``model`` with budget ``eps`` ([0, 1] units).

    Raises:
        UnknownNameError: for an unknown name (the message lists the known ones).
        ConfigError: for an invalid or unknown option.
    """
    cls = ATTACKS.get(name)
    try:
        return cls(model, eps, **kwargs)
    except TypeError as exc:
        raise ConfigError(f"attack {name!r}: {exc}") from None


def list_attacks() -> list[str]:
    """Names accepted by :func:`create_attack`."""
    return ATTACKS.names()


__all__ = ["APGD", "ATTACKS", "AttackRun", "Budget", "TRUST_CHECKS", "TrustCheck", "register_check", "Attack", "AutoAttack", "Cost", "diagnose", "diagnose_cost", "EvalResult", "FGSM", "NORMS", "Outcomes", "PGD", "Square", "Transfer",
           "create_attack", "evaluate", "input_gradients", "list_attacks", "record_mask", "worst_case", "zero_gradient_fraction"]
