"""Training-epoch throughput of robquant's loop vs a bare forward/backward loop over ready tensors.

Both train the same ResNet-20 with the same SGD settings in one run; the bare loop iterates over
pre-made, pre-augmented batches already on the device, so the ratio measures what our data path
(device-side shuffling, crop and flip), schedule and bookkeeping cost. Goal: ratio >= 0.9.
Prints one JSON line.

    python benchmarks/bench_train.py [--device cpu|cuda] [--n 2048] [--repeats 3]
"""

from __future__ import annotations

import json

import torch
import torch.nn.functional as F
from bench_common import cifar_sized, parser, side_by_side

from robquant.data import DeviceLoader
from robquant.models import create_model
from robquant.provenance import device_name
from robquant.train import Clean, TrainConfig, fit


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--n", type=int, default=2048, help="training images per epoch")
    p.add_argument("--batch", type=int, default=128)
    args = p.parse_args()
    device = torch.device(args.device)
    data = cifar_sized(args.n)
    cfg = TrainConfig(epochs=1, batch_size=args.batch, lr=0.1, schedule="multistep", seed=0)
    # the bare loop's batches: made (and augmented) once, outside the timing
    batches = list(DeviceLoader(data, args.batch, device, shuffle=True, augment=data.augment).epoch(0))

    def model():
        torch.manual_seed(0)
        return create_model("resnet20", mean=data.mean, std=data.std).to(device)

    def ours() -> None:
        fit(model(), data, Clean(), cfg, device=device)

    def bare() -> None:
        net = model().train()
        opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
        for x, y in batches:
            loss = F.cross_entropy(net(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

    med = side_by_side({"ours": ours, "bare": bare}, device, args.repeats)
    print(json.dumps({"bench": "train", "device": device_name(device), "n": args.n, "batch": args.batch,
                      "ours_img_s": round(args.n / med["ours"], 1), "bare_img_s": round(args.n / med["bare"], 1),
                      "ratio": round(med["bare"] / med["ours"], 3), "threads": torch.get_num_threads()}))


if __name__ == "__main__":
    main()
