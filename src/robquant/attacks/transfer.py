"""Transfer attack: PGD crafted on a surrogate model, judged on the target model."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from robquant.attacks.base import Attack, Cost
from robquant.attacks.pgd import PGD
from robquant.attacks.registry import ATTACKS
from robquant.defaults import ATTACK_STEPS, RESTARTS
from robquant.errors import ConfigError


@ATTACKS.register("transfer")
class Transfer(Attack):
    """Adversarial examples made by PGD on ``surrogate``, evaluated on ``model`` (ALGORITHMS sec. 11).

    For a quantized model the natural surrogate is its full-precision parent: it has the same
    function up to rounding and honest gradients, so a transfer attack that beats the white-box
    attack on the quantized model exposes masked gradients (ALGORITHMS sec. 8).

    The surrogate's PGD runs its **full course**: no early exit once the surrogate is fooled (a
    barely-fooling iterate transfers poorly). Its best iterate is judged on the *target*: every
    iterate is shown to the target (one forward each) and an example keeps the first that fools it,
    else the last. A transfer from a model to itself is therefore its white-box PGD. Of several
    restarts, an example keeps the first whose iterate fools the target.

    Args:
        model: The target (only judged; never differentiated).
        eps: Budget in [0, 1] units.
        surrogate: The model the examples are crafted on (on the target's device).
        surrogate_id: How records name the surrogate (default: its class).
        steps, step_size, restarts, norm, pixel_grid: The surrogate PGD's settings (see :class:`PGD`),
            the same as the target's white-box attack where it is compared with one.
        full_course: False: the surrogate's PGD stops each example at its first iterate that fools the
            *surrogate* (what robquant did before), for comparison only.
    """

    name = "transfer"
    OPTIONS = tuple(PGD.DECLARED.values())  # the white-box PGD's own, run on the surrogate
    NEEDS_SURROGATE = True

    @classmethod
    def select_options(cls, given: dict[str, object]) -> dict[str, object]:
        # named in every record and key: results of the earlier, early-stopping transfer never match
        return {**super().select_options(given), "full_course": True}

    def __init__(self, model: nn.Module, eps: float, *, surrogate: nn.Module | None = None,
                 surrogate_id: str | None = None, steps: int = ATTACK_STEPS, step_size: float | None = None,
                 restarts: int = RESTARTS, norm: str = "linf", pixel_grid: bool = False, full_course: bool = True,
                 generator: torch.Generator | None = None, model_mode: str = "eval", fold_bn: bool = True) -> None:
        # the target is never differentiated: no folded view of it
        super().__init__(model, eps, norm=norm, model_mode=model_mode, generator=generator, fold_bn=False,
                         pixel_grid=pixel_grid)
        if not isinstance(surrogate, nn.Module):
            raise ConfigError(f"attack transfer needs a surrogate model, got {type(surrogate).__name__}")
        self.surrogate_id = surrogate_id or type(surrogate).__name__
        self.full_course = bool(full_course)
        self._pgd = PGD(surrogate, eps, steps=steps, step_size=step_size, restarts=1, norm=norm,
                        model_mode=model_mode, fold_bn=fold_bn, pixel_grid=pixel_grid,
                        judge=model if self.full_course else None)
        self.steps, self.step_size, self.restarts = self._pgd.steps, self._pgd.step_size, int(restarts)

    @classmethod
    def cost(cls, *, steps: int = ATTACK_STEPS, restarts: int = RESTARTS, **options: object) -> Cost:
        # on the surrogate; full course: a forward of the target per step, and an example leaves when the target is fooled
        full = bool(options.get("full_course", True))
        return Cost(float(steps * restarts), forwards=float(steps * restarts) if full else 0.0, early_stop=True)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        self._pgd.generator = self.generator
        best = fooled = None
        for _ in range(self.restarts):
            x_adv = self._pgd(x, y)  # the surrogate's modes are restored by its own attack
            with torch.no_grad():
                wrong = self.model(x_adv).argmax(1) != y  # judged on the target
            if best is None:
                best, fooled = x_adv, wrong
            else:
                newly = wrong & ~fooled
                best = torch.where(newly.view(-1, *([1] * (x.dim() - 1))), x_adv, best)
                fooled = fooled | newly
            if bool(fooled.all()):
                break
        return best

    def report(self, n: int, n_attacked: int) -> dict[str, Any]:
        return {"surrogate": self.surrogate_id, "full_course": self.full_course}
