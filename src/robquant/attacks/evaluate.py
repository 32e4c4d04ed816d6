"""Clean and robust accuracy of a model under a set of attacks and an epsilon sweep."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Sequence

import torch
from torch import nn

from robquant.errors import ConfigError, check_range
from robquant.progress import NULL_PROGRESS, Progress


@dataclass
class EvalResult:
    """Outcome of :func:`evaluate`.

    An example counts as robust under an attack only if it is classified correctly both clean
    and under the attack (the AutoAttack convention), so robust accuracy <= clean accuracy.

    Attributes:
        n: Examples evaluated.
        clean_accuracy: Fraction classified correctly without attack.
        robust_accuracy: ``{(attack, eps): accuracy}`` over the attack's own examples.
        worst_case: ``{eps: accuracy}``: per example, robust only if robust under every attack
            run on it at that eps (the robust accuracy of record).
        clean_correct: ``(n,)`` bool, per example.
        robust_correct: ``{(attack, eps): (n_attack,) bool}``, per example; an attack given a
            smaller ``n`` than the evaluation covers the first ``n_attack`` examples.
        attack_params: The hyperparameters of every attack run, by label.
        details: ``{(attack, eps): dict}``: what an attack reports about itself (AutoAttack: the
            package version, accuracy after each sub-attack, the package's warnings).
        seconds: Wall time.
        attack_seconds: Wall time per attack label.
    """

    n: int
    clean_accuracy: float
    robust_accuracy: dict[tuple[str, float], float]
    worst_case: dict[float, float]
    clean_correct: torch.Tensor
    robust_correct: dict[tuple[str, float], torch.Tensor]
    attack_params: dict[str, dict[str, Any]] = field(default_factory=dict)
    details: dict[tuple[str, float], dict[str, Any]] = field(default_factory=dict)
    seconds: float = 0.0
    attack_seconds: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready summary (eps in [0, 1] units and in /255 units)."""
        return {
            "n": self.n,
            "clean_accuracy": self.clean_accuracy,
            "robust": [{"attack": a, "eps": e, "eps_255": round(e * 255, 6), "accuracy": acc,
                        "n": len(self.robust_correct[(a, e)]), **({"details": self.details[(a, e)]}
                                                                   if (a, e) in self.details else {})}
                       for (a, e), acc in self.robust_accuracy.items()],
            "worst_case": [{"eps": e, "eps_255": round(e * 255, 6), "accuracy": acc}
                           for e, acc in self.worst_case.items()],
            "attack_params": self.attack_params,
            "seconds": self.seconds,
            "attack_seconds": self.attack_seconds,
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
        attacks: Attack names, or ``(name, kwargs)`` pairs, from :func:`list_attacks`. Two
            options are the evaluation's, not the attack's: ``label`` (the name results are
            reported under, so one attack can run with several settings) and ``n`` (attack only
            the first ``n`` examples: for expensive attacks such as AutoAttack).
        eps_list: Budgets in [0, 1] units.
        batch_size: Examples per batch.
        n: Evaluate the first ``n`` examples only.
        device: Where to run.
        seed: Seed for the attacks' random starts.
        progress: Progress display.

    Returns:
        An :class:`EvalResult`.

    Raises:
        ConfigError: for two attacks with one label, or a bad ``n``.
    """
    from robquant.attacks import create_attack
    from robquant.data import DeviceLoader

    device = torch.device(device)
    specs = []
    for a in attacks:
        name, kw = (a, {}) if isinstance(a, str) else (a[0], dict(a[1]))
        label, limit = kw.pop("label", name), kw.pop("n", None)
        if limit is not None:
            check_range(f"attack {label!r} n", limit, 1)
        specs.append((label, name, kw, limit))
    labels = [s[0] for s in specs]
    if len(set(labels)) != len(labels):
        raise ConfigError(f"attack labels must be distinct, got {labels}: give repeated attacks a label")
    eps_list = [float(e) for e in eps_list]
    # one attack object per (attack, eps), built (and validated) before any work
    attackers = {(label, eps): create_attack(name, model, eps, **kw)
                 for label, name, kw, _ in specs for eps in eps_list}
    limits = {label: limit for label, _, _, limit in specs}
    data = dataset.head(n)
    loader = DeviceLoader(data, batch_size, device)
    clean, robust = [], {key: [] for key in attackers}
    timing = {label: 0.0 for label in labels}
    start, seen = time.perf_counter(), 0
    with progress.task("evaluate", total=len(loader)) as task:
        for b, (x, y) in enumerate(loader):
            with torch.no_grad():
                correct = model.eval()(x).argmax(1) == y
            clean.append(correct.cpu())
            for (label, eps), attacker in attackers.items():
                keep = len(y) if limits[label] is None else max(0, min(len(y), limits[label] - seen))
                if keep == 0:
                    continue
                t0 = time.perf_counter()
                attacker.generator = torch.Generator(device=device).manual_seed(seed * 100_003 + b)
                idx = torch.nonzero(correct[:keep]).flatten()
                robust[(label, eps)].append(_robust_mask(model, attacker, x[:keep], y[:keep], idx).cpu())
                timing[label] += time.perf_counter() - t0
            seen += len(y)
            task.advance()
    clean_correct = torch.cat(clean)
    robust_correct = {k: torch.cat(v) if v else torch.zeros(0, dtype=torch.bool) for k, v in robust.items()}
    worst = worst_case(robust_correct)
    details = {}
    for key, attacker in attackers.items():
        report = getattr(attacker, "report", None)
        if report is not None:
            m = len(robust_correct[key])
            details[key] = report(m, int(clean_correct[:m].sum()))
    return EvalResult(
        n=len(clean_correct),
        clean_accuracy=clean_correct.float().mean().item(),
        robust_accuracy={k: v.float().mean().item() if len(v) else float("nan") for k, v in robust_correct.items()},
        worst_case={e: m.float().mean().item() for e, m in worst.items()},
        clean_correct=clean_correct, robust_correct=robust_correct,
        attack_params={label: _describe(attacker) for (label, _), attacker in attackers.items()},
        details=details, seconds=time.perf_counter() - start, attack_seconds=timing,
    )


def worst_case(robust_correct: dict[tuple[str, float], torch.Tensor]) -> dict[float, torch.Tensor]:
    """Per eps, the per-example minimum over attacks: robust only if robust under every attack.

    Masks may differ in length (an attack run on the first ``k`` examples only); an example
    counts under the attacks that covered it. The result has the longest mask's length.

    Args:
        robust_correct: ``{(attack, eps): (n_attack,) bool}``.

    Returns:
        ``{eps: (n,) bool}``.
    """
    by_eps: dict[float, list[torch.Tensor]] = {}
    for (_, eps), mask in robust_correct.items():
        by_eps.setdefault(eps, []).append(mask)
    out = {}
    for eps, masks in by_eps.items():
        worst = torch.ones(max(len(m) for m in masks), dtype=torch.bool)
        for m in masks:
            worst[: len(m)] &= m.cpu()
        out[eps] = worst
    return out


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
    return {k: v for k, v in vars(attack).items()
            if not k.startswith("_") and k not in ("model", "generator", "eps", "warnings", "fooled")}
