"""Can a robust-accuracy number be trusted? The checks of ALGORITHMS sec. 8, each a flag plus its figure,
and the gradient probes they use.

The checks judge the *robustness of record* at one budget: per example, robust under every attack
the evaluation ran (the worst case; without one, the reference PGD alone). The convergence probes
(PGD with more steps, more restarts) run only where the record keeps an example and report the
share of all ``n`` examples they break there: robustness the record overstates. FGSM, the
black-box attacks and AutoAttack run on every example and are compared overall with the reference
white-box PGD (a black-box attack stronger overall is the sign of masked gradients). A flag set
means the number of record is probably too high:

==========================  =====================================================================
``zero_gradient``           fraction of correctly classified examples whose input gradient is
                            exactly zero; flagged above 0
``pgd_weaker_than_fgsm``    reference PGD accuracy minus FGSM's; flagged above 0 (PGD must be
                            at least as strong as its own first step)
``pgd_not_converged``       share that PGD with 2x steps or with more restarts (5, or twice the
                            reference's) breaks; flagged above ``tol`` (1 point)
``no_collapse``             PGD accuracy at ``collapse_eps`` (64/255); flagged above 5 %
``square_beats_pgd``        reference PGD accuracy minus Square's (gradient-free); flagged above ``tol``
``transfer_beats_pgd``      reference PGD accuracy minus the transfer attack's (PGD on the
                            surrogate, by default the full-precision parent); flagged above ``tol``
``autoattack_above_pgd``    AutoAttack accuracy minus the reference PGD's, both on all ``n``
                            examples; flagged above ``tol``
``integer_mismatch``        top-1 disagreement between the model and its integer execution
                            (quantized models only); flagged above 1 %
``deployed_mismatch``       with a deployed evaluation (:mod:`robquant.deploy`, run by the
                            pipeline): the largest of the top-1 disagreements between the
                            exported model on its runtime and the fake-quantized model (clean,
                            on transferred PGD inputs) and their Square accuracy difference;
                            flagged above 1 %. The deployed model's robustness beside the
                            robustness of record is reported (``robustness_gap``), not flagged:
                            the deployed model meets weaker attacks (no gradients)
==========================  =====================================================================

A check that could not run (no surrogate, AutoAttack switched off, a full-precision model for the
integer check) has flag ``None``. The checks are :class:`TrustCheck` objects registered in
:data:`TRUST_CHECKS` (:func:`register_check` adds one); ``deployed_mismatch`` is registered by
:mod:`robquant.deploy`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from robquant.attacks.base import Cost
from robquant.evaluation.evaluate import evaluate
from robquant.attacks.registry import ATTACKS, create_attack
from robquant.data import to_unit
from robquant.defaults import (ATTACK_STEPS, CHECK_EXAMPLES, CHECK_SQUARE_QUERIES, CHECK_TOL, COLLAPSE_EPS_255,
                               RESTARTS)
from robquant.models.surgery import modes_restored
from robquant.progress import NULL_PROGRESS, Progress
from robquant.registry import Registry

@dataclass(frozen=True)
class TrustCheck:
    """One trust check: its figure (``value`` from what :func:`diagnose` measured, None where it could
    not run) and the threshold above which it flags (``threshold``, given the comparisons' ``tol``).
    A check with ``value=None`` is supplied by another package after the evaluation (the deployed
    model's, :mod:`robquant.deploy`); until then it reads "not run"."""

    name: str
    detail: str
    threshold: Callable[[float], float]
    value: Callable[[dict[str, Any]], float | None] | None = None

    def judge(self, measured: dict[str, Any], tol: float) -> dict[str, Any]:
        """``{flag, value, threshold, detail}`` (flag None when the check could not run)."""
        value = None if self.value is None else self.value(measured)
        return _check(value, self.threshold(tol), self.detail)


TRUST_CHECKS: Registry[TrustCheck] = Registry("trust check")


def register_check(check: TrustCheck) -> TrustCheck:
    """Add ``check`` to every evaluation's trust checks (in registration order)."""
    return TRUST_CHECKS.register(check.name)(check)


def _acc(measured: dict[str, Any], attack: str) -> float | None:
    return measured["accuracy"].get(attack)


def _minus(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a - b


for _c in (
    TrustCheck("zero_gradient", "fraction of correct examples with an all-zero input gradient", lambda tol: 0.0,
               lambda m: m["zero_gradient"]),
    TrustCheck("pgd_weaker_than_fgsm", "PGD minus FGSM accuracy", lambda tol: 0.0,
               lambda m: _minus(_acc(m, "pgd"), _acc(m, "fgsm"))),
    TrustCheck("pgd_not_converged", "share robust on record that PGD with 2x steps / more restarts breaks",
               lambda tol: tol, lambda m: max(m["overstated"].values())),
    TrustCheck("no_collapse", "PGD accuracy at {collapse_eps_255:g}/255", lambda tol: 0.05, lambda m: m["collapse"]),
    TrustCheck("square_beats_pgd", "reference PGD minus Square accuracy", lambda tol: tol,
               lambda m: _minus(_acc(m, "pgd"), _acc(m, "square"))),
    TrustCheck("transfer_beats_pgd", "reference PGD minus transfer-attack accuracy", lambda tol: tol,
               lambda m: _minus(_acc(m, "pgd"), _acc(m, "transfer"))),
    TrustCheck("autoattack_above_pgd", "AutoAttack minus reference PGD accuracy", lambda tol: tol,
               lambda m: _minus(_acc(m, "autoattack"), _acc(m, "pgd"))),
    TrustCheck("integer_mismatch", "top-1 disagreement with integer execution", lambda tol: CHECK_TOL),
):
    register_check(_c)


def input_gradients(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-example gradient of the cross-entropy with respect to the input, in eval mode."""
    with modes_restored(model, training=False), torch.enable_grad():
        x = x.detach().clone().requires_grad_(True)
        loss = F.cross_entropy(model(x), y, reduction="sum")
        (grad,) = torch.autograd.grad(loss, x)
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


def probe_attacks(steps: int, restarts: int, square_queries: int, surrogate: nn.Module | None = None,
                  surrogate_id: str | None = None) -> tuple[list[tuple[str, dict[str, Any]]],
                                                            list[tuple[str, dict[str, Any]]]]:
    """The attacks :func:`diagnose` compares with the record, given the reference PGD's ``steps``
    and ``restarts``, as ``(name, options)``: the convergence probes (run where the record keeps
    an example) and the comparison attacks (run on every example)."""
    probes: list[tuple[str, dict[str, Any]]] = [
        ("pgd", {"steps": 2 * steps, "restarts": restarts, "label": "pgd_2x_steps"}),
        ("pgd", {"steps": steps, "restarts": max(5, 2 * restarts), "label": "pgd_more_restarts"}),
    ]
    compared: list[tuple[str, dict[str, Any]]] = [("fgsm", {}), ("square", {"n_queries": square_queries})]
    if surrogate is not None:
        compared.append(("transfer", {"surrogate": surrogate, "surrogate_id": surrogate_id, "steps": steps}))
    return probes, compared


def diagnose_cost(steps: int, square_queries: int, autoattack: Sequence[str] | None, surrogate: bool,
                  restarts: int = 1) -> Cost:
    """What :func:`diagnose` costs per example (an upper bound: every probe on every example): the
    probes, AutoAttack, the reference and collapse PGDs, the zero-gradient probe and the integer
    check's PGD, each from the attack's own declared cost."""
    probes, compared = probe_attacks(steps, restarts, square_queries, nn.Identity() if surrogate else None)
    probes = [(name, {k: v for k, v in kw.items() if k not in ("surrogate", "surrogate_id", "label")})
              for name, kw in probes + compared]
    if autoattack:
        probes.append(("autoattack", {"attacks": list(autoattack)}))
    costs = [ATTACKS.get(name).cost(**kw) for name, kw in probes]
    pgd = ATTACKS.get("pgd").cost(steps=steps, restarts=restarts)
    return Cost(sum(c.gradients for c in costs) + 3 * pgd.gradients + 1, sum(c.forwards for c in costs) + 3)


def _check(value: float | None, threshold: float, detail: str) -> dict[str, Any]:
    flag = None if value is None else bool(value > threshold)
    return {"flag": flag, "value": value, "threshold": threshold, "detail": detail}


def diagnose(model: nn.Module, dataset: Any, eps: float, *, n: int = CHECK_EXAMPLES, steps: int = ATTACK_STEPS,
             restarts: int = RESTARTS,
             record: torch.Tensor | None = None, reference: torch.Tensor | None = None,
             surrogate: nn.Module | None = None, surrogate_id: str | None = None,
             square_queries: int = CHECK_SQUARE_QUERIES, autoattack: Sequence[str] | None = ("apgd-ce",),
             collapse_eps: float = COLLAPSE_EPS_255 / 255, tol: float = CHECK_TOL, integer: bool = True,
             label: float | None = None, batch_size: int = 256,
             device: torch.device | str = "cpu", seed: int = 0, progress: Progress = NULL_PROGRESS
             ) -> dict[str, Any]:
    """Run every check on the first ``n`` test examples at budget ``eps`` ([0, 1] units).

    Args:
        model: The model under evaluation (inputs in [0, 1]).
        dataset: Test set.
        eps: The budget the checks are run at (a study's main eps).
        n: Examples.
        steps, restarts: The reference PGD's (as in the evaluation).
        record: ``(n,)`` bool, per example: robust under every attack of the evaluation (the
            robustness of record). None: the reference PGD stands for it.
        reference: ``(n,)`` bool, per example: robust under the reference PGD, as the evaluation
            already ran it at ``eps`` with ``seed``. None: it is run here.
        surrogate: Model the transfer probe crafts its examples on; None skips that check.
        surrogate_id: How the record names the surrogate.
        square_queries: Square's query budget.
        autoattack: AutoAttack sub-attacks to compare with PGD (e.g. the full standard list, or
            ``["apgd-ce"]``); None skips that check.
        collapse_eps: Budget at which accuracy should have collapsed.
        tol: Tolerance, as a fraction, of the attack comparisons.
        integer: Run the integer-execution check on quantized models.
        label: The budget as the study or command wrote it (/255), recorded as ``eps_255`` and naming
            the details (default ``eps`` x 255).

    Returns:
        ``{"eps", "eps_255", "n", "clean_accuracy", "record_accuracy", "accuracy": {attack: acc},
        "checks": {name: {flag, value, threshold, detail}}, "flags": [names of checks that fired],
        "details", "seconds"}``; a convergence probe's accuracy is that of the record and the probe
        together, the other attacks' their own.
    """
    t0 = time.perf_counter()
    label = round(eps * 255, 6) if label is None else label
    device = torch.device(device)
    data = dataset.head(n)
    n = len(data)
    kw = {"batch_size": batch_size, "device": device, "seed": seed, "progress": progress}
    clean, reference, record = _record(model, data, eps, steps, restarts, reference, record, kw)
    robust = torch.nonzero(record).flatten()
    acc: dict[str, float] = {"pgd": reference.double().mean().item()}
    probes, compared = probe_attacks(steps, restarts, square_queries, surrogate, surrogate_id)
    broken = _probe(model, data.select(robust) if len(robust) else None, probes, eps, kw)
    overstated = {label: k / max(n, 1) for label, k in broken.items()}
    acc.update({label: (len(robust) - k) / max(n, 1) for label, k in broken.items()})
    if autoattack:
        compared.append(("autoattack", {"attacks": list(autoattack)}))
    details: dict[str, Any] = {}
    if compared:  # on every example: a black-box attack stronger overall than white-box PGD signals masking
        ev = evaluate(model, data, compared, [eps], **kw)
        acc.update({label: ev.robust_accuracy[(label, eps)] for label in ev.attack_params})
        details.update({f"{a}@{label:g}": d for (a, _), d in ev.details.items()})
    collapse = evaluate(model, data, [("pgd", {"steps": steps})], [collapse_eps], **kw)
    x, y, correct = to_unit(data.images).to(device), data.labels.to(device), clean.to(device)
    zero = zero_gradient_fraction(model, x[correct], y[correct], batch_size) if bool(correct.any()) else 0.0
    measured = {"accuracy": acc, "overstated": overstated, "zero_gradient": zero,
                "collapse": collapse.robust_accuracy[("pgd", collapse_eps)]}
    checks = {name: check.judge(measured, tol) for name, check in TRUST_CHECKS.items()}
    checks["no_collapse"]["detail"] = checks["no_collapse"]["detail"].format(collapse_eps_255=collapse_eps * 255)
    if integer and _is_quantized(model):
        checks["integer_mismatch"] = _integer_check(model, x, y, correct, eps, steps, seed)
    return {
        "eps": eps, "eps_255": label, "n": n, "clean_accuracy": clean.double().mean().item(),
        "record_accuracy": len(robust) / max(n, 1), "accuracy": acc, "checks": checks,
        "flags": [k for k, c in checks.items() if c["flag"]], "details": details,
        "seconds": time.perf_counter() - t0,
    }


def _record(model: nn.Module, data: Any, eps: float, steps: int, restarts: int, reference: torch.Tensor | None,
            record: torch.Tensor | None, kw: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(clean, reference, record)`` masks over ``data``: the reference PGD's run here unless given,
    and the record (the reference when none is given)."""
    n = len(data)
    if reference is None:
        ref = evaluate(model, data, [("pgd", {"steps": steps, "restarts": restarts})], [eps], **kw)
        reference, clean = ref.robust_correct[("pgd", eps)], ref.clean_correct
    else:
        clean = evaluate(model, data, [], [], **kw).clean_correct
    record = reference if record is None else record
    reference, record = reference[:n].cpu(), record[:n].cpu()
    if len(record) != n or len(reference) != n:
        raise ValueError(f"record / reference cover {len(record)} / {len(reference)} examples, the checks {n}")
    return clean, reference, record


def _probe(model: nn.Module, kept: Any, probes: list[tuple[str, dict[str, Any]]], eps: float,
           kw: dict[str, Any]) -> dict[str, int]:
    """Each probe on the examples the record keeps (``kept``, None for none): how many of them it
    breaks (robustness the record overstates), by probe label."""
    out = {}
    for name, options in probes:
        label, broken = options["label"], 0
        if kept is not None:
            ev = evaluate(model, kept, [(name, options)], [eps], **kw)
            broken = int((~ev.robust_correct[(label, eps)]).sum())
        out[label] = broken
    return out


def _integer_check(model: nn.Module, x: torch.Tensor, y: torch.Tensor, correct: torch.Tensor, eps: float,
                   steps: int, seed: int) -> dict[str, Any]:
    """Top-1 agreement of the model with its integer execution, clean and on PGD examples."""
    from robquant.quant.integer import IntegerGridError, integer_agreement

    pgd = create_attack("pgd", model, eps, steps=steps, generator=torch.Generator(device=x.device).manual_seed(seed))
    x_adv = pgd(x[correct], y[correct]) if bool(correct.any()) else None
    try:
        result = integer_agreement(model, x, x_adv)
    except IntegerGridError as exc:  # a weight tensor off its grid: the model cannot run in integers
        return {"flag": True, "value": 1.0, "threshold": CHECK_TOL, "detail": f"no integer execution: {exc}"}
    worst = 1 - min(result.get("clean_agreement", 1.0), result.get("adversarial_agreement", 1.0))
    return {**_check(worst, CHECK_TOL, "top-1 disagreement with integer execution"), "integer": result}


def _is_quantized(model: nn.Module) -> bool:
    from robquant.quant.modules import QuantConv2d, QuantLinear

    return any(isinstance(m, (QuantConv2d, QuantLinear)) for m in model.modules())
