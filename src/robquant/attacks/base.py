"""The attack base class: owns model mode, the [0, 1] range and the epsilon projection."""

from __future__ import annotations

import math

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from robquant.attacks.view import attack_view
from robquant.models.surgery import modes_restored
from robquant.errors import ConfigError, check_range
from robquant.options import Option, declared

NORMS = ("linf", "l2")


@dataclass(frozen=True)
class Cost:
    """Passes one attacked example costs at one budget: input-gradient passes and forward-only passes."""

    gradients: float
    forwards: float = 0.0
    early_stop: bool = False  # an example leaves the attack once it is fooled


class Attack:
    """Base class for evasion attacks on classifiers with inputs in [0, 1].

    Subclasses write :meth:`forward` only. :meth:`__call__` puts the model in the requested
    mode (eval by default) and restores every module's own mode afterwards, even on error, runs with gradients
    enabled, and returns detached adversarial examples. Gradients are taken with respect to the
    input only (``torch.autograd.grad``), so the model's parameter gradients are untouched.

    Args:
        model: Classifier returning logits.
        eps: Perturbation budget in [0, 1] pixel units (e.g. 8/255).
        norm: ``"linf"`` or ``"l2"``.
        model_mode: ``"eval"`` (default) or ``"train"`` (BN batch statistics while attacking,
            as some adversarial-training recipes do).
        generator: Random source for attacks that draw random numbers (for reproducibility).
        fold_bn: In eval mode, compute gradients on a copy of the model with BatchNorm folded
            into the convolutions (:func:`~robquant.attacks.view.attack_view`): the same function
            up to float rounding, about 1.5x faster on the CPU. Models that cannot be folded
            safely are attacked as they are.
    """

    name = "attack"
    # the options an attack of this kind takes (beyond model and eps), declared once (robquant.options):
    # Option(name, default, help, kind, low, high, choices) or a plain name; OPTIONS reads as their names
    OPTIONS: tuple[str, ...] = ()
    DECLARED: dict[str, Option] = {}
    NEEDS_SURROGATE = False  # crafts its examples on another model (given as ``surrogate``)

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        if "OPTIONS" in cls.__dict__:
            cls.DECLARED = declared(cls.__dict__["OPTIONS"])
            cls.OPTIONS = tuple(cls.DECLARED)

    @classmethod
    def select_options(cls, given: dict[str, object]) -> dict[str, object]:
        """Of the options a user gave (None: not given), those this attack takes, each checked against its
        declaration: the CLI and study files offer one set of options, and each attack picks its own.

        Raises:
            ConfigError: a value its declaration does not allow (naming the attack, the option and what is).
        """
        return {k: cls.DECLARED[k].check(v, cls.name) for k, v in given.items() if k in cls.OPTIONS and v is not None}

    def __init__(self, model: nn.Module, eps: float, *, norm: str = "linf",
                 model_mode: str = "eval", generator: torch.Generator | None = None,
                 fold_bn: bool = True, pixel_grid: bool = False) -> None:
        check_range("eps", eps, 0.0)
        if norm not in NORMS:
            raise ConfigError(f"norm must be one of {', '.join(NORMS)}, got {norm!r}")
        if pixel_grid and norm != "linf":
            raise ConfigError(f"pixel_grid keeps an Linf attack's inputs on the 8-bit grid; norm {norm!r} has none")
        self.pixel_grid = bool(pixel_grid)
        if model_mode not in ("eval", "train"):
            raise ConfigError(f"model_mode must be 'eval' or 'train', got {model_mode!r}")
        self.model = model
        self.eps = float(eps)
        self.norm = norm
        self.model_mode = model_mode
        self.generator = generator
        self.fold_bn = fold_bn
        self._net = model  # the module whose gradients the attack follows
        self._view: tuple[tuple[int, ...], nn.Module] | None = None  # (weights' versions, view)

    @classmethod
    def cost(cls, **options: object) -> Cost:
        """What one attacked example costs at one budget with these options (an upper bound for
        attacks that stop early); plans and time estimates ask this instead of naming attacks."""
        return Cost(1.0)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Return adversarial versions of ``x`` (B, C, H, W) for labels ``y`` (B,)."""
        raise NotImplementedError

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        with modes_restored(self.model, training=self.model_mode == "train"):
            try:
                if self.fold_bn and self.model_mode == "eval":
                    self._net = self._folded()
                with torch.enable_grad():
                    x_adv = self.forward(x.detach(), y.detach())
            finally:
                self._net = self.model
        return x_adv.detach()

    def _folded(self) -> nn.Module:
        """The BN-folded view, rebuilt only when the model's weights changed since the last call."""
        version = tuple(t._version for t in (*self.model.parameters(), *self.model.buffers()))
        if self._view is None or self._view[0] != version:
            self._view = (version, attack_view(self.model))
        return self._view[1]

    def loss_grad(self, x_adv: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Gradient of the summed cross-entropy with respect to the input."""
        return self.loss_grad_logits(x_adv, y)[0]

    def loss_grad_logits(self, x_adv: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Gradient of the summed cross-entropy with respect to the input, and the logits of the
        same forward pass (so an attack can judge its current iterate at no extra cost)."""
        x_adv = x_adv.detach().requires_grad_(True)
        logits = self._net(x_adv)
        loss = F.cross_entropy(logits, y, reduction="sum")
        (grad,) = torch.autograd.grad(loss, x_adv)
        return grad, logits.detach()

    def project(self, x_adv: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Project onto the eps-ball around ``x`` intersected with [0, 1]; with ``pixel_grid``, onto
        its 8-bit images: every pixel a multiple of 1/255 within ``floor(eps * 255)`` levels of
        ``x``'s (``x`` is an 8-bit image), so what the attack judges is an image that can be saved."""
        if self.pixel_grid:
            levels = math.floor(self.eps * 255 + 1e-6)
            base = torch.round(x * 255)
            steps = (torch.round(x_adv * 255) - base).clamp(-levels, levels)
            return (base + steps).clamp(0, 255) / 255
        delta = x_adv - x
        if self.norm == "linf":
            delta = delta.clamp(-self.eps, self.eps)
        else:
            norms = delta.flatten(1).norm(dim=1).clamp_min(1e-12)
            delta = delta * (self.eps / norms).clamp(max=1.0).view(-1, 1, 1, 1)
        return (x + delta).clamp(0.0, 1.0)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(eps={self.eps:.5g}, norm={self.norm})"
