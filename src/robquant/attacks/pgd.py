"""PGD (Madry et al., ICLR 2018): projected gradient ascent on the cross-entropy, Linf or L2."""

from __future__ import annotations

import torch
from torch import nn

from robquant.attacks.base import NORMS, Attack, Cost
from robquant.attacks.registry import ATTACKS
from robquant.defaults import ATTACK_STEPS, RESTARTS
from robquant.errors import check_range
from robquant.options import Option

GREY_LEVEL = 1 / 255  # one step of the 8-bit grid


@ATTACKS.register("pgd")
class PGD(Attack):
    """Untargeted projected gradient descent with random start and restarts; inputs in [0, 1].

    Linf steps move by ``step_size * sign(grad)``; L2 steps by ``step_size * grad / ||grad||``.
    With several restarts, an example keeps the first restart's adversarial example that fools
    the model (else the last restart's).

    **Best iterate** (``keep_best=True``, the default for evaluation): an example counts as broken
    if *any* iterate fooled the model, the random start included. Each step's forward pass already
    gives the logits of the current iterate, so this costs no extra pass; an example is dropped
    from the batch at the first iterate that fools the model (its remaining steps cannot change
    the outcome), so the attack gets cheaper as it succeeds. On quantized models PGD oscillates
    between iterates, and the last iterate alone overstates robustness. ``keep_best=False``
    returns Madry's last iterate for every example (adversarial training uses it).

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
        keep_best: Return the first iterate that fooled the model (else the last one).
        pixel_grid: Keep every iterate, the random start included, on the 8-bit grid (see
            :meth:`~robquant.attacks.base.Attack.project`): each is projected before it is judged.
            The step is then at least one grey level (1/255): a step under half a level rounds back
            to where it was, and at 1/255 (step eps/4) the attack would be its random start alone.
        judge: With ``keep_best``, the model whose predictions say whether an iterate fooled (default:
            the attacked model, from the logits its gradient pass already gives). A transfer attack
            judges on its target: the surrogate's PGD goes on until the *target* is fooled.
        min_step_levels: With ``pixel_grid``, the smallest step in grey levels (1).
    """

    name = "pgd"
    OPTIONS = (
        Option("steps", ATTACK_STEPS, "attack steps (0: the random start alone)", int, low=0),
        Option("restarts", RESTARTS, "random restarts; the worst case per example is kept", int, low=1),
        Option("step_size", None, "step in [0, 1] units (default eps/4; with pixel_grid at least one grey level)",
               float, low=0.0),
        Option("norm", "linf", "the threat model's norm", str, choices=NORMS),
        Option("pixel_grid", False, "keep every adversarial input on the 8-bit grid (k/255 within the budget)", bool))

    def __init__(self, model: nn.Module, eps: float, *, steps: int = ATTACK_STEPS, step_size: float | None = None,
                 norm: str = "linf", random_start: bool = True, restarts: int = RESTARTS,
                 generator: torch.Generator | None = None, model_mode: str = "eval",
                 fold_bn: bool = True, keep_best: bool = True, pixel_grid: bool = False,
                 judge: nn.Module | None = None, min_step_levels: int = 1) -> None:
        super().__init__(model, eps, norm=norm, model_mode=model_mode, generator=generator,
                         fold_bn=fold_bn, pixel_grid=pixel_grid)
        self.keep_best = bool(keep_best)
        check_range("steps", steps, 0)
        check_range("restarts", restarts, 1)
        self.steps = int(steps)
        self.step_size = float(eps) / 4 if step_size is None else float(check_range("step_size", step_size, 0.0))
        if self.pixel_grid:
            self.step_size = max(self.step_size, min_step_levels * GREY_LEVEL)
        self.random_start = random_start
        self.restarts = int(restarts)
        self.judge = judge

    @classmethod
    def select_options(cls, given: dict[str, object]) -> dict[str, object]:
        options = super().select_options(given)
        if options.get("pixel_grid"):  # named in records and keys: earlier pixel-grid runs had steps under a level
            options["min_step_levels"] = 1
        return options

    @classmethod
    def cost(cls, *, steps: int = ATTACK_STEPS, restarts: int = RESTARTS, **options: object) -> Cost:
        return Cost(float(steps * restarts), early_stop=True)

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
        if not self.keep_best:
            for _ in range(self.steps):
                grad = self.loss_grad(x_adv, y)
                x_adv = self.project(x_adv + self.step_size * self._direction(grad), x)
            return x_adv
        # in eval mode examples are independent, so fooled ones leave the batch; in train mode
        # (BN batch statistics) they stay, or the others' gradients would change
        drop = self.model_mode == "eval"
        out = x_adv.clone()
        alive = torch.arange(len(y), device=y.device)  # examples in the batch
        open_ = torch.ones(len(y), dtype=torch.bool, device=y.device)  # of those, not yet fooled
        for _ in range(self.steps):
            grad, logits = self.loss_grad_logits(x_adv, y)
            if self.judge is not None:
                with torch.no_grad():
                    logits = self.judge(x_adv)
            fooled = (logits.argmax(1) != y) & open_  # judges the iterate this pass was run on
            if bool(fooled.any()):
                out[alive[fooled]] = x_adv[fooled]
                open_ = open_ & ~fooled
                if drop:
                    keep = open_
                    alive, x_adv, x, y, grad, open_ = alive[keep], x_adv[keep], x[keep], y[keep], grad[keep], open_[keep]
                if not bool(open_.any()):
                    return out
            x_adv = self.project(x_adv + self.step_size * self._direction(grad), x)
        out[alive[open_]] = x_adv[open_]  # never fooled before the last step: the last iterate
        return out

    def _start(self, x: torch.Tensor) -> torch.Tensor:
        if not self.random_start:
            return x.clone()
        noise = torch.empty_like(x)
        if self.norm == "linf":
            noise.uniform_(-self.eps, self.eps, generator=self.generator)
            return self.project(x + noise, x) if self.pixel_grid else (x + noise).clamp(0.0, 1.0)
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
