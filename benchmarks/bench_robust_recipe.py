"""Which single-step adversarial training for the zoo's robust ResNet-20: FGSM-RS or N-FGSM, side by side.

Each recipe trains ResNet-20 on the JPEG copy of CIFAR-10 (all training images less the held-out
check's 1,000) for the same short cosine schedule under bf16 autocast, with the held-out PGD-10
check after every epoch; then clean and PGD-20 accuracy (float32, best iterate, step 2/255) on the
first ``--n-test`` test images, and torchattacks' PGD-20 on the same images as an oracle. Prints a
JSON line per recipe: the per-epoch held-out curve, the test numbers and the wall time.

Needs `.data/cifar-10-batches-py` (bash benchmarks/prepare_cifar.sh); prints "skipped" without it.

    python benchmarks/bench_robust_recipe.py [--epochs 6] [--fraction 1.0] [--recipes fast_adversarial,n_fgsm]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from robquant.evaluation import evaluate
from robquant.data import create_dataset
from robquant.models import create_model
from robquant.provenance import device_name
from robquant.train import HeldOutCheck, TrainConfig, create_objective, fit, seed_everything, split_held_out

EPS = 8 / 255


def torchattacks_pgd20(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    import torchattacks

    attack = torchattacks.PGD(model, eps=EPS, alpha=2 / 255, steps=20, random_start=True)
    right = 0
    for i in range(0, len(x), 250):
        xa = attack(x[i:i + 250], y[i:i + 250])
        with torch.no_grad():
            right += int((model(xa).argmax(1) == y[i:i + 250]).sum())
    return right / len(x)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-root", default=".data")
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--n-test", type=int, default=1000)
    p.add_argument("--fraction", type=float, default=1.0, help="share of the training images (class-stratified)")
    p.add_argument("--recipes", default="fast_adversarial,n_fgsm")
    args = p.parse_args()
    if not (Path(args.data_root) / "cifar-10-batches-py").is_dir():
        print(json.dumps({"bench": "robust_recipe", "skipped": f"no {args.data_root}/cifar-10-batches-py"}))
        return
    data = create_dataset("cifar10", args.data_root, "train", allow_unverified=True)
    if args.fraction < 1.0:
        data = data.subset(args.fraction, seed=0)
    test = create_dataset("cifar10", args.data_root, "test", allow_unverified=True).head(args.n_test)
    check = HeldOutCheck(n=1000, eps=EPS, step_size=2 / 255, steps=10)
    train, held = split_held_out(data, check.n, 0)
    cfg = TrainConfig(epochs=args.epochs, batch_size=128, lr=args.lr, weight_decay=5e-4, schedule="cosine",
                      seed=0, autocast="bf16")
    for name in args.recipes.split(","):
        seed_everything(0)
        model = create_model("resnet20", mean=data.mean, std=data.std)
        t0 = time.perf_counter()
        result = fit(model, train, create_objective(name, eps=EPS), cfg, check=check, held_out=held)
        seconds = time.perf_counter() - t0
        model.eval()
        ev = evaluate(model, test, [("pgd", {"steps": 20, "step_size": 2 / 255})], [EPS])
        x, y = test.images.float() / 255, test.labels
        print(json.dumps({
            "bench": "robust_recipe", "recipe": name, "device": device_name(torch.device("cpu")),
            "epochs": args.epochs, "lr": args.lr, "n_train": len(train), "n_test": len(test),
            "clean": round(ev.clean_accuracy, 4), "pgd20": round(ev.robust_accuracy[("pgd", EPS)], 4),
            "pgd20_torchattacks": round(torchattacks_pgd20(model, x, y), 4),
            "held_out_pgd": [round(h["held_out_pgd"], 3) for h in result.history],
            "held_out_clean": [round(h["held_out_clean"], 3) for h in result.history],
            "best_epoch": result.best_epoch, "stop_reason": result.stop_reason,
            "minutes": round(seconds / 60, 2), "train_img_s": round(result.images / seconds, 1)}), flush=True)


if __name__ == "__main__":
    main()
