"""PTQ cost and QAT training throughput for ResNet-20 (32x32), measured side by side in one run.

- PTQ: wall time of fold BN + PWLQ weights + activation calibration on 512 images, at A4W4.
- QAT: images/s of one training epoch of the A4W4 PACT/DoReFa model vs the same epoch of the
  full-precision model (the same loop, data and seed), each in float32 and under bf16 autocast (a
  recipe's ``autocast: bf16``: the forward passes, the fake quantization included). Goal: QAT >= 0.6x FP.
  Beside it, the same QAT epoch with PACT's backward written as products with bool masks (robquant's
  before it used ReLU's and hardtanh's backward kernels): the speed-up that change measures. The QAT
  models are quantized (PACT's alpha calibrated) before the timing.
Prints one JSON line.

    python benchmarks/bench_quant.py [--device cpu|cuda] [--n 2048] [--repeats 3]
"""

from __future__ import annotations

import json

import torch
from bench_common import cifar_sized, parser, side_by_side

from robquant.models import create_model
from robquant.provenance import cpu_facts, device_name
from robquant.quant import QuantConfig, quantize
from robquant.quant.pact import _PACTFn
from robquant.train import Clean, TrainConfig, fit


def mask_backward(ctx, grad: torch.Tensor):  # PACT's rule as bool-mask products (the earlier code)
    x, alpha = ctx.saved_tensors
    return grad * ((x >= 0) & (x < alpha)), (grad * (x >= alpha)).sum().view_as(alpha), None


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
    bf16 = TrainConfig(epochs=1, batch_size=args.batch, lr=0.01, schedule="cosine", seed=0, autocast="bf16")
    fit(fp, data, Clean(), cfg, device=device)  # gives BN real statistics for PTQ
    fp.eval()
    calib = data.images[:512].float().div(255).to(device)
    ptq_cfg = QuantConfig(method="ptq", precision=args.precision)
    qat_cfg = QuantConfig(method="qat", precision=args.precision)
    ready = {k: [quantize(fp, qat_cfg, calib_images=calib) for _ in range(args.repeats + 1)]
             for k in ("qat", "qat_bf16", "qat_mask")}

    def qat(key: str, config: TrainConfig) -> None:
        fit(ready[key].pop(), data, Clean(), config, device=device)

    def qat_mask() -> None:
        kept = _PACTFn.backward
        _PACTFn.backward = staticmethod(mask_backward)
        try:
            qat("qat_mask", cfg)
        finally:
            _PACTFn.backward = kept

    med = side_by_side({
        "fp": lambda: fit(create_model("resnet20", mean=data.mean, std=data.std).to(device), data, Clean(), cfg,
                          device=device),
        "qat": lambda: qat("qat", cfg),
        "qat_mask": qat_mask,
        "ptq": lambda: quantize(fp, ptq_cfg, calib_images=calib),
        "fp_bf16": lambda: fit(create_model("resnet20", mean=data.mean, std=data.std).to(device), data, Clean(),
                               bf16, device=device),
        "qat_bf16": lambda: qat("qat_bf16", bf16),
    }, device, args.repeats)
    print(json.dumps({"bench": "quant", "device": device_name(device), "precision": args.precision,
                      "ptq_s": round(med["ptq"], 3), "calib_images": len(calib),
                      "fp_img_s": round(args.n / med["fp"], 1), "qat_img_s": round(args.n / med["qat"], 1),
                      "qat_over_fp": round(med["fp"] / med["qat"], 3),
                      "qat_mask_backward_img_s": round(args.n / med["qat_mask"], 1),
                      "speedup_over_mask_backward": round(med["qat_mask"] / med["qat"], 3),
                      "fp_bf16_img_s": round(args.n / med["fp_bf16"], 1),
                      "qat_bf16_img_s": round(args.n / med["qat_bf16"], 1),
                      "qat_over_fp_bf16": round(med["fp_bf16"] / med["qat_bf16"], 3),
                      "bf16_speedup_qat": round(med["qat"] / med["qat_bf16"], 3),
                      "cpu": cpu_facts(), "threads": torch.get_num_threads()}))


if __name__ == "__main__":
    main()
