"""PGD (Madry et al., ICLR 2018): projected gradient ascent on the cross-entropy, Linf or L2."""

from __future__ import annotations

import torch
from torch import nn

from robquant.attacks.base import Attack
from robquant.errors import check_range


class PGD(Attack):
    """Untargeted projected gradient descent with random start and restarts; inputs in [0, 1].

    Linf steps move by ``step_size * sign(grad)``; L2 steps by ``step_size * grad / ||grad||``.
    With several restarts, an example keeps the first restart's adversarial example that fools
    the model (else the last restart's).

    Args:
        model: Classifier returning logits.
        eps: Budget in [0, 1] units.
        steps: Gradient steps (default 20).
        step_size: Step length; default ``eps / 4`` (Madry's 2/255 at 8/255, and well-behaved at
            small eps where a fixed 2/255 step would only oscillate).
        norm: ``"linf"`` or ``"l2"``.
        random_start: Start from a uniform random point in the eps-ball.
        restarts: Independent runs (default 1).
        generator: Random source for the start points (for reproducibility).
        model_mode: ``"eval"`` or ``"train"``.
        fold_bn: Follow the gradients of a BN-folded copy (see :class:`Attack`).
    """

    name = "pgd"

    def __init__(self, model: nn.Module, eps: float, *, steps: int = 20, step_size: float | None = None,
                 norm: str = "linf", random_start: bool = True, restarts: int = 1,
                 generator: torch.Generator | None = None, model_mode: str = "eval",
                 fold_bn: bool = True) -> None:
        super().__init__(model, eps, norm=norm, model_mode=model_mode, generator=generator,
                         fold_bn=fold_bn)
        check_range("steps", steps, 0)
        check_range("restarts", restarts, 1)
        self.steps = int(steps)
        self.step_size = float(eps) / 4 if step_size is None else float(check_range("step_size", step_size, 0.0))
        self.random_start = random_start
        self.restarts = int(restarts)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        best = self._run(x, y)
        if self.restarts == 1:
            return best
        fooled = self._fooled(best, y)
        for _ in range(self.restarts - 1):
            if bool(fooled.all()):
                break
            x_adv = self._run(x, y)
            newly = self._fooled(x_adv, y) & ~fooled
            best = torch.where(newly.view(-1, 1, 1, 1), x_adv, best)
            fooled |= newly
        return best

    def _run(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        x_adv = self._start(x)
        for _ in range(self.steps):
            grad = self.loss_grad(x_adv, y)
            x_adv = self.project(x_adv + self.step_size * self._direction(grad), x)
        return x_adv

    def _start(self, x: torch.Tensor) -> torch.Tensor:
        if not self.random_start:
            return x.clone()
        noise = torch.empty_like(x)
        if self.norm == "linf":
            noise.uniform_(-self.eps, self.eps, generator=self.generator)
            return (x + noise).clamp(0.0, 1.0)
        noise.normal_(generator=self.generator)
        radius = torch.rand(x.shape[0], device=x.device, generator=self.generator) * self.eps
        noise = noise / noise.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)
        return self.project(x + noise * radius.view(-1, 1, 1, 1), x)

    def _direction(self, grad: torch.Tensor) -> torch.Tensor:
        if self.norm == "linf":
            return grad.sign()
        return grad / grad.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)

    @torch.no_grad()
    def _fooled(self, x_adv: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.model(x_adv).argmax(1) != y  # judged by the model itself, not the view
