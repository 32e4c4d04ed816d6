"""Export and runtime agreement: digits ResNet-20 models at PTQ and QAT precisions, exported to ONNX
(QDQ) and run on ONNX Runtime; top-1 agreement with the fake-quantized model on every test image,
clean and on PGD examples crafted on the fake-quantized model; export time and file size.

    python benchmarks/bench_deploy.py [--epochs 15] [--qat-epochs 2] [--eps 32]
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import torch

from bench_common import parser
from robquant import load_model
from robquant.attacks import create_attack
from robquant.data import create_dataset
from robquant.deploy import RuntimeModel, export_onnx
from robquant.pipeline import quantize_model, train_model
from robquant.quant import QuantConfig
from robquant.train import TrainConfig


def top1(model, x, batch=512):
    with torch.no_grad():
        return torch.cat([model(x[i:i + batch]).argmax(1) for i in range(0, len(x), batch)])


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--epochs", type=int, default=15)
    p.add_argument("--qat-epochs", type=int, default=2)
    p.add_argument("--eps", type=float, default=32, help="PGD budget in /255 (digits' coarse grey levels)")
    p.add_argument("--precisions", default="A2W2,A4W4,A8W8")
    args = p.parse_args()
    root = Path(tempfile.mkdtemp())
    train_model(dataset="digits", model="resnet20", objective="clean", out=root / "fp", model_kwargs={"width": 8},
                train=TrainConfig(epochs=args.epochs, batch_size=64, lr=0.05, weight_decay=5e-4, schedule="cosine"))
    test = create_dataset("digits", split="test")
    x, y = test.images.float() / 255, test.labels
    rows = []
    for method in ("ptq", "qat"):
        for precision in args.precisions.split(","):
            out = root / f"{method}-{precision}"
            quantize_model(root / "fp", quant=QuantConfig(method=method, precision=precision), out=out,
                           train=TrainConfig(epochs=args.qat_epochs, batch_size=64, lr=0.01, schedule="cosine"))
            model = load_model(out)
            t0 = time.perf_counter()
            info = export_onnx(model, out / "model.onnx", (test.in_channels, *test.image_size))
            export_s = time.perf_counter() - t0
            runtime = RuntimeModel(out / "model.onnx")
            x_adv = create_attack("pgd", model, args.eps / 255, steps=20)(x, y)
            fake, fake_adv = top1(model, x), top1(model, x_adv)
            rows.append({
                "model": f"{method.upper()} {precision}", "n": len(y),
                "accuracy": round((fake == y).float().mean().item(), 4),
                "pgd_accuracy": round((fake_adv == y).float().mean().item(), 4),
                "clean_agreement": round((top1(runtime, x) == fake).float().mean().item(), 4),
                "adversarial_agreement": round((top1(runtime, x_adv) == fake_adv).float().mean().item(), 4),
                "export_s": round(export_s, 3), "kib": round(info.bytes / 1024),
                "branches": max(info.layers.values()),
            })
            print(json.dumps(rows[-1]), flush=True)
    print(f"{'model':10} {'acc':>6} {'pgd':>6} {'agree clean':>12} {'agree adv':>10} {'export s':>9} {'KiB':>5} "
          f"{'branches':>8}")
    for r in rows:
        print(f"{r['model']:10} {100 * r['accuracy']:6.1f} {100 * r['pgd_accuracy']:6.1f} "
              f"{100 * r['clean_agreement']:12.1f} {100 * r['adversarial_agreement']:10.1f} {r['export_s']:9.2f} "
              f"{r['kib']:5d} {r['branches']:8d}")


if __name__ == "__main__":
    main()
