"""Pixel-valid PGD at small budgets: the one-grey-level step beside the old eps/4 step, side by side.

On the first ``--n`` CIFAR-10 test images (the JPEG copy under ``--data-root``), per budget: clean
accuracy, the accuracy on the attack's random start alone (on the grid), and PGD-20 with
``pixel_grid`` at ``min_step_levels`` 0 (the step eps / 4, under half a grey level for eps <= 2/255:
rounding sends each iterate back) and 1 (at least one level, the default); with the share of pixels
each leaves moved. Prints one JSON line.

    python benchmarks/bench_pixel_grid.py --model zoo:resnet20-cifar10 [--eps 1,2] [--n 500]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from robquant import load_model
from robquant.attacks import create_attack
from robquant.data import create_dataset


def accuracy(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return float((model(x).argmax(1) == y).float().mean())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True, help="a model folder or zoo:NAME (CIFAR-10)")
    p.add_argument("--data-root", default=".data")
    p.add_argument("--eps", default="1,2", help="budgets in /255")
    p.add_argument("--n", type=int, default=500)
    args = p.parse_args()
    if not (Path(args.data_root) / "cifar-10-batches-py").is_dir():
        print(json.dumps({"bench": "pixel_grid", "skipped": f"no {args.data_root}/cifar-10-batches-py"}))
        return
    model = load_model(args.model).eval()
    test = create_dataset("cifar10", args.data_root, "test", allow_unverified=True).head(args.n)
    x, y = test.images.float() / 255, test.labels
    out: dict[str, object] = {"bench": "pixel_grid", "model": args.model, "n": len(y), "clean": accuracy(model, x, y)}
    for e in map(float, args.eps.split(",")):
        eps = e / 255
        g = torch.Generator().manual_seed(0)
        start = torch.round((x + (torch.rand(x.shape, generator=g) * 2 - 1) * eps) * 255) / 255
        start = torch.minimum(torch.maximum(start, x - eps), x + eps).clamp(0, 1)
        row: dict[str, object] = {"random_start": accuracy(model, start, y)}
        for levels in (0, 1):
            attack = create_attack("pgd", model, eps, steps=20, pixel_grid=True, min_step_levels=levels,
                                   generator=torch.Generator().manual_seed(0))
            xa = torch.cat([attack(x[i:i + 250], y[i:i + 250]) for i in range(0, len(x), 250)])
            row[f"pgd20_min_step_levels_{levels}"] = accuracy(model, xa, y)
            row[f"moved_min_step_levels_{levels}"] = round(float(((xa - x).abs() > 1e-6).float().mean()), 3)
        out[f"{e:g}/255"] = row
    print(json.dumps(out))


if __name__ == "__main__":
    main()
