"""The planner: a study becomes a DAG of content-addressed stages.

train_fp (per init and seed) -> quantize (PTQ or QAT; per cell and seed) -> evaluate. A stage's key
is the sha256 of the canonical JSON of its config and its parents' keys, so an FP model shared by
many cells (and by other studies using the same store) is trained once.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Callable

from robquant.pipeline.study import Cell, Study, TrainSpec

STAGE_VERSION = 2  # bump when a stage's computation changes meaning: old results stop matching


def canonical_json(obj: Any) -> str:
    """Deterministic JSON: sorted keys, no spaces, floats as repr."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def stage_key(config: dict[str, Any], parents: list[str]) -> str:
    """sha256 of the canonical JSON of a stage's config and its parents' keys."""
    return hashlib.sha256(canonical_json({"config": config, "parents": parents}).encode()).hexdigest()


@dataclass
class Stage:
    """One unit of work: its key, kind (train_fp, quantize, evaluate), config and parents."""

    key: str
    kind: str
    config: dict[str, Any]
    parents: list[str]
    label: str
    cost: dict[str, float] = field(default_factory=dict)  # forward / backward passes
    estimated_s: float | None = None  # wall time on this device (pipeline.estimate), when estimated


@dataclass
class Plan:
    """Stages in dependency order, the cells they answer, and the dropped cells with reasons."""

    study: Study
    stages: dict[str, Stage]
    cells: list[tuple[Cell, int, str]]  # (cell, seed, evaluate-stage key)
    dropped: list[tuple[dict[str, Any], str]]
    n_train: Callable[[], int] = field(default=lambda: 0)  # the training-set size (loaded once, on demand)

    def order(self) -> list[Stage]:
        return list(self.stages.values())  # inserted parents first


def _train_cfg(spec: TrainSpec, seed: int) -> dict[str, Any]:
    """The :class:`~robquant.train.TrainConfig` fields of a recipe (an FP recipe's fraction is the stage's)."""
    return {**spec.model_dump(exclude={"fraction"}), "seed": seed}


def build_plan(study: Study, n_train: Callable[[], int]) -> Plan:
    """Expand ``study`` into stages. ``n_train()`` gives the training-set size (for the cost)."""
    stages: dict[str, Stage] = {}
    # n_test decides the status (NC) of the models, so it is part of every stage's key
    base = {"v": STAGE_VERSION, "dataset": study.dataset.name, "model": {"name": study.model.name, **study.model.kwargs()},
            "n_test": study.evaluation.n_test}
    sizes: dict[str, int] = {}

    def size() -> int:
        if "n" not in sizes:
            sizes["n"] = n_train()
        return sizes["n"]

    def add(kind: str, config: dict[str, Any], parents: list[str], label: str, cost: dict[str, float]) -> str:
        key = stage_key(config, parents)
        stages.setdefault(key, Stage(key, kind, config, parents, label, cost))
        return key

    def fp(init: str, seed: int) -> str:
        spec, fraction = study.fp.spec(init), study.fp.fraction_of(init)
        seed = seed if study.fp.seed is None else study.fp.seed
        objective = {"name": "pgd_at", **study.fp.pgd.kwargs()} if init == "robust" else {"name": "clean"}
        passes = study.fp.pgd.steps + 1 if init == "robust" else 1
        n = spec.epochs * max(1, round(size() * fraction))
        return add("train_fp", {**base, "kind": "train_fp", "init": init, "objective": objective,
                                "fraction": fraction, "train": _train_cfg(spec, seed)}, [],
                   f"train {init} FP (seed {seed})", {"forward": n * passes, "backward": n * passes})

    cells, dropped = study.expand()
    planned = []
    for seed in study.seeds:
        for cell in cells:
            parents = [] if cell.init == "random" else [fp(cell.init, seed)]
            q = quant_config(study, cell)
            config = {**base, "kind": "quantize", "init": cell.init, "method": cell.method,
                      "precision": cell.precision, "fraction": cell.fraction, "quant": q, "seed": seed}
            cost = {"forward": float(study.quant.calib_images if cell.method == "ptq" else 0), "backward": 0.0}
            if cell.method == "qat":
                spec = study.qat.scratch if cell.init == "random" else study.qat.finetune
                objective = qat_objective(study, cell)
                config.update(strategy=cell.strategy, train=_train_cfg(spec, seed), objective=objective)
                if cell.strategy == "transfer":
                    parents = parents + [fp("robust", seed)]  # the teacher
                n = spec.epochs * max(1, round(size() * cell.fraction))
                passes = {"vanilla": 1, "adversarial": study.qat.pgd.steps + 1, "fast_adversarial": 2, "transfer": 1}
                k = passes[cell.strategy or "vanilla"]
                cost = {"forward": n * (k + (cell.strategy == "transfer")), "backward": n * k}
            quant_key = add("quantize", config, list(dict.fromkeys(parents)), f"{cell.label} (seed {seed})", cost)
            ev = study.evaluation
            wants_surrogate = ev.diagnostics.enabled or any(a.name == "transfer" for a in ev.attacks)
            surrogate = [fp(cell.init, seed)] if wants_surrogate and cell.init != "random" else []
            eps = sorted(cell.eps or ev.eps)
            eval_key = add("evaluate", {"v": STAGE_VERSION, "kind": "evaluate", "evaluation": ev.model_dump(),
                                        "eps": eps, "seed": seed}, [quant_key, *surrogate],
                           f"evaluate {cell.label} (seed {seed})", evaluation_cost(study, eps))
            planned.append((cell, seed, eval_key))
    return Plan(study, stages, planned, dropped, size)


def quant_config(study: Study, cell: Cell) -> dict[str, Any]:
    """The :class:`~robquant.quant.QuantConfig` of a cell, as a dict."""
    from robquant.quant import QuantConfig

    q = study.quant
    return QuantConfig(method=cell.method, precision=cell.precision,
                       weight_quantizer=q.ptq_weights if cell.method == "ptq" else q.qat_weights,
                       quantize_first_last=q.quantize_first_last, breakpoint=q.breakpoint,
                       calib_images=q.calib_images, calib_batch_size=q.calib_batch_size,
                       act_placement=q.act_placement if cell.method == "ptq" else "relu",
                       # PACT's from-scratch alpha for random parameters; from the data otherwise
                       pact_alpha=q.pact_alpha, pact_init="fixed" if cell.init == "random" else q.pact_init,
                       pact_percentile=q.pact_percentile).to_dict()


def qat_objective(study: Study, cell: Cell) -> dict[str, Any]:
    """The training objective of a QAT cell's strategy, as a dict."""
    if cell.strategy == "adversarial":
        return {"name": "pgd_at", **study.qat.pgd.kwargs()}
    if cell.strategy == "fast_adversarial":
        return {"name": "fast_adversarial", "eps": study.qat.fast_eps / 255}
    if cell.strategy == "transfer":
        return {"name": "transfer", "lam": study.qat.transfer_lambda}
    return {"name": "clean"}


def evaluation_cost(study: Study, eps: list[float]) -> dict[str, float]:
    """Forward/backward passes of one evaluate stage (attacks at each of ``eps`` where they run, plus
    the diagnostics), counting every example as attacked for every step (an upper bound)."""
    ev = study.evaluation
    n_test = ev.n_test or 0

    def passes(a: Any) -> tuple[float, float]:  # per example and eps: (forward, backward)
        if a.name in ("pgd", "transfer"):
            return a.steps * a.restarts, a.steps * a.restarts
        if a.name == "fgsm":
            return 1, 1
        if a.name == "square":
            return a.n_queries, 0
        return 100 * len(a.attacks or ["apgd-ce"]), 100 * len(a.attacks or ["apgd-ce"])  # AutoAttack: ~100 per sub-attack

    fwd = bwd = float(n_test)
    for a in ev.attacks:
        f, b = passes(a)
        n = min(a.n or n_test, n_test)
        k = len(a.budgets(eps))
        fwd, bwd = fwd + f * n * k, bwd + b * n * k
    d = ev.diagnostics
    if d.enabled:  # (an upper bound when only some seeds are checked)
        k = d.steps or ev.attack_steps()
        per = 1 + k * (1 + 2 + 5 + 1 + 1) + 100 * len(d.autoattack or [])  # fgsm, pgd x1/x2/x5, collapse, transfer
        fwd += d.n * (per + d.square_queries)
        bwd += d.n * per
    return {"forward": fwd, "backward": bwd}
