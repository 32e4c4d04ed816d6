"""Can a robust-accuracy number be trusted? The checks of ALGORITHMS sec. 8, each a flag plus its figure,
and the gradient probes they use.

Each check compares attacks run on the same examples at the same budget; a flag set means the
white-box number is probably too high (masked gradients, a non-converged attack):

==========================  =====================================================================
``zero_gradient``           fraction of correctly classified examples whose input gradient is
                            exactly zero; flagged above 0
``pgd_weaker_than_fgsm``    PGD accuracy minus FGSM accuracy; flagged above 0 (PGD must be
                            at least as strong as its own first step)
``pgd_not_converged``       PGD accuracy minus the best of PGD with 2x steps and PGD with 5
                            restarts; flagged above ``tol`` (1 point)
``no_collapse``             PGD accuracy at ``collapse_eps`` (64/255); flagged above 5 %
``square_beats_pgd``        PGD accuracy minus Square's (gradient-free); flagged above ``tol``
``transfer_beats_pgd``      PGD accuracy minus the transfer attack's (PGD on the surrogate, by
                            default the full-precision parent); flagged above ``tol``
``autoattack_above_pgd``    AutoAttack accuracy minus PGD's; flagged above ``tol``
``integer_mismatch``        top-1 disagreement between the model and its integer execution
                            (quantized models only); flagged above 1 %
==========================  =====================================================================

A check that could not run (no surrogate, AutoAttack switched off, a full-precision model for the
integer check) has flag ``None``.
"""

from __future__ import annotations

import time
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from robquant.attacks.base import Cost
from robquant.attacks.evaluate import evaluate
from robquant.progress import NULL_PROGRESS, Progress

CHECKS = ("zero_gradient", "pgd_weaker_than_fgsm", "pgd_not_converged", "no_collapse", "square_beats_pgd",
          "transfer_beats_pgd", "autoattack_above_pgd", "integer_mismatch")


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


def check_attacks(steps: int, square_queries: int, autoattack: Sequence[str] | None,
                  surrogate: nn.Module | None = None, surrogate_id: str | None = None) -> list[tuple[str, dict[str, Any]]]:
    """The attacks :func:`diagnose` compares at the main budget, as ``(name, options)``."""
    attacks: list[tuple[str, dict[str, Any]]] = [
        ("pgd", {"steps": steps}),
        ("pgd", {"steps": 2 * steps, "label": "pgd_2x_steps"}),
        ("pgd", {"steps": steps, "restarts": 5, "label": "pgd_5_restarts"}),
        ("fgsm", {}),
        ("square", {"n_queries": square_queries}),
    ]
    if surrogate is not None:
        attacks.append(("transfer", {"surrogate": surrogate, "surrogate_id": surrogate_id, "steps": steps}))
    if autoattack:
        attacks.append(("autoattack", {"attacks": list(autoattack)}))
    return attacks


def diagnose_cost(steps: int, square_queries: int, autoattack: Sequence[str] | None, surrogate: bool) -> Cost:
    """What :func:`diagnose` costs per example (an upper bound): its attacks, the collapse PGD, the
    zero-gradient probe and the integer check's PGD, each from the attack's own declared cost."""
    from robquant.attacks import ATTACKS

    attacks = check_attacks(steps, square_queries, autoattack, nn.Identity() if surrogate else None)
    costs = [ATTACKS.get(name).cost(**{k: v for k, v in kw.items() if k not in ("surrogate", "surrogate_id", "label")})
             for name, kw in attacks]
    pgd = ATTACKS.get("pgd").cost(steps=steps)
    grads = sum(c.gradients for c in costs) + 2 * pgd.gradients + 1
    return Cost(grads, sum(c.forwards for c in costs) + 3)


def _check(value: float | None, threshold: float, detail: str) -> dict[str, Any]:
    flag = None if value is None else bool(value > threshold)
    return {"flag": flag, "value": value, "threshold": threshold, "detail": detail}


def diagnose(model: nn.Module, dataset: Any, eps: float, *, n: int = 200, steps: int = 20,
             surrogate: nn.Module | None = None, surrogate_id: str | None = None, square_queries: int = 1000,
             autoattack: Sequence[str] | None = ("apgd-ce",), collapse_eps: float = 64 / 255,
             tol: float = 0.01, integer: bool = True, batch_size: int = 256,
             device: torch.device | str = "cpu", seed: int = 0, progress: Progress = NULL_PROGRESS
             ) -> dict[str, Any]:
    """Run every check on the first ``n`` test examples at budget ``eps`` ([0, 1] units).

    Args:
        model: The model under evaluation (inputs in [0, 1]).
        dataset: Test set.
        eps: The budget the checks are run at (a study's main eps).
        n: Examples.
        steps: The reference PGD's steps (as in the evaluation).
        surrogate: Model the transfer attack crafts its examples on; None skips that check.
        surrogate_id: How the record names the surrogate.
        square_queries: Square's query budget.
        autoattack: AutoAttack sub-attacks to compare with PGD (e.g. the full standard list, or
            ``["apgd-ce"]``); None skips that check.
        collapse_eps: Budget at which accuracy should have collapsed.
        tol: Tolerance, as a fraction, of the attack comparisons.
        integer: Run the integer-execution check on quantized models.

    Returns:
        ``{"eps", "eps_255", "n", "accuracy": {attack: acc}, "checks": {name: {flag, value,
        threshold, detail}}, "flags": [names of checks that fired], "seconds"}``.
    """
    from robquant.attacks import create_attack

    t0 = time.perf_counter()
    device = torch.device(device)
    attacks = check_attacks(steps, square_queries, autoattack, surrogate, surrogate_id)
    ev = evaluate(model, dataset, attacks, [eps], n=n, batch_size=batch_size, device=device, seed=seed,
                  progress=progress)
    acc = {label: ev.robust_accuracy[(label, eps)] for label, _ in ev.attack_params.items()}
    collapse = evaluate(model, dataset, [("pgd", {"steps": steps})], [collapse_eps], n=n, batch_size=batch_size,
                        device=device, seed=seed, progress=progress)

    data = dataset.head(n)
    x = data.images.float().div(255).to(device)
    y = data.labels.to(device)
    correct = ev.clean_correct.to(device)
    zero = zero_gradient_fraction(model, x[correct], y[correct], batch_size) if bool(correct.any()) else 0.0
    pgd = acc["pgd"]
    checks = {
        "zero_gradient": _check(zero, 0.0, "fraction of correct examples with an all-zero input gradient"),
        "pgd_weaker_than_fgsm": _check(pgd - acc["fgsm"], 0.0, "PGD minus FGSM accuracy"),
        "pgd_not_converged": _check(pgd - min(acc["pgd_2x_steps"], acc["pgd_5_restarts"]), tol,
                                    "PGD minus the best of PGD with 2x steps / 5 restarts"),
        "no_collapse": _check(collapse.robust_accuracy[("pgd", collapse_eps)], 0.05,
                              f"PGD accuracy at {collapse_eps * 255:g}/255"),
        "square_beats_pgd": _check(pgd - acc["square"], tol, "PGD minus Square accuracy"),
        "transfer_beats_pgd": _check(pgd - acc["transfer"] if "transfer" in acc else None, tol,
                                     "PGD minus transfer-attack accuracy"),
        "autoattack_above_pgd": _check(acc["autoattack"] - pgd if "autoattack" in acc else None, tol,
                                       "AutoAttack minus PGD accuracy"),
        "integer_mismatch": _check(None, 0.01, "top-1 disagreement with integer execution"),
    }
    integer_result = None
    if integer and _is_quantized(model):
        from robquant.quant.integer import IntegerGridError, integer_agreement

        pgd = create_attack("pgd", model, eps, steps=steps, generator=torch.Generator(device=device).manual_seed(seed))
        x_adv = pgd(x[correct], y[correct]) if bool(correct.any()) else None
        try:
            integer_result = integer_agreement(model, x, x_adv)
        except IntegerGridError as exc:  # a weight tensor off its grid: the model cannot run in integers
            checks["integer_mismatch"] = {"flag": True, "value": 1.0, "threshold": 0.01,
                                          "detail": f"no integer execution: {exc}"}
        else:
            worst = 1 - min(integer_result.get("clean_agreement", 1.0), integer_result.get("adversarial_agreement", 1.0))
            checks["integer_mismatch"] = {**_check(worst, 0.01, "top-1 disagreement with integer execution"),
                                          "integer": integer_result}
    return {
        "eps": eps, "eps_255": round(eps * 255, 6), "n": ev.n, "clean_accuracy": ev.clean_accuracy,
        "accuracy": acc, "checks": checks, "flags": [k for k in CHECKS if checks[k]["flag"]],
        "details": {f"{a}@{e * 255:g}": d for (a, e), d in ev.details.items()},
        "seconds": time.perf_counter() - t0,
    }


def _is_quantized(model: nn.Module) -> bool:
    from robquant.quant.modules import QuantConv2d, QuantLinear

    return any(isinstance(m, (QuantConv2d, QuantLinear)) for m in model.modules())
