"""Our PGD-20 vs torchattacks PGD-20 on the same ResNet-20 and batch, timed side by side.

Prints one JSON line. The ratio (torchattacks time / ours) is what to compare across machines;
absolute times only mean something for the device they were measured on. ``ours`` is the
default (gradients of a BN-folded, channels-last copy); ``ours_unfolded`` follows the model itself.

    python benchmarks/bench_attack.py [--device cpu|cuda] [--batch 128] [--repeats 5]
"""

from __future__ import annotations

import json

import torch
import torchattacks
from bench_common import parser, side_by_side

from robquant.attacks import PGD
from robquant.models import create_model
from robquant.provenance import device_name


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--steps", type=int, default=20)
    args = p.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)
    model = create_model("resnet20", mean=[0.49, 0.48, 0.45], std=[0.25, 0.24, 0.26]).to(device).eval()
    x = torch.rand(args.batch, 3, 32, 32, device=device)
    y = torch.randint(0, 10, (args.batch,), device=device)
    eps = 8 / 255
    attacks = {
        "ours": PGD(model, eps, steps=args.steps),
        "ours_unfolded": PGD(model, eps, steps=args.steps, fold_bn=False),
        "torchattacks": torchattacks.PGD(model, eps=eps, alpha=eps / 4, steps=args.steps, random_start=True),
    }
    med = side_by_side({name: (lambda a=a: a(x, y)) for name, a in attacks.items()}, device, args.repeats)
    print(json.dumps({"bench": "attack", "device": device_name(device), "batch": args.batch,
                      "steps": args.steps, **{f"{k}_s": round(v, 4) for k, v in med.items()},
                      "speedup": round(med["torchattacks"] / med["ours"], 3),
                      "speedup_unfolded": round(med["torchattacks"] / med["ours_unfolded"], 3),
                      "threads": torch.get_num_threads()}))


if __name__ == "__main__":
    main()
