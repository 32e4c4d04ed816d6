"""Transfer attack: PGD crafted on a surrogate model, judged on the target model."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from robquant.attacks.base import Attack, Cost
from robquant.attacks.pgd import PGD
from robquant.defaults import ATTACK_STEPS, RESTARTS
from robquant.errors import ConfigError


class Transfer(Attack):
    """Adversarial examples made by PGD on ``surrogate``, evaluated on ``model``.

    For a quantized model the natural surrogate is its full-precision parent: it has the same
    function up to rounding and honest gradients, so a transfer attack that beats the white-box
    attack on the quantized model exposes masked gradients (ALGORITHMS sec. 8).

    Args:
        model: The target (only judged by the caller; never differentiated).
        eps: Budget in [0, 1] units.
        surrogate: The model the examples are crafted on (on the target's device).
        surrogate_id: How records name the surrogate (default: its class).
        steps, step_size, restarts, norm: The surrogate PGD's settings (see :class:`PGD`).
    """

    name = "transfer"
    OPTIONS = ("steps", "restarts", "step_size", "norm")
    NEEDS_SURROGATE = True

    def __init__(self, model: nn.Module, eps: float, *, surrogate: nn.Module | None = None,
                 surrogate_id: str | None = None, steps: int = ATTACK_STEPS, step_size: float | None = None,
                 restarts: int = RESTARTS, norm: str = "linf", generator: torch.Generator | None = None, model_mode: str = "eval", fold_bn: bool = True) -> None:
        # the target is never differentiated: no folded view of it
        super().__init__(model, eps, norm=norm, model_mode=model_mode, generator=generator, fold_bn=False)
        if not isinstance(surrogate, nn.Module):
            raise ConfigError(f"attack transfer needs a surrogate model, got {type(surrogate).__name__}")
        self.surrogate_id = surrogate_id or type(surrogate).__name__
        self._pgd = PGD(surrogate, eps, steps=steps, step_size=step_size, restarts=restarts, norm=norm,
                        model_mode=model_mode, fold_bn=fold_bn)
        self.steps, self.step_size, self.restarts = self._pgd.steps, self._pgd.step_size, self._pgd.restarts

    @classmethod
    def cost(cls, *, steps: int = ATTACK_STEPS, restarts: int = RESTARTS, **options: object) -> Cost:
        return Cost(float(steps * restarts), early_stop=True)  # on the surrogate

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        self._pgd.generator = self.generator
        return self._pgd(x, y)

    def report(self, n: int, n_attacked: int) -> dict[str, Any]:
        return {"surrogate": self.surrogate_id}
