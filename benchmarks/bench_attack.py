"""Our PGD-20 beside torchattacks PGD-20 on a trained ResNet-20 and the same examples, timed side by side.

Like with like: the examples are test images the model classifies correctly (what an evaluation
attacks), and every attack gets the same batch. Two rows for ours: with the early exit (the
default: each example's best iterate, an example leaves the batch at the first iterate that fools
the model) and without it (``keep_best=False``: every example runs all steps, as torchattacks does);
each beside torchattacks in the same run, with the robust accuracy each reports. Ours attacks a
BN-folded, channels-last copy (the default). The model: ``--model DIR`` (a robquant model folder,
e.g. a cifar10-cpu robust FP model), else a ResNet-20 trained here for ``--epochs`` on the CIFAR copy
in ``.data`` (or on synthetic data without it). Prints one JSON line per row.

    python benchmarks/bench_attack.py [--device cpu|cuda] [--model DIR] [--batch 256] [--repeats 3]
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torchattacks
from bench_common import parser, side_by_side

from robquant import load_model
from robquant.attacks import PGD
from robquant.data import create_dataset
from robquant.models import create_model
from robquant.provenance import device_name
from robquant.train import TrainConfig, create_objective, fit


def trained_model(args, device: torch.device):
    if args.model:
        return load_model(args.model, device), create_dataset("cifar10", args.data_root, "test", allow_unverified=True)
    if (Path(args.data_root) / "cifar-10-batches-py").is_dir():
        train = create_dataset("cifar10", args.data_root, "train", allow_unverified=True).subset(0.1, seed=0)
        test = create_dataset("cifar10", args.data_root, "test", allow_unverified=True)
    else:
        train = create_dataset("synthetic", n_train=5000, image_size=32, channels=3)
        test = create_dataset("synthetic", split="test", image_size=32, channels=3)
    torch.manual_seed(0)
    model = create_model("resnet20", train.num_classes, 3, mean=train.mean, std=train.std).to(device)
    fit(model, train, create_objective("clean"), TrainConfig(epochs=args.epochs, lr=0.1, schedule="cosine"), device=device)
    return model.eval(), test


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--model", default=None, help="a robquant model folder (default: train one here)")
    p.add_argument("--data-root", default=".data")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--eps", type=float, default=8, help="/255")
    args = p.parse_args()
    device = torch.device(args.device)
    model, test = trained_model(args, device)
    x_all, y_all = test.images[:2048].to(device).float() / 255, test.labels[:2048].to(device)
    with torch.no_grad():
        keep = model(x_all).argmax(1) == y_all
    x, y = x_all[keep][: args.batch], y_all[keep][: args.batch]  # correct examples: what an evaluation attacks
    eps = args.eps / 255
    gen = torch.Generator(device=device)
    ta = torchattacks.PGD(model, eps=eps, alpha=eps / 4, steps=args.steps, random_start=True)
    for row, keep_best in (("early exit", True), ("no early exit", False)):
        ours = PGD(model, eps, steps=args.steps, keep_best=keep_best, generator=gen)
        results = {}

        def run(name, attack):
            def go():
                gen.manual_seed(0)
                torch.manual_seed(0)
                x_adv = attack(x, y)
                with torch.no_grad():
                    results[name] = (model(x_adv).argmax(1) == y).double().mean().item()
            return go

        med = side_by_side({"ours": run("ours", ours), "torchattacks": run("torchattacks", ta)}, device, args.repeats)
        print(json.dumps({"bench": "attack", "row": row, "device": device_name(device), "examples": len(y),
                          "clean_accuracy": round(keep.double().mean().item(), 4), "steps": args.steps,
                          "eps_255": args.eps, "ours_s": round(med["ours"], 4),
                          "torchattacks_s": round(med["torchattacks"], 4),
                          "speedup": round(med["torchattacks"] / med["ours"], 3),
                          "ours_robust": round(results["ours"], 4), "torchattacks_robust": round(results["torchattacks"], 4),
                          "threads": torch.get_num_threads()}), flush=True)


if __name__ == "__main__":
    main()
