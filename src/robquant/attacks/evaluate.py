"""Clean and robust accuracy of a model under a set of attacks and an epsilon sweep."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Sequence

import torch
from torch import nn

from robquant.progress import NULL_PROGRESS, Progress


@dataclass
class EvalResult:
    """Outcome of :func:`evaluate`.

    An example counts as robust under an attack only if it is classified correctly both clean
    and under the attack (the AutoAttack convention), so robust accuracy <= clean accuracy.

    Attributes:
        n: Examples evaluated.
        clean_accuracy: Fraction classified correctly without attack.
        robust_accuracy: ``{(attack, eps): accuracy}``.
        worst_case: ``{eps: accuracy}``: per example, robust only if robust under every attack
            run at that eps.
        clean_correct: ``(n,)`` bool, per example.
        robust_correct: ``{(attack, eps): (n,) bool}``, per example.
        attack_params: The hyperparameters of every attack run, by name.
        seconds: Wall time.
    """

    n: int
    clean_accuracy: float
    robust_accuracy: dict[tuple[str, float], float]
    worst_case: dict[float, float]
    clean_correct: torch.Tensor
    robust_correct: dict[tuple[str, float], torch.Tensor]
    attack_params: dict[str, dict[str, Any]] = field(default_factory=dict)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready summary (eps in [0, 1] units and in /255 units)."""
        return {
            "n": self.n,
            "clean_accuracy": self.clean_accuracy,
            "robust": [{"attack": a, "eps": e, "eps_255": round(e * 255, 6), "accuracy": acc}
                       for (a, e), acc in self.robust_accuracy.items()],
            "worst_case": [{"eps": e, "eps_255": round(e * 255, 6), "accuracy": acc}
                           for e, acc in self.worst_case.items()],
            "attack_params": self.attack_params,
            "seconds": self.seconds,
        }


AttackSpec = str | tuple[str, dict[str, Any]]


def evaluate(model: nn.Module, dataset: Any, attacks: Sequence[AttackSpec], eps_list: Sequence[float], *,
             batch_size: int = 256, n: int | None = None, device: torch.device | str = "cpu",
             seed: int = 0, progress: Progress = NULL_PROGRESS) -> EvalResult:
    """Clean accuracy and robust accuracy per (attack, eps), batched.

    Only examples that are classified correctly clean are attacked (the others are not robust
    by definition). Random starts are seeded per batch from ``seed``, so results are
    deterministic for a seed.

    Args:
        model: Classifier, inputs in [0, 1].
        dataset: An :class:`~robquant.data.ImageDataset` (test split).
        attacks: Attack names, or ``(name, kwargs)`` pairs, from :func:`list_attacks`.
        eps_list: Budgets in [0, 1] units.
        batch_size: Examples per batch.
        n: Evaluate the first ``n`` examples only.
        device: Where to run.
        seed: Seed for the attacks' random starts.
        progress: Progress display.

    Returns:
        An :class:`EvalResult`.
    """
    from robquant.attacks import create_attack
    from robquant.data import DeviceLoader

    device = torch.device(device)
    specs = [(a, {}) if isinstance(a, str) else (a[0], dict(a[1])) for a in attacks]
    eps_list = [float(e) for e in eps_list]
    # one attack object per (attack, eps), built (and validated) before any work
    attackers = {(name, eps): create_attack(name, model, eps, **kw) for name, kw in specs for eps in eps_list}
    data = dataset.head(n)
    loader = DeviceLoader(data, batch_size, device)
    clean, robust = [], {(a, e): [] for a, _ in specs for e in eps_list}
    start = time.perf_counter()
    with progress.task("evaluate", total=len(loader)) as task:
        for b, (x, y) in enumerate(loader):
            with torch.no_grad():
                correct = model.eval()(x).argmax(1) == y
            clean.append(correct.cpu())
            idx = torch.nonzero(correct).flatten()
            for key, attacker in attackers.items():
                attacker.generator = torch.Generator(device=device).manual_seed(seed * 100_003 + b)
                robust[key].append(_robust_mask(model, attacker, x, y, idx).cpu())
            task.advance()
    clean_correct = torch.cat(clean)
    robust_correct = {k: torch.cat(v) for k, v in robust.items()}
    worst = worst_case(robust_correct)
    return EvalResult(
        n=len(clean_correct),
        clean_accuracy=clean_correct.float().mean().item(),
        robust_accuracy={k: v.float().mean().item() for k, v in robust_correct.items()},
        worst_case={e: m.float().mean().item() for e, m in worst.items()},
        clean_correct=clean_correct, robust_correct=robust_correct,
        attack_params={name: _describe(attacker) for (name, _), attacker in attackers.items()},
        seconds=time.perf_counter() - start,
    )


def worst_case(robust_correct: dict[tuple[str, float], torch.Tensor]) -> dict[float, torch.Tensor]:
    """Per eps, the per-example minimum over attacks: robust only if robust under every attack.

    Args:
        robust_correct: ``{(attack, eps): (n,) bool}``.

    Returns:
        ``{eps: (n,) bool}``.
    """
    by_eps: dict[float, list[torch.Tensor]] = {}
    for (_, eps), mask in robust_correct.items():
        by_eps.setdefault(eps, []).append(mask)
    return {eps: torch.stack(masks).all(0) for eps, masks in by_eps.items()}


def _robust_mask(model: nn.Module, attacker: Any, x: torch.Tensor, y: torch.Tensor,
                 idx: torch.Tensor) -> torch.Tensor:
    """(B,) bool: correct clean and under the attack (judged by ``model`` itself)."""
    mask = torch.zeros(len(y), dtype=torch.bool, device=y.device)
    if len(idx) == 0:
        return mask
    x_adv = attacker(x[idx], y[idx])
    with torch.no_grad():
        mask[idx] = model(x_adv).argmax(1) == y[idx]
    return mask


def _describe(attack: Any) -> dict[str, Any]:
    """The attack's hyperparameters (eps excluded, it is swept), JSON-ready."""
    return {k: v for k, v in vars(attack).items() if not k.startswith("_") and k not in ("model", "generator", "eps")}
