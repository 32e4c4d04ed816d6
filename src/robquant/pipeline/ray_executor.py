"""The Ray executor: every stage a Ray task, dependencies as object refs, fractional GPUs.

Each task runs the executor core (:func:`~robquant.pipeline.executor.execute_stage`) and commits its stage to
the store itself (so its children, which Ray starts
only once it has returned, find its artifacts in place); the store must therefore be on a file
system every worker sees. Records are the same as the local executor's.
"""

from __future__ import annotations

import os
import time
from typing import Any

import torch

from robquant.pipeline.executor import RunSummary, StageContext, execute_stage, pending
from robquant.pipeline.plan import Plan, Stage
from robquant.pipeline.store import Store
from robquant.progress import NULL_PROGRESS, Progress

_CONTEXTS: dict[tuple[str, str], StageContext] = {}  # per worker process: data and parents stay loaded


def _ray_stage(stage: Stage, store_root: str, device: str, threads: int, *parents: dict[str, Any]) -> dict[str, Any]:
    """Body of one Ray task: run and commit ``stage`` (the executor core) unless a parent did not finish."""
    if any(p["status"] != "ok" for p in parents):
        return {"key": stage.key, "status": "blocked"}
    torch.set_num_threads(threads)
    ctx = _CONTEXTS.get((store_root, device))
    if ctx is None:
        ctx = _CONTEXTS[(store_root, device)] = StageContext(Store(store_root), torch.device(device))
    error = execute_stage(stage, ctx)
    return {"key": stage.key, "status": "ok"} if error is None else {"key": stage.key, "status": "failed", "error": error}


def execute_ray(plan: Plan, store: Store, device: torch.device, *, address: str | None = None,
                gpus_per_stage: float = 0.25, cpus_per_stage: int = 1,
                progress: Progress = NULL_PROGRESS) -> RunSummary:
    """Run the plan's unfinished stages as Ray tasks.

    Args:
        plan: The plan.
        store: The store (on a file system shared by all workers).
        device: ``cuda`` to give each task ``gpus_per_stage`` of a GPU, else CPU tasks.
        address: A running cluster's address; None starts a local Ray instance (and stops it after).
        gpus_per_stage: GPU fraction per task (0.25 lets four ResNet-20 stages share one GPU).
        cpus_per_stage: CPU cores per task (and torch threads inside it).
        progress: Progress display (one overall bar).
    """
    import ray

    started = not ray.is_initialized()
    if started:
        ray.init(address=address, include_dashboard=False, log_to_driver=False,
                 num_cpus=None if address else os.cpu_count())
    summary = RunSummary()
    t0 = time.perf_counter()
    try:
        todo = pending(plan, store)
        todo_keys = {s.key for s in todo}
        summary.skipped = [k for k in plan.stages if k not in todo_keys]
        task = ray.remote(num_cpus=cpus_per_stage, num_gpus=gpus_per_stage if device.type == "cuda" else 0,
                          max_retries=0)(_ray_stage)
        refs: dict[str, Any] = {}
        for stage in todo:  # dependency order: parents' refs exist before their children's
            deps = [refs[p] for p in stage.parents if p in refs]
            refs[stage.key] = task.remote(stage, str(store.root), device.type, cpus_per_stage, *deps)
        waiting = list(refs.values())
        with progress.task(f"study {plan.study.name} (ray)", total=len(waiting)) as bar:
            while waiting:
                done, waiting = ray.wait(waiting, num_returns=1)
                result = ray.get(done[0])
                if result["status"] == "ok":
                    summary.ran.append(result["key"])
                elif result["status"] == "failed":
                    summary.failed[result["key"]] = result["error"]
                else:
                    summary.blocked.append(result["key"])
                bar.advance()
    finally:
        if started:
            ray.shutdown()
    summary.seconds = time.perf_counter() - t0
    return summary
