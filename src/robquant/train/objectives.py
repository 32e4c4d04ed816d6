"""Training objectives: what loss one batch contributes. The loop is shared by all of them."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from robquant.attacks import PGD
from robquant.errors import ConfigError, check_range
from robquant.registry import Registry


class Objective:
    """Base class: ``objective(model, x, y, gen) -> (loss, logits)`` on a training batch."""

    name = "objective"

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                 gen: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    @property
    def passes_per_image(self) -> int:
        """Forward+backward passes per training image (the cost unit of ALGORITHMS sec. 9)."""
        return 1

    def config(self) -> dict[str, Any]:
        """JSON-ready description, recorded with every result."""
        return {"name": self.name}


class Clean(Objective):
    """Cross-entropy on the clean batch."""

    name = "clean"

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                 gen: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        logits = model(x)
        return F.cross_entropy(logits, y), logits


@dataclass(frozen=True)
class PGDATConfig:
    """Madry PGD adversarial training (Linf).

    Attributes:
        eps: Budget in [0, 1] units (8/255).
        step_size: Attack step (2/255).
        steps: Attack steps (7).
        random_start: Uniform random start in the eps-ball.
        bn_mode: Model mode while generating the adversary: ``"eval"`` (BN running statistics,
            the common PyTorch recipe) or ``"train"`` (batch statistics, as Madry's code).
    """

    eps: float = 8 / 255
    step_size: float = 2 / 255
    steps: int = 7
    random_start: bool = True
    bn_mode: str = "eval"

    def __post_init__(self) -> None:
        check_range("pgd_at.eps", self.eps, 0.0)
        check_range("pgd_at.step_size", self.step_size, 0.0)
        check_range("pgd_at.steps", self.steps, 1)
        if self.bn_mode not in ("eval", "train"):
            raise ConfigError(f"pgd_at.bn_mode must be 'eval' or 'train', got {self.bn_mode!r}")


class PGDAT(Objective):
    """Cross-entropy on each batch's PGD adversary (Madry et al., ICLR 2018)."""

    name = "pgd_at"

    def __init__(self, **kwargs: Any) -> None:
        self.cfg = PGDATConfig(**kwargs)

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                 gen: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        attack = PGD(model, self.cfg.eps, steps=self.cfg.steps, step_size=self.cfg.step_size,
                     random_start=self.cfg.random_start, generator=gen, model_mode=self.cfg.bn_mode,
                     fold_bn=False)  # the weights change every step: a folded copy would not pay off
        x_adv = attack(x, y)  # restores the model's train mode
        logits = model(x_adv)
        return F.cross_entropy(logits, y), logits

    @property
    def passes_per_image(self) -> int:
        return 1 + self.cfg.steps

    def config(self) -> dict[str, Any]:
        return {"name": self.name, **asdict(self.cfg)}


OBJECTIVES: Registry[Callable[..., Objective]] = Registry("objective")
OBJECTIVES.register("clean")(Clean)
OBJECTIVES.register("pgd_at")(PGDAT)


def create_objective(name: str, **kwargs: Any) -> Objective:
    """Build training objective ``name`` (see :func:`list_objectives`).

    Raises:
        UnknownNameError: for an unknown name (the message lists the known ones).
        ConfigError: for an invalid or unknown option.
    """
    factory = OBJECTIVES.get(name)
    try:
        return factory(**kwargs)
    except TypeError as exc:
        raise ConfigError(f"objective {name!r}: {exc}") from None


def list_objectives() -> list[str]:
    """Names accepted by :func:`create_objective`."""
    return OBJECTIVES.names()
