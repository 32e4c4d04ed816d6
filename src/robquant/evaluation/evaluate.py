"""Clean and robust accuracy of a model under a set of attacks and an epsilon sweep."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import torch
from torch import nn

from robquant.evaluation.outcomes import Outcomes, from_masks
from robquant.attacks.registry import create_attack
from robquant.evaluation.runs import AttackRun, Budget
from robquant.errors import ConfigError, check_range
from robquant.quant.ste import exact_float32
from robquant.progress import NULL_PROGRESS, Progress


@dataclass
class EvalResult:
    """Outcome of :func:`evaluate`.

    An example counts as robust under an attack only if it is classified correctly both clean
    and under the attack (the AutoAttack convention), so robust accuracy <= clean accuracy.

    Attributes:
        n: Examples evaluated.
        clean_accuracy: Fraction classified correctly without attack.
        robust_accuracy: ``{(attack, eps): accuracy}`` over the attack's own examples (with
            ``cascade``, robust under this attack and every earlier one).
        worst_case: ``{eps: accuracy}``: per example, robust only if robust under every attack
            run at that eps, over the examples every one of them covered (the robust accuracy
            of record).
        worst_case_n: ``{eps: examples}`` the worst case is taken over.
        clean_correct: ``(n,)`` bool, per example.
        robust_correct: ``{(attack, eps): (n_attack,) bool}``, per example; an attack given a
            smaller ``n`` than the evaluation covers the first ``n_attack`` examples.
        attack_params: The hyperparameters of every attack run, by label.
        details: ``{(attack, eps): dict}``: what an attack reports about itself (AutoAttack: the
            package version, accuracy after each sub-attack, the package's warnings).
        cascade: Whether each attack ran only on the examples the earlier ones left robust.
        seconds: Wall time.
        attack_seconds: Wall time per attack label.
        attacked: ``{(attack, eps): examples}`` the attack was run on (its cost).
    """

    n: int
    clean_accuracy: float
    robust_accuracy: dict[tuple[str, float], float]
    worst_case: dict[float, float]
    clean_correct: torch.Tensor
    robust_correct: dict[tuple[str, float], torch.Tensor]
    worst_case_n: dict[float, int] = field(default_factory=dict)
    attack_params: dict[str, dict[str, Any]] = field(default_factory=dict)
    details: dict[tuple[str, float], dict[str, Any]] = field(default_factory=dict)
    cascade: bool = False
    seconds: float = 0.0
    attack_seconds: dict[str, float] = field(default_factory=dict)
    attacked: dict[tuple[str, float], int] = field(default_factory=dict)
    labels: dict[float, float] = field(default_factory=dict)  # {eps: the budget's label /255}, as given

    def to_dict(self, labels: Mapping[float, float] | None = None) -> dict[str, Any]:
        """A JSON-ready summary (eps in [0, 1] units and as its label in /255 units: the budgets'
        own labels, or ``labels`` ``{eps: label}``).

        Each worst-case entry names the attacks it covers, the examples it is taken over (``n``)
        and each attack's accuracy on those same examples (``per_attack``).
        """
        labels = {**self.labels, **(labels or {})}

        def label(e: float) -> float:
            return labels[e] if e in labels else round(e * 255, 6)

        worst = []
        for e, acc in self.worst_case.items():
            m = self.worst_case_n[e]
            per_attack = {a: self.robust_correct[(a, ee)][:m].double().mean().item() if m else float("nan")
                          for (a, ee) in self.robust_correct if ee == e}
            worst.append({"eps": e, "eps_255": label(e), "accuracy": acc, "n": m,
                          "attacks": list(per_attack), "per_attack": per_attack})
        return {
            "n": self.n,
            "clean_accuracy": self.clean_accuracy,
            "cascade": self.cascade,
            "robust": [{"attack": a, "eps": e, "eps_255": label(e), "accuracy": acc,
                        "n": len(self.robust_correct[(a, e)]), "attacked": self.attacked.get((a, e), 0),
                        **({"details": self.details[(a, e)]} if (a, e) in self.details else {})}
                       for (a, e), acc in self.robust_accuracy.items()],
            "worst_case": worst,
            "attack_params": self.attack_params,
            "seconds": self.seconds,
            "attack_seconds": self.attack_seconds,
        }

    def outcomes(self, labels: Mapping[float, float] | None = None, dataset_sha256: str = "",
                 split_size: int = 0) -> Outcomes:
        """The per-example outcomes (the first ``n`` examples of the split whose sha256 and size are
        given), budgets named by their labels as in :meth:`to_dict`."""
        return from_masks(self.clean_correct, self.robust_correct, {**self.labels, **(labels or {})},
                          dataset_sha256=dataset_sha256,
                          cascade=self.cascade, split_size=split_size)


AttackLike = AttackRun | str | tuple[str, dict[str, Any]]  # a typed run, a name, or (name, options)


def attack_runs(attacks: Sequence[AttackLike], budgets: Sequence[Budget]) -> list[AttackRun]:
    """The typed runs of ``attacks``: an :class:`~robquant.evaluation.runs.AttackRun` as it is; a name, or
    ``(name, options)`` whose options may hold the evaluation's ``label``, ``n`` and ``eps`` (a subset
    of the budgets, [0, 1] units).

    Raises:
        ConfigError: two runs with one label, a bad ``n``, budgets not among the evaluation's.
    """
    runs = []
    for a in attacks:
        if isinstance(a, AttackRun):
            run = a
        else:
            name, kw = (a, {}) if isinstance(a, str) else (a[0], dict(a[1]))
            label, limit, only = kw.pop("label", name), kw.pop("n", None), kw.pop("eps", None)
            picked = None
            if only is not None:
                picked = tuple(b for b in budgets if any(abs(b.eps - float(e)) < 1e-12 for e in only))
                if not only or len(picked) != len({float(e) for e in only}):
                    raise ConfigError(f"attack {label!r} eps must be a non-empty subset of the evaluation's eps "
                                      f"{[b.label for b in budgets]} (/255), got {[round(e * 255, 6) for e in only]}")
            run = AttackRun(name, label, kw, limit, picked)
        if run.n is not None:
            check_range(f"attack {run.label!r} n", run.n, 1)
        if run.budgets is not None and (not run.budgets or any(b not in budgets for b in run.budgets)):
            raise ConfigError(f"attack {run.label!r} budgets must be a non-empty subset of the evaluation's "
                              f"{[b.label for b in budgets]} (/255), got {[b.label for b in run.budgets]}")
        runs.append(run)
    labels = [r.label for r in runs]
    if len(set(labels)) != len(labels):
        raise ConfigError(f"attack labels must be distinct, got {labels}: give repeated attacks a label")
    return runs


def evaluate(model: nn.Module, dataset: Any, attacks: Sequence[AttackLike], eps_list: Sequence[float | Budget], *,
             batch_size: int = 256, n: int | None = None, device: torch.device | str = "cpu",
             seed: int = 0, cascade: bool = False, progress: Progress = NULL_PROGRESS) -> EvalResult:
    """Clean accuracy and robust accuracy per (attack, eps), batched.

    Only examples that are classified correctly clean are attacked (the others are not robust
    by definition). Random starts are seeded per batch from ``seed``, so results are
    deterministic for a seed.

    Args:
        model: Classifier, inputs in [0, 1].
        dataset: An :class:`~robquant.data.ImageDataset` (test split).
        attacks: Typed runs (:class:`~robquant.evaluation.runs.AttackRun`: name, label, options, ``n``,
            budgets), or attack names, or ``(name, kwargs)`` pairs, from :func:`list_attacks`, where
            three options are the evaluation's, not the attack's: ``label`` (the name results are
            reported under, so one attack can run with several settings), ``n`` (attack only the
            first ``n`` examples: for expensive attacks such as AutoAttack) and ``eps`` (run only at
            these budgets, a subset of ``eps_list``).
        eps_list: Budgets: :class:`~robquant.evaluation.runs.Budget` (results named by its label) or
            floats in [0, 1] units (labelled eps x 255).
        batch_size: Examples per batch.
        n: Evaluate the first ``n`` examples only.
        device: Where to run.
        seed: Seed for the attacks' random starts.
        cascade: Run each attack only on the examples that every earlier attack (in the given
            order) left robust at that eps, as AutoAttack's standard evaluation does. The worst
            case is the same; later attacks cost only what can still change it, and their own
            accuracies are cumulative (robust under them and every earlier attack).
        progress: Progress display.

    Returns:
        An :class:`EvalResult`.

    Raises:
        ConfigError: for two attacks with one label, a bad ``n`` or ``eps``.
    """
    from robquant.data import DeviceLoader

    device = torch.device(device)
    budgets = [e if isinstance(e, Budget) else Budget.unlabelled(e) for e in eps_list]
    eps_list = [b.eps for b in budgets]
    planned = attack_runs(attacks, budgets)
    # one attack object per (attack, eps), built (and validated) before any work
    attackers = {(p.label, b.eps): create_attack(p.name, model, b.eps, **p.options)
                 for b in budgets for p in planned if p.runs_at(b)}
    loader = DeviceLoader(dataset.head(n), batch_size, device)
    tally = _Tally(attackers, planned)
    start, seen = time.perf_counter(), 0
    with progress.task("evaluate", total=len(loader)) as task, exact_float32():  # no TF32 (see exact_float32)
        for b, (x, y) in enumerate(loader):
            with torch.no_grad():
                correct = model.eval()(x).argmax(1) == y
            tally.clean.append(correct.cpu())
            for eps in eps_list:
                _attack_batch(model, x, y, correct, eps, planned, tally, seen, cascade, seed * 100_003 + b)
            seen += len(y)
            task.advance()
    result = tally.result(cascade, time.perf_counter() - start)
    result.labels = {b.eps: b.label for b in budgets}
    return result


class _Tally:
    """Per-example outcomes of an evaluation as its batches come in."""

    def __init__(self, attackers: dict[tuple[str, float], Any], planned: list[AttackRun]) -> None:
        self.attackers = attackers
        self.clean: list[torch.Tensor] = []
        self.robust: dict[tuple[str, float], list[torch.Tensor]] = {key: [] for key in attackers}
        self.attacked = {key: 0 for key in attackers}
        self.timing = {p.label: 0.0 for p in planned}

    def result(self, cascade: bool, seconds: float) -> EvalResult:
        clean_correct = torch.cat(self.clean)
        robust_correct = {k: torch.cat(v) if v else torch.zeros(0, dtype=torch.bool) for k, v in self.robust.items()}
        worst = worst_case(robust_correct)
        details = {key: a.report(len(robust_correct[key]), self.attacked[key])
                   for key, a in self.attackers.items() if getattr(a, "report", None) is not None}
        return EvalResult(
            n=len(clean_correct),
            clean_accuracy=clean_correct.double().mean().item(),
            robust_accuracy={k: v.double().mean().item() if len(v) else float("nan") for k, v in robust_correct.items()},
            worst_case={e: m.double().mean().item() if len(m) else float("nan") for e, m in worst.items()},
            worst_case_n={e: len(m) for e, m in worst.items()},
            clean_correct=clean_correct, robust_correct=robust_correct,
            attack_params={label: _describe(a) for (label, _), a in self.attackers.items()},
            details=details, cascade=cascade, seconds=seconds, attack_seconds=self.timing, attacked=self.attacked)


def _attack_batch(model: nn.Module, x: torch.Tensor, y: torch.Tensor, correct: torch.Tensor, eps: float,
                  planned: list[AttackRun], tally: _Tally, seen: int, cascade: bool, seed: int) -> None:
    """Every attack at ``eps`` on one batch (``seen`` examples came before it), in order; with
    ``cascade`` each only on what the earlier ones left robust."""
    alive = correct.clone()  # robust under every attack so far
    for p in planned:
        if (p.label, eps) not in tally.attackers:
            continue
        keep = len(y) if p.n is None else max(0, min(len(y), p.n - seen))
        if keep == 0:
            continue
        t0 = time.perf_counter()
        attacker = tally.attackers[(p.label, eps)]
        attacker.generator = torch.Generator(device=x.device).manual_seed(seed)  # each attack's own stream
        idx = torch.nonzero((alive if cascade else correct)[:keep]).flatten()
        mask = _robust_mask(model, attacker, x[:keep], y[:keep], idx)
        tally.robust[(p.label, eps)].append(mask.cpu())
        tally.attacked[(p.label, eps)] += len(idx)
        alive[:keep] &= mask
        tally.timing[p.label] += time.perf_counter() - t0


def worst_case(robust_correct: dict[tuple[str, float], torch.Tensor]) -> dict[float, torch.Tensor]:
    """Per eps, the per-example minimum over attacks: robust only if robust under every attack.

    Masks may differ in length (an attack run on the first ``k`` examples only): the worst case
    covers only the examples that every attack at that eps covered (the shortest mask), so that
    a cheap attack on many examples never dilutes a strong one run on few.

    Args:
        robust_correct: ``{(attack, eps): (n_attack,) bool}``.

    Returns:
        ``{eps: (n_common,) bool}``.
    """
    by_eps: dict[float, list[torch.Tensor]] = {}
    for (_, eps), mask in robust_correct.items():
        by_eps.setdefault(eps, []).append(mask)
    out = {}
    for eps, masks in by_eps.items():
        common = min(len(m) for m in masks)
        worst = torch.ones(common, dtype=torch.bool)
        for m in masks:
            worst &= m[:common].cpu()
        out[eps] = worst
    return out


def record_mask(robust_correct: dict[tuple[str, float], torch.Tensor], eps: float) -> torch.Tensor | None:
    """Per example, robust under every attack run at ``eps`` that covered it (attacks given a
    smaller ``n`` cover a prefix): ``(n_longest,)`` bool, or None when no attack ran at ``eps``."""
    masks = [m.cpu() for (_, e), m in robust_correct.items() if e == eps]
    if not masks:
        return None
    out = torch.ones(max(len(m) for m in masks), dtype=torch.bool)
    for m in masks:
        out[: len(m)] &= m
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
