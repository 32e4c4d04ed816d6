"""AutoAttack (standard) through our registry vs a direct call of pyautoattack, timed side by side.

Same ResNet-20, same examples, same seed. Labels are the model's own predictions, so every example
is attacked. Prints one JSON line with seconds per example and the ratio direct / ours (>= 0.95
means our wrapper adds no cost). ``ours`` follows the gradients of the BN-folded view (the default);
``ours_unfolded`` the model itself, which isolates the wrapper's own overhead.

    python benchmarks/bench_autoattack.py [--device cpu|cuda] [--n 8] [--repeats 1]
"""

from __future__ import annotations

import json
import logging

import torch
from bench_common import parser, side_by_side
from pyautoattack import AutoAttack as PackageAutoAttack

from robquant.attacks import create_attack
from robquant.models import create_model
from robquant.provenance import device_name


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--n", type=int, default=8, help="examples")
    p.add_argument("--eps", type=float, default=8.0, help="/255")
    p.set_defaults(repeats=1)
    args = p.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)
    model = create_model("resnet20", mean=[0.49, 0.48, 0.45], std=[0.25, 0.24, 0.26]).to(device).eval()
    x = torch.rand(args.n, 3, 32, 32, device=device)
    with torch.no_grad():
        y = model(x).argmax(1)
    eps = args.eps / 255
    logging.getLogger("auto-attack").setLevel(logging.ERROR)

    def direct() -> torch.Tensor:
        adversary = PackageAutoAttack(model, norm="Linf", eps=eps, version="standard", seed=0, device=device)
        adversary.verbose = False
        return adversary.run_standard_evaluation(x, y, batch_size=len(x))[0]

    ours = create_attack("autoattack", model, eps, seed=0)
    unfolded = create_attack("autoattack", model, eps, seed=0, fold_bn=False)
    med = side_by_side({"direct": direct, "ours": lambda: ours(x, y), "ours_unfolded": lambda: unfolded(x, y)},
                       device, args.repeats)
    with torch.no_grad():
        robust = {name: float((model(fn()).argmax(1) == y).float().mean())
                  for name, fn in (("direct", direct), ("ours", lambda: ours(x, y)))}
    print(json.dumps({"bench": "autoattack", "device": device_name(device), "n": args.n, "eps_255": args.eps,
                      "s_per_example": {k: v / args.n for k, v in med.items()},
                      "ratio_direct_over_ours": med["direct"] / med["ours"],
                      "ratio_direct_over_ours_unfolded": med["direct"] / med["ours_unfolded"],
                      "robust_accuracy": robust}))


if __name__ == "__main__":
    main()
