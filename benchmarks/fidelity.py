"""The effect of each fidelity fix on CIFAR-10, before / after, measured side by side on the same FP models.

Uses the FP models of a `configs/cifar10-cpu.yaml` run (its store), the JPEG copy of CIFAR-10 in
`.data/`, and the preset's data fraction and QAT schedule. For each fix it rebuilds the model the
old way and the new way from the same parameters and seeds:

- PTQ activation calibration: batches of 128 images (before) vs 4 (PWLQ's code), and placement at
  ReLU outputs (before) vs the inputs of every conv, linear and pooling layer (PWLQ's code);
- PACT's alpha: 10 (before) vs a percentile of each layer's activations (when QAT starts from
  trained parameters);
- QAT at 32 activation bits: a learned clipped ReLU min(relu(x), alpha) (before) vs a plain ReLU;
- PGD: the last iterate (before) vs each example's best iterate, beside APGD-CE;
- the worst case of PGD (all examples) and APGD-CE (the first ones) padded with PGD alone
  (before) vs over the examples both covered;
- trend labels unpaired (before) vs paired over seeds, on the preset's activation-only sweep;
- the activation-only sweep's trend at 1/255 under PGD-20 as the paper may have run it (last iterate,
  step eps/4 or Madry's fixed 2/255) and as robquant runs it (best iterate): is finding (iv) the attack's?

Prints one JSON line per measurement and a Markdown table at the end (docs/fidelity.md).

    python benchmarks/fidelity.py --study configs/cifar10-cpu.yaml --store runs/cifar10-cpu [--seeds 0,1]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from robquant import load_model
from robquant.evaluation import evaluate, worst_case
from robquant.data import create_dataset
from robquant.quant import PACT, QuantConfig, UniformActQuant, quantize
from robquant.train import TrainConfig, create_objective, fit, seed_everything

ROWS: list[dict[str, Any]] = []


class ClippedReLU(nn.Module):
    """QAT at 32 activation bits before the fix: PACT(bits=32) = min(relu(x), alpha), alpha learned from 10."""

    def __init__(self, alpha: float = 10.0) -> None:
        super().__init__()
        self.alpha = nn.Parameter(torch.tensor(alpha))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.minimum(torch.relu(x), self.alpha)


def emit(**row: Any) -> None:
    ROWS.append(row)
    print(json.dumps(row), flush=True)


def fp_folders(store: Path) -> dict[str, Path]:
    """The committed train_fp stages of the store, by init."""
    out = {}
    for stage in (store / "stages").glob("*/stage.json"):
        record = json.loads(stage.read_text())
        if record.get("stage", {}).get("kind") == "train_fp":
            out[record["config"]["objective"]["name"] == "pgd_at" and "robust" or "non_robust"] = stage.parent
    return out


def robust_at(model: nn.Module, test: Any, eps_255: float, n: int, seed: int, **pgd: Any) -> tuple[float, float]:
    ev = evaluate(model, test, [("pgd", {"steps": 20, **pgd})], [eps_255 / 255], n=n, seed=seed)
    return ev.clean_accuracy, ev.robust_accuracy[("pgd", eps_255 / 255)]


def ptq_section(fps: dict[str, Path], train: Any, test: Any, args: argparse.Namespace) -> None:
    for init, folder in fps.items():
        model = load_model(folder)
        eps = 8 if init == "robust" else 1
        for precision in ("A4W4", "A2W2"):
            for batch, placement in ((128, "relu"), (4, "relu"), (128, "inputs"), (4, "inputs")):
                for seed in args.seeds:
                    sub = train.subset(args.fraction, seed=seed)
                    index = torch.randperm(len(sub), generator=torch.Generator().manual_seed(seed))[:512]
                    calib = sub.images[index].float() / 255
                    cfg = QuantConfig(method="ptq", precision=precision, calib_batch_size=batch,
                                      act_placement=placement)
                    q = quantize(model, cfg, calib_images=calib)
                    ranges = [float(m.range_hi) for m in q.modules() if isinstance(m, UniformActQuant)]
                    clean, rob = robust_at(q, test, eps, args.n_test, seed)
                    emit(fix="ptq calibration / placement", init=init, precision=precision, calib_batch=batch,
                         placement=placement, seed=seed, clean=clean, robust=rob, eps_255=eps,
                         mean_range_hi=sum(ranges) / len(ranges))


def qat_model(model: nn.Module, precision: str, train: Any, seed: int, args: argparse.Namespace, *,
              pact_init: str = "data", clipped_a32: bool = False) -> nn.Module:
    sub = train.subset(args.fraction, seed=seed)
    index = torch.randperm(len(sub), generator=torch.Generator().manual_seed(seed))[:512]
    q = quantize(model, QuantConfig(method="qat", precision=precision, pact_init=pact_init),
                 calib_images=sub.images[index].float() / 255)
    if clipped_a32:
        for name, m in list(q.named_modules()):
            if type(m) is nn.ReLU:
                parent, _, attr = name.rpartition(".")
                setattr(q.get_submodule(parent) if parent else q, attr, ClippedReLU())
    seed_everything(seed)
    fit(q, sub, create_objective("clean"), TrainConfig(epochs=args.qat_epochs, lr=0.01, schedule="cosine", seed=seed))
    return q.eval()


def qat_section(fps: dict[str, Path], train: Any, test: Any, args: argparse.Namespace) -> None:
    model = load_model(fps["non_robust"])
    for precision in ("A4W4", "A2W2"):
        for pact_init in ("fixed", "data"):
            for seed in args.seeds:
                q = qat_model(model, precision, train, seed, args, pact_init=pact_init)
                alphas = [float(m.alpha.detach()) for m in q.modules() if isinstance(m, PACT)]
                clean, rob = robust_at(q, test, 1, args.n_test, seed)
                emit(fix="pact alpha", init="non_robust", precision=precision, pact_init=pact_init, seed=seed,
                     clean=clean, robust=rob, eps_255=1, mean_alpha_after=sum(alphas) / len(alphas))
    for clipped in (True, False):
        for seed in args.seeds:
            q = qat_model(model, "A32W4", train, seed, args, clipped_a32=clipped)
            clean, rob = robust_at(q, test, 1, args.n_test, seed)
            emit(fix="A32 = ReLU", init="non_robust", precision="A32W4", a32="clipped ReLU" if clipped else "ReLU",
                 seed=seed, clean=clean, robust=rob, eps_255=1)


def attack_section(fps: dict[str, Path], train: Any, test: Any, args: argparse.Namespace) -> None:
    model = load_model(fps["robust"])
    for seed in args.seeds:
        sub = train.subset(args.fraction, seed=seed)
        index = torch.randperm(len(sub), generator=torch.Generator().manual_seed(seed))[:512]
        q = quantize(model, QuantConfig(method="ptq", precision="A4W4"), calib_images=sub.images[index].float() / 255)
        eps = 8 / 255
        ev = evaluate(q, test, [("pgd", {"steps": 20, "keep_best": False, "label": "pgd_last"}),
                                ("pgd", {"steps": 20}), ("apgd", {"n": args.n_aa})], [eps], n=args.n_test, seed=seed)
        acc = {k[0]: v for k, v in ev.robust_accuracy.items()}
        emit(fix="best iterate", model="PTQ A4W4 from robust", seed=seed, eps_255=8, pgd_last=acc["pgd_last"],
             pgd_best=acc["pgd"], apgd_ce=acc["apgd"], n_pgd=ev.n, n_apgd=args.n_aa)
        masks = {k: v for k, v in ev.robust_correct.items() if k[0] in ("pgd", "apgd")}
        pgd, apgd = masks[("pgd", eps)], masks[("apgd", eps)]
        padded = pgd.clone()
        padded[: len(apgd)] &= apgd  # before: every example counted, AutoAttack on the first n only
        common = worst_case(masks)[eps]
        emit(fix="worst case on common examples", model="PTQ A4W4 from robust", seed=seed, eps_255=8,
             padded=padded.float().mean().item(), n_padded=len(padded), common=common.float().mean().item(),
             n_common=len(common), pgd_on_common=pgd[: len(common)].float().mean().item())


def trend_section(args: argparse.Namespace) -> None:
    from robquant.pipeline.plan import build_plan
    from robquant.pipeline.store import Store
    from robquant.pipeline.study import load_study
    from robquant.report.records import PAPER, WORST, collect
    from robquant.report.stats import trend_label
    from robquant.report.tables import sweep_trend

    study = load_study(args.study)
    plan = build_plan(study, lambda: 0)
    rows = [r for r in collect(plan, Store(args.store)) if r.weight_bits == 32 and r.status == "done"
            and (r.method, r.strategy, r.init) == ("qat", "vanilla", "non_robust")]
    weak = study.evaluation.weak()
    for measure, what, value in (("pgd", PAPER, lambda r: r.robust.get((r.reference_attack, weak))),
                                 ("worst case", WORST, lambda r: r.worst.get(weak))):
        values: dict[int, dict[int, float]] = {}
        for r in rows:
            values.setdefault(r.act_bits, {})[r.seed] = value(r)
        for paired in (False, True):  # over seeds alone, from the per-seed accuracies
            label, info = trend_label(values, paired=paired)
            emit(fix="paired trend label", measure=measure, eps_255=weak, paired=paired, label=label,
                 p_plus=info["p_plus"], p_minus=info["p_minus"], seeds=info["min_seeds"])
        label, info = sweep_trend(rows, "act_bits", what, weak)  # what the report does: seeds and examples
        emit(fix="trend label over seeds and examples", measure=measure, eps_255=weak, label=label,
             p_plus=info["p_plus"], p_minus=info["p_minus"], seeds=len(info["seeds"]), examples=info["examples"])


def sweep_section(args: argparse.Namespace) -> None:
    import numpy as np

    from robquant.pipeline.plan import build_plan
    from robquant.pipeline.store import Store
    from robquant.pipeline.study import load_study
    from robquant.report.intervals import estimate
    from robquant.report.stats import trend_label_examples

    study = load_study(args.study)
    plan = build_plan(study, lambda: 0)
    store = Store(args.store)
    test = create_dataset("cifar10", args.data_root, "test", allow_unverified=True)
    variants = {"last iterate, step eps/4": {"keep_best": False},
                "last iterate, step 2/255": {"keep_best": False, "step_size": 2 / 255},
                "best iterate, step eps/4 (robquant)": {}}
    masks: dict[str, dict[int, dict[int, np.ndarray]]] = {v: {} for v in variants}
    for cell, seed, key in plan.cells:
        if (cell.method, cell.strategy, cell.init) != ("qat", "vanilla", "non_robust") or not cell.precision.endswith("W32"):
            continue
        row = store.get(key)
        if row is None or row["status"] != "done":
            continue
        model = load_model(store.artifact_dir(row["parents"][0]))
        bits = int(cell.precision[1:].split("W")[0])
        for name, kw in variants.items():
            ev = evaluate(model, test, [("pgd", {"steps": 20, **kw})], [1 / 255], n=args.n_test, seed=seed)
            masks[name].setdefault(bits, {})[seed] = ev.robust_correct[("pgd", 1 / 255)].numpy()
            emit(fix="sweep attack", variant=name, precision=cell.precision, seed=seed, eps_255=1,
                 clean=ev.clean_accuracy, robust=ev.robust_accuracy[("pgd", 1 / 255)])
    for name in variants:
        bits = sorted(masks[name])
        seeds = sorted(set.intersection(*(set(masks[name][b]) for b in bits)))
        y = np.stack([np.stack([masks[name][b][s] for b in bits], axis=1) for s in seeds]).astype(float)  # (S, n, k)
        label, info = trend_label_examples(y, bits)
        ends = estimate(y[:, :, 0] - y[:, :, -1])
        emit(fix="sweep trend", variant=name, eps_255=1, label=label, p_plus=info["p_plus"], p_minus=info["p_minus"],
             means={b: float(y[:, :, i].mean()) for i, b in enumerate(bits)}, low_minus_fp=ends.mean,
             low_minus_fp_half=ends.half, examples=int(y.shape[1]), seeds=len(seeds))


def markdown() -> str:
    """The before/after table of docs/fidelity.md, means over seeds."""
    def mean(rows: list[dict[str, Any]], key: str) -> str:
        vals = [r[key] for r in rows]
        return f"{100 * sum(vals) / len(vals):.1f}" if vals else ""

    lines = ["| fix | model | before | after | metric |", "|---|---|---|---|---|"]
    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for r in ROWS:
        if r["fix"] == "ptq calibration / placement":
            groups.setdefault(("ptq", r["init"], r["precision"], r["calib_batch"], r["placement"]), []).append(r)
        elif r["fix"] == "pact alpha":
            groups.setdefault(("pact", r["precision"], r["pact_init"]), []).append(r)
        elif r["fix"] == "A32 = ReLU":
            groups.setdefault(("a32", r["a32"]), []).append(r)
    for init in ("robust", "non_robust"):
        for p in ("A4W4", "A2W2"):
            before, batch4, inputs, after = (groups.get(("ptq", init, p, b, pl), []) for b, pl in
                                             ((128, "relu"), (4, "relu"), (128, "inputs"), (4, "inputs")))
            if before and after:
                eps = before[0]["eps_255"]
                lines.append(f"| PTQ calibration batch 128 -> 4 (ReLU placement) | PTQ {p} from {init} | "
                             f"{mean(before, 'clean')} / {mean(before, 'robust')} | {mean(batch4, 'clean')} / "
                             f"{mean(batch4, 'robust')} | clean / PGD-20 {eps}/255 % |")
                lines.append(f"| PTQ placement ReLU -> layer inputs (batch 4) | PTQ {p} from {init} | "
                             f"{mean(batch4, 'clean')} / {mean(batch4, 'robust')} | {mean(after, 'clean')} / "
                             f"{mean(after, 'robust')} | clean / PGD-20 {eps}/255 % |")
    for p in ("A4W4", "A2W2"):
        before, after = groups.get(("pact", p, "fixed"), []), groups.get(("pact", p, "data"), [])
        if before and after:
            lines.append(f"| PACT alpha 10 -> from the data | QAT/vanilla {p} from non_robust | {mean(before, 'clean')} "
                         f"/ {mean(before, 'robust')} | {mean(after, 'clean')} / {mean(after, 'robust')} | "
                         f"clean / PGD-20 1/255 % |")
    before, after = groups.get(("a32", "clipped ReLU"), []), groups.get(("a32", "ReLU"), [])
    if before and after:
        lines.append(f"| A32: clipped ReLU -> ReLU | QAT/vanilla A32W4 from non_robust | {mean(before, 'clean')} / "
                     f"{mean(before, 'robust')} | {mean(after, 'clean')} / {mean(after, 'robust')} | clean / PGD-20 "
                     f"1/255 % |")
    best = [r for r in ROWS if r["fix"] == "best iterate"]
    if best:
        lines.append(f"| PGD-20 last -> best iterate (APGD-CE: {mean(best, 'apgd_ce')}) | PTQ A4W4 from robust | "
                     f"{mean(best, 'pgd_last')} | {mean(best, 'pgd_best')} | robust % at 8/255 |")
    wc = [r for r in ROWS if r["fix"] == "worst case on common examples"]
    if wc:
        lines.append(f"| worst case padded -> on common examples (n {wc[0]['n_padded']} -> {wc[0]['n_common']}) | "
                     f"PTQ A4W4 from robust | {mean(wc, 'padded')} | {mean(wc, 'common')} | robust % at 8/255 |")
    for r in ROWS:
        if r["fix"] == "sweep trend":
            means = ", ".join(f"{'FP' if b == 32 else b}: {100 * m:.1f}" for b, m in r["means"].items())
            lines.append(f"| (iv) under PGD-20, {r['variant']} | QAT/vanilla AxW32 from non_robust, 1/255 | | "
                         f"{r['label']} (P(+) {r['p_plus']:.2f}); A2 minus FP {100 * r['low_minus_fp']:+.1f} ± "
                         f"{100 * r['low_minus_fp_half']:.1f} ({r['seeds']} seeds x {r['examples']} examples) | "
                         f"robust % by activation bits: {means} |")
    for r in ROWS:
        if r["fix"] == "paired trend label" and r["paired"]:
            unpaired = next(u for u in ROWS if u["fix"] == r["fix"] and u["measure"] == r["measure"] and not u["paired"])
            lines.append(f"| trend label unpaired -> paired | activation-only sweep, {r['measure']} at "
                         f"{r['eps_255']:g}/255 | {unpaired['label']} (P(+) {unpaired['p_plus']:.2f}) | "
                         f"{r['label']} (P(+) {r['p_plus']:.2f}) | label |")
    for r in ROWS:
        if r["fix"] == "trend label over seeds and examples":
            lines.append(f"| trend label over seeds and examples (the report's) | activation-only sweep, {r['measure']} "
                         f"at {r['eps_255']:g}/255 | | {r['label']} (P(+) {r['p_plus']:.2f}; {r['seeds']} seeds x "
                         f"{r['examples']} examples) | label |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--study", default="configs/cifar10-cpu.yaml")
    parser.add_argument("--store", default="runs/cifar10-cpu")
    parser.add_argument("--data-root", default=".data")
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--fraction", type=float, default=0.05, help="calibration / fine-tuning data (the preset's)")
    parser.add_argument("--qat-epochs", type=int, default=2)
    parser.add_argument("--n-test", type=int, default=1000)
    parser.add_argument("--n-aa", type=int, default=200)
    parser.add_argument("--sections", default="ptq,qat,attack,trend,sweep")
    args = parser.parse_args()
    args.seeds = [int(s) for s in args.seeds.split(",")]
    if not (Path(args.data_root) / "cifar-10-batches-py").is_dir():
        print(json.dumps({"bench": "fidelity", "skipped": f"no {args.data_root}/cifar-10-batches-py"}))
        return
    fps = fp_folders(Path(args.store))
    if set(fps) != {"robust", "non_robust"}:
        print(json.dumps({"bench": "fidelity", "skipped": f"{args.store} holds no robust and non-robust FP models; "
                          f"run robquant run {args.study} --store {args.store} first"}))
        return
    train = create_dataset("cifar10", args.data_root, "train", allow_unverified=True)
    test = create_dataset("cifar10", args.data_root, "test", allow_unverified=True)
    t0 = time.perf_counter()
    sections = {"ptq": ptq_section, "qat": qat_section, "attack": attack_section}
    for name in args.sections.split(","):
        if name in ("trend", "sweep"):
            (trend_section if name == "trend" else sweep_section)(args)
        else:
            sections[name](fps, train, test, args)
    print(json.dumps({"bench": "fidelity", "seconds": round(time.perf_counter() - t0, 1)}))
    print(markdown())


if __name__ == "__main__":
    sys.exit(main())
