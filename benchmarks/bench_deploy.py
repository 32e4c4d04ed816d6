"""Export and runtime agreement: digits ResNet-20 models at PTQ and QAT precisions, exported to ONNX
(QDQ) and run on every runtime installed (ONNX Runtime, OpenVINO; each as it ships); top-1 agreement
with the fake-quantized model on every test image, clean and on PGD examples crafted on the
fake-quantized model (the same examples for every runtime), and each runtime's accuracy on those
transferred examples; export time and file size.

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
from robquant.deploy import RUNTIMES, export_onnx, load_runtime
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
    runtimes = [r for r in RUNTIMES if _installed(r)]
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
            x_adv = create_attack("pgd", model, args.eps / 255, steps=20,
                                  generator=torch.Generator().manual_seed(0))(x, y)
            fake, fake_adv = top1(model, x), top1(model, x_adv)
            row = {"model": f"{method.upper()} {precision}", "n": len(y),
                   "accuracy": round((fake == y).float().mean().item(), 4),
                   "pgd_accuracy": round((fake_adv == y).float().mean().item(), 4),
                   "export_s": round(export_s, 3), "kib": round(info.bytes / 1024),
                   "branches": max(info.layers.values())}
            for name in runtimes:
                runtime = load_runtime(name, out / "model.onnx")
                on_adv = top1(runtime, x_adv)
                row[name] = {"clean_agreement": round((top1(runtime, x) == fake).float().mean().item(), 4),
                             "adversarial_agreement": round((on_adv == fake_adv).float().mean().item(), 4),
                             "transfer_accuracy": round((on_adv == y).float().mean().item(), 4),
                             "version": runtime.version, "settings": runtime.settings}
            rows.append(row)
            print(json.dumps(rows[-1]), flush=True)
    head = "".join(f" | {n}: agree clean | agree adv | transfer acc" for n in runtimes)
    print(f"| model | acc | pgd (fake-quant){head} | export s | KiB | branches |")
    print("|---" * (6 + 3 * len(runtimes)) + "|")
    for r in rows:
        cells = "".join(f" | {100 * r[n]['clean_agreement']:.1f} | {100 * r[n]['adversarial_agreement']:.1f} | "
                        f"{100 * r[n]['transfer_accuracy']:.1f}" for n in runtimes)
        print(f"| {r['model']} | {100 * r['accuracy']:.1f} | {100 * r['pgd_accuracy']:.1f}{cells} | {r['export_s']:.2f} | "
              f"{r['kib']} | {r['branches']} |")


def _installed(name: str) -> bool:
    try:
        __import__(name)
    except ImportError:
        return False
    return True


if __name__ == "__main__":
    main()
