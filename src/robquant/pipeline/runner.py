"""Running a plan: each stage's work, and the executors (local, in this process; Ray, as tasks)."""

from __future__ import annotations

import logging
import time
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from robquant.errors import RobquantError
from robquant.pipeline.plan import Plan, Stage
from robquant.pipeline.stages import attack_model, quantize_model, train_model
from robquant.pipeline.store import Store
from robquant.pipeline.study import EvalSpec, Study
from robquant.progress import NULL_PROGRESS, Progress
from robquant.provenance import device_name
from robquant.quant import QuantConfig
from robquant.train import TrainConfig

log = logging.getLogger(__name__)


def _train_config(cfg: dict[str, Any]) -> TrainConfig:
    cfg = dict(cfg)
    if cfg.get("milestones") is not None:
        cfg["milestones"] = tuple(cfg["milestones"])
    return TrainConfig(**cfg)


def run_stage(stage: Stage, study: Study, store: Store, device: torch.device,
              progress: Progress = NULL_PROGRESS) -> dict[str, Any]:
    """Do one stage's work in its work folder and return its record (not yet committed)."""
    cfg, out = stage.config, store.work_dir(stage.key)
    data = {"data_root": study.dataset.root, "allow_unverified": study.dataset.allow_unverified}
    t0 = time.perf_counter()
    if stage.kind == "train_fp":
        objective = dict(cfg["objective"])
        name = objective.pop("name")
        record = train_model(dataset=cfg["dataset"], model=cfg["model"]["name"], objective=name,
                             train=_train_config(cfg["train"]), out=out, device=device, fraction=cfg["fraction"],
                             model_kwargs={k: v for k, v in cfg["model"].items() if k != "name"},
                             objective_kwargs=objective, n_test=study.evaluation.n_test, progress=progress,
                             **data)
    elif stage.kind == "quantize":
        parents = [store.artifact_dir(k) for k in stage.parents]
        checkpoint = parents[0] if cfg["init"] != "random" else None
        objective = dict(cfg.get("objective") or {"name": "clean"})
        name = objective.pop("name")
        teacher = parents[-1] if name == "transfer" else None
        model = cfg["model"]
        record = quantize_model(
            checkpoint, quant=QuantConfig(**cfg["quant"]), out=out, fraction=cfg["fraction"], seed=cfg["seed"],
            train=_train_config(cfg["train"]) if "train" in cfg else None, objective=name,
            objective_kwargs=objective, teacher=teacher, dataset=cfg["dataset"],
            model_spec={"name": model["name"], "kwargs": {k: v for k, v in model.items() if k != "name"},
                        "num_classes": None, "in_channels": None} if checkpoint is None else None,
            device=device, n_test=study.evaluation.n_test, progress=progress, **data)
    else:
        ev = study.evaluation
        surrogate = store.artifact_dir(stage.parents[1]) if len(stage.parents) > 1 else None
        eps = cfg["eps"]  # the cell's budgets
        attacks = [(a.name, a.kwargs(eps)) for a in ev.attacks
                   if (a.name != "transfer" or surrogate is not None) and a.budgets(eps)]
        skipped = [a.label or a.name for a in ev.attacks if a.name == "transfer" and surrogate is None]
        diagnose = ev.diagnostics.options(ev.main_eps, ev.attack_steps()) if ev.diagnostics.applies(cfg["seed"]) else None
        record = attack_model(store.artifact_dir(stage.parents[0]), attacks=attacks, eps=[e / 255 for e in eps],
                              n_test=ev.n_test, batch_size=ev.batch_size, seed=cfg["seed"], device=device,
                              cascade=ev.cascade,
                              out=out / "attack.json", surrogate=surrogate, diagnose=diagnose, progress=progress,
                              surrogate_id=f"stage {stage.parents[1]}" if surrogate is not None else None, **data)
        if skipped:
            record["skipped_attacks"] = {a: "no full-precision parent to transfer from (random init)" for a in skipped}
        parent = store.get(stage.parents[0]) or {}
        record["metrics"] = _metrics(record, ev)
        record["status"] = parent.get("status", "done")
    record["stage"] = {"key": stage.key, "kind": stage.kind, "label": stage.label, "parents": stage.parents,
                       "planned_cost": stage.cost, "estimated_s": stage.estimated_s,
                       "wall_s": time.perf_counter() - t0,
                       "device": device_name(device)}
    return record


def _metrics(record: dict[str, Any], ev: EvalSpec) -> dict[str, Any]:
    """The evaluation's numbers of record: the worst case over attacks at the main eps (on the
    examples every attack covered) and the paper's attack (the first PGD) beside it."""
    result = record["result"]
    main = next(r for r in result["worst_case"] if abs(r["eps_255"] - ev.main_eps) < 1e-9)
    ref = ev.reference_attack()
    ref_all = next((r for r in result["robust"] if r["attack"] == ref and abs(r["eps_255"] - ev.main_eps) < 1e-9),
                   None)
    return {
        "clean_accuracy": result["clean_accuracy"], "n": result["n"],
        "robust": result["robust"], "worst_case": result["worst_case"],
        "robustness": main["accuracy"], "robustness_n": main["n"], "robustness_attacks": main["attacks"],
        "main_eps_255": ev.main_eps,
        "reference_attack": ref,
        "reference": None if ref_all is None else {"accuracy": ref_all["accuracy"], "n": ref_all["n"],
                                                   "accuracy_common": main["per_attack"].get(ref)},
        "flags": (record.get("diagnostics") or {}).get("flags", []),
    }


@dataclass
class RunSummary:
    """What an execution did."""

    ran: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    blocked: list[str] = field(default_factory=list)
    seconds: float = 0.0


def pending(plan: Plan, store: Store) -> list[Stage]:
    """Stages of ``plan`` that are not finished in ``store``, in dependency order."""
    done = store.finished(plan.stages)
    return [s for s in plan.order() if s.key not in done]


def execute_local(plan: Plan, store: Store, device: torch.device, progress: Progress = NULL_PROGRESS,
                  on_stage: Callable[[Stage, str], None] | None = None) -> RunSummary:
    """Run the plan's unfinished stages in this process, parents first; failures do not stop the rest."""
    summary = RunSummary()
    todo = pending(plan, store)
    todo_keys = {s.key for s in todo}
    summary.skipped = [k for k in plan.stages if k not in todo_keys]
    t0 = time.perf_counter()
    with progress.task(f"study {plan.study.name}", total=len(todo)) as overall:
        for stage in todo:
            if any(p in summary.failed or p in summary.blocked for p in stage.parents):
                summary.blocked.append(stage.key)
                overall.advance()
                continue
            _run_and_commit(stage, plan.study, store, device, progress, summary)
            if on_stage is not None:
                on_stage(stage, "failed" if stage.key in summary.failed else "done")
            overall.advance()
    summary.seconds = time.perf_counter() - t0
    return summary


def _run_and_commit(stage: Stage, study: Study, store: Store, device: torch.device, progress: Progress,
                    summary: RunSummary) -> None:
    store.mark_running(stage.key, stage.kind, stage.label, stage.config, stage.parents)
    try:
        record = run_stage(stage, study, store, device, progress)
    except (RobquantError, RuntimeError, ValueError, OSError) as exc:
        detail = traceback.format_exc(limit=5)
        log.error("stage %s (%s) failed: %s", stage.key[:12], stage.label, exc)
        store.fail(stage.key, stage.kind, stage.label, stage.config, stage.parents, f"{exc}\n{detail}")
        summary.failed[stage.key] = str(exc)
        return
    store.commit(stage.key, stage.kind, stage.label, stage.config, stage.parents, record)
    summary.ran.append(stage.key)
