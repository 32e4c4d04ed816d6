"""Our PGD-20 vs torchattacks PGD-20 on the same ResNet-20 and batch, timed side by side.

Prints one JSON line. The ratio (torchattacks time / ours) is what to compare across machines;
absolute times only mean something for the device they were measured on.

    python benchmarks/bench_attack.py [--device cpu|cuda] [--batch 128] [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
import torchattacks

from robquant.attacks import PGD
from robquant.models import create_model
from robquant.provenance import device_name


def _time(fn, device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)
    model = create_model("resnet20", mean=[0.49, 0.48, 0.45], std=[0.25, 0.24, 0.26]).to(device).eval()
    x = torch.rand(args.batch, 3, 32, 32, device=device)
    y = torch.randint(0, 10, (args.batch,), device=device)
    eps = 8 / 255
    attacks = {
        "ours": PGD(model, eps, steps=args.steps),  # the default: gradients of a BN-folded copy
        "ours_unfolded": PGD(model, eps, steps=args.steps, fold_bn=False),
        "torchattacks": torchattacks.PGD(model, eps=eps, alpha=eps / 4, steps=args.steps, random_start=True),
    }
    for attack in attacks.values():  # warm-up
        attack(x, y)
    times: dict[str, list[float]] = {name: [] for name in attacks}
    for _ in range(args.repeats):  # interleaved, so drifts in machine load hit all alike
        for name, attack in attacks.items():
            times[name].append(_time(lambda: attack(x, y), device))
    med = {name: statistics.median(t) for name, t in times.items()}
    print(json.dumps({"bench": "attack", "device": device_name(device), "batch": args.batch,
                      "steps": args.steps, **{f"{k}_s": round(v, 4) for k, v in med.items()},
                      "speedup": round(med["torchattacks"] / med["ours"], 3),
                      "speedup_unfolded": round(med["torchattacks"] / med["ours_unfolded"], 3),
                      "threads": torch.get_num_threads()}))


if __name__ == "__main__":
    main()
