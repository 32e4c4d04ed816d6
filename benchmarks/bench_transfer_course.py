"""The precision transfer matrix before and after the full-course fix, on the same models, side by side.

Reads a study with ``evaluation.transfer_matrix: true`` whose models are in ``--store`` (run it first:
``robquant run STUDY --store STORE``) and, for every target model and transfer source of the matrix, runs
the source's PGD twice with the same seed on the same test examples as the study (its first ``n``):

- **before**: ``full_course: false``, what robquant did before: the surrogate's PGD stops each example at
  its first iterate that fools the *surrogate*, and that iterate is shown to the target;
- **after**: ``full_course: true`` (what studies run): the surrogate's PGD runs every step and each
  example keeps the first iterate that fools the *target*, else the last.

Both take the study's white-box PGD settings (steps, step size, restarts, pixel grid). Prints a row per
target and source: robust accuracy (%) before and after, their paired difference with a 95 % interval over
the test examples (one seed), and the examples only one of them breaks; then one JSON line.

    python benchmarks/bench_transfer_course.py --study configs/cifar10-cpu-threats.yaml --store runs/cifar10-cpu
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch

from robquant import load_model
from robquant.data import create_dataset
from robquant.evaluation.evaluate import evaluate
from robquant.pipeline.plan import build_plan
from robquant.pipeline.study import load_study


def before_after(target: torch.nn.Module, source: torch.nn.Module, test: object, eps: float,
                 options: dict[str, object], n: int | None, seed: int, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per example, robust under the early-stopping transfer and under the full-course one: robquant's own
    evaluation (only clean-correct examples attacked, starts seeded per batch from the study's seed)."""
    runs = [("transfer", {**options, "surrogate": source, "full_course": full, "label": label, "n": n})
            for label, full in (("before", False), ("after", True))]
    result = evaluate(target, test, runs, [eps], batch_size=batch, n=n, seed=seed)
    by_label = {label: mask for (label, _), mask in result.robust_correct.items()}
    return by_label["before"], by_label["after"]


def paired(before: torch.Tensor, after: torch.Tensor) -> tuple[float, float]:
    """Mean difference (points) after - before and its 95 % half-width over the examples."""
    d = after.float() - before.float()
    n = len(d)
    return 100 * float(d.mean()), 100 * 1.96 * float(d.std(unbiased=True)) / math.sqrt(n) if n > 1 else math.nan


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--study", required=True)
    p.add_argument("--store", required=True)
    args = p.parse_args()
    study = load_study(args.study)
    if not study.evaluation.transfer_matrix:
        raise SystemExit(f"{args.study}: evaluation.transfer_matrix is not on: no matrix to compare")
    root = Path(study.dataset.root)
    if not (root / "cifar-10-batches-py").is_dir() and study.dataset.name == "cifar10":
        print(json.dumps({"bench": "transfer_course", "skipped": f"no {root}/cifar-10-batches-py"}))
        return
    stages = Path(args.store) / "stages"
    plan = build_plan(study)
    test = create_dataset(study.dataset.name, str(root), "test",
                          allow_unverified=study.dataset.allow_unverified)
    rows, t0 = [], time.perf_counter()
    print(f"{'target':<40} {'source':<14} {'before':>7} {'after':>7} {'after-before':>16} {'only before':>11} "
          f"{'only after':>10}")
    for cell, seed, key in plan.cells:
        spec = plan.stages[key].spec
        needed = [spec.model, *(r.options["source"] for r in spec.attacks if "source" in r.options)]
        missing = [k for k in needed if not (stages / k / "model.safetensors").is_file()]
        if missing:
            raise SystemExit(f"{args.store}: stage {missing[0][:10]} of {spec.label!r} not run: run the study first")
        target = load_model(str(stages / spec.model))
        eps = spec.main.eps
        for run in spec.attacks:
            if run.name != "transfer" or "source" not in run.options:
                continue
            options = {k: v for k, v in run.options.items() if k not in ("source", "full_course")}
            source = load_model(str(stages / run.options["source"]))
            n = run.n or spec.data.n_test
            before, after = before_after(target, source, test, eps, options, n, spec.seed, spec.batch_size)
            diff, half = paired(before, after)
            row = {"target": cell.label, "seed": seed, "source": run.label, "n": len(after),
                   "before": 100 * float(before.float().mean()), "after": 100 * float(after.float().mean()),
                   "diff": diff, "half_width": half, "only_before_broken": int((~before & after).sum()),
                   "only_after_broken": int((before & ~after).sum()), "options": options}
            rows.append(row)
            print(f"{cell.label:<40} {run.label:<14} {row['before']:7.1f} {row['after']:7.1f} "
                  f"{diff:+8.1f} ± {half:4.1f} {row['only_before_broken']:11d} {row['only_after_broken']:10d}",
                  flush=True)
    print(json.dumps({"bench": "transfer_course", "study": args.study, "rows": rows,
                      "seconds": round(time.perf_counter() - t0, 1)}))


if __name__ == "__main__":
    main()
