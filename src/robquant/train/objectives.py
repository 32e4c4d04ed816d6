"""Training objectives: what loss one batch contributes. The loop is shared by all of them."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from robquant.attacks import PGD
from robquant.defaults import PGD_AT_EPS_255, PGD_AT_STEP_255, PGD_AT_STEPS
from robquant.errors import ConfigError, check_range
from robquant.registry import Registry


class Objective:
    """Base class: ``objective(model, x, y, gen) -> (loss, logits)`` on a training batch."""

    name = "objective"

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                 gen: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    @classmethod
    def cost(cls, **options: Any) -> tuple[int, int]:
        """``(forward passes, forward+backward passes)`` per training image with these options (the
        cost unit of ALGORITHMS sec. 9): plans ask this before anything is built."""
        return 1, 1

    def _options(self) -> dict[str, Any]:
        return {}

    @property
    def passes_per_image(self) -> int:
        """Forward+backward passes per training image."""
        return self.cost(**self._options())[1]

    @property
    def forwards_per_image(self) -> int:
        """Forward passes per training image (passes plus, e.g., a teacher's forward)."""
        return self.cost(**self._options())[0]

    def parameters(self) -> list[nn.Parameter]:
        """Trainable parameters the objective owns (trained with the model), if any."""
        return []

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

    eps: float = PGD_AT_EPS_255 / 255
    step_size: float = PGD_AT_STEP_255 / 255
    steps: int = PGD_AT_STEPS
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
                     fold_bn=False,  # the weights change every step: a folded copy would not pay off
                     keep_best=False)  # Madry's recipe trains on the last iterate
        x_adv = attack(x, y)  # restores the model's train mode
        logits = model(x_adv)
        return F.cross_entropy(logits, y), logits

    @classmethod
    def cost(cls, *, steps: int = PGDATConfig.steps, **options: Any) -> tuple[int, int]:
        return 1 + steps, 1 + steps

    def _options(self) -> dict[str, Any]:
        return {"steps": self.cfg.steps}

    def config(self) -> dict[str, Any]:
        return {"name": self.name, **asdict(self.cfg)}


class FastAdversarial(Objective):
    """FGSM with random start ("fast is better than free", Wong et al., ICLR 2020).

    delta ~ U(-eps, eps), one signed-gradient step of ``step_size`` (1.25 eps), projected onto the
    eps-ball and [0, 1]; cross-entropy on the result. Two forward+backward passes per image.
    """

    name = "fast_adversarial"

    def __init__(self, eps: float = 8 / 255, step_size: float | None = None) -> None:
        self.eps = float(check_range("fast_adversarial.eps", eps, 0.0))
        self.step_size = 1.25 * self.eps if step_size is None else float(step_size)

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                 gen: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        delta = torch.empty_like(x).uniform_(-self.eps, self.eps, generator=gen)
        delta = ((x + delta).clamp(0, 1) - x).requires_grad_(True)
        loss = F.cross_entropy(model(x + delta), y)
        (grad,) = torch.autograd.grad(loss, delta)
        delta = (delta.detach() + self.step_size * grad.sign()).clamp(-self.eps, self.eps)
        logits = model((x + delta).clamp(0, 1))
        return F.cross_entropy(logits, y), logits

    @classmethod
    def cost(cls, **options: Any) -> tuple[int, int]:
        return 2, 2

    def config(self) -> dict[str, Any]:
        return {"name": self.name, "eps": self.eps, "step_size": self.step_size}


class NoiseFGSM(Objective):
    """N-FGSM ("Make some noise", de Jorge et al., NeurIPS 2022).

    eta ~ U(-k eps, k eps) (k = ``noise``, 2), one signed-gradient step of ``step_size`` (eps) from
    x + eta, and *no* projection back onto the eps-ball: the training perturbation reaches up to
    (k + 1) eps, which is what keeps single-step training from catastrophic overfitting at the
    cost of FGSM-RS. Inputs stay in [0, 1]. Two forward+backward passes per image.
    """

    name = "n_fgsm"

    def __init__(self, eps: float = 8 / 255, noise: float = 2.0, step_size: float | None = None) -> None:
        self.eps = float(check_range("n_fgsm.eps", eps, 0.0))
        self.noise = float(check_range("n_fgsm.noise", noise, 0.0))
        self.step_size = self.eps if step_size is None else float(check_range("n_fgsm.step_size", step_size, 0.0))

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                 gen: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        k = self.noise * self.eps
        start = (x + torch.empty_like(x).uniform_(-k, k, generator=gen)).clamp(0, 1).requires_grad_(True)
        loss = F.cross_entropy(model(start), y)
        (grad,) = torch.autograd.grad(loss, start)
        logits = model((start.detach() + self.step_size * grad.sign()).clamp(0, 1))
        return F.cross_entropy(logits, y), logits

    @classmethod
    def cost(cls, **options: Any) -> tuple[int, int]:
        return 2, 2

    def config(self) -> dict[str, Any]:
        return {"name": self.name, "eps": self.eps, "noise": self.noise, "step_size": self.step_size}


class RRM(Objective):
    """Robust representation matching (RRM; Vaishnavi et al., USENIX Security 2022).

    L = lambda CE(f_s(x), y) + (1 - mean cos(phi_s(x), phi_t(x))) on clean inputs only, phi the
    penultimate features (``model.features``), the teacher frozen in eval mode without gradients
    on the same (augmented) batch. If feature sizes differ, a linear adapter maps the student's
    features to the teacher's; it is trained with the student (see :meth:`parameters`).

    Args:
        teacher: The robust full-precision model.
        lam: Weight of the cross-entropy term (0.005).
        teacher_id: How records name the teacher (e.g. its stage key).
    """

    name = "transfer"

    def __init__(self, teacher: nn.Module, lam: float = 0.005, teacher_id: str = "", student_dim: int | None = None) -> None:
        self.teacher = teacher.eval()  # its forward runs without gradients; its parameters are left as they are
        self.lam = float(check_range("transfer.lam", lam, 0.0))
        self.teacher_id = teacher_id
        t_dim = getattr(teacher, "feature_dim", None)
        self.adapter = nn.Linear(student_dim, t_dim) if student_dim and t_dim and student_dim != t_dim else None

    def parameters(self) -> list[nn.Parameter]:
        return list(self.adapter.parameters()) if self.adapter is not None else []

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                 gen: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.no_grad():
            target = self.teacher.features(x)  # (B, D)
        feats = model.features(x)
        logits = model.head(feats)
        if self.adapter is not None:
            feats = self.adapter.to(feats.device)(feats)
        cos = F.cosine_similarity(feats, target, dim=1, eps=1e-6).mean()
        return self.lam * F.cross_entropy(logits, y) + (1 - cos), logits

    @classmethod
    def cost(cls, **options: Any) -> tuple[int, int]:
        return 2, 1  # student + teacher forwards, the student's backward

    def config(self) -> dict[str, Any]:
        return {"name": self.name, "lam": self.lam, "teacher": self.teacher_id,
                "adapter": self.adapter is not None}


OBJECTIVES: Registry[Callable[..., Objective]] = Registry("objective")
OBJECTIVES.register("clean")(Clean)
OBJECTIVES.register("pgd_at")(PGDAT)
OBJECTIVES.register("fast_adversarial")(FastAdversarial)
OBJECTIVES.register("n_fgsm")(NoiseFGSM)
OBJECTIVES.register("transfer")(RRM)


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
