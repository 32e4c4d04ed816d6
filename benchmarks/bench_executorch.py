"""ExecuTorch with XNNPACK, fed robquant's own integer model: what it runs as integers, and agreement.

The export graph (:func:`robquant.deploy.export_graph`, the module the ONNX file is traced from) with each
QDQ written as ExecuTorch's ``quantized_decomposed`` ops: activations ``quantize_per_tensor`` /
``dequantize_per_tensor`` with the quantizer's scale and zero point, weights stored as their int8 / uint8
codes and read by ``dequantize_per_channel`` with robquant's per-channel scales (no re-quantization by
ExecuTorch's quantizer). It is exported with ``torch.export``, lowered with the XNNPACK partitioner and
run by ExecuTorch's runtime (batch 8). Printed per model: the nodes XNNPACK took (delegate calls) and the
quantized convolutions and q/dq ops left to ExecuTorch's portable kernels, and top-1 agreement with the
fake-quantized model, clean and on PGD-20 examples crafted on it (seed 0), on all 359 digits test images.

The program is :func:`robquant.deploy.executorch.write_program`'s, the one ``--runtime executorch`` runs.
ExecuTorch is the optional extra ``robquant[executorch]`` (its wheel brings torchao, coremltools and more;
``scripts/setup.sh`` does not install it); in a virtual environment of its own, with robquant's source on the path:

    python -m venv /tmp/et && /tmp/et/bin/pip install torch==2.13.0 executorch==1.5.1 safetensors \\
        pyautoattack==0.2.0 typer rich pydantic pyyaml matplotlib pillow onnx
    PYTHONPATH=src /tmp/et/bin/python benchmarks/bench_executorch.py
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from robquant import load_model
from robquant.attacks import create_attack
from robquant.data import create_dataset, to_unit
from robquant.pipeline import quantize_model, train_model
from robquant.quant import QuantConfig
from robquant.train import TrainConfig




def main() -> None:
    from importlib.metadata import version

    from robquant.deploy.executorch import BATCH, ProgramRunner, write_program

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--epochs", type=int, default=15)
    p.add_argument("--qat-epochs", type=int, default=2)
    p.add_argument("--eps", type=float, default=32, help="PGD budget in /255")
    p.add_argument("--precisions", default="A2W2,A4W4,A8W8")
    args = p.parse_args()
    torch.manual_seed(0)
    root = Path(tempfile.mkdtemp())
    train_model(dataset="digits", model="resnet20", objective="clean", out=root / "fp", model_kwargs={"width": 8},
                train=TrainConfig(epochs=args.epochs, batch_size=64, lr=0.05, weight_decay=5e-4, schedule="cosine"))
    test = create_dataset("digits", split="test")
    n = len(test) - len(test) % BATCH
    x, y = to_unit(test.images)[:n], test.labels[:n]
    rows = []
    for method in ("ptq", "qat"):
        for precision in args.precisions.split(","):
            out = root / f"{method}-{precision}"
            quantize_model(root / "fp", quant=QuantConfig(method=method, precision=precision), out=out,
                           train=TrainConfig(epochs=args.qat_epochs, batch_size=64, lr=0.01, schedule="cosine"))
            model = load_model(out).eval()
            x_adv = create_attack("pgd", model, args.eps / 255, steps=20,
                                  generator=torch.Generator().manual_seed(0))(x, y)
            t0 = time.perf_counter()
            info = write_program(model, out / "model.pte", tuple(x.shape[1:]))
            lower_s = time.perf_counter() - t0
            left = info["left"]
            program = ProgramRunner(out / "model.pte")

            def run(inputs: torch.Tensor) -> torch.Tensor:
                return torch.from_numpy(program(inputs.numpy()))

            with torch.no_grad():
                fake, fake_adv = model(x).argmax(1), model(x_adv).argmax(1)
            on_adv = run(x_adv).argmax(1)
            rows.append({
                "model": f"{method.upper()} {precision}", "n": n,
                "delegated": info["delegated"],
                "convs_left": sum(v for k, v in left.items() if "convolution" in k),
                "qdq_left": sum(v for k, v in left.items() if "quantize_per" in k),
                "clean_agreement": round((run(x).argmax(1) == fake).float().mean().item(), 4),
                "adversarial_agreement": round((on_adv == fake_adv).float().mean().item(), 4),
                "transfer_accuracy": round((on_adv == y).float().mean().item(), 4),
                "pgd_accuracy": round((fake_adv == y).float().mean().item(), 4),
                "lower_s": round(lower_s, 1), "executorch": version("executorch"), "torch": torch.__version__})
            print(json.dumps(rows[-1]), flush=True)
    print("| model | XNNPACK delegate calls | convolutions left to portable kernels | q/dq ops left | agreement clean / "
          "PGD % | transfer accuracy % (fake-quant PGD-20 %) |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['model']} | {r['delegated']} | {r['convs_left']} | {r['qdq_left']} | "
              f"{100 * r['clean_agreement']:.1f} / {100 * r['adversarial_agreement']:.1f} | "
              f"{100 * r['transfer_accuracy']:.1f} ({100 * r['pgd_accuracy']:.1f}) |")


if __name__ == "__main__":
    main()
