"""Training throughput of robquant's `fit` beside an independent bare channels-last loop.

The bare loop shares no code with robquant's models or training: its own ResNet-20
(`bare_resnet.py`), channels-last, iterating over batches made (and augmented) once before the
timing, plain SGD; for PGD-7 its own Madry attack (eval-mode BN while generating, as robquant's
default). `fit` runs robquant's ResNet-20 through its whole path (device-side shuffling, crop and flip,
the schedule, bookkeeping). Both are timed side by side in one run, interleaved, for clean and PGD-7
adversarial training. Goal (issue 18): ratio = bare time / ours >= 0.9 for both. Prints one JSON line
per objective.

    python benchmarks/bench_train.py [--device cpu|cuda] [--n 2048] [--repeats 3]
"""

from __future__ import annotations

import json

import torch
import torch.nn.functional as F
from bare_resnet import BareResNet20, pgd_linf
from bench_common import cifar_sized, parser, side_by_side

from robquant.data import DeviceLoader
from robquant.models import create_model
from robquant.provenance import device_name
from robquant.train import TrainConfig, create_objective, fit

EPS, STEP, STEPS = 8 / 255, 2 / 255, 7


def bare_epoch(batches: list[tuple[torch.Tensor, torch.Tensor]], data, device: torch.device, adversarial: bool) -> None:
    torch.manual_seed(0)
    net = BareResNet20(data.mean, data.std).to(device).to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    gen = torch.Generator(device=device).manual_seed(0)
    for x, y in batches:
        if adversarial:
            net.eval()
            x = pgd_linf(net, x, y, EPS, STEP, STEPS, gen)
            net.train()
        loss = F.cross_entropy(net(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--n", type=int, default=2048, help="training images per epoch")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--objectives", default="clean,pgd_at")
    args = p.parse_args()
    device = torch.device(args.device)
    data = cifar_sized(args.n)
    cfg = TrainConfig(epochs=1, batch_size=args.batch, lr=0.1, schedule="multistep", seed=0)
    # the bare loop's batches: made (and augmented) once, outside the timing, channels-last
    batches = [(x.contiguous(memory_format=torch.channels_last), y)
               for x, y in DeviceLoader(data, args.batch, device, shuffle=True, augment=data.augment).epoch(0)]
    for name in args.objectives.split(","):
        adversarial = name == "pgd_at"
        objective = create_objective(name, **({"eps": EPS, "step_size": STEP, "steps": STEPS} if adversarial else {}))

        def ours() -> None:
            torch.manual_seed(0)
            fit(create_model("resnet20", mean=data.mean, std=data.std).to(device), data, objective, cfg, device=device)

        med = side_by_side({"ours": ours, "bare": lambda: bare_epoch(batches, data, device, adversarial)}, device,
                           args.repeats)
        print(json.dumps({"bench": "train", "objective": name, "device": device_name(device), "n": args.n,
                          "batch": args.batch, "ours_img_s": round(args.n / med["ours"], 1),
                          "bare_img_s": round(args.n / med["bare"], 1), "ratio": round(med["bare"] / med["ours"], 3),
                          "threads": torch.get_num_threads()}), flush=True)


if __name__ == "__main__":
    main()
