"""Running a plan: one handler per stage kind, one core that runs and commits a stage, and the local
executor (this process). The Ray executor (:mod:`robquant.pipeline.ray_executor`) runs the same core
in its workers.

Stages that run in one process share a :class:`StageContext`: data sets are loaded once, parent
models (FP checkpoints, RRM teachers, surrogates) are read from the store once and kept in memory,
so a stage costs its computation and little else.
"""

from __future__ import annotations

import logging
import os
import time
import traceback
from collections import OrderedDict
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

import torch
from torch import nn

from robquant.data import ImageDataset, create_dataset
from robquant.errors import CheckpointError, RobquantError
from robquant.modelfolder import load_model, weights_sha256
from robquant.models import external
from robquant.pipeline.commands import (architecture_spec, attack_loaded, build_architecture, import_weights,
                                        quantize_loaded, read_record, train_new)
from robquant.pipeline.plan import Plan, Stage
from robquant.pipeline.specs import DataRef, Evaluate, ImportFP, Quantize, TrainFP, architecture_of
from robquant.pipeline.store import Store
from robquant.progress import NULL_PROGRESS, Progress
from robquant.provenance import device_name
from robquant.train import create_objective, seed_everything

log = logging.getLogger(__name__)


class StageContext:
    """What the stages run in one process share: the store, the device, data sets and parent models.

    Models are cached as loaded from the store (never as a stage left them), at most
    ``max_models`` at a time, least recently used first out; stages never modify them (quantization
    works on a copy).
    """

    def __init__(self, store: Store, device: torch.device, progress: Progress = NULL_PROGRESS,
                 max_models: int = 8) -> None:
        self.store, self.device, self.progress = store, torch.device(device), progress
        self._data: dict[tuple[Any, ...], ImageDataset] = {}
        self._models: OrderedDict[str, nn.Module] = OrderedDict()
        self.max_models = max_models

    def dataset(self, ref: DataRef, split: str) -> ImageDataset:
        """The whole ``split`` of the data set (loaded once)."""
        key = (ref.name, ref.root, ref.allow_unverified, split)
        if key not in self._data:
            self._data[key] = create_dataset(ref.name, ref.root, split, allow_unverified=ref.allow_unverified)
        return self._data[key]

    def splits(self, ref: DataRef, fraction: float, seed: int) -> tuple[ImageDataset, ImageDataset]:
        """The seeded training ``fraction`` and the first ``n_test`` test examples."""
        return self.dataset(ref, "train").subset(fraction, seed=seed), self.dataset(ref, "test").head(ref.n_test)

    def model(self, key: str) -> nn.Module:
        """The committed model of stage ``key``, in eval mode (read once)."""
        if key in self._models:
            self._models.move_to_end(key)
            return self._models[key]
        model = load_model(self.store.artifact_dir(key), self.device)
        self._models[key] = model
        while len(self._models) > self.max_models:
            self._models.popitem(last=False)
        return model

    def record(self, key: str) -> dict[str, Any]:
        """The model record (``record.json``) of the committed stage ``key``."""
        return read_record(self.store.artifact_dir(key))[1]


def run_train_fp(spec: TrainFP, ctx: StageContext, out: os.PathLike) -> dict[str, Any]:
    train_set, test_set = ctx.splits(spec.data, spec.fraction, spec.train.seed)
    objective = create_objective(spec.objective.name, **spec.objective.kwargs)
    config = {"dataset": spec.data.name, "fraction": spec.fraction, "model": spec.model.name,
              "model_kwargs": spec.model.kwargs, "objective": objective.config(), "train": asdict(spec.train),
              "n_test": spec.data.n_test}
    return train_new(architecture_spec(spec.model.name, spec.model.kwargs, train_set), train_set=train_set,
                     test_set=test_set, objective=objective, train=spec.train, out=out, device=ctx.device,
                     config=config, progress=ctx.progress)


def run_import_fp(spec: ImportFP, ctx: StageContext, out: os.PathLike) -> dict[str, Any]:
    if weights_sha256(spec.source) != spec.sha256:
        raise CheckpointError(f"{spec.source} changed since the study was planned: plan it again")
    train_set, test_set = ctx.splits(spec.data, 1.0, 0)
    config = {"dataset": spec.data.name, "init": spec.init, "source": spec.source, "sha256": spec.sha256,
              "n_test": spec.data.n_test}
    return import_weights(spec.source, architecture_spec(spec.model.name, spec.model.kwargs, train_set),
                          train_set=train_set, test_set=test_set, out=out, device=ctx.device, config=config,
                          progress=ctx.progress)


def run_quantize(spec: Quantize, ctx: StageContext, out: os.PathLike) -> dict[str, Any]:
    train_set, test_set = ctx.splits(spec.data, spec.fraction, spec.seed)
    if spec.checkpoint is None:  # QAT from random parameters
        seed_everything(spec.seed)
        model_spec = architecture_spec(spec.model.name, spec.model.kwargs, train_set)
        fp_model = build_architecture(model_spec, train_set, ctx.device)
        parent: dict[str, Any] = {}
    else:
        parent = ctx.record(spec.checkpoint)
        model_spec, fp_model = parent["model"], ctx.model(spec.checkpoint)
    objective = None
    if spec.method == "qat":
        assert spec.objective is not None
        kwargs = dict(spec.objective.kwargs)
        if spec.teacher is not None:
            kwargs.update(teacher=ctx.model(spec.teacher), teacher_id=f"stage {spec.teacher}",
                          student_dim=getattr(fp_model, "feature_dim", None))
        objective = create_objective(spec.objective.name, **kwargs)
    config = {"dataset": spec.data.name, "fraction": spec.fraction, "reinit": spec.checkpoint is None,
              "parent": {"path": str(ctx.store.artifact_dir(spec.checkpoint)) if spec.checkpoint else None,
                         "metrics": parent.get("metrics"), "config": parent.get("config")}}
    return quantize_loaded(fp_model, model_spec, quant=spec.quant, train_set=train_set, test_set=test_set, out=out,
                           seed=spec.seed, config=config, train=spec.train, objective=objective,
                           device=ctx.device, progress=ctx.progress)


def run_evaluate(spec: Evaluate, ctx: StageContext, out: os.PathLike) -> dict[str, Any]:
    test_set = ctx.dataset(spec.data, "test")
    record = attack_loaded(
        ctx.model(spec.model), test_set, attacks=[a.for_evaluate(spec.budgets) for a in spec.attacks],
        eps=[b.eps for b in spec.budgets], n_test=spec.data.n_test, device=ctx.device, batch_size=spec.batch_size,
        seed=spec.seed, cascade=spec.cascade,
        surrogate=ctx.model(spec.surrogate) if spec.surrogate is not None else None,
        surrogate_id=f"stage {spec.surrogate}" if spec.surrogate is not None else None,
        diagnose=spec.diagnose.options() if spec.diagnose is not None else None,
        deployed=spec.deployed.options() if spec.deployed is not None else None, out=out,
        labels={b.eps: b.label for b in spec.budgets}, progress=ctx.progress)
    if spec.skipped:
        record["skipped_attacks"] = dict(spec.skipped)
    record["metrics"] = evaluation_metrics(record, spec)
    record["status"] = (ctx.store.get(spec.model) or {}).get("status", "done")  # an NC model stays NC
    return record


def evaluation_metrics(record: dict[str, Any], spec: Evaluate) -> dict[str, Any]:
    """The evaluation's numbers of record: the worst case over attacks at the main budget (on the
    examples every attack covered) and the paper's attack (the first PGD) beside it."""
    result, main = record["result"], spec.main.label
    worst = next(r for r in result["worst_case"] if r["eps_255"] == main)
    ref = spec.reference
    ref_all = next((r for r in result["robust"] if r["attack"] == ref and r["eps_255"] == main), None)
    return {
        "clean_accuracy": result["clean_accuracy"], "n": result["n"],
        "robust": result["robust"], "worst_case": result["worst_case"],
        "robustness": worst["accuracy"], "robustness_n": worst["n"], "robustness_attacks": worst["attacks"],
        "main_eps_255": main,
        "reference_attack": ref,
        "reference": None if ref_all is None else {"accuracy": ref_all["accuracy"], "n": ref_all["n"],
                                                   "accuracy_common": worst["per_attack"].get(ref)},
        "flags": _flags(record),
        "deployed": _deployed_metrics(record.get("deployed")),
    }


def _flags(record: dict[str, Any]) -> list[str]:
    """The trust checks that fired (the deployed check too, when the trust checks did not run)."""
    flags = list((record.get("diagnostics") or {}).get("flags", []))
    check = (record.get("deployed") or {}).get("check") or {}
    if check.get("flag") and "deployed_mismatch" not in flags:
        flags.append("deployed_mismatch")
    return flags


def _deployed_metrics(deployed: dict[str, Any] | None) -> dict[str, Any] | None:
    """The deployed model's numbers of record (None when it was not evaluated)."""
    if deployed is None:
        return None
    keys = ("runtime", "fusion", "n", "clean_accuracy", "robustness", "record_accuracy", "clean_agreement",
            "adversarial_agreement", "unfused", "accuracy")
    return {**{k: deployed.get(k) for k in keys}, "export_s": deployed["export"]["seconds"],
            "bytes": deployed["export"]["bytes"]}


HANDLERS: dict[type, Callable[[Any, StageContext, os.PathLike], dict[str, Any]]] = {
    TrainFP: run_train_fp, ImportFP: run_import_fp, Quantize: run_quantize, Evaluate: run_evaluate}


def stage_compute_seconds(record: dict[str, Any]) -> float:
    """Seconds a stage's record says it spent computing: training, calibration, clean evaluation,
    attacks and trust checks (the rest of its wall time is overhead)."""
    if record.get("kind") == "attack":
        return record["result"]["seconds"] + (record.get("diagnostics") or {}).get("seconds", 0.0)
    t = record.get("timings") or {}
    return t.get("train_s", 0.0) + t.get("calibrate_s", 0.0) + t.get("eval_s", 0.0)


def run_stage(stage: Stage, ctx: StageContext) -> dict[str, Any]:
    """Do one stage's work in its work folder and return its record (not yet committed)."""
    t0 = time.perf_counter()
    arch = architecture_of(stage.spec)
    if arch is not None and external.is_reference(arch.name):  # named by the user's study (also in Ray workers)
        external.allow(arch.name)
    record = HANDLERS[type(stage.spec)](stage.spec, ctx, ctx.store.work_dir(stage.key))
    record["stage"] = {"key": stage.key, "kind": stage.kind, "label": stage.label, "parents": stage.spec.parents(),
                       "planned_cost": stage.cost, "estimated_s": stage.estimated_s,
                       "wall_s": time.perf_counter() - t0, "device": device_name(ctx.device)}
    record["stage"]["compute_s"] = stage_compute_seconds(record)
    return record


def execute_stage(stage: Stage, ctx: StageContext) -> str | None:
    """Run ``stage`` and commit it to the store, or keep its error there. Returns None on success,
    else the error message. What both executors run for every stage."""
    ctx.store.mark_running(stage)
    try:
        record = run_stage(stage, ctx)
    except (RobquantError, RuntimeError, ValueError, OSError) as exc:
        log.error("stage %s (%s) failed: %s", stage.key[:12], stage.label, exc)
        ctx.store.fail(stage, f"{exc}\n{traceback.format_exc(limit=5)}")
        return str(exc)
    ctx.store.commit(stage, record)
    return None


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
                  threads: int | None = None) -> RunSummary:
    """Run the plan's unfinished stages in this process, parents first; failures do not stop the rest.

    Args:
        threads: torch threads (default: torch's, every physical core: one process uses them all,
            so never run two executors on the same cores).
    """
    if threads is not None:
        torch.set_num_threads(threads)
    summary = RunSummary()
    todo = pending(plan, store)
    todo_keys = {s.key for s in todo}
    summary.skipped = [k for k in plan.stages if k not in todo_keys]
    ctx = StageContext(store, device, progress)
    t0 = time.perf_counter()
    with progress.task(f"study {plan.study.name}", total=len(todo)) as overall:
        for stage in todo:
            if any(p in summary.failed or p in summary.blocked for p in stage.parents):
                summary.blocked.append(stage.key)
            else:
                error = execute_stage(stage, ctx)
                if error is None:
                    summary.ran.append(stage.key)
                else:
                    summary.failed[stage.key] = error
            overall.advance()
    summary.seconds = time.perf_counter() - t0
    return summary
