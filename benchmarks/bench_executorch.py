"""ExecuTorch with XNNPACK, fed robquant's own integer model: what it runs as integers, and agreement.

The export graph (:func:`robquant.deploy.export_graph`, the module the ONNX file is traced from) with each
QDQ written as ExecuTorch's ``quantized_decomposed`` ops: activations ``quantize_per_tensor`` /
``dequantize_per_tensor`` with the quantizer's scale and zero point, weights stored as their int8 / uint8
codes and read by ``dequantize_per_channel`` with robquant's per-channel scales (no re-quantization by
ExecuTorch's quantizer). It is exported with ``torch.export``, lowered with the XNNPACK partitioner and
run by ExecuTorch's runtime (batch 8). Printed per model: the nodes XNNPACK took (delegate calls) and the
quantized convolutions and q/dq ops left to ExecuTorch's portable kernels, and top-1 agreement with the
fake-quantized model, clean and on PGD-20 examples crafted on it (seed 0), on all 359 digits test images.

ExecuTorch is not one of robquant's extras (its wheel wants numpy >= 2, torchao 0.18, coremltools and
more); run this in a virtual environment of its own, with robquant's source on the path:

    python -m venv /tmp/et && /tmp/et/bin/pip install torch==2.13.0 executorch==1.5.1 safetensors \\
        pyautoattack==0.2.0 typer rich pydantic pyyaml matplotlib pillow
    PYTHONPATH=src /tmp/et/bin/python benchmarks/bench_executorch.py
"""

from __future__ import annotations

import argparse
import collections
import json
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

from robquant import load_model
from robquant.attacks import create_attack
from robquant.data import create_dataset, to_unit
from robquant.deploy.export import QDQAct, QDQLayer, export_graph
from robquant.pipeline import quantize_model, train_model
from robquant.quant import QuantConfig
from robquant.train import TrainConfig

BATCH = 8


class ETAct(nn.Module):
    """An activation quantizer (:class:`QDQAct`) as quantize/dequantize per tensor."""

    def __init__(self, qdq: QDQAct) -> None:
        super().__init__()
        self.qdq = qdq
        self.dtype = torch.uint8 if qdq.range[0] == 0 else torch.int8

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ops, q = torch.ops.quantized_decomposed, self.qdq
        if q.grid.relu and q.lo < 0:
            x = torch.relu(x)
        x = torch.clamp(x, q.lo, q.hi)
        args = (float(q.grid.scale), int(q.grid.zero_point), *q.range, self.dtype)
        return ops.dequantize_per_tensor(ops.quantize_per_tensor(x, *args), *args)


class ETLayer(nn.Module):
    """A quantized layer (:class:`QDQLayer`) with its weights stored as integer codes, read per channel."""

    def __init__(self, layer: QDQLayer) -> None:
        super().__init__()
        self.layer = layer
        self.input_quant = ETAct(layer.input_quant) if isinstance(layer.input_quant, QDQAct) else layer.input_quant
        self.kinds = []
        for i, (lo, hi) in enumerate(layer.ranges):
            w, s = getattr(layer, f"w{i}"), getattr(layer, f"s{i}")
            dtype = torch.uint8 if lo == 0 else torch.int8
            self.register_buffer(f"c{i}", torch.round(w / s.view(-1, *[1] * (w.dim() - 1))).to(dtype))
            self.register_buffer(f"s{i}", s)
            self.kinds.append((lo, hi, dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        layer = self.layer
        if self.input_quant is not None:
            x = self.input_quant(x)
        if not self.kinds:
            return layer._op(x, layer.weight, layer.bias)
        y = None
        for i, (lo, hi, dtype) in enumerate(self.kinds):
            codes, scale = getattr(self, f"c{i}"), getattr(self, f"s{i}")
            w = torch.ops.quantized_decomposed.dequantize_per_channel(
                codes, scale, torch.zeros(len(scale), dtype=torch.int64), 0, lo, hi, dtype)
            part = layer._op(x, w, layer.bias if i == 0 else None)
            y = part if y is None else y + part
        return y


def with_quantized_ops(net: nn.Module) -> nn.Module:
    for name, child in list(net.named_children()):
        if isinstance(child, QDQLayer):
            setattr(net, name, ETLayer(child))
        elif isinstance(child, QDQAct):
            setattr(net, name, ETAct(child))
        else:
            with_quantized_ops(child)
    return net


def main() -> None:
    from importlib.metadata import version

    import executorch.kernels.quantized  # noqa: F401  (the quantized_decomposed ops' kernels)
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower
    from executorch.runtime import Runtime

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
            net = with_quantized_ops(export_graph(model).net).eval()
            t0 = time.perf_counter()
            edge = to_edge_transform_and_lower(torch.export.export(net, (x[:BATCH],)),
                                               partitioner=[XnnpackPartitioner()])
            left = collections.Counter(str(node.target) for node in edge.exported_program().graph_module.graph.nodes
                                       if node.op == "call_function")
            (out / "model.pte").write_bytes(edge.to_executorch().buffer)
            lower_s = time.perf_counter() - t0
            method_ = Runtime.get().load_program(str(out / "model.pte")).load_method("forward")

            def run(inputs: torch.Tensor) -> torch.Tensor:
                return torch.cat([method_.execute([inputs[i:i + BATCH]])[0] for i in range(0, len(inputs), BATCH)])

            with torch.no_grad():
                fake, fake_adv = model(x).argmax(1), model(x_adv).argmax(1)
            on_adv = run(x_adv).argmax(1)
            rows.append({
                "model": f"{method.upper()} {precision}", "n": n,
                "delegated": sum(v for k, v in left.items() if "executorch_call_delegate" in k),
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
