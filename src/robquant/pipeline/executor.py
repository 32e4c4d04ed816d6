"""Running a plan: one handler per stage kind (:data:`HANDLERS`; each lives with its domain), one core
that runs and commits a stage, and the local executor (this process). The Ray executor (:mod:`robquant.pipeline.ray_executor`) runs the same core
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
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import nn

from robquant.data import ImageDataset, create_dataset
from robquant.errors import RobquantError
from robquant.modelfolder import load_model, read_record
from robquant.models import external
from robquant.pipeline.plan import Plan, Stage
from robquant.deploy.stage import run_evaluate_deployed, run_export
from robquant.evaluation.stage import run_evaluate
from robquant.pipeline.specs import (DataRef, Evaluate, EvaluateDeployed, Export, ImportFP, Quantize, TrainFP,
                                     architecture_of, spec_json)
from robquant.pipeline.store import Store
from robquant.progress import NULL_PROGRESS, Progress
from robquant.provenance import StageInfo, device_name
from robquant.train.stages import run_import_fp, run_quantize, run_train_fp

log = logging.getLogger(__name__)

# The handler of each stage spec, where its domain lives: (spec, context, work folder) -> the stage's record.
HANDLERS: dict[type, Callable[[Any, Any, os.PathLike], dict[str, Any]]] = {
    TrainFP: run_train_fp, ImportFP: run_import_fp, Quantize: run_quantize,  # robquant.train.stages
    Evaluate: run_evaluate,  # robquant.evaluation.stage
    Export: run_export, EvaluateDeployed: run_evaluate_deployed}  # robquant.deploy.stage


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

    def keep(self, ref: DataRef, split: str, dataset: ImageDataset) -> None:
        """Keep a split loaded elsewhere (the CLI loads the test split first, to check the data)."""
        self._data[(ref.name, ref.root, ref.allow_unverified, split)] = dataset

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


def stage_compute_seconds(record: dict[str, Any]) -> float:
    """Seconds a stage's record says it spent computing: training, calibration, clean evaluation,
    attacks and trust checks (the rest of its wall time is overhead)."""
    if record.get("kind") in ("evaluate", "attack"):  # "attack": records before the one path
        return record["result"]["seconds"] + (record.get("diagnostics") or {}).get("seconds", 0.0)
    t = record.get("timings") or {}
    return sum(t.get(k, 0.0) for k in ("train_s", "calibrate_s", "eval_s", "export_s", "check_s", "evaluate_s"))


def run_stage(stage: Stage, ctx: StageContext) -> dict[str, Any]:
    """Do one stage's work in its work folder and return its record (not yet committed)."""
    t0 = time.perf_counter()
    arch = architecture_of(stage.spec)
    if arch is not None and external.is_reference(arch.name):  # named by the user's study (also in Ray workers)
        external.allow(arch.name)
    record = HANDLERS[type(stage.spec)](stage.spec, ctx, ctx.store.work_dir(stage.key))
    record.setdefault("config", spec_json(stage.spec))
    record["stage"] = StageInfo(stage.key, stage.kind, stage.label, stage.spec.parents(), stage.cost, stage.estimated_s,
                                time.perf_counter() - t0, device_name(ctx.device),
                                stage_compute_seconds(record)).to_dict()
    return record


def execute_stage(stage: Stage, ctx: StageContext, raise_errors: bool = False) -> str | None:
    """Run ``stage`` and commit it to the store, or keep its error there. Returns None on success,
    else the error message (``raise_errors``: raises it, for one command's one stage). What both
    executors and the CLI run for every stage."""
    ctx.store.mark_running(stage)
    try:
        record = run_stage(stage, ctx)
    except (RobquantError, RuntimeError, ValueError, OSError) as exc:
        ctx.store.fail(stage, f"{exc}\n{traceback.format_exc(limit=5)}")
        if raise_errors:
            raise
        log.error("stage %s (%s) failed: %s", stage.key[:12], stage.label, exc)
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
