"""Checks that an attack's gradients are real (ALGORITHMS sec. 8)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def input_gradients(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-example gradient of the cross-entropy with respect to the input, in eval mode."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        with torch.enable_grad():
            x = x.detach().clone().requires_grad_(True)
            loss = F.cross_entropy(model(x), y, reduction="sum")
            (grad,) = torch.autograd.grad(loss, x)
    finally:
        for module, training in modes:
            module.training = training
    return grad


def zero_gradient_fraction(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 256) -> float:
    """Fraction of examples whose input gradient is exactly zero everywhere.

    Rounding without a straight-through estimator gives exactly zero gradients, so a gradient
    attack never moves and "robust accuracy" equals clean accuracy; this catches it.
    """
    zero = 0
    for i in range(0, len(x), batch_size):
        grad = input_gradients(model, x[i:i + batch_size], y[i:i + batch_size])
        zero += int((grad.flatten(1).abs().amax(1) == 0).sum())
    return zero / max(len(x), 1)
