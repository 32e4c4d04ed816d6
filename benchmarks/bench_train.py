"""Training throughput of robquant's `fit` beside an independent bare channels-last loop.

The bare loop shares no code with robquant's models or training: its own ResNet-20
(`bare_resnet.py`), channels-last, iterating over batches made (and augmented) once before the
timing, plain SGD; for PGD-7 its own Madry attack (eval-mode BN while generating, as robquant's
default). `fit` runs robquant's ResNet-20 through its whole path (device-side shuffling, crop and flip,
the schedule, bookkeeping). All are timed side by side in one run, interleaved, for clean, N-FGSM and
PGD-7 adversarial training, each in float32 and under bf16 autocast (the training forward passes; a
recipe's ``autocast: bf16``). Goal (issue 18): ratio = bare time / ours >= 0.9. Prints one JSON line per
objective with images/s of each, the bf16 speed-up of each loop (float32 time / bf16 time) and the CPU
as PyTorch sees it (kernel level, bf16 units).

    python benchmarks/bench_train.py [--device cpu|cuda] [--n 2048] [--repeats 3] [--objectives clean,n_fgsm,pgd_at]
"""

from __future__ import annotations

import json
from typing import Callable

import torch
import torch.nn.functional as F
from bare_resnet import BareResNet20, pgd_linf
from bench_common import cifar_sized, parser, side_by_side

from robquant.data import DeviceLoader
from robquant.models import create_model
from robquant.provenance import cpu_facts, device_name
from robquant.train import TrainConfig, create_objective, fit

EPS, STEP, STEPS = 8 / 255, 2 / 255, 7


def bare_epoch(batches: list[tuple[torch.Tensor, torch.Tensor]], data, device: torch.device, objective: str,
               bf16: bool = False) -> None:
    torch.manual_seed(0)
    net = BareResNet20(data.mean, data.std).to(device).to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    gen = torch.Generator(device=device).manual_seed(0)
    for x, y in batches:
        with torch.autocast(device.type, torch.bfloat16, enabled=bf16):
            if objective == "pgd_at":
                net.eval()
                x = pgd_linf(net, x, y, EPS, STEP, STEPS, gen)
                net.train()
            elif objective == "n_fgsm":  # noise U(-2 eps, 2 eps), one step of eps, unprojected
                start = (x + torch.empty_like(x).uniform_(-2 * EPS, 2 * EPS, generator=gen)).clamp(0, 1)
                start.requires_grad_(True)
                (g,) = torch.autograd.grad(F.cross_entropy(net(start), y), start)
                x = (start.detach() + EPS * g.sign()).clamp(0, 1)
            loss = F.cross_entropy(net(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--n", type=int, default=2048, help="training images per epoch")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--objectives", default="clean,n_fgsm,pgd_at")
    args = p.parse_args()
    device = torch.device(args.device)
    data = cifar_sized(args.n)
    cfg = {ac: TrainConfig(epochs=1, batch_size=args.batch, lr=0.1, schedule="multistep", seed=0, autocast=ac)
           for ac in (None, "bf16")}
    # the bare loop's batches: made (and augmented) once, outside the timing, channels-last
    batches = [(x.contiguous(memory_format=torch.channels_last), y)
               for x, y in DeviceLoader(data, args.batch, device, shuffle=True, augment=data.augment).epoch(0)]
    for name in args.objectives.split(","):
        options = {"pgd_at": {"eps": EPS, "step_size": STEP, "steps": STEPS}, "n_fgsm": {"eps": EPS}}.get(name, {})
        objective = create_objective(name, **options)

        def ours(autocast: str | None) -> Callable[[], None]:
            def run() -> None:
                torch.manual_seed(0)
                fit(create_model("resnet20", mean=data.mean, std=data.std).to(device), data, objective, cfg[autocast],
                    device=device)
            return run

        def bare(bf16: bool) -> Callable[[], None]:
            return lambda: bare_epoch(batches, data, device, name, bf16)

        med = side_by_side({"ours": ours(None), "bare": bare(False), "ours_bf16": ours("bf16"),
                            "bare_bf16": bare(True)}, device, args.repeats)
        print(json.dumps({"bench": "train", "objective": name, "device": device_name(device), "n": args.n,
                          "batch": args.batch, **{f"{k}_img_s": round(args.n / v, 1) for k, v in med.items()},
                          "ratio": round(med["bare"] / med["ours"], 3),
                          "ratio_bf16": round(med["bare_bf16"] / med["ours_bf16"], 3),
                          "bf16_speedup_ours": round(med["ours"] / med["ours_bf16"], 3),
                          "bf16_speedup_bare": round(med["bare"] / med["bare_bf16"], 3),
                          "cpu": cpu_facts()}), flush=True)


if __name__ == "__main__":
    main()
