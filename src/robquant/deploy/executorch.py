"""The integer model on ExecuTorch (PyTorch's on-device runtime) with its XNNPACK delegate: the mobile runtime.

ExecuTorch runs a program exported from PyTorch, not an ONNX file. The program is built from the same
module the ONNX file is traced from (:func:`~robquant.deploy.export_graph`), with each QDQ written as
ExecuTorch's ``quantized_decomposed`` ops: activations ``quantize_per_tensor`` / ``dequantize_per_tensor``
with the quantizer's scale and zero point, weights stored as their int8 / uint8 codes and read by
``dequantize_per_channel`` with robquant's per-channel scales. The weights and scales are robquant's, not a
re-quantization by ExecuTorch's quantizer. The program is exported with ``torch.export`` at a fixed batch
(:data:`BATCH`; the last batch is padded), lowered with the XNNPACK partitioner as it ships (``fusion``
on; the weights then go in as the codes' float values, see :func:`write_program`) or to ExecuTorch's portable
and quantized kernels only (off), and written beside the ONNX file as ``model.pte``.

ExecuTorch is an optional extra (``pip install 'robquant[executorch]'``: its wheel brings torchao,
coremltools and more); robquant works without it.
"""

from __future__ import annotations

import collections
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from robquant.deploy.export import QDQAct, QDQLayer, export_graph
from robquant.errors import CheckpointError, ConfigError

BATCH = 8  # the program's fixed batch: XNNPACK's kernels are planned for one shape


def needs_executorch() -> Any:
    """The ``executorch`` package with its quantized kernels loaded, or a ConfigError naming the install command."""
    try:
        import executorch
        import executorch.kernels.quantized  # noqa: F401  (the quantized_decomposed ops' kernels)
    except ImportError as exc:
        raise ConfigError("running a model on ExecuTorch needs executorch: pip install 'robquant[executorch]' "
                          f"({exc})") from None
    return executorch


class _Act(nn.Module):
    """An activation quantizer (:class:`~robquant.deploy.export.QDQAct`) as quantize / dequantize per tensor."""

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


class _Layer(nn.Module):
    """A quantized layer (:class:`~robquant.deploy.export.QDQLayer`) with its weights stored as integer codes,
    read per channel (``codes``), or as the codes' float values (codes x scales, the same numbers)."""

    def __init__(self, layer: QDQLayer, codes: bool = True) -> None:
        super().__init__()
        self.layer, self.codes = layer, codes
        self.input_quant = _Act(layer.input_quant) if isinstance(layer.input_quant, QDQAct) else layer.input_quant
        self.kinds: list[tuple[int, int, torch.dtype]] = []
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
                codes, scale, torch.zeros(len(scale), dtype=torch.int64), 0, lo, hi, dtype) if self.codes \
                else getattr(layer, f"w{i}")
            part = layer._op(x, w, layer.bias if i == 0 else None)
            y = part if y is None else y + part
        return y


def quantized_ops(net: nn.Module, codes: bool = True) -> nn.Module:
    """The export graph ``net`` with every QDQ written as ExecuTorch's ``quantized_decomposed`` ops (in place); the
    weights as integer codes dequantized per channel (``codes``) or as their float values."""

    def swap(parent: nn.Module) -> None:
        for name, child in list(parent.named_children()):
            if isinstance(child, QDQLayer):
                setattr(parent, name, _Layer(child, codes))
            elif isinstance(child, QDQAct):
                setattr(parent, name, _Act(child))
            else:
                swap(child)

    swap(net)
    return net


def write_program(model: nn.Module, out: str | Path, input_shape: tuple[int, ...], *, xnnpack: bool = True
                  ) -> dict[str, Any]:
    """Write ``model``'s integer program for ExecuTorch to ``out`` (``.pte``) and say what it holds: the
    calls delegated to XNNPACK and the ops left to ExecuTorch's own kernels (``left``: op name -> count).

    With ``xnnpack`` (as it ships) the weights go in as their float values (the codes times their scales, the
    same numbers): XNNPACK then runs every convolution (its quantized convolution needs a requantized output,
    which robquant's models do not have, so with the codes it takes none). Without, the program stores the
    integer codes, dequantized per channel as it runs, on ExecuTorch's portable and quantized kernels only.
    Either way the activations are quantized per tensor by the model's own quantizers."""
    needs_executorch()
    from executorch.exir import to_edge_transform_and_lower

    net = quantized_ops(export_graph(model).net, codes=not xnnpack).eval()
    example = (torch.zeros(BATCH, *input_shape),)
    partitioner = []
    if xnnpack:
        from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner

        partitioner = [XnnpackPartitioner()]
    try:
        edge = to_edge_transform_and_lower(torch.export.export(net, example), partitioner=partitioner)
    except Exception as exc:  # torch.export's and ExecuTorch's own errors name the problem
        raise CheckpointError(f"ExecuTorch cannot build a program of the model: {exc}") from None
    ops = collections.Counter(_op_name(node.target) for node in edge.exported_program().graph_module.graph.nodes
                              if node.op == "call_function")
    Path(out).write_bytes(edge.to_executorch().buffer)
    delegated = sum(v for k, v in ops.items() if "executorch_call_delegate" in k)
    return {"xnnpack": xnnpack, "weights": "float values" if xnnpack else "int codes", "delegated": delegated,
            "left": {k: v for k, v in sorted(ops.items()) if "executorch_call_delegate" not in k}}


def _op_name(target: Any) -> str:
    """An edge op's name (``aten.convolution.default``), without its schema."""
    return str(target).split(">")[0].split(": schema")[0].replace("<EdgeOpOverload: ", "")


class ProgramRunner:
    """A written program (``.pte``) loaded by ExecuTorch's runtime: numpy batches in, logits out."""

    def __init__(self, path: str | Path) -> None:
        needs_executorch()
        from executorch.runtime import Runtime

        try:
            self.method = Runtime.get().load_program(str(path)).load_method("forward")
        except Exception as exc:  # the runtime's own errors name the problem
            raise CheckpointError(f"ExecuTorch cannot load {path}: {exc}") from None

    def __call__(self, x: np.ndarray) -> np.ndarray:
        outs = []
        for i in range(0, len(x), BATCH):
            chunk = x[i:i + BATCH]
            pad = BATCH - len(chunk)
            if pad:  # the program's batch is fixed: pad the last one, keep its own rows
                chunk = np.concatenate([chunk, np.zeros((pad, *chunk.shape[1:]), dtype=chunk.dtype)])
            out = self.method.execute([torch.from_numpy(np.ascontiguousarray(chunk))])[0]
            outs.append(out.numpy()[:BATCH - pad])
        return np.concatenate(outs) if outs else np.zeros((0,), dtype=np.float32)
