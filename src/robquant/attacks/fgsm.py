"""FGSM (Goodfellow et al., ICLR 2015): one signed-gradient step of size eps, Linf."""

from __future__ import annotations

import torch
from torch import nn

from robquant.attacks.base import Attack
from robquant.attacks.registry import ATTACKS
from robquant.options import Option


@ATTACKS.register("fgsm")
class FGSM(Attack):
    """Fast gradient sign method, untargeted, Linf, inputs in [0, 1].

    Args:
        model: Classifier returning logits.
        eps: Linf budget in [0, 1] units.
        pixel_grid: Round the adversarial image to the 8-bit grid within the budget.
    """

    name = "fgsm"
    OPTIONS = (Option("pixel_grid", False, "keep every adversarial input on the 8-bit grid (k/255 within the budget)",
                      bool),)

    def __init__(self, model: nn.Module, eps: float, **kwargs: object) -> None:
        super().__init__(model, eps, norm="linf", **kwargs)  # type: ignore[arg-type]

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        x_adv = x + self.eps * self.loss_grad(x, y).sign()
        return self.project(x_adv, x) if self.pixel_grid else x_adv.clamp(0.0, 1.0)
