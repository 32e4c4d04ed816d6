"""PTQ cost and QAT training throughput for ResNet-20 (32x32), measured side by side in one run.

- PTQ: wall time of fold BN + PWLQ weights + activation calibration on 512 images, at A4W4.
- QAT: images/s of one training epoch of the A4W4 PACT/DoReFa model vs the same epoch of the
  full-precision model (the same loop, data and seed). Goal: QAT >= 0.6x FP.
Prints one JSON line.

    python benchmarks/bench_quant.py [--device cpu|cuda] [--n 2048] [--repeats 3]
"""

from __future__ import annotations

import json

import torch
from bench_common import cifar_sized, parser, side_by_side

from robquant.models import create_model
from robquant.provenance import device_name
from robquant.quant import QuantConfig, quantize
from robquant.train import Clean, TrainConfig, fit


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--n", type=int, default=2048, help="training images per epoch")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--precision", default="A4W4")
    args = p.parse_args()
    device = torch.device(args.device)
    data = cifar_sized(args.n)
    torch.manual_seed(0)
    fp = create_model("resnet20", mean=data.mean, std=data.std).to(device)
    cfg = TrainConfig(epochs=1, batch_size=args.batch, lr=0.01, schedule="cosine", seed=0)
    fit(fp, data, Clean(), cfg, device=device)  # gives BN real statistics for PTQ
    fp.eval()
    calib = data.images[:512].float().div(255).to(device)
    ptq_cfg = QuantConfig(method="ptq", precision=args.precision)
    qat_cfg = QuantConfig(method="qat", precision=args.precision)
    med = side_by_side({
        "fp": lambda: fit(create_model("resnet20", mean=data.mean, std=data.std).to(device), data, Clean(), cfg,
                          device=device),
        "qat": lambda: fit(quantize(fp, qat_cfg), data, Clean(), cfg, device=device),
        "ptq": lambda: quantize(fp, ptq_cfg, calib_images=calib),
    }, device, args.repeats)
    print(json.dumps({"bench": "quant", "device": device_name(device), "precision": args.precision,
                      "ptq_s": round(med["ptq"], 3), "calib_images": len(calib),
                      "fp_img_s": round(args.n / med["fp"], 1), "qat_img_s": round(args.n / med["qat"], 1),
                      "qat_over_fp": round(med["fp"] / med["qat"], 3), "threads": torch.get_num_threads()}))


if __name__ == "__main__":
    main()
