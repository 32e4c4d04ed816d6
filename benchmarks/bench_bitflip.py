"""Bit flips to break: the digits ResNet-20 (non-robust and PGD-trained FP models, the tests' recipes)
quantized by PTQ (PWLQ and uniform weights) and QAT (DoReFa, vanilla fine-tuning) at 2, 4 and 8
weight bits; flips of the stored weights that bring clean accuracy on the first 200 test images to
chance + 1 point, by the progressive bit search and by random flips, over 3 attack batches; with the
time each model's bit-flip evaluation takes.

    python benchmarks/bench_bitflip.py [--epochs 15] [--qat-epochs 2] [--bits 2,4,8] [--repeats 3]
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from bench_common import parser  # noqa: E402
from digits_models import demo_runs  # noqa: E402
from robquant import load_model  # noqa: E402
from robquant.attacks.bitflip import bitflip_evaluation  # noqa: E402
from robquant.data import create_dataset  # noqa: E402
from robquant.pipeline import quantize_model, train_model  # noqa: E402
from robquant.quant import QuantConfig  # noqa: E402
from robquant.train import TrainConfig  # noqa: E402

PIPELINES = (("ptq", "pwlq"), ("ptq", "uniform"), ("qat", "dorefa"))


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--epochs", type=int, default=15)
    p.add_argument("--qat-epochs", type=int, default=2)
    p.add_argument("--bits", default="2,4,8")
    p.add_argument("--n", type=int, default=200)
    args = p.parse_args()
    root = Path(tempfile.mkdtemp())
    test = create_dataset("digits", split="test")
    rows = []
    for init, kwargs in demo_runs(args.epochs):
        train_model(out=root / init, **kwargs)
        for method, quantizer in PIPELINES:
            for bits in map(int, args.bits.split(",")):
                out = root / f"{init}-{method}-{quantizer}-{bits}"
                quantize_model(root / init, quant=QuantConfig(method=method, precision=f"A8W{bits}",
                                                              weight_quantizer=quantizer), out=out,
                               train=TrainConfig(epochs=args.qat_epochs, batch_size=64, lr=0.01, schedule="cosine"))
                t0 = time.perf_counter()
                r = bitflip_evaluation(load_model(out), test, n=args.n, seeds=tuple(range(args.repeats)))
                seconds = time.perf_counter() - t0
                s, rnd = r["summary"]["search"], r["summary"]["random"]
                row = {"init": init, "model": f"{method.upper()} {quantizer} A8W{bits}",
                       "accuracy": r["runs"][0]["accuracy_before"], "target": round(r["target"], 3),
                       "search": s["flips"], "search_mean": s["mean"], "search_ci95": s["ci95"],
                       "random": rnd["flips"], "random_cap": rnd["cap"], "seconds": round(seconds, 1),
                       "escalated": sum(run.get("escalated", 0) for run in r["runs"] if run["method"] == "search")}
                rows.append(row)
                print(json.dumps(row), flush=True)
    print("\n| FP init | model | clean % | search: flips per batch | mean [95 %] | random: flips per batch | s |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        ci = "" if r["search_ci95"] is None else f" [{max(r['search_ci95'][0], 0):.1f}, {r['search_ci95'][1]:.1f}]"
        mean = "-" if r["search_mean"] is None else f"{r['search_mean']:.1f}{ci}"
        fmt = ", ".join(">" + str(r["random_cap"]) if f is None else str(f) for f in r["random"])
        print(f"| {r['init']} | {r['model']} | {100 * r['accuracy']:.1f} | "
              f"{', '.join('>100' if f is None else str(f) for f in r['search'])} | {mean} | {fmt} | {r['seconds']} |")


if __name__ == "__main__":
    main()
