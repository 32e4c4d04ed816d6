"""Per-stage overhead of the pipeline: a study of many tiny stages, wall time against compute.

Runs a study of >= 100 tiny stages (digits, a width-2 ResNet-20, one epoch on a sliver of the
data, PGD-1 on 20 images) in a fresh store, in this process, and prints per stage kind the wall
time, the compute (time inside training, calibration, clean evaluation and attacks, as each
record states it) and the overhead (wall minus compute, the executor's store commits included),
side by side from one run. The first stage also pays what a process pays once (torch's lazy
imports, loading the data set): that is printed apart.

    python benchmarks/bench_stages.py [--seeds 3] [--keep DIR]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import torch
import yaml

STUDY = {
    "name": "bench-stages",
    "dataset": {"name": "digits"},
    "model": {"name": "resnet20", "width": 2},
    "evaluation": {"attacks": [{"name": "pgd", "steps": 1}], "eps": [32], "main_eps": 32, "n_test": 20,
                   "diagnostics": {"enabled": False}},
    "fp": {"non_robust": {"epochs": 1, "batch_size": 64, "schedule": "constant", "fraction": 0.1},
           "robust": {"epochs": 1, "batch_size": 64, "schedule": "constant", "fraction": 0.1},
           "pgd": {"eps": 32, "step": 16, "steps": 1}},
    "qat": {"finetune": {"epochs": 1, "lr": 0.01, "batch_size": 64, "schedule": "constant"}},
    "quant": {"calib_images": 8},
    "axes": {"init": ["non_robust", "robust"], "method": ["ptq", "qat"],
             "precision": ["A2W2", "A3W3", "A4W4", "A6W6", "A8W8", "A32W32", "A32W4", "A4W32"],
             "fraction": [0.05]},
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=2, help="seeds (each adds 64 stages)")
    p.add_argument("--keep", type=Path, default=None, help="keep the store in this folder")
    args = p.parse_args()

    from robquant.pipeline import build_plan, execute_local, load_study, stage_compute_seconds
    from robquant.pipeline.store import Store

    root = Path(tempfile.mkdtemp(prefix="bench-stages-"))
    store_dir = args.keep or root / "store"
    if store_dir.exists():
        shutil.rmtree(store_dir)
    study_file = root / "study.yaml"
    study_file.write_text(yaml.safe_dump({**STUDY, "seeds": list(range(args.seeds))}))
    t0 = time.perf_counter()
    study = load_study(study_file).model_copy(update={"store": str(store_dir)})
    plan = build_plan(study)
    store = Store(store_dir)
    t_plan = time.perf_counter() - t0
    summary = execute_local(plan, store, torch.device("cpu"))
    executor_wall = summary.seconds
    if summary.failed:
        raise SystemExit(f"{len(summary.failed)} stages failed: {next(iter(summary.failed.values()))}")

    by_kind: dict[str, dict[str, float]] = {}
    first = plan.order()[0].key  # pays the process's one-off costs (imports torch's compiler, loads the data)
    one_off = 0.0
    stage_wall = 0.0
    for key, stage in plan.stages.items():
        record = store.get(key)["record"]
        seconds, compute = record["stage"]["wall_s"], stage_compute_seconds(record)
        stage_wall += seconds
        if key == first:
            one_off = seconds - compute
            continue
        k = by_kind.setdefault(stage.kind, {"n": 0, "wall": 0.0, "compute": 0.0})
        k["n"] += 1
        k["wall"] += seconds
        k["compute"] += compute
    n = len(plan.stages)
    between = (executor_wall - stage_wall) / n  # the executor's own work per stage: store rows, commits, progress
    print(f"{n} stages, torch threads {torch.get_num_threads()}; plan {t_plan:.2f} s; executor wall {executor_wall:.1f} s; "
          f"one-off cost of the process (first stage's overhead) {one_off:.2f} s")
    print(f"{'kind':<10} {'stages':>6} {'wall/stage':>11} {'compute/stage':>14} {'overhead/stage':>15}")
    total = {"n": 0, "wall": 0.0, "compute": 0.0}
    for kind, k in by_kind.items():
        print(f"{kind:<10} {k['n']:>6} {k['wall'] / k['n'] + between:>10.3f}s {k['compute'] / k['n']:>13.3f}s "
              f"{(k['wall'] - k['compute']) / k['n'] + between:>14.3f}s")
        total = {f: total[f] + k[f] for f in total}
    print(f"{'all':<10} {total['n']:>6} {total['wall'] / total['n'] + between:>10.3f}s "
          f"{total['compute'] / total['n']:>13.3f}s {(total['wall'] - total['compute']) / total['n'] + between:>14.3f}s"
          f"   (after the first stage; overhead = wall, store commits included, minus compute)")
    if args.keep is None:
        shutil.rmtree(root)


if __name__ == "__main__":
    main()
