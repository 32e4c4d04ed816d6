"""PTQ cost and QAT training throughput for ResNet-20 (32x32), measured side by side in one run.

- PTQ: wall time of fold BN + PWLQ weights + activation calibration on 512 images, at A4W4.
- QAT: images/s of one training epoch of the A4W4 PACT/DoReFa model vs the same epoch of the
  full-precision model (the same loop, data and seed). Goal: QAT >= 0.6x FP.
Prints one JSON line.

    python benchmarks/bench_quant.py [--device cpu|cuda] [--n 2048] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from robquant.data import Augment, create_dataset
from robquant.models import create_model
from robquant.provenance import device_name
from robquant.quant import QuantConfig, quantize
from robquant.train import Clean, TrainConfig, fit


def _timed(fn, device: torch.device) -> float:
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
    parser.add_argument("--n", type=int, default=2048, help="training images per epoch")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--precision", default="A4W4")
    args = parser.parse_args()
    device = torch.device(args.device)
    data = create_dataset("synthetic", n_train=args.n, image_size=32, channels=3)
    data.augment = Augment(crop_pad=4, flip=True)
    torch.manual_seed(0)
    fp = create_model("resnet20", mean=data.mean, std=data.std).to(device)
    cfg = TrainConfig(epochs=1, batch_size=args.batch, lr=0.01, schedule="cosine", seed=0)
    fit(fp, data, Clean(), TrainConfig(epochs=1, batch_size=args.batch, lr=0.01), device=device)  # BN statistics
    fp.eval()
    calib = data.images[:512].float().div(255).to(device)
    ptq_cfg = QuantConfig(method="ptq", precision=args.precision)
    qat_cfg = QuantConfig(method="qat", precision=args.precision)

    def run_fp() -> None:
        fit(create_model("resnet20", mean=data.mean, std=data.std).to(device), data, Clean(), cfg, device=device)

    def run_qat() -> None:
        fit(quantize(fp, qat_cfg), data, Clean(), cfg, device=device)

    run_fp(), run_qat(), quantize(fp, ptq_cfg, calib_images=calib)  # warm-up
    t_fp, t_qat, t_ptq = [], [], []
    for _ in range(args.repeats):  # interleaved
        t_fp.append(_timed(run_fp, device))
        t_qat.append(_timed(run_qat, device))
        t_ptq.append(_timed(lambda: quantize(fp, ptq_cfg, calib_images=calib), device))
    mf, mq = statistics.median(t_fp), statistics.median(t_qat)
    print(json.dumps({"bench": "quant", "device": device_name(device), "precision": args.precision,
                      "ptq_s": round(statistics.median(t_ptq), 3), "calib_images": len(calib),
                      "fp_img_s": round(args.n / mf, 1), "qat_img_s": round(args.n / mq, 1),
                      "qat_over_fp": round(mf / mq, 3), "threads": torch.get_num_threads()}))


if __name__ == "__main__":
    main()
