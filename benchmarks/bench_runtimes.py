"""The same deployed models on every installed runtime, side by side, with the same attacks: a study's models.

For each evaluation of a study that deployed its model (``evaluation.deployed``: ``model.onnx`` in the
evaluation's folder), the file on each runtime named (ONNX Runtime, OpenVINO, ExecuTorch: the program built
from the evaluated model) against the fake-quantized model: clean accuracy, transfer of PGD crafted on the
fake-quantized model, Square on the runtime, agreement, all on the same test examples with the same seed
(the reference's work done once, :func:`robquant.deploy.deployed_evaluation`), and each runtime's robustness
minus the first runtime's, paired by example (95 % interval). Prints one JSON line per model and runtime,
then a table.

    PYTHONPATH=src python benchmarks/bench_runtimes.py configs/cifar10-cpu-threats.yaml --store STORE \\
        --runtimes onnxruntime,executorch --square-queries 300
"""

from __future__ import annotations

import argparse
import json
import math
import time

import numpy as np

from robquant import load_model
from robquant.data import create_dataset
from robquant.deploy import deployed_evaluation, load_runtime
from robquant.pipeline.plan import build_plan
from robquant.pipeline.store import Store
from robquant.pipeline.study import load_study


def paired(a: list[bool], b: list[bool]) -> tuple[float, float]:
    """Mean of b - a over examples and its 95 % half-width (normal, paired)."""
    d = np.asarray(b, dtype=float) - np.asarray(a, dtype=float)
    return float(d.mean()), 1.96 * float(d.std(ddof=1)) / math.sqrt(len(d)) if len(d) > 1 else float("nan")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("study")
    p.add_argument("--store", required=True)
    p.add_argument("--runtimes", default="onnxruntime,executorch")
    p.add_argument("--n", type=int, default=200)
    p.add_argument("--eps", type=float, default=8, help="/255")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--square-queries", type=int, default=300)
    args = p.parse_args()
    study, store = load_study(args.study), Store(args.store)
    plan = build_plan(study)
    ds = study.dataset
    test = create_dataset(ds.name, ds.root, "test", allow_unverified=ds.allow_unverified)
    names = [r.strip() for r in args.runtimes.split(",") if r.strip()]
    rows = []
    for cell, seed, key in plan.cells:
        path = store.artifact_dir(key) / "model.onnx"
        if not path.is_file():
            continue
        model = load_model(store.artifact_dir(plan.stages[key].spec.model)).eval()
        shared: dict = {}
        results = {}
        for name in names:
            t0 = time.perf_counter()
            runtime = load_runtime(name, path, model=model)
            r = deployed_evaluation(runtime, model, test, args.eps / 255, n=args.n, steps=args.steps,
                                    square_queries=args.square_queries, seed=seed, shared=shared)
            results[name] = r
            row = {"model": cell.label, "seed": seed, "runtime": r["runtime"], "n": r["n"],
                   "clean": r["clean_accuracy"], "robustness": r["robustness"], "transfer": r["accuracy"]["transfer"],
                   "square": r["accuracy"]["square"], "clean_agreement": r["clean_agreement"],
                   "adversarial_agreement": r["adversarial_agreement"], "flag": r["flag"],
                   "seconds": round(time.perf_counter() - t0, 1)}
            if name != names[0]:
                row["minus_first"] = paired(results[names[0]]["robust_mask"], r["robust_mask"])
            rows.append(row)
            print(json.dumps(row), flush=True)
    print(f"\n| model | {' | '.join(names)} | agreement clean / PGD % | "
          + " | ".join(f"{n} - {names[0]} (paired)" for n in names[1:]) + " | seconds |")
    print("|---|" + "---|" * (2 * len(names) + 1))
    for model in dict.fromkeys(r["model"] for r in rows):
        rs = [r for r in rows if r["model"] == model]
        cells = [f"{100 * r['robustness']:.1f}" for r in rs]
        agree = " ; ".join(f"{100 * r['clean_agreement']:.1f} / {100 * r['adversarial_agreement']:.1f}" for r in rs)
        diffs = [f"{100 * r['minus_first'][0]:+.1f} ± {100 * r['minus_first'][1]:.1f}" for r in rs[1:]]
        print(f"| {model} | {' | '.join(cells)} | {agree} | {' | '.join(diffs)} | "
              f"{' / '.join(str(r['seconds']) for r in rs)} |")


if __name__ == "__main__":
    main()
