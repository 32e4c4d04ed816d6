"""ResNet-20 on the local JPEG copy of CIFAR-10: a short clean schedule; clean accuracy, images/s,
and the accuracy change of A8W8 and A4W4 post-training quantization (PWLQ) of that model.

Needs `.data/cifar-10-batches-py` (run `bash benchmarks/prepare_cifar.sh` first); prints a JSON
line with "skipped" when it is absent. The copy is re-encoded JPEG, not the official release, so
accuracies run a little below the official data's and its use is recorded as unverified.

    python benchmarks/bench_cifar_short.py [--epochs 5] [--fraction 0.2] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import torch

from robquant.pipeline import quantize_model, train_model
from robquant.quant import QuantConfig
from robquant.provenance import device_name
from robquant.train import TrainConfig


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", default=".data")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--fraction", type=float, default=0.2)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--n-test", type=int, default=None)
    parser.add_argument("--out", default=None, help="keep the models here (default: a temporary folder)")
    parser.add_argument("--ptq", default="A8W8,A4W4", help="PTQ precisions to try on the trained model ('' for none)")
    args = parser.parse_args()
    if not (Path(args.data_root) / "cifar-10-batches-py").is_dir():
        print(json.dumps({"bench": "cifar_short", "skipped": f"no {args.data_root}/cifar-10-batches-py; "
                          "run benchmarks/prepare_cifar.sh"}))
        return
    device = torch.device(args.device)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.out or tmp)
        record = train_model(dataset="cifar10", model="resnet20", objective="clean",
                             train=TrainConfig(epochs=args.epochs, batch_size=args.batch, lr=args.lr,
                                               weight_decay=5e-4, schedule="cosine", seed=0),
                             out=root / "fp", fraction=args.fraction, data_root=args.data_root,
                             device=device, allow_unverified=True, n_test=args.n_test)
        ptq = {}
        for precision in [p for p in args.ptq.split(",") if p]:
            q = quantize_model(root / "fp", quant=QuantConfig(method="ptq", precision=precision),
                               out=root / precision, fraction=args.fraction, data_root=args.data_root,
                               allow_unverified=True, device=device, n_test=args.n_test)
            ptq[precision] = {"clean_accuracy": round(q["metrics"]["clean_accuracy"], 4),
                              "delta": round(q["metrics"]["clean_accuracy"] - record["metrics"]["clean_accuracy"], 4),
                              "seconds": round(q["timings"]["total_s"], 2)}
    images = record["train"]["images"]
    print(json.dumps({
        "bench": "cifar_short", "device": device_name(device), "epochs": args.epochs,
        "fraction": args.fraction, "n_train": record["data"]["n_train"], "n_test": record["metrics"]["n_test"],
        "clean_accuracy": round(record["metrics"]["clean_accuracy"], 4),
        "train_img_s": round(images / record["timings"]["train_s"], 1),
        "data_verified": record["data"]["verified"], "status": record["status"], "ptq": ptq}))


if __name__ == "__main__":
    sys.exit(main())
