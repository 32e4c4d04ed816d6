"""Training-epoch throughput of robquant's loop vs a bare forward/backward loop over ready tensors.

Both train the same ResNet-20 with the same SGD settings in one run; the bare loop iterates over
pre-made, pre-augmented batches already on the device, so the ratio measures what our data path
(device-side shuffling, crop and flip), schedule and bookkeeping cost. Prints one JSON line.

    python benchmarks/bench_train.py [--device cpu|cuda] [--n 2048] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
import torch.nn.functional as F

from robquant.data import Augment, DeviceLoader, create_dataset
from robquant.models import create_model
from robquant.provenance import device_name
from robquant.train import Clean, TrainConfig, fit


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--n", type=int, default=2048, help="training images per epoch")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    device = torch.device(args.device)
    data = create_dataset("synthetic", n_train=args.n, image_size=32, channels=3)
    data.augment = Augment(crop_pad=4, flip=True)
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

    ours(), bare()  # warm-up
    t_ours, t_bare = [], []
    for _ in range(args.repeats):
        for fn, times in ((ours, t_ours), (bare, t_bare)):
            _sync(device)
            t0 = time.perf_counter()
            fn()
            _sync(device)
            times.append(time.perf_counter() - t0)
    mo, mb = statistics.median(t_ours), statistics.median(t_bare)
    print(json.dumps({"bench": "train", "device": device_name(device), "n": args.n, "batch": args.batch,
                      "ours_img_s": round(args.n / mo, 1), "bare_img_s": round(args.n / mb, 1),
                      "ratio": round(mb / mo, 3), "threads": torch.get_num_threads()}))


if __name__ == "__main__":
    main()
